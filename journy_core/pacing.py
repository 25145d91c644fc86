"""Spreading calls so that a key's rate limit is approached but not hit, even by several processes at once.

journy.io allows 1800 calls a minute per key in a sliding window, says in every answer how many are left
(``X-RateLimit-Remaining``), and blocks keys that keep hitting the limit. A :class:`Pacer` hands out send slots:

- It remembers when this process sent each call of the last window, so an answer's figures tell it which share of
  the window's calls were its own: ``share = mine / (limit - remaining)``.
- It sends at ``target`` (97%) of the limit times that share. Alone, a process's share is 1, so it sends at 97% of
  the limit. Several processes sharing a key have shares that add up to 1, so together they send at 97% of the
  limit, whatever the split, and without a coordination service: each reads only the server's figures.
- A process whose share is tiny (it just started on a key that others saturate) still sends at ``floor`` (2%) of
  the target, and its share grows as the others' use of the window falls.
- After a 429 it sends nothing for a pause that doubles while 429s go on, up to a whole window.

Reacting to ``remaining`` alone does not work for a sliding window: processes that all see room fill the window
in a burst, then starve until the burst ages out a window later, and the cycle repeats (simulated in the tests).
"""

from __future__ import annotations

import threading
import time
from collections import deque
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
        floor: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.target = target
        self.floor = floor
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = limit
        self._interval = window / (limit * target)
        self._mine: deque[float] = deque()  # when this process's calls of the last window were sent
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._pause = 0.0

    @property
    def interval(self) -> float:
        """Seconds between two sends at the current figures."""
        return self._interval

    @property
    def limit(self) -> int:
        return self._limit

    def reserve(self) -> float:
        """Claim the next send slot; return how many seconds to wait before sending (0 when it is now)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._paused_until)
            self._next_slot = slot + self._interval
            self._mine.append(slot)
            self._forget_before(now - self.window)
            return slot - now

    def observe(self, limit: int | None, remaining: int | None) -> None:
        """Take in the figures of an answer that was not a 429."""
        with self._lock:
            self._pause = 0.0
            self._update(limit, remaining)

    def rate_limited(self, limit: int | None = None) -> float:
        """A 429 came back: stop sending until the window frees. Returns the pause in seconds."""
        with self._lock:
            self._update(limit, 0)
            # A sliding window frees one call every window/limit seconds on average; wait for a few of them, and
            # twice as long each time the 429s go on, up to a whole window.
            step = self.window / self._limit
            self._pause = min(self.window, max(step * 8, self._pause * 2 or 0.25))
            self._paused_until = max(self._paused_until, self._clock() + self._pause)
            return self._pause

    def _update(self, limit: int | None, remaining: int | None) -> None:
        if limit and limit > 0:
            self._limit = limit
        if remaining is None or remaining < 0:
            return
        now = self._clock()
        self._forget_before(now - self.window)
        # Slots reserved for later are not in the server's count yet.
        mine = len(self._mine) - sum(1 for slot in reversed(self._mine) if slot > now)
        used = self._limit - min(remaining, self._limit)
        share = 1.0 if used <= 0 else min(1.0, mine / used)
        self._interval = self.window / (self.target * self._limit * max(share, self.floor))

    def _forget_before(self, moment: float) -> None:
        mine = self._mine
        while mine and mine[0] < moment:
            mine.popleft()
