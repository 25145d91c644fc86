"""Turning Python values into what the journy.io API accepts, and refusing what it would not.

Every function here raises :class:`~journy_core.errors.InvalidArgumentError` naming the argument (and the key,
for mappings) and saying what is allowed, so that a mistake surfaces at the call site instead of as a 400 later.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any, TypeAlias

from .errors import InvalidArgumentError

__all__ = [
    "MetadataValue",
    "PropertyValue",
    "serialize_datetime",
    "serialize_id",
    "serialize_metadata",
    "serialize_properties",
    "serialize_text",
]

#: A property value as sent: a string, boolean, number, ISO 8601 string, list of strings, or null (deletes).
PropertyValue: TypeAlias = str | bool | int | float | list[str] | None
#: An event metadata value as sent: no lists and no null.
MetadataValue: TypeAlias = str | bool | int | float

_PROPERTY_TYPES = (
    "str, bool, int, float, Decimal, datetime, date, UUID, Enum, a list/tuple/set of non-empty strings, "
    "or None (deletes the property)"
)
_METADATA_TYPES = "str, bool, int, float, Decimal, datetime, date, UUID or Enum"


def serialize_id(value: object, argument: str) -> str:
    """An identifier (user ID, account ID) as the string the API takes: str, int and UUID are accepted.

    >>> serialize_id(42, "user_id")
    '42'
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, uuid.UUID)):
        raise InvalidArgumentError(
            argument,
            f"expected a str, int or UUID identifier, got {type(value).__name__}; "
            "pass the object's primary key, e.g. user_id=user.pk",
        )
    text = str(value)
    if not text.strip():
        raise InvalidArgumentError(argument, "must not be empty or whitespace; pass the object's stable ID")
    return text


def serialize_text(value: object, argument: str, what: str = "a non-empty string") -> str:
    """A required string argument (email, domain, device ID, event name) that must not be blank."""
    if not isinstance(value, str):
        raise InvalidArgumentError(argument, f"expected {what}, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(argument, f"must not be empty or whitespace; expected {what}")
    return value


def serialize_datetime(value: object, argument: str, *, naive_timezone: tzinfo = timezone.utc) -> str:
    """A datetime (or date) as ISO 8601 in UTC with an explicit offset.

    A naive datetime is read in ``naive_timezone`` (UTC unless configured); a ``date`` is its midnight UTC;
    an ISO 8601 string is parsed and normalised the same way.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                argument, f"{value!r} is not an ISO 8601 datetime; pass a datetime object"
            ) from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=naive_timezone)
        return moment.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).isoformat()
    raise InvalidArgumentError(argument, f"expected a datetime, date or ISO 8601 string, got {type(value).__name__}")


def _scalar(value: object, argument: str, key: str, allowed: str, naive_timezone: tzinfo) -> str | bool | int | float:
    """A scalar property or metadata value; raises naming ``argument[key]`` when it is not one."""
    kind = type(value)
    # The common cases first, by exact type: this runs for every value on the request path.
    if kind is str or kind is bool or (kind is int):
        return value  # type: ignore[return-value]
    if isinstance(value, Enum):
        value = value.value
    # bool before int: bool is a subclass of int, and True must not become 1.
    if isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(
                _where(argument, key), f"{value!r} cannot be sent as JSON; use a finite number or None"
            )
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidArgumentError(
                _where(argument, key), f"Decimal {value} cannot be sent as JSON; use a finite number"
            )
        as_int = int(value)
        return as_int if value == as_int else float(value)
    if isinstance(value, (datetime, date)):
        return serialize_datetime(value, _where(argument, key), naive_timezone=naive_timezone)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise InvalidArgumentError(_where(argument, key), f"{type(value).__name__} is not allowed; allowed: {allowed}")


def _where(argument: str, key: str) -> str:
    return f"{argument}[{key!r}]"


def _key(key: object, argument: str) -> str:
    if type(key) is str and key and not key.isspace():
        return key
    if not isinstance(key, str):
        raise InvalidArgumentError(f"{argument}[{key!r}]", f"keys must be non-empty strings, got {type(key).__name__}")
    if not key.strip():
        raise InvalidArgumentError(f"{argument}[{key!r}]", "keys must be non-empty strings")
    return key


def _mapping(values: object, argument: str) -> Mapping[Any, Any]:
    if type(values) is dict or isinstance(values, Mapping):
        return values
    raise InvalidArgumentError(argument, f"expected a dict of name to value, got {type(values).__name__}")


def serialize_properties(
    properties: Mapping[str, object] | None,
    *,
    argument: str = "properties",
    naive_timezone: tzinfo = timezone.utc,
) -> dict[str, PropertyValue]:
    """User or account properties as the API takes them. ``None`` as a value deletes that property.

    >>> serialize_properties({"plan": "pro", "seats": 3, "tags": ("a", "b"), "trial_ends_at": None})
    {'plan': 'pro', 'seats': 3, 'tags': ['a', 'b'], 'trial_ends_at': None}
    """
    if properties is None:
        return {}
    result: dict[str, PropertyValue] = {}
    for raw_key, value in _mapping(properties, argument).items():
        key = _key(raw_key, argument)
        if value is None:
            result[key] = None
        elif isinstance(value, (list, tuple, set, frozenset)):
            result[key] = _string_list(value, _where(argument, key))
        else:
            result[key] = _scalar(value, argument, key, _PROPERTY_TYPES, naive_timezone)
    return result


def _string_list(values: list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any], where: str) -> list[str]:
    items: list[str] = []
    for item in values:
        text = item.value if isinstance(item, Enum) else item
        if not isinstance(text, str) or not text:
            raise InvalidArgumentError(
                where,
                f"list items must be non-empty strings, got {text!r}; convert the items to strings first",
            )
        items.append(text)
    # A set has no order; sort it so that the same value always sends the same JSON.
    return sorted(items) if isinstance(values, (set, frozenset)) else items


def serialize_metadata(
    metadata: Mapping[str, object] | None,
    *,
    argument: str = "metadata",
    naive_timezone: tzinfo = timezone.utc,
) -> dict[str, MetadataValue]:
    """Event metadata as the API takes it: like properties, but no lists and no ``None``."""
    if metadata is None:
        return {}
    result: dict[str, MetadataValue] = {}
    for raw_key, value in _mapping(metadata, argument).items():
        key = _key(raw_key, argument)
        if value is None:
            raise InvalidArgumentError(
                _where(argument, key), "event metadata cannot be None; leave the key out instead"
            )
        if isinstance(value, (list, tuple, set, frozenset)):
            raise InvalidArgumentError(
                _where(argument, key),
                f"event metadata cannot be a list; allowed: {_METADATA_TYPES} (join the items into a str)",
            )
        result[key] = _scalar(value, argument, key, _METADATA_TYPES, naive_timezone)
    return result
