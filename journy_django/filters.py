# mypy: disable-error-code="import-untyped"
"""Requests and users that are not tracked: staff (``SKIP_STAFF``), impersonated sessions (``SKIP_IMPERSONATED``),
internal IPs (``INTERNAL_IPS``) and whatever ``SKIP_REQUEST(request)`` says.

A skipped request gets no device link and a snippet without ``identify``/``account`` (an HTML comment saying
why, for staff and impersonation, so an admin never shows up as the customer they are looking at).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.http import HttpRequest

from .conf import JournySettings, journy_settings

__all__ = ["is_impersonated", "skip_reason", "skip_reason_with"]

#: Session keys impersonation packages set: django-hijack (3.x ``hijack_history``, 2.x ``is_hijacked_user``),
#: django-impersonate (``_impersonate``), django-loginas (``loginas_original_session``).
IMPERSONATION_SESSION_KEYS = ("hijack_history", "is_hijacked_user", "_impersonate", "loginas_original_session")
_IMPERSONATION_KEYS = frozenset(IMPERSONATION_SESSION_KEYS)


def is_impersonated(request: HttpRequest) -> bool:
    """Whether a staff member is browsing as another user (django-hijack, django-impersonate, django-loginas)."""
    if getattr(request, "is_hijacked", False) or getattr(request, "impersonator", None) is not None:
        return True
    session = getattr(request, "session", None)
    if session is None:
        return False
    try:
        keys = session.keys()
        if _IMPERSONATION_KEYS.isdisjoint(keys):  # the common case: one pass over a few keys, in C
            return False
    except Exception:  # a session without keys() (or one that cannot be read here): ask it key by key  # noqa: S110
        pass
    try:
        return any(key in session and session[key] for key in IMPERSONATION_SESSION_KEYS)
    except Exception:  # a session backend that cannot be read here
        return False


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def skip_reason(request: HttpRequest | None, user: Any = None) -> str | None:
    """Why this request (and user) must not be tracked, or None to track it."""
    return skip_reason_with(journy_settings(), request, user)


def skip_reason_with(config: JournySettings, request: HttpRequest | None, user: Any = None) -> str | None:
    """:func:`skip_reason` with the settings already in hand (the snippet's path reads them once)."""
    if not config.enabled:
        return "JOURNY['ENABLED'] is False"
    if user is not None and config["SKIP_STAFF"] and getattr(user, "is_staff", False):
        return "staff user (JOURNY['SKIP_STAFF'])"
    if request is None:
        return None
    if config["SKIP_IMPERSONATED"] and is_impersonated(request):
        return "impersonated session (JOURNY['SKIP_IMPERSONATED'])"
    if config.internal_networks:
        ip = _client_ip(request)
        try:
            address = ipaddress.ip_address(ip) if ip else None
        except ValueError:
            address = None
        if address is not None and any(address in network for network in config.internal_networks):
            return "internal IP (JOURNY['INTERNAL_IPS'])"
    if config.skip_request is not None and config.skip_request(request):
        return "JOURNY['SKIP_REQUEST'] said so"
    return None
