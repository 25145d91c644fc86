"""``Journy``: the queued entry point for code outside Django and Flask.

>>> journy = Journy("my-api-key")                                         # doctest: +SKIP
>>> journy.track("created_invoice", user_id="42", account_id="7")         # doctest: +SKIP
>>> journy.flush(timeout=5)                                               # doctest: +SKIP

It has the write methods of :class:`~journy_core.Client`, with the same argument checks (bad arguments raise
:class:`~journy_core.InvalidArgumentError` at the call site), but returns as soon as the operation is queued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timezone, tzinfo
from typing import Any

from .backends import load_backend
from .backends.base import Backend, FailureCallback
from .client import DEFAULT_TIMEOUT, Client, OperationMethods
from .errors import InvalidArgumentError
from .operations import Operation
from .urls import resolve_base_url

__all__ = ["Journy"]

logger = logging.getLogger("journy")

#: Backends that deliver from this process, so need the API key here.
_KEYED_BACKENDS = frozenset({"thread", "sync"})


class Journy(OperationMethods[None]):
    """Queue API calls for delivery by the backend in ``queue`` (``thread`` by default).

    :param api_key: the journy.io API key (never shown in a repr, a log line or an error). Optional for backends
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
        backend_name = (queue or {}).get("BACKEND", "thread")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise InvalidArgumentError("api_key", "must be a non-empty string (the key from journy.io's settings)")
        if api_key is None and backend_name in _KEYED_BACKENDS:
            raise InvalidArgumentError(
                "api_key",
                f"is required for the {backend_name!r} backend: create a key in journy.io's settings (Connections), "
                "or start the local emulator (python -m journy_core.emulator) for development",
            )
        self.base_url = resolve_base_url(base_url)
        self.naive_timezone = naive_timezone
        key, url = api_key, self.base_url

        def client_factory() -> Client:
            assert key is not None
            return Client(key, base_url=url, timeout=timeout, naive_timezone=naive_timezone, pool_size=1)

        self.backend: Backend = load_backend(
            queue, client_factory=client_factory if key is not None else None, on_failure=on_failure
        )

    def __repr__(self) -> str:
        return f"<journy_core.Journy backend={self.backend.name!r} base_url={self.base_url!r}>"

    def _submit(self, operation: Operation) -> None:
        self.backend.enqueue(operation)

    def enqueue(self, operation: Operation) -> None:
        """Queue an already-built :class:`~journy_core.Operation` (what the adapters do)."""
        self.backend.enqueue(operation)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what is queued is delivered (or given up on), at most ``timeout`` seconds; True when done."""
        return self.backend.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most ``timeout`` seconds, then stop; later operations are dropped."""
        self.backend.close(timeout)

    def stats(self) -> dict[str, int]:
        """Counters: queued, sent, retried, coalesced, dropped, failed."""
        return self.backend.stats.snapshot()
