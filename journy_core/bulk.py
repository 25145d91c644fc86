"""The bulk (daily) sync's sending: every user and account, sent under the rate limit, resumable.

The engine of ``manage.py journy_sync`` and ``flask journy sync`` (whose stages, options, state file and reporting
are :mod:`journy_core.sync_plan`). It takes ``(key, operation)`` pairs ordered by key (the primary key, as a string)
and sends them: a few calls in flight, paced by the :class:`~journy_core.pacing.Pacer`, transient failures retried.
After each batch (which ends where a key ends) it writes the last key done, and the counts so far, to ``state_file``
(:mod:`journy_core.sync_state`), so an interrupted sync run again starts after it (the adapter filters its query
with :meth:`BulkSync.resume_after`) and still counts the calls that failed before; a sync that completes forgets its
checkpoint.

``--since`` (only the rows changed since a date) is shared too: :func:`parse_since` reads the date,
:data:`SINCE_FIELDS` are the timestamp fields looked for, and :func:`since_scope` describes the filter. A checkpoint
remembers the scope of the run that wrote it and is resumed only by a run with the same scope: the keys done by a
run filtered on another date (or not filtered) say nothing about the rows this run selects, so resuming after them
could skip rows silently. Such a run starts from the beginning instead, and its checkpoint replaces the other one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from .attempt import attempt
from .backends.base import Stats, report_failure
from .client import Client
from .errors import ForbiddenError, JournyError, UnauthorizedError
from .operations import Operation
from .pacing import Pacer
from .retry import RetryPolicy
from .sync_state import RENAMED_STAGES, Checkpoint, CheckpointFile, shown_key

__all__ = [
    "RENAMED_STAGES",
    "SINCE_FIELDS",
    "SINCE_FORMATS",
    "BulkSync",
    "Checkpoint",
    "Item",
    "KeyRefused",
    "ProgressReport",
    "RowError",
    "SyncSummary",
    "default_since_field",
    "missing_since_field",
    "parse_since",
    "since_scope",
    "stage_items",
]

logger = logging.getLogger("journy")

#: The timestamp fields ``--since`` filters on: the first one a model has wins (``--since-field`` names another).
SINCE_FIELDS = ("updated_at", "modified_at", "modified", "last_modified", "date_joined", "created_at", "created")

#: What ``--since`` accepts, for error messages and help texts.
SINCE_FORMATS = "a date (YYYY-MM-DD) or an ISO 8601 datetime"


def parse_since(value: str) -> datetime:
    """The aware datetime of a ``--since`` value: a date (midnight UTC) or an ISO 8601 datetime (UTC when it has no
    offset). Raises ValueError, whose message names the accepted formats, for anything else."""
    text = value.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not know "Z"
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise ValueError(f"{value!r} is not {SINCE_FORMATS}") from None
    parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
    try:
        parsed.astimezone(timezone.utc)  # 0001-01-01T00:00:00+01:00 is a valid ISO datetime before year 1 in UTC
    except OverflowError:
        raise ValueError(f"{value!r} is out of range: its UTC time is before year 1 or after 9999") from None
    return parsed


def default_since_field(names: Iterable[str]) -> str | None:
    """The first of :data:`SINCE_FIELDS` among a model's field ``names``, or None."""
    available = set(names)
    return next((field for field in SINCE_FIELDS if field in available), None)


def missing_since_field(model: str) -> str:
    """The error for a ``--since`` on a model without any of :data:`SINCE_FIELDS`."""
    return f"--since: {model} has none of {', '.join(SINCE_FIELDS)}; name its timestamp field with --since-field."


def since_scope(since: datetime | None, field: str | None) -> str | None:
    """The scope of a checkpoint written by a run filtered with ``--since`` on ``field`` (None: not filtered).

    Two spellings of one instant (``2026-01-01``, ``2026-01-01T01:00:00+01:00``) give the same scope."""
    if since is None:
        return None
    return f"--since {since.astimezone(timezone.utc).isoformat()} on {field}"


@dataclass(frozen=True)
class RowError:
    """What a stage yields for a row whose calls could not be built (its property map, ``SHOULD_SYNC`` or ID raised):
    counted as a failed call, the row logged with its key and the error, and the rest of the stage sent."""

    error: str


#: One item of a stage: a row's key and one of its calls, None (the row is skipped) or a RowError.
Item = tuple[str, "Operation | RowError | None"]


