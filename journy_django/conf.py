# mypy: disable-error-code="import-untyped"
"""The ``JOURNY`` settings dict: read when used (never at import, so ``override_settings`` works), validated once
per settings change, and the :class:`~journy_core.Journy` built from it.

Every key, with its default, is in :data:`DEFAULTS` and in ``docs/django.md``. A mistake raises
:class:`JournyConfigurationError`, which says what to set; the system checks (``checks.py``) report the same
problems at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.views.decorators.debug import sensitive_variables

from journy_core import Client, ConfigurationError, Journy, JournyError, assembly
from journy_core.config import DJANGO, DJANGO_SOURCE, OPTIONS, Config, read_config
from journy_core.secrets import redact

__all__ = [
    "DEFAULTS",
    "JournyConfigurationError",
    "JournySettings",
    "base_url",
    "cached",
    "get_journy",
    "journy_settings",
    "load_settings",
    "reset",
    "snippet_client",
    "worker_client",
]

logger = logging.getLogger("journy")

#: Every key of ``settings.JOURNY`` and its default (the schema is :data:`journy_core.config.OPTIONS`).
DEFAULTS: dict[str, Any] = {option.name: option.default for option in OPTIONS if option.only in (None, DJANGO)}

#: The checked settings: :class:`journy_core.config.Config` (``config["API_KEY"]`` or ``config.api_key``).
JournySettings = Config


class JournyConfigurationError(ImproperlyConfigured, ConfigurationError):  # type: ignore[misc]
    """``settings.JOURNY`` is wrong; the message says what to set. Never swallowed: misconfiguration is loud."""


#: The keys whose values are secrets: held as :class:`journy_core.secrets.Secret`, whose ``repr`` is redacted.
SECRET_KEYS = ("API_KEY", "VERIFICATION_SECRET")


def _redacted(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with the values of :data:`SECRET_KEYS` as secrets (still ``str``, redacted ``repr``)."""
    return {key: redact(value) if key in SECRET_KEYS else value for key, value in raw.items()}


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
        raise JournyConfigurationError(
            f"settings.JOURNY must be a dict such as {{'API_KEY': ...}}, got {type(raw).__name__}."
        )
    try:
        return read_config(raw, DJANGO_SOURCE, internal_ips=getattr(settings, "INTERNAL_IPS", ()))
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None


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
    try:
        return assembly.build_journy(with_app_store(config or journy_settings()))
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None


#: The outbox store the app's settings get when they name none: the app's databases, through the ORM.
APP_STORE = "journy_django.outbox_sync.app_store"


def with_app_store(config: JournySettings) -> JournySettings:
    """``config`` with ``QUEUE["OPTIONS"]["STORE"]`` filled in for the ``outbox`` backend when the settings name no
    store: :func:`journy_django.outbox_sync.app_store` (the app's database, through the ORM)."""
    queue = config.queue
    if not queue or queue.get("BACKEND") != "outbox" or (queue.get("OPTIONS") or {}).get("STORE") is not None:
        return config
    options = {**(queue.get("OPTIONS") or {}), "STORE": APP_STORE}
    return dataclasses.replace(config, queue={**queue, "OPTIONS": options})


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
    try:
        return assembly.worker_client(journy_settings())
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None


def snippet_client() -> Client:
    """The client that fetches the ``WEBSITE_DOMAIN`` snippet."""
    try:
        return assembly.snippet_client(journy_settings())
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None


def base_url() -> str:
    """The API base URL in use (``JOURNY_API_URL`` first), validated."""
    try:
        return assembly.api_base_url(journy_settings())
    except ConfigurationError as exc:
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
