"""What a :class:`~journy_core.config.Config` builds: the app's :class:`~journy_core.Journy`, a worker's client, and
the client that fetches a website's snippet. Both adapters build them here, so the errors read the same.

Every error is a :class:`~journy_core.ConfigurationError` naming the option as the app spells it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import ENV_API_KEY, Config
from .errors import ConfigurationError, InvalidArgumentError
from .urls import resolve_base_url

if TYPE_CHECKING:
    from .client import Client
    from .journy import Journy

__all__ = ["api_base_url", "build_journy", "queue_of", "snippet_client", "worker_client"]


def queue_of(config: Config) -> Mapping[str, Any]:
    """The ``QUEUE`` the app delivers with: ``disabled`` when ``ENABLED`` is False, the ``thread`` default unset."""
    if not config.enabled:
        return {"BACKEND": "disabled"}
    return config.queue or {"BACKEND": "thread"}


def missing_key(config: Config, what: str) -> ConfigurationError:
    """The error for an API key that is needed and set nowhere: it lists every place it can be set."""
    return ConfigurationError(
        f"{config.key('API_KEY')} is not set, nor the {ENV_API_KEY} environment variable, and {what}: set one of "
        "them (journy.io settings, Connections; or the emulator's key for development: python -m "
        f"journy_core.emulator), or {config.key('QUEUE')} = {{'BACKEND': 'memory'}} in tests, or "
        f"{config.key('ENABLED')} = False."
    )


def api_base_url(config: Config) -> str:
    """The API base URL in use (the ``JOURNY_API_URL`` environment variable first), validated."""
    try:
        return resolve_base_url(config.api_url, argument=config.key("API_URL"))
    except ConfigurationError:  # the environment variable's: the message names it
        raise
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _client_options(config: Config, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"base_url": api_base_url(config), **extra}
    if config.timeout is not None:
        options["timeout"] = config.timeout
    return options


def build_journy(config: Config) -> Journy:
    """The :class:`~journy_core.Journy` the app enqueues to, with its ``QUEUE``, ``TIMEOUT`` and ``ON_FAILURE``."""
    from .journy import Journy  # noqa: PLC0415 - loads requests; the emulator imports this package without it

    queue = queue_of(config)
    options = _client_options(config)  # its errors name their option (API_URL, or the environment variable)
    try:
        return Journy(config.api_key, queue=queue, on_failure=config.on_failure, **options)
    except InvalidArgumentError as exc:
        if exc.argument == "api_key" and config.api_key is None:
            backend = queue.get("BACKEND", "thread")
            raise missing_key(config, f"the {backend!r} backend delivers from this process") from None
        name = {"api_key": "API_KEY", "base_url": "API_URL", "timeout": "TIMEOUT"}.get(exc.argument, "QUEUE")
        raise ConfigurationError(f"{config.key(name)}: {exc}") from None
    except (ConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"{config.key('QUEUE')}: {exc}") from None


def worker_client(config: Config) -> Client:
    """The client a Celery, RQ or Django-tasks worker of this app delivers with (one connection)."""
    from .client import Client  # noqa: PLC0415

    if config.api_key is None:
        raise missing_key(config, "this worker delivers the app's calls")
    return Client(config.api_key, **_client_options(config, pool_size=1))


def snippet_client(config: Config) -> Client:
    """The client that fetches the ``WEBSITE_DOMAIN`` snippet (``GET /tracking/snippet``)."""
    from .client import Client  # noqa: PLC0415

    if config.api_key is None:
        raise missing_key(config, f"{config.key('WEBSITE_DOMAIN')} fetches the website's snippet with it")
    return Client(config.api_key, **_client_options(config))
