"""The embedded default: a bounded in-process queue delivered by a few background threads.

- Starts on first use; after a fork (gunicorn ``--preload``, Celery prefork, multiprocessing) the child gets a
  fresh, empty queue, fresh threads and fresh connections (``os.register_at_fork`` plus a PID check).
- Enqueueing takes a lock, appends and returns: it never blocks on I/O and never raises. A full queue drops the
  operation, counts it, and says so in a warning at most once a minute.
- ``CONCURRENCY`` threads each keep one keep-alive connection, so a 100 ms round trip does not cap throughput;
  a shared :class:`~journy_core.pacing.Pacer` spreads their calls under the key's rate limit.
- Transient failures are retried with jittered backoff (:class:`~journy_core.retry.RetryPolicy`); anything else
  is reported failed at once.
- At interpreter exit, a bounded flush (``EXIT_TIMEOUT`` seconds) delivers what it can and logs what it could not.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import lifecycle
from ..attempt import attempt, describe_error, log_retry
from ..client import Client
from ..coalesce import Entry, PendingQueue
from ..operations import Operation
from ..pacing import Pacer
from ..retry import RetryPolicy
from .base import Backend, FailureCallback, Stats, report_failure

__all__ = ["EXIT_PATIENCE", "ThreadBackend"]

logger = logging.getLogger("journy")

#: Seconds without an answer from journy.io after which the exit flush gives up (while it answers, the exit flush
#: goes on for ``EXIT_TIMEOUT``).
EXIT_PATIENCE = 1.0


class ThreadBackend(Backend):
    """Deliver from background threads in this process. The default backend.

    OPTIONS (all optional): ``MAX_QUEUE_SIZE`` (10000 operations), ``CONCURRENCY`` (4 requests in flight),
    ``COALESCE_WINDOW`` (1.0 s that upserts, deletes, memberships and links wait so that later changes merge into
    them), ``EXIT_TIMEOUT`` (5.0 s of delivery at interpreter exit), ``RATE_LIMIT`` (1800) and ``RATE_WINDOW``
    (60 s) until the server's headers say otherwise, ``RETRY`` (see :class:`~journy_core.retry.RetryPolicy`).
    """

    name = "thread"
    option_names = frozenset(
        {"MAX_QUEUE_SIZE", "CONCURRENCY", "COALESCE_WINDOW", "EXIT_TIMEOUT", "RATE_LIMIT", "RATE_WINDOW", "RETRY"}
    )

    def __init__(
        self,
        *,
        client_factory: Callable[[], Client] | None,
        options: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        super().__init__(client_factory=client_factory, options=options, on_failure=on_failure)
        self.max_queue_size = self.number_option("MAX_QUEUE_SIZE", 10_000, minimum=1, integer=True)
        self.concurrency = self.number_option("CONCURRENCY", 4, minimum=1, integer=True)
        self.coalesce_window = self.number_option("COALESCE_WINDOW", 1.0)
        self.exit_timeout = self.number_option("EXIT_TIMEOUT", 5.0)
        self.rate_limit = self.number_option("RATE_LIMIT", 1800, minimum=1, integer=True)
        self.rate_window = self.number_option("RATE_WINDOW", 60.0, minimum=0.001)
        self.retry = RetryPolicy.coerce(self.options.get("RETRY"))
        self._setup_state()
        lifecycle.on_fork_and_exit(self, after_fork="_after_fork_in_child", at_exit="flush_at_exit")

    def _setup_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # work arrived, a retry came due, or closing
        self._idle = threading.Condition(self._lock)  # the queue may have become empty
        self._pending = PendingQueue(self.coalesce_window)  # waiting, in flight and retries, in per-entity order
        self._waiting_workers = 0
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._hurry = 0  # > 0 while someone flushes: the coalescing window is ignored
        # Whether journy.io answers: when the last attempts started failing transiently (None while it answers),
        # when each attempt in flight started, and the last transient error, for the exit flush's decision.
        self._failing_since: float | None = None
        self._last_failure = float("-inf")  # when the last attempt without an answer ended
        self._ever_answered = False  # whether journy.io answered any attempt of this process
        self._attempts_started: dict[int, float] = {}
        self._last_error = ""
        self._dropped_unreported = 0
        self._last_drop_warning = float("-inf")
        self.pacer = Pacer(limit=self.rate_limit, window=self.rate_window)
        self.stats = Stats(self._lock)  # counted inside the enqueue's critical section: no second lock

    # -- the producer side (the app's threads) ---------------------------------------------------------------

    def enqueue(self, operation: Operation) -> None:
        try:
            if self._pid != os.getpid():
                self._after_fork_in_child()
            now = time.monotonic()
            with self._lock:
                if self._closing:
                    self._drop(now, "closed")
                    return
                if len(self._pending) >= self.max_queue_size:
                    self._drop(now, "full")
                    return
                merged = self._pending.append(operation, now)
                self.stats.add_locked("queued")
                if merged:
                    self.stats.add_locked("coalesced", merged)
                if not self._threads:
                    self._start_workers()
                if self._waiting_workers:
                    self._wakeup.notify()
        except Exception:  # never into the app
            logger.exception("journy: could not queue %s", operation.describe())

    def _drop(self, now: float, why: str) -> None:
        self.stats.add_locked("dropped")
        self._dropped_unreported += 1
        if now - self._last_drop_warning >= 60.0:
            logger.warning(
                "journy: dropped %d operation(s) because the delivery queue is %s (MAX_QUEUE_SIZE=%d); "
                "journy.io may be unreachable or the rate limit too low for this volume",
                self._dropped_unreported,
                why,
                self.max_queue_size,
            )
            self._dropped_unreported = 0
            self._last_drop_warning = now

    def _start_workers(self) -> None:
        lifecycle.watch(self)
        for number in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"journy-delivery-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    # -- the consumer side (the delivery threads) ------------------------------------------------------------

    def _work(self) -> None:
        client: Client | None = None
        try:
            client = self.make_client()
            while True:
                entry = self._next_entry()
                if entry is None:
                    return
                self._deliver(client, entry)
        except Exception:
            logger.exception("journy: a delivery thread stopped unexpectedly")
        finally:
            if client is not None:
                client.close()

    def _next_entry(self) -> Entry | None:
        """Wait for an entry that may be sent now and for its send slot; None when the backend is closing."""
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    ready_at = self._pending.ready_at(hurry=self._hurry > 0)
                    if ready_at is not None and ready_at <= now:
                        break
                    if self._closing:
                        return None
                    self._waiting_workers += 1
                    try:
                        self._wakeup.wait(None if ready_at is None else ready_at - now)
                    finally:
                        self._waiting_workers -= 1
            # Take the slot before the entry, so that the entry can still absorb changes while we wait for it.
            delay = self.pacer.reserve()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                entry = self._pending.pop_ready(time.monotonic(), hurry=self._hurry > 0)
                if entry is not None:
                    self._attempts_started[entry.sequence] = time.monotonic()
                    return entry

    def _deliver(self, client: Client, entry: Entry) -> None:
        entry.attempts += 1
        age = time.monotonic() - entry.enqueued_at
        outcome = attempt(
            client.send,
            entry.operation,
            pacer=self.pacer,
            retry=self.retry,
            attempts=entry.attempts,
            age=age,
            stats=self.stats,
        )
        if outcome.outcome == "retry":
            log_retry(entry.operation, entry.attempts, outcome)
        elif outcome.outcome == "failed":
            error = outcome.error or RuntimeError("delivery failed")
            report_failure(entry.operation, error, entry.attempts, self.stats, self.on_failure)
        if not outcome.answered and outcome.error is not None:
            self._last_error = describe_error(outcome.error)
        with self._lock:
            now = time.monotonic()
            self._attempts_started.pop(entry.sequence, None)
            if outcome.answered:
                self._failing_since = None
                self._ever_answered = True
            else:
                self._last_failure = now
                if self._failing_since is None:
                    self._failing_since = now
            if outcome.outcome == "retry":
                self._pending.retry(entry, now + outcome.delay)
            else:
                self._pending.done(entry)  # the entries behind it, for the same user or account, may go now
            if self._waiting_workers:
                self._wakeup.notify_all()
            self._idle.notify_all()

    # -- flushing, closing, forking --------------------------------------------------------------------------

    def pending_count(self) -> int:
        """Operations queued, waiting for a retry, or in flight."""
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued now, ignoring the coalescing window and retry delays; wait at most
        ``timeout`` seconds (forever when None). Returns whether nothing is left."""
        return self._flush(timeout) == "done"

    def _flush(self, timeout: float | None, *, patience: float | None = None) -> str:
        """Flush; ``"done"``, ``"timeout"``, or ``"not answering"`` when ``patience`` is given and journy.io has
        not answered for that long (the last attempts failed, or one has waited that long for its answer)."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        with self._lock:
            if self._pid != os.getpid():
                return "done"
            self._hurry += 1
            self._wakeup.notify_all()
            try:
                while self._pending:
                    if not self._threads:
                        self._start_workers()
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return "timeout"
                    if patience is not None and self._unanswered_for(now, started) >= patience:
                        return "not answering"
                    wait = None if deadline is None else deadline - now
                    if patience is not None:
                        wait = min(wait if wait is not None else patience, 0.05)
                    self._idle.wait(wait)
                return "done"
            finally:
                self._hurry -= 1

    def _unanswered_for(self, now: float, flush_started: float) -> float:
        """How long journy.io has not answered, as far as this flush can tell; 0 while it answers.

        An outage that began before the flush counts whole once an attempt made during the flush failed too, and
        without limit in a process journy.io never answered (so a worker recycled in an outage leaves at once); a
        call waiting for its answer counts from when it was sent.
        A failure from before the flush alone counts only from the flush's start: journy.io may be back.
        """
        failing = self._failing_since
        if failing is not None and self._last_failure >= flush_started:
            # A process that journy.io never answered (a worker recycled in an outage) need not wait any longer.
            return float("inf") if not self._ever_answered else now - failing
        oldest = min(self._attempts_started.values(), default=None)
        if oldest is not None:
            return now - oldest
        return 0.0 if failing is None else now - max(failing, flush_started)

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout`` seconds), then stop the threads. Later operations are dropped."""
        if self._flush(timeout) == "done":
            with self._lock:
                self._closing = True
                self._wakeup.notify_all()
            return
        lost, unknown = self._stop(grace=0.0)
        logger.warning(
            "journy: closed with %d operation(s) not delivered; %d more were in flight, their outcome unknown",
            lost - unknown,
            unknown,
        )

    def _stop(self, grace: float) -> tuple[int, int]:
        """Stop taking operations and drop what waits; wait up to ``grace`` seconds for the calls in flight.

        Returns (operations not delivered, of which still in flight): each counted once.
        """
        with self._lock:
            self._closing = True
            self._wakeup.notify_all()
            dropped = len(self._pending.drain())
            deadline = time.monotonic() + grace
            while self._pending.in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._idle.wait(remaining)
            # What is left was taken back for a retry after the drain, or is still in flight.
            return dropped + len(self._pending), self._pending.in_flight

    def flush_at_exit(self) -> None:
        """The bounded exit flush that logs what it could not deliver: run at interpreter exit, and by
        :mod:`journy_core.lifecycle` when a child process ends without ``atexit``.

        It delivers for up to ``EXIT_TIMEOUT`` seconds while journy.io answers, and gives up after
        :data:`EXIT_PATIENCE` seconds without an answer (an outage must not hold a recycling worker).
        """
        if self._pid != os.getpid():
            return
        count = self.pending_count()
        dropped = self.stats["dropped"]
        dropped_note = (
            f"; {dropped} more were dropped while running because the queue was full (MAX_QUEUE_SIZE="
            f"{self.max_queue_size})"
            if dropped
            else ""
        )
        if not count:
            if dropped:
                logger.warning("journy: nothing left to deliver at exit%s", dropped_note)
            return
        started, failed_before = time.monotonic(), self.stats["failed"]
        outcome = self._flush(self.exit_timeout, patience=EXIT_PATIENCE)
        if outcome == "done":
            failed = self.stats["failed"] - failed_before
            if failed:  # settled, not delivered: a 401 or a 4xx is no delivery
                logger.warning(
                    "journy: %d operation(s) settled at exit in %.1f s, but %d call(s) failed (journy.io refused "
                    "them; the log above says why)%s",
                    count,
                    time.monotonic() - started,
                    failed,
                    dropped_note,
                )
                return
            logger.info(
                "journy: delivered %d operation(s) at exit in %.1f s%s", count, time.monotonic() - started, dropped_note
            )
            return
        # While journy.io answers, the calls in flight get their answer, so that the count is exact.
        lost, unknown = self._stop(grace=EXIT_PATIENCE if outcome == "timeout" else 0.0)
        if outcome == "timeout":
            why = f"within EXIT_TIMEOUT={self.exit_timeout:.1f} s"
        else:
            why = f"because journy.io is not answering ({self._last_error or 'no answer yet'})"
        logger.warning(
            "journy: %d operation(s) not delivered at exit %s; %d more were in flight, their outcome unknown%s",
            lost - unknown,
            why,
            unknown,
            dropped_note,
        )

    def _after_fork_in_child(self) -> None:
        # The parent still holds (and will deliver) what was queued before the fork: the child starts empty.
        self._setup_state()
