"""The exception hierarchy: everything this package raises derives from :class:`JournyError`.

- :class:`InvalidArgumentError` (also a ``ValueError``): a call was given bad arguments; raised before any I/O.
- :class:`ConfigurationError`: settings that cannot work (bad URL, unknown backend, missing extra).
- :class:`TransportError`: the request may not have reached journy.io (:class:`RequestTimeout`,
  :class:`ConnectionFailed`).
- :class:`APIError`: journy.io answered with an error status; one subclass per status class.

No message produced here ever contains the API key or a verification secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIError",
    "BadRequestError",
    "ConfigurationError",
    "ConnectionFailed",
    "ForbiddenError",
    "InvalidArgumentError",
    "JournyError",
    "NotFoundError",
    "RateLimitedError",
    "RequestTimeout",
    "ServerError",
    "TransportError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnprocessableError",
    "api_error_for_status",
]


class JournyError(Exception):
    """Base class of every error raised by the journy packages."""


class ConfigurationError(JournyError):
    """The configuration cannot work: the message says which setting to change and how."""


class InvalidArgumentError(JournyError, ValueError):
    """A call received an argument journy.io would refuse; raised at the call site, before any I/O.

    ``argument`` names the offending argument (``"properties['plan']"``, ``"user_id"``...).
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class TransportError(JournyError):
    """The request did not get an answer; whether journy.io applied it may be unknown.

    ``outcome_unknown`` is true when the request may have reached the server (a read timeout, a connection reset
    after sending): retrying such an operation may apply it twice.
    """

    outcome_unknown: bool = False

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message)


class RequestTimeout(TransportError):
    """The connection or the answer took longer than the configured timeout."""


class ConnectionFailed(TransportError):
    """The connection could not be made, or was reset."""


class APIError(JournyError):
    """journy.io answered with an error status.

    Attributes: ``status`` (HTTP status), ``request_id`` (``meta.requestId``, quote it to journy.io support),
    ``message`` (the server's message), ``errors`` (the server's ``errors`` object: ``fields`` and ``parameters``),
    ``rate_limit`` and ``calls_remaining`` (from the ``X-RateLimit-*`` headers, when sent).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        request_id: str | None = None,
        errors: Mapping[str, Any] | None = None,
        rate_limit: int | None = None,
        calls_remaining: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.request_id = request_id
        self.errors: dict[str, Any] = dict(errors or {})
        self.rate_limit = rate_limit
        self.calls_remaining = calls_remaining
        self.method = method
        self.path = path
        super().__init__(self._describe())

    @property
    def transient(self) -> bool:
        """Whether sending the same request again can succeed: 408, 429 and 5xx."""
        return self.status in (408, 429) or self.status >= 500

    @property
    def field_errors(self) -> dict[str, str]:
        """``errors.fields`` of a 400 answer: ``{"identification.userId": "reason"}``."""
        fields = self.errors.get("fields")
        return {str(k): str(v) for k, v in fields.items()} if isinstance(fields, Mapping) else {}

    @property
    def parameter_errors(self) -> dict[str, dict[str, str]]:
        """``errors.parameters`` of a 400 answer: ``{"query": {"domain": "reason"}}``."""
        params = self.errors.get("parameters")
        if not isinstance(params, Mapping):
            return {}
        return {
            str(where): {str(k): str(v) for k, v in found.items()}
            for where, found in params.items()
            if isinstance(found, Mapping)
        }

    def _describe(self) -> str:
        where = f" on {self.method} {self.path}" if self.method and self.path else ""
        text = f"journy.io answered {self.status}{where}: {self.message or 'no message'}"
        details = [f"{name}: {reason}" for name, reason in self.field_errors.items()]
        for where_name, found in self.parameter_errors.items():
            details.extend(f"{where_name} parameter {name}: {reason}" for name, reason in found.items())
        if details:
            text += " (" + "; ".join(details) + ")"
        if self.request_id:
            text += f" [request {self.request_id}]"
        return text


class BadRequestError(APIError):
    """400: the request failed validation; :attr:`field_errors` says which field and why."""


class UnauthorizedError(APIError):
    """401: the API key is missing or unknown, or it lacks the permission the call needs.

    ``permission`` is the missing permission when the server named it (``"TrackData"``...).
    """

    _PERMISSIONS = (
        "TrackData",
        "GetTrackingSnippet",
        "ReadEvents",
        "ReadProperties",
        "ReadSegments",
        "ReadUserProfile",
        "ReadAccountProfile",
    )

    @property
    def permission(self) -> str | None:
        for name in self._PERMISSIONS:
            if name.lower() in (self.message or "").lower():
                return name
        return None

    def _describe(self) -> str:
        text = super()._describe()
        permission = self.permission
        if permission:
            return text + f": give the API key the {permission} permission in journy.io's settings (Connections)"
        return text + ": check the API key (journy.io settings, Connections)"


class ForbiddenError(APIError):
    """403: the API key is disabled (keys that keep hitting the rate limit get blocked)."""


class NotFoundError(APIError):
    """404: for the tracking snippet, journy.io knows no website with that domain."""


class UnprocessableError(APIError):
    """422: journy.io understood the request but cannot process it."""


class RateLimitedError(APIError):
    """429: the key's rate limit (1800 calls a minute by default) is used up; slow down and retry later."""


class ServerError(APIError):
    """5xx: a fault on journy.io's side; transient."""


class UnexpectedResponseError(APIError):
    """An answer this client does not know how to read (an unknown status, or a success that is not JSON)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def api_error_for_status(status: int) -> type[APIError]:
    """The :class:`APIError` subclass for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 500 <= status <= 599:
        return ServerError
    return UnexpectedResponseError
