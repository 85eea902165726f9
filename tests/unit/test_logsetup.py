"""logsetup.log_each: one line per message, as ``logger.info`` writes it, in one block."""

from __future__ import annotations

import json
import logging
import re

import pytest

from dockyard import logsetup


class _Err:
    """What setup()'s handler wrote to stderr (pytest's capture, read through ``capsys``)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def root_stream(capsys):
    """setup()'s handler writes to the captured stderr; the root logger's handlers are restored afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield _Err(capsys)
    root.handlers[:] = saved
    root.setLevel(level)


def _strip_time(text: str) -> list[str]:
    return [re.sub(r"^time=\S+ \S+ ", "", line) for line in text.splitlines()]


def _block_matches_one_call_each(stream, one_call_each, block, lines: int) -> None:
    """What ``block()`` writes in one go equals what ``one_call_each()`` writes line by line (but the time)."""
    one_call_each()
    one_by_one = stream.getvalue()
    block()
    written = stream.getvalue()
    assert _strip_time(written) == _strip_time(one_by_one)
    assert len(written.splitlines()) == lines and written.endswith("\n")


def test_text_lines_match_one_call_each(root_stream):
    logsetup.setup("info", "text")
    log = logging.getLogger("dockyard.lifecycle.collector")
    messages = ["gc: deleted blob sha256:ab (3 bytes)", "gc: deleted upload u1 (0 bytes)", 'odd "quoted" = text']
    _block_matches_one_call_each(root_stream, lambda: [log.info("%s", m) for m in messages],
                                 lambda: logsetup.log_each(log, logging.INFO, messages), 3)


def test_json_lines_match_one_call_each(root_stream):
    logsetup.setup("info", "json")
    log = logging.getLogger("dockyard.lifecycle.collector")
    messages = ["gc: deleted blob sha256:ab (3 bytes)", 'a "quoted"\\ line']
    logsetup.log_each(log, logging.INFO, messages)
    docs = [json.loads(line) for line in root_stream.getvalue().splitlines()]
    assert [d["msg"] for d in docs] == messages
    assert {(d["level"], d["logger"]) for d in docs} == {("INFO", "dockyard.lifecycle.collector")}


def test_below_the_level_nothing_is_written(root_stream):
    logsetup.setup("warning", "text")
    logsetup.log_each(logging.getLogger("dockyard.x"), logging.INFO, ["quiet"])
    assert root_stream.getvalue() == ""


def test_other_handlers_get_one_record_per_line(root_stream):
    logsetup.setup("info", "text")
    records = []
    extra = logging.Handler()
    extra.emit = records.append
    log = logging.getLogger("dockyard.x")
    log.addHandler(extra)
    try:
        logsetup.log_each(log, logging.INFO, ["one", "two"])
    finally:
        log.removeHandler(extra)
    assert [r.getMessage() for r in records] == ["one", "two"]
    assert len(root_stream.getvalue().splitlines()) == 2  # setup()'s handler still gets each line


FIELDS = [{"id": "r1", "method": "GET", "path": "/v2/a b/x", "status": 200, "bytes": 5, "ms": 1.5, "user": "-"},
          {"id": "r2", "method": "PUT", "path": '/v2/"q"', "status": 201, "bytes": 0, "ms": 0.25, "user": "me"}]


def test_fields_text_lines_match_one_call_each(root_stream):
    logsetup.setup("info", "text")
    log = logging.getLogger("dockyard.access")
    _block_matches_one_call_each(root_stream, lambda: [log.info("request", extra={"fields": f}) for f in FIELDS],
                                 lambda: logsetup.log_fields(log, logging.INFO, "request", FIELDS), 2)


def test_fields_json_lines_match_one_call_each(root_stream):
    logsetup.setup("info", "json")
    log = logging.getLogger("dockyard.access")
    for f in FIELDS:
        log.info("request", extra={"fields": f})
    one_by_one = [json.loads(line) for line in root_stream.getvalue().splitlines()]
    logsetup.log_fields(log, logging.INFO, "request", FIELDS)
    block = [json.loads(line) for line in root_stream.getvalue().splitlines()]
    for d in one_by_one + block:
        assert d.pop("time")
    assert block == one_by_one and len(block) == 2


def test_fields_go_to_other_handlers_one_record_each(root_stream):
    logsetup.setup("info", "text")
    records = []
    extra = logging.Handler()
    extra.emit = records.append
    log = logging.getLogger("dockyard.access")
    log.addHandler(extra)
    try:
        logsetup.log_fields(log, logging.INFO, "request", FIELDS)
    finally:
        log.removeHandler(extra)
    assert [r.fields for r in records] == FIELDS
    assert len(root_stream.getvalue().splitlines()) == 2
