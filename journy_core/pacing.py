"""Spreading calls so that a key's rate limit is approached but not hit, even by several processes at once.

journy.io allows 1800 calls a minute per key in a sliding window, says in every answer how many are left
(``X-RateLimit-Remaining``), and blocks keys that keep hitting the limit. A :class:`Pacer` hands out send slots:

- It remembers when this process sent each call, so an answer's figures tell it which share of the window's calls
  were its own: ``share = mine / (limit - remaining)``. ``mine`` counts our calls sent no later than the one
  answered (``sent_at``: by default the slot the answering thread reserved), so that our calls still on their way,
  which the server has not counted yet, are not taken for another sender's.
- While other senders' calls keep arriving, it sends at ``target`` (97%) of the limit times that share. Alone, a
  process's share is 1, so it sends at 97% of the limit. Several processes sharing a key have shares that add up
  to 1, so together they send at 97% of the limit, whatever the split, and without a coordination service: each
  reads only the server's figures.
- When the others' count has not risen for a window (more than ``tolerance`` calls above its lowest in the
  window), their calls are those of a sender that has stopped (the previous run of a bulk sync) or that keeps a
  steady pace: it sends at the rate of the budget they leave, ``target * limit - others`` a window, if that is
  more than its share. A sync started after another one left 600 calls in the window sends at 1146 a minute from
  its first answers, instead of starting from the floor and growing its share only as its own calls fill the
  window (a fifth of the budget's rate over a 300-call run).
- A process whose share is tiny (it just started on a key that others saturate) still sends at ``floor`` (2%) of
  the target, and its share grows as the others' use of the window falls.
- After a 429 it sends nothing for a pause that doubles while 429s go on, up to a whole window.

Reacting to ``remaining`` alone does not work for a sliding window: processes that all see room fill the window
in a burst, then starve until the burst ages out a window later, and the cycle repeats (simulated in the tests).
The budget rule reads the others' count, not what is left, and gives way to the shares as soon as that count
rises: senders that all took the budget at once would overshoot it together (simulated too).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Thread-safe send-slot scheduler for one API key in one process.

    ``tolerance`` is how many calls the others' count may rise by before they are taken as sending: answers to
    calls sent at about the same time can reach the server in another order than they were sent.
    """

    def __init__(
        self,
        *,
        limit: int = 1800,
        window: float = 60.0,
        target: float = 0.97,
        floor: float = 0.02,
        tolerance: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.target = target
        self.floor = floor
        self.tolerance = tolerance
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = limit
        self._interval = window / (limit * target)
        self._mine: deque[float] = deque()  # when this process's calls of the last window were sent
        # (when, count) of the others' calls seen in answers over the last window, each count lower than every
        # later one: the first is the smallest count of the window.
        self._others: deque[tuple[float, int]] = deque()
        self._others_rose_at = float("-inf")  # when the others' count last rose
        self._sending = threading.local()  # .slot: the slot of the call this thread is sending
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
            self._forget_before(now - 2 * self.window)
            self._sending.slot = slot
            return slot - now

    def observe(self, limit: int | None, remaining: int | None, *, sent_at: float | None = None) -> None:
        """Take in the figures of an answer that was not a 429. ``sent_at`` is the slot :meth:`reserve` gave the
        call answered; by default the last slot this thread reserved."""
        with self._lock:
            self._pause = 0.0
            self._update(limit, remaining, sent_at)

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

    def _update(self, limit: int | None, remaining: int | None, sent_at: float | None = None) -> None:
        if limit and limit > 0:
            self._limit = limit
        if remaining is None or remaining < 0:
            return
        now = self._clock()
        if sent_at is None:
            sent_at = getattr(self._sending, "slot", now)
        # The server counted the calls that reached it before this one: ours sent no later than it, in the window
        # that ended then (calls reserved for later, or still on their way, are not in its count yet). Slots are
        # kept two windows (see reserve) so that a late answer still finds them.
        sent_at = min(sent_at, now)
        mine = bisect_right(self._mine, sent_at) - bisect_right(self._mine, sent_at - self.window)
        used = self._limit - min(remaining, self._limit)
        share = 1.0 if used <= 0 else min(1.0, mine / used)
        per_window = self.target * self._limit * max(share, self.floor)
        others = max(0, used - mine)
        if not self._others_rising(now, others):
            per_window = max(per_window, self.target * self._limit - others)
        self._interval = self.window / per_window

    def _others_rising(self, now: float, others: int) -> bool:
        """Whether the others' count rose in the last window: they are sending, and may send more."""
        seen = self._others
        while seen and seen[-1][1] >= others:
            seen.pop()
        seen.append((now, others))
        while seen[0][0] < now - self.window:
            seen.popleft()
        if others > seen[0][1] + self.tolerance:
            self._others_rose_at = now
        return now - self._others_rose_at < self.window

    def _forget_before(self, moment: float) -> None:
        mine = self._mine
        while mine and mine[0] < moment:
            mine.popleft()
