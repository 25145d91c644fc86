# mypy: disable-error-code="import-untyped"
"""Linking the ``__journey`` visitor cookie to the user: once per session and device ID.

Called from the ``user_logged_in`` receiver and from :class:`~journy_django.middleware.JournyMiddleware` (a
remembered session, or a visitor who reached the marketing site after logging in). The cookie is untrusted:
:func:`journy_core.devices.clean_device_id` bounds and checks it, and a bad value is skipped with a debug log.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from journy_core import operations as ops
from journy_core.devices import COOKIE_NAME, clean_device_id, remember_link
from journy_core.guard import guarded

from .conf import get_journy, journy_settings
from .filters import skip_reason
from .identity import user_identity

__all__ = ["SESSION_KEY", "device_to_link", "link_device"]

logger = logging.getLogger("journy")

#: Where the session remembers the device IDs already linked.
SESSION_KEY = "_journy_linked_devices"


def device_to_link(request: HttpRequest) -> str | None:
    """The cookie's device ID when it is valid and not yet linked in this session (cheap: no user lookup)."""
    raw = request.COOKIES.get(COOKIE_NAME)
    if raw is None:
        return None
    device_id = clean_device_id(raw)
    if device_id is None:
        return None
    session = getattr(request, "session", None)
    linked = session.get(SESSION_KEY) if session is not None else None
    if isinstance(linked, list) and device_id in linked:
        return None
    return device_id


def link_device(request: HttpRequest, user: Any) -> bool:
    """Queue ``link`` for the request's device and ``user`` unless done in this session; True when queued."""
    linked = False
    with guarded("linking the __journey cookie", loud=settings.DEBUG):
        linked = _link_device(request, user)
    return linked  # noqa: RET504 - a return inside guarded() would hide the fallback from type checkers


def _link_device(request: HttpRequest, user: Any) -> bool:
    if not journy_settings()["LINK_DEVICES"]:
        return False
    # The device first: once linked in this session, the user (a query) is not even looked at.
    device_id = device_to_link(request)
    if device_id is None or user is None or not getattr(user, "is_authenticated", False):
        return False
    reason = skip_reason(request, user)
    if reason is not None:
        logger.debug("journy: not linking the device: %s", reason)
        return False
    session = getattr(request, "session", None)
    known = session.get(SESSION_KEY) if session is not None else None
    updated = remember_link(known if isinstance(known, list) else None, device_id)
    if updated is None:
        return False
    get_journy().enqueue(ops.link(device_id=device_id, user_id=user_identity(user)["user_id"]))
    if session is not None:
        session[SESSION_KEY] = updated
    return True


def on_user_logged_in(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver. ``login()`` rotates the session key but keeps its data: a device linked before
    in this session stays linked."""
    if request is not None:
        link_device(request, user)
