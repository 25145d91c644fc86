"""Operations: plain, JSON-serializable descriptions of one API call.

An :class:`Operation` is what crosses the delivery queue: its ``kind`` (the client method's name) and its
``payload`` (the request body, or the query for GET calls), already validated, IDs already strings and datetimes
already ISO 8601. It never carries a model instance, a request or a secret, so it can be pickled, sent through
Celery or RQ, stored, retried, coalesced and logged.

The builders below (:func:`upsert_user`, :func:`track`...) are the single place where arguments are checked;
:class:`~journy_core.Client` and :class:`~journy_core.Journy` both call them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import timezone, tzinfo
from typing import Any

from .errors import InvalidArgumentError
from .values import (
    serialize_datetime,
    serialize_domain,
    serialize_email,
    serialize_id,
    serialize_metadata,
    serialize_properties,
    serialize_text,
)

__all__ = [
    "MAX_USERS_PER_MEMBERSHIP_CALL",
    "ROUTES",
    "Operation",
    "account_identification",
    "add_users_to_account",
    "delete_account",
    "delete_user",
    "link",
    "remove_users_from_account",
    "track",
    "upsert_account",
    "upsert_user",
    "user_identification",
]

#: journy.io accepts at most this many users in one add or remove call.
MAX_USERS_PER_MEMBERSHIP_CALL = 100

#: kind -> (HTTP method, path). GET kinds send their payload as the query string.
ROUTES: dict[str, tuple[str, str]] = {
    "get_api_key_details": ("GET", "/validate"),
    "upsert_user": ("POST", "/users/upsert"),
    "delete_user": ("DELETE", "/users"),
    "upsert_account": ("POST", "/accounts/upsert"),
    "delete_account": ("DELETE", "/accounts"),
    "add_users_to_account": ("POST", "/accounts/users/add"),
    "remove_users_from_account": ("POST", "/accounts/users/remove"),
    "link": ("POST", "/link"),
    "track": ("POST", "/track"),
    "get_tracking_snippet": ("GET", "/tracking/snippet"),
    "list_events": ("GET", "/events"),
    "list_user_properties": ("GET", "/properties/users"),
    "list_account_properties": ("GET", "/properties/accounts"),
    "list_user_segments": ("GET", "/segments/users"),
    "list_account_segments": ("GET", "/segments/accounts"),
}

#: The kinds that change data in journy.io; the queue delivers only these.
WRITE_KINDS = frozenset(
    {
        "upsert_user",
        "delete_user",
        "upsert_account",
        "delete_account",
        "add_users_to_account",
        "remove_users_from_account",
        "link",
        "track",
    }
)


class Operation:
    """One API call, ready to send: ``kind`` names the endpoint, ``payload`` is its JSON body or query.

    Treat it as immutable (coalescing builds a new one instead of changing a queued one). A plain slotted class
    rather than a frozen dataclass: one is built on every call on the request path, and this is 3x cheaper.
    """

    __slots__ = ("kind", "payload")

    def __init__(self, kind: str, payload: Mapping[str, Any] | None = None) -> None:
        if kind not in ROUTES:
            raise InvalidArgumentError("kind", f"unknown operation {kind!r}; known: {', '.join(ROUTES)}")
        self.kind = kind
        self.payload: Mapping[str, Any] = payload if payload is not None else {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Operation):
            return NotImplemented
        return self.kind == other.kind and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]  # the payload is a dict

    @property
    def method(self) -> str:
        return ROUTES[self.kind][0]

    @property
    def path(self) -> str:
        return ROUTES[self.kind][1]

    def to_dict(self) -> dict[str, Any]:
        """The operation as plain JSON data (what queue backends store)."""
        return {"kind": self.kind, "payload": dict(self.payload)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """The inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "kind" not in data:
            raise InvalidArgumentError("operation", "expected a mapping with 'kind' and 'payload'")
        payload = data.get("payload") or {}
        if not isinstance(payload, Mapping):
            raise InvalidArgumentError("operation.payload", "expected a mapping")
        return cls(str(data["kind"]), dict(payload))

    def describe(self) -> str:
        """A short, log-safe description: the kind and the identifiers, never property values."""
        parts = [self.kind]
        payload = self.payload
        ident = payload.get("identification")
        if isinstance(ident, Mapping):
            for scope in ("user", "account"):
                if isinstance(ident.get(scope), Mapping):
                    parts.extend(_ident_words(ident[scope]))
            parts.extend(_ident_words(ident))
        if isinstance(payload.get("account"), Mapping):
            parts.extend(_ident_words(payload["account"]))
        if isinstance(payload.get("users"), list):
            parts.append(f"users={len(payload['users'])}")
        if "name" in payload:
            parts.append(f"name={payload['name']}")
        if "deviceId" in payload:
            parts.append(f"deviceId={payload['deviceId']}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"<Operation {self.describe()}>"


def _ident_words(ident: Mapping[str, Any]) -> Iterator[str]:
    for key in ("userId", "email", "accountId", "domain"):
        if key in ident:
            yield f"{key}={ident[key]}"


def _reject_unknown(extra: Mapping[str, Any], method: str, allowed: str) -> None:
    # Methods take **unknown so that a typo (user=, accountId=) gets this message instead of Python's terse one.
    if extra:
        names = ", ".join(sorted(extra))
        raise InvalidArgumentError(names, f"{method}() got unknown keyword {names}; it takes {allowed}")


def user_identification(user_id: object = None, email: object = None, *, prefix: str = "") -> dict[str, str]:
    """``{"userId": ..., "email": ...}``, at least one; raises when neither is given."""
    ident: dict[str, str] = {}
    if user_id is not None:
        ident["userId"] = serialize_id(user_id, f"{prefix}user_id")
    if email is not None:
        ident["email"] = serialize_email(email, f"{prefix}email")
    if not ident:
        raise InvalidArgumentError(
            f"{prefix}user_id", "identify the user with user_id= (its stable database ID), email=, or both"
        )
    return ident


def account_identification(account_id: object = None, domain: object = None, *, prefix: str = "") -> dict[str, str]:
    """``{"accountId": ..., "domain": ...}``, at least one; raises when neither is given."""
    ident: dict[str, str] = {}
    if account_id is not None:
        ident["accountId"] = serialize_id(account_id, f"{prefix}account_id")
    if domain is not None:
        ident["domain"] = serialize_domain(domain, f"{prefix}domain")
    if not ident:
        raise InvalidArgumentError(
            f"{prefix}account_id",
            "identify the account with account_id= (its stable database ID), domain=, or both",
        )
    return ident


def upsert_user(
    *,
    user_id: object = None,
    email: object = None,
    properties: Mapping[str, object] | None = None,
    naive_timezone: tzinfo = timezone.utc,
    **unknown: Any,
) -> Operation:
    _reject_unknown(unknown, "upsert_user", "user_id=, email=, properties=")
    payload: dict[str, Any] = {"identification": user_identification(user_id, email)}
    props = serialize_properties(properties, naive_timezone=naive_timezone)
    if props:
        payload["properties"] = props
    return Operation("upsert_user", payload)


def delete_user(*, user_id: object = None, email: object = None, **unknown: Any) -> Operation:
    _reject_unknown(unknown, "delete_user", "user_id=, email=")
    return Operation("delete_user", {"identification": user_identification(user_id, email)})


def upsert_account(
    *,
    account_id: object = None,
    domain: object = None,
    properties: Mapping[str, object] | None = None,
    naive_timezone: tzinfo = timezone.utc,
    **unknown: Any,
) -> Operation:
    _reject_unknown(unknown, "upsert_account", "account_id=, domain=, properties=")
    payload: dict[str, Any] = {"identification": account_identification(account_id, domain)}
    props = serialize_properties(properties, naive_timezone=naive_timezone)
    if props:
        payload["properties"] = props
    return Operation("upsert_account", payload)


def delete_account(*, account_id: object = None, domain: object = None, **unknown: Any) -> Operation:
    _reject_unknown(unknown, "delete_account", "account_id=, domain=")
    return Operation("delete_account", {"identification": account_identification(account_id, domain)})


def _member_identifications(users: object) -> list[dict[str, Any]]:
    if isinstance(users, (str, bytes, Mapping)) or not isinstance(users, Iterable):
        raise InvalidArgumentError(
            "users", "expected a list of user IDs or of {'user_id': ..., 'email': ...} dicts, e.g. users=['1', '2']"
        )
    members: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for index, user in enumerate(users):
        prefix = f"users[{index}]."
        if isinstance(user, Mapping):
            extra = set(user) - {"user_id", "email"}
            if extra:
                raise InvalidArgumentError(f"users[{index}]", f"unknown key {sorted(extra)}; use user_id and email")
            ident = user_identification(user.get("user_id"), user.get("email"), prefix=prefix)
        else:
            ident = user_identification(user, prefix=prefix)
        marker = tuple(sorted(ident.items()))
        if marker not in seen:  # the same user twice in one call is one membership
            seen.add(marker)
            members.append({"identification": ident})
    if not members:
        raise InvalidArgumentError("users", "must name at least one user")
    return members


def _membership(kind: str, account_id: object, domain: object, users: object, unknown: Mapping[str, Any]) -> Operation:
    _reject_unknown(unknown, kind, "account_id=, domain=, users=")
    return Operation(
        kind,
        {
            "account": account_identification(account_id, domain),
            "users": _member_identifications(users),
        },
    )


def add_users_to_account(
    *, account_id: object = None, domain: object = None, users: object = None, **unknown: Any
) -> Operation:
    """One operation for any number of users; :func:`split_memberships` cuts it into calls of at most 100."""
    return _membership("add_users_to_account", account_id, domain, users, unknown)


def remove_users_from_account(
    *, account_id: object = None, domain: object = None, users: object = None, **unknown: Any
) -> Operation:
    return _membership("remove_users_from_account", account_id, domain, users, unknown)


def split_memberships(operation: Operation) -> list[Operation]:
    """A membership operation cut into calls of at most :data:`MAX_USERS_PER_MEMBERSHIP_CALL` users."""
    users = operation.payload.get("users")
    if operation.kind not in ("add_users_to_account", "remove_users_from_account") or not isinstance(users, list):
        return [operation]
    if len(users) <= MAX_USERS_PER_MEMBERSHIP_CALL:
        return [operation]
    step = MAX_USERS_PER_MEMBERSHIP_CALL
    return [
        Operation(operation.kind, {**operation.payload, "users": users[start : start + step]})
        for start in range(0, len(users), step)
    ]


def link(*, device_id: object = None, user_id: object = None, email: object = None, **unknown: Any) -> Operation:
    _reject_unknown(unknown, "link", "device_id=, user_id=, email=")
    if device_id is None:
        raise InvalidArgumentError("device_id", "is required: pass the value of the visitor's __journey cookie")
    return Operation(
        "link",
        {
            "deviceId": serialize_text(device_id, "device_id", "the __journey cookie's value"),
            "identification": user_identification(user_id, email),
        },
    )


def track(
    name: object = None,
    *,
    user_id: object = None,
    email: object = None,
    account_id: object = None,
    domain: object = None,
    metadata: Mapping[str, object] | None = None,
    triggered_at: object = None,
    naive_timezone: tzinfo = timezone.utc,
    **unknown: Any,
) -> Operation:
    _reject_unknown(unknown, "track", "name, user_id=, email=, account_id=, domain=, metadata=, triggered_at=")
    event_name = serialize_text(name, "name", "an event name in the past tense, e.g. 'created_invoice'")
    identification: dict[str, Any] = {}
    if user_id is not None or email is not None:
        identification["user"] = user_identification(user_id, email)
    if account_id is not None or domain is not None:
        identification["account"] = account_identification(account_id, domain)
    if not identification:
        raise InvalidArgumentError(
            "user_id",
            "an event needs a user (user_id= or email=), an account (account_id= or domain=), or both",
        )
    payload: dict[str, Any] = {"identification": identification, "name": event_name}
    if triggered_at is not None:
        payload["triggeredAt"] = serialize_datetime(triggered_at, "triggered_at", naive_timezone=naive_timezone)
    meta = serialize_metadata(metadata, naive_timezone=naive_timezone)
    if meta:
        payload["metadata"] = meta
    return Operation("track", payload)


def get_tracking_snippet(domain: object = None, **unknown: Any) -> Operation:
    _reject_unknown(unknown, "get_tracking_snippet", "domain=")
    if domain is None:
        raise InvalidArgumentError("domain", "is required: the website's domain as registered in journy.io")
    return Operation("get_tracking_snippet", {"domain": serialize_text(domain, "domain", "a domain name")})
