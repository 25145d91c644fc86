"""The ``rq`` backend: each operation, or the operations made together, becomes one RQ job on a Redis queue, run by
your ``rq worker`` processes.

Selected with ``{"BACKEND": "rq", "OPTIONS": {...}}``. This module is imported only then; it needs
``pip install 'journy[rq]'``.

**In the web process** (the producer) :meth:`RQBackend.enqueue` pushes a job calling :func:`deliver_job` with one
plain argument (the operation as JSON data, the attempt number, when it was queued, the retry policy and the
``ON_FAILURE`` path); :meth:`RQBackend.enqueue_many` (one transaction's or one request's operations) pushes one job
carrying them all, in order (``operations``), so that concurrent workers cannot reorder them. No API key is needed
here. The job's description is the operations' kinds and IDs, never their property values, so RQ's logs and
dashboards show nothing private. The Redis connection built from ``URL`` has short timeouts (``PUBLISH_TIMEOUT``)
and one quick reconnect: when Redis is down the operations are dropped, counted in ``stats()["dropped"]``, handed
to the ``on_failure`` callback and logged (at most once a minute), and the caller never sees an exception. After a
push that timed out, operations are dropped at once for ``BROKER_DOWN_PAUSE`` seconds, so that an outage does not
make every request wait.

**In the worker** the job delivers its operations one after the other with :func:`journy_core.worker.deliver`. A
transient failure (connection error, timeout, 408, 429, 5xx) schedules a new job for the next attempt of that
operation and the ones after it, ``delay`` seconds later
(``queue.enqueue_at``, rounded up to the whole second RQ's schedule works in): the delay is full-jitter exponential
backoff with a cap, or, after a 429, at least the pause the rate-limit figures call for. Scheduled jobs are moved
to the queue by RQ's scheduler, so **the worker must run with** ``--with-scheduler``::

    rq worker --with-scheduler --url redis://localhost:6379/0 journy

(a worker without it logs a warning the first time a retry is scheduled, and the retries wait in the queue's
``ScheduledJobRegistry`` until a scheduler runs). Anything else (400, 401, 403, 404, 422), and a transient
failure past ``RETRY["max_attempts"]`` or ``RETRY["max_age"]``, is reported failed (logged with the server's
field errors, counted in :data:`journy_core.worker.stats`, handed to ``ON_FAILURE``) and lands in the queue's
``FailedJobRegistry`` for ``FAILURE_TTL`` seconds (a one-operation job ends failed with
:class:`DeliveryFailedError`; in a job of several, each such operation becomes a failed job of its own and the
rest goes on), so that ``rq requeue --queue journy --all`` can send those operations again once the cause is
fixed.

**Worker classes.** RQ's default worker forks a process per job: each delivery opens its own HTTPS connection
and starts with a fresh rate-limit pacer. For more than a few calls a second use
``--worker-class rq.worker.SimpleWorker``, which runs jobs in the worker process and keeps one keep-alive
connection and the pacer's state between jobs. Either way nothing journy-specific waits in the worker's memory:
the next attempt of an operation is always a job in Redis, so stopping a worker (``SIGTERM`` lets the running
job finish) loses nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..client import Client
from ..errors import ConfigurationError, JournyError
from ..operations import Operation
from ..retry import RetryPolicy
from ._distributed import (
    MESSAGE_SECONDS,
    DropReporter,
    MessageBackend,
    callable_path,
    deliver_in_order,
    describe_batch,
    describe_message,
    import_object,
    message_operations,
)
from .base import FailureCallback, describe_error

try:
    import redis
    import rq
    import rq.job
    import rq.registry
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from rq.serializers import resolve_serializer
except ImportError as exc:  # pragma: no cover - the missing-engine test imports this module without RQ
    raise ConfigurationError(
        f"The 'rq' queue backend needs RQ and redis, which cannot be imported ({exc}): pip install 'journy[rq]'."
    ) from exc

__all__ = ["DEFAULT_QUEUE", "DEFAULT_URL", "DeliveryFailedError", "RQBackend", "deliver_job"]

logger = logging.getLogger("journy")

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_QUEUE = "journy"
#: Failed jobs stay inspectable (and requeueable) this long by default: a week, not RQ's year.
DEFAULT_FAILURE_TTL = 7 * 24 * 3600


class DeliveryFailedError(JournyError):
    """Ends the RQ job of an operation given up on, so that it lands in the queue's ``FailedJobRegistry``."""


