"""Retention: table-driven rule semantics, in-use protection, confirm == plan, on both databases."""

import json

import pytest

from dockyard.lifecycle import deletes, inuse, trash
from dockyard.config import ConfigError
from dockyard.errors import RegistryError
from dockyard.policies import Policy
from dockyard.lifecycle.prune import Pruner
from dockyard.registry import manifests
from dockyard.registry.pulls import PullTracker
from tests.lifecycle_support import put_image, put_index

DAY = 86400


def history(reg, repo="app", tag="latest", n=5):
    """Push n images under one tag, a day apart; returns digests oldest first."""
    out = []
    for i in range(n):
        d, _ = put_image(reg, repo, tag, f"{repo}-{tag}-{i}")
        out.append(d)
        reg.clock.advance(DAY)
    return out


def plan(reg, confirm=False, refs="", **rules):
    policy = Policy.parse("t", rules)
    return Pruner(reg, policy, inuse.load([("refs", refs)] if refs else []), confirm=confirm).run()


def decided(p):
    kept = {d.digest for r in p.repositories for d in r.kept}
    gone = {d.digest for r in p.repositories for d in r.deleted}
    return kept, gone


def test_keep_tag_revisions(reg):
    ds = history(reg)
    kept, gone = decided(plan(reg, keep_tag_revisions=2))
    assert kept == set(ds[-2:]) and gone == set(ds[:-2])


def test_keep_younger_than(reg):
    ds = history(reg)  # pushed 5, 4, 3, 2, 1 days ago
    kept, gone = decided(plan(reg, keep_pushed_within="2.5d"))
    assert kept == set(ds[-2:])


def test_keep_recent(reg):
    ds = history(reg, tag="a", n=2) + history(reg, tag="b", n=2)
    kept, gone = decided(plan(reg, keep_recent=3))
    assert kept == set(ds[1:]) and gone == {ds[0]}


def test_rules_combine_as_a_union(reg):
    ds = history(reg)
    kept, _ = decided(plan(reg, keep_tag_revisions=1, keep_pushed_within="3.5d"))
    assert kept == set(ds[-3:])  # revision 1 is ds[-1]; pushed within 3.5d: ds[-3:]


def test_tag_patterns_and_untagged(reg):
    put_image(reg, "app", "release-1", "rel")
    dev = history(reg, tag="dev", n=3)
    loose, _ = put_image(reg, "app", None, "loose")
    p = plan(reg, keep_tag_revisions=1, tags_exclude=["release-*"])
    kept, gone = decided(p)
    assert dev[-1] in kept and set(dev[:-1]) <= gone and loose in gone
    assert any("outside the policy" in r for d in p.repositories[0].kept for r in d.keep)
    kept, gone = decided(plan(reg, keep_tag_revisions=1, untagged="keep"))
    assert loose in kept and set(dev[:-1]) <= kept  # old revisions are untagged manifests now


def test_pulled_within(reg):
    ds = history(reg, n=3)
    m = manifests.get(reg, "app", ds[0])
    tracker = PullTracker()
    tracker.record(m.id, reg.now())
    tracker.flush(reg.db)
    kept, _ = decided(plan(reg, keep_tag_revisions=1, keep_pulled_within="1h"))
    assert kept == {ds[0], ds[-1]}


def test_in_use_children_and_referrers_are_kept(reg):
    amd, _ = put_image(reg, "multi", None, "amd")
    idx = put_index(reg, "multi", "v1", [amd])
    reg.clock.advance(DAY)
    sig, _ = put_image(reg, "multi", None, "sig", subject={"mediaType": "x", "digest": idx, "size": 1})
    reg.clock.advance(DAY)
    put_image(reg, "multi", "v1", "new")  # v1 moves on
    old_used, _ = put_image(reg, "multi", None, "used")
    pod = json.dumps({"kind": "List", "items": [{"kind": "Pod", "spec": {"containers": [
        {"image": f"127.0.0.1:5000/multi@{idx}"}, {"image": f"multi@{old_used}"}]}}]})
    kept, gone = decided(plan(reg, refs=pod, keep_tag_revisions=1))
    assert {idx, amd, sig, old_used} <= kept and not gone


def test_immutable_tags_are_never_pruned_or_moved(reg):
    reg.config.immutable_tags = ("app:v1.*",)
    frozen, _ = put_image(reg, "app", "v1.0", "frozen")
    reg.clock.advance(DAY)
    history(reg, n=2)
    kept, gone = decided(plan(reg, keep_recent=1))
    assert frozen in kept
    with pytest.raises(RegistryError, match="immutable"):
        put_image(reg, "app", "v1.0", "other")
    with pytest.raises(RegistryError, match="immutable"):
        deletes.delete_manifest(reg, "app", "v1.0")
    with pytest.raises(RegistryError, match="immutable"):
        deletes.delete_manifest(reg, "app", frozen)


def test_confirm_deletes_exactly_the_plan_into_the_trash(reg):
    ds = history(reg, n=4)
    preview = plan(reg, keep_tag_revisions=2)
    done = plan(reg, confirm=True, keep_tag_revisions=2)
    assert decided(preview) == decided(done)
    assert done.totals["bytes_freed"] == preview.totals["bytes_freed"] > 0
    for d in ds[:2]:
        with pytest.raises(RegistryError):
            manifests.get(reg, "app", d)
    assert {i["digest"] for i in trash.listing(reg)["images"]} == set(ds[:2])
    trash.restore(reg, f"app@{ds[0]}")  # undoable until scrub_time
    assert manifests.get(reg, "app", ds[0]).digest == ds[0]
    with reg.db.read() as conn:
        from dockyard.meta.retention import RetentionStore
        log = RetentionStore(conn).audit_log()
    assert log[0]["confirmed"] and sorted(log[0]["deleted"]) == sorted(f"app@{d}" for d in ds[:2])
    assert not log[1]["confirmed"]


def test_bytes_count_only_blobs_no_kept_image_shares(reg):
    from tests.support import make_layer
    shared = make_layer("shared-layer", size=10_000)
    old, content = put_image(reg, "app", "latest", "old", shared=[shared])
    reg.clock.advance(DAY)
    put_image(reg, "app", "latest", "new", shared=[shared])
    p = plan(reg, keep_tag_revisions=1)
    own = sum(len(c) for c in content if c != shared)
    assert p.totals["bytes_freed"] == own


def test_a_policy_without_keep_rules_is_refused():
    with pytest.raises(ConfigError, match="delete everything"):
        Policy.parse("wipe", {"repositories": ["*"]})
    with pytest.raises(ConfigError):
        Policy.parse("typo", {"keep_tag_revision": 3})


def test_a_stored_policy_that_no_longer_parses_is_skipped_not_a_500(reg):
    """An older version stored what it accepted; pushes, the policy list and prunes go on."""
    from dockyard.lifecycle.rules import policies
    from dockyard.meta.retention import RetentionStore

    with reg.db.write() as conn:
        RetentionStore(conn).put_policy("broken", {"keep_pushed_within": float("nan")}, 0.0, "old-version")
        RetentionStore(conn).put_policy("fine", {"keep_recent": 1}, 0.0, "admin")
    assert set(policies(reg)) == {"fine"}
    put_image(reg, "app", "v1", "after-broken-policy")  # the immutable-tag check reads policies too
    assert manifests.get(reg, "app", "v1") is not None
