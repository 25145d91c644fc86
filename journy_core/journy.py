"""``Journy``: the queued entry point for code outside Django and Flask.

>>> journy = Journy("my-api-key")                                         # doctest: +SKIP
>>> journy.track("created_invoice", user_id="42", account_id="7")         # doctest: +SKIP
>>> journy.flush(timeout=5)                                               # doctest: +SKIP

It has the write methods of :class:`~journy_core.Client`, with the same argument checks (bad arguments raise
:class:`~journy_core.InvalidArgumentError` at the call site), but returns as soon as the operation is queued.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timezone, tzinfo
from typing import Any

from . import batching
from .backends import checked_queue
from .backends.base import Backend, FailureCallback
from .client import DEFAULT_TIMEOUT, Client, OperationMethods
from .errors import InvalidArgumentError
from .operations import Operation
from .secrets import checked_api_key, redact
from .urls import resolve_base_url

__all__ = ["Journy"]

logger = logging.getLogger("journy")

#: Backends that deliver from this process, so need the API key here.
_KEYED_BACKENDS = frozenset({"thread", "sync"})


class Journy(OperationMethods[None]):
    """Queue API calls for delivery by the backend in ``queue`` (``thread`` by default).

    :param api_key: the journy.io API key (never shown in a repr, a log line, an error or a traceback's local
        variables; one that cannot be sent, with a line break in it say, raises here). Optional for backends
        that do not deliver from this process (``memory``, ``disabled``, and the distributed ones, whose workers
        build their client from their own settings).
    :param base_url: as for :class:`~journy_core.Client`; ``JOURNY_API_URL`` overrides it.
    :param queue: ``{"BACKEND": "thread", "OPTIONS": {...}}``; see :mod:`journy_core.backends`.
    :param on_failure: ``on_failure(operation, error)`` for each operation given up on (guarded: an exception in
        it is logged, not raised).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        queue: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
        naive_timezone: tzinfo = timezone.utc,
    ) -> None:
        api_key = redact(api_key)  # first: a traceback through this frame shows the key only redacted
        backend_class, options = checked_queue(queue)  # a bad QUEUE is named before the API key is asked for
        backend_name = (queue or {}).get("BACKEND", "thread")
        key = None if api_key is None else checked_api_key(api_key)
        if key is None and backend_name in _KEYED_BACKENDS:
            raise InvalidArgumentError(
                "api_key",
                f"is required for the {backend_name!r} backend: create a key in journy.io's settings (Connections), "
                "or start the local emulator (python -m journy_core.emulator) for development",
            )
        self.base_url = resolve_base_url(base_url)
        self.naive_timezone = naive_timezone
        url = self.base_url

        def client_factory() -> Client:
            assert key is not None
            return Client(key, base_url=url, timeout=timeout, naive_timezone=naive_timezone, pool_size=1)

        self.backend: Backend = backend_class(
            client_factory=client_factory if key is not None else None, options=options, on_failure=on_failure
        )
        #: Whether operations made together (a request, a transaction) travel as one message: only with a backend
        #: that crosses a process boundary, where separate messages may be delivered out of order.
        self.batches: bool = self.backend.sends_batches

    def __repr__(self) -> str:
        # Never the key; and no error for a half-built instance (the ``self`` of a failed __init__ in a traceback).
        backend = getattr(getattr(self, "backend", None), "name", None)
        return f"<journy_core.Journy backend={backend!r} base_url={getattr(self, 'base_url', None)!r}>"

    def _submit(self, operation: Operation) -> None:
        if self.batches and batching.collect(self.backend, (operation,)):
            return
        self.backend.enqueue(operation)

    def enqueue(self, operation: Operation) -> None:
        """Queue an already-built :class:`~journy_core.Operation` (what the adapters do)."""
        if self.batches and batching.collect(self.backend, (operation,)):
            return
        self.backend.enqueue(operation)

    def enqueue_many(self, operations: Iterable[Operation]) -> None:
        """Queue operations that belong together (one transaction's), in order: one message with the distributed
        backends, so that concurrent workers cannot reorder them; inside :func:`journy_core.batching.batch` (a
        web request) they join the operations made there."""
        pending = list(operations)
        if not pending:
            return
        if self.batches and batching.collect(self.backend, pending):
            return
        self.backend.enqueue_many(pending)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what is queued is delivered (or given up on), at most ``timeout`` seconds; True when done."""
        return self.backend.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most ``timeout`` seconds, then stop; later operations are dropped."""
        self.backend.close(timeout)

    def stats(self) -> dict[str, int]:
        """Counters: queued, sent, retried, coalesced, dropped, failed."""
        return self.backend.stats.snapshot()
