"""Small pieces of the cache's read path: a chunk iterator that gives its resources back once."""

from __future__ import annotations

from typing import Callable, Iterator


def close(it) -> None:
    """Close an iterator that can be closed (a generator, a storage stream)."""
    fn = getattr(it, "close", None)
    if fn is not None:
        fn()


class Stream:
    """An iterator of chunks with ``close()``, which runs exactly once."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[bool], None]):
        self._chunks = chunks
        self._on_close = on_close
        self._finished = False
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self._finished = True
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close(self._chunks)
            self._on_close(self._finished)

    def __del__(self):  # a response that never started still gives its lease back
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a finalizer must not raise (e.g. at interpreter exit)
            pass
