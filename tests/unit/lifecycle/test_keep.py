"""Retention's keep rules (lifecycle/keep.py), one by one, on facts built by hand."""

from __future__ import annotations

from dockyard.lifecycle import keep
from dockyard.lifecycle.inuse import InUse
from dockyard.meta.retention import ManifestFacts
from dockyard.policies import ImmutableRules, Policy

D = [f"sha256:{i:064x}" for i in range(10)]
NOW = 1_000_000.0


def m(i, pushed_ago=0.0, pulled_ago=None, subject=None):
    return ManifestFacts(i, D[i], "application/vnd.oci.image.manifest.v1+json", 100 * i, NOW - pushed_ago,
                         None if pulled_ago is None else NOW - pulled_ago, subject)


def facts(manifests, tags=None, history=(), references=()):
    return keep.RepoFacts("team/app", list(manifests), dict(tags or {}), list(history), list(references))


def kept(rule, f, policy=None, **ctx):
    return sorted(mid for mid, _ in rule(f, keep.Context(policy or Policy("p"), now=NOW, **ctx)))


def test_tags_outside_policy_are_kept():
    f = facts([m(1), m(2)], {"v1": 1, "dev": 2})
    assert kept(keep.tags_outside_policy, f, Policy("p", tags_include=("v*",))) == [2]
    assert kept(keep.tags_outside_policy, f, Policy("p")) == []


def test_immutable_tags_are_kept():
    f = facts([m(1), m(2)], {"release": 1, "dev": 2})
    assert kept(keep.immutable_tags, f, immutable=ImmutableRules([("team/*", "release")])) == [1]
    assert kept(keep.immutable_tags, f, immutable=ImmutableRules([("other/*", "release")])) == []


def test_tag_revisions_keep_the_newest_distinct_images_of_live_tags():
    history = [("latest", D[3]), ("latest", D[2]), ("latest", D[3]), ("latest", D[1]), ("gone", D[4])]
    f = facts([m(1), m(2), m(3), m(4)], {"latest": 3}, history)
    assert kept(keep.tag_revisions, f, Policy("p", keep_tag_revisions=2)) == [2, 3]
    assert kept(keep.tag_revisions, f, Policy("p")) == []   # rule off


def test_most_recent_counts_pushes():
    f = facts([m(1, 30), m(2, 20), m(3, 10)])
    assert kept(keep.most_recent, f, Policy("p", keep_recent=2)) == [2, 3]


def test_pushed_within_and_pulled_within():
    f = facts([m(1, pushed_ago=100), m(2, pushed_ago=10_000, pulled_ago=50), m(3, pushed_ago=10_000)])
    assert kept(keep.pushed_within, f, Policy("p", keep_pushed_within=3600)) == [1]
    assert kept(keep.pulled_within, f, Policy("p", keep_pulled_within=3600)) == [2]


def test_untagged_kept_only_when_the_policy_says_so():
    f = facts([m(1), m(2)], {"v1": 1})
    assert kept(keep.untagged_kept, f, Policy("p", untagged="keep")) == [2]
    assert kept(keep.untagged_kept, f, Policy("p")) == []


def test_in_use_by_tag_and_by_digest_in_this_repository_only():
    inuse = InUse()
    inuse.add_text("team/app:v1", "pod a")
    inuse.add_text(f"team/app@{D[2]}", "pod b")
    inuse.add_text("other/app:v3", "pod c")
    f = facts([m(1), m(2), m(3)], {"v1": 1, "v3": 3})
    assert kept(keep.in_use, f, inuse=inuse) == [1, 2]


def test_closure_keeps_children_of_kept_indexes_and_referrers_of_kept_subjects():
    index, child, sig, other = m(1), m(2), m(3, subject=D[1]), m(4)
    f = facts([index, child, sig, other], references=[(1, "manifest", D[2]), (2, "blob", D[9])])
    reasons = {1: ["tagged"]}
    keep.close_over(f, reasons)
    assert sorted(reasons) == [1, 2, 3]
    assert reasons[2] == [f"child of kept {D[1][:19]}"]


def test_keep_reasons_combines_rules_and_why_delete_explains():
    f = facts([m(1, 10), m(2, 10_000, pulled_ago=7200)], {"v1": 1})
    reasons = keep.keep_reasons(f, keep.Context(Policy("p", keep_pushed_within=3600), now=NOW))
    assert list(reasons) == [1]
    assert keep.why_delete(f.by_id[2], [], NOW) == "untagged; pushed 3h ago; last pulled 2h ago"
