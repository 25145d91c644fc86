"""The ``celery`` backend: each operation, or the operations made together, becomes one Celery task message,
delivered by your Celery workers (docs/backends-celery-rq.md). Needs ``pip install 'journy[celery]'``.

**In the web process** :meth:`CeleryBackend.enqueue` publishes a ``journy.deliver`` task whose arguments are plain
JSON (the operation, when it was queued, the retry policy, the ``ON_FAILURE`` path), with Celery's ``json``
serializer; :meth:`CeleryBackend.enqueue_many` (one transaction's or one request's operations) publishes one task
carrying them all, in order (``operations`` and the ``attempt`` of the first), so that concurrent workers cannot
reorder them. No API key is needed here. Publishing has a short deadline (``PUBLISH_TIMEOUT``, one quick
reconnect): when the broker is down the operations are dropped, counted, handed to ``on_failure`` and logged (at
most once a minute), never raised; after a publish that timed out, operations are dropped at once for
``BROKER_DOWN_PAUSE`` seconds.

**In the worker** the task delivers its operations in order (:func:`._distributed.deliver_in_order`). A transient
failure (connection error, timeout, 408, 429, 5xx) ends with ``self.retry(countdown=...)`` carrying that operation
and the ones after it (full-jitter backoff, or after a 429 at least the pause the rate-limit figures call for);
anything else (400, 401, 403, 404, 422), or too many attempts, is reported failed and the next operation goes on.
The tasks are ``shared_task`` s registered when this module is imported, so the worker's Celery app must
``include`` it (``Celery("proj", include=["journy_core.backends.celery"])``, or ``CELERY_IMPORTS``); a worker
that does not logs ``Received unregistered task of type 'journy.deliver'`` and discards the message.

**acks_late.** ``ACKS_LATE=False`` (default) follows the app's ``task_acks_late`` (Celery acknowledges when a
worker starts the task: a worker killed mid-delivery loses what the message had not sent, never sends twice).
``ACKS_LATE=True`` sends every message to ``journy.deliver_acks_late`` (``acks_late=True``,
``reject_on_worker_lost=True``): a killed worker's message is delivered again from its first operation, applying
what it had sent twice. ``"idempotent"`` does that only for messages whose operations are all safe to apply twice
(upserts, deletes, memberships, links), not for those holding an event (``track``). With Redis, a message a
killed worker held comes back once older than the transport's ``visibility_timeout`` (an hour by default), not
at restart; with RabbitMQ, as soon as the dead worker's connection closes.

**Shutdown.** Nothing journy-specific waits in the worker's memory: a warm shutdown (``SIGTERM``) lets the running
deliveries finish and returns the retries waiting for their countdown to the broker; each worker process closes
its HTTP connections on ``worker_process_shutdown`` and logs what it delivered.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import worker as journy_worker
from ..client import Client
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from ._distributed import (
    DropReporter,
    MessageBackend,
    callable_path,
    deliver_in_order,
    describe_batch,
    describe_message,
    import_object,
    message_operations,
)
from .base import FailureCallback

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


class CeleryBackend(MessageBackend):
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
    #: Operations made together (a request, a transaction) go as one message: see :meth:`enqueue_many`.
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
        self.retry = RetryPolicy.coerce(self.options.get("RETRY"))
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

    def task_name_for(self, operation: Operation | Sequence[Operation]) -> str:
        """The task ``operation`` (or a message of several) is sent to, as ``ACKS_LATE`` decides: with
        ``"idempotent"``, a message is acknowledged late only when every operation in it is safe to apply twice."""
        operations = [operation] if isinstance(operation, Operation) else operation
        late = self.acks_late is True or (
            self.acks_late == "idempotent" and all(op.kind in IDEMPOTENT_KINDS for op in operations)
        )
        return ACKS_LATE_TASK_NAME if late else TASK_NAME

    def publish(self, operations: list[Operation]) -> None:
        """Publish ``operations`` as one message; never raises, waits at most about ``PUBLISH_TIMEOUT`` seconds."""
        try:
            if self._closed:
                self._drops.drop_many(operations, "the backend is closed", None)
                return
            if self._drops.paused():
                self._drops.drop_many(operations, "the broker did not answer recently", self._drops.last_error)
                return
            started = time.monotonic()
            try:
                self._publish(operations)
            except ConfigurationError as error:
                self._drops.drop_many(operations, f"the {self.name!r} queue backend is misconfigured", error)
                return
            except Exception as error:
                self._drops.failed_publish_many(operations, error, time.monotonic() - started)
                return
            self.stats.add("queued", len(operations))
        except Exception:  # never into the app
            logger.exception("journy: could not queue %s", operations[0].describe())

    def _publish(self, operations: list[Operation]) -> None:
        app = self.app
        options: dict[str, Any] = {}
        if self.queue is not None:
            options["queue"] = self.queue
        kwargs: dict[str, Any]
        if len(operations) == 1:  # the format every version of the worker reads
            kwargs = {"operation": operations[0].to_dict()}
            shown = operations[0].describe()
        else:
            kwargs = {"operations": [operation.to_dict() for operation in operations], "attempt": 1}
            shown = describe_batch(kwargs["operations"])
        kwargs.update(enqueued_at=time.time(), retry=self._retry_data, on_failure=self.on_failure_path)
        task_name = self.task_name_for(operations)
        if app.conf.task_always_eager:
            # Celery's test mode: like every task of the app, delivered here and now (no broker).
            app.tasks[task_name].apply(kwargs=kwargs)
            return
        pool = self._connection_pool(app)
        with pool.acquire(block=True, timeout=self.publish_timeout / 2) as connection:
            app.send_task(
                task_name,
                kwargs=kwargs,
                connection=connection,
                serializer="json",
                ignore_result=True,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1},
                # What Celery logs and shows (flower, inspect) instead of the payload: kinds and IDs only.
                argsrepr="()",
                kwargsrepr=shown,
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
    operation: Mapping[str, Any] | None = None,
    enqueued_at: float | None = None,
    retry: Mapping[str, Any] | None = None,
    on_failure: str | None = None,
    operations: list[Mapping[str, Any]] | None = None,
    attempt: int | None = None,
    **newer: Any,
) -> str:
    """The body of ``journy.deliver``: deliver the message's operation (or operations, in order), then
    ``retry(countdown=...)`` with what is left, or done."""
    if newer:  # a message from a newer producer during a rolling deploy: deliver what this version understands
        logger.debug("journy: ignoring unknown task arguments %s", sorted(newer))
    pending = message_operations(operation, operations)
    # A one-operation message counts its attempts in Celery's own retry count; a list says which attempt its
    # first operation is at (the others have not been tried yet).
    first_attempt = int(task.request.retries or 0) + 1 if operations is None else int(attempt or 1)
    progress = deliver_in_order(pending, first_attempt, enqueued_at, retry, on_failure, retry_log_level=logging.DEBUG)
    if progress.remaining:
        kwargs: dict[str, Any] | None = None  # a one-operation message is sent again as it came
        shown = describe_message(pending[0])
        if operations is not None:
            kwargs = {"enqueued_at": enqueued_at, "retry": retry, "on_failure": on_failure}
            kwargs.update(operations=progress.remaining, attempt=progress.attempt)
            shown = describe_batch(progress.remaining)
        raise task.retry(
            kwargs=kwargs,
            countdown=progress.delay,
            exc=progress.error,
            max_retries=None,
            argsrepr="()",
            kwargsrepr=shown,
        )
    return progress.outcome


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
