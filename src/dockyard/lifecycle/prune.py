"""Retention pruning: a policy -> a plan -> (with ``confirm``) deletes into the trash.

The plan is made repository by repository (memory stays flat per repository); with
``confirm`` each repository is planned and deleted in one write transaction, so what is
deleted is exactly what that plan says. Deletes go through the one delete path
(``lifecycle.deletes.trash_manifests``): restorable until ``scrub_time``.

See ``lifecycle/keep.py`` for the rules (one pure function each); a manifest is kept if any
keep rule keeps it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Collection

from dockyard.lifecycle.deletes import trash_manifests
from dockyard.lifecycle.inuse import InUse
from dockyard.lifecycle.keep import Context, RepoFacts, keep_reasons, why_delete
from dockyard.lifecycle.rules import immutable_rules
from dockyard.meta.db import retrying
from dockyard.meta.events import EventStore
from dockyard.meta.hosts import HostStore
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.retention import RetentionStore
from dockyard.oci.references import ImageRef
from dockyard.policies import ImmutableRules, Policy

log = logging.getLogger(__name__)


@dataclass
class Decision:
    digest: str
    tags: list[str]
    pushed_at: float
    keep: list[str] = field(default_factory=list)
    delete: str | None = None
    bytes_freed: int = 0


@dataclass
class RepoPlan:
    repository: str
    kept: list[Decision] = field(default_factory=list)
    deleted: list[Decision] = field(default_factory=list)
    bytes_freed: int = 0


@dataclass
class Plan:
    policy: str
    confirmed: bool
    repositories: list[RepoPlan] = field(default_factory=list)
    duration: float = 0.0
    job = "prune"

    @property
    def dry_run(self) -> bool:
        return not self.confirmed

    @property
    def totals(self) -> dict:
        return {"repositories": len(self.repositories),
                "kept": sum(len(r.kept) for r in self.repositories),
                "deleted": sum(len(r.deleted) for r in self.repositories),
                "bytes_freed": sum(r.bytes_freed for r in self.repositories)}

    def as_dict(self) -> dict:
        return {"policy": self.policy, "confirmed": self.confirmed, "duration_seconds": round(self.duration, 3),
                "totals": self.totals,
                "repositories": [{"repository": r.repository, "bytes_freed": r.bytes_freed,
                                  "kept": [vars(d) for d in r.kept], "deleted": [vars(d) for d in r.deleted]}
                                 for r in self.repositories]}

    def table(self) -> str:
        return render(self.as_dict())


def render(plan: dict) -> str:
    """The table of a plan, from :meth:`Plan.as_dict` (local, or as the admin API sent it)."""
    verb = "deleted" if plan["confirmed"] else "would delete"
    lines = []
    for r in plan["repositories"]:
        lines.append(f"{r['repository']}: keep {len(r['kept'])}, {verb} {len(r['deleted'])}, "
                     f"frees {r['bytes_freed']} bytes")
        for d in r["kept"]:
            lines.append(f"  keep   {d['digest'][:19]} {','.join(d['tags']) or '-':<24} {'; '.join(d['keep'])}")
        for d in r["deleted"]:
            lines.append(f"  delete {d['digest'][:19]} {','.join(d['tags']) or '-':<24} {d['delete']}")
    t = plan["totals"]
    lines.append(f"total: {t['repositories']} repositories, keep {t['kept']}, {verb} {t['deleted']}, "
                 f"frees {t['bytes_freed']} bytes" + ("" if plan["confirmed"] else " (dry run; --confirm to delete)"))
    return "\n".join(lines)


def plan_repository(store: RetentionStore, repo_id: int, name: str, policy: Policy, inuse: InUse,
                    immutable: ImmutableRules, now: float) -> tuple[RepoPlan, list[PurgeTarget], dict[int, list[str]]]:
    """Decide every active manifest of one repository (pure reads; the rules are in keep.py)."""
    facts = RepoFacts(name, store.manifests(repo_id), store.tags(repo_id),
                      store.history(repo_id) if policy.keep_tag_revisions else [], store.references(repo_id))
    keep = keep_reasons(facts, Context(policy, immutable, inuse, now))
    blob_refs: dict[int, list[str]] = defaultdict(list)
    for mid, kind, digest in facts.references:
        if kind == "blob":
            blob_refs[mid].append(digest)
    plan = RepoPlan(name)
    targets = []
    for m in sorted(facts.manifests, key=lambda m: (m.pushed_at, m.id), reverse=True):
        d = Decision(m.digest, facts.tags_of.get(m.id, []), m.pushed_at, keep=keep.get(m.id, []))
        if d.keep:
            plan.kept.append(d)
            continue
        d.delete = why_delete(m, d.tags, now)
        plan.deleted.append(d)
        targets.append(PurgeTarget(m.id, repo_id, m.digest))
    return plan, targets, {t.id: blob_refs.get(t.id, []) for t in targets}


class Pruner:
    job = "prune"

    def __init__(self, reg, policy: Policy, inuse: InUse | None = None, *, confirm: bool = False,
                 actor: str | None = None, repository: str | None = None,
                 progress: Callable[[Plan], None] | None = None, among: Collection[str] | None = None):
        self.reg, self.policy, self.confirm, self.actor = reg, policy, confirm, actor
        self.inuse = inuse or InUse()
        self.repository = repository
        self.among = None if among is None else set(among)  # plan only these repositories (a page of them)
        self.progress = progress

    def run(self) -> Plan:
        reg = self.reg
        t0 = time.monotonic()
        plan = Plan(self.policy.name, self.confirm)
        deleted_ids: set[int] = set()
        candidates: dict[str, list[tuple[RepoPlan, Decision]]] = defaultdict(list)
        with reg.db.read() as conn:
            repos = RetentionStore(conn).repositories()
            immutable = immutable_rules(conn, reg.config)
            host_refs = [ImageRef(None, repo, None, digest) for repo, digest, _, _ in HostStore(conn).in_use()]
        # images a container on some host uses (dockyard agent inventories) are in use too
        self.inuse = InUse(self.inuse.refs + host_refs, self.inuse.invalid)
        for repo_id, name in repos:
            if not self.policy.applies_to(name) or (self.repository and name != self.repository) or (
                    self.among is not None and name not in self.among):
                continue
            # one transaction per repository, run again if it loses a deadlock (a concurrent
            # push or collection): nothing of it committed, so it starts from the same state
            rp, targets, blob_refs = retrying(self._repository, repo_id, name, immutable)
            by_digest = {d.digest: d for d in rp.deleted}
            for t in targets:
                deleted_ids.add(t.id)
                for digest in blob_refs[t.id]:
                    candidates[digest].append((rp, by_digest[t.digest]))
            if rp.kept or rp.deleted:
                plan.repositories.append(rp)
            if self.progress:
                self.progress(plan)
        self._bytes(candidates, deleted_ids)
        plan.duration = time.monotonic() - t0
        self._audit(plan)
        return plan

    def _repository(self, repo_id: int, name: str, immutable: ImmutableRules):
        reg = self.reg
        now = reg.now()
        with (reg.db.write() if self.confirm else reg.db.read()) as conn:
            rp, targets, blob_refs = plan_repository(RetentionStore(conn), repo_id, name, self.policy,
                                                     self.inuse, immutable, now)
            if self.confirm and targets:
                trash_manifests(conn, reg.config, repo_id, targets, now, self.actor or f"prune:{self.policy.name}")
                EventStore(conn).record("delete", name, {"digests": [t.digest for t in targets],
                                                         "policy": self.policy.name}, now, self.actor)
        return rp, targets, blob_refs

    def _bytes(self, candidates: dict, deleted_ids: set[int]) -> None:
        """A blob is freed when every manifest that uses it (any repository) is deleted by this
        prune: when the manifests using it number no more than this prune's deletions using it
        (counted by the database: a base layer shared by 100,000 manifests is one row here)."""
        digests = sorted(candidates)
        for i in range(0, len(digests), 500):
            with self.reg.db.read() as conn:
                counts = RetentionStore(conn).blob_use_counts(digests[i:i + 500])
            for digest in digests[i:i + 500]:
                users = candidates[digest]
                if digest not in counts or counts[digest][0] > len({id(d) for _, d in users}):
                    continue
                rp, decision = users[0]
                decision.bytes_freed += counts[digest][1]
                rp.bytes_freed += counts[digest][1]

    def _audit(self, plan: Plan) -> None:
        deleted = [f"{r.repository}@{d.digest}" for r in plan.repositories for d in r.deleted]
        with self.reg.db.write() as conn:
            RetentionStore(conn).audit(self.reg.now(), self.actor, self.policy.name, self.confirm, plan.totals,
                                       deleted if self.confirm else [])
            if self.confirm:
                EventStore(conn).record("prune", None, {"policy": self.policy.name, "totals": plan.totals},
                                        self.reg.now(), self.actor)
        if self.confirm:
            for ref in deleted:
                log.info("prune[%s]: deleted %s (to the trash)", self.policy.name, ref)
        t = plan.totals
        log.info("prune[%s]%s: %d repositories, kept %d, %s %d, %d bytes to be freed", self.policy.name,
                 "" if self.confirm else " (dry run)", t["repositories"], t["kept"],
                 "deleted" if self.confirm else "would delete", t["deleted"], t["bytes_freed"])


