"""Spreading calls so that a key's rate limit is approached but not hit.

journy.io allows 1800 calls a minute per key in a sliding window, says how many are left in every answer
(``X-RateLimit-Remaining``), and blocks keys that keep hitting the limit. The :class:`Pacer` hands out send slots:

- at a steady ``target`` share (97%) of the limit, spread evenly, so one process alone never exhausts the window;
- slower as ``remaining`` falls below a floor, so several processes sharing a key (each reading the server's
  figures, with no coordination service) settle just under the limit together;
- nothing at all for a pause after a 429, doubling while 429s continue, until the window frees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Thread-safe send-slot scheduler for one API key in one process."""

    def __init__(
        self,
        *,
        limit: int = 1800,
        window: float = 60.0,
        target: float = 0.97,
        floor: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.target = target
        self.floor = floor
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = limit
        self._remaining: int | None = None
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._pause = 0.0

    @property
    def interval(self) -> float:
        """Seconds between two sends at the current figures."""
        base = self.window / (self._limit * self.target)
        if self._remaining is None:
            return base
        share = self._remaining / self._limit
        if share >= self.floor:
            return base
        # Below the floor, slow down in proportion: at half the floor, half the rate; at zero, a tenth.
        return base / max(share / self.floor, 0.1)

    def reserve(self) -> float:
        """Claim the next send slot; return how many seconds to wait before sending (0 when it is now)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._paused_until)
            self._next_slot = slot + self.interval
            return slot - now

    def observe(self, limit: int | None, remaining: int | None) -> None:
        """Take in the figures of an answer that was not a 429."""
        with self._lock:
            if limit and limit > 0:
                self._limit = limit
            if remaining is not None and remaining >= 0:
                self._remaining = remaining
            self._pause = 0.0

    def rate_limited(self, limit: int | None = None) -> float:
        """A 429 came back: stop sending until the window frees. Returns the pause in seconds."""
        with self._lock:
            if limit and limit > 0:
                self._limit = limit
            self._remaining = 0
            # A sliding window frees one call every window/limit seconds; wait for a few of them, and twice as
            # long each time the 429s go on, up to a whole window.
            step = self.window / self._limit
            self._pause = min(self.window, max(step * 8, self._pause * 2 or 0.25))
            self._paused_until = max(self._paused_until, self._clock() + self._pause)
            return self._pause
