"""The one eviction rule shared by the blob cache and the pull-through mirror.

Both keep a bounded set of entries (cached blob files; mirrored images) whose sizes and
last uses live in one index. To get back under a bound they evict the least recently used
entries that are neither pinned nor in use, oldest first, until the total is at or below the
target. The caller streams the entries in least-recently-used order (an ``ORDER BY
last_used`` over its index), so choosing costs one pass and no sort in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Entry:
    key: str            # a digest (cache) or repository@digest (mirror)
    size: int           # bytes this entry holds
    last_used: float    # unix time of the last read / pull
    pinned: bool = False
    in_use: bool = False  # being read or written now: never evicted


def victims(lru_order: Iterable[Entry], total: int, target: int) -> Iterator[Entry]:
    """Entries to evict, oldest first, until ``total`` would be at or below ``target``.

    ``lru_order`` must be sorted by ``last_used`` ascending. Pinned and in-use entries are
    skipped (so the result may stop short of the target when too much is pinned).
    """
    for entry in lru_order:
        if total <= target:
            return
        if entry.pinned or entry.in_use:
            continue
        total -= entry.size
        yield entry


def watermarks(max_size: int, high: float, low: float) -> tuple[int, int]:
    """``(high_bytes, low_bytes)``: start evicting above ``high`` x max, evict down to ``low`` x max."""
    if not 0 < low <= high <= 1:
        raise ValueError(f"watermarks need 0 < low <= high <= 1, got low={low} high={high}")
    return int(max_size * high), int(max_size * low)
