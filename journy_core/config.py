"""The configuration schema: every option of the integration, once, for both adapters.

An option has one name. Django reads it as a key of ``settings.JOURNY`` (``JOURNY = {"API_KEY": ...}``), Flask as a
``JOURNY_``-prefixed config key (``app.config["JOURNY_API_KEY"]``). Both hand the raw values to :func:`read_config`,
which checks names (suggesting the closest for a typo), types and combinations, resolves dotted paths, and returns
a frozen :class:`Config`. A few options are about a concept only one framework has (:attr:`Option.only`); the
other framework refuses them with a message that says so.

Every error is a :class:`~journy_core.ConfigurationError` that names the option as the user wrote it
(``JOURNY['TIMEOUT']`` or ``JOURNY_TIMEOUT``) and says what it takes. Secrets are held as
:class:`~journy_core.secrets.Secret`, so the ``repr`` of a :class:`Config` never shows them.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import ConfigurationError, InvalidArgumentError
from .filters import Network, parse_networks
from .option_values import CONVERT, ENV_API_KEY, django_model, flask_model
from .secrets import Secret
from .tracker import Tracker

__all__ = [
    "DJANGO",
    "ENV_API_KEY",
    "FLASK",
    "OPTIONS",
    "RENAMED",
    "Config",
    "JournyDeprecationWarning",
    "Option",
    "Source",
    "read_config",
    "unknown_options",
]

logger = logging.getLogger("journy")


class JournyDeprecationWarning(DeprecationWarning):
    """An option name that still works for this release and will not in the next one."""


@dataclass(frozen=True)
class Option:
    """One configuration option: its name (the Django key), default and meaning; ``only`` names the one framework
    it applies to, when it is about that framework's concept."""

    name: str
    default: object
    meaning: str
    only: str | None = None


#: Every option, in the order of the settings reference (docs/settings.md).
OPTIONS: tuple[Option, ...] = (
    Option("ENABLED", True, "False sends nothing and renders no snippet (the kill switch)"),
    Option("API_KEY", None, "the journy.io API key; the JOURNY_API_KEY environment variable when unset"),
    Option("API_URL", None, "the API base URL (default https://api.journy.io; JOURNY_API_URL overrides it)"),
    Option("TIMEOUT", None, "seconds, or a (connect, read) pair, for each API call (default (5, 10))"),
    Option("QUEUE", None, "the delivery backend: {'BACKEND': 'thread', 'OPTIONS': {...}}"),
    Option("ON_FAILURE", None, "callable(operation, error), or its dotted path: called for each call given up"),
    Option("VERIFICATION_SECRET", None, "the website's identity-verification secret (the snippet's hashes)"),
    Option("TRACKER_ID", None, "the website's tracker ID (journy.io website settings)"),
    Option("TRACKER_DOMAIN", None, "the tracking origin, such as 'https://go.acme.com'"),
    Option("TRACKER_SCRIPT_PATH", "/tracker.js", "the tracker script's path on TRACKER_DOMAIN"),
    Option("WEBSITE_DOMAIN", None, "instead of TRACKER_*: fetch this website's snippet from journy.io"),
    Option("SNIPPET_CACHE_SECONDS", 3600, "how long a snippet fetched for WEBSITE_DOMAIN is reused"),
    Option("SEND_PAGEVIEW", True, "whether the snippet records a page view"),
    Option("SNIPPET_PROPERTIES", True, "whether the snippet's identify/account calls carry the mapped properties"),
    Option("INJECT_SNIPPET", False, "put the snippet into HTML pages whose templates do not call it"),
    Option("CSP_NONCE", None, "callable() returning the page's CSP nonce", only="flask"),
    Option("SYNC_USERS", True, "whether saved and deleted users are sent (and named in membership calls)"),
    Option("USER_MODEL", None, "the user model class (or its dotted path)", only="flask"),
    Option("USER_ID", None, "attribute name or callable(user) giving the user ID (default: primary key)", only="flask"),
    Option("USER_EMAIL", "email", "the user attribute holding the email (Django: EMAIL_FIELD)", only="flask"),
    Option("USER_PROPERTIES", None, "user properties: a list, a dict of name to attribute, or callable(user)"),
    Option("USER_DELETED", None, "attribute or callable(user) -> bool: soft-deleted users are deleted"),
    Option("ACCOUNT_MODEL", None, "the account model (Django: 'app_label.ModelName'; Flask: class or path)"),
    Option(
        "ACCOUNT_ID", None, "attribute or callable(account) giving the account ID (default: primary key)", only="flask"
    ),
    Option("ACCOUNT_PROPERTIES", None, "account properties: a list, a dict, or callable(account)"),
    Option("ACCOUNT_DOMAIN_FIELD", None, "the account attribute holding its domain, sent with its ID"),
    Option("ACCOUNT_MEMBERS", None, "the account's relation to its users (memberships)"),
    Option("ACCOUNT_DELETED", None, "attribute or callable(account) -> bool: soft-deleted accounts are deleted"),
    Option("CURRENT_USER", None, "callable() returning the request's user (default: Flask-Login's)", only="flask"),
    Option("CURRENT_ACCOUNT", None, "callable giving the request's account (Django: of the request)"),
    Option("SESSION", None, "the SQLAlchemy session (or sessionmaker) to watch", only="flask"),
    Option("SHOULD_SYNC", None, "callable(obj) -> bool: the per-object opt-out"),
    Option("LINK_DEVICES", True, "whether the __journey cookie is linked to the user who logs in"),
    Option("SKIP_STAFF", False, "leave out users whose is_staff is true"),
    Option("SKIP_IMPERSONATED", True, "leave out sessions of django-hijack and the like", only="django"),
    Option("INTERNAL_IPS", (), "IPs or networks left out (Django: True reuses settings.INTERNAL_IPS)"),
    Option("SKIP_REQUEST", None, "callable(request) -> bool: leave this request out"),
)
_BY_NAME = {option.name: option for option in OPTIONS}

