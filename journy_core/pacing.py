"""Spreading calls so that a key's rate limit is approached but not hit, even by several processes at once.

journy.io allows 1800 calls a minute per key in a sliding window, says in every answer how many are left
(``X-RateLimit-Remaining``), and blocks keys that keep hitting the limit. A :class:`Pacer` hands out send slots. It
reads nothing but the server's figures (no coordination service), and sends at the larger of two rates:

- **Its share.** It remembers when this process sent each call, so an answer's figures tell it which share of the
  window's calls were its own: ``share = (mine - 1/2) / (used - 1/2)`` with ``used = limit - remaining``. ``mine``
  counts our calls sent no later than the one answered (``sent_at``: by default the slot the answering thread
  reserved), so that our calls still on their way, which the server has not counted yet, are not taken for another
  sender's. The call answered counts as half: the server has just counted it, while each other sender's latest call
  came half of its spacing ago on average. Counted whole, every share is a little too big while counts are small:
  eight processes starting together sent some 15 calls too many in their first window. It sends at ``target``
  (97%) of the limit times its share. Alone, that is 97% of the limit; several processes sharing a key have shares
  that add up to 1, so together they send at 97% of the limit, whatever the split.
- **The room the others leave.** ``others = used - mine`` is the others' count in the window. If it goes on rising
  as steeply as it has from any of its lows of the last window, a window from now it will be ``others + rise``: the
  room is ``target * limit - others - rise`` a window. Others that keep a steady pace (a flat count, give or take
  ``tolerance``) or have stopped (a previous bulk sync run) leave all the rest: a worker process started next to
  siblings that send 200 calls a minute sends at about 1500 a minute from its first answers, and a sync started
  after another one left 600 calls in the window sends at 1146 a minute. By its share alone, such a process starts
  from a share of a few calls and grows it only as its own calls fill the window: a window or more, with a backlog
  waiting. Nor can it wait for the others' count to stay flat for a window: a count that wobbles seldom does.

Why the room does not overshoot: a window from now, the others' count is what they send meanwhile. That is their
count now if they keep their pace, less if they slow down (a falling count is taken as flat), and no more than
``others + rise`` if they start or speed up, since a pace shows in their count within a few calls. So the room
leaves them what they will send. Processes that start together each see the others' count climb at the pace of all
the rest, and from their second or third answer their room is below their share: the shares rule. This is why the
room is not a fraction of what is left in the window. A crowd's first window is where it overshoots: nothing has
left it yet, so on an empty window, where the shares already add up to 97% of the limit, every call taken on top of
them is still counted when the window ends. The rise is measured from the window's lows, the steepest one: a burst
of ten calls reads as 600 a minute one second later, and as 60 ten seconds later. A rise of up to ``tolerance``
calls is not a pace (answers that reached the server in another order than they were sent, a steady count's wobble).

Reacting to ``remaining`` alone does not work for a sliding window: processes that all see room fill the window in
a burst, then starve until the burst ages out a window later, and the cycle repeats (simulated in the tests). The
room is read from the others' count and its pace, and our own calls, however bunched, do not shrink it.

- A process whose share is tiny (it just started on a key that others saturate) still sends at ``floor`` (2%) of
  the target, and its share grows as the others' use of the window falls.
- Slots are at least the current interval apart, and a new one takes the first such gap from now on, even ahead of
  slots already handed out: a process held to a low rate for a moment (by a burst of its siblings, say) has its
  threads waiting for slots far apart, and once the room is back its next call does not wait behind them.
- After a 429 it sends nothing for a pause that doubles while 429s go on, up to a whole window.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

__all__ = ["Pacer"]

_LOWS_KEPT = 32  # lows of the others' count kept before older ones are thinned out


class Pacer:
    """Thread-safe send-slot scheduler for one API key in one process.

    ``tolerance`` is how many calls the others' count may rise by before the rise is taken as their pace: answers
    to calls sent at about the same time can reach the server in another order than they were sent.
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
        self._mine: deque[float] = deque()  # the slots of this process's calls of the last two windows, in order
        # (when, count) of the others' calls seen in answers over the last window, each count lower than every
        # later one: the first is the smallest count of the window, and each is a low the count rose from.
        self._others: deque[tuple[float, int]] = deque()
        self._sending = threading.local()  # .slot: the slot of the call this thread is sending
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
            slot = self._free_slot(max(now, self._paused_until))
            self._mine.insert(bisect_right(self._mine, slot), slot)
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

    def _free_slot(self, earliest: float) -> float:
        """The first moment from ``earliest`` at least an interval away from every slot already handed out."""
        mine, gap = self._mine, self._interval
        after = bisect_right(mine, earliest)
        slot = max(earliest, mine[after - 1] + gap) if after else earliest
        # Slots handed out for later (a few at most: one for each thread waiting to send) may leave no such gap.
        while after < len(mine) and mine[after] < slot + gap:
            slot = max(slot, mine[after] + gap)
            after += 1
        return slot

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
        share = 1.0 if used <= 0 else min(1.0, max(0.0, mine - 0.5) / (used - 0.5))  # why the half: see above
        budget = self.target * self._limit
        others = max(0, used - mine)
        room = budget - others - self._others_rise(now, others)
        self._interval = self.window / max(budget * max(share, self.floor), room)

    def _others_rise(self, now: float, others: int) -> float:
        """How much the others' count would rise in a window at the steepest pace it rose at from one of its lows
        of the last window; 0 when it is no more than ``tolerance`` above all of them."""
        lows = self._others
        while lows and lows[-1][1] >= others:
            lows.pop()
        while lows and lows[0][0] < now - self.window:
            lows.popleft()
        steepest = 0.0
        for when, count in lows:  # counts rise along the lows: the first within the tolerance ends the search
            if others - count <= self.tolerance:
                break
            # A rise between two answers at the same moment is as steep as the limit allows, or steeper.
            steepest = max(steepest, (others - count) / max(now - when, self.window / self._limit))
        lows.append((now, others))
        if len(lows) > _LOWS_KEPT:
            # Others that speed up for a whole window leave a low at every answer. A low that came less than an
            # eighth of its age after the low kept before it adds little: the pace from that one is at most about
            # a ninth less steep. So the lows kept thin out with age, a few dozen for a window.
            kept = [lows[0]]
            for low in itertools.islice(lows, 1, len(lows) - 1):
                if low[0] - kept[-1][0] >= (now - low[0]) / 8:
                    kept.append(low)
            kept.append(lows[-1])
            lows.clear()
            lows.extend(kept)
        return steepest * self.window

    def _forget_before(self, moment: float) -> None:
        mine = self._mine
        while mine and mine[0] < moment:
            mine.popleft()
