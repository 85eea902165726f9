"""Purging manifests: their rows go, and everything they referenced is queued for review.

Shared by the collector (untagged manifests, referrers of a purged subject), the
scrubber (pending_delete images past their scrub time), an operator's purge of one
trashed image, and deletes with ``delayed_delete = false``. Runs inside the caller's
write transaction, set-based (a handful of statements for a whole batch); deletes no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dockyard.meta.stores import Stores
from dockyard.meta.manifests import PurgeTarget


@dataclass(frozen=True, slots=True)
class PurgeOptions:
    gc_delay: float
    delete_untagged: bool
    referrers_follow_subject: bool


def purge_manifests(conn, targets: Sequence[PurgeTarget], now: float, opts: PurgeOptions,
                    *, actor: str | None = "gc") -> None:
    """Purge ``targets``. Their layer links and their blobs are reviewed after ``gc_delay``,
    like any other link: a push may have just seen such a layer exist (HEAD) and be about to
    PUT a manifest that needs it; a client that relies on the link later postpones its review.
    Every reference the purge removes queues a review of its object, in this transaction."""
    if not targets:
        return
    q = Stores(conn)
    refs = q.manifests.delete_rows(targets, now, actor)
    when = now + opts.gc_delay
    by_repo: dict[int, list[str]] = {}
    children: list[tuple[int, str]] = []
    for repo_id, kind, digest in refs:
        if kind == "blob":
            by_repo.setdefault(repo_id, []).append(digest)
        else:
            children.append((repo_id, digest))
    pairs = [(r, d) for r, ds in by_repo.items() for d in ds]
    q.reviews.add_link_pairs(pairs, when, "manifest_purged")
    # the blobs lost a reference too: their links may be gone already (a client unlinked a
    # layer while this manifest still referenced it), and then no link review queues them.
    # A blob still linked needs no review of its own: its link's review reviews it once it
    # removes the link (and every other way a link goes, a client's DELETE, queues one)
    linked = q.blobs.links_of(pairs)
    q.reviews.add_blobs([d for r, d in pairs if (r, d) not in linked], when, "manifest_purged")
    if children and opts.delete_untagged:
        q.reviews.add_manifests(q.manifests.ids_of(children), now + opts.gc_delay, "parent_purged")
    if opts.referrers_follow_subject:
        q.reviews.add_manifests(q.manifests.referrer_ids_of([(t.repository_id, t.digest) for t in targets]), now, "subject_purged")
    q.reviews.add_repositories([t.repository_id for t in targets], when)
