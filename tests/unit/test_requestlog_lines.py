"""The request log's lines: batched per turn of the event loop under setup()'s handler, at once elsewhere."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from dockyard import logsetup
from dockyard.api.requestlog import RequestLog


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


async def hello(scope, receive, send):
    await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


async def call(app, path):
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("127.0.0.1", 1)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    await app(scope, receive, send)


@pytest.fixture
def root():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = saved
    root.setLevel(level)


def test_lines_ending_in_one_turn_go_out_in_one_write(root):
    logsetup.setup("info", "text")
    stream = CountingStream()
    root.handlers[0].setStream(stream)
    app = RequestLog(hello)

    async def main():
        await asyncio.gather(*(call(app, f"/r{i}") for i in range(20)))
        await asyncio.sleep(0)  # the turn after: the lines are written

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    assert sorted(line.split(" path=")[1].split(" ")[0] for line in lines) == sorted(f"/r{i}" for i in range(20))
    assert all("msg=request" in line and "status=200 bytes=2" in line for line in lines)
    assert stream.writes < 20


def test_elsewhere_each_line_is_a_record_at_once(root, caplog):
    logsetup.setup("info", "text")  # (it replaces the root's handlers: the capture's too)
    root.addHandler(caplog.handler)
    app = RequestLog(hello)

    async def main():
        with caplog.at_level(logging.INFO, logger="dockyard.access"):
            await call(app, "/one")
            return [r.fields["path"] for r in caplog.records if r.name == "dockyard.access"]

    assert asyncio.run(main()) == ["/one"]  # before the loop turned again


def test_lines_whose_flush_never_runs_are_written_once_enough_are_held(root, monkeypatch):
    """A flush scheduled on a loop that closes before it runs must not hold the lines for ever."""
    logsetup.setup("info", "text")
    stream = CountingStream()
    root.handlers[0].setStream(stream)
    monkeypatch.setattr("dockyard.api.requestlog.LINES_HELD", 5)
    app = RequestLog(hello)
    class DroppingLoop(asyncio.SelectorEventLoop):
        def call_soon(self, callback, *args, context=None):
            if getattr(callback, "__name__", "") == "_write_lines":
                return None  # the flush is lost (as when a loop is closed before it runs)
            return super().call_soon(callback, *args, context=context)

    loop = DroppingLoop()
    try:
        loop.run_until_complete(call(app, "/a0"))
    finally:
        loop.close()
    assert stream.getvalue() == ""
    for i in range(3):
        asyncio.run(call(app, f"/b{i}"))  # held: a flush is pending (it never runs)
    assert stream.getvalue() == ""
    asyncio.run(call(app, "/b3"))  # the fifth held line: all five written at once
    paths = [line.split(" path=")[1].split(" ")[0] for line in stream.getvalue().splitlines()]
    assert paths == ["/a0", "/b0", "/b1", "/b2", "/b3"]
