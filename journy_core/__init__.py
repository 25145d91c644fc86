"""journy_core: the framework-free part of the journy.io integration.

The client (:class:`Client`), value serialization, identity verification (:func:`verification_hash`), the
tracking-snippet renderer, the delivery queue and a local API emulator (``python -m journy_core.emulator``).
It imports neither Django nor Flask.
"""

from ._version import __version__
from .client import Client, Result
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
from .journy import Journy
from .operations import Operation
from .snippet import SnippetEvent, Tracker, TrackerCache, disabled_comment, render_snippet, script_json
from .verification import verification_hash

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
