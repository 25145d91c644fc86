"""The bulk (daily) sync: every user and account, sent under the rate limit, resumable.

The shared core of ``manage.py journy_sync`` and ``flask journy sync``. The adapter streams ``(key, operation)``
pairs ordered by key (the primary key, as a string) and this module sends them: a few calls in flight, paced by the
:class:`~journy_core.pacing.Pacer`, transient failures retried. After each batch it writes the last key done to
``state_file``, so an interrupted sync run again starts after it (the adapter filters its query with
:meth:`BulkSync.resume_after`); a sync that completes forgets its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .backends.base import Stats, report_failure
from .client import Client
from .errors import RateLimitedError
from .operations import Operation
from .pacing import Pacer
from .retry import RetryPolicy, is_transient

__all__ = ["BulkSync", "ProgressReport", "SyncSummary"]

logger = logging.getLogger("journy")


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

    def _read_state(self) -> dict[str, str]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            logger.warning("journy: ignoring an unreadable sync checkpoint file %s", self.state_file)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write_state(self, name: str, key: str | None) -> None:
        if self.state_file is None or self.dry_run:
            return
        state = self._read_state()
        if key is None:
            state.pop(name, None)
            if not state:  # nothing left to resume: no file
                self.state_file.unlink(missing_ok=True)
                return
        else:
            state[name] = key
        temporary = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
        temporary.replace(self.state_file)  # atomic: a crash leaves the old checkpoint or the new one

    def forget(self, *names: str) -> None:
        """Drop the checkpoints of ``names`` (a ``--restart``): their next run starts from the beginning."""
        for name in names:
            self._write_state(name, None)

    def resume_after(self, name: str) -> str | None:
        """The last key a previous, interrupted run of ``name`` completed, or None to start from the beginning."""
        return self._read_state().get(name)

    # -- sending ---------------------------------------------------------------------------------------------

    def _send(self, operation: Operation) -> bool:
        """Deliver one operation with pacing and retries; True when it arrived."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            time.sleep(self.pacer.reserve())
            try:
                result = self.client.perform(operation)
            except Exception as error:
                pause = self.pacer.rate_limited(error.rate_limit) if isinstance(error, RateLimitedError) else 0.0
                if not is_transient(error) or self.retry.gives_up(attempts, time.monotonic() - started):
                    report_failure(operation, error, attempts, self.stats, None)
                    return False
                time.sleep(max(pause, self.retry.backoff(attempts)))
            else:
                self.pacer.observe(result.rate_limit, result.calls_remaining)
                return True

    def run(self, name: str, items: Iterable[tuple[str, Operation | None]], total: int | None = None) -> SyncSummary:
        """Send every operation of ``items`` (``None`` operations are counted as skipped)."""
        started = time.monotonic()
        resumed_from = self.resume_after(name)
        sent = failed = skipped = 0
        iterator: Iterator[tuple[str, Operation | None]] = iter(items)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"journy-sync-{name}") as pool:
            while True:
                batch = list(islice(iterator, self.batch_size))
                if not batch:
                    break
                operations = [op for _, op in batch if op is not None]
                skipped += len(batch) - len(operations)
                if self.dry_run:
                    sent += len(operations)
                else:
                    outcomes = list(pool.map(self._send, operations))
                    sent += sum(outcomes)
                    failed += len(outcomes) - sum(outcomes)
                    self._write_state(name, batch[-1][0])
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