def stage_items(
    rows: Iterable[Any], key_of: Callable[[Any], str], operations_of: Callable[[Any], Iterable[Operation]], *, what: str
) -> Iterator[Item]:
    """The ``(key, operation)`` items of a stage from its ``rows``: every call ``operations_of(row)`` makes (none: the
    row is skipped), or a :class:`RowError` when it raises. ``what`` names the rows in the log (``"auth.User"``)."""
    for row in rows:
        key = key_of(row)
        try:
            operations = list(operations_of(row))
        except Exception as exc:  # one row's data must not stop the sync of every other row
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("journy: %s %s not synced (counted as failed): %s", what, key, error)
            logger.debug("journy: the error syncing %s %s", what, key, exc_info=True)
            yield key, RowError(error)
            continue
        if not operations:
            yield key, None
        for operation in operations:
            yield key, operation


class KeyRefused(JournyError):
    """journy.io refused the API key (401) or its permissions (403): every other call would be refused too, so the
    run stops at the batch's checkpoint instead of sending (and logging) every row."""


@dataclass(frozen=True)
class ProgressReport:
    """Where a running sync is: ``done`` rows (keys) of ``total``, ``failed`` calls (those of the interrupted run
    it resumes included); ``eta_seconds`` comes from the pace the rate limit allows (None without a total)."""

    name: str
    done: int
    total: int | None
    failed: int
    eta_seconds: float | None


@dataclass(frozen=True)
class SyncSummary:
    """The outcome of :meth:`BulkSync.run`: a resumed stage's counts include those of the run it resumes;
    ``finished_earlier`` is a stage that run had finished (nothing was sent again)."""

    name: str
    sent: int
    failed: int
    skipped: int
    seconds: float
    resumed_from: str | None
    dry_run: bool = False
    finished_earlier: bool = False


