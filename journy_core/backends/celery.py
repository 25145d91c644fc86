"""The ``celery`` backend: each operation becomes one Celery task message, delivered by your Celery workers.

Selected with ``{"BACKEND": "celery", "OPTIONS": {...}}``. This module is imported only then; it needs
``pip install 'journy[celery]'``.

**In the web process** (the producer) :meth:`CeleryBackend.enqueue` publishes a ``journy.deliver`` task whose
arguments are plain JSON (the operation, when it was queued, the retry policy and the ``ON_FAILURE`` path), with
Celery's ``json`` serializer. No API key is needed here: the worker builds its own client. Publishing has a short
deadline (``PUBLISH_TIMEOUT``, one quick reconnect): when the broker is down the operation is dropped, counted in
``stats()["dropped"]``, handed to the ``on_failure`` callback and logged (at most once a minute), and the caller
never sees an exception. After a publish that timed out, operations are dropped at once for ``BROKER_DOWN_PAUSE``
seconds, so that an outage does not make every request wait.

**In the worker** the task makes one attempt with :func:`journy_core.worker.deliver`, which paces calls under the
key's rate limit. A transient failure (connection error, timeout, 408, 429, 5xx) ends with
``self.retry(countdown=...)``: the countdown is full-jitter exponential backoff with a cap, or, after a 429, at
least the pause the rate-limit figures call for. Anything else (400, 401, 403, 404, 422), and a transient failure
past ``RETRY["max_attempts"]`` or ``RETRY["max_age"]``, is reported failed: logged with the server's field errors,
counted in :data:`journy_core.worker.stats`, and handed to ``ON_FAILURE``.

**How the worker finds the task.** The tasks are ``shared_task`` s registered when this module is imported, so
the worker must import it. Add it to the Celery app's ``include`` (or ``imports``)::

    app = Celery("proj", include=["journy_core.backends.celery"])
    # or, Django with namespace="CELERY": CELERY_IMPORTS = ["journy_core.backends.celery"]

This is ordinary Celery configuration, visible in the app and in ``celery inspect registered``, and it works the
same for Django, Flask and plain Python; a worker that misses it logs ``Received unregistered task of type
'journy.deliver'`` and discards the message, so check that line in ``celery -A proj inspect registered``.

**acks_late.** By default (``ACKS_LATE=False``) the task follows the app's ``task_acks_late`` (Celery's default
acknowledges a message when a worker starts it: a worker killed mid-delivery loses that operation, never sends it
twice). ``ACKS_LATE=True`` sends every operation to ``journy.deliver_acks_late`` (``acks_late=True``,
``reject_on_worker_lost=True``): a worker killed mid-delivery leaves the message to be delivered again, which may
apply it twice. ``ACKS_LATE="idempotent"`` does that only for operations that are safe to apply twice (upserts,
deletes, memberships, links) and keeps events (``track``), which would be counted twice, on ``journy.deliver``.
With Redis as the broker, an unacknowledged message comes back after the transport's ``visibility_timeout``
(one hour by default) or when the worker restarts.

**Shutdown.** The worker holds nothing journy-specific in memory: every operation is a broker message until its
delivery ends. A warm shutdown (``SIGTERM``) lets the running deliveries finish and returns the retries still
waiting for their countdown to the broker; each worker process closes its HTTP connections on
``worker_process_shutdown`` and logs what it delivered.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .. import worker as journy_worker
from ..client import Client
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from ._distributed import (
    DropReporter,
    attempt_delivery,
    callable_path,
    describe_message,
    import_object,
)
from .base import Backend, FailureCallback

try:
    import celery
    import celery.signals
except ImportError as exc:  # pragma: no cover - the missing-engine test imports this module without Celery
    raise ConfigurationError(
        f"The 'celery' queue backend needs Celery, which cannot be imported ({exc}): pip install 'journy[celery]'."
    ) from exc

__all__ = [
    "ACKS_LATE_TASK_NAME",
    "TASK_NAME",
    "CeleryBackend",
    "deliver_acks_late_task",
    "deliver_task",
]

logger = logging.getLogger("journy")

#: The task every operation is sent to (its ``acks_late`` follows the app's ``task_acks_late``).
TASK_NAME = "journy.deliver"
#: The task for operations sent with ``ACKS_LATE`` (``acks_late=True``, ``reject_on_worker_lost=True``).
ACKS_LATE_TASK_NAME = "journy.deliver_acks_late"

#: Operations that change nothing more when applied twice: the ones ``ACKS_LATE="idempotent"`` acknowledges late.
IDEMPOTENT_KINDS = frozenset(
    {
        "upsert_user",
        "delete_user",
        "upsert_account",
        "delete_account",
        "add_users_to_account",
        "remove_users_from_account",
        "link",
    }
)


# -- the producer side ---------------------------------------------------------------------------------------


class CeleryBackend(Backend):
    """Publish each operation as a Celery task; your Celery workers deliver it.

    OPTIONS (all optional):

    - ``APP``: the Celery app, or the dotted path of one (``"proj.celery.app"`` or ``"proj.celery:app"``);
      default ``celery.current_app`` (the app your project created). Resolved on first use.
    - ``QUEUE``: the Celery queue to send to (default: the app's routing, normally ``"celery"``); the workers
      must consume it (``celery -A proj worker -Q celery,journy``).
    - ``RETRY``: ``{"max_attempts": 8, "base": 0.5, "cap": 60, "max_age": 3600}``, see
      :class:`~journy_core.retry.RetryPolicy`; it travels with each message, so the worker needs no setting.
    - ``ON_FAILURE``: the dotted path (or a module-level function, turned into its path) of
      ``on_failure(operation, error)``, called in the worker for each operation given up on, and in this process
      for operations the broker did not accept when ``Journy(on_failure=...)`` is not given.
    - ``ACKS_LATE``: ``False`` (default: the app's ``task_acks_late``), ``True``, or ``"idempotent"``.
    - ``PUBLISH_TIMEOUT``: seconds a publish may take when the broker does not answer (default 1.0).
    - ``BROKER_DOWN_PAUSE``: seconds during which operations are dropped without trying after a publish timed
      out (default 5.0; 0 tries every time).

    ``flush`` returns at once (nothing waits in this process); ``close`` releases the broker connections, and
    operations queued after it are dropped.
    """

    name = "celery"
    option_names = frozenset(
        {"APP", "QUEUE", "RETRY", "ON_FAILURE", "ACKS_LATE", "PUBLISH_TIMEOUT", "BROKER_DOWN_PAUSE"}
    )

    def __init__(
        self,
        *,
        client_factory: Callable[[], Client] | None,
        options: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        super().__init__(client_factory=client_factory, options=options, on_failure=on_failure)
        app = self.options.get("APP")
        if app is not None and not isinstance(app, (str, celery.Celery)):
            raise ConfigurationError(
                "Queue option 'APP' of the 'celery' backend must be a Celery app or its dotted path "
                f"(e.g. 'proj.celery.app'), got {type(app).__name__}."
            )
        self._app_setting: str | celery.Celery | None = app
        queue = self.options.get("QUEUE")
        if queue is not None and (not isinstance(queue, str) or not queue.strip()):
            raise ConfigurationError(
                f"Queue option 'QUEUE' of the 'celery' backend must be a Celery queue name, got {queue!r}."
            )
        self.queue: str | None = queue
        retry = self.options.get("RETRY")
        self.retry = retry if isinstance(retry, RetryPolicy) else RetryPolicy.from_options(retry)
        self.on_failure_path = callable_path(self.options.get("ON_FAILURE"), "ON_FAILURE", self.name)
        acks_late = self.options.get("ACKS_LATE", False)
        if not (isinstance(acks_late, bool) or acks_late == "idempotent"):
            raise ConfigurationError(
                f"Queue option 'ACKS_LATE' of the 'celery' backend must be False, True or 'idempotent', "
                f"got {acks_late!r}."
            )
        self.acks_late: bool | str = acks_late
        self.publish_timeout: float = self.number_option("PUBLISH_TIMEOUT", 1.0, minimum=0.01)
        self.broker_down_pause: float = self.number_option("BROKER_DOWN_PAUSE", 5.0)
        self._retry_data = dataclasses.asdict(self.retry)
        self._app: celery.Celery | None = None
        self._app_error: ConfigurationError | None = None
        self._drops = DropReporter(self)
        self._closed = False
        self._reset_connections()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, "_reset_connections"))

    def _reset_connections(self) -> None:
        # Never reuse the parent's broker sockets after a fork: the child opens its own on first publish.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: Any = None

    @property
    def app(self) -> celery.Celery:
        """The Celery app operations are sent with; raises :class:`ConfigurationError` when ``APP`` is wrong."""
        if self._app is None:
            if self._app_error is not None:
                raise self._app_error
            try:
                self._app = _resolve_app(self._app_setting)
            except ConfigurationError as error:
                self._app_error = error
                raise
        return self._app

    def task_name_for(self, operation: Operation) -> str:
        """The task ``operation`` is sent to, as ``ACKS_LATE`` decides."""
        late = self.acks_late is True or (self.acks_late == "idempotent" and operation.kind in IDEMPOTENT_KINDS)
        return ACKS_LATE_TASK_NAME if late else TASK_NAME

    def enqueue(self, operation: Operation) -> None:
        """Publish ``operation``; never raises, waits at most about ``PUBLISH_TIMEOUT`` seconds."""
        try:
            if self._closed:
                self._drops.drop(operation, "the backend is closed", None)
                return
            if self._drops.paused():
                self._drops.drop(operation, "the broker did not answer recently", self._drops.last_error)
                return
            started = time.monotonic()
            try:
                self._publish(operation)
            except ConfigurationError as error:
                self._drops.drop(operation, f"the {self.name!r} queue backend is misconfigured", error)
                return
            except Exception as error:
                self._drops.failed_publish(operation, error, time.monotonic() - started)
                return
            self.stats.add("queued")
        except Exception:  # never into the app
            logger.exception("journy: could not queue %s", operation.describe())

    def _publish(self, operation: Operation) -> None:
        app = self.app
        options: dict[str, Any] = {}
        if self.queue is not None:
            options["queue"] = self.queue
        kwargs = {
            "operation": operation.to_dict(),
            "enqueued_at": time.time(),
            "retry": self._retry_data,
            "on_failure": self.on_failure_path,
        }
        if app.conf.task_always_eager:
            # Celery's test mode: like every task of the app, delivered here and now (no broker).
            app.tasks[self.task_name_for(operation)].apply(kwargs=kwargs)
            return
        pool = self._connection_pool(app)
        with pool.acquire(block=True, timeout=self.publish_timeout / 2) as connection:
            app.send_task(
                self.task_name_for(operation),
                kwargs=kwargs,
                connection=connection,
                serializer="json",
                ignore_result=True,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1},
                # What Celery logs and shows (flower, inspect) instead of the payload: kind and IDs only.
                argsrepr="()",
                kwargsrepr=operation.describe(),
                **options,
            )

    def _connection_pool(self, app: celery.Celery) -> Any:
        if self._pool is not None and self._pid == os.getpid():
            return self._pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                half = self.publish_timeout / 2
                probe = app.connection_for_write()
                transport = str(getattr(probe, "transport_cls", "") or "")
                options: dict[str, Any] = {
                    # kombu: one connection attempt, bounded, when a channel is opened.
                    "max_retries": 0,
                    "interval_start": 0,
                    "interval_step": 0.1,
                    "interval_max": 0.1,
                    "connect_retries_timeout": half,
                }
                if transport in ("redis", "rediss", "sentinel"):
                    options.update(socket_timeout=half, socket_connect_timeout=half)
                elif transport in ("amqp", "amqps", "pyamqp"):
                    options.update(read_timeout=half, write_timeout=half)
                connection = app.connection_for_write(connect_timeout=half, transport_options=options)
                self._pool = connection.Pool(limit=app.conf.broker_pool_limit or 10)
                self._pid = os.getpid()
            return self._pool

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing waits in this process: every accepted operation is already with the broker."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Release the broker connections; operations queued afterwards are dropped."""
        self._closed = True
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            try:
                pool.force_close_all()
            except Exception:
                logger.debug("journy: closing the Celery connection pool failed", exc_info=True)


def _call(ref: weakref.ref[CeleryBackend], method: str) -> None:
    backend = ref()
    if backend is not None:
        getattr(backend, method)()


def _resolve_app(setting: str | celery.Celery | None) -> celery.Celery:
    if setting is None:
        app = celery.current_app._get_current_object()
        if not isinstance(app, celery.Celery):  # pragma: no cover - current_app always is one
            raise ConfigurationError("celery.current_app is not a Celery app; set the queue option 'APP'.")
        return app
    if isinstance(setting, celery.Celery):
        return setting
    app = import_object(setting, "APP", "celery")
    if not isinstance(app, celery.Celery):
        raise ConfigurationError(
            f"Queue option 'APP'={setting!r} of the 'celery' backend is a {type(app).__name__}, not a Celery app."
        )
    return app


# -- the worker side -----------------------------------------------------------------------------------------


def _deliver(
    task: Any,
    operation: Mapping[str, Any],
    enqueued_at: float | None = None,
    retry: Mapping[str, Any] | None = None,
    on_failure: str | None = None,
    **newer: Any,
) -> str:
    """The body of ``journy.deliver``: one attempt, then ``retry(countdown=...)`` or done."""
    if newer:  # a message from a newer producer during a rolling deploy: deliver what this version understands
        logger.debug("journy: ignoring unknown task arguments %s", sorted(newer))
    attempt = int(task.request.retries or 0) + 1
    delivery = attempt_delivery(operation, attempt, enqueued_at, retry, on_failure, retry_log_level=logging.DEBUG)
    if delivery.outcome == "retry":
        raise task.retry(
            countdown=delivery.delay,
            exc=delivery.error,
            max_retries=None,
            argsrepr="()",
            kwargsrepr=describe_message(operation),
        )
    return delivery.outcome


_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "max_retries": None,  # RETRY decides, from the attempt count and the operation's age
    "ignore_result": True,
    "serializer": "json",
}

#: ``journy.deliver``: delivers one operation (its ``acks_late`` follows the app's ``task_acks_late``).
deliver_task: Any = celery.shared_task(name=TASK_NAME, **_TASK_OPTIONS)(_deliver)
#: ``journy.deliver_acks_late``: the same, acknowledged after delivery (see ``ACKS_LATE``).
deliver_acks_late_task: Any = celery.shared_task(
    name=ACKS_LATE_TASK_NAME, acks_late=True, reject_on_worker_lost=True, **_TASK_OPTIONS
)(_deliver)


def _close_clients(**_: Any) -> None:
    pid = os.getpid()
    journy_worker.close_clients()
    counts = journy_worker.stats.snapshot()
    if counts["sent"] or counts["retried"] or counts["failed"]:
        logger.info(
            "journy: worker process %d stops: %d sent, %d retried, %d failed",
            pid,
            counts["sent"],
            counts["retried"],
            counts["failed"],
        )


celery.signals.worker_process_shutdown.connect(_close_clients, weak=False)
celery.signals.worker_shutdown.connect(_close_clients, weak=False)
