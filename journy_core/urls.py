"""Where the API lives: the default base URL, the ``JOURNY_API_URL`` override, and the https rule."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

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
    if "@" in parts.netloc or parts.query or parts.fragment:
        return Secret(value)
    return value


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (localhost, 127.0.0.0/8, ::1): the only hosts plain http may reach."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate(url: str, source: str, *, allow_insecure: bool) -> str:
    problem = None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be an absolute http(s) URL such as https://api.journy.io"
    elif parts.query or parts.fragment:
        problem = "must not have a query string or fragment"
    elif parts.username or parts.password:
        problem = "must not carry credentials; the API key goes in api_key"
    elif parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        problem = (
            "uses plain http for a host that is not this machine; the API key would travel in clear. "
            "Use https (plain http is only accepted for localhost/127.0.0.1, e.g. the local emulator)"
        )
    if problem:
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.scheme else url[:80]
        if source == ENV_BASE_URL:
            raise ConfigurationError(f"The environment variable {ENV_BASE_URL}={shown!r} {problem}.")
        raise InvalidArgumentError(source, f"{shown!r} {problem}")
    return url.strip().rstrip("/")


def resolve_base_url(base_url: str | None, *, argument: str = "base_url", allow_insecure: bool = False) -> str:
    """The base URL to use: ``JOURNY_API_URL`` when set, else ``base_url``, else journy.io's; validated."""
    env = os.environ.get(ENV_BASE_URL, "").strip()
    if env:
        return _validate(env, ENV_BASE_URL, allow_insecure=allow_insecure)
    if base_url is None:
        return DEFAULT_BASE_URL
    if not isinstance(base_url, str):
        raise InvalidArgumentError(argument, f"expected a URL string, got {type(base_url).__name__}")
    return _validate(base_url, argument, allow_insecure=allow_insecure)
