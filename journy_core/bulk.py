"""The bulk (daily) sync's sending: every user and account, sent under the rate limit, resumable.

The engine of ``manage.py journy_sync`` and ``flask journy sync`` (whose stages, options, state file and reporting
are :mod:`journy_core.sync_plan`). It takes ``(key, operation)`` pairs ordered by key (the primary key, as a string)
and sends them: a few calls in flight, paced by the :class:`~journy_core.pacing.Pacer`, transient failures retried.
After each batch (which ends where a key ends) it writes the last key done to ``state_file``, so an interrupted sync
run again starts after it (the adapter filters its query with :meth:`BulkSync.resume_after`); a sync that completes
forgets its checkpoint.

``--since`` (only the rows changed since a date) is shared too: :func:`parse_since` reads the date,
:data:`SINCE_FIELDS` are the timestamp fields looked for, and :func:`since_scope` describes the filter. A checkpoint
remembers the scope of the run that wrote it and is resumed only by a run with the same scope: the keys done by a
run filtered on another date (or not filtered) say nothing about the rows this run selects, so resuming after them
could skip rows silently. Such a run starts from the beginning instead, and its checkpoint replaces the other one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import islice
from pathlib import Path

from .attempt import attempt
from .backends.base import Stats, report_failure
from .client import Client
from .operations import Operation
from .pacing import Pacer
from .retry import RetryPolicy

__all__ = [
    "RENAMED_STAGES",
    "SINCE_FIELDS",
    "SINCE_FORMATS",
    "BulkSync",
    "Checkpoint",
    "ProgressReport",
    "SyncSummary",
    "default_since_field",
    "missing_since_field",
    "parse_since",
    "since_scope",
]

logger = logging.getLogger("journy")

#: The timestamp fields ``--since`` filters on: the first one a model has wins (``--since-field`` names another).
SINCE_FIELDS = ("updated_at", "modified_at", "modified", "last_modified", "date_joined", "created_at", "created")

#: Stage names an earlier version wrote in checkpoint files, and their name now (``flask journy sync`` called the
#: memberships stage ``members``): such a checkpoint is resumed, and rewritten under the current name.
RENAMED_STAGES = {"members": "memberships"}

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
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


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
class Checkpoint:
    """Where an interrupted run of one kind stopped: the last key done, and the scope of that run's filter."""

    after: str
    scope: str | None = None


@dataclass(frozen=True)
class ProgressReport:
    """Where a running sync is: ``eta_seconds`` comes from the pace the rate limit allows (None without a total)."""

    name: str
    done: int
    total: int | None
    failed: int
    eta_seconds: float | None


@dataclass(frozen=True)
class SyncSummary:
    """The outcome of :meth:`BulkSync.run`."""

    name: str
    sent: int
    failed: int
    skipped: int
    seconds: float
    resumed_from: str | None
    dry_run: bool = False


