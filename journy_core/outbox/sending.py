"""Sending a relay's claimed batches: a few calls in flight, each entity's calls in order, paced, settled on the rows.

A :class:`Sender` turns claimed rows into a :class:`~journy_core.outbox.calls.CallPlan` and has up to
``concurrency`` worker threads send its calls: each takes a call that may go now (first in line for its user or
account), waits for its slot from the :class:`~journy_core.pacing.Pacer`, makes one
:func:`~journy_core.attempt.attempt`, and settles the call's rows in the store:

- sent: the rows are delivered;
- retry: the rows wait for the backoff (``retry_later``); the entity's later calls in the batch stay behind, unsent;
- failed (a 4xx other than 429, or out of retries): the rows go dead with journy.io's answer, ``on_failure`` is told.

A worker leaves when no call may go now (the rest wait behind calls in flight, whose workers carry on with them), so
the relay may claim its next batch while the last calls of this one are in flight: the rate limit is used fully
across batches. The last worker of a batch gives back the rows no call settled (never sent, or only partly).

When journy.io stops answering (``OUTAGE_AFTER`` attempts in a row without an answer) the sender pauses: no call
starts and no batch is claimed until the pause ends, longer each time it happens again. No call starts after its
batch's ``send_until`` either (most of its lease), nor once the relay is stopping.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from ..attempt import Attempt, attempt, describe_error, log_retry
from ..backends.base import FailureCallback, report_failure
from ..client import Client
from ..pacing import Pacer
from ..retry import RetryPolicy
from ..stats import Stats
from .calls import Call, CallPlan
from .store import OutboxRow, OutboxStore

__all__ = ["OUTAGE_AFTER", "OUTAGE_PAUSE_CAP", "Batch", "Sender"]

logger = logging.getLogger("journy")

#: Attempts in a row without an answer from journy.io after which the sender pauses (an outage, not a blip).
OUTAGE_AFTER = 3
#: The longest pause of an outage, in seconds (``RETRY["cap"]`` when lower): how long a relay may go on waiting
#: after journy.io is back, against one probe round (at most ``CONCURRENCY`` calls) a minute while it is away.
OUTAGE_PAUSE_CAP = 60.0
#: How long the sender pauses after a worker failed unexpectedly (a client that cannot be built, say).
ERROR_PAUSE = 5.0


class Batch:
    """A claimed batch being sent: its plan (used under :attr:`lock`), when no call may start any more, and two
    events: :attr:`tail` (no call may start now: the next batch may be claimed) and :attr:`done` (all settled)."""

    def __init__(self, plan: CallPlan, send_until: float, stop: threading.Event, workers: int) -> None:
        self.plan = plan
        #: A :func:`time.monotonic` time after which no call starts (most of the lease, a run's deadline).
        self.send_until = send_until
        self.stop = stop
        self.workers = workers
        self.halted = False
        self.lock = threading.Lock()
        self.tail = threading.Event()
        self.done = threading.Event()


class _Workers:
    """A few daemon threads running tasks. Not a ``ThreadPoolExecutor``: the interpreter waits for its threads at
    exit, which would hold a process ending in the middle of a batch; a relay's rows need no such wait (a call
    in flight whose answer is lost is sent again after the lease)."""

    def __init__(self, size: int) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"journy-outbox-{number}", daemon=True) for number in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()  # never raises: the tasks catch what they must

    def shutdown(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()


class Sender:
    """Sends batches for one relay; see the module docstring."""

    def __init__(
        self,
        store: OutboxStore,
        client_factory: Callable[[], Client],
        *,
        pacer: Pacer,
        retry: RetryPolicy,
        on_failure: FailureCallback | None,
        stats: Stats,
        concurrency: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.client_factory = client_factory
        self.pacer = pacer
        self.retry = retry
        self.on_failure = on_failure
        self.stats = stats
        self.concurrency = max(1, concurrency)
        self.clock = clock
        #: Rows delivered and gone dead.
        self.delivered_rows = 0
        self.dead_rows = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # a batch finished
        self._active: set[Batch] = set()
        self._clients: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._all_clients: list[Client] = []
        self._pool: _Workers | None = None
        self._paused_until = 0.0  # monotonic
        self._unanswered = 0  # attempts in a row without an answer
        self._outage_pauses = 0  # pauses since the last answer: each one doubles the next

    # -- pausing ---------------------------------------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds left before calls start again and batches are claimed again (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, seconds: float) -> None:
        """Start no call and have no batch claimed for ``seconds`` (or until an earlier pause ends, if later)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _note_answer(self, outcome: Attempt) -> None:
        with self._lock:
            if outcome.answered:
                self._unanswered = self._outage_pauses = 0
                return
            self._unanswered += 1
            # A lone failure is not an outage: the row's own backoff is enough. And the other calls of a round
            # that already paused (up to CONCURRENCY were in flight) do not double the pause again: doubling per
            # call made a 30 s outage cost minutes of waiting after journy.io was back.
            if self._unanswered < OUTAGE_AFTER or time.monotonic() < self._paused_until:
                return
            level, self._outage_pauses = self._outage_pauses, self._outage_pauses + 1
        ceiling = min(self.retry.cap, OUTAGE_PAUSE_CAP, self.retry.base * 2 ** min(level, 32))
        self.pause(ceiling * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret

    # -- batches ---------------------------------------------------------------------------------------------

    def start(self, rows: Sequence[OutboxRow], *, send_until: float, stop: threading.Event) -> Batch:
        """Start sending the calls of ``rows`` in the worker threads; returns the batch, whose events say when
        the next may be claimed and when it is all settled."""
        plan = CallPlan(rows)
        if plan.coalesced:
            self.stats.add("coalesced", plan.coalesced)
        batch = Batch(plan, send_until, stop, min(self.concurrency, len(plan)))
        with self._lock:
            self._active.add(batch)
            if self._pool is None:
                self._pool = _Workers(self.concurrency)
            pool = self._pool
        for _ in range(batch.workers):
            pool.submit(lambda: self._work(batch))
        return batch

    def wait_idle(self) -> None:
        """Wait until every batch started is settled (the calls in flight answered)."""
        with self._idle:
            while self._active:
                self._idle.wait()

    def close(self) -> None:
        """Wait for the batches in flight, then stop the worker threads and close the clients."""
        self.wait_idle()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for client in self._all_clients:
            client.close()
        self._all_clients.clear()

    def _work(self, batch: Batch) -> None:
        try:
            client = self._take_client()
            try:
                while (call := self._next_call(batch)) is not None:
                    if self._may_start(batch):
                        self._deliver(client, batch, call)
                    else:
                        with batch.lock:
                            batch.halted = True
                            batch.plan.held(call, settle=False)
            finally:
                self._clients.put(client)
        except Exception:
            logger.exception("journy: an outbox delivery thread failed; pausing for %.0f s", ERROR_PAUSE)
            self.pause(ERROR_PAUSE)  # or the relay would claim and give back the same rows in a loop
        finally:
            self._leave(batch)

    def _leave(self, batch: Batch) -> None:
        """A worker leaves; the last one gives back the rows no call settled."""
        with batch.lock:
            batch.workers -= 1
            last = batch.workers == 0
        batch.tail.set()
        if not last:
            return
        try:
            left = batch.plan.unsettled()
            if left:
                self.store.release(left)
        except Exception:  # they stay leased: another claim takes them when the lease ends
            logger.exception("journy: the outbox relay could not give rows back")
        finally:
            with self._idle:
                self._active.discard(batch)
                self._idle.notify_all()
            batch.done.set()

    def _take_client(self) -> Client:
        try:
            return self._clients.get_nowait()
        except queue.Empty:
            client = self.client_factory()
            with self._lock:
                self._all_clients.append(client)
            return client

    def _next_call(self, batch: Batch) -> Call | None:
        """A call that may go now, or None: the batch is halted, or every call left is behind one in flight."""
        with batch.lock:
            if batch.halted or batch.stop.is_set() or self.paused_for() > 0:
                batch.halted = True
                return None
            return batch.plan.next_call()

    def _may_start(self, batch: Batch) -> bool:
        """Wait for the pacer's slot; False when the call must not start (stopping, paused, or the slot comes
        after the batch's end)."""
        delay = self.pacer.reserve()
        if time.monotonic() + delay > batch.send_until:
            # Not now: and not at once again either, or the relay would claim and give back in a loop.
            self.pause(delay)
            return False
        if delay > 0 and batch.stop.wait(delay):
            return False
        return not (batch.stop.is_set() or self.paused_for() > 0)

    def _deliver(self, client: Client, batch: Batch, call: Call) -> None:
        operation, attempts = call.operation, call.attempts
        assert operation is not None
        age = (self.clock() - call.created_at).total_seconds()
        outcome = attempt(
            client.send, operation, pacer=self.pacer, retry=self.retry, attempts=attempts, age=age, stats=self.stats
        )
        self._note_answer(outcome)
        self._settle(batch, call, outcome, attempts)

    def _settle(self, batch: Batch, call: Call, outcome: Attempt, attempts: int) -> None:
        """Record the outcome on the rows. A store error is logged: the rows stay leased, and the next claim after
        the lease sends them again (at least once, never lost)."""
        assert call.operation is not None
        plan, store = batch.plan, self.store
        error = outcome.error or RuntimeError("delivery failed")
        try:
            if outcome.outcome == "sent":
                with batch.lock:
                    ids = plan.sent(call)
                store.delivered(ids, now=self.clock())
                self._count(delivered=len(ids))
            elif outcome.outcome == "retry":
                log_retry(call.operation, attempts, outcome)
                with batch.lock:
                    ids = plan.held(call)
                due = self.clock() + timedelta(seconds=outcome.delay)
                store.retry_later(ids, at=due, error=describe_error(error))
            else:
                with batch.lock:
                    ids = plan.failed(call)
                store.mark_dead(ids, error=describe_error(error))
                self._count(dead=len(ids))
        except Exception:
            # Not released either: the entity's later calls stay unsent, behind rows a later claim sends again.
            logger.exception("journy: the outbox relay could not record the outcome of %s", call.operation.describe())
            return
        if outcome.outcome != "retry":
            with batch.lock:
                plan.release(call)  # recorded: the entity's next call may go (CallPlan.sent says why not before)
        if outcome.outcome == "failed":
            report_failure(call.operation, error, attempts, self.stats, self.on_failure)

    def _count(self, *, delivered: int = 0, dead: int = 0) -> None:
        with self._lock:
            self.delivered_rows += delivered
            self.dead_rows += dead
