"""Progress of long operations: a rich bar on a terminal, a structured log line otherwise."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger("dockyard.progress")


@contextmanager
def progress(title: str, describe: Callable[[object], str], *, every: float = 5.0) -> Iterator[Callable[[object], None]]:
    """Yields an ``update(state)`` callback; ``describe(state)`` renders the state as text."""
    if sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), transient=False) as bar:
            task = bar.add_task(title, info="")
            yield lambda state: bar.update(task, info=describe(state))
        return
    last = [0.0]

    def update(state) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            log.info("%s: %s", title, describe(state))

    yield update
