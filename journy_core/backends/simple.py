"""The small backends: ``sync`` (deliver in the caller's thread), ``memory`` (record, for tests) and ``disabled``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..attempt import attempt, log_retry
from ..client import Client
from ..operations import Operation
from ..pacing import Pacer
from ..retry import RetryPolicy
from .base import Backend, report_failure

__all__ = ["DisabledBackend", "MemoryBackend", "SyncBackend"]

logger = logging.getLogger("journy")


class SyncBackend(Backend):
    """Deliver at once, in the calling thread, with the same retries and pacing as ``thread``.

    For scripts, management commands and debugging: the call blocks until journy.io answers (and through the
    retries). Failures are logged and counted, never raised. OPTIONS: ``RETRY``.
    """

    name = "sync"
    option_names = frozenset({"RETRY"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry = RetryPolicy.coerce(self.options.get("RETRY"))
        self.pacer = Pacer()
        self._local = threading.local()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.make_client()
        return client

    def enqueue(self, operation: Operation) -> None:
        self.stats.add("queued")
        started = time.monotonic()
        attempts = 0
        try:
            client = self._client()
            while True:
                attempts += 1
                time.sleep(self.pacer.reserve())
                age = time.monotonic() - started
                outcome = attempt(
                    client.perform,
                    operation,
                    pacer=self.pacer,
                    retry=self.retry,
                    attempts=attempts,
                    age=age,
                    stats=self.stats,
                )
                if outcome.outcome != "retry":
                    break
                log_retry(operation, attempts, outcome)
                time.sleep(outcome.delay)
            if outcome.outcome == "failed":
                report_failure(
                    operation, outcome.error or RuntimeError("delivery failed"), attempts, self.stats, self.on_failure
                )
        except Exception as error:  # configuration or a bug: still never into the app
            report_failure(operation, error, attempts, self.stats, self.on_failure)


class MemoryBackend(Backend):
    """Record operations instead of sending them: for the app's own tests.

    ``backend.operations`` lists what would have been sent, in order; ``backend.clear()`` empties it.
    """

    name = "memory"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.operations: list[Operation] = []

    def enqueue(self, operation: Operation) -> None:
        with self._lock:
            self.operations.append(operation)
        self.stats.add("queued")
        self.stats.add("sent")

    def clear(self) -> None:
        with self._lock:
            self.operations.clear()


class DisabledBackend(Backend):
    """Send nothing (tracking switched off): operations are validated, then dropped silently."""

    name = "disabled"

    def enqueue(self, operation: Operation) -> None:
        pass
