# mypy: disable-error-code="import-untyped"
"""``journy_django.middleware.JournyMiddleware``: links the ``__journey`` cookie of a logged-in visitor.

Put it after ``SessionMiddleware`` and ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "journy_django.middleware.JournyMiddleware",
    ]

Logging in links the cookie already (the ``user_logged_in`` receiver); the middleware covers the other first
times: a session remembered from an earlier visit, or a cookie set after the login (a visit to the marketing
site). A request without the cookie costs one dict lookup; with a device already linked in this session, a
session read; only a new device loads the user and queues a ``link``. It runs in sync and async stacks (no
thread hop on Django >= 5.0 async sessions). It also keeps the user ``request.auser()`` loads where
``{% journy_snippet %}`` finds it, for templates async views render in the event loop.

With a backend that crosses a process boundary (Celery, RQ, Django tasks) it also collects what the request
queues into one message (:mod:`journy_core.batching`), so that concurrent workers cannot reorder a request's
operations; with the in-process backends it does not (asking costs one more cached lookup per request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.apps import apps
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from journy_core import linking
from journy_core.batching import close_batch, open_batch
from journy_core.devices import COOKIE_NAME
from journy_core.guard import guarded
from journy_core.injection import inject, wants_injection

from .conf import JournyConfigurationError, get_journy, journy_settings
from .filters import skip_reason
from .links import SESSION_KEY, link_device, user_link_identity
from .snippet import remember_auser, render_for_request

__all__ = ["JournyMiddleware"]


class JournyMiddleware:
    """Link the visitor's device to the logged-in user, once per session and device ID."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        if not apps.is_installed("journy_django"):
            # Said at start-up (Django builds the middleware chain then), not by a template tag on some page later.
            raise JournyConfigurationError(
                "journy_django.middleware.JournyMiddleware is in MIDDLEWARE but 'journy_django' is not in "
                "INSTALLED_APPS: add it there (its signals, template tags and checks come with the app)."
            )
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        remember_auser(request)  # an async view under a sync stack renders its template in an event loop
        if _batches():
            return _with_snippet(request, self._call_in_batch(request))
        _link_new_device(request)
        return _with_snippet(request, self.get_response(request))

    def _call_in_batch(self, request: HttpRequest) -> Any:
        # What this request queues (a link, track() calls, committed saves) leaves as one message when the view
        # returns, also when it raised; a streaming response's later operations go on their own.
        opened = open_batch()
        try:
            _link_new_device(request)
            return self.get_response(request)
        finally:
            close_batch(opened)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        remember_auser(request)
        opened = open_batch() if _batches() else None
        try:
            if COOKIE_NAME in request.COOKIES:
                await alink_device(request)
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            page = await response
        finally:
            if opened is not None:
                close_batch(opened, send=False)
                if len(opened):
                    # Publishing may block (a broker, a database task backend): not on the event loop, but in the
                    # thread where this request's sync code runs.
                    await sync_to_async(opened.send)()
        if _injects():
            # Rendering reads the session and the user synchronously: in the thread sync code runs in.
            return await sync_to_async(_with_snippet)(request, page)
        return page


def _batches() -> bool:
    """Whether the app's backend sends a request's operations as one message (Celery, RQ, Django tasks)."""
    try:
        return get_journy().batches
    except Exception:  # settings the system checks report; never an error in every request
        return False


def _injects() -> bool:
    """Whether ``INJECT_SNIPPET`` is on (settings the system checks report count as off)."""
    try:
        return journy_settings().inject_snippet
    except Exception:  # settings the system checks report; never an error in every request
        return False


def _with_snippet(request: HttpRequest, response: Any) -> Any:
    """``response`` with the snippet put into its page when ``INJECT_SNIPPET`` is on and the page has none
    (:mod:`journy_core.injection`); any failure leaves the page as it was, logged and counted."""
    if not _injects() or not isinstance(response, HttpResponseBase):
        return response
    with guarded("putting the snippet into the page", loud=settings.DEBUG):
        streamed = response.streaming or not hasattr(response, "content")
        if wants_injection(response.get("Content-Type"), response.get("Content-Encoding"), streamed):
            page = inject(response.content, str(render_for_request(request)), response.charset or "utf-8")
            if page is not None:
                response.content = page
                if response.has_header("Content-Length"):
                    response["Content-Length"] = str(len(page))
    return response


def _link_new_device(request: HttpRequest) -> bool:
    """Link the request's ``__journey`` cookie unless this session linked its value already (the common case,
    answered from the session alone by :func:`journy_core.linking.linked_already`, without loading the user)."""
    raw = request.COOKIES.get(COOKIE_NAME)
    if raw is None:
        return False
    try:
        record = request.session.get(SESSION_KEY)
    except Exception:  # no session, or one that cannot be read: link_device() decides (guarded)
        record = None
    return not linking.linked_already(record, raw) and link_device(request, getattr(request, "user", None))


async def alink_device(request: HttpRequest) -> bool:
    """:func:`~journy_django.links.link_device` for async stacks: awaits the session and the user instead of
    touching them synchronously (which Django refuses in an event loop)."""
    session = getattr(request, "session", None)
    if session is None or not hasattr(session, "aget") or not hasattr(request, "auser"):
        return bool(await sync_to_async(_link_new_device)(request))  # Django 4.2: no aget() or auser()
    linked = False
    with guarded("linking the __journey cookie", loud=settings.DEBUG):
        linked = await _alink_device(request, session)
    return linked  # noqa: RET504 - a return inside guarded() would hide the fallback from type checkers


async def _alink_device(request: HttpRequest, session: Any) -> bool:
    # journy_core.linking.link_device() step by step, awaiting the session and the user where it calls them.
    config = journy_settings()
    device_id = linking.device_to_link(
        request.COOKIES.get(COOKIE_NAME), enabled=config.enabled, link_devices=config["LINK_DEVICES"]
    )
    if device_id is None:
        return False
    record = await session.aget(SESSION_KEY)
    if linking.linked_already(record, device_id):  # the common case: no user to load
        return False
    user = await request.auser()
    link = linking.plan_link(record, device_id, user_link_identity(user), lambda: skip_reason(request, user))
    if link is None:
        return False
    get_journy().enqueue(link.operation)
    await session.aset(SESSION_KEY, link.record)
    return True
