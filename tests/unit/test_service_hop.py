"""api.common.run: the one thread hop of a handler (an executor future, not anyio.to_thread)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dockyard.api.common import run


def test_run_returns_and_raises_in_a_worker_thread():
    async def main():
        name = await run(lambda: threading.current_thread().name)
        assert name != threading.current_thread().name
        with pytest.raises(KeyError):
            await run({}.__getitem__, "missing")

    asyncio.run(main())


def test_a_cancelled_caller_waits_for_the_call_to_end():
    finished = threading.Event()

    def slow():
        time.sleep(0.3)
        finished.set()

    async def main():
        task = asyncio.ensure_future(run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()  # the call (a commit, say) ended before the caller went on

    asyncio.run(main())


def test_service_threads_start_as_needed_up_to_the_limit():
    from dockyard.api.common import ServiceThreads

    pool = ServiceThreads(4, "test-service")
    try:
        for _ in range(20):  # one after the other: one thread does them all
            done = threading.Event()
            pool.submit(done.set)
            assert done.wait(5)
            while pool._idle._value == 0:  # the thread is back, waiting for the next call
                time.sleep(0.001)
        assert len(pool._threads) == 1
        gate, started, finished = threading.Event(), [], []

        def held(n):
            started.append(n)
            gate.wait(5)
            finished.append(n)

        for n in range(6):  # six blocking calls: four threads, two calls queued behind them
            pool.submit(lambda n=n: held(n))
        deadline = time.monotonic() + 5
        while len(started) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert len(started) == 4 and len(pool._threads) == 4
        gate.set()
        while len(finished) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(finished) == list(range(6)) and len(pool._threads) == 4
    finally:
        pool._close()
    assert not any(t.is_alive() for t in pool._threads)


def test_a_call_raising_stopiteration_fails_instead_of_hanging():
    def empty_next():
        return next(iter(()))

    async def main():
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(run(empty_next), 5)

    asyncio.run(main())
