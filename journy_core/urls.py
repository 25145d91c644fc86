"""Where the API lives: the default base URL, the ``JOURNY_API_URL`` override, and the https rule."""

from __future__ import annotations

import ipaddress
import os
from typing import NoReturn
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigurationError, InvalidArgumentError
from .secrets import Secret

__all__ = ["DEFAULT_BASE_URL", "is_loopback_host", "redact_url", "resolve_base_url"]

DEFAULT_BASE_URL = "https://api.journy.io"
#: The environment variable that overrides the configured base URL (examples and tests point it at the emulator).
ENV_BASE_URL = "JOURNY_API_URL"


def redact_url(value: object) -> object:
    """``value`` as a :class:`~journy_core.secrets.Secret` (its ``repr`` redacted) when it is a URL that carries
    credentials, a query string or a fragment, where a key pasted by mistake would sit; else ``value`` itself.
    Such a URL is refused when it is used, with a message that leaves those parts out; until then, the settings
    that hold it may show in a traceback's variables or a debug page."""
    if not isinstance(value, str) or isinstance(value, Secret):
        return value
    try:
        parts = urlsplit(value.strip())
    except ValueError:  # unparseable (an unbalanced "[" in the host): shown by no one, refused when used
        return Secret(value)
    return Secret(value) if _secret_parts(parts) is not None else value


def _secret_parts(parts: SplitResult) -> str | None:
    """Why a URL is refused when it has parts where a secret would sit (credentials, a query string, a fragment);
    None when it has none. One rule for :func:`redact_url` (what it hides) and :func:`resolve_base_url` (what it
    refuses), so that every URL refused for them was hidden until then."""
    if parts.query or parts.fragment:
        return "must not have a query string or fragment"
    if "@" in parts.netloc or "@" in parts.path:  # "user:pass@host" without "//" parses as a path
        return "must not carry credentials; the API key goes in api_key"
    return None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (localhost, 127.0.0.0/8, ::1): the only hosts plain http may reach."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate(url: str, source: str, *, allow_insecure: bool, from_environment: bool = False) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # an unbalanced "[" in the host: nothing of it is shown, it may hold anything
        _refuse(source, "the URL", "is not a URL (an unbalanced '[' or ']' in it?)", from_environment)
    problem = _problem(parts, allow_insecure=allow_insecure)
    if problem is not None:
        shown = repr(f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.scheme else url[:80])
        if _secret_parts(parts) is not None:  # leave out whatever may hold a secret
            shown = repr(f"{parts.scheme}://{parts.hostname}") if parts.scheme and parts.hostname else "the URL"
        _refuse(source, shown, problem, from_environment)
    return url.strip().rstrip("/")


def _problem(parts: SplitResult, *, allow_insecure: bool) -> str | None:
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL such as https://api.journy.io"
    secret = _secret_parts(parts)
    if secret is not None:
        return secret
    if parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        return (
            "uses plain http for a host that is not this machine; the API key would travel in clear. "
            "Use https (plain http is only accepted for localhost/127.0.0.1, e.g. the local emulator)"
        )
    return None


def _refuse(source: str, shown: str, problem: str, from_environment: bool) -> NoReturn:
    # Not by the name: Flask's setting is spelt JOURNY_API_URL too.
    if from_environment:
        raise ConfigurationError(f"The environment variable {ENV_BASE_URL}={shown} {problem}.")
    raise InvalidArgumentError(source, f"{shown} {problem}")


def resolve_base_url(base_url: str | None, *, argument: str = "base_url", allow_insecure: bool = False) -> str:
    """The base URL to use: ``JOURNY_API_URL`` when set, else ``base_url``, else journy.io's; validated."""
    env = os.environ.get(ENV_BASE_URL, "").strip()
    if env:
        return _validate(env, ENV_BASE_URL, allow_insecure=allow_insecure, from_environment=True)
    if base_url is None:
        return DEFAULT_BASE_URL
    if not isinstance(base_url, str):
        raise InvalidArgumentError(argument, f"expected a URL string, got {type(base_url).__name__}")
    return _validate(base_url, argument, allow_insecure=allow_insecure)
