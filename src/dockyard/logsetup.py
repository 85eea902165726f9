"""Logging: rich on a terminal, one structured line per event otherwise.

``log_format = "text"``: ``time=... level=... logger=... msg=...`` (rich on a terminal).
``log_format = "json"``: one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``msg``, the record's structured ``fields`` (the request log's) as keys of their
own, and ``exc`` with the traceback text when there is one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time


_BARE = re.compile(r'[^\s"=\\]+')


class _SecondCache:
    """A record's time as text, formatted once per second (``strftime`` is most of the cost of
    a time stamp, and the request log writes a line per request); the milliseconds per record."""

    def __init__(self, to_text) -> None:
        self.to_text = to_text
        self.cached = (-1, "")  # (second, text) in one object: threads format records concurrently

    def __call__(self, created: float) -> str:
        second = int(created)
        cached = self.cached
        if cached[0] != second:
            cached = self.cached = (second, self.to_text(second))
        return cached[1]


class TextFormatter(logging.Formatter):
    """The format string, then the record's structured ``fields`` as ``key=value`` pairs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seconds = _SecondCache(lambda second: time.strftime(self.default_time_format, self.converter(second)))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.default_msec_format % (self._seconds(record.created), record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += fields_text(fields)
        return text


def fields_text(fields: dict) -> str:
    """A record's structured fields as :class:`TextFormatter` appends them (`` key=value`` each)."""
    return "".join(f" {k}={v if not isinstance(v, str) or _BARE.fullmatch(v) else json.dumps(v)}"
                   for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seconds = _SecondCache(lambda second: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self._seconds(record.created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def log_each(logger: logging.Logger, level: int, messages: list[str]) -> None:
    """``logger.log(level, m)`` for each of ``messages`` (already formatted): one line each,
    as that call writes it. Where the logger's records end in the one handler :func:`setup`
    installs (the text or JSON lines on stderr), the record's prefix is formatted once for
    the whole list and the lines go out in one write: the collector logs a line per object
    reclaimed, and the per-call machinery (a record, a formatted time, a write and a flush
    each) was a tenth of its CPU. The lines share the time of the call. Anywhere else (a
    test's capture, a handler of the embedding application, the terminal's rich output)
    each line is a record of its own, as before."""
    if not messages or not logger.isEnabledFor(level):
        return
    handler = block_handler(logger, level)
    if handler is None:
        for m in messages:
            logger.log(level, "%s", m)
        return
    record = logger.makeRecord(logger.name, level, "(unknown file)", 0, _MARK, (), None)
    try:
        head, tail = handler.format(record).split(_MARK_OUT[type(handler.formatter)], 1)
        if isinstance(handler.formatter, JsonFormatter):
            lines = [f"{head}{json.dumps(m)}{tail}\n" for m in messages]
        else:
            lines = [f"{head}{m}{tail}\n" for m in messages]
    except Exception:  # noqa: BLE001 - as logging does: a failing format is reported, never raised
        handler.handleError(record)
        return
    _write_block(handler, record, lines)


def _write_block(handler: logging.Handler, record: logging.LogRecord, lines: list[str]) -> None:
    """``lines`` to ``handler``'s stream in one write and one flush (failures reported as logging does)."""
    try:
        with handler.lock:
            handler.stream.write("".join(lines))
            handler.flush()
    except Exception:  # noqa: BLE001 - as logging does: a failing stream is reported, never raised
        handler.handleError(record)


def log_fields(logger: logging.Logger, level: int, message: str, each: list[dict]) -> None:
    """``logger.log(level, message, extra={"fields": f})`` for each ``f`` of ``each``, as
    :func:`log_each` writes its lines: where the records end in :func:`setup`'s one handler,
    the prefix (time, level, logger, message) is formatted once and the lines go out in one
    write and one flush (the request log writes a line per request; a write that releases the
    GIL per line let the worker threads take it from the event loop each time); anywhere else a
    record per line, as before. The lines share the time of the call."""
    if not each or not logger.isEnabledFor(level):
        return
    handler = block_handler(logger, level)
    if handler is None:
        for fields in each:
            logger.log(level, message, extra={"fields": fields})
        return
    record = logger.makeRecord(logger.name, level, "(unknown file)", 0, message, (), None)
    try:
        if isinstance(handler.formatter, JsonFormatter):
            base = json.loads(handler.format(record))
            lines = [json.dumps({**base, **f}, default=str) + "\n" for f in each]
        else:
            head = handler.format(record)
            lines = [f"{head}{fields_text(f)}\n" for f in each]
    except Exception:  # noqa: BLE001 - as logging does: a failing format is reported, never raised
        handler.handleError(record)
        return
    _write_block(handler, record, lines)


_MARK = "\x00dockyard-line\x00"
_MARK_OUT: dict[type, str] = {}  # the mark as each formatter writes it (filled below)


def block_handler(logger: logging.Logger, level: int) -> logging.Handler | None:
    """The one handler of :func:`setup` that ``logger``'s records reach, if nothing else
    (another handler, a filter) sees them; else None."""
    found = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return None
        for h in node.handlers:
            if found is not None or not getattr(h, "_dockyard_lines", False) or h.filters or level < h.level:
                return None
            found = h
        if not node.propagate:
            break
        node = node.parent
    return found


_MARK_OUT[TextFormatter] = _MARK
_MARK_OUT[JsonFormatter] = json.dumps(_MARK)


def setup(level: str = "info", fmt: str = "text") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False)
        handler.setFormatter(TextFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter(
            "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"))
    handler._dockyard_lines = isinstance(handler, logging.StreamHandler)  # log_each may write blocks to it
    # no format here shows a record's source file, thread or process: skip collecting them
    # (a stack walk and three lookups per record; the collector logs a line per object)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("alembic").setLevel(max(lvl, logging.WARNING))