class BulkSync:
    """Send many operations, paced and resumable. ``progress`` is called after every batch.

    ``state_file`` keeps the checkpoints (:class:`~journy_core.sync_state.CheckpointFile`, which refuses a file
    of another ``app``); None keeps none."""

    def __init__(
        self,
        client: Client,
        *,
        batch_size: int = 100,
        dry_run: bool = False,
        state_file: str | os.PathLike[str] | None = None,
        progress: Callable[[ProgressReport], None] | None = None,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        app: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.state_file = Path(state_file) if state_file is not None else None
        self.checkpoints = CheckpointFile(self.state_file, app=app)
        self.progress = progress
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy(max_attempts=6, cap=30.0)
        self.pacer = Pacer()
        self.stats = Stats()
        self._refused: Exception | None = None  # a 401 or 403: the key itself is refused

    # -- checkpoints (the file is journy_core.sync_state's) -----------------------------------------------------

    def forget(self, *names: str) -> None:
        """Drop the checkpoints of ``names`` (a ``--restart``): their next run starts from the beginning."""
        self.checkpoints.drop(*names)

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The checkpoint a previous, interrupted run of ``name`` left, whatever its scope."""
        return self.checkpoints.read().get(name)

    def resume_point(self, name: str, scope: str | None = None) -> Checkpoint | None:
        """The checkpoint of a previous, interrupted run of ``name`` with the same ``scope`` (see
        :func:`since_scope`) that stopped inside the stage, or None to start from the beginning."""
        point = self.checkpoint(name)
        return point if point is not None and point.scope == scope and not point.done else None

    def resume_after(self, name: str, scope: str | None = None) -> str | None:
        """The last key a previous, interrupted run of ``name`` with the same ``scope`` completed, or None."""
        point = self.resume_point(name, scope)
        return point.after if point is not None else None

    def resume_notice(self, name: str, scope: str | None = None) -> str | None:
        """What to tell the user when ``name`` has a checkpoint of another scope, which this run does not resume
        (it starts from the beginning and its own checkpoint replaces that one); None otherwise."""
        point = self.checkpoint(name)
        if point is None or point.scope == scope:
            return None

        def described(run_scope: str | None) -> str:
            return f"with {run_scope}" if run_scope is not None else "without --since"

        where = "a finished stage" if point.done else f"after key {shown_key(point.after)}"
        return (
            f"{name}: not resuming {where}: that checkpoint is of a run {described(point.scope)}, "
            f"this run is {described(scope)}; starting from the beginning"
        )

    # -- sending ---------------------------------------------------------------------------------------------

    def _send(self, operation: Operation) -> bool:
        """Deliver one operation with pacing and retries; True when it arrived."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            time.sleep(self.pacer.reserve())
            age = time.monotonic() - started
            outcome = attempt(
                self.client.perform, operation, pacer=self.pacer, retry=self.retry, attempts=attempts, age=age
            )
            if outcome.outcome == "sent":
                return True
            if outcome.outcome == "failed":
                if isinstance(outcome.error, (UnauthorizedError, ForbiddenError)):
                    self._refused = outcome.error
                report_failure(operation, outcome.error or RuntimeError("delivery failed"), attempts, self.stats, None)
                return False
            time.sleep(outcome.delay)

    def run(
        self,
        name: str,
        items: Iterable[Item],
        total: int | None = None,
        *,
        scope: str | None = None,
        run: tuple[str, ...] | None = None,
    ) -> SyncSummary:
        """Send every operation of ``items`` (``None`` operations are counted as skipped). ``scope`` describes the
        filter of the rows (:func:`since_scope`): the checkpoints this run writes carry it.

        A resumed stage's counts start from its checkpoint's, so that calls that failed before the interruption
        still count. ``run`` names the stages of a run of several: the stage's checkpoint then stays, marked done,
        until the caller forgets it when the whole run is done; without ``run`` a stage that ends forgets it."""
        started = time.monotonic()
        point = self.resume_point(name, scope)
        counts = [point.sent, point.failed, point.skipped] if point is not None else [0, 0, 0]
        rows, last = 0, point.after if point is not None else ""
        # closing: an interrupted stage closes its stream now, while its database cursor is still open, not
        # when the garbage collector finds it after the connection closed (an "Exception ignored" traceback).
        with (
            closing(_Closing(items)) as stream,
            ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"journy-sync-{name}") as pool,
        ):
            for batch in _batches(stream, self.batch_size):
                self._send_batch(pool, batch, counts)
                rows += _keys_in(batch)
                last = batch[-1][0]
                if not self.dry_run:
                    self.checkpoints.put(name, _checkpoint(last, scope, counts, run=run or ()))
                if self.progress is not None:
                    eta = self._eta(total, rows, started)
                    self.progress(ProgressReport(name, rows, total, counts[1], eta))
        if not self.dry_run:  # a dry run never writes the file, nor forgets what a real run left in it
            if run is None:
                self.forget(name)
            else:
                self.checkpoints.put(name, _checkpoint(last, scope, counts, done=True, run=run))
        sent, failed, skipped = counts
        resumed_from = point.after if point is not None else None
        return SyncSummary(name, sent, failed, skipped, time.monotonic() - started, resumed_from, self.dry_run)

    def _send_batch(self, pool: ThreadPoolExecutor, batch: list[Item], counts: list[int]) -> None:
        """Send a batch's operations, adding to ``counts`` (sent, failed, skipped); raise :class:`KeyRefused` when
        journy.io refused the key (the batch's checkpoint is not written: a run after the fix sends it again)."""
        operations = [op for _, op in batch if isinstance(op, Operation)]
        unbuilt = sum(1 for _, op in batch if isinstance(op, RowError))
        counts[1] += unbuilt
        counts[2] += len(batch) - len(operations) - unbuilt
        if self.dry_run:
            counts[0] += len(operations)
            return
        outcomes = list(pool.map(self._send, operations))
        counts[0] += sum(outcomes)
        counts[1] += len(outcomes) - sum(outcomes)
        if self._refused is not None:
            raise KeyRefused(
                f"journy.io refused the calls ({self._refused}): the sync stopped before recording this batch. "
                "Fix the API key or its permissions, then run the same command again to resume."
            )

    def _eta(self, total: int | None, done: int, started: float) -> float | None:
        if total is None:
            return None
        left = max(0, total - done)
        if self.dry_run:
            return 0.0
        elapsed = max(time.monotonic() - started, 1e-6)
        # The rate limit caps the pace; early on the observed pace is optimistic (the window is empty).
        pace = min(done / elapsed if done else float("inf"), 1.0 / self.pacer.interval)
        return left / pace if pace > 0 else None


class _Closing:
    """An iterable's iterator, with a ``close()`` that closes it when it is a generator."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.iterator = iter(items)

    def __iter__(self) -> Iterator[Item]:
        return self.iterator

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


def _checkpoint(
    after: str, scope: str | None, counts: list[int], *, done: bool = False, run: tuple[str, ...] = ()
) -> Checkpoint:
    sent, failed, skipped = counts
    return Checkpoint(after, scope, sent=sent, failed=failed, skipped=skipped, done=done, run=run)


def _keys_in(batch: list[Item]) -> int:
    """How many rows a batch holds: the calls of one key are next to each other."""
    return sum(1 for index, (key, _) in enumerate(batch) if index == 0 or batch[index - 1][0] != key)


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """``size`` items at a time, each batch extended to the end of its last key.

    The checkpoint records a batch's last key as done, so every item of that key must be in the batch: an account
    with more members than one call takes yields several membership calls under its key, and a batch cut between
    them would let a resumed run skip the rest."""
    iterator = iter(items)
    held: list[Item] = []
    while True:
        batch = held + list(islice(iterator, size - len(held)))
        held = []
        if not batch:
            return
        for item in iterator:
            if item[0] != batch[-1][0]:
                held = [item]  # the first item of the next batch
                break
            batch.append(item)
        yield batch
