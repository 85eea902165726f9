"""Retention pruning: a policy -> a plan -> (with ``confirm``) deletes into the trash.

The plan is made repository by repository (memory stays flat per repository); with
``confirm`` each repository is planned and deleted in one write transaction, so what is
deleted is exactly what that plan says. Deletes go through the one delete path
(``lifecycle.deletes.trash_manifests``): restorable until ``scrub_time``.

See ``lifecycle/policies.py`` for the rules; a manifest is kept if any keep rule keeps it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from dockyard.lifecycle.deletes import trash_manifests
from dockyard.lifecycle.rules import immutable_rules
from dockyard.lifecycle.inuse import InUse
from dockyard.policies import ImmutableRules, Policy
from dockyard.meta.db import retrying
from dockyard.meta.gc import PurgeTarget
from dockyard.meta.hosts import HostStore
from dockyard.oci.references import ImageRef
from dockyard.meta.retention import ManifestFacts, RetentionStore

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
        verb = "deleted" if self.confirmed else "would delete"
        lines = []
        for r in self.repositories:
            lines.append(f"{r.repository}: keep {len(r.kept)}, {verb} {len(r.deleted)}, frees {r.bytes_freed} bytes")
            for d in r.kept:
                lines.append(f"  keep   {d.digest[:19]} {','.join(d.tags) or '-':<24} {'; '.join(d.keep)}")
            for d in r.deleted:
                lines.append(f"  delete {d.digest[:19]} {','.join(d.tags) or '-':<24} {d.delete}")
        t = self.totals
        lines.append(f"total: {t['repositories']} repositories, keep {t['kept']}, {verb} {t['deleted']}, "
                     f"frees {t['bytes_freed']} bytes" + ("" if self.confirmed else " (dry run; --confirm to delete)"))
        return "\n".join(lines)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def plan_repository(store: RetentionStore, repo_id: int, name: str, policy: Policy, inuse: InUse,
                    immutable: ImmutableRules, now: float) -> tuple[RepoPlan, list[PurgeTarget], dict[int, list[str]]]:
    """Decide every active manifest of one repository. Pure reads."""
    facts = store.manifests(repo_id)
    by_id: dict[int, ManifestFacts] = {m.id: m for m in facts}
    by_digest = {m.digest: m for m in facts}
    live_tags = store.tags(repo_id)
    tags_of: dict[int, list[str]] = defaultdict(list)
    for tag, mid in sorted(live_tags.items()):
        tags_of[mid].append(tag)
    keep: dict[int, list[str]] = defaultdict(list)

    # rules on tags: out of scope, immutable, revisions
    for tag, mid in live_tags.items():
        if not policy.tag_in_scope(tag):
            keep[mid].append(f"tag {tag} is outside the policy")
        if immutable.matches(name, tag):
            keep[mid].append(f"immutable tag {tag}")
    if policy.keep_tag_revisions:
        seen: dict[str, list[str]] = defaultdict(list)
        for tag, digest in store.history(repo_id):
            if tag not in live_tags or not policy.tag_in_scope(tag):
                continue
            revisions = seen[tag]
            if digest in revisions or len(revisions) >= policy.keep_tag_revisions:
                continue
            revisions.append(digest)
            if digest in by_digest:
                keep[by_digest[digest].id].append(f"revision {len(revisions)} of tag {tag}")
    # rules on time and count
    if policy.keep_recent:
        newest = sorted(facts, key=lambda m: (m.pushed_at, m.id), reverse=True)[:policy.keep_recent]
        for rank, m in enumerate(newest, 1):
            keep[m.id].append(f"#{rank} most recently pushed")
    for m in facts:
        if policy.keep_pushed_within is not None and m.pushed_at > now - policy.keep_pushed_within:
            keep[m.id].append(f"pushed {_age(now - m.pushed_at)} ago")
        if (policy.keep_pulled_within is not None and m.last_pulled_at is not None
                and m.last_pulled_at > now - policy.keep_pulled_within):
            keep[m.id].append(f"pulled {_age(now - m.last_pulled_at)} ago")
        if policy.untagged == "keep" and not tags_of.get(m.id):
            keep[m.id].append("untagged, and the policy keeps untagged")
    # workloads
    in_tags, in_digests, _ = inuse.keys()
    for (repo, tag) in in_tags:
        if repo == name and tag in live_tags:
            keep[live_tags[tag]].append(f"in use as {name}:{tag}")
    for (repo, digest) in in_digests:
        if repo == name and digest in by_digest:
            keep[by_digest[digest].id].append(f"in use as {name}@{digest[:19]}")
    # closure: children of kept indexes, referrers of kept subjects
    children: dict[int, list[str]] = defaultdict(list)
    blob_refs: dict[int, list[str]] = defaultdict(list)
    for mid, kind, digest in store.references(repo_id):
        (children if kind == "manifest" else blob_refs)[mid].append(digest)
    referrers: dict[str, list[int]] = defaultdict(list)
    for m in facts:
        if m.subject_digest:
            referrers[m.subject_digest].append(m.id)
    stack = list(keep)
    while stack:
        mid = stack.pop()
        parent = by_id[mid]
        for child in children.get(mid, []):
            c = by_digest.get(child)
            if c is not None and not keep.get(c.id):
                keep[c.id].append(f"child of kept {parent.digest[:19]}")
                stack.append(c.id)
        for rid in referrers.get(parent.digest, []):
            if not keep.get(rid):
                keep[rid].append(f"referrer of kept {parent.digest[:19]}")
                stack.append(rid)

    plan = RepoPlan(name)
    targets = []
    for m in sorted(facts, key=lambda m: (m.pushed_at, m.id), reverse=True):
        d = Decision(m.digest, tags_of.get(m.id, []), m.pushed_at, keep=keep.get(m.id, []))
        if d.keep:
            plan.kept.append(d)
            continue
        why = [f"tags {','.join(d.tags)} beyond the kept revisions" if d.tags else "untagged",
               f"pushed {_age(now - m.pushed_at)} ago"]
        if m.last_pulled_at is not None:
            why.append(f"last pulled {_age(now - m.last_pulled_at)} ago")
        d.delete = "; ".join(why)
        plan.deleted.append(d)
        targets.append(PurgeTarget(m.id, repo_id, m.digest))
    return plan, targets, {t.id: blob_refs.get(t.id, []) for t in targets}


class Pruner:
    job = "prune"

    def __init__(self, reg, policy: Policy, inuse: InUse | None = None, *, confirm: bool = False,
                 actor: str | None = None, repository: str | None = None,
                 progress: Callable[[Plan], None] | None = None):
        self.reg, self.policy, self.confirm, self.actor = reg, policy, confirm, actor
        self.inuse = inuse or InUse()
        self.repository = repository
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
            if not self.policy.applies_to(name) or (self.repository and name != self.repository):
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
        return rp, targets, blob_refs

    def _bytes(self, candidates: dict, deleted_ids: set[int]) -> None:
        """A blob is freed when every manifest that uses it (any repository) is deleted by this prune."""
        digests = sorted(candidates)
        shared: set[str] = set()
        sizes: dict[str, int] = {}
        for i in range(0, len(digests), 500):
            with self.reg.db.read() as conn:
                for digest, mid, size in RetentionStore(conn).blob_users(digests[i:i + 500]):
                    sizes[digest] = size
                    if mid not in deleted_ids:
                        shared.add(digest)
        for digest, users in candidates.items():
            if digest in shared or digest not in sizes:
                continue
            rp, decision = users[0]
            decision.bytes_freed += sizes[digest]
            rp.bytes_freed += sizes[digest]

    def _audit(self, plan: Plan) -> None:
        deleted = [f"{r.repository}@{d.digest}" for r in plan.repositories for d in r.deleted]
        with self.reg.db.write() as conn:
            RetentionStore(conn).audit(self.reg.now(), self.actor, self.policy.name, self.confirm, plan.totals,
                                       deleted if self.confirm else [])
        if self.confirm:
            for ref in deleted:
                log.info("prune[%s]: deleted %s (to the trash)", self.policy.name, ref)
        log.info("prune[%s]%s: %s", self.policy.name, "" if self.confirm else " (dry run)", plan.totals)


