"""Reading journy.io's answers: the :class:`Result` of a call that succeeded, the error of one that did not.

Every answer carries a request ID (``meta.requestId``) and the key's rate-limit figures (``X-RateLimit-*``
headers); a success may name the properties journy.io dropped (``rejected``), an error its message and errors.
A body that is not JSON is said so, never taken for an empty success.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .errors import UnexpectedResponseError, api_error_for_status
from .operations import Operation

__all__ = ["Result", "read_answer"]

logger = logging.getLogger("journy")


@dataclass(frozen=True)
class Result:
    """A successful answer.

    ``data`` is the answer's ``data`` member (``None`` for write calls), ``request_id`` its ``meta.requestId``,
    ``calls_remaining`` and ``rate_limit`` the ``X-RateLimit-Remaining`` / ``X-RateLimit-Limit`` headers,
    ``rejected`` the properties an upsert dropped (``{name: reason}``). A call that the client split into several
    (memberships of more than 100 users) returns the last answer, with every request ID in ``request_ids``.
    """

    status: int
    request_id: str | None = None
    calls_remaining: int | None = None
    rate_limit: int | None = None
    data: Any = None
    rejected: dict[str, str] = field(default_factory=dict)
    request_ids: tuple[str, ...] = ()

    @property
    def permissions(self) -> list[str]:
        """For :meth:`Client.get_api_key_details`: the key's permissions."""
        found = self.data.get("permissions") if isinstance(self.data, Mapping) else None
        return [str(p) for p in found] if isinstance(found, list) else []


def read_answer(operation: Operation, response: requests.Response, elapsed: float) -> Result:
    """The :class:`Result` of a 2xx answer to ``operation``; for any other status, the :class:`~journy_core.errors.
    APIError` subclass of that status (with journy.io's message, errors, request ID and rate-limit figures), raised.
    ``elapsed``: the seconds the call took, for the debug log line."""
    method, path = operation.method, operation.path
    body = _json_body(response)
    request_id = _request_id(body)
    remaining = _header_int(response.headers, "X-RateLimit-Remaining")
    limit = _header_int(response.headers, "X-RateLimit-Limit")
    status = response.status_code
    logger.debug(
        "journy %s %s -> %s in %.1f ms (request %s, %s calls remaining)",
        method,
        path,
        status,
        elapsed * 1000,
        request_id,
        remaining,
    )
    if 200 <= status < 300:
        if response.content and body is None:
            raise UnexpectedResponseError(
                status,
                "the answer is not JSON",
                rate_limit=limit,
                calls_remaining=remaining,
                method=method,
                path=path,
            )
        rejected = _rejected(body)
        if rejected:
            logger.warning(
                "journy.io rejected properties of %s: %s [request %s]",
                operation.describe(),
                ", ".join(f"{name} ({reason})" for name, reason in rejected.items()),
                request_id,
            )
        return Result(
            status=status,
            request_id=request_id,
            calls_remaining=remaining,
            rate_limit=limit,
            data=body.get("data") if isinstance(body, Mapping) else None,
            rejected=rejected,
            request_ids=(request_id,) if request_id else (),
        )
    errors = body.get("errors") if isinstance(body, Mapping) else None
    raise api_error_for_status(status)(
        status,
        _error_message(response, body),
        request_id=request_id,
        errors=errors if isinstance(errors, Mapping) else None,
        rate_limit=limit,
        calls_remaining=remaining,
        method=method,
        path=path,
    )


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _json_body(response: requests.Response) -> Any:
    """The answer's JSON, or None when it has no body or one that is not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _request_id(body: Any) -> str | None:
    meta = body.get("meta") if isinstance(body, Mapping) else None
    request_id = meta.get("requestId") if isinstance(meta, Mapping) else None
    return str(request_id) if request_id is not None else None


def _error_message(response: requests.Response, body: Any) -> str:
    """journy.io's message for an error answer, else the HTTP reason (saying when the body was not JSON)."""
    message = body.get("message") if isinstance(body, Mapping) else None
    if isinstance(message, str) and message:
        return message
    message = response.reason or "no message"
    if response.content and body is None:
        message += " (the answer is not JSON)"
    return message


def _rejected(body: Any) -> dict[str, str]:
    rejected = body.get("rejected") if isinstance(body, Mapping) else None
    if isinstance(rejected, Mapping):
        return {str(k): str(v) for k, v in rejected.items()}
    if isinstance(rejected, list):  # be liberal: a list of names
        return {str(name): "rejected" for name in rejected}
    return {}
