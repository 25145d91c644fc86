"""journy_core: the framework-free part of the journy.io integration.

The client (:class:`Client`), value serialization, identity verification (:func:`verification_hash`), the
tracking-snippet renderer, the delivery queue and a local API emulator (``python -m journy_core.emulator``).
It imports neither Django nor Flask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    APIError,
    BadRequestError,
    ConfigurationError,
    ConnectionFailed,
    ForbiddenError,
    InvalidArgumentError,
    JournyError,
    NotFoundError,
    RateLimitedError,
    RequestTimeout,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnprocessableError,
)
from .operations import Operation
from .snippet import SnippetEvent, Tracker, TrackerCache, disabled_comment, render_snippet, script_json
from .verification import verification_hash

if TYPE_CHECKING:
    from .client import Client, Result
    from .journy import Journy

# The names whose modules import requests, loaded on first use (PEP 562): the emulator, the snippet renderer and
# the framework-free helpers import journy_core without paying for (or even having) an HTTP client.
_LAZY = {"Client": ".client", "Result": ".client", "Journy": ".journy"}

__all__ = [
    "APIError",
    "BadRequestError",
    "Client",
    "ConfigurationError",
    "ConnectionFailed",
    "ForbiddenError",
    "InvalidArgumentError",
    "Journy",
    "JournyError",
    "NotFoundError",
    "Operation",
    "RateLimitedError",
    "RequestTimeout",
    "Result",
    "ServerError",
    "SnippetEvent",
    "Tracker",
    "TrackerCache",
    "TransportError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnprocessableError",
    "__version__",
    "disabled_comment",
    "render_snippet",
    "script_json",
    "verification_hash",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
