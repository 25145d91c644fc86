"""The ``django_tasks`` backend: delivery through Django's tasks framework (docs/backends-django-tasks.md).

Django 6 ships the framework as :mod:`django.tasks`; before Django 6 the ``django-tasks`` backport provides it as
``django_tasks`` (``pip install 'journy[tasks]'``). Whichever is importable is used, ``django.tasks`` first.

Each operation, or the operations made together (:meth:`DjangoTasksBackend.enqueue_many`: one transaction's, one
request's), becomes one task, :data:`TASK_PATH`, whose arguments are plain JSON: ``operation`` (or ``operations``,
delivered in order by one worker), the attempt number, when it was first queued, and the retry policy and failure
callback path when configured. The worker builds its own client (:mod:`journy_core.worker`). The framework has no
retries of its own, so after a transient failure (connection error, timeout, 408, 429, 5xx) the task enqueues a
copy of itself carrying that operation and the ones after it, with ``run_after`` set to the backoff delay; task
backends that cannot defer (``ImmediateBackend``) retry in place instead, with the same backoff and ``RETRY``
policy. A 4xx other than 408/429 is never retried: the operation is logged, counted in
:data:`journy_core.worker.stats` and handed to ``ON_FAILURE``, and the next one goes on.

Importing this module needs neither configured settings nor the tasks framework; building the backend needs both.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from .. import worker
from ..client import Client
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from ._distributed import MessageBackend, deliver_in_order, message_operations
from ._tasks_framework import TasksFramework, event_loop_running, failure_path, savepoints, tasks_framework
from .base import FailureCallback, describe_error

__all__ = [
    "OUTCOMES",
    "TASK_NAME",
    "TASK_PATH",
    "DjangoTasksBackend",
    "TasksFramework",
    "delivery_task",
    "tasks_framework",
]

logger = logging.getLogger("journy")

#: The task's name, and the import path a worker resolves it by (keep both stable: queued rows refer to them).
TASK_NAME = "deliver_operation"
TASK_PATH = f"{__name__}.{TASK_NAME}"

#: What the task returns (visible as the task result's return value, e.g. in the database backend's admin):
#: ``sent``, ``failed`` (given up on, see the logs), or ``retry_scheduled`` (a deferred copy will try again).
OUTCOMES = ("sent", "failed", "retry_scheduled")

_DEFAULT_ALIAS = "default"
_DEFAULT_QUEUE = "default"
_MIN_PRIORITY, _MAX_PRIORITY = -100, 100


# -- the task --------------------------------------------------------------------------------------------------


def _deliver_operation(
    context: Any,
    operation: Mapping[str, Any] | None = None,
    attempt: int = 1,
    enqueued_at: float | None = None,
    retry: Mapping[str, Any] | None = None,
    on_failure: str | None = None,
    operations: list[Mapping[str, Any]] | None = None,
) -> str:
    """Deliver ``operation`` (``Operation.to_dict()``), or ``operations`` in order (made together), the first at
    attempt ``attempt``; returns one of OUTCOMES (``"failed"`` when any operation was given up on).

    Never raises for a delivery failure: the task itself succeeds, and its return value says what happened, so
    that a task backend that re-runs failed tasks can never send an operation again (a 4xx must not be retried).
    """
    pending = message_operations(operation, operations)
    while True:
        progress = deliver_in_order(pending, attempt, enqueued_at, retry, on_failure)
        _inline.sent = getattr(_inline, "sent", 0) + progress.sent
        _inline.failed = getattr(_inline, "failed", 0) + len(progress.failures)
        if not progress.remaining:
            return progress.outcome
        # What is left (after a transient failure, the failed operation first) goes on as a deferred copy.
        if operations is None:
            arguments = _task_arguments(pending[0], progress.attempt, enqueued_at, retry, on_failure)
        else:
            arguments = _task_arguments(progress.remaining, progress.attempt, enqueued_at, retry, on_failure)
        if _schedule_retry(context.task_result.task, arguments, progress.delay):
            return "retry_scheduled"
        # The task backend cannot defer (ImmediateBackend), or scheduling failed: go on here, same backoff.
        time.sleep(progress.delay)
        pending, attempt = progress.remaining, progress.attempt


#: What the tasks run by this thread delivered: an inline task backend (ImmediateBackend) runs them in the thread
#: that enqueued them, which reads the difference to count them in its own ``stats()``.
_inline = threading.local()


# The task is reached as `journy_core.backends.django_tasks.deliver_operation` (its function's qualified name),
# which the module __getattr__ below resolves to the Task object, built on first use: building a Task needs
# configured settings, and importing this module must not.
_deliver_operation.__name__ = _deliver_operation.__qualname__ = TASK_NAME

_task_lock = threading.Lock()
_task_cache: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name == TASK_NAME:
        return delivery_task()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def delivery_task() -> Any:
    """The delivery task (a ``Task`` of the framework in use), bound to the first ``TASKS`` entry that can run it.

    Workers resolve it by :data:`TASK_PATH` and rebind it to the entry, queue and priority each queued row names;
    :class:`DjangoTasksBackend` rebinds it to its ``BACKEND_ALIAS``, ``QUEUE_NAME`` and ``PRIORITY``.
    """
    with _task_lock:
        task = _task_cache.get(TASK_NAME)
        if task is None:
            task = _task_cache[TASK_NAME] = _build_task(tasks_framework())
        return task


def _build_task(framework: TasksFramework) -> Any:
    exceptions = importlib.import_module("django.core.exceptions")
    handler = framework.task_backends
    for alias in dict.fromkeys([_DEFAULT_ALIAS, *handler.settings]):
        try:
            queues = handler[alias].queues
        except exceptions.ImproperlyConfigured:
            continue
        for queue in [_DEFAULT_QUEUE] if not queues or _DEFAULT_QUEUE in queues else sorted(queues):
            try:
                return framework.task_class(
                    func=_deliver_operation, backend=alias, queue_name=queue, takes_context=True
                )
            except framework.invalid_task:
                continue
    raise ConfigurationError(
        f"No entry of Django's TASKS setting ({', '.join(handler.settings) or 'none'}) can run journy's delivery "
        "task: add one whose backend runs synchronous tasks."
    )


def _task_arguments(
    operations: Operation | Mapping[str, Any] | list[Any],
    attempt: int,
    enqueued_at: float | None,
    retry: Mapping[str, Any] | None,
    on_failure: str | None,
) -> dict[str, Any]:
    """A task's arguments: ``operation`` for one (the format every version reads), ``operations`` for a list."""
    arguments: dict[str, Any]
    if isinstance(operations, list):
        operations = [op.to_dict() if isinstance(op, Operation) else op for op in operations]
        arguments = {"operations": operations} if len(operations) > 1 else {"operation": operations[0]}
    else:
        arguments = {"operation": operations.to_dict() if isinstance(operations, Operation) else operations}
    arguments.update(attempt=attempt, enqueued_at=enqueued_at)
    if retry:
        arguments["retry"] = dict(retry)
    if on_failure:
        arguments["on_failure"] = on_failure
    return arguments


