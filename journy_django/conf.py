# mypy: disable-error-code="import-untyped"
"""The ``JOURNY`` settings dict: read when used (never at import, so ``override_settings`` works), validated once
per settings change, and the :class:`~journy_core.Journy` built from it.

Every key, with its default, is in :data:`DEFAULTS` and in ``docs/django.md``. A mistake raises
:class:`JournyConfigurationError`, which says what to set; the system checks (``checks.py``) report the same
problems at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.views.decorators.debug import sensitive_variables

from journy_core import Client, ConfigurationError, InvalidArgumentError, Journy, JournyError
from journy_core.importing import resolve_callable
from journy_core.secrets import redact
from journy_core.urls import resolve_base_url

__all__ = [
    "DEFAULTS",
    "JournyConfigurationError",
    "JournySettings",
    "base_url",
    "cached",
    "get_journy",
    "internal_networks",
    "journy_settings",
    "load_settings",
    "reset",
    "worker_client",
]

logger = logging.getLogger("journy")

#: Every key of ``settings.JOURNY`` and its default.
DEFAULTS: dict[str, Any] = {
    # The API
    "API_KEY": None,
    "API_URL": None,  # https://api.journy.io; the JOURNY_API_URL environment variable overrides it
    "TIMEOUT": None,  # journy_core's default (connect, read) timeout
    "QUEUE": None,  # {"BACKEND": "thread", "OPTIONS": {...}}
    "ON_FAILURE": None,  # callable(operation, error) or its dotted path
    "ENABLED": True,  # the kill switch: False sends nothing and renders no snippet
    # The snippet
    "VERIFICATION_SECRET": None,
    "TRACKER_ID": None,
    "TRACKER_DOMAIN": None,  # the tracking origin, e.g. "https://go.acme.com"
    "TRACKER_SCRIPT_PATH": "/tracker.js",
    "WEBSITE_DOMAIN": None,  # instead of TRACKER_*: fetch the snippet of this website from journy.io
    "SNIPPET_CACHE_SECONDS": 3600,
    "SEND_PAGEVIEW": True,
    # Users and accounts
    "SYNC_USERS": True,
    "USER_PROPERTIES": None,  # default: email, names, date_joined as registered_at (those the model has)
    "ACCOUNT_MODEL": None,  # "app_label.ModelName"
    "ACCOUNT_PROPERTIES": None,  # default: {"name": "name"} when the model has a name
    "ACCOUNT_DOMAIN_FIELD": None,  # an attribute holding the account's domain, sent with its ID
    "ACCOUNT_MEMBERS": None,  # a many-to-many field name, or callable(account) -> users
    "CURRENT_ACCOUNT": None,  # callable(request) -> account, its ID, or None
    "SHOULD_SYNC": None,  # callable(obj) -> bool: the per-object opt-out
    # Filters
    "LINK_DEVICES": True,
    "SKIP_STAFF": False,
    "SKIP_IMPERSONATED": True,
    "INTERNAL_IPS": (),  # IPs or networks ("10.0.0.0/8"), or True for settings.INTERNAL_IPS
    "SKIP_REQUEST": None,  # callable(request) -> bool
}


class JournyConfigurationError(ImproperlyConfigured, ConfigurationError):  # type: ignore[misc]
    """``settings.JOURNY`` is wrong; the message says what to set. Never swallowed: misconfiguration is loud."""


#: The keys whose values are secrets: held as :class:`journy_core.secrets.Secret`, whose ``repr`` is redacted.
SECRET_KEYS = ("API_KEY", "VERIFICATION_SECRET")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _redacted(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with the values of :data:`SECRET_KEYS` as secrets (still ``str``, redacted ``repr``)."""
    return {key: redact(value) if key in SECRET_KEYS else value for key, value in raw.items()}


@dataclass(frozen=True)
class JournySettings:
    """``settings.JOURNY`` merged with :data:`DEFAULTS`, with callables resolved and IPs parsed.

    ``API_KEY`` and ``VERIFICATION_SECRET`` read as ``str``, but are :class:`journy_core.secrets.Secret`: the
    ``repr`` of these settings, and of any variable holding one (in a traceback, Django's debug page, an error
    tracker), shows ``Secret('**********')``.
    """

    values: Mapping[str, Any]
    internal_networks: tuple[Network, ...]
    current_account: Callable[[Any], Any] | None
    skip_request: Callable[[Any], Any] | None
    should_sync: Callable[[Any], Any] | None
    on_failure: Callable[[Any, BaseException], None] | None

    def __post_init__(self) -> None:
        # Whoever built it, the secrets it holds are redacted (frozen: hence object.__setattr__).
        object.__setattr__(self, "values", _redacted(self.values))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def enabled(self) -> bool:
        return bool(self.values["ENABLED"])


def _callable_setting(values: Mapping[str, Any], key: str) -> Callable[..., Any] | None:
    value = values[key]
    if value is None:
        return None
    try:
        found: Callable[..., Any] = resolve_callable(value, f"JOURNY[{key!r}]")
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None
    return found


