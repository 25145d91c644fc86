"""The journy.io API contract: every endpoint, the permission it needs, how its body is checked and applied.

Each apply function runs with a checked body and under the service's lock, on an :class:`EndpointContext` that
holds what it may touch (the store, the websites, the current options), never the emulator itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import validation
from .options import Options, Website
from .page import render_snippet
from .state import DEFAULT_SEGMENTS, Store

__all__ = [
    "JSON",
    "ROUTES",
    "Endpoint",
    "EndpointContext",
    "Outcome",
    "check_body",
    "json_outcome",
    "parse_json",
    "refusal",
]

JSON = "application/json"
_EMPTY_PARAMETERS: dict[str, dict[str, str]] = {"header": {}, "query": {}, "path": {}}


@dataclass
class Outcome:
    """The answer to one API call as the HTTP layer sends it, or the fault it must act out."""

    status: int
    body: bytes
    content_type: str | None
    limit: int
    remaining: int
    delay: float = 0.0
    reset: bool = False
    headers: tuple[tuple[str, str], ...] = ()


def json_outcome(
    status: int, payload: Mapping[str, Any] | None, request_id: str, limit: int, remaining: int
) -> Outcome:
    """A JSON answer with journy.io's ``meta`` block (no body at all when ``payload`` is None)."""
    if payload is None:
        return Outcome(status, b"", None, limit, remaining)
    document = {"meta": {"requestId": request_id, "status": status}, **payload}
    return Outcome(status, json.dumps(document, separators=(",", ":")).encode(), JSON, limit, remaining)


@dataclass(frozen=True)
class EndpointContext:
    """What an endpoint may read and change while it applies a call."""

    store: Store
    options: Options
    websites: Mapping[str, Website]
    url: Callable[[], str]


_Apply = Callable[[EndpointContext, Any, Mapping[str, str], tuple[str, ...]], tuple[int, dict[str, Any] | None]]


