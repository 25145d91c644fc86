"""The relay: claims outbox rows and has them delivered, each entity's in commit order; runs until stopped, or once.

One implementation for every store and every process: the in-process relay thread of the ``outbox`` backend,
``manage.py journy_relay`` and ``flask journy relay``. Several relays may share one table: the store's claim is a
lease and keeps each entity's order across relays (see :mod:`journy_core.outbox.store`).

The relay claims up to ``batch_size`` due rows and hands them to its :class:`~journy_core.outbox.sending.Sender`
(coalescing, a few calls in flight, pacing, settling each call's rows); it claims the next batch as soon as no call
of the last one may start, so the rate limit is used fully. It stops claiming while the sender pauses (journy.io not
answering) and while its store fails (the database away, the table not migrated yet: logged once with the
traceback, then one line at each try, waiting twice as long each time up to a minute). Now and then it purges dead
rows past their retention and kept delivered rows past their keep.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..backends.base import FailureCallback
from ..client import Client
from ..pacing import Pacer
from ..retry import RetryPolicy
from ..stats import Stats
from .sending import Batch, Sender
from .store import PENDING, OutboxStore

__all__ = ["DEFAULT_RETRY", "Relay", "RelaySummary", "default_owner"]

logger = logging.getLogger("journy")

#: The outbox's retry policy unless ``RETRY`` says otherwise: patient, since the rows wait in a table, not in
#: memory. About two hours of backoff in all (an outage costs few attempts: see :mod:`.sending`).
DEFAULT_RETRY = RetryPolicy(max_attempts=50, base=1.0, cap=300.0, max_age=7 * 86400.0)

#: How often a long-running relay deletes dead rows past their retention and delivered rows past their keep.
PURGE_EVERY = 3600.0
#: The longest wait between two tries of a store that keeps failing (a database away, a missing migration).
STORE_PAUSE_CAP = 60.0
#: Store failures in a row after which :meth:`Relay.run_once` gives up (about a minute of backoff at the default
#: poll interval): a ``--once`` run in cron must end, and the next one tries again.
ONCE_STORE_FAILURES = 5
#: The share of a lease a batch may use for starting calls: the rest is left for the calls in flight to end.
LEASE_SHARE = 0.75


def default_owner() -> str:
    """A relay's name in ``locked_by``: host, process and a random part (unique even for two relays in one
    process), within the column's 64 characters."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RelaySummary:
    """What :meth:`Relay.run_once` did: rows delivered and gone dead, rows still pending when it stopped (0 when
    every row pending at its start was settled), and how long it took."""

    delivered: int
    dead: int
    left: int
    seconds: float