class BulkSync:
    """Send many operations, paced and resumable. ``progress`` is called after every batch."""

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
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.state_file = Path(state_file) if state_file is not None else None
        self.progress = progress
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy(max_attempts=6, cap=30.0)
        self.pacer = Pacer()
        self.stats = Stats()

    # -- checkpoints -----------------------------------------------------------------------------------------

    # The file maps each kind to its checkpoint: the key alone for an unfiltered run (``{"users": "8"}``), or
    # ``{"after": key, "scope": scope}`` for a run with ``--since``.

    def _read_state(self) -> dict[str, Checkpoint]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            logger.warning("journy: ignoring an unreadable sync checkpoint file %s", self.state_file)
            return {}
        if not isinstance(data, dict):
            return {}
        state: dict[str, Checkpoint] = {}
        for written, value in data.items():
            name = RENAMED_STAGES.get(str(written), str(written))
            if name != written and name in data:  # the current name, written since, wins
                continue
            if isinstance(value, dict):
                if value.get("after") is not None:
                    scope = value.get("scope")
                    state[name] = Checkpoint(str(value["after"]), None if scope is None else str(scope))
            elif value is not None:
                state[name] = Checkpoint(str(value))
        return state

    def _write_state(self, name: str, key: str | None, scope: str | None = None) -> None:
        if self.state_file is None or self.dry_run:
            return
        state = self._read_state()
        if key is None:
            state.pop(name, None)
            if not state:  # nothing left to resume: no file
                self.state_file.unlink(missing_ok=True)
                return
        else:
            state[name] = Checkpoint(key, scope)  # one checkpoint per kind: it replaces one of another scope
        data = {
            kind: point.after if point.scope is None else {"after": point.after, "scope": point.scope}
            for kind, point in state.items()
        }
        temporary = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
        temporary.replace(self.state_file)  # atomic: a crash leaves the old checkpoint or the new one

    def forget(self, *names: str) -> None:
        """Drop the checkpoints of ``names`` (a ``--restart``): their next run starts from the beginning."""
        for name in names:
            self._write_state(name, None)

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The checkpoint a previous, interrupted run of ``name`` left, whatever its scope."""
        return self._read_state().get(name)

    def resume_after(self, name: str, scope: str | None = None) -> str | None:
        """The last key a previous, interrupted run of ``name`` with the same ``scope`` (see :func:`since_scope`)
        completed, or None to start from the beginning."""
        point = self.checkpoint(name)
        return point.after if point is not None and point.scope == scope else None

    def resume_notice(self, name: str, scope: str | None = None) -> str | None:
        """What to tell the user when ``name`` has a checkpoint of another scope, which this run does not resume
        (it starts from the beginning and its own checkpoint replaces that one); None otherwise."""
        point = self.checkpoint(name)
        if point is None or point.scope == scope:
            return None

        def described(run_scope: str | None) -> str:
            return f"with {run_scope}" if run_scope is not None else "without --since"

        return (
            f"{name}: not resuming after key {point.after}: that checkpoint is of a run {described(point.scope)}, "
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
                report_failure(operation, outcome.error or RuntimeError("delivery failed"), attempts, self.stats, None)
                return False
            time.sleep(outcome.delay)

    def run(
        self,
        name: str,
        items: Iterable[tuple[str, Operation | None]],
        total: int | None = None,
        *,
        scope: str | None = None,
    ) -> SyncSummary:
        """Send every operation of ``items`` (``None`` operations are counted as skipped). ``scope`` describes the
        filter of the rows (:func:`since_scope`): the checkpoints this run writes carry it."""
        started = time.monotonic()
        resumed_from = self.resume_after(name, scope)
        sent = failed = skipped = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"journy-sync-{name}") as pool:
            for batch in _batches(items, self.batch_size):
                operations = [op for _, op in batch if op is not None]
                skipped += len(batch) - len(operations)
                if self.dry_run:
                    sent += len(operations)
                else:
                    outcomes = list(pool.map(self._send, operations))
                    sent += sum(outcomes)
                    failed += len(outcomes) - sum(outcomes)
                    self._write_state(name, batch[-1][0], scope)
                if self.progress is not None:
                    done = sent + failed + skipped
                    self.progress(ProgressReport(name, done, total, failed, self._eta(total, done, started)))
        self._write_state(name, None)
        return SyncSummary(name, sent, failed, skipped, time.monotonic() - started, resumed_from, self.dry_run)

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


def _batches(items: Iterable[tuple[str, Operation | None]], size: int) -> Iterator[list[tuple[str, Operation | None]]]:
    """``size`` items at a time, each batch extended to the end of its last key.

    The checkpoint records a batch's last key as done, so every item of that key must be in the batch: an account
    with more members than one call takes yields several membership calls under its key, and a batch cut between
    them would let a resumed run skip the rest."""
    iterator = iter(items)
    held: list[tuple[str, Operation | None]] = []
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
