from dockyard.lru import Entry, victims, watermarks
import pytest


def _e(key, size, t, **kw):
    return Entry(key, size, t, **kw)


def test_evicts_oldest_first_until_target():
    entries = [_e("a", 10, 1), _e("b", 10, 2), _e("c", 10, 3)]
    assert [v.key for v in victims(entries, total=30, target=15)] == ["a", "b"]


def test_skips_pinned_and_in_use_and_may_stop_short():
    entries = [_e("a", 10, 1, pinned=True), _e("b", 10, 2, in_use=True), _e("c", 10, 3)]
    assert [v.key for v in victims(entries, total=30, target=0)] == ["c"]


def test_nothing_when_under_target():
    assert list(victims([_e("a", 10, 1)], total=10, target=10)) == []


def test_watermarks():
    assert watermarks(1000, 0.9, 0.7) == (900, 700)
    with pytest.raises(ValueError):
        watermarks(1000, 0.5, 0.7)
