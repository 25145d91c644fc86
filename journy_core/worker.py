"""The worker side of the distributed backends (Celery, RQ, Django tasks).

A queued operation carries no secret, so the process that delivers it builds its own client: from the factory
that :func:`configure_worker` registered (the Django app and the Flask extension register one that reads their
settings), or else from the environment variables ``JOURNY_API_KEY`` and ``JOURNY_API_URL``.

:func:`deliver` makes one attempt and says what to do next; each engine turns that into its own retry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .attempt import Attempt
from .attempt import attempt as one_attempt
from .client import Client
from .errors import ConfigurationError
from .operations import Operation
from .pacing import Pacer
from .retry import RetryPolicy
from .secrets import checked_api_key, redact
from .stats import Stats

__all__ = ["Delivery", "close_clients", "configure_worker", "deliver", "is_configured", "stats", "worker_client"]

logger = logging.getLogger("journy")

_factories: list[Callable[[], Client]] = []  # the registered factory, if any (a list: no global statement)
_local = threading.local()
_clients_lock = threading.Lock()
_clients: list[tuple[int, Client]] = []  # (pid, client): every client this module built, to close at shutdown
#: What this worker process delivered: sent, retried, failed.
stats = Stats()
_pacer_lock = threading.Lock()
_pacers: dict[int, Pacer] = {}


def configure_worker(
    client_factory: Callable[[], Client] | None = None, *, api_key: str | None = None, base_url: str | None = None
) -> None:
    """Tell worker processes how to build their client: a factory, or an API key (and base URL).

    A key that cannot be sent (a line break in it, say) raises :class:`~journy_core.InvalidArgumentError` here.
    """
    api_key = redact(api_key)  # first: a traceback through this frame shows the key only redacted
    factory = client_factory
    if factory is None and api_key is not None:
        key = checked_api_key(api_key)

        def factory() -> Client:
            return Client(key, base_url=base_url, pool_size=1)

    _factories[:] = [factory] if factory is not None else []
    _local.__dict__.clear()


def worker_client() -> Client:
    """This thread's client (one keep-alive connection), rebuilt after a fork."""
    pid = os.getpid()
    client: Client | None = getattr(_local, "client", None)
    if client is not None and getattr(_local, "pid", None) == pid:
        return client
    if _factories:
        client = _factories[0]()
    else:
        key = redact(os.environ.get("JOURNY_API_KEY", "").strip())
        if not key:
            raise ConfigurationError(
                "This worker has no journy.io API key: add 'journy_django' to INSTALLED_APPS (Django), call "
                "Journy(app) in the worker's app (Flask), call journy_core.worker.configure_worker(api_key=...), "
                "or set the JOURNY_API_KEY environment variable."
            )
        client = Client(key, pool_size=1)
    _local.client, _local.pid = client, pid
    with _clients_lock:
        _clients.append((pid, client))
    return client


def is_configured() -> bool:
    """Whether this process knows how to build a worker client (a registered factory or ``JOURNY_API_KEY``)."""
    return bool(_factories) or bool(os.environ.get("JOURNY_API_KEY", "").strip())


def close_clients() -> None:
    """Close the connections of every client this process's workers built (at worker shutdown)."""
    pid = os.getpid()
    with _clients_lock:
        mine = [client for owner, client in _clients if owner == pid]
        _clients.clear()
    for client in mine:
        try:
            client.close()
        except Exception:
            logger.debug("journy: closing a worker client failed", exc_info=True)
    _local.__dict__.clear()


def pacer() -> Pacer:
    """The pacer of this process: every worker thread shares it."""
    pid = os.getpid()
    with _pacer_lock:
        if pid not in _pacers:
            _pacers.clear()
            _pacers[pid] = Pacer()
        return _pacers[pid]


#: The outcome of one attempt: ``sent``, ``retry`` (after ``delay`` seconds) or ``failed``.
Delivery = Attempt


def deliver(
    operation: Operation | Mapping[str, Any],
    *,
    attempt: int = 1,
    enqueued_at: float | None = None,
    retry: RetryPolicy | None = None,
) -> Delivery:
    """Make attempt number ``attempt`` (1 for the first) at delivering ``operation``; never raises.

    ``enqueued_at`` is a ``time.time()`` timestamp, so that the age limit holds across processes.
    """
    policy = retry or RetryPolicy()
    age = 0.0 if enqueued_at is None else max(0.0, time.time() - enqueued_at)
    try:
        op = operation if isinstance(operation, Operation) else Operation.from_dict(operation)
        client = worker_client()
        time.sleep(pacer().reserve())
    except Exception as error:  # no client (configuration) or a malformed operation: retrying cannot help
        return Delivery("failed", 0.0, error)
    return one_attempt(client.perform, op, pacer=pacer(), retry=policy, attempts=attempt, age=age, stats=stats)