def _schedule_retry(task: Any, arguments: dict[str, Any], delay: float) -> bool:
    """Enqueue the next attempt ``delay`` seconds from now; False when the task backend cannot defer."""
    try:
        if not task.get_backend().supports_defer:
            return False
        timezone = importlib.import_module("django.utils.timezone")
        with savepoints():
            task.using(run_after=timezone.now() + timedelta(seconds=delay)).enqueue(**arguments)
    except Exception:
        logger.exception("journy: could not schedule the next attempt as a task; retrying in this worker")
        return False
    return True


# -- the producer side -----------------------------------------------------------------------------------------


class DjangoTasksBackend(MessageBackend):
    """Queue each operation as a Django task; a task worker delivers it, retrying with deferred copies.

    OPTIONS (all optional):

    - ``BACKEND_ALIAS``: the entry of Django's ``TASKS`` setting to use (``"default"``).
    - ``QUEUE_NAME``: the task queue (``"default"``); it must be one of that entry's ``QUEUES``.
    - ``PRIORITY``: the tasks' priority, -100 to 100 (0); other values need a task backend that supports them.
    - ``RETRY``: the retry policy, ``{"max_attempts": 8, "base": 0.5, "cap": 60, "max_age": 3600}`` (see
      :class:`~journy_core.retry.RetryPolicy`); travels with each task, so the worker applies the producer's.
    - ``ON_FAILURE``: the dotted path of ``on_failure(operation, error)``, imported and called in the worker for
      each operation given up on. ``Journy(on_failure=...)`` is used the same way when it is a module-level
      function (a lambda or a method cannot reach another process: that is logged as a warning).

    ``enqueue`` never raises: an operation the task backend refuses (database down, a row that cannot be written)
    is logged and counted as ``dropped``. ``stats()`` counts ``queued`` and ``dropped`` here; what the workers
    sent, retried and gave up on is in :data:`journy_core.worker.stats` of each worker process (and, when the task
    backend runs tasks inline, here too). Once enqueued, an operation belongs to the task backend, not to this
    process, so ``flush`` waits only for enqueues made from an event loop's thread (see :meth:`enqueue`).
    """

    name = "django_tasks"
    #: Operations made together (a request, a transaction) go as one task: see :meth:`enqueue_many`.
    option_names = frozenset({"BACKEND_ALIAS", "QUEUE_NAME", "PRIORITY", "RETRY", "ON_FAILURE"})

    def __init__(
        self,
        *,
        client_factory: Callable[[], Client] | None,
        options: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        super().__init__(client_factory=client_factory, options=options, on_failure=on_failure)
        self.backend_alias = self._text_option("BACKEND_ALIAS", _DEFAULT_ALIAS)
        self.queue_name = self._text_option("QUEUE_NAME", _DEFAULT_QUEUE)
        self.priority: int = self.number_option("PRIORITY", 0, minimum=_MIN_PRIORITY, integer=True)
        if self.priority > _MAX_PRIORITY:
            raise ConfigurationError(
                f"Queue option 'PRIORITY' of the {self.name!r} backend must be between {_MIN_PRIORITY} and "
                f"{_MAX_PRIORITY}, got {self.priority!r}."
            )
        self.retry = RetryPolicy.coerce(self.options.get("RETRY"))
        self._retry_arguments = dataclasses.asdict(self.retry) if self.options.get("RETRY") is not None else None
        self.on_failure_path = failure_path(self.options.get("ON_FAILURE"), on_failure, self.name)
        self.framework = tasks_framework()
        self.task = self._configured_task()
        self.supports_defer = bool(self.task.get_backend().supports_defer)
        if not self.supports_defer:
            logger.info(
                "journy: TASKS[%r] cannot defer tasks: deliveries are retried in place, in the thread that runs "
                "the task (for ImmediateBackend, the caller's)",
                self.backend_alias,
            )
        if client_factory is not None:
            self._offer_worker_client(client_factory)
        self._closed = False
        self._drop_lock = threading.Lock()
        self._dropped_unreported = 0
        self._last_drop_log = float("-inf")
        # Enqueues made on an event loop's thread go through one helper thread (see enqueue).
        self._handoff = threading.Condition()
        self._handoff_pending = 0
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0

    def _text_option(self, name: str, default: str) -> str:
        value = self.options.get(name, default)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"Queue option {name!r} of the {self.name!r} backend must be a non-empty string, got {value!r}."
            )
        return value

    def _configured_task(self) -> Any:
        conf = importlib.import_module("django.conf")
        exceptions = importlib.import_module("django.core.exceptions")
        if not conf.settings.configured:
            raise ConfigurationError(
                "QUEUE['BACKEND']='django_tasks' runs inside a Django project, and Django's settings are not "
                "configured: set DJANGO_SETTINGS_MODULE and call django.setup() first."
            )
        handler = self.framework.task_backends
        try:
            backend = handler[self.backend_alias]
        except exceptions.ImproperlyConfigured as exc:
            known = ", ".join(repr(alias) for alias in handler.settings) or "none"
            raise ConfigurationError(
                f"Queue option BACKEND_ALIAS={self.backend_alias!r} names no usable entry of Django's TASKS setting "
                f"(entries: {known}): {exc}"
            ) from exc
        try:
            return delivery_task().using(backend=self.backend_alias, queue_name=self.queue_name, priority=self.priority)
        except self.framework.invalid_task as exc:
            raise ConfigurationError(
                f"TASKS[{self.backend_alias!r}] ({type(backend).__name__}) cannot run journy's delivery task with "
                f"QUEUE_NAME={self.queue_name!r} and PRIORITY={self.priority}: {exc} (its queues: "
                f"{', '.join(sorted(backend.queues)) or 'any'})."
            ) from exc

    @staticmethod
    def _offer_worker_client(client_factory: Callable[[], Client]) -> None:
        # When this process is also a worker (ImmediateBackend runs the task right here) and nothing told the worker
        # side how to build its client, the key given to Journy(...) is the one that was meant.
        if not worker.is_configured():
            worker.configure_worker(client_factory)

    def publish(self, operations: list[Operation]) -> None:
        """Queue ``operations`` as one task (with an inline task backend, deliver them now); never raises.

        On a thread that runs an event loop (an async view), Django refuses database access and an inline task
        backend would block the loop, so the enqueue is handed to a helper thread; :meth:`flush` waits for it.
        """
        if self._closed:
            for operation in operations:
                self._drop(operation, "the backend is closed", None)
            return
        if event_loop_running():
            self._hand_off(operations)
            return
        self._enqueue_now(operations)

    def _enqueue_now(self, operations: list[Operation]) -> None:
        before = (getattr(_inline, "sent", 0), getattr(_inline, "failed", 0))
        try:
            arguments = _task_arguments(operations, 1, time.time(), self._retry_arguments, self.on_failure_path)
            with savepoints():
                self.task.enqueue(**arguments)
        except Exception as error:  # never into the app
            for operation in operations:
                self._drop(operation, "the task backend refused it", error)
            return
        self.stats.add("queued", len(operations))
        # A task backend that ran the task already, in this thread (ImmediateBackend), delivered these.
        sent, failed = getattr(_inline, "sent", 0) - before[0], getattr(_inline, "failed", 0) - before[1]
        if sent:
            self.stats.add("sent", sent)
        if failed:
            self.stats.add("failed", failed)

    def _drop(self, operation: Operation, why: str, error: BaseException | None) -> None:
        self.stats.add("dropped")
        now = time.monotonic()
        with self._drop_lock:
            self._dropped_unreported += 1
            if now - self._last_drop_log < 60.0:
                return
            count, self._dropped_unreported, self._last_drop_log = self._dropped_unreported, 0, now
        logger.error(
            "journy: dropped %d operation(s) since the last such message (the latest: %s) because %s%s",
            count,
            operation.describe(),
            why,
            "" if error is None else f": {describe_error(error)}",
            exc_info=error,
        )

    def _hand_off(self, operations: list[Operation]) -> None:
        with self._handoff:
            if self._executor is None or self._executor_pid != os.getpid():  # none yet, or the parent's (a fork)
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journy-django-tasks")
                self._executor_pid = os.getpid()
                self._handoff_pending = 0
            self._handoff_pending += 1
            try:
                self._executor.submit(self._enqueue_handed_off, operations)
            except Exception as error:  # the interpreter is shutting down
                self._handoff_pending -= 1
                self._handoff.notify_all()
                for operation in operations:
                    self._drop(operation, "this process is exiting", error)

    def _enqueue_handed_off(self, operations: list[Operation]) -> None:
        try:
            importlib.import_module("django.db").close_old_connections()  # this thread's connection may be stale
            self._enqueue_now(operations)
        except Exception as error:
            for operation in operations:
                self._drop(operation, "the task backend refused it", error)
        finally:
            with self._handoff:
                self._handoff_pending -= 1
                self._handoff.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds) for enqueues handed to the helper thread; True when none is left.

        Nothing else waits in this process: an accepted operation is already with the task backend.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._handoff:
            if self._executor_pid != os.getpid():
                return True
            while self._handoff_pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._handoff.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout`` seconds), then refuse (and count as dropped) later operations."""
        if not self.flush(timeout):
            logger.warning(
                "journy: closed with %d operation(s) not yet handed to the task backend", self._handoff_pending
            )
        self._closed = True
