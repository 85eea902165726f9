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
        self.second, self.text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, self.to_text(second)
        return self.text


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
            text += "".join(f" {k}={v if not isinstance(v, str) or _BARE.fullmatch(v) else json.dumps(v)}"
                            for k, v in fields.items())
        return text


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
    # no format here shows a record's source file, thread or process: skip collecting them
    # (a stack walk and three lookups per record; the collector logs a line per object)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("alembic").setLevel(max(lvl, logging.WARNING))
