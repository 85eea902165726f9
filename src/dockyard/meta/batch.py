"""Batches of small writes from concurrent requests, run as one transaction.

A SQLite database has one writer at a time, so every write transaction is a turn of that
writer that all the others wait for; a small-image push made 17 of them per image. A step
that many concurrent requests take and that is the same small statement for each (a blob
turning ready) can share one turn: :meth:`Batcher.submit` queues the item; if no batch is
running, this thread runs one with every item queued so far, else it waits for the running
batch to end and then for the batch that holds its item. A lone request runs its batch of
one at once, so nothing waits for company. ``submit`` returns once the batch holding the item
has run (committed, and synced if the function syncs), with the result the run gave for
that item, or raises that batch's error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Ticket(Generic[T]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T):
        self.item = item
        self.done = False
        self.error: BaseException | None = None
        self.result: object = None


class Batcher(Generic[T]):
    def __init__(self, limit: int = 256):
        self.limit = limit
        self._cond = threading.Condition()
        self._pending: list[_Ticket[T]] = []
        self._running = False
        self.batches = 0  # batches run (items / batches = the batch size)

    def submit(self, item: T, run: Callable[[list[T]], list | None]) -> object:
        """Run ``run`` on a batch holding ``item`` (every submitter of one batcher passes an
        equivalent ``run``: the one of whichever thread leads the batch is used); returns what
        ``run`` returned for this item (its results are in the order of the items), or None."""
        ticket = _Ticket(item)
        with self._cond:
            self._pending.append(ticket)
            while not ticket.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                batch, self._pending = self._pending[:self.limit], self._pending[self.limit:]
                self._cond.release()
                error: BaseException | None = None
                results = None
                try:
                    results = run([t.item for t in batch])
                except BaseException as exc:  # noqa: BLE001 - every item of the batch gets the batch's error
                    error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                    self.batches += 1
                    for i, t in enumerate(batch):
                        t.done, t.error = True, error
                        t.result = results[i] if results is not None and error is None else None
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result
