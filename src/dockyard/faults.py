"""Fault-injection points: hold one side of a race inside its critical section.

Code marks the places where an interleaving matters with ``faults.point("name")``. In
production a point is a dictionary lookup and nothing else. A test arms a point and the
first thread that reaches it waits there until the test releases it, so the other side of
the race can run at exactly that moment:

- in-process: ``with faults.hold("collector.links_locked") as h: ...; h.reached.wait();
  ...; h.release()``;
- in a server process started with ``DOCKYARD_FAULTS_DIR=D``: the test creates the file
  ``D/<name>.hold``; the first thread to arrive takes it, touches ``D/<name>.reached`` and
  ``D/<name>.held``, and waits until the test removes ``.held`` (see ``tests/support.py``).

A held thread gives up after ``TIMEOUT`` seconds, so a broken test cannot wedge a server.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

TIMEOUT = 60.0


class Hold:
    def __init__(self, name: str, times: int = 1):
        self.name = name
        self.times = times
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def _wait(self) -> None:
        self.reached.set()
        self._released.wait(TIMEOUT)


_armed: dict[str, Hold] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Wait here if a test has armed ``name``; otherwise return at once."""
    if _armed:
        with _lock:
            hold = _armed.get(name)
            if hold is not None:
                hold.times -= 1
                if hold.times <= 0:
                    del _armed[name]
        if hold is not None:
            hold._wait()
            return
    directory = os.environ.get("DOCKYARD_FAULTS_DIR")
    if directory:
        _wait_on_files(Path(directory), name)


def _wait_on_files(directory: Path, name: str) -> None:
    gate = directory / f"{name}.hold"
    try:
        gate.unlink()  # the first thread to arrive takes the hold; others pass
    except FileNotFoundError:
        return
    held = directory / f"{name}.held"
    held.touch()
    (directory / f"{name}.reached").touch()
    deadline = time.monotonic() + TIMEOUT
    while held.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def hold(name: str, times: int = 1) -> Iterator[Hold]:
    """Arm ``name`` in this process for the next ``times`` arrivals (all wait for one release)."""
    h = Hold(name, times)
    with _lock:
        _armed[name] = h
    try:
        yield h
    finally:
        with _lock:
            if _armed.get(name) is h:
                del _armed[name]
        h.release()
