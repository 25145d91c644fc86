"""Delivery backends, chosen by name in settings: ``{"BACKEND": "thread", "OPTIONS": {...}}``.

``thread`` (the default), ``sync``, ``memory``, ``disabled``, ``celery``, ``rq``, ``django_tasks``, ``outbox``, or
the dotted path of a :class:`~journy_core.backends.base.Backend` subclass of your own.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from ..client import Client
from ..errors import ConfigurationError
from ..importing import import_string
from .base import Backend, FailureCallback, Stats, unknown_backend_options

__all__ = ["BACKENDS", "Backend", "Stats", "backend_class", "checked_queue", "load_backend"]

#: name -> (dotted path, the extra that installs its engine, the module that engine provides)
BACKENDS: dict[str, tuple[str, str | None, str | None]] = {
    "thread": ("journy_core.backends.thread.ThreadBackend", None, None),
    "sync": ("journy_core.backends.simple.SyncBackend", None, None),
    "memory": ("journy_core.backends.simple.MemoryBackend", None, None),
    "disabled": ("journy_core.backends.simple.DisabledBackend", None, None),
    "celery": ("journy_core.backends.celery.CeleryBackend", "celery", "celery"),
    "rq": ("journy_core.backends.rq.RQBackend", "rq", "rq"),
    "django_tasks": ("journy_core.backends.django_tasks.DjangoTasksBackend", "tasks", "django"),
    "outbox": ("journy_core.outbox.backend.OutboxBackend", None, None),
}


def backend_class(name: str, setting: str = "QUEUE['BACKEND']") -> type[Backend]:
    """The class for a backend name or dotted path; raises :class:`ConfigurationError` naming the extra to
    install when the engine is missing."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{setting} must be a backend name ({', '.join(BACKENDS)}) or a dotted path.")
    if name in BACKENDS:
        path, extra, engine = BACKENDS[name]
        if engine is not None and importlib.util.find_spec(engine) is None:
            raise ConfigurationError(
                f"{setting}={name!r} needs {engine!r}, which is not installed: pip install 'journy[{extra}]'."
            )
    elif "." not in name:
        close = difflib.get_close_matches(name, BACKENDS, n=1, cutoff=0.6)
        raise ConfigurationError(
            (f"{setting}={name!r}: did you mean {close[0]!r}? " if close else f"{setting}={name!r} is ")
            + f"neither a known backend ({', '.join(BACKENDS)}) nor a dotted path such as 'myapp.journy.MyBackend'."
        )
    else:
        path = name
    cls = import_string(path, setting)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"{setting}={name!r} is not a subclass of journy_core.backends.base.Backend.")
    return cls


def load_backend(
    queue: Mapping[str, Any] | None,
    *,
    client_factory: Callable[[], Client] | None,
    on_failure: FailureCallback | None = None,
    setting: str = "QUEUE",
) -> Backend:
    """Build the backend a ``QUEUE`` setting describes (``None`` means the ``thread`` default)."""
    cls, options = checked_queue(queue, setting)
    return cls(client_factory=client_factory, options=options, on_failure=on_failure)


def checked_queue(queue: Mapping[str, Any] | None, setting: str = "QUEUE") -> tuple[type[Backend], Mapping[str, Any]]:
    """The backend class and options a ``QUEUE`` setting names, checked without building anything (what the
    Django system check and :func:`load_backend` both ask); raises :class:`ConfigurationError` saying what to fix,
    with the closest name for a misspelt backend or option."""
    if not isinstance(queue, Mapping):
        if queue is not None:
            raise ConfigurationError(f"{setting} must be a dict such as {{'BACKEND': 'thread', 'OPTIONS': {{}}}}.")
        queue = {}
    unknown = set(queue) - {"BACKEND", "OPTIONS"}
    if unknown:
        raise ConfigurationError(f"Unknown {setting} keys {sorted(unknown)}; it takes BACKEND and OPTIONS.")
    options = queue.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{setting}['OPTIONS'] must be a dict, got {type(options).__name__}.")
    cls = backend_class(queue.get("BACKEND", "thread"), f"{setting}['BACKEND']")
    problem = unknown_backend_options(cls, options)
    if problem is not None:
        raise ConfigurationError(f"{setting}['OPTIONS']: {problem}")
    return cls, options
