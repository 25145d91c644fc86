"""How each configuration option's value is checked and converted (:data:`CONVERT`), for
:func:`journy_core.config.read_config`. Each converter takes the raw value and the option as the app spells it
(for its messages) and returns the value the :class:`~journy_core.config.Config` holds, or raises
:class:`~journy_core.ConfigurationError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .client import validate_timeout
from .errors import ConfigurationError, InvalidArgumentError
from .importing import import_string, resolve_callable
from .mapping import PropertyMap
from .secrets import Secret, checked_api_key
from .urls import redact_url

__all__ = ["CONVERT", "ENV_API_KEY", "api_key_source", "django_model", "flask_model"]

#: Read when the configuration sets no API key (as ``JOURNY_API_URL`` is for the base URL).
ENV_API_KEY = "JOURNY_API_KEY"


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False; got {value!r}.")
    return value


def _text(value: object, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a non-empty string or None; got {value!r}.")
    return value.strip()


def _callable(value: object, key: str) -> Any:
    return None if value is None else resolve_callable(value, key)


def _identity(value: object, key: str) -> Any:
    if value is None or (isinstance(value, str) and value and "." not in value):
        return value  # None, or an attribute name
    return resolve_callable(value, key)


def _secret(value: object, key: str) -> Secret | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be the website's identity-verification secret (a non-empty string).")
    return Secret(value)


def api_key_source(value: object, key: str) -> tuple[object, str]:
    """The API key the configuration gives and where it says it: ``value`` under ``key`` when set, else the
    ``JOURNY_API_KEY`` environment variable's, else ``(None, key)``. The one rule for the settings and the checks."""
    if value is None:
        from_environment = os.environ.get(ENV_API_KEY) or None
        if from_environment is not None:
            return from_environment, f"the {ENV_API_KEY} environment variable"
    return value, key


def _api_key(value: object, key: str) -> Secret | None:
    value, key = api_key_source(value, key)
    if value is None:
        return None
    try:
        # No local variable of this frame keeps the raw key past this call.
        return checked_api_key(value, key)
    except InvalidArgumentError as exc:
        raise ConfigurationError(str(exc)) from None


def _timeout(value: object, key: str) -> float | tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = tuple(value)
    try:
        return validate_timeout(value)
    except InvalidArgumentError:
        raise ConfigurationError(
            f"{key} must be seconds > 0 or a (connect, read) pair of them; got {value!r}."
        ) from None


def _queue(value: object, key: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        # A broker URL given instead of the dict may carry a password: shown only when it has none.
        shown = "a URL that may hold a password" if redact_url(value) is not value else repr(value)
        raise ConfigurationError(f"{key} must be a dict such as {{'BACKEND': 'thread'}}; got {shown}.")
    return dict(value)


def _seconds(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigurationError(f"{key} must be a number of seconds > 0; got {value!r}.")
    return value


def _properties(value: object, key: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and "." not in value:
        raise ConfigurationError(f"{key} must be a list, a dict, or a callable's dotted path; got {value!r}.")
    PropertyMap(value, key)  # the shape is checked here; the adapter builds the map against its model
    return value


def _members(value: object, key: str) -> Any:
    if value is None or (isinstance(value, str) and value.strip()) or callable(value):
        return value
    raise ConfigurationError(f"{key} must name the account's relation to its users, or be a callable; got {value!r}.")


def _deleted(value: object, key: str) -> Any:
    # A dotted string may be an attribute path or a callable's path: which one is decided against the model
    # (journy_core.soft_delete), when the adapter knows it.
    if value is None or callable(value):
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ConfigurationError(
        f"{key} must be an attribute name (such as 'deleted_at'), a callable(obj) -> bool, or its dotted path; "
        f"got {value!r}."
    )


FLAGS = (
    "ENABLED",
    "SEND_PAGEVIEW",
    "SNIPPET_PROPERTIES",
    "INJECT_SNIPPET",
    "SYNC_USERS",
    "LINK_DEVICES",
    "SKIP_STAFF",
    "SKIP_IMPERSONATED",
)
#: How each option's value is checked and converted (the flags are added below).
CONVERT: dict[str, Callable[[object, str], object]] = {
    "API_KEY": _api_key,
    "API_URL": lambda value, key: redact_url(_text(value, key)),
    "TIMEOUT": _timeout,
    "QUEUE": _queue,
    "ON_FAILURE": _callable,
    "VERIFICATION_SECRET": _secret,
    "TRACKER_ID": _text,
    "TRACKER_DOMAIN": _text,
    "TRACKER_SCRIPT_PATH": lambda value, key: _text(value, key) or "/tracker.js",
    "WEBSITE_DOMAIN": _text,
    "SNIPPET_CACHE_SECONDS": _seconds,
    "CSP_NONCE": _callable,
    "USER_ID": _identity,
    "USER_EMAIL": _text,
    "USER_PROPERTIES": _properties,
    "USER_DELETED": _deleted,
    "ACCOUNT_ID": _identity,
    "ACCOUNT_PROPERTIES": _properties,
    "ACCOUNT_DOMAIN_FIELD": _text,
    "ACCOUNT_MEMBERS": _members,
    "ACCOUNT_DELETED": _deleted,
    "CURRENT_USER": _callable,
    "CURRENT_ACCOUNT": _callable,
    "SHOULD_SYNC": _callable,
    "SKIP_REQUEST": _callable,
    **dict.fromkeys(FLAGS, _flag),
}


def flask_model(value: object, key: str) -> type | None:
    if value is None:
        return None
    found = import_string(value, key) if isinstance(value, str) else value
    if not isinstance(found, type):
        raise ConfigurationError(
            f"{key} must be a model class or its dotted path ('myapp.models.Team'); got {value!r}."
        )
    return found


def django_model(value: object, key: str) -> Any:
    """A model label, resolved against the app registry when first used (a system check reports a missing one); its
    shape is checked here, so that a value such as 123 is refused at start-up, not at every save."""
    if value is None or isinstance(value, type):
        return value
    if isinstance(value, str) and value.count(".") == 1 and all(part.strip() for part in value.split(".")):
        return value
    raise ConfigurationError(f"{key} must be a model label such as 'accounts.Organization'; got {value!r}.")