def internal_networks(value: Any) -> tuple[Network, ...]:
    if value is True:
        value = getattr(settings, "INTERNAL_IPS", ())
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise JournyConfigurationError(
            f"JOURNY['INTERNAL_IPS'] must be a list of IP addresses or networks (e.g. ['10.0.0.0/8']), or True "
            f"to reuse settings.INTERNAL_IPS; got {value!r}."
        )
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise JournyConfigurationError(
                f"JOURNY['INTERNAL_IPS'] holds {item!r}, which is not an IP address or network."
            ) from None
    return tuple(networks)


@sensitive_variables("raw")  # type: ignore[untyped-decorator]
def _journy_setting() -> object:
    """``settings.JOURNY`` with its secrets redacted, so that no frame of :func:`load_settings` holds them raw."""
    raw = getattr(settings, "JOURNY", None)
    return _redacted(raw) if isinstance(raw, Mapping) else raw


def load_settings() -> JournySettings:
    """Read and validate ``settings.JOURNY`` now (what :func:`journy_settings` caches)."""
    raw = _journy_setting()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise JournyConfigurationError(f"settings.JOURNY must be a dict, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise JournyConfigurationError(
            f"Unknown key(s) {', '.join(map(repr, unknown))} in settings.JOURNY; the keys are: "
            f"{', '.join(DEFAULTS)} (see docs/django.md)."
        )
    values = {**DEFAULTS, **raw}
    return JournySettings(
        values=values,
        internal_networks=internal_networks(values["INTERNAL_IPS"]),
        current_account=_callable_setting(values, "CURRENT_ACCOUNT"),
        skip_request=_callable_setting(values, "SKIP_REQUEST"),
        should_sync=_callable_setting(values, "SHOULD_SYNC"),
        on_failure=_callable_setting(values, "ON_FAILURE"),
    )


_lock = threading.RLock()
_cache: dict[str, Any] = {}


def journy_settings() -> JournySettings:
    """The validated settings, read on first use and again after any settings change."""
    found: JournySettings | None = _cache.get("settings")
    if found is None:
        with _lock:
            found = _cache.get("settings")
            if found is None:
                found = _cache["settings"] = load_settings()
    return found


def cached(key: str, build: Callable[[], Any]) -> Any:
    """A value derived from the settings (a resolved model, a property map), rebuilt after a settings change."""
    try:
        return _cache[key]
    except KeyError:
        pass
    with _lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def build_journy(config: JournySettings | None = None) -> Journy:
    """A new :class:`~journy_core.Journy` from the settings (the one the app uses is :func:`get_journy`)."""
    config = config or journy_settings()
    queue = config["QUEUE"]
    if not config.enabled:
        queue = {"BACKEND": "disabled"}
    kwargs: dict[str, Any] = {"base_url": config["API_URL"], "queue": queue, "on_failure": config.on_failure}
    if config["TIMEOUT"] is not None:
        kwargs["timeout"] = config["TIMEOUT"]
    try:
        return Journy(config["API_KEY"], **kwargs)
    except InvalidArgumentError as exc:
        where = "JOURNY['API_KEY']" if exc.argument == "api_key" else "settings.JOURNY"
        raise JournyConfigurationError(f"{where}: {exc}") from None
    except (ConfigurationError, ValueError) as exc:
        raise JournyConfigurationError(f"settings.JOURNY: {exc}") from None


def get_journy() -> Journy:
    """The app's :class:`~journy_core.Journy`, built from the settings on first use (and after a settings
    change). Raises :class:`JournyConfigurationError` when the settings are wrong."""
    journy: Journy | None = _cache.get("journy")
    if journy is None:
        with _lock:
            journy = _cache.get("journy")
            if journy is None:
                journy = _cache["journy"] = build_journy()
    return journy


def worker_client() -> Client:
    """The client a Celery, RQ or Django-tasks worker of this project delivers with (registered in ``ready()``)."""
    config = journy_settings()
    key = config["API_KEY"]
    if not isinstance(key, str) or not key.strip():
        raise JournyConfigurationError(
            "This worker has no journy.io API key: set JOURNY['API_KEY'] in the settings the worker runs with."
        )
    kwargs: dict[str, Any] = {"base_url": base_url(), "pool_size": 1}
    if config["TIMEOUT"] is not None:
        kwargs["timeout"] = config["TIMEOUT"]
    return Client(key, **kwargs)


def base_url() -> str:
    """The API base URL in use (``JOURNY_API_URL`` first), validated."""
    try:
        return resolve_base_url(journy_settings()["API_URL"], argument="JOURNY['API_URL']")
    except (ConfigurationError, ValueError) as exc:
        raise JournyConfigurationError(str(exc)) from None


def reset() -> None:
    """Forget the cached settings and the app's Journy (closing it after a short flush)."""
    with _lock:
        journy: Journy | None = _cache.pop("journy", None)
        _cache.clear()
    if journy is not None:
        try:
            journy.close(timeout=1.0)
        except JournyError:  # pragma: no cover - close never raises for delivery problems
            logger.debug("journy: error closing the previous Journy", exc_info=True)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("JOURNY", "INTERNAL_IPS", "AUTH_USER_MODEL"):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="journy_django.conf.reset")
