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
