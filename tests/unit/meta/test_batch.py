"""Batcher: concurrent submitters share runs; each returns after the run holding its item."""

import threading
import time

import pytest

from dockyard.meta.batch import Batcher


def test_a_lone_item_runs_at_once():
    runs: list[list[int]] = []
    Batcher().submit(1, runs.append)
    assert runs == [[1]]


def test_concurrent_items_share_runs_and_each_returns_after_its_own():
    batcher: Batcher[int] = Batcher()
    done: set[int] = set()
    lock = threading.Lock()

    def run(items):
        time.sleep(0.01)  # a slow transaction: the others queue meanwhile
        with lock:
            done.update(items)

    seen_after: dict[int, bool] = {}

    def submit(n):
        batcher.submit(n, run)
        with lock:
            seen_after[n] = n in done

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == set(range(40))
    assert all(seen_after.values()) and len(seen_after) == 40
    assert batcher.batches < 40, "no batching happened"


def test_a_failed_run_fails_every_item_of_it_and_the_next_run_works():
    batcher: Batcher[int] = Batcher()

    def broken(items):
        raise RuntimeError(f"boom {items}")
    with pytest.raises(RuntimeError):
        batcher.submit(1, broken)
    runs: list[list[int]] = []
    batcher.submit(2, runs.append)
    assert runs == [[2]]


def test_batches_are_bounded():
    batcher: Batcher[int] = Batcher(limit=3)
    gate = threading.Event()
    sizes: list[int] = []

    def run(items):
        gate.wait(5)
        sizes.append(len(items))

    first = threading.Thread(target=batcher.submit, args=(0, run))
    first.start()
    time.sleep(0.05)  # the first run holds the batcher; the rest queue
    others = [threading.Thread(target=batcher.submit, args=(n, run)) for n in range(1, 8)]
    for t in others:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, *others]:
        t.join()
    assert sum(sizes) == 8 and max(sizes) <= 3


def test_each_submitter_gets_its_own_result():
    batcher: Batcher[int] = Batcher()
    got: dict[int, object] = {}
    lock = threading.Lock()

    def run(items):
        time.sleep(0.005)
        return [n * 10 for n in items]

    def submit(n):
        result = batcher.submit(n, run)
        with lock:
            got[n] = result

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {n: n * 10 for n in range(30)}
