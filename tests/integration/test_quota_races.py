"""Quota races made to happen on purpose (SQLite and PostgreSQL): one push is held with the
quota's usage row locked while another push into the same namespace runs."""

from __future__ import annotations

import os

import pytest

from dockyard.lifecycle import deletes
from dockyard.lifecycle.quotas import reconcile, usage
from dockyard.registry import uploads
from tests.integration.test_push_races import interleave
from tests.lifecycle_support import make_registry, put_blob
from tests.support import sha256

KB = 6000


@pytest.fixture(params=["sqlite", "postgres"])
def reg(tmp_path, request):
    quotas = {"ns": {"repositories": "ns/*", "hard": KB + KB // 2}}
    with make_registry(tmp_path, request.param, quotas=quotas) as r:
        reconcile(r.db, r.config.quotas, r.now())  # the usage row exists (its insert would serialise too)
        yield r


def staged(reg, name: str, data: bytes):
    """An upload written already: the returned side only verifies and commits it (quick, so
    it gets to the quota's lock while the other side is held there)."""
    up = uploads.write(reg, uploads.start(reg, name), [data])
    return (uploads.finish, reg, name, up, sha256(data))


def _used(reg) -> int:
    return usage(reg)["ns"]["usage"]


def test_two_pushes_with_room_for_one(reg):
    """Without the usage row's lock both would read 0 bytes used and both would fit."""
    a, b = interleave("quotas.charge_locked", staged(reg, "ns/a", os.urandom(KB)),
                      staged(reg, "ns/b", os.urandom(KB)), settle=1.5)
    errors = [s.error for s in (a, b) if s.error is not None]
    assert len(errors) == 1 and errors[0].code == "DENIED", errors
    assert _used(reg) == KB
    assert reconcile(reg.db, reg.config.quotas, reg.now()) == []


def test_one_layer_pushed_into_two_repositories_at_once_counts_once(reg):
    data = os.urandom(KB)
    a, b = interleave("quotas.charge_locked", staged(reg, "ns/a", data), staged(reg, "ns/b", data), settle=1.5)
    assert a.error is None and b.error is None
    assert _used(reg) == KB
    assert reconcile(reg.db, reg.config.quotas, reg.now()) == []


def test_unlink_while_the_same_layer_is_pushed_elsewhere(reg):
    """The delete's credit holds the usage row: the push waits, then sees the link gone and
    counts the blob again (or the delete sees the new link and gives nothing back)."""
    data = os.urandom(KB)
    put_blob(reg, "ns/a", data)
    a, b = interleave("quotas.credit_locked", (deletes.unlink_blob, reg, "ns/a", sha256(data)),
                      staged(reg, "ns/b", data), settle=1.5)
    assert a.error is None and b.error is None
    assert _used(reg) == KB
    assert reconcile(reg.db, reg.config.quotas, reg.now()) == []
