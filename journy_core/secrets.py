"""The API key and the verification secret as values that never show in an error report.

Error reports print the ``repr`` of every local variable of every frame of a traceback (Django's debug page and
its admins' e-mails, Sentry and other trackers that capture locals), and the ``repr`` of objects that hold a
value. journy keeps each secret in a :class:`Secret` (a ``str``) or :class:`SecretBytes` (a ``bytes``) from the
moment it receives one, so that those reports show ``Secret('**********')`` instead of the value; the functions
that take a secret rebind their argument to one first, before anything that can raise.

They are still ``str`` and ``bytes``: HTTP headers and HMAC use them unchanged, and ``str(secret)`` is the value
(a ``str`` must stay equal to itself), so code must still never log one with ``%s``. Only ``repr`` is redacted.

>>> key = Secret("my-api-key")
>>> key
Secret('**********')
>>> {"X-Api-Key": key}
{'X-Api-Key': Secret('**********')}
>>> key == "my-api-key"
True
"""

from __future__ import annotations

from typing import TypeVar, overload

from .errors import InvalidArgumentError

__all__ = ["MASK", "Secret", "SecretBytes", "api_key_problem", "checked_api_key", "redact"]

#: What a secret shows instead of its value.
MASK = "**********"

T = TypeVar("T")


class Secret(str):
    """A ``str`` whose ``repr`` is redacted: a traceback, a debugger or a container's ``repr`` never shows it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __sentry_repr__(self) -> str:
        # Sentry's event serializer calls this hook, when a type has it, for every value it records: without it
        # a str outside a frame's variables (in ``extra``, in a breadcrumb) would be sent as it is.
        return repr(self)


class SecretBytes(bytes):
    """A ``bytes`` whose ``repr`` is redacted (the verification secret as an HMAC key)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SecretBytes({MASK!r})"

    def __sentry_repr__(self) -> str:
        # As Secret's: Sentry would otherwise record bytes outside a frame's variables decoded, as they are.
        return repr(self)


@overload
def redact(value: str) -> Secret: ...


@overload
def redact(value: bytes) -> SecretBytes: ...


@overload
def redact(value: T) -> T: ...


def redact(value: object) -> object:
    """``value`` as a :class:`Secret` (a ``str``) or :class:`SecretBytes` (a ``bytes``); anything else unchanged."""
    if isinstance(value, str):
        return value if isinstance(value, Secret) else Secret(value)
    if isinstance(value, bytes):
        return value if isinstance(value, SecretBytes) else SecretBytes(value)
    return value


def api_key_problem(key: str) -> str | None:
    """Why ``key`` (already stripped) cannot be sent as the ``X-Api-Key`` header, or None; never quotes the key.

    A line break would be refused by the HTTP library in the delivery thread, with the key in its message; other
    control characters and non-ASCII ones (a typographic quote, a non-breaking space pasted with the key) too.
    An API key holds no space: one inside it is a copying mistake as well.
    """
    if not key:
        return "is empty or blank; copy the API key from journy.io's settings (Connections)"
    if "\n" in key or "\r" in key:
        return "contains a line break; copy the API key again (check the environment variable or file it comes from)"
    if any(char < " " or char == "\x7f" for char in key):
        return "contains a control character; copy the API key again"
    if not key.isascii():
        return (
            "contains a non-ASCII character (a typographic quote or a non-breaking space copied with it?); "
            "copy the API key again"
        )
    if " " in key:
        return "contains a space; copy the API key again"
    return None


def checked_api_key(value: object, argument: str = "api_key") -> Secret:
    """``value`` stripped and checked as an API key, as a :class:`Secret`.

    Raises :class:`~journy_core.InvalidArgumentError` naming ``argument`` and saying what is wrong, without the
    key: neither in the message nor in a local variable of this frame.
    """
    kind = type(value).__name__
    key = Secret(value.strip()) if isinstance(value, str) else None
    del value  # from here on, a traceback through this frame shows the key only redacted
    if key is None:
        raise InvalidArgumentError(argument, f"expected a str (the key from journy.io's settings), got {kind}")
    problem = api_key_problem(key)
    if problem is not None:
        raise InvalidArgumentError(argument, problem)
    return key
