"""Turning Python values into what the journy.io API accepts, and refusing what it would not.

Every function here raises :class:`~journy_core.errors.InvalidArgumentError` naming the argument (and the key,
for mappings) and saying what is allowed, so that a mistake surfaces at the call site instead of as a 400 later,
or as an operation lost in the delivery thread. Two rules cover what JSON itself would let through (see
``docs/values.md``): a string with a lone surrogate (not text: UTF-8 cannot encode it) is refused, never repaired,
and so is an integer outside +/-(2**53 - 1), which journy.io and the browser, reading numbers as 64-bit floats,
would round (10**400 becomes Infinity).
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any, TypeAlias

from .errors import InvalidArgumentError

__all__ = [
    "MAX_SAFE_INTEGER",
    "MetadataValue",
    "PropertyValue",
    "domain_problem",
    "email_problem",
    "serialize_datetime",
    "serialize_domain",
    "serialize_email",
    "serialize_id",
    "serialize_metadata",
    "serialize_properties",
    "serialize_text",
    "utf8_text",
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

#: The largest integer sent as a number (JavaScript's ``Number.MAX_SAFE_INTEGER``): journy.io's API and the
#: browser's tracker read JSON numbers as 64-bit floats, which round larger integers and turn 10**400 into Infinity.
MAX_SAFE_INTEGER = 2**53 - 1


def utf8_text(value: str, argument: str) -> str:
    """``value`` when UTF-8 can encode it; raises naming ``argument`` when it holds a lone surrogate.

    A lone surrogate (``json.loads('"\\ud800"')``, ``os.fsdecode()`` of bytes that are not UTF-8) is not text:
    it cannot be sent, stored or shown, so it is refused here rather than lost in the delivery thread or breaking
    a page at render. Refused, not repaired: an ID or a name changed behind the caller's back would be worse.
    """
    if value.isascii():  # O(1) in CPython (a flag of the string): the usual case costs nothing
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            argument,
            f"contains a lone surrogate ({value[exc.start]!r} at index {exc.start}), which is not text and cannot "
            "be sent as UTF-8 (it comes from a broken \\u escape in JSON or from undecodable bytes); repair it, "
            "e.g. with value.encode('utf-8', 'replace').decode()",
        ) from None
    return value


def _safe_int(value: int, argument: str) -> int:
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    digits = len(str(abs(value))) if value.bit_length() < 10_000 else "over 3000"
    raise InvalidArgumentError(
        argument,
        f"an integer of {digits} digits is beyond +/-(2**53 - 1), the range journy.io and browsers read "
        "exactly (they read numbers as 64-bit floats); send it as a str, e.g. str(value)",
    )


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
    if type(value) is not str and isinstance(value, int) and value.bit_length() > 10_000:
        raise InvalidArgumentError(argument, "an integer of over 3000 digits is not an identifier")  # str() refuses
    text = str(value)
    if not text.isascii():
        text = utf8_text(text, argument)
    if not text.strip():
        raise InvalidArgumentError(argument, "must not be empty or whitespace; pass the object's stable ID")
    if "\x00" in text:  # no database stores it in a text column (the outbox's entity key): a bug upstream
        raise InvalidArgumentError(argument, "contains a NUL character ('\\x00'); pass the object's stable ID")
    return text


def serialize_text(value: object, argument: str, what: str = "a non-empty string") -> str:
    """A required string argument (email, domain, device ID, event name) that must not be blank."""
    if not isinstance(value, str):
        raise InvalidArgumentError(argument, f"expected {what}, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(argument, f"must not be empty or whitespace; expected {what}")
    return value if value.isascii() else utf8_text(value, argument)


# An ASCII DNS label: letters, digits and inner hyphens, 1 to 63 characters (RFC 1035, as relaxed by RFC 1123).
_ASCII_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Characters RFC 5322 allows in a local part only inside quotes; quoted local parts are not accepted.
_LOCAL_SPECIALS = frozenset('"(),:;<>[\\]@')
# The common case, ASCII, in one regular expression: what they accept the rules below accept too (dot-atom local
# parts are the printable ASCII without the specials, no leading, trailing or doubled dot; domains of ASCII labels),
# so only values they refuse, or that are not ASCII, take the slower path that also says what is wrong. Adapters
# check the email of every synced user: this keeps that to a regex match.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_FAST_EMAIL = re.compile(rf"{_ATEXT}{{1,64}}(?:\.{_ATEXT}+)*@((?:{_LABEL}\.)+{_LABEL})")


def _fast_domain_ok(domain: str) -> bool:
    return len(domain) <= 253 and not domain[domain.rfind(".") + 1 :].isdigit()


def _fast_email_ok(value: str) -> bool:
    found = _FAST_EMAIL.fullmatch(value)
    return found is not None and len(value) <= 254 and value.index("@") <= 64 and _fast_domain_ok(found.group(1))


def _is_label(label: str) -> bool:
    if label.isascii():
        return _ASCII_LABEL.fullmatch(label) is not None
    # An internationalized label as typed (münchen, пример): non-ASCII letters, marks and digits are allowed beside
    # the ASCII ones; journy.io and the mail system apply IDNA to it, as browsers do.
    return (
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(_ASCII_LABEL.fullmatch(ch) or ch == "-" or unicodedata.category(ch)[0] in "LMN" for ch in label)
    )


def _label_problem(label: str) -> str | None:
    if _is_label(label):
        return None
    if not label:
        return "an empty label (a leading, trailing or doubled dot)"
    return f"label {label!r} is not 1 to 63 letters, digits or inner hyphens"


def domain_problem(value: str) -> str | None:
    """What makes ``value`` not a domain name as journy.io's ``format: top-level-domain`` takes it, or None if it is.

    The rule, checkable by hand: a host name, not a URL; at most 253 characters; two or more labels separated by
    dots; each label 1 to 63 characters of letters, digits and hyphens, not starting or ending with a hyphen
    (non-ASCII letters allowed, for internationalized names; ``xn--`` punycode labels are plain ASCII); the last
    label not all digits (``10.0.0.1`` is an address). Case does not matter and is kept as given.

    >>> domain_problem("app.acme.com") is None, domain_problem("xn--mnchen-3ya.de") is None
    (True, True)
    >>> domain_problem("https://acme.com/")
    "a URL; pass the host name alone, e.g. 'acme.com'"
    """
    if _FAST_DOMAIN.fullmatch(value) is not None and _fast_domain_ok(value):
        return None
    if "://" in value or "/" in value:
        return "a URL; pass the host name alone, e.g. 'acme.com'"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return "whitespace or a control character"
    if len(value) > 253:
        return "longer than 253 characters"
    labels = value.split(".")
    if len(labels) < 2:
        return "no dot; expected a name such as 'acme.com'"
    for label in labels:
        problem = _label_problem(label)
        if problem is not None:
            return problem
    if labels[-1].isdigit():
        return "an IP address, not a name"
    return None


def email_problem(value: str) -> str | None:
    """What makes ``value`` not an email address as journy.io's ``format: email`` takes it, or None if it is.

    The rule, checkable by hand: ``local@domain``, split at the last ``@``; at most 254 characters; the local part
    1 to 64 characters without whitespace, control characters or any of ``"(),:;<>[\\]@``, not starting or ending
    with a dot and without two dots in a row (``+`` tags, ``'`` and non-ASCII letters are fine); the domain a
    domain name by :func:`domain_problem` (subdomains and internationalized names included). Case is kept.

    >>> email_problem("Ada.Lovelace+journy@Mail.Acme.co.uk") is None
    True
    >>> email_problem("ada @acme.com")
    'whitespace or a control character before the @'
    """
    if _fast_email_ok(value):
        return None
    local, at, domain = value.rpartition("@")
    if not at:
        return "no @; expected local@domain, e.g. 'ada@acme.com'"
    if len(value) > 254:
        return "longer than 254 characters"
    if not local:
        return "nothing before the @"
    if len(local) > 64:
        return "more than 64 characters before the @"
    if any(ch.isspace() or not ch.isprintable() for ch in local):
        return "whitespace or a control character before the @"
    if any(ch in _LOCAL_SPECIALS for ch in local):
        return 'one of "(),:;<>[\\]@ before the @ (quoted local parts are not accepted)'
    if local[0] == "." or local[-1] == "." or ".." in local:
        return "a dot at the start or end of the part before the @, or two dots in a row"
    problem = domain_problem(domain)
    return None if problem is None else f"after the @, {problem}"


def serialize_email(value: object, argument: str) -> str:
    """An email address as sent, checked by :func:`email_problem`; raises naming ``argument`` otherwise."""
    text = serialize_text(value, argument, "an email address")
    problem = email_problem(text)
    if problem is not None:
        raise InvalidArgumentError(argument, f"is not an email address: {problem}")
    return text


def serialize_domain(value: object, argument: str) -> str:
    """A domain name as sent, checked by :func:`domain_problem`; raises naming ``argument`` otherwise."""
    text = serialize_text(value, argument, "a domain name")
    problem = domain_problem(text)
    if problem is not None:
        raise InvalidArgumentError(argument, f"is not a domain name: {problem}")
    return text


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


def _not_finite(value: float, where: str, allowed: str) -> InvalidArgumentError:
    # None is a choice for a property (it deletes it), never for event metadata (leave the key out).
    instead = "or None" if allowed is _PROPERTY_TYPES else "or leave the key out"
    return InvalidArgumentError(where, f"{value!r} cannot be sent as JSON; use a finite number {instead}")


def _scalar(value: object, argument: str, key: str, allowed: str, naive_timezone: tzinfo) -> str | bool | int | float:
    """A scalar property or metadata value; raises naming ``argument[key]`` when it is not one."""
    kind = type(value)
    # The common cases first, by exact type: this runs for every value on the request path.
    if kind is str:
        text: str = value  # type: ignore[assignment]  # narrowed by the exact type above, which mypy does not read
        return text if text.isascii() else utf8_text(text, _where(argument, key))
    if kind is bool:
        return value  # type: ignore[return-value]
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        return _safe_int(value, _where(argument, key))  # type: ignore[arg-type]
    if isinstance(value, Enum):
        value = value.value
    # bool before int: bool is a subclass of int, and True must not become 1.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return utf8_text(value, _where(argument, key))
    if isinstance(value, int):
        return _safe_int(value, _where(argument, key))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_finite(value, _where(argument, key), allowed)
        return value
    if isinstance(value, Decimal):
        return _decimal(value, _where(argument, key))
    if isinstance(value, (datetime, date)):
        return serialize_datetime(value, _where(argument, key), naive_timezone=naive_timezone)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise InvalidArgumentError(_where(argument, key), f"{type(value).__name__} is not allowed; allowed: {allowed}")


def _decimal(value: Decimal, where: str) -> int | float:
    """A finite Decimal as an int when it is whole, else the nearest float; beyond what a float holds, refused."""
    if not value.is_finite():
        raise InvalidArgumentError(where, f"Decimal {value} cannot be sent as JSON; use a finite number")
    if value == value.to_integral_value():
        if value.adjusted() > 20:  # far beyond 2**53: int() of Decimal('1e999999') would build a huge number
            raise InvalidArgumentError(
                where, f"Decimal {value:.3e} is beyond +/-(2**53 - 1), the range journy.io reads exactly"
            )
        return _safe_int(int(value), where)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidArgumentError(where, f"Decimal {value:.3e} is beyond what a JSON number can carry")
    return as_float


def _where(argument: str, key: str) -> str:
    return f"{argument}[{key!r}]"


def _key(key: object, argument: str) -> str:
    if type(key) is str and key and key.isascii() and not key.isspace():
        return key
    if not isinstance(key, str):
        raise InvalidArgumentError(f"{argument}[{key!r}]", f"keys must be non-empty strings, got {type(key).__name__}")
    if not key.strip():
        raise InvalidArgumentError(f"{argument}[{key!r}]", "keys must be non-empty strings")
    return utf8_text(key, f"{argument}[{key!r}]")


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
    for index, item in enumerate(values):
        text = item.value if isinstance(item, Enum) else item
        if not isinstance(text, str) or not text:
            raise InvalidArgumentError(
                where,
                f"list items must be non-empty strings, got {text!r}; convert the items to strings first",
            )
        items.append(text if text.isascii() else utf8_text(text, f"{where}[{index}]"))
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