class Relay:
    """Deliver the rows of ``store``; see the module docstring.

    :param client_factory: builds a :class:`~journy_core.Client` (one per call in flight, kept between batches).
    :param pacer: shared with whatever else sends with the same key in this process, if anything.
    :param retry: the backoff and when to give up (:data:`DEFAULT_RETRY` by default).
    :param on_failure: ``on_failure(operation, error)`` for each call whose rows go dead.
    :param owner: this relay's name in the rows it leases (:func:`default_owner` by default).
    :param concurrency: calls in flight at most.
    :param dead_retention_days: dead rows older than this are purged now and then (None: never).
    :param keep_delivered_days: delivered rows kept by the store are purged after this (0: the store keeps none).
    """

    def __init__(
        self,
        store: OutboxStore,
        client_factory: Callable[[], Client],
        *,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        on_failure: FailureCallback | None = None,
        stats: Stats | None = None,
        batch_size: int = 100,
        lease_seconds: float = 60.0,
        owner: str | None = None,
        concurrency: int = 4,
        poll_seconds: float = 2.0,
        gather_seconds: float = 0.0,
        dead_retention_days: float | None = 14,
        keep_delivered_days: float = 0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.stats = stats or Stats()
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.owner = owner or default_owner()
        self.poll_seconds = poll_seconds
        #: After a wake-up, how long to let the commits around it land before claiming: one claim for them, and
        #: one user's upserts merged, where claiming at each commit makes a call per row.
        self.gather_seconds = gather_seconds
        self.dead_retention_days = dead_retention_days
        self.keep_delivered_days = keep_delivered_days
        self.clock = clock
        self.sender = Sender(
            store,
            client_factory,
            pacer=pacer or Pacer(),
            retry=retry or DEFAULT_RETRY,
            on_failure=on_failure,
            stats=self.stats,
            concurrency=concurrency,
            clock=clock,
        )
        self._wakeup = threading.Event()
        self._store_failures = 0  # claims in a row that failed on the store
        self._last_purge = float("-inf")

    @property
    def delivered_rows(self) -> int:
        """Rows this relay delivered."""
        return self.sender.delivered_rows

    @property
    def dead_rows(self) -> int:
        """Rows this relay marked dead."""
        return self.sender.dead_rows

    def paused_for(self) -> float:
        """Seconds before the relay claims again (journy.io not answering, the store failing); 0 when it may."""
        return self.sender.paused_for()

    # -- running ---------------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for rows now instead of at the next poll (called after a commit that wrote some)."""
        self._wakeup.set()

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, then finish the calls in flight and give back the rest. Polls every
        ``poll_seconds`` while there is nothing to do, or sooner when :meth:`wake` is called."""
        try:
            while not stop.is_set():
                self._wakeup.clear()
                batch = self._claim_guarded(stop, None)
                if batch is not None:
                    batch.tail.wait()  # no call of it may start now: claim the next while its last ones fly
                elif not stop.is_set():
                    self._idle(stop, self.paused_for() or self.poll_seconds)
        finally:
            self.sender.wait_idle()

    def run_once(self, deadline: float | None = None, *, stop: threading.Event | None = None) -> RelaySummary:
        """Deliver every row pending now, waiting out retry delays, until ``deadline`` (a :func:`time.monotonic`
        time; None: no limit) or ``stop``. Rows written meanwhile are delivered too when they come in turn."""
        started, started_at = time.monotonic(), self.clock()
        delivered, dead = self.delivered_rows, self.dead_rows
        stop = stop or threading.Event()
        finished = False
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                batch = self._claim_guarded(stop, deadline)
                if batch is not None:
                    batch.tail.wait()
                    continue
                if self._store_failures >= ONCE_STORE_FAILURES:
                    break  # a table never migrated, a database away: an exit that says so beats waiting on it
                wait = self._wait_for_rows_from(started_at)
                if wait is None:
                    finished = True
                    break
                limit = wait if deadline is None else min(wait, deadline - time.monotonic())
                self._idle(stop, max(limit, 0.0))
        finally:
            self.sender.wait_idle()
        left = 0 if finished else self._pending_count()
        return RelaySummary(self.delivered_rows - delivered, self.dead_rows - dead, left, time.monotonic() - started)

    def step(self) -> int:
        """Claim one batch and deliver it; returns how many rows were claimed (0: none was due)."""
        batch = self._claim(threading.Event(), None)
        if batch is None:
            return 0
        batch.done.wait()
        return batch.plan.rows

    def close(self) -> None:
        """Wait for the calls in flight, then stop the worker threads and close the clients."""
        self.sender.close()

    # -- claiming --------------------------------------------------------------------------------------------

    def _claim(self, stop: threading.Event, deadline: float | None) -> Batch | None:
        rows = self.store.claim(self.owner, limit=self.batch_size, lease_seconds=self.lease_seconds, now=self.clock())
        if not rows:
            return None
        send_until = time.monotonic() + self.lease_seconds * LEASE_SHARE
        if deadline is not None:
            send_until = min(send_until, deadline)
        return self.sender.start(rows, send_until=send_until, stop=stop)

    def _claim_guarded(self, stop: threading.Event, deadline: float | None) -> Batch | None:
        """:meth:`_claim` (and a purge now and then) unless paused; a store error pauses claiming, never raises."""
        if self.paused_for() > 0:
            return None
        try:
            self._maybe_purge()
            batch = self._claim(stop, deadline)
        except Exception:  # the database may be away for a while (or not migrated yet): keep trying, never die
            self._store_failed()
            return None
        self._store_failures = 0
        return batch

    def _store_failed(self) -> None:
        self._store_failures += 1
        pause = min(STORE_PAUSE_CAP, self.poll_seconds * 2 ** min(self._store_failures - 1, 16))
        self.sender.pause(pause)
        if self._store_failures == 1:
            logger.exception("journy: the outbox relay could not claim rows; trying again in %.0f s", pause)
        else:
            logger.warning(
                "journy: the outbox relay still cannot use its store (%d failures in a row); next try in %.0f s",
                self._store_failures,
                pause,
            )

    def _wait_for_rows_from(self, started_at: datetime) -> float | None:
        """None when no row pending at ``started_at`` is left; otherwise how long to wait before looking again."""
        try:
            oldest = self.store.list_rows(status=PENDING, limit=1)
        except Exception:
            self._store_failed()
            return self.paused_for()
        if not oldest or oldest[0].created_at > started_at:
            return None
        # Its retry's due time, or (leased by another relay, or blocked behind one) a short look again.
        due = (oldest[0].next_attempt_at - self.clock()).total_seconds()
        return max(self.paused_for(), min(max(due, 0.05), self.poll_seconds))

    def _pending_count(self) -> int:
        try:
            return self.store.backlog(now=self.clock()).pending
        except Exception:
            logger.exception("journy: the outbox relay could not count the rows left")
            return -1

    def _idle(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds``, or less when woken or stopped."""
        end = time.monotonic() + seconds
        # Slices, so that a stop set from a signal handler is seen promptly without a second event to wait on.
        while not stop.is_set() and (left := end - time.monotonic()) > 0:
            if (paused := self.paused_for()) > 0:
                stop.wait(min(left, paused, 0.25))  # a wake-up does not end a pause
            elif self._wakeup.wait(min(left, 0.25)):
                if self.gather_seconds > 0:
                    stop.wait(self.gather_seconds)
                return

    def _maybe_purge(self) -> None:
        """Now and then, delete dead rows past ``dead_retention_days`` and kept delivered rows past their keep."""
        if time.monotonic() - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = time.monotonic()
        now = self.clock()
        dead_before = None if self.dead_retention_days is None else now - timedelta(days=self.dead_retention_days)
        delivered_before = now - timedelta(days=self.keep_delivered_days) if self.keep_delivered_days else None
        if dead_before is None and delivered_before is None:
            return
        purged = self.store.purge(dead_before=dead_before, delivered_before=delivered_before)
        if purged:
            logger.info("journy: purged %d old outbox row(s)", purged)
