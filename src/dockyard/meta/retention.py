"""RetentionStore: what planning a prune reads per repository, declared policies, the audit trail,
and the batched write of pull times."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, select, update

from dockyard.meta.schema import (
    ACTIVE,
    blobs,
    manifest_references,
    manifests,
    prune_audit,
    repositories,
    retention_policies,
    tag_history,
    tags,
)


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    id: int
    digest: str
    media_type: str
    size: int
    pushed_at: float
    last_pulled_at: float | None
    subject_digest: str | None


def _planning_statements() -> dict:
    """What planning runs per repository (and per batch of blobs), built once."""
    repo = bindparam("repo")
    m, refs = manifests.c, manifest_references.c
    return {
        "manifests": select(m.id, m.digest, m.media_type, m.size, m.pushed_at, m.last_pulled_at, m.subject_digest)
        .where(m.repository_id == repo, m.state == ACTIVE),
        "tags": select(tags.c.name, tags.c.manifest_id).where(tags.c.repository_id == repo),
        "history": select(tag_history.c.tag, tag_history.c.manifest_digest)
        .where(tag_history.c.repository_id == repo, tag_history.c.action.in_(("push", "move")))
        .order_by(tag_history.c.at.desc(), tag_history.c.id.desc()),
        "references": select(refs.manifest_id, refs.kind, refs.digest)
        .join(manifests, m.id == refs.manifest_id).where(m.repository_id == repo, m.state == ACTIVE),
        "use_counts": select(refs.digest, func.count(), func.max(blobs.c.size))
        .join(blobs, blobs.c.digest == refs.digest)
        .where(refs.kind == "blob", refs.digest.in_(bindparam("digests", expanding=True)))
        .group_by(refs.digest),
    }


_PLANNING = _planning_statements()


class RetentionStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    # ---- planning ------------------------------------------------------------
    def repositories(self) -> list[tuple[int, str]]:
        return [(r.id, r.name) for r in self.conn.execute(
            select(repositories.c.id, repositories.c.name).where(repositories.c.deleted_at.is_(None))
            .order_by(repositories.c.name))]

    def manifests(self, repo_id: int) -> list[ManifestFacts]:
        # .all() and positional rows: planning fetches ~10 rows per manifest, row by row through
        # the result iterator they cost more than the queries
        return [ManifestFacts(*r) for r in self.conn.execute(_PLANNING["manifests"], {"repo": repo_id}).all()]

    def tags(self, repo_id: int) -> dict[str, int]:
        return dict(self.conn.execute(_PLANNING["tags"], {"repo": repo_id}).all())

    def history(self, repo_id: int) -> list[tuple[str, str]]:
        """(tag, digest) of every push or move, newest first."""
        return [tuple(r) for r in self.conn.execute(_PLANNING["history"], {"repo": repo_id}).all()]

    def references(self, repo_id: int) -> list[tuple[int, str, str]]:
        """(manifest id, kind, digest) for the repository's active manifests."""
        return [tuple(r) for r in self.conn.execute(_PLANNING["references"], {"repo": repo_id}).all()]

    def blob_use_counts(self, digests: list[str]) -> dict[str, tuple[int, int]]:
        """digest -> (manifests using it, any repository and state; its size): one row per blob,
        counted in the index, however many manifests share a base layer."""
        if not digests:
            return {}
        return {r[0]: (int(r[1]), int(r[2])) for r in self.conn.execute(_PLANNING["use_counts"],
                                                                        {"digests": digests}).all()}

    # ---- policies declared through the API --------------------------------------
    def policies(self) -> dict[str, dict]:
        return {r.name: json.loads(r.body) for r in self.conn.execute(select(retention_policies))}

    def put_policy(self, name: str, body: dict, now: float, actor: str | None) -> None:
        self.conn.execute(delete(retention_policies).where(retention_policies.c.name == name))
        self.conn.execute(retention_policies.insert().values(name=name, body=json.dumps(body), updated_at=now,
                                                              updated_by=actor))

    def delete_policy(self, name: str) -> bool:
        return self.conn.execute(delete(retention_policies).where(retention_policies.c.name == name)).rowcount > 0

    # ---- audit ----------------------------------------------------------------------
    def audit(self, at: float, actor: str | None, policy: str, confirmed: bool, summary: dict, deleted: list[str]
              ) -> None:
        self.conn.execute(prune_audit.insert().values(at=at, actor=actor, policy=policy, confirmed=int(confirmed),
                                                      summary=json.dumps(summary), deleted=json.dumps(deleted)))

    def audit_log(self, limit: int = 50) -> list[dict]:
        return [{"at": r.at, "actor": r.actor, "policy": r.policy, "confirmed": bool(r.confirmed),
                 "summary": json.loads(r.summary), "deleted": json.loads(r.deleted)}
                for r in self.conn.execute(select(prune_audit).order_by(prune_audit.c.id.desc()).limit(limit))]

    # ---- pull times -------------------------------------------------------------------
    def record_pulls(self, pulls: dict[int, float]) -> None:
        if pulls:
            self.conn.execute(
                update(manifests).where(manifests.c.id == bindparam("mid")).values(last_pulled_at=bindparam("at")),
                [{"mid": k, "at": v} for k, v in sorted(pulls.items())])