# -- the producer side ---------------------------------------------------------------------------------------


class RQBackend(MessageBackend):
    """Push each operation as an RQ job; your ``rq worker --with-scheduler`` processes deliver it.

    OPTIONS (all optional):

    - ``URL``: the Redis URL (default ``redis://localhost:6379/0``), or
    - ``CONNECTION``: a ``redis.Redis`` client, or the dotted path of one (resolved on first use); it keeps its own
      timeouts, so give it ``socket_timeout`` and ``socket_connect_timeout``.
    - ``QUEUE``: the RQ queue name (default ``"journy"``); the workers must listen on it.
    - ``RETRY``: ``{"max_attempts": 8, "base": 0.5, "cap": 60, "max_age": 3600}``, see
      :class:`~journy_core.retry.RetryPolicy`; it travels with each job, so the worker needs no setting.
    - ``ON_FAILURE``: the dotted path (or a module-level function, turned into its path) of
      ``on_failure(operation, error)``, called in the worker for each operation given up on, and in this process
      for operations Redis did not accept when ``Journy(on_failure=...)`` is not given.
    - ``SERIALIZER``: RQ's job serializer, ``"pickle"`` (RQ's default) or ``"json"`` or a dotted path; the
      workers must use the same (``rq worker -S json``).
    - ``JOB_TIMEOUT``: seconds a delivery job may run before RQ kills it (default 180).
    - ``RESULT_TTL``: seconds RQ keeps a finished job (default 0: deleted at once; the result is only "sent").
    - ``FAILURE_TTL``: seconds a failed job stays in the ``FailedJobRegistry`` (default 7 days).
    - ``PUBLISH_TIMEOUT``: seconds a push may take when Redis does not answer (default 1.0; ``URL`` only).
    - ``BROKER_DOWN_PAUSE``: seconds during which operations are dropped without trying after a push timed out
      (default 5.0; 0 tries every time).

    ``flush`` returns at once (nothing waits in this process); ``close`` closes the connection built from
    ``URL``, and operations queued after it are dropped.
    """

    name = "rq"
    #: Operations made together (a request, a transaction) go as one job: see :meth:`enqueue_many`.
    option_names = frozenset(
        {
            "URL",
            "CONNECTION",
            "QUEUE",
            "RETRY",
            "ON_FAILURE",
            "SERIALIZER",
            "JOB_TIMEOUT",
            "RESULT_TTL",
            "FAILURE_TTL",
            "PUBLISH_TIMEOUT",
            "BROKER_DOWN_PAUSE",
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
        url = self.options.get("URL")
        connection = self.options.get("CONNECTION")
        if url is not None and connection is not None:
            raise ConfigurationError("Queue options 'URL' and 'CONNECTION' of the 'rq' backend exclude each other.")
        if url is not None and (not isinstance(url, str) or not url.strip()):
            raise ConfigurationError(f"Queue option 'URL' of the 'rq' backend must be a Redis URL, got {url!r}.")
        if connection is not None and not isinstance(connection, (str, redis.Redis)):
            raise ConfigurationError(
                "Queue option 'CONNECTION' of the 'rq' backend must be a redis.Redis client or its dotted path, "
                f"got {type(connection).__name__}."
            )
        queue = self.options.get("QUEUE", DEFAULT_QUEUE)
        if not isinstance(queue, str) or not queue.strip():
            raise ConfigurationError(f"Queue option 'QUEUE' of the 'rq' backend must be a queue name, got {queue!r}.")
        self.queue_name: str = queue
        self.retry = RetryPolicy.coerce(self.options.get("RETRY"))
        self.on_failure_path = callable_path(self.options.get("ON_FAILURE"), "ON_FAILURE", self.name)
        serializer = self.options.get("SERIALIZER")
        try:
            self.serializer: Any = resolve_serializer(serializer)
        except Exception as error:
            raise ConfigurationError(
                f"Queue option 'SERIALIZER'={serializer!r} of the 'rq' backend: {error}; use 'pickle', 'json' or "
                "the dotted path of a serializer."
            ) from None
        self.job_timeout: int = self.number_option("JOB_TIMEOUT", 180, minimum=1, integer=True)
        self.result_ttl: int = self.number_option("RESULT_TTL", 0, integer=True)
        self.failure_ttl: int = self.number_option("FAILURE_TTL", DEFAULT_FAILURE_TTL, minimum=1, integer=True)
        self.publish_timeout: float = self.number_option("PUBLISH_TIMEOUT", 1.0, minimum=0.01)
        self.broker_down_pause: float = self.number_option("BROKER_DOWN_PAUSE", 5.0)
        self._retry_data = dataclasses.asdict(self.retry)
        self._connection_setting: str | redis.Redis | None = connection
        self._connection: redis.Redis | None = None
        self._owns_connection = False
        if connection is None:
            half = self.publish_timeout / 2
            try:
                self._connection = redis.Redis.from_url(
                    url or DEFAULT_URL,
                    socket_connect_timeout=half,
                    socket_timeout=half,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as error:
                raise ConfigurationError(f"Queue option 'URL' of the 'rq' backend: {error}.") from None
            self._owns_connection = True
        elif isinstance(connection, redis.Redis):
            self._connection = connection
        self._queue: rq.Queue | None = None
        self._drops = DropReporter(self)
        self._closed = False

    @property
    def connection(self) -> redis.Redis:
        """The Redis client jobs are pushed with; raises :class:`ConfigurationError` when ``CONNECTION`` is wrong."""
        if self._connection is None:
            setting = self._connection_setting
            assert isinstance(setting, str)
            found = import_object(setting, "CONNECTION", self.name)
            if not isinstance(found, redis.Redis):
                raise ConfigurationError(
                    f"Queue option 'CONNECTION'={setting!r} of the 'rq' backend is a {type(found).__name__}, "
                    "not a redis.Redis client."
                )
            self._connection = found
        return self._connection

    @property
    def queue(self) -> rq.Queue:
        """The RQ queue jobs are pushed to."""
        if self._queue is None:
            self._queue = rq.Queue(
                self.queue_name,
                connection=self.connection,
                serializer=self.serializer,
                default_timeout=self.job_timeout,
            )
        return self._queue

    def publish(self, operations: list[Operation]) -> None:
        """Push ``operations`` as one job; never raises, waits at most about ``PUBLISH_TIMEOUT`` seconds."""
        try:
            if self._closed:
                self._drops.drop_many(operations, "the backend is closed", None)
                return
            if self._drops.paused():
                self._drops.drop_many(operations, "Redis did not answer recently", self._drops.last_error)
                return
            message: dict[str, Any]
            if len(operations) == 1:  # the format every version of the worker reads
                message = {"operation": operations[0].to_dict(), "attempt": 1}
                description = operations[0].describe()
            else:
                message = {"operations": [operation.to_dict() for operation in operations], "attempt": 1}
                description = describe_batch(message["operations"])
            message.update(enqueued_at=time.time(), retry=self._retry_data, on_failure=self.on_failure_path)
            started = time.monotonic()
            try:
                self.queue.enqueue_call(
                    deliver_job,
                    args=(message,),
                    timeout=self.job_timeout,
                    result_ttl=self.result_ttl,
                    failure_ttl=self.failure_ttl,
                    description=description,
                )
            except ConfigurationError as error:
                self._drops.drop_many(operations, f"the {self.name!r} queue backend is misconfigured", error)
                return
            except Exception as error:
                self._drops.failed_publish_many(operations, error, time.monotonic() - started)
                return
            self.stats.add("queued", len(operations))
        except Exception:  # never into the app
            logger.exception("journy: could not queue %s", operations[0].describe())

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing waits in this process: every accepted operation is already a job in Redis."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Close the connection built from ``URL``; operations queued afterwards are dropped."""
        self._closed = True
        if self._owns_connection and self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                logger.debug("journy: closing the RQ Redis connection failed", exc_info=True)


# -- the worker side -----------------------------------------------------------------------------------------

_scheduler_checked: dict[str, float] = {}


def deliver_job(message: Mapping[str, Any]) -> str:
    """The RQ job: deliver ``message["operation"]`` (or ``message["operations"]``, in order); returns ``"sent"``,
    ``"failed"`` (operations of a list given up on) or ``"retry"``.

    What a transient failure leaves (that operation and the ones after it) is scheduled as a new job
    (``enqueue_at``), which returns ``"retry"``. A one-operation job given up on raises
    :class:`DeliveryFailedError` (it lands in the ``FailedJobRegistry``); in a list, each operation given up on
    becomes a failed one-operation job of its own there, so that ``rq requeue`` sends it, and only it, again.
    """
    operations = message.get("operations")
    pending = message_operations(message.get("operation"), operations)
    attempt = int(message.get("attempt") or 1)
    job = rq.get_current_job()
    timeout = getattr(job, "timeout", None)
    # Stay well inside the job's timeout: RQ kills a job that runs past it, and with it the rest of the list.
    seconds = (
        min(MESSAGE_SECONDS, timeout / 3) if isinstance(timeout, (int, float)) and timeout > 0 else MESSAGE_SECONDS
    )
    progress = deliver_in_order(
        pending, attempt, message.get("enqueued_at"), message.get("retry"), message.get("on_failure"), seconds=seconds
    )
    if progress.remaining:
        if operations is None:
            _schedule_retry(message, progress.attempt, progress.delay)
        else:
            _schedule_retry({**message, "operations": progress.remaining}, progress.attempt, progress.delay)
    if operations is None and progress.failures:
        _, tried, error = progress.failures[0]
        raise DeliveryFailedError(
            f"{describe_message(pending[0])}: given up after {tried} attempt(s): {describe_error(error)}"
        )
    for operation, tried, error in progress.failures:
        _record_failed_operation(message, operation, tried, error)
    return progress.outcome


def _record_failed_operation(message: Mapping[str, Any], operation: Any, attempt: int, error: BaseException) -> None:
    job = rq.get_current_job()
    if job is None:
        return  # called outside a worker (a test): reported already, nowhere to keep it
    single = {key: value for key, value in message.items() if key != "operations"}
    single.update(operation=operation, attempt=attempt)
    try:
        failed = rq.job.Job.create(
            deliver_job,
            args=(single,),
            connection=job.connection,
            serializer=job.serializer,
            description=describe_message(operation),
            timeout=None if job.timeout is None else math.ceil(job.timeout),
            result_ttl=job.result_ttl,
            failure_ttl=job.failure_ttl,
            origin=job.origin,
            status=rq.job.JobStatus.FAILED,
        )
        failed.save()
        registry = rq.registry.FailedJobRegistry(job.origin, connection=job.connection, serializer=job.serializer)
        registry.add(failed, ttl=job.failure_ttl, exc_string=f"DeliveryFailedError: {describe_error(error)}")
    except Exception:
        logger.exception("journy: could not keep %s in the FailedJobRegistry", describe_message(operation))


def _schedule_retry(message: Mapping[str, Any], attempt: int, delay: float) -> None:
    job = rq.get_current_job()
    if job is None:
        raise RuntimeError("journy_core.backends.rq.deliver_job schedules its retries from inside an RQ worker")
    queue = rq.Queue(job.origin, connection=job.connection, serializer=job.serializer)
    operations = message.get("operations")
    description = describe_batch(operations) if operations else describe_message(message.get("operation") or {})
    arguments = {
        "args": ({**message, "attempt": attempt},),
        "job_timeout": job.timeout,
        "result_ttl": job.result_ttl,
        "failure_ttl": job.failure_ttl,
        "description": description,
    }
    if delay <= 0:  # the rest of a list that ran out of time: next in line, no scheduler needed
        queue.enqueue(deliver_job, at_front=True, **arguments)
        return
    # RQ's schedule has whole-second resolution and truncates: rounding the due time up keeps the delay (a 429's
    # pause above all) from being cut short, at the cost of less than a second.
    due = datetime.fromtimestamp(math.ceil(time.time() + max(0.0, delay)), tz=timezone.utc)
    queue.enqueue_at(due, deliver_job, **arguments)
    now = time.monotonic()
    if now - _scheduler_checked.get(queue.name, float("-inf")) >= 60.0:
        _scheduler_checked[queue.name] = now
        try:
            running = queue.scheduler_pid is not None
        except Exception:
            running = True  # cannot tell: do not cry wolf
        if not running:
            logger.warning(
                "journy: no RQ scheduler runs for the queue %r: retries wait in its ScheduledJobRegistry until a "
                "worker started with --with-scheduler moves them",
                queue.name,
            )
