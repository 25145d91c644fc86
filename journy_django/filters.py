# mypy: disable-error-code="import-untyped"
"""Requests and users that are not tracked: the rule is :func:`journy_core.filters.skip_reason`; this module gives
it Django's facts (``REMOTE_ADDR``, and impersonation by django-hijack, django-impersonate or django-loginas).

A skipped request gets no device link and a snippet without ``identify``/``account`` (an HTML comment saying
why, for staff and impersonation, so an admin never shows up as the customer they are looking at).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from journy_core.filters import skip_reason as core_skip_reason

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


def skip_reason(request: HttpRequest | None, user: Any = None) -> str | None:
    """Why this request (and user) must not be tracked, or None to track it."""
    return skip_reason_with(journy_settings(), request, user)


def skip_reason_with(config: JournySettings, request: HttpRequest | None, user: Any = None) -> str | None:
    """:func:`skip_reason` with the settings already in hand (the snippet's path reads them once)."""
    if request is None:
        return core_skip_reason(config, user=user)
    return core_skip_reason(
        config,
        user=user,
        address=request.META.get("REMOTE_ADDR"),
        request=request,
        impersonated=lambda: is_impersonated(request),
    )
