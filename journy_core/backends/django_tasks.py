"""The ``django_tasks`` backend: delivery through Django's tasks framework.

Django 6 ships the framework as :mod:`django.tasks`; before Django 6 the ``django-tasks`` backport provides it as
``django_tasks`` (``pip install 'journy[tasks]'``). Whichever is importable is used, ``django.tasks`` first.

Each operation becomes one task, :data:`TASK_PATH` (``journy_core.backends.django_tasks.deliver_operation``), whose
arguments are plain JSON: the operation, the attempt number, when it was first queued, and the retry policy and
failure callback path when they are configured. The worker that runs it builds its own client (see
:mod:`journy_core.worker`) and makes one attempt. The framework has no retries of its own, so after a transient
failure (connection error, timeout, 408, 429, 5xx) the task enqueues a copy of itself with ``run_after`` set to
the backoff delay and the attempt number plus one. Task backends that cannot defer tasks (``ImmediateBackend``)
run the retries in place instead: the same backoff, slept in the thread that runs the task, bounded by the same
``RETRY`` policy. A 4xx other than 408/429 is never retried; an operation given up on is logged, counted in
:data:`journy_core.worker.stats` and handed to ``ON_FAILURE``.

The backend imports Django lazily, so that importing this module needs neither configured settings nor the
tasks framework; building the backend needs both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

from .. import worker
from ..client import Client
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from ._distributed import import_object, resolve_callback
from .base import Backend, FailureCallback, describe_error, report_failure

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
_INSTALL_HINT = "pip install 'journy[tasks]'"


@dataclasses.dataclass(frozen=True)
class TasksFramework:
    """The tasks framework in use: Django's own (``django.tasks``, Django 6+) or the ``django_tasks`` backport."""

    #: ``"django.tasks"`` or ``"django_tasks"``.
    module: str
    #: Its ``Task`` class.
    task_class: Any
    #: Its connection handler for the ``TASKS`` setting (``task_backends[alias]`` is a task backend).
    task_backends: Any
    #: The exception a task backend raises for a task it cannot run (a queue it does not serve, a priority...).
    invalid_task: type[Exception]
    #: The status of a task that returned: ``TaskResultStatus.SUCCESSFUL`` (``SUCCEEDED`` in django-tasks < 0.12).
    successful: Any


def tasks_framework() -> TasksFramework:
    """The tasks framework to use; raises :class:`ConfigurationError` naming the extra when there is none."""
    for module, exceptions, invalid_task in (
        ("django.tasks", "django.tasks.exceptions", "InvalidTask"),
        ("django_tasks", "django_tasks.exceptions", "InvalidTaskError"),
    ):
        if not _module_exists(module):
            continue
        package = importlib.import_module(module)
        return TasksFramework(
            module=module,
            task_class=importlib.import_module(f"{module}.base").Task,
            task_backends=package.task_backends,
            invalid_task=getattr(importlib.import_module(exceptions), invalid_task),
            successful=getattr(package.TaskResultStatus, "SUCCESSFUL", None)
            or getattr(package.TaskResultStatus, "SUCCEEDED", None),
        )
    raise ConfigurationError(
        "QUEUE['BACKEND']='django_tasks' needs Django's tasks framework: Django 6 has it built in (django.tasks); "
        f"before Django 6 install the django-tasks backport: {_INSTALL_HINT}."
    )


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is missing
        return False


# -- the task --------------------------------------------------------------------------------------------------


def _deliver_operation(
    context: Any,
    operation: Mapping[str, Any],
    attempt: int = 1,
    enqueued_at: float | None = None,
    retry: Mapping[str, Any] | None = None,
    on_failure: str | None = None,
) -> str:
    """Make attempt ``attempt`` at delivering ``operation`` (``Operation.to_dict()``); returns one of OUTCOMES.

    Never raises for a delivery failure: the task itself succeeds, and its return value says what happened, so
    that a task backend that re-runs failed tasks can never send an operation again (a 4xx must not be retried).
    """
    try:
        op = Operation.from_dict(operation)
        policy = RetryPolicy.from_options(dict(retry)) if retry else RetryPolicy()
    except Exception as exc:  # a row written by hand or by an incompatible version: retrying cannot help
        worker.stats.add("failed")
        kind = operation.get("kind") if isinstance(operation, Mapping) else type(operation).__name__
        logger.error("journy: dropped a malformed queued operation (kind %r): %s", kind, describe_error(exc))
        return "failed"
    task = context.task_result.task
    while True:
        delivery = worker.deliver(op, attempt=attempt, enqueued_at=enqueued_at, retry=policy)
        if delivery.outcome == "sent":
            return "sent"
        error = delivery.error if delivery.error is not None else RuntimeError("delivery failed")
        if delivery.outcome != "retry":
            report_failure(op, error, attempt, worker.stats, resolve_callback(on_failure))
            return "failed"
        logger.info(
            "journy: %s failed (attempt %d), retrying in %.1f s: %s",
            op.describe(),
            attempt,
            delivery.delay,
            describe_error(error),
        )
        arguments = _task_arguments(op, attempt + 1, enqueued_at, retry, on_failure)
        if _schedule_retry(task, arguments, delivery.delay):
            return "retry_scheduled"
        # The task backend cannot defer (ImmediateBackend), or scheduling failed: retry here, same backoff.
        time.sleep(delivery.delay)
        attempt += 1


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
    operation: Operation,
    attempt: int,
    enqueued_at: float | None,
    retry: Mapping[str, Any] | None,
    on_failure: str | None,
) -> dict[str, Any]:
    arguments: dict[str, Any] = {"operation": operation.to_dict(), "attempt": attempt, "enqueued_at": enqueued_at}
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
        with _savepoints():
            task.using(run_after=timezone.now() + timedelta(seconds=delay)).enqueue(**arguments)
    except Exception:
        logger.exception("journy: could not schedule the next attempt as a task; retrying in this worker")
        return False
    return True


