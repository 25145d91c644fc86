"""The ``outbox`` queue backend: operations become rows of the app's own database, a relay delivers them.

The adapters write the rows of model changes in the app's transaction themselves and call :meth:`OutboxBackend.wake`
after the commit; :meth:`~OutboxBackend.enqueue` is for the rest (``track()``, links, changes outside model hooks),
which the store writes in the current transaction if its database layer has one open, or in its own.

With ``RELAY_IN_PROCESS`` (the default), each process runs a relay in a daemon thread, started on first need and
again in a forked child (gunicorn ``--preload``, Celery prefork), woken after each commit and polling every
``POLL_SECONDS`` otherwise. Without it, only external relays (``manage.py journy_relay``, ``flask journy relay``)
deliver. Exit has nothing to flush: whatever is pending stays in the table for the next relay.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..backends.base import Backend, FailureCallback
from ..client import Client
from ..errors import ConfigurationError
from ..importing import import_string
from ..lifecycle import on_fork_and_exit
from ..operations import Operation
from ..pacing import Pacer
from ..retry import RetryPolicy
from .relay import DEFAULT_RETRY, Relay
from .store import Backlog, OutboxStore

__all__ = ["OutboxBackend", "resolve_store"]

logger = logging.getLogger("journy")

_STORE_SETTING = "QUEUE['OPTIONS']['STORE']"

MISSING_STORE = (
    "The 'outbox' queue backend needs OPTIONS['STORE'], the store of the table its rows go to. With Django "
    "('journy_django' in INSTALLED_APPS) and with the Flask extension over Flask-SQLAlchemy it is filled in for you; "
    "elsewhere pass an OutboxStore: an instance, a zero-argument callable returning one, or its dotted path, such "
    "as journy_core.outbox.sqlalchemy.SQLAlchemyStore(engine) (or journy_core.outbox.memory.MemoryStore() in tests)."
)


def resolve_store(value: Any, setting: str = _STORE_SETTING) -> OutboxStore:
    """The store an ``OPTIONS['STORE']`` value names: an instance, a zero-argument callable (a class, say) returning
    one, or the dotted path of either. Raises :class:`ConfigurationError` naming ``setting`` otherwise."""
    found = import_string(value, setting) if isinstance(value, str) else value
    # A class has every method of the protocol as an attribute, so the isinstance check alone would accept it.
    if isinstance(found, type) or (callable(found) and not isinstance(found, OutboxStore)):
        try:
            found = found()
        except TypeError as exc:
            raise ConfigurationError(f"{setting}={value!r} could not be called without arguments ({exc}).") from exc
    if not isinstance(found, OutboxStore):
        raise ConfigurationError(
            f"{setting}={value!r} is not an outbox store (journy_core.outbox.store.OutboxStore), nor a callable "
            "or dotted path giving one."
        )
    return found


class OutboxBackend(Backend):
    """Durable delivery through a table of the app's database; see the module docstring and ``docs/outbox.md``.

    OPTIONS: ``STORE`` (required unless an adapter fills it in), ``RELAY_IN_PROCESS`` (True), ``POLL_SECONDS``
    (2), ``BATCH_SIZE`` (100 rows a claim), ``LEASE_SECONDS`` (60: how long a claim holds its rows),
    ``CONCURRENCY`` (4 calls in flight), ``DEAD_RETENTION_DAYS`` (14; None keeps dead rows until purged by hand),
    ``KEEP_DELIVERED_DAYS`` (0: delivered rows are deleted at once), ``RETRY`` (keys of
    :class:`~journy_core.retry.RetryPolicy`; the unset ones default to :data:`~journy_core.outbox.relay.DEFAULT_RETRY`).
    """

    name = "outbox"
    option_names = frozenset(
        {
            "STORE",
            "RELAY_IN_PROCESS",
            "POLL_SECONDS",
            "GATHER_SECONDS",
            "BATCH_SIZE",
            "LEASE_SECONDS",
            "CONCURRENCY",
            "DEAD_RETENTION_DAYS",
            "KEEP_DELIVERED_DAYS",
            "RETRY",
        }
    )

    def __init__(
        self,
        *,
        client_factory: Callable[[], Client] | None,
        options: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        super().__init__(client_factory=client_factory, options=options, on_failure=on_failure)
        if self.options.get("STORE") is None:
            raise ConfigurationError(MISSING_STORE)
        self.relay_in_process = self.options.get("RELAY_IN_PROCESS", True)
        if not isinstance(self.relay_in_process, bool):
            raise ConfigurationError(
                f"Queue option 'RELAY_IN_PROCESS' must be True or False, got {self.relay_in_process!r}."
            )
        self.poll_seconds = self.number_option("POLL_SECONDS", 2.0, minimum=0.01)
        self.gather_seconds = self.number_option("GATHER_SECONDS", 0.5)
        self.batch_size = self.number_option("BATCH_SIZE", 100, minimum=1, integer=True)
        self.lease_seconds = self.number_option("LEASE_SECONDS", 60.0, minimum=1)
        self.concurrency = self.number_option("CONCURRENCY", 4, minimum=1, integer=True)
        self.keep_delivered_days = self.number_option("KEEP_DELIVERED_DAYS", 0)
        keeps_dead_rows = self.options.get("DEAD_RETENTION_DAYS", 14) is None
        self.dead_retention_days = None if keeps_dead_rows else self.number_option("DEAD_RETENTION_DAYS", 14)
        self.retry = _retry_policy(self.options.get("RETRY"))
        self._store: OutboxStore | None = None
        self._store_lock = threading.Lock()
        self._closed = False
        self._setup_process_state()
        on_fork_and_exit(self, after_fork="_setup_process_state", at_exit="_stop_relay")

    def _setup_process_state(self) -> None:
        # In a forked child the parent's relay thread does not exist: the child starts its own on first need.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._relay: Relay | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._warned_no_key = False

    @property
    def store(self) -> OutboxStore:
        """The store (resolved from ``OPTIONS['STORE']`` on first use, so a dotted path may name a module that
        imports the app's models)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    store = resolve_store(self.options["STORE"])
                    if self.keep_delivered_days:
                        if not hasattr(store, "keep_delivered"):
                            raise ConfigurationError(
                                f"KEEP_DELIVERED_DAYS={self.keep_delivered_days!r}: the outbox store {store!r} "
                                "cannot keep delivered rows (it has no keep_delivered attribute)."
                            )
                        store.keep_delivered = True  # every shipped store has it
                    self._store = store
        return self._store

    # -- writing ---------------------------------------------------------------------------------------------

    def enqueue(self, operation: Operation) -> None:
        """Write a row for ``operation`` (in the current transaction when the store's database layer has one
        open), then wake the in-process relay. Never raises: a failed write is logged and counted ``dropped``."""
        self._add([operation])

    def enqueue_many(self, operations: Iterable[Operation]) -> None:
        """Write the rows of operations that belong together, in order, in one go."""
        pending = list(operations)
        if pending:
            self._add(pending)

    def _add(self, operations: list[Operation]) -> None:
        try:
            self.store.add(operations)
        except Exception:  # never into the app
            self.stats.add("dropped", len(operations))
            logger.exception(
                "journy: could not write %d operation(s) to the outbox (first: %s)",
                len(operations),
                operations[0].describe(),
            )
            return
        self.stats.add("queued", len(operations))
        # Inside a transaction the relay finds nothing yet and sleeps again: the adapters wake it after the commit.
        self.wake()

    # -- the in-process relay --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Have the in-process relay look for rows now (starting it on first need); a no-op without
        ``RELAY_IN_PROCESS``. Called by the adapters right after each commit that wrote rows. Never raises."""
        if not self.relay_in_process:
            return
        try:
            if self._pid != os.getpid():
                self._setup_process_state()
            relay = self._relay or self._start_relay()
            if relay is not None:
                relay.wake()
        except Exception:
            logger.exception("journy: could not wake the outbox relay")

    def _start_relay(self) -> Relay | None:
        with self._lock:
            if self._relay is not None or self._closed:
                return self._relay
            if self.client_factory is None:
                if not self._warned_no_key:
                    self._warned_no_key = True
                    logger.warning(
                        "journy: the outbox relay cannot run in this process without an API key; rows wait for an "
                        "external relay (manage.py journy_relay, flask journy relay)"
                    )
                return None
            relay = self.new_relay(self.store, self.client_factory, gather_seconds=self.gather_seconds)
            thread = threading.Thread(target=_run, args=(relay, self._stop), name="journy-outbox-relay", daemon=True)
            self._relay, self._thread = relay, thread
            thread.start()
            return relay

    def new_relay(
        self, store: OutboxStore, client_factory: Callable[[], Client], *, gather_seconds: float = 0.0
    ) -> Relay:
        """A relay on ``store`` with this backend's options (batch, lease, concurrency, retry, retention): the
        in-process one, and those of ``manage.py journy_relay`` / ``flask journy relay`` (which need no gathering:
        nothing wakes them)."""
        return Relay(
            store,
            client_factory,
            pacer=Pacer(),
            retry=self.retry,
            on_failure=self.on_failure,
            stats=self.stats,
            batch_size=self.batch_size,
            lease_seconds=self.lease_seconds,
            concurrency=self.concurrency,
            poll_seconds=self.poll_seconds,
            gather_seconds=gather_seconds,
            dead_retention_days=self.dead_retention_days,
            keep_delivered_days=self.keep_delivered_days,
        )

    @property
    def relay(self) -> Relay | None:
        """This process's relay, once started."""
        return self._relay if self._pid == os.getpid() else None

    def _stop_relay(self) -> None:
        if self._pid != os.getpid():
            return
        self._stop.set()
        if self._relay is not None:
            self._relay.wake()

    # -- the backend interface -------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Returns True at once: nothing waits in memory. Rows committed are in the table, and the relays deliver
        them whether this process lives or not."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop the in-process relay: the call in flight ends (waited for at most ``timeout`` seconds, not at all
        when None), the rest of its batch is given back for the next relay. Writing rows still works."""
        self._closed = True
        self._stop_relay()
        thread = self._thread
        if timeout is not None and thread is not None and self._pid == os.getpid():
            thread.join(timeout)

    def backlog(self) -> Backlog:
        """The store's pending and dead counts and the oldest pending row's age."""
        return self.store.backlog(now=datetime.now(timezone.utc))


def _retry_policy(value: Any) -> RetryPolicy:
    """``RETRY`` as for every backend, but unset keys default to the outbox's patient policy."""
    if isinstance(value, Mapping):
        defaults = {
            "max_attempts": DEFAULT_RETRY.max_attempts,
            "base": DEFAULT_RETRY.base,
            "cap": DEFAULT_RETRY.cap,
            "max_age": DEFAULT_RETRY.max_age,
        }
        return RetryPolicy.coerce({**defaults, **value})
    return DEFAULT_RETRY if value is None else RetryPolicy.coerce(value)


def _run(relay: Relay, stop: threading.Event) -> None:
    try:
        relay.run(stop)
    except Exception:
        logger.exception("journy: the outbox relay thread stopped unexpectedly")
    finally:
        relay.close()
