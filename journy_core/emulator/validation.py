"""Request-body checks of the emulated journy.io API.

Each checker takes the parsed JSON body and fills a ``{field: reason}`` map, the shape journy.io answers in
``errors.fields`` of a 400. They collect every problem rather than stopping at the first, so a client under test
sees the whole picture in one answer, as it does from the real API. Unknown fields are allowed on purpose:
journy.io ignores them, and an emulator stricter than the real API would hide client bugs of the opposite kind; the
call log lists them under ``ignored`` (see ``Endpoint.fields``). What is checked follows journy.io's OpenAPI spec
(``format: email`` and ``top-level-domain`` by the rules of :mod:`journy_core.values`; null only as a property
value) plus the contract's 100-user cap.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from ..values import domain_problem, email_problem

__all__ = [
    "MAX_USERS_PER_CALL",
    "check_account_delete",
    "check_link",
    "check_membership",
    "check_track",
    "check_upsert_account",
    "check_upsert_user",
    "check_user_delete",
    "is_iso_datetime",
]

#: The API's cap on users per add/remove call (the contract's table).
MAX_USERS_PER_CALL = 100

Errors = dict[str, str]

_PROPERTY_VALUE = "must be a string, number, boolean, null or an array of non-empty strings"
# No field of the spec is nullable except a property's value: null elsewhere is refused, not read as "absent".
_NOT_NULL = "must not be null; leave the field out instead"
# The spec's ``format: email`` and ``format: top-level-domain``, by the rules the client applies (journy_core.values).
_FORMATS: dict[str, Callable[[str], str | None]] = {"email": email_problem, "domain": domain_problem}
_FORMAT_NAMES = {"email": "an email address", "domain": "a domain name such as acme.com"}
_METADATA_VALUE = "must be a string, number or boolean"

# Full datetimes only: a bare date is not an instant, and journy.io's spec types triggeredAt as date-time.
_ISO_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?"
    r"(?:[Zz]|[+-](\d{2})(?::?(\d{2}))?)?"
)


def is_iso_datetime(value: str) -> bool:
    """True when ``value`` is an ISO-8601 datetime with real calendar and clock values.

    A regex plus a ``datetime`` construction rather than ``datetime.fromisoformat``, whose accepted forms differ
    between Python 3.10 and 3.11 (the emulator must judge the same way on every supported Python).
    """
    match = _ISO_DATETIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, off_h, off_m = match.groups()
    try:
        datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return False
    return (off_h is None or int(off_h) < 24) and (off_m is None or int(off_m) < 60)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_ident(body: dict[str, Any], key: str, prefix: str, names: tuple[str, str], errors: Errors) -> None:
    if key not in body or body[key] is None:
        errors[prefix] = "is required"
        return
    ident = body[key]
    if not isinstance(ident, dict):
        errors[prefix] = "must be an object"
        return
    present = invalid = False
    for name in names:
        if name not in ident:
            continue
        problem = _ident_problem(name, ident[name])
        if problem is None:
            present = True
        else:
            errors[f"{prefix}.{name}"] = problem
            invalid = True
    if not present and not invalid:
        errors[prefix] = f"must contain {names[0]} or {names[1]}"


def _ident_problem(name: str, value: object) -> str | None:
    """Why one identification field is refused: the spec types each as a non-nullable string, with a format."""
    if value is None:
        return _NOT_NULL
    if not isinstance(value, str):
        return "must be a string"
    if value == "":
        return "must not be empty"
    check = _FORMATS.get(name)
    problem = None if check is None else check(value)
    return None if problem is None else f"must be {_FORMAT_NAMES[name]} ({problem})"


def _check_user_ident(body: dict[str, Any], key: str, prefix: str, errors: Errors) -> None:
    _check_ident(body, key, prefix, ("userId", "email"), errors)


def _check_account_ident(body: dict[str, Any], key: str, prefix: str, errors: Errors) -> None:
    _check_ident(body, key, prefix, ("accountId", "domain"), errors)


def _valid_property(value: object) -> bool:
    if value is None or isinstance(value, str | bool) or _is_number(value):
        return True
    return isinstance(value, list) and all(isinstance(item, str) and item != "" for item in value)


def _check_map(body: dict[str, Any], key: str, valid: Callable[[object], bool], reason: str, errors: Errors) -> None:
    if key not in body:
        return
    values = body[key]
    if values is None:
        errors[key] = _NOT_NULL
        return
    if not isinstance(values, dict):
        errors[key] = "must be an object"
        return
    # Any name is allowed, "" included: the spec's additionalProperties puts no rule on names.
    for name, value in values.items():
        if not valid(value):
            errors[f"{key}.{name}"] = reason


def check_upsert_user(body: dict[str, Any]) -> Errors:
    """Checks ``POST /users/upsert``."""
    errors: Errors = {}
    _check_user_ident(body, "identification", "identification", errors)
    _check_map(body, "properties", _valid_property, _PROPERTY_VALUE, errors)
    return errors


def check_upsert_account(body: dict[str, Any]) -> Errors:
    """Checks ``POST /accounts/upsert``."""
    errors: Errors = {}
    _check_account_ident(body, "identification", "identification", errors)
    _check_map(body, "properties", _valid_property, _PROPERTY_VALUE, errors)
    return errors


def check_user_delete(body: dict[str, Any]) -> Errors:
    """Checks ``DELETE /users``."""
    errors: Errors = {}
    _check_user_ident(body, "identification", "identification", errors)
    return errors


def check_account_delete(body: dict[str, Any]) -> Errors:
    """Checks ``DELETE /accounts``."""
    errors: Errors = {}
    _check_account_ident(body, "identification", "identification", errors)
    return errors


def check_membership(body: dict[str, Any]) -> Errors:
    """Checks ``POST /accounts/users/add`` and ``/remove``: one account, 1 to 100 users."""
    errors: Errors = {}
    _check_account_ident(body, "account", "account", errors)
    users = body.get("users")
    if users is None:
        errors["users"] = "is required"
    elif not isinstance(users, list):
        errors["users"] = "must be an array"
    elif not users:
        errors["users"] = f"must contain between 1 and {MAX_USERS_PER_CALL} users"
    elif len(users) > MAX_USERS_PER_CALL:
        errors["users"] = f"must contain at most {MAX_USERS_PER_CALL} users (got {len(users)})"
    else:
        for index, user in enumerate(users):
            if not isinstance(user, dict):
                errors[f"users[{index}]"] = "must be an object"
            else:
                _check_user_ident(user, "identification", f"users[{index}].identification", errors)
    return errors


def _check_event_identification(body: dict[str, Any], errors: Errors) -> None:
    ident = body.get("identification")
    if ident is None:
        errors["identification"] = "is required"
    elif not isinstance(ident, dict):
        errors["identification"] = "must be an object"
    elif "user" not in ident and "account" not in ident:
        errors["identification"] = "must contain user or account"
    else:
        for key, names in (("user", ("userId", "email")), ("account", ("accountId", "domain"))):
            if key in ident and ident[key] is None:
                errors[f"identification.{key}"] = _NOT_NULL
            elif key in ident:
                _check_ident(ident, key, f"identification.{key}", names, errors)


def check_track(body: dict[str, Any]) -> Errors:
    """Checks ``POST /track`` (and the deprecated ``POST /events``)."""
    errors: Errors = {}
    _check_event_identification(body, errors)
    name = body.get("name")
    if name is None:
        errors["name"] = "is required"
    elif not isinstance(name, str):
        errors["name"] = "must be a string"
    elif name == "":
        errors["name"] = "must not be empty"
    if "triggeredAt" in body:
        triggered_at = body["triggeredAt"]
        if triggered_at is None:
            errors["triggeredAt"] = _NOT_NULL
        elif not (isinstance(triggered_at, str) and is_iso_datetime(triggered_at)):
            errors["triggeredAt"] = "must be an ISO-8601 datetime"
    _check_map(body, "metadata", lambda v: isinstance(v, str | bool) or _is_number(v), _METADATA_VALUE, errors)
    return errors


def check_link(body: dict[str, Any]) -> Errors:
    """Checks ``POST /link``."""
    errors: Errors = {}
    device_id = body.get("deviceId")
    if device_id is None:
        errors["deviceId"] = "is required"
    elif not isinstance(device_id, str):
        errors["deviceId"] = "must be a string"
    elif device_id == "":
        errors["deviceId"] = "must not be empty"
    _check_user_ident(body, "identification", "identification", errors)
    return errors