DJANGO = "django"
FLASK = "flask"

#: Names that changed, still read for one release with a warning: (framework, old name) -> new name.
RENAMED: dict[tuple[str, str], str] = {
    (FLASK, "SKIP"): "SKIP_REQUEST",
    (FLASK, "ACCOUNT_DOMAIN"): "ACCOUNT_DOMAIN_FIELD",
}


@dataclass(frozen=True)
class Source:
    """Where a framework keeps the options: how an option is spelled there, for every message."""

    framework: str
    prefix: str  # "JOURNY_" (Flask) or "" (a key of Django's dict)
    where: str  # "settings.JOURNY" or "the Flask config"
    docs: str

    def key(self, name: str) -> str:
        """The option as the user writes it: ``JOURNY['TIMEOUT']`` or ``JOURNY_TIMEOUT``."""
        return f"JOURNY_{name}" if self.prefix else f"JOURNY[{name!r}]"


DJANGO_SOURCE = Source(DJANGO, "", "settings.JOURNY", "docs/settings.md")
FLASK_SOURCE = Source(FLASK, "JOURNY_", "the Flask config", "docs/settings.md")


@dataclass(frozen=True)
class Config:
    """The checked options of one app. Field names are the option names in lower case; dotted paths are resolved.

    ``api_key`` and ``verification_secret`` are :class:`~journy_core.secrets.Secret` (a ``str`` with a redacted
    ``repr``). ``config["API_KEY"]`` reads an option by its name.
    """

    source: Source
    enabled: bool
    api_key: Secret | None
    api_url: str | None
    timeout: float | tuple[float, float] | None
    queue: Mapping[str, Any] | None
    on_failure: Callable[[Any, BaseException], None] | None
    verification_secret: Secret | None
    tracker_id: str | None
    tracker_domain: str | None
    tracker_script_path: str
    website_domain: str | None
    snippet_cache_seconds: float
    send_pageview: bool
    snippet_properties: bool
    inject_snippet: bool
    csp_nonce: Callable[[], object] | None
    sync_users: bool
    user_model: Any
    user_id: Callable[[Any], object] | str | None
    user_email: str | None
    user_properties: Any
    user_deleted: Callable[[Any], object] | str | None
    account_model: Any
    account_id: Callable[[Any], object] | str | None
    account_properties: Any
    account_domain_field: str | None
    account_members: Any
    account_deleted: Callable[[Any], object] | str | None
    current_user: Callable[[], Any] | None
    current_account: Callable[..., Any] | None
    session: Any
    should_sync: Callable[[Any], Any] | None
    link_devices: bool
    skip_staff: bool
    skip_impersonated: bool
    internal_ips: tuple[Network, ...]
    skip_request: Callable[[Any], Any] | None
    tracker: Tracker | None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name.lower())

    def key(self, name: str) -> str:
        """How this app spells option ``name`` (for messages)."""
        return self.source.key(name)

    @property
    def internal_networks(self) -> tuple[Network, ...]:
        """``INTERNAL_IPS`` parsed."""
        return self.internal_ips

    @cached_property  # asked on every page: the answer is fixed with the options
    def has_skip_filters(self) -> bool:
        """Whether a request may be left out for its user, its IP or by ``SKIP_REQUEST`` (else that check is
        skipped)."""
        return self.skip_staff or bool(self.internal_ips) or self.skip_request is not None

    @cached_property
    def tracker_problem(self) -> str | None:
        """Why the snippet cannot render (None when it can)."""
        if not self.enabled:
            return f"{self.key('ENABLED')} is False"
        if self.tracker is None and self.website_domain is None:
            return f"set {self.key('TRACKER_ID')} and {self.key('TRACKER_DOMAIN')} (or {self.key('WEBSITE_DOMAIN')})"
        return None


def _option_names(framework: str) -> list[str]:
    return [option.name for option in OPTIONS if option.only in (None, framework)]


def _suggest(name: str, source: Source) -> str:
    other = _BY_NAME.get(name)
    if other is not None and other.only is not None:
        return f"{source.key(name)} is a {other.only.capitalize()} option ({other.meaning})"
    close = difflib.get_close_matches(name, _option_names(source.framework), n=1, cutoff=0.6)
    if close:
        return f"{source.key(name)}: did you mean {source.key(close[0])}?"
    return f"{source.key(name)} is not an option"


