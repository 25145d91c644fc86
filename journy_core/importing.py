"""Dotted paths in settings (``"myapp.journy.current_account"``), resolved with errors that name the setting."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigurationError

__all__ = ["import_string", "resolve_callable"]


def import_string(path: str, setting: str) -> Any:
    """The object at ``path``; raises :class:`ConfigurationError` naming ``setting`` when it cannot be found."""
    if not isinstance(path, str) or "." not in path:
        raise ConfigurationError(f"{setting}={path!r} must be a dotted path such as 'myapp.journy.func'.")
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{setting}={path!r}: cannot import {module_name!r} ({exc}).") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{setting}={path!r}: {module_name!r} has no attribute {attribute!r}.") from None


def resolve_callable(value: Any, setting: str) -> Any:
    """A callable given directly or as a dotted path; raises naming ``setting`` when it is neither."""
    found = import_string(value, setting) if isinstance(value, str) else value
    if not callable(found):
        raise ConfigurationError(f"{setting}={value!r} must be a callable or the dotted path of one.")
    return found
