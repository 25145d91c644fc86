"""The ``JOURNY_*`` configuration keys: their defaults, and one reader that checks them when the app starts.

Every key is optional; :data:`DEFAULTS` lists them. :func:`read_settings` runs in ``init_app`` and raises
:class:`~journy_core.ConfigurationError` naming the key to set (or fix) for anything it can check without a
request: missing API key for a backend that delivers from this process, a half-configured tracker, a model or
callable given as a dotted path that cannot be imported, a property mapping of the wrong shape.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from journy_core import ConfigurationError, InvalidArgumentError, Tracker
from journy_core.importing import import_string, resolve_callable
from journy_core.mapping import PropertyMap
from journy_core.secrets import Secret, checked_api_key, redact

__all__ = ["DEFAULTS", "Settings", "read_settings"]

#: Every configuration key with its default (``init_app`` applies them with ``app.config.setdefault``).
DEFAULTS: dict[str, Any] = {
    # Delivery
    "JOURNY_ENABLED": True,
    "JOURNY_API_KEY": None,
    "JOURNY_API_URL": None,
    "JOURNY_QUEUE": {"BACKEND": "thread"},
    # The snippet
    "JOURNY_TRACKER_ID": None,
    "JOURNY_TRACKER_DOMAIN": None,
    "JOURNY_TRACKER_SCRIPT_PATH": "/tracker.js",
    "JOURNY_WEBSITE_DOMAIN": None,
    "JOURNY_VERIFICATION_SECRET": None,
    "JOURNY_CSP_NONCE": None,
    "JOURNY_SNIPPET_PROPERTIES": True,
    # Who the user and the account of a request are
    "JOURNY_CURRENT_USER": None,
    "JOURNY_CURRENT_ACCOUNT": None,
    "JOURNY_SKIP": None,
    "JOURNY_INTERNAL_IPS": (),
    "JOURNY_LINK_DEVICES": True,
    # Models
    "JOURNY_SESSION": None,
    "JOURNY_USER_MODEL": None,
    "JOURNY_USER_ID": None,
    "JOURNY_USER_EMAIL": "email",
    "JOURNY_USER_PROPERTIES": None,
    "JOURNY_ACCOUNT_MODEL": None,
    "JOURNY_ACCOUNT_ID": None,
    "JOURNY_ACCOUNT_DOMAIN": None,
    "JOURNY_ACCOUNT_PROPERTIES": None,
    "JOURNY_ACCOUNT_MEMBERS": None,
    "JOURNY_SHOULD_SYNC": None,
}

#: With JOURNY_USER_PROPERTIES unset: journy.io property name -> the first attribute of the model that exists.
AUTO_USER_PROPERTIES: dict[str, tuple[str, ...]] = {
    "full_name": ("full_name", "name", "display_name"),
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "phone": ("phone",),
    "registered_at": ("registered_at", "created_at", "date_joined", "created"),
}
#: The same for accounts.
AUTO_ACCOUNT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "name": ("name", "title"),
    "plan": ("plan",),
    "mrr": ("mrr",),
    "registered_at": ("registered_at", "created_at", "created"),
}

Identity = Callable[[Any], object] | str | None

#: The keys whose values are secrets: :func:`read_settings` turns them into :class:`journy_core.secrets.Secret`.
SECRET_KEYS = ("JOURNY_API_KEY", "JOURNY_VERIFICATION_SECRET")


@dataclass(frozen=True)
class Settings:
    """The checked configuration of one app (``app.extensions["journy"].settings``).

    ``api_key`` and ``verification_secret`` are :class:`journy_core.secrets.Secret` (a ``str`` whose ``repr`` is
    redacted): the ``repr`` of these settings, and of any variable holding one, never shows them.
    """

    enabled: bool
    api_key: str | None
    api_url: str | None
    queue: Mapping[str, Any]
    tracker: Tracker | None
    website_domain: str | None
    verification_secret: str | None
    csp_nonce: Callable[[], object] | None
    snippet_properties: bool
    current_user: Callable[[], Any] | None
    current_account: Callable[[], Any] | None
    skip: Callable[[Any], bool] | None
    internal_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    link_devices: bool
    session: Any
    user_model: type | None
    user_id: Identity
    user_email: str | None
    user_properties: PropertyMap | None
    account_model: type | None
    account_id: Identity
    account_domain: str | None
    account_properties: PropertyMap | None
    account_members: str | None
    should_sync: Callable[[Any], bool] | None

    def __post_init__(self) -> None:
        # Whoever built it, the secrets it holds are redacted (frozen: hence object.__setattr__).
        object.__setattr__(self, "api_key", redact(self.api_key))
        object.__setattr__(self, "verification_secret", redact(self.verification_secret))

    @cached_property
    def has_skip_filters(self) -> bool:
        """Whether JOURNY_INTERNAL_IPS or JOURNY_SKIP may leave a request out (else that check is skipped)."""
        return bool(self.internal_networks) or self.skip is not None

    @cached_property
    def tracker_problem(self) -> str | None:
        """Why the snippet cannot render (None when it can)."""
        if not self.enabled:
            return "JOURNY_ENABLED is False"
        if self.tracker is None and self.website_domain is None:
            return "set JOURNY_TRACKER_ID and JOURNY_TRACKER_DOMAIN (or JOURNY_WEBSITE_DOMAIN)"
        return None


def _optional_callable(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    return None if value is None else resolve_callable(value, key)


def _optional_text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a non-empty string or None; got {value!r}.")
    return value.strip()


def _api_key(config: Mapping[str, Any]) -> Secret | None:
    """``JOURNY_API_KEY`` checked (an error says what is wrong with it, never what it is)."""
    if config.get("JOURNY_API_KEY") is None:
        return None
    try:
        # No local variable holds the raw key: a traceback through this frame would show it.
        return checked_api_key(config.get("JOURNY_API_KEY"), "JOURNY_API_KEY")
    except InvalidArgumentError as exc:
        raise ConfigurationError(str(exc)) from None


def _redact_config(config: Mapping[str, Any]) -> None:
    """Replace the secrets of ``app.config`` by equal :class:`~journy_core.secrets.Secret` strings, so that the
    config's own ``repr`` (a local variable of many frames: this module's, Flask's, the app's) never shows them."""
    if isinstance(config, MutableMapping):
        for key in SECRET_KEYS:
            value = config.get(key)
            if isinstance(value, str) and not isinstance(value, Secret):
                config[key] = Secret(value)


def _model(config: Mapping[str, Any], key: str) -> type | None:
    value = config.get(key)
    if value is None:
        return None
    found = import_string(value, key) if isinstance(value, str) else value
    if not isinstance(found, type):
        raise ConfigurationError(
            f"{key} must be a model class or its dotted path ('myapp.models.Team'); got {value!r}."
        )
    return found


def _identity(config: Mapping[str, Any], key: str) -> Identity:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str) and "." not in value:
        return value  # an attribute name
    return resolve_callable(value, key)  # type: ignore[no-any-return]


def _properties(config: Mapping[str, Any], key: str, model: type | None, auto: Mapping[str, tuple[str, ...]]) -> Any:
    spec = config.get(key)
    if spec is None:
        if model is None:
            return None
        spec = {}
        for name, candidates in auto.items():
            attribute = next((c for c in candidates if hasattr(model, c)), None)
            if attribute is not None:
                spec[name] = attribute
    if isinstance(spec, str) and "." not in spec:
        raise ConfigurationError(f"{key} must be a list, a dict, or a callable's dotted path; got {spec!r}.")
    mapping = PropertyMap(spec, key)
    if model is not None and hasattr(model, "__mapper__"):
        # A mapped class lists its columns, relationships and properties as class attributes: a misspelt name
        # fails init_app, not the first commit. (A plain class may set attributes per instance: not checked.)
        mapping.check_against(model)
    return mapping


def _tracker(config: Mapping[str, Any]) -> Tracker | None:
    tracker_id = config.get("JOURNY_TRACKER_ID")
    domain = config.get("JOURNY_TRACKER_DOMAIN")
    if tracker_id is None and domain is None:
        return None
    if tracker_id is None or domain is None:
        missing = "JOURNY_TRACKER_ID" if tracker_id is None else "JOURNY_TRACKER_DOMAIN"
        raise ConfigurationError(
            f"{missing} is not set: the snippet needs both JOURNY_TRACKER_ID (from journy.io's website settings) and "
            "JOURNY_TRACKER_DOMAIN (the tracking origin, such as 'https://go.acme.com')."
        )
    try:
        return Tracker(
            tracker_id=tracker_id,
            tracking_domain=domain,
            script_path=config.get("JOURNY_TRACKER_SCRIPT_PATH") or "/tracker.js",
        )
    except InvalidArgumentError as exc:
        key = {"tracker_id": "JOURNY_TRACKER_ID", "script_path": "JOURNY_TRACKER_SCRIPT_PATH"}.get(
            exc.argument, "JOURNY_TRACKER_DOMAIN"
        )
        raise ConfigurationError(f"{key}: {exc}") from None


def _networks(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"JOURNY_INTERNAL_IPS must be a list of addresses or networks; got {value!r}.")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ConfigurationError(f"JOURNY_INTERNAL_IPS: {item!r} is not an IP address or network.") from None
    return tuple(networks)


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check and resolve the ``JOURNY_*`` keys of ``config`` (a Flask config with the defaults applied).

    ``JOURNY_API_KEY`` and ``JOURNY_VERIFICATION_SECRET`` are replaced in ``config`` by equal
    :class:`~journy_core.secrets.Secret` strings, whose ``repr`` is redacted.
    """
    _redact_config(config)
    unknown = sorted(key for key in config if key.startswith("JOURNY_") and key not in DEFAULTS)
    if unknown:
        raise ConfigurationError(
            f"Unknown configuration key(s) {', '.join(unknown)}; known JOURNY_* keys: {', '.join(sorted(DEFAULTS))}."
        )
    queue = config.get("JOURNY_QUEUE") or {"BACKEND": "thread"}
    if not isinstance(queue, Mapping):
        raise ConfigurationError(f"JOURNY_QUEUE must be a dict such as {{'BACKEND': 'thread'}}; got {queue!r}.")
    secret = redact(config.get("JOURNY_VERIFICATION_SECRET"))
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigurationError("JOURNY_VERIFICATION_SECRET must be the website's identity-verification secret.")
    user_model = _model(config, "JOURNY_USER_MODEL")
    account_model = _model(config, "JOURNY_ACCOUNT_MODEL")
    members = _optional_text(config, "JOURNY_ACCOUNT_MEMBERS")
    if members is not None and account_model is None:
        raise ConfigurationError(
            "JOURNY_ACCOUNT_MEMBERS is set but JOURNY_ACCOUNT_MODEL is not: set the account model."
        )
    if members is not None and account_model is not None and not hasattr(account_model, members):
        raise ConfigurationError(
            f"JOURNY_ACCOUNT_MEMBERS={members!r}: {account_model.__name__} has no such attribute; name the "
            "relationship that lists the account's users (e.g. 'members')."
        )
    fetches_snippet = config.get("JOURNY_WEBSITE_DOMAIN") and not config.get("JOURNY_TRACKER_ID")
    if fetches_snippet and config.get("JOURNY_ENABLED", True) and not config.get("JOURNY_API_KEY"):
        raise ConfigurationError(
            "JOURNY_WEBSITE_DOMAIN is set but JOURNY_API_KEY is not: the website's snippet is fetched with the API "
            "key; set JOURNY_API_KEY, or set JOURNY_TRACKER_ID and JOURNY_TRACKER_DOMAIN instead."
        )
    return Settings(
        enabled=bool(config.get("JOURNY_ENABLED", True)),
        api_key=_api_key(config),
        api_url=_optional_text(config, "JOURNY_API_URL"),
        queue=dict(queue),
        tracker=_tracker(config),
        website_domain=_optional_text(config, "JOURNY_WEBSITE_DOMAIN"),
        verification_secret=secret,
        csp_nonce=_optional_callable(config, "JOURNY_CSP_NONCE"),
        snippet_properties=bool(config.get("JOURNY_SNIPPET_PROPERTIES", True)),
        current_user=_optional_callable(config, "JOURNY_CURRENT_USER"),
        current_account=_optional_callable(config, "JOURNY_CURRENT_ACCOUNT"),
        skip=_optional_callable(config, "JOURNY_SKIP"),
        internal_networks=_networks(config.get("JOURNY_INTERNAL_IPS") or ()),
        link_devices=bool(config.get("JOURNY_LINK_DEVICES", True)),
        session=config.get("JOURNY_SESSION"),
        user_model=user_model,
        user_id=_identity(config, "JOURNY_USER_ID"),
        user_email=_optional_text(config, "JOURNY_USER_EMAIL"),
        user_properties=_properties(config, "JOURNY_USER_PROPERTIES", user_model, AUTO_USER_PROPERTIES),
        account_model=account_model,
        account_id=_identity(config, "JOURNY_ACCOUNT_ID"),
        account_domain=_optional_text(config, "JOURNY_ACCOUNT_DOMAIN"),
        account_properties=_properties(config, "JOURNY_ACCOUNT_PROPERTIES", account_model, AUTO_ACCOUNT_PROPERTIES),
        account_members=members,
        should_sync=_optional_callable(config, "JOURNY_SHOULD_SYNC"),
    )