def unknown_options(values: Mapping[str, object], source: Source) -> str | None:
    """One message for every name in ``values`` that is not an option here (with the closest name), or None."""
    known = set(_option_names(source.framework))
    renamed = {old for framework, old in RENAMED if framework == source.framework}
    unknown = [name for name in values if name not in known and name not in renamed]
    if not unknown:
        return None
    problems = "; ".join(_suggest(str(name), source) for name in sorted(map(str, unknown)))
    return f"{problems}. The options are listed in {source.docs}."


def _renamed(values: Mapping[str, object], source: Source) -> dict[str, object]:
    result = dict(values)
    for (framework, old), new in RENAMED.items():
        if framework != source.framework or result.get(old) is None:
            result.pop(old, None)
            continue
        value = result.pop(old)
        if result.get(new) is not None and result[new] != value:
            raise ConfigurationError(
                f"{source.key(old)} and {source.key(new)} are both set: {source.key(old)} is the old name of "
                f"{source.key(new)}; keep only {source.key(new)}."
            )
        message = (
            f"{source.key(old)} is deprecated: rename it {source.key(new)} (the old name goes in the next release)."
        )
        warnings.warn(message, JournyDeprecationWarning, stacklevel=4)
        logger.warning("journy: %s", message)
        result[new] = value
    return result


def _tracker(values: Mapping[str, Any], source: Source) -> Tracker | None:
    tracker_id, domain = values["tracker_id"], values["tracker_domain"]
    if tracker_id is None and domain is None:
        return None
    if tracker_id is None or domain is None:
        missing = source.key("TRACKER_ID" if tracker_id is None else "TRACKER_DOMAIN")
        raise ConfigurationError(
            f"{missing} is not set: the snippet needs both {source.key('TRACKER_ID')} (from journy.io's website "
            f"settings) and {source.key('TRACKER_DOMAIN')} (the tracking origin, such as 'https://go.acme.com')."
        )
    try:
        return Tracker(tracker_id=tracker_id, tracking_domain=domain, script_path=values["tracker_script_path"])
    except InvalidArgumentError as exc:
        name = {"tracker_id": "TRACKER_ID", "script_path": "TRACKER_SCRIPT_PATH"}.get(exc.argument, "TRACKER_DOMAIN")
        raise ConfigurationError(f"{source.key(name)}: {exc}") from None


def read_config(
    values: Mapping[str, object], source: Source, *, internal_ips: object = None, **overrides: object
) -> Config:
    """Check the raw options ``values`` (names without prefix) from ``source`` and return the :class:`Config`.

    ``internal_ips`` is what ``INTERNAL_IPS = True`` stands for (Django's ``settings.INTERNAL_IPS``).
    ``overrides`` replace converted values (an adapter's own resolution of a model, say).
    Raises :class:`~journy_core.ConfigurationError` naming the option.
    """
    problem = unknown_options(values, source)
    if problem is not None:
        raise ConfigurationError(problem)
    raw = _renamed(values, source)
    models = flask_model if source.framework == FLASK else django_model
    converted: dict[str, Any] = {}
    for option in OPTIONS:
        value = raw.get(option.name, option.default) if option.only in (None, source.framework) else option.default
        key = source.key(option.name)
        if option.name in ("USER_MODEL", "ACCOUNT_MODEL"):
            converted[option.name.lower()] = models(value, key)
        elif option.name == "INTERNAL_IPS":
            value = internal_ips if value is True and internal_ips is not None else value
            converted["internal_ips"] = parse_networks(value, key)
        else:
            convert = CONVERT.get(option.name)
            converted[option.name.lower()] = convert(value, key) if convert is not None else value
    converted.update(overrides)
    converted["tracker"] = _tracker(converted, source)
    _check_combinations(converted, source)
    return Config(source=source, **converted)


def _check_combinations(values: Mapping[str, Any], source: Source) -> None:
    if values["account_members"] is not None and values["account_model"] is None:
        raise ConfigurationError(
            f"{source.key('ACCOUNT_MEMBERS')} is set but {source.key('ACCOUNT_MODEL')} is not: set the account model."
        )
    if values["account_deleted"] is not None and values["account_model"] is None:
        raise ConfigurationError(
            f"{source.key('ACCOUNT_DELETED')} is set but {source.key('ACCOUNT_MODEL')} is not: set the account model."
        )
    fetches_snippet = values["website_domain"] is not None and values["tracker"] is None
    if fetches_snippet and values["enabled"] and values["api_key"] is None:
        raise ConfigurationError(
            f"{source.key('WEBSITE_DOMAIN')} is set but no API key is: the website's snippet is fetched with the API "
            f"key; set {source.key('API_KEY')} (or the {ENV_API_KEY} environment variable), or set "
            f"{source.key('TRACKER_ID')} and {source.key('TRACKER_DOMAIN')} instead."
        )
