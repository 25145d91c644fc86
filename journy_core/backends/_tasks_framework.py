"""Finding Django's tasks framework, and what the ``django_tasks`` backend needs around it, without importing
Django until asked: the framework in use (``django.tasks`` on Django 6, else the ``django-tasks`` backport), a
savepoint around enqueues made inside a transaction, and the importable path of a failure callback."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from ..errors import ConfigurationError
from ._distributed import import_object

__all__ = [
    "TasksFramework",
    "event_loop_running",
    "failure_path",
    "importable_path",
    "savepoints",
    "tasks_framework",
]

logger = logging.getLogger("journy")

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


def event_loop_running() -> bool:
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


@contextmanager
def savepoints() -> Iterator[None]:
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


def importable_path(function: Callable[..., Any]) -> str | None:
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


def failure_path(option: Any, on_failure: Callable[..., Any] | None, backend: str) -> str | None:
    """The dotted path a worker imports ``ON_FAILURE`` by: the option (a path, or a module-level function), else
    ``Journy(on_failure=...)`` when it is importable (a warning says so when it is not)."""
    if option is not None:
        if callable(option):
            path = importable_path(option)
            if path is None:
                raise ConfigurationError(
                    f"Queue option ON_FAILURE={option!r} must be importable by the workers: give the dotted "
                    "path of a module-level function, e.g. 'myapp.journy_hooks.delivery_failed'."
                )
            return path
        if not isinstance(option, str):
            raise ConfigurationError(f"Queue option ON_FAILURE must be a dotted path, got {option!r}.")
        if not callable(import_object(option, "ON_FAILURE", backend)):
            raise ConfigurationError(f"Queue option ON_FAILURE={option!r} is not callable.")
        return option
    if on_failure is None:
        return None
    path = importable_path(on_failure)
    if path is None:
        logger.warning(
            "journy: on_failure=%r cannot be imported by the task workers, which deliver the operations, so "
            "it will not be called; set QUEUE['OPTIONS']['ON_FAILURE'] to the dotted path of a module-level "
            "function instead",
            on_failure,
        )
    return path
