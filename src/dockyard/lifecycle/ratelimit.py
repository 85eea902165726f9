"""A limiter that allows at most ``rate`` operations in any 1-second window.

A token bucket lets up to twice its rate through a window that straddles a refill;
this keeps the times of the last ``rate`` operations and waits until the oldest is a
full second old, so the bound holds for every window, as a throttling object store
counts it. A rate below 1 spaces operations ``1/rate`` seconds apart. 0 = unlimited.

The window is ``MARGIN`` longer than a second: an operation reaches the store a little
after its grant (the issuing thread may be scheduled late), and a grant that left late
followed by one that left on time must still not fit in one second as the store sees them.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

MARGIN = 0.01


class WindowLimiter:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.window = (1.0 if rate >= 1 else 1.0 / rate) + MARGIN if rate > 0 else 0.0
        self.capacity = max(1, int(rate)) if rate > 0 else 0
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` operations (a batch delete of ``n`` keys counts ``n``) fit, and
        take them all at once. ``n`` must not exceed :attr:`capacity`."""
        if self.rate <= 0:
            return
        if not 1 <= n <= self.capacity:
            raise ValueError(f"{n} operations can never fit in a window of {self.capacity}")
        while True:
            with self._lock:
                now = self.clock()
                while self._times and now - self._times[0] >= self.window:
                    self._times.popleft()
                over = len(self._times) + n - self.capacity
                if over <= 0:
                    self._times.extend([now] * n)
                    return
                wait = self.window - (now - self._times[over - 1])
            self.sleep(max(wait, 0.0005))
