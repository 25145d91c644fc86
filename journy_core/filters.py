"""Which requests and users are left out of tracking: the rule both adapters apply.

A left-out request gets no device link and a snippet without ``identify``/``account``, so an admin looking at the
site as a customer never shows up as that customer. The adapter supplies the facts its framework knows (the user,
the client's address, whether the session is impersonated) and gets the reason, or None to track.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Network", "is_internal", "may_leave_out", "parse_networks", "should_sync", "skip_reason"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: object, key: str) -> tuple[Network, ...]:
    """``INTERNAL_IPS`` as networks: a list of addresses or networks (``"10.0.0.0/8"``)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(
            f"{key} must be a list of IP addresses or networks (e.g. ['10.0.0.0/8']); got {value!r}."
        )
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ConfigurationError(f"{key} holds {item!r}, which is not an IP address or network.") from None
    return tuple(networks)


def is_internal(address: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether the client ``address`` is in one of ``networks`` (an address that does not parse is not)."""
    if not address or not networks:
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def skip_reason(
    config: Config,
    *,
    user: Any = None,
    address: str | None = None,
    request: Any = None,
    impersonated: Callable[[], bool] | None = None,
) -> str | None:
    """Why this request and user are not tracked, or None to track them.

    ``request`` is what ``SKIP_REQUEST`` is called with (None outside a request: only the user is judged);
    ``impersonated`` answers whether a staff member is browsing as ``user`` (asked only with ``SKIP_IMPERSONATED``).
    """
    if not config.enabled:
        return f"{config.key('ENABLED')} is False"
    if user is not None and config.skip_staff and getattr(user, "is_staff", False):
        return f"staff user ({config.key('SKIP_STAFF')})"
    if request is None:
        return None
    if impersonated is not None and config.skip_impersonated and impersonated():
        return f"impersonated session ({config.key('SKIP_IMPERSONATED')})"
    if is_internal(address, config.internal_ips):
        return f"internal IP ({config.key('INTERNAL_IPS')})"
    if config.skip_request is not None and config.skip_request(request):
        return f"{config.key('SKIP_REQUEST')} said so"
    return None


def should_sync(config: Config, obj: object, *, is_user: bool) -> bool:
    """Whether a saved or deleted user or account is sent: the per-object opt-out.

    False when ``obj.journy_should_sync()`` returns False, when ``SHOULD_SYNC(obj)`` does, for a user when
    ``SYNC_USERS`` is off, and for a staff user with ``SKIP_STAFF``.
    """
    if is_user and not config.sync_users:
        return False
    hook = getattr(obj, "journy_should_sync", None)
    if callable(hook) and not hook():
        return False
    if config.should_sync is not None and not config.should_sync(obj):
        return False
    return not (is_user and config.skip_staff and getattr(obj, "is_staff", False))


def may_leave_out(config: Config, model: type, *, is_user: bool) -> bool:
    """Whether :func:`should_sync` can be False for some instance of ``model``: when not, an adapter that holds only
    primary keys need not load the objects to ask it. Beside it so that a new condition there is seen here."""
    if config.should_sync is not None or hasattr(model, "journy_should_sync"):
        return True
    return is_user and (not config.sync_users or config.skip_staff)