@dataclass(frozen=True)
class Endpoint:
    """One method on one path of the API."""

    permission: str | None
    # None: the endpoint takes no body (a GET); otherwise the body is required and checked by this function.
    check: Callable[[dict[str, Any]], dict[str, str]] | None
    apply: _Apply
    deprecated: bool = False
    #: The body's top-level fields the spec defines; any other one is accepted, ignored and listed in the call log.
    fields: frozenset[str] = frozenset()

    def ignored(self, body: Any) -> list[str]:
        """The top-level fields of ``body`` this endpoint ignores (e.g. the old ``members`` on account upsert)."""
        if self.check is None or not isinstance(body, dict):
            return []
        return [name for name in body if name not in self.fields]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    """The decoded document and None, or None and why ``raw`` is not JSON (NaN and Infinity are not)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, str(exc)


def _validate(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    return 200, {"data": {"permissions": list(perms)}}


def _upsert(kind: str) -> _Apply:
    def apply(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        rejected_config = ctx.options.rejected_properties
        if kind == "users":
            rejected = ctx.store.upsert_user(body, rejected_config)
        else:
            rejected = ctx.store.upsert_account(body, rejected_config)
        answer: dict[str, Any] = {"message": f"{'User' if kind == 'users' else 'Account'} upserted"}
        if rejected:
            answer["rejected"] = rejected
        return 201, answer

    return apply


def _delete_user(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    ctx.store.delete_user(body)
    return 202, {"message": "User will be deleted"}


def _delete_account(
    ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]
) -> tuple[int, Any]:
    ctx.store.delete_account(body)
    return 202, {"message": "Account will be deleted"}


def _add_users(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    ctx.store.set_members(body, "active")
    return 201, {"message": "Users added to account"}


def _remove_users(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    ctx.store.set_members(body, "removed")
    # The spec gives this answer status 204 *and* a JSON body (meta, message), which HTTP cannot carry: a 204 has no
    # content, so Python's http.client and Node's http drop it, and both official SDKs (which read meta.requestId)
    # then report the applied call as a failure. 200 carries the spec's body; every client reads any 2xx as success.
    return 200, {"message": "Users removed from account"}


def _track(deprecated: bool) -> _Apply:
    def apply(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        ctx.store.track(body, deprecated=deprecated)
        return 201, {"message": "Event tracked"}

    return apply


def _link(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    ctx.store.link(body)
    return 201, {"message": "Device linked"}


def _snippet(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    domain = query.get("domain", "")
    if domain == "":
        return 400, {
            "message": "The query parameter domain is required",
            "errors": {"fields": {}, "parameters": {**_EMPTY_PARAMETERS, "query": {"domain": "is required"}}},
        }
    website = ctx.websites.get(domain.lower())
    if website is None:
        return 404, {"message": f"No website found for domain {domain}"}
    snippet = render_snippet(website.tracker_id, website.domain, website.tracking_domain or ctx.url())
    return 200, {"data": {"domain": website.domain, "snippet": snippet}}


def _list_events(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    return 200, {"data": ctx.store.list_events()}


def _list(kind: str, what: str) -> _Apply:
    def apply(ctx: EndpointContext, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        if what == "properties":
            return 200, {"data": ctx.store.list_properties(kind)}
        return 200, {"data": copy.deepcopy(DEFAULT_SEGMENTS[kind])}

    return apply


_UPSERT = frozenset({"identification", "properties"})
_DELETE = frozenset({"identification"})
_MEMBERS = frozenset({"account", "users"})
_TRACK = frozenset({"identification", "name", "metadata", "triggeredAt"})

#: Every endpoint of the API, by path and method.
ROUTES: dict[str, dict[str, Endpoint]] = {
    "/validate": {"GET": Endpoint(None, None, _validate)},
    "/users/upsert": {"POST": Endpoint("TrackData", validation.check_upsert_user, _upsert("users"), fields=_UPSERT)},
    "/users": {"DELETE": Endpoint("TrackData", validation.check_user_delete, _delete_user, fields=_DELETE)},
    "/accounts/upsert": {
        "POST": Endpoint("TrackData", validation.check_upsert_account, _upsert("accounts"), fields=_UPSERT)
    },
    "/accounts": {"DELETE": Endpoint("TrackData", validation.check_account_delete, _delete_account, fields=_DELETE)},
    "/accounts/users/add": {"POST": Endpoint("TrackData", validation.check_membership, _add_users, fields=_MEMBERS)},
    "/accounts/users/remove": {
        "POST": Endpoint("TrackData", validation.check_membership, _remove_users, fields=_MEMBERS)
    },
    "/track": {"POST": Endpoint("TrackData", validation.check_track, _track(deprecated=False), fields=_TRACK)},
    "/events": {
        "GET": Endpoint("ReadEvents", None, _list_events),
        "POST": Endpoint("TrackData", validation.check_track, _track(deprecated=True), deprecated=True, fields=_TRACK),
    },
    "/link": {
        "POST": Endpoint("TrackData", validation.check_link, _link, fields=frozenset({"deviceId", "identification"}))
    },
    "/tracking/snippet": {"GET": Endpoint("GetTrackingSnippet", None, _snippet)},
    "/properties/users": {"GET": Endpoint("ReadProperties", None, _list("users", "properties"))},
    "/properties/accounts": {"GET": Endpoint("ReadProperties", None, _list("accounts", "properties"))},
    "/segments/users": {"GET": Endpoint("ReadSegments", None, _list("users", "segments"))},
    "/segments/accounts": {"GET": Endpoint("ReadSegments", None, _list("accounts", "segments"))},
}


def _bad_request(fields: Mapping[str, str], message: str | None = None) -> dict[str, Any]:
    if message is None:
        first, reason = next(iter(fields.items()))
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        message = f"Validation failed: {first} {reason}{more}"
    return {
        "message": message,
        "errors": {"fields": dict(fields), "parameters": copy.deepcopy(_EMPTY_PARAMETERS)},
    }


def check_body(endpoint: Endpoint, body: Any, raw: bytes, body_error: str | None) -> dict[str, Any] | None:
    """journy.io's 400 answer when ``body`` does not suit ``endpoint``, or None when it can be applied."""
    if endpoint.check is None:
        return None
    if body_error is not None:
        return _bad_request({"body": f"is not valid JSON ({body_error})"}, "The body is not valid JSON")
    if not raw:
        return _bad_request({"body": "is required"}, "A JSON body is required")
    if not isinstance(body, dict):
        return _bad_request({"body": "must be a JSON object"})
    errors = endpoint.check(body)
    return _bad_request(errors) if errors else None


def refusal(method: str, path: str, endpoint: Endpoint | None, key: str | None) -> tuple[int, dict[str, Any]]:
    """Why a call reaches no endpoint (404, 405) or has no valid key (401)."""
    if endpoint is None and path in ROUTES:
        return 405, {"message": f"Method {method} is not allowed on {path}"}
    if endpoint is None:
        return 404, {"message": f"No such endpoint: {method} {path}"}
    if not key:
        return 401, {"message": "Missing API key: send it in the X-Api-Key header"}
    return 401, {"message": "The API key is not valid"}
