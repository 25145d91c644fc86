"""The ``JOURNY_*`` configuration keys, read through the one schema in :mod:`journy_core.config`.

Every option is :data:`journy_core.config.OPTIONS` with a ``JOURNY_`` prefix (``docs/settings.md`` lists them);
:data:`DEFAULTS` are those Flask has. :func:`read_settings` runs in ``init_app`` and raises
:class:`~journy_core.ConfigurationError` naming the key to set (or fix) for anything it can check without a
request: missing API key for a backend that delivers from this process, a half-configured tracker, a model or
callable given as a dotted path that cannot be imported, a property mapping of the wrong shape or naming an
attribute the mapped model lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from journy_core import ConfigurationError
from journy_core.config import FLASK, FLASK_SOURCE, OPTIONS, Config, read_config
from journy_core.importing import resolve_callable
from journy_core.mapping import (
    DEFAULT_ACCOUNT_PROPERTIES,
    DEFAULT_USER_PROPERTIES,
    PropertyMap,
    check_named_attribute,
    property_map,
)
from journy_core.secrets import Secret
from journy_core.urls import redact_url

__all__ = ["DEFAULTS", "Settings", "read_settings"]

#: Every configuration key Flask has, with its default (``init_app`` applies them with ``app.config.setdefault``).
DEFAULTS: dict[str, Any] = {
    f"JOURNY_{option.name}": option.default for option in OPTIONS if option.only in (None, FLASK)
}

#: How ``JOURNY_USER_ID`` / ``JOURNY_ACCOUNT_ID`` read an ID: an attribute name or a callable (None: the default).
Identity = Callable[[Any], object] | str | None

#: The keys whose values are secrets: :func:`read_settings` turns them into :class:`journy_core.secrets.Secret`.
SECRET_KEYS = ("JOURNY_API_KEY", "JOURNY_VERIFICATION_SECRET")

#: The checked configuration of one app (``app.extensions["journy"].settings``): a
#: :class:`journy_core.config.Config` whose models are classes and whose property maps are built against them.
Settings = Config


def _redact_config(config: Mapping[str, Any]) -> None:
    """Replace the secrets of ``app.config`` by equal :class:`~journy_core.secrets.Secret` strings, so that the
    config's own ``repr`` (a local variable of many frames: this module's, Flask's, the app's) never shows them."""
    if isinstance(config, MutableMapping):
        for key in SECRET_KEYS:
            value = config.get(key)
            if isinstance(value, str) and not isinstance(value, Secret):
                config[key] = Secret(value)
        if config.get("JOURNY_API_URL") is not None:
            config["JOURNY_API_URL"] = redact_url(config["JOURNY_API_URL"])


def _properties(spec: object, key: str, model: type | None, defaults: Mapping[str, tuple[str, ...]]) -> Any:
    # A mapped class lists its columns, relationships and properties as class attributes: a misspelt name fails
    # init_app, not the first commit. (A plain class may set attributes per instance: not checked.)
    mapped = model is not None and hasattr(model, "__mapper__")
    found = property_map(spec, key, model, defaults, check=mapped)
    if found is not None and mapped and _all_mapped_attributes(found, model):
        found.read_instance_dict()
    return found


def _all_mapped_attributes(found: PropertyMap, model: Any) -> bool:
    """Whether ``found`` reads only plain names of ``model``'s mapped columns and relationships."""
    stored = mapped_attribute_names(model)
    return stored is not None and found.fields is not None and found.paths <= stored


def mapped_attribute_names(model: Any) -> frozenset[str] | None:
    """The names of ``model``'s mapped columns and relationships, whose loaded values SQLAlchemy keeps in each
    instance's ``__dict__`` under the same name (``InstanceState.dict``); None when ``model`` is not mapped."""
    try:
        from sqlalchemy import inspect as sa_inspect  # noqa: PLC0415 - SQLAlchemy is optional

        mapper = sa_inspect(model)
        return frozenset((*mapper.column_attrs.keys(), *mapper.relationships.keys()))
    except Exception:  # not mapped after all (SQLAlchemy absent, a class with a stray __mapper__)
        return None


def _skip_by_user(value: object) -> Callable[[Any], bool]:
    """The deprecated ``JOURNY_SKIP(user)`` as a ``JOURNY_SKIP_REQUEST(request)``, for one release."""
    function = resolve_callable(value, "JOURNY_SKIP")

    def skip_request(request: Any) -> bool:
        from flask import current_app  # noqa: PLC0415 - only for this deprecated name

        from .hooks import current_user  # noqa: PLC0415 - the hooks import this module

        user = current_user(current_app.extensions["journy"])
        return user is not None and bool(function(user))

    return skip_request


def _check_named_attributes(settings: Settings) -> None:
    """A misspelt ``JOURNY_USER_ID`` / ``JOURNY_USER_EMAIL`` / ``JOURNY_ACCOUNT_ID`` / ``JOURNY_ACCOUNT_DOMAIN_FIELD``
    fails ``init_app`` (mapped models only, as for the property maps), instead of leaving its value out of every
    call. ``USER_EMAIL`` left at its default (``email``) may be missing: the user is then synced without one."""
    named = (
        (settings.user_model, settings.user_id, "JOURNY_USER_ID"),
        (settings.user_model, None if settings.user_email == "email" else settings.user_email, "JOURNY_USER_EMAIL"),
        (settings.account_model, settings.account_id, "JOURNY_ACCOUNT_ID"),
        (settings.account_model, settings.account_domain_field, "JOURNY_ACCOUNT_DOMAIN_FIELD"),
    )
    for model, name, key in named:
        if model is not None and hasattr(model, "__mapper__"):
            check_named_attribute(model, name, key)


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check and resolve the ``JOURNY_*`` keys of ``config`` (a Flask config with the defaults applied).

    ``JOURNY_API_KEY`` and ``JOURNY_VERIFICATION_SECRET`` are replaced in ``config`` by equal
    :class:`~journy_core.secrets.Secret` strings, whose ``repr`` is redacted.
    """
    _redact_config(config)
    values = {key[len("JOURNY_") :]: value for key, value in config.items() if key.startswith("JOURNY_")}
    if values.get("SKIP") is not None:
        values["SKIP"] = _skip_by_user(values["SKIP"])
    settings = read_config(values, FLASK_SOURCE)
    members = settings.account_members
    if members is not None and not (isinstance(members, str) and hasattr(settings.account_model, members)):
        raise ConfigurationError(
            f"JOURNY_ACCOUNT_MEMBERS={members!r}: {settings.account_model.__name__} has no such attribute; name the "
            "relationship that lists the account's users (e.g. 'members')."
        )
    _check_named_attributes(settings)
    return dataclasses.replace(
        settings,
        user_properties=_properties(
            settings.user_properties, "JOURNY_USER_PROPERTIES", settings.user_model, DEFAULT_USER_PROPERTIES
        ),
        account_properties=_properties(
            settings.account_properties, "JOURNY_ACCOUNT_PROPERTIES", settings.account_model, DEFAULT_ACCOUNT_PROPERTIES
        ),
    )
