# mypy: disable-error-code="import-untyped"
"""System checks (``manage.py check``; ``journy_check`` runs them too). Each says what to set.

Errors: ``journy.E001`` no API key, or one that cannot be sent (a line break in it); ``E002`` malformed API URL;
``E003`` queue backend unknown, misconfigured or its extra missing; ``E004`` a dotted path that does not resolve;
``E005`` account model not found; ``E006`` ``ACCOUNT_MEMBERS`` is not a relation to the user model; ``E007`` blank
verification secret; ``E008`` middleware misplaced; ``E009`` ``settings.JOURNY`` itself is malformed; ``E010``
tracker settings invalid; ``E011`` a property map, ``USER_DELETED``, ``ACCOUNT_DELETED`` or ``ACCOUNT_DOMAIN_FIELD``
names an attribute its model does not have (or, for the soft deletes, a dotted path that is neither an attribute
nor a callable).
Warnings: ``journy.W001`` the emulator URL with ``DEBUG`` off; ``W002`` snippet without a verification secret;
``W003`` middleware missing; ``W004`` no request context processor for ``{% journy_snippet %}``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import CheckMessage, Error, Warning, register

from journy_core import ConfigurationError
from journy_core.backends import BACKENDS, checked_queue
from journy_core.config import DJANGO_SOURCE, read_config, unknown_options
from journy_core.importing import resolve_callable
from journy_core.mapping import PropertyMap, check_named_attribute
from journy_core.option_values import api_key_source
from journy_core.outbox.backend import OutboxBackend
from journy_core.secrets import api_key_problem
from journy_core.soft_delete import SoftDelete
from journy_core.urls import ENV_BASE_URL, is_loopback_host, resolve_base_url

from .conf import APP_STORE, JournyConfigurationError, journy_settings
from .identity import account_model, members_relation

__all__ = ["ALL_CHECKS"]

MIDDLEWARE = "journy_django.middleware.JournyMiddleware"
_NEEDS_BEFORE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)
_NO_KEY_BACKENDS = frozenset({"memory", "disabled"})


def _raw() -> dict[str, Any]:
    raw = getattr(settings, "JOURNY", None)
    return dict(raw) if isinstance(raw, dict) else {}


#: Keys a check of their own reports, with its own id and hint (so a mistake there is one message, not two).
_OWN_CHECKS = frozenset(
    {
        "API_KEY",  # E001
        "API_URL",  # E002
        "QUEUE",  # E003
        "CURRENT_ACCOUNT",  # E004
        "SKIP_REQUEST",
        "SHOULD_SYNC",
        "ON_FAILURE",
        "USER_PROPERTIES",
        "ACCOUNT_PROPERTIES",
        "ACCOUNT_MODEL",  # E005, E006
        "ACCOUNT_MEMBERS",
        "VERIFICATION_SECRET",  # E007
        "TRACKER_ID",  # E010
        "TRACKER_DOMAIN",
        "TRACKER_SCRIPT_PATH",
    }
)


#: Options a check of their own reports whose presence the checks between options read (ACCOUNT_DELETED needs
#: ACCOUNT_MODEL, WEBSITE_DOMAIN an API key): E009 reads them as set, through a valid stand-in for those whose own
#: check tells what is wrong with their value, and as they are for the model options (E009 checks their shape).
_STANDING_IN = frozenset({"API_KEY", "ACCOUNT_MODEL", "ACCOUNT_MEMBERS", "TRACKER_ID", "TRACKER_DOMAIN"})
_STAND_INS = {"API_KEY": "stand-in-key", "TRACKER_ID": "stand-in", "TRACKER_DOMAIN": "https://tracker.example"}


def check_settings_shape(**kwargs: Any) -> list[CheckMessage]:
    """``E009``: ``settings.JOURNY`` is not a dict, names an unknown option (with the closest name), or holds a
    value the schema refuses (for the options no other check covers)."""
    raw = getattr(settings, "JOURNY", None)
    problem = None
    if raw is not None and not isinstance(raw, dict):
        problem = f"settings.JOURNY must be a dict such as {{'API_KEY': ...}}, got {type(raw).__name__}."
    else:
        problem = unknown_options(raw or {}, DJANGO_SOURCE)
        if problem is None:
            rest = {key: value for key, value in (raw or {}).items() if key not in _OWN_CHECKS}
            # The checks between options need to know which of those are set: stand-ins their own checks vouch for.
            rest.update(
                (key, _STAND_INS.get(key, value))
                for key, value in (raw or {}).items()
                if key in _STANDING_IN and value is not None
            )
            try:
                read_config(rest, DJANGO_SOURCE, internal_ips=getattr(settings, "INTERNAL_IPS", ()))
            except ConfigurationError as exc:
                problem = str(exc)
    if problem is None:
        return []
    return [Error(problem, hint="Every option is in docs/settings.md.", id="journy.E009")]


def _settings_load() -> bool:
    """Whether the settings load at all (when not, E009 or the check owning the key reports why)."""
    try:
        journy_settings()
    except Exception:
        return False
    return True


def check_api_key(**kwargs: Any) -> list[CheckMessage]:
    raw = _raw()
    if raw.get("ENABLED", True) is False:
        return []
    key, where = api_key_source(raw.get("API_KEY"), "JOURNY['API_KEY']")
    if key is not None and not (isinstance(key, str) and key.strip()):  # set, but not a key: a backend or not
        kind = "empty or blank" if isinstance(key, str) else f"a {type(key).__name__}, not a string"
        return [
            Error(
                f"JOURNY['API_KEY'] is {kind}: nothing can be sent to journy.io.",
                hint="Set JOURNY['API_KEY'] to the key from journy.io (Settings > Connections), as a string.",
                id="journy.E001",
            )
        ]
    backend = (raw.get("QUEUE") or {}).get("BACKEND", "thread") if isinstance(raw.get("QUEUE"), dict) else "thread"
    if backend in _NO_KEY_BACKENDS:
        return []
    if isinstance(key, str) and key.strip():
        problem = api_key_problem(key.strip())
        if problem is None:
            return []
        # The message says what is wrong with the key, never the key itself.
        return [
            Error(
                f"{where[0].upper()}{where[1:]} {problem}.",
                hint=f"Copy the key again from journy.io (Settings > Connections) into {where}.",
                id="journy.E001",
            )
        ]
    return [
        Error(
            "JOURNY['API_KEY'] is not set: nothing can be sent to journy.io.",
            hint="Create a key in journy.io (Settings > Connections) and set JOURNY['API_KEY'] (e.g. from an "
            "environment variable); for development run the emulator (python -m journy_core.emulator) and use "
            "its key, or set JOURNY['QUEUE'] = {'BACKEND': 'disabled'}.",
            id="journy.E001",
        )
    ]


def check_api_url(**kwargs: Any) -> list[CheckMessage]:
    url = _raw().get("API_URL")
    try:
        resolved = resolve_base_url(url, argument="JOURNY['API_URL']")
    except (ConfigurationError, ValueError) as exc:
        return [
            Error(
                str(exc),
                hint="Leave JOURNY['API_URL'] unset for https://api.journy.io, or give an absolute https URL "
                f"(http only for 127.0.0.1); check the {ENV_BASE_URL} environment variable too.",
                id="journy.E002",
            )
        ]
    host = urlsplit(resolved).hostname or ""
    if not settings.DEBUG and is_loopback_host(host):
        source = ENV_BASE_URL if os.environ.get(ENV_BASE_URL) else "JOURNY['API_URL']"
        return [
            Warning(
                f"{source} points at {resolved} (the local emulator?) while DEBUG is off: data will not reach "
                "journy.io.",
                hint=f"In production leave JOURNY['API_URL'] and {ENV_BASE_URL} unset.",
                id="journy.W001",
            )
        ]
    return []


def check_queue(**kwargs: Any) -> list[CheckMessage]:
    queue = _raw().get("QUEUE")
    try:
        cls, options = checked_queue(queue, "JOURNY['QUEUE']")
        if issubclass(cls, OutboxBackend) and options.get("STORE") is None:
            options = {**options, "STORE": APP_STORE}  # as get_journy() fills it in
        # The options' values are checked by the backend's constructor (as at the first save): one built without
        # a client, and closed at once, finds a bad value here rather than in every save's log.
        cls(client_factory=None, options=options, on_failure=None).close(timeout=0)
    except ConfigurationError as exc:
        return [
            Error(
                str(exc),
                hint=f"BACKEND is one of {', '.join(BACKENDS)}, or a dotted path; each takes its own OPTIONS "
                "(docs/queue.md, docs/outbox.md).",
                id="journy.E003",
            )
        ]
    return []


def check_dotted_paths(**kwargs: Any) -> list[CheckMessage]:
    raw = _raw()
    errors: list[CheckMessage] = []
    for key in ("CURRENT_ACCOUNT", "SKIP_REQUEST", "SHOULD_SYNC", "ON_FAILURE"):
        if raw.get(key) is not None:
            try:
                resolve_callable(raw[key], f"JOURNY[{key!r}]")
            except ConfigurationError as exc:
                errors.append(Error(str(exc), hint="Give a callable or its dotted path.", id="journy.E004"))
    for key in ("USER_PROPERTIES", "ACCOUNT_PROPERTIES"):
        if raw.get(key) is not None:
            try:
                PropertyMap(raw[key], f"JOURNY[{key!r}]")
            except ConfigurationError as exc:
                errors.append(
                    Error(
                        str(exc),
                        hint="A list of attributes, a dict of journy.io name to attribute, or a callable.",
                        id="journy.E004",
                    )
                )
    return errors


def check_account_model(**kwargs: Any) -> list[CheckMessage]:
    raw = _raw()
    if not _settings_load():
        return []
    try:
        model = account_model()
    except JournyConfigurationError as exc:
        return [Error(str(exc), hint="Set JOURNY['ACCOUNT_MODEL'] to 'app_label.ModelName'.", id="journy.E005")]
    except Exception:  # the settings themselves are wrong: E009 says so
        return []
    members = raw.get("ACCOUNT_MEMBERS")
    if members is None:
        return []
    if model is None:
        return [
            Error(
                "JOURNY['ACCOUNT_MEMBERS'] is set but JOURNY['ACCOUNT_MODEL'] is not.",
                hint="Set JOURNY['ACCOUNT_MODEL'] to your account model.",
                id="journy.E006",
            )
        ]
    if (isinstance(members, str) and "." in members) or callable(members):
        try:
            resolve_callable(members, "JOURNY['ACCOUNT_MEMBERS']")
        except ConfigurationError as exc:
            return [Error(str(exc), hint="Give a field name or a callable(account).", id="journy.E004")]
        return []
    try:
        members_relation()
    except JournyConfigurationError as exc:
        return [
            Error(
                str(exc),
                hint="Name the many-to-many field between the account model and the user model.",
                id="journy.E006",
            )
        ]
    return []


def check_snippet(**kwargs: Any) -> list[CheckMessage]:
    raw = _raw()
    messages: list[CheckMessage] = []
    secret = raw.get("VERIFICATION_SECRET")
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        messages.append(
            Error(
                "JOURNY['VERIFICATION_SECRET'] is set but blank (or not a string).",
                hint="Copy the identity-verification secret from journy.io's website settings, or remove the key.",
                id="journy.E007",
            )
        )
    tracker_id = raw.get("TRACKER_ID")
    tracker_keys: dict[str, object] = {
        key: raw[key] for key in ("TRACKER_ID", "TRACKER_DOMAIN", "TRACKER_SCRIPT_PATH") if key in raw
    }
    if tracker_keys:
        try:  # the core's reading, which names the option at fault
            read_config(tracker_keys, DJANGO_SOURCE)
        except ConfigurationError as exc:
            messages.append(
                Error(
                    str(exc),
                    hint="Both come from the snippet in journy.io: TRACKER_ID is init's trackerId, TRACKER_DOMAIN "
                    "the origin the tracker script loads from, e.g. 'https://go.acme.com'.",
                    id="journy.E010",
                )
            )
    snippet_on = bool(tracker_id or raw.get("WEBSITE_DOMAIN"))
    if snippet_on and secret is None and raw.get("ENABLED", True) is not False:
        messages.append(
            Warning(
                "The snippet is configured without JOURNY['VERIFICATION_SECRET']: identify and account calls carry "
                "no verification, and journy.io refuses them once the website turns identity verification on.",
                hint="Set JOURNY['VERIFICATION_SECRET'] to the website's identity-verification secret.",
                id="journy.W002",
            )
        )
    if snippet_on and not _request_context_processor():
        messages.append(
            Warning(
                "No template engine has 'django.template.context_processors.request': {% journy_snippet %} "
                "renders a comment instead of the snippet.",
                hint="Add it to TEMPLATES[...]['OPTIONS']['context_processors'].",
                id="journy.W004",
            )
        )
    return messages


def _request_context_processor() -> bool:
    for engine in getattr(settings, "TEMPLATES", []):
        processors = engine.get("OPTIONS", {}).get("context_processors", [])
        if "django.template.context_processors.request" in processors:
            return True
    return False


def check_middleware(**kwargs: Any) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        return [
            Warning(
                f"{MIDDLEWARE} is not in MIDDLEWARE: the __journey cookie is linked only at login, not for "
                "remembered sessions.",
                hint=f"Add {MIDDLEWARE!r} after AuthenticationMiddleware.",
                id="journy.W003",
            )
        ]
    position = middleware.index(MIDDLEWARE)
    for needed in _NEEDS_BEFORE:
        if needed in middleware and middleware.index(needed) > position:
            return [
                Error(
                    f"{MIDDLEWARE} comes before {needed}: it needs the session and the user.",
                    hint=f"Move {MIDDLEWARE!r} after {needed!r}.",
                    id="journy.E008",
                )
            ]
    return []


#: Every check, in the order ``journy_check`` shows them.
def check_property_attributes(**kwargs: Any) -> list[CheckMessage]:
    """``USER_PROPERTIES`` / ``ACCOUNT_PROPERTIES`` / ``USER_DELETED`` / ``ACCOUNT_DELETED`` /
    ``ACCOUNT_DOMAIN_FIELD`` naming an attribute their model does not have (``E011``): found here, at start-up,
    rather than when the first save fails to sync (or, for the domain, every account is sent without one)."""
    raw = _raw()
    if not _settings_load():
        return []
    try:
        models = {"USER_PROPERTIES": get_user_model(), "ACCOUNT_PROPERTIES": account_model()}
    except Exception:  # a missing or wrong model is E005's to report
        return []
    errors: list[CheckMessage] = []
    for key, model in models.items():
        if raw.get(key) is None or model is None:
            continue
        try:
            PropertyMap(raw[key], f"JOURNY[{key!r}]").check_against(model)
        except ConfigurationError as exc:
            if "does not have" in str(exc):  # a malformed setting is E004's to report
                errors.append(Error(str(exc), hint="Name a field, property or method of the model.", id="journy.E011"))
    for key, model in (("USER_DELETED", models["USER_PROPERTIES"]), ("ACCOUNT_DELETED", models["ACCOUNT_PROPERTIES"])):
        if isinstance(raw.get(key), str) and model is not None:  # the value's type is the settings' own error
            try:
                SoftDelete(raw[key], f"JOURNY[{key!r}]", model)
            except ConfigurationError as exc:
                errors.append(Error(str(exc), hint="Name a field of the model, or a callable.", id="journy.E011"))
    try:
        check_named_attribute(
            models["ACCOUNT_PROPERTIES"], raw.get("ACCOUNT_DOMAIN_FIELD"), "JOURNY['ACCOUNT_DOMAIN_FIELD']"
        )
    except ConfigurationError as exc:
        errors.append(Error(str(exc), hint="Name the account model's field that holds its domain.", id="journy.E011"))
    return errors


def _unless_malformed(check: Callable[..., list[CheckMessage]]) -> Callable[..., list[CheckMessage]]:
    """``check``, silent while ``settings.JOURNY`` is not a dict: E009 is then the one message."""

    @functools.wraps(check)
    def run(**kwargs: Any) -> list[CheckMessage]:
        raw = getattr(settings, "JOURNY", None)
        return [] if raw is not None and not isinstance(raw, dict) else check(**kwargs)

    return run


ALL_CHECKS: list[Callable[..., list[CheckMessage]]] = [
    check_settings_shape,
    *map(
        _unless_malformed,
        [
            check_api_key,
            check_api_url,
            check_queue,
            check_dotted_paths,
            check_account_model,
            check_property_attributes,
            check_snippet,
        ],
    ),
    check_middleware,
]


def register_checks() -> None:
    for check in ALL_CHECKS:
        register(check, "journy")
