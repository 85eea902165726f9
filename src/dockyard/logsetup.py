"""Logging: rich on a terminal, one structured line per event otherwise."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("alembic").setLevel(max(lvl, logging.WARNING))
