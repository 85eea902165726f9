"""Retention's keep rules, one small pure function each.

A rule looks at one repository's facts (:class:`RepoFacts`) and the context of the run
(:class:`Context`: the policy, the immutable tags, what workloads use, the time) and yields
``(manifest id, reason)`` for every manifest it keeps. A manifest is kept if any rule keeps
it; :func:`close_over` then keeps what a kept manifest needs (children of a kept index,
referrers of a kept subject). Everything else goes, with the reason :func:`why_delete` gives.
No rule reads the database: ``prune.plan_repository`` gathers the facts once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

from dockyard.lifecycle.inuse import InUse
from dockyard.meta.retention import ManifestFacts
from dockyard.policies import ImmutableRules, Policy

Kept = Iterator[tuple[int, str]]


@dataclass
class RepoFacts:
    name: str
    manifests: list[ManifestFacts]
    live_tags: dict[str, int]                    # tag -> manifest id
    history: list[tuple[str, str]] = field(default_factory=list)   # (tag, digest), newest first
    references: list[tuple[int, str, str]] = field(default_factory=list)  # (manifest id, kind, digest)

    @cached_property
    def by_id(self) -> dict[int, ManifestFacts]:
        return {m.id: m for m in self.manifests}

    @cached_property
    def by_digest(self) -> dict[str, ManifestFacts]:
        return {m.digest: m for m in self.manifests}

    @cached_property
    def tags_of(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = defaultdict(list)
        for tag, mid in sorted(self.live_tags.items()):
            out[mid].append(tag)
        return out


@dataclass(frozen=True)
class Context:
    policy: Policy
    immutable: ImmutableRules = field(default_factory=ImmutableRules)
    inuse: InUse = field(default_factory=InUse)
    now: float = 0.0


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def tags_outside_policy(f: RepoFacts, c: Context) -> Kept:
    for tag, mid in f.live_tags.items():
        if not c.policy.tag_in_scope(tag):
            yield mid, f"tag {tag} is outside the policy"


def immutable_tags(f: RepoFacts, c: Context) -> Kept:
    for tag, mid in f.live_tags.items():
        if c.immutable.matches(f.name, tag):
            yield mid, f"immutable tag {tag}"


def tag_revisions(f: RepoFacts, c: Context) -> Kept:
    """The N newest distinct images each live, in-scope tag pointed to."""
    if not c.policy.keep_tag_revisions:
        return
    seen: dict[str, list[str]] = defaultdict(list)
    for tag, digest in f.history:
        if tag not in f.live_tags or not c.policy.tag_in_scope(tag):
            continue
        revisions = seen[tag]
        if digest in revisions or len(revisions) >= c.policy.keep_tag_revisions:
            continue
        revisions.append(digest)
        if digest in f.by_digest:
            yield f.by_digest[digest].id, f"revision {len(revisions)} of tag {tag}"


def most_recent(f: RepoFacts, c: Context) -> Kept:
    if c.policy.keep_recent:
        newest = sorted(f.manifests, key=lambda m: (m.pushed_at, m.id), reverse=True)[:c.policy.keep_recent]
        for rank, m in enumerate(newest, 1):
            yield m.id, f"#{rank} most recently pushed"


def pushed_within(f: RepoFacts, c: Context) -> Kept:
    if c.policy.keep_pushed_within is not None:
        for m in f.manifests:
            if m.pushed_at > c.now - c.policy.keep_pushed_within:
                yield m.id, f"pushed {age(c.now - m.pushed_at)} ago"


def pulled_within(f: RepoFacts, c: Context) -> Kept:
    if c.policy.keep_pulled_within is not None:
        for m in f.manifests:
            if m.last_pulled_at is not None and m.last_pulled_at > c.now - c.policy.keep_pulled_within:
                yield m.id, f"pulled {age(c.now - m.last_pulled_at)} ago"


def untagged_kept(f: RepoFacts, c: Context) -> Kept:
    if c.policy.untagged == "keep":
        for m in f.manifests:
            if not f.tags_of.get(m.id):
                yield m.id, "untagged, and the policy keeps untagged"


def in_use(f: RepoFacts, c: Context) -> Kept:
    """Images a workload names, by tag or by digest."""
    in_tags, in_digests, _ = c.inuse.keys()
    for repo, tag in in_tags:
        if repo == f.name and tag in f.live_tags:
            yield f.live_tags[tag], f"in use as {f.name}:{tag}"
    for repo, digest in in_digests:
        if repo == f.name and digest in f.by_digest:
            yield f.by_digest[digest].id, f"in use as {f.name}@{digest[:19]}"


RULES: tuple[Callable[[RepoFacts, Context], Kept], ...] = (
    tags_outside_policy, immutable_tags, tag_revisions, most_recent, pushed_within, pulled_within,
    untagged_kept, in_use,
)


def keep_reasons(f: RepoFacts, c: Context) -> dict[int, list[str]]:
    """manifest id -> why it is kept, by every rule, closed over what kept manifests need."""
    keep: dict[int, list[str]] = defaultdict(list)
    for rule in RULES:
        for mid, reason in rule(f, c):
            keep[mid].append(reason)
    close_over(f, keep)
    return keep


def close_over(f: RepoFacts, keep: dict[int, list[str]]) -> None:
    """Keep the children of kept indexes and the referrers of kept subjects, transitively."""
    children: dict[int, list[str]] = defaultdict(list)
    for mid, kind, digest in f.references:
        if kind == "manifest":
            children[mid].append(digest)
    referrers: dict[str, list[int]] = defaultdict(list)
    for m in f.manifests:
        if m.subject_digest:
            referrers[m.subject_digest].append(m.id)
    stack = [mid for mid, reasons in keep.items() if reasons]
    while stack:
        parent = f.by_id[stack.pop()]
        for child in children.get(parent.id, []):
            c = f.by_digest.get(child)
            if c is not None and not keep.get(c.id):
                keep.setdefault(c.id, []).append(f"child of kept {parent.digest[:19]}")
                stack.append(c.id)
        for rid in referrers.get(parent.digest, []):
            if not keep.get(rid):
                keep.setdefault(rid, []).append(f"referrer of kept {parent.digest[:19]}")
                stack.append(rid)


def why_delete(m: ManifestFacts, tags: list[str], now: float) -> str:
    why = [f"tags {','.join(tags)} beyond the kept revisions" if tags else "untagged",
           f"pushed {age(now - m.pushed_at)} ago"]
    if m.last_pulled_at is not None:
        why.append(f"last pulled {age(now - m.last_pulled_at)} ago")
    return "; ".join(why)
