# mypy: disable-error-code="import-untyped"
"""Linking the ``__journey`` visitor cookie to the user: Django's side of :mod:`journy_core.linking`.

Called from the ``user_logged_in`` receiver and from :class:`~journy_django.middleware.JournyMiddleware` (a
remembered session, or a visitor who reached the marketing site after logging in). The rule (once per session
and user, the cookie checked, the filters asked) is core's; this module supplies Django's facts: the settings,
``request.session``, the user's ID and :func:`~journy_django.filters.skip_reason`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from journy_core import linking
from journy_core.devices import COOKIE_NAME
from journy_core.guard import guarded

from .conf import get_journy, journy_settings
from .filters import skip_reason
from .identity import user_identity

__all__ = ["SESSION_KEY", "device_to_link", "link_device", "user_link_identity"]

#: Where the session keeps its record of the devices linked (:data:`journy_core.linking.SESSION_KEY`).
SESSION_KEY = linking.SESSION_KEY


def device_to_link(request: HttpRequest) -> str | None:
    """The cookie's device ID when linking is on, it is valid and this session has not linked it yet (cheap: no
    user lookup)."""
    config = journy_settings()
    device_id = linking.device_to_link(
        request.COOKIES.get(COOKIE_NAME), enabled=config.enabled, link_devices=config["LINK_DEVICES"]
    )
    if device_id is None:
        return None
    session = getattr(request, "session", None)
    if session is not None and linking.linked_already(session.get(SESSION_KEY), device_id):
        return None
    return device_id


def user_link_identity(user: Any) -> linking.Identity | None:
    """``(user_id, email)`` of a logged-in ``user`` (the email None when it has none), None for an anonymous one;
    as Flask's links name the user, the ID first (the session's record keeps the ID alone)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    ident = user_identity(user)
    return ident["user_id"], ident.get("email")


def link_device(request: HttpRequest, user: Any) -> bool:
    """Queue ``link`` for the request's device and ``user`` unless this session did; True when queued."""
    linked = False
    with guarded("linking the __journey cookie", loud=settings.DEBUG):
        config = journy_settings()
        linked = linking.link_device(
            getattr(request, "session", None),
            request.COOKIES.get(COOKIE_NAME),
            enabled=config.enabled,
            link_devices=config["LINK_DEVICES"],
            identify=lambda: user_link_identity(user),  # the user may be lazy: loaded only for a device to link
            enqueue=lambda operation: get_journy().enqueue(operation),
            skip_reason=lambda: skip_reason(request, user),
        )
    return linked  # noqa: RET504 - a return inside guarded() would hide the fallback from type checkers


def on_user_logged_in(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver. ``login()`` keeps the session's data for the same user (a device linked before
    in this session stays linked) and flushes it for another (whose devices are then linked to them)."""
    if request is not None:
        link_device(request, user)