@contextmanager
def _savepoints() -> Iterator[None]:
    """Wrap a task enqueue in a savepoint on every connection inside a transaction.

    A database task backend writes a row; if that write fails inside the caller's transaction, PostgreSQL would
    refuse every later statement of it. The savepoint confines the failure to the enqueue (nothing changes
    otherwise: the row still commits, or rolls back, with the caller's transaction).
    """
    db = importlib.import_module("django.db")
    with ExitStack() as stack:
        for connection in db.connections.all(initialized_only=True):
            if connection.in_atomic_block:
                stack.enter_context(db.transaction.atomic(using=connection.alias))
        yield


def _importable_path(function: Callable[..., Any]) -> str | None:
    """``module.qualname`` when that path imports back to ``function`` (so a worker can import it), else None."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname or "." in qualname:
        return None
    try:
        found = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{qualname}" if found is function else None


# -- the producer side -----------------------------------------------------------------------------------------


class DjangoTasksBackend(Backend):
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
        retry = self.options.get("RETRY")
        self.retry = retry if isinstance(retry, RetryPolicy) else RetryPolicy.from_options(retry)
        self._retry_arguments = dataclasses.asdict(self.retry) if retry is not None else None
        self.on_failure_path = self._failure_path(on_failure)
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

    def _failure_path(self, on_failure: FailureCallback | None) -> str | None:
        option = self.options.get("ON_FAILURE")
        if option is not None:
            if callable(option):
                path = _importable_path(option)
                if path is None:
                    raise ConfigurationError(
                        f"Queue option ON_FAILURE={option!r} must be importable by the workers: give the dotted "
                        "path of a module-level function, e.g. 'myapp.journy_hooks.delivery_failed'."
                    )
                return path
            if not isinstance(option, str):
                raise ConfigurationError(f"Queue option ON_FAILURE must be a dotted path, got {option!r}.")
            if not callable(import_object(option, "ON_FAILURE", self.name)):
                raise ConfigurationError(f"Queue option ON_FAILURE={option!r} is not callable.")
            return option
        if on_failure is None:
            return None
        path = _importable_path(on_failure)
        if path is None:
            logger.warning(
                "journy: on_failure=%r cannot be imported by the task workers, which deliver the operations, so "
                "it will not be called; set QUEUE['OPTIONS']['ON_FAILURE'] to the dotted path of a module-level "
                "function instead",
                on_failure,
            )
        return path

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

    def enqueue(self, operation: Operation) -> None:
        """Queue ``operation`` as a task (with an inline task backend, deliver it now); never raises.

        On a thread that runs an event loop (an async view), Django refuses database access and an inline task
        backend would block the loop, so the enqueue is handed to a helper thread; :meth:`flush` waits for it.
        """
        if self._closed:
            self._drop(operation, "the backend is closed", None)
            return
        if _event_loop_running():
            self._hand_off(operation)
            return
        self._enqueue_now(operation)

    def _enqueue_now(self, operation: Operation) -> None:
        try:
            arguments = _task_arguments(operation, 1, time.time(), self._retry_arguments, self.on_failure_path)
            with _savepoints():
                result = self.task.enqueue(**arguments)
        except Exception as error:  # never into the app
            self._drop(operation, "the task backend refused it", error)
            return
        self.stats.add("queued")
        self._count_inline_outcome(result)

    def _count_inline_outcome(self, result: Any) -> None:
        # A task backend that ran the task already (ImmediateBackend) tells the outcome at once.
        try:
            if not result.is_finished:
                return
            outcome = result.return_value if result.status == self.framework.successful else "failed"
        except Exception:
            return
        if outcome in ("sent", "failed"):
            self.stats.add(outcome)

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

    def _hand_off(self, operation: Operation) -> None:
        with self._handoff:
            if self._executor is None or self._executor_pid != os.getpid():  # none yet, or the parent's (a fork)
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journy-django-tasks")
                self._executor_pid = os.getpid()
                self._handoff_pending = 0
            self._handoff_pending += 1
            try:
                self._executor.submit(self._enqueue_handed_off, operation)
            except Exception as error:  # the interpreter is shutting down
                self._handoff_pending -= 1
                self._handoff.notify_all()
                self._drop(operation, "this process is exiting", error)

    def _enqueue_handed_off(self, operation: Operation) -> None:
        try:
            importlib.import_module("django.db").close_old_connections()  # this thread's connection may be stale
            self._enqueue_now(operation)
        except Exception as error:
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
