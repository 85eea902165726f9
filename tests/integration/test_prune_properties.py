"""Property tests over generated histories (hypothesis): what a confirmed prune may never do."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.lifecycle import deletes
from dockyard.errors import RegistryError
from dockyard.lifecycle import inuse
from dockyard.policies import Policy
from dockyard.lifecycle.prune import Pruner
from dockyard.meta.retention import RetentionStore
from tests.lifecycle_support import make_registry, put_image, put_index

TAGS = ["a", "b", "c"]

ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.sampled_from(TAGS + [None])),
    st.tuples(st.just("index"), st.sampled_from(TAGS)),
    st.tuples(st.just("untag"), st.sampled_from(TAGS)),
    st.tuples(st.just("wait"), st.integers(1, 5)),
), min_size=1, max_size=14)


def build(reg, steps):
    seq = 0
    for op, arg in steps:
        seq += 1
        if op == "push":
            put_image(reg, "app", arg, f"img{seq}")
        elif op == "index":
            child, _ = put_image(reg, "app", None, f"child{seq}")
            put_index(reg, "app", arg, [child])
        elif op == "untag":
            try:
                deletes.delete_manifest(reg, "app", arg)
            except RegistryError:
                pass
        reg.clock.advance(3600 * (arg if op == "wait" else 1))


def snapshot(reg):
    with reg.db.read() as conn:
        store = RetentionStore(conn)
        facts = store.manifests(1)
        return ({m.digest for m in facts}, store.tags(1), store.history(1),
                [(mid, k, d) for mid, k, d in store.references(1)], {m.id: m.digest for m in facts})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, revisions=st.integers(1, 3), in_use_pick=st.lists(st.integers(0, 50), max_size=3),
       untagged=st.sampled_from(["delete", "keep"]))
def test_confirmed_prune_properties(steps, revisions, in_use_pick, untagged):
    with tempfile.TemporaryDirectory() as tmp, make_registry(Path(tmp), "sqlite") as reg:
        build(reg, steps)
        before, tags, hist, refs, by_id = snapshot(reg)
        if not before:
            return
        ordered = sorted(before)
        used = {ordered[i % len(ordered)] for i in in_use_pick}
        policy = Policy.parse("p", {"keep_tag_revisions": revisions, "untagged": untagged})
        found = inuse.load([("refs", "\n".join(f"app@{d}" for d in used))])
        preview = Pruner(reg, policy, found).run()
        done = Pruner(reg, policy, found, confirm=True).run()
        after, _, _, after_refs, after_ids = snapshot(reg)

        def decisions(p):
            return ({d.digest for r in p.repositories for d in r.kept},
                    {d.digest for r in p.repositories for d in r.deleted})

        # the dry run is exactly what --confirm then does
        assert decisions(preview) == decisions(done)
        assert after == before - decisions(done)[1]
        # never an image in use
        assert used <= after
        # never a kept index with a missing child
        for mid, kind, digest in after_refs:
            if kind == "manifest":
                assert digest in after, f"index {after_ids[mid]} lost child {digest}"
        # exactly N revisions of each live tag are kept (those that still existed)
        for tag in tags:
            revs = []
            for t, d in hist:
                if t == tag and d not in revs:
                    revs.append(d)
            for d in revs[:revisions]:
                if d in before:
                    assert d in after, f"revision of {tag} {d} was pruned"
        # and with untagged=delete nothing else survives without a reason
        if untagged == "delete":
            kept_reasons = {d.digest: d.keep for r in done.repositories for d in r.kept}
            assert all(kept_reasons[d] for d in after)
