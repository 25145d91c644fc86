"""Request hooks: who the current user and account are, the skip filters, and linking the ``__journey`` cookie.

The device cookie is linked to the user

- on Flask-Login's ``user_logged_in`` (``login_user()``) and ``user_loaded_from_cookie`` (a remembered session);
- on any request that carries a ``__journey`` cookie not yet linked in this session, once a user is logged in
  (the visitor reached the marketing site, which set the cookie, after logging in), after its view;
- when the app calls ``journy.link(...)`` itself (apps without Flask-Login).

Each device is linked once per session and user, by the rule of :mod:`journy_core.linking`, which keeps its record
in ``flask.session`` under :data:`SESSION_KEY`. A request without the cookie costs a context lookup and a dictionary
test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, session
from flask import request as current_request
from werkzeug.wrappers import Request

from journy_core import linking
from journy_core.batching import close_batch, open_batch
from journy_core.devices import COOKIE_NAME
from journy_core.filters import skip_reason
from journy_core.guard import guarded, report_exception
from journy_core.injection import inject, wants_injection
from journy_core.linking import linked_already

from .identities import is_authenticated, user_email_of, user_id_of
from .state import UNSET, JournyState, PageData, page_data

try:
    import flask_login
except ImportError:  # Flask-Login is optional: without it, apps call journy.link(...) themselves
    flask_login = None

__all__ = ["SESSION_KEY", "current_account", "current_user", "install", "link_device", "skipped"]

logger = logging.getLogger("journy")

#: Where ``flask.session`` keeps the record of the devices linked (:data:`journy_core.linking.SESSION_KEY`).
SESSION_KEY = linking.SESSION_KEY
#: Where a request's open batch is kept on ``flask.g``.
_BATCH = "_journy_batch"


_signals_lock = threading.Lock()
_signals_connected: list[bool] = []


def install(app: Flask, state: JournyState) -> None:
    """Hook ``app``: the per-request link check and, when Flask-Login is installed, its login signals."""

    def link_after_request(response: Response) -> Response:
        # Runs after every request: the usual cases (no ``__journey`` cookie, or a device this session already
        # linked) cost two context lookups, a few dictionary lookups and a substring test. The request and the
        # session themselves, not attributes through their proxies (several times dearer each): Flask documents
        # _get_current_object() for this ("Notes On Proxies").
        try:
            request = current_request._get_current_object()  # type: ignore[attr-defined]
            cookies = request.cookies  # parsed already, by the session interface
            if COOKIE_NAME not in cookies:  # a C-level test; MultiDict.get() is two Python calls
                return response
            record = session._get_current_object().get(SESSION_KEY)  # type: ignore[attr-defined]
            if not linked_already(record, cookies[COOKIE_NAME]):
                _link_current_user(state)
        except Exception:
            report_exception("linking the __journey cookie", loud=state.debug)
        return response

    if state.journy.batches:
        _install_batching(app)  # first: Flask runs after_request functions last-registered first
    app.after_request(link_after_request)
    if state.settings.inject_snippet:
        app.after_request(_snippet_injector(state))
    connect_login_signals()


def _snippet_injector(state: JournyState) -> Callable[[Response], Response]:
    """The ``after_request`` function of ``JOURNY_INJECT_SNIPPET``: the snippet put into each HTML page that has
    none (:mod:`journy_core.injection`); any failure leaves the page as it was, logged and counted."""
    from .snippet import render_page_snippet  # noqa: PLC0415 - the snippet module imports this one

    def inject_snippet(response: Response) -> Response:
        with guarded("putting the snippet into the page", loud=state.debug):
            streamed = response.is_streamed or response.direct_passthrough
            if wants_injection(response.headers.get("Content-Type"), response.content_encoding, streamed):
                charset = response.mimetype_params.get("charset", "utf-8")
                page = inject(response.get_data(), str(render_page_snippet(state)), charset)
                if page is not None:
                    response.set_data(page)
        return response

    return inject_snippet


def _install_batching(app: Flask) -> None:
    """Send what each request queues as one message (:mod:`journy_core.batching`) once its view has returned:
    after it and the ``after_request`` functions registered after ``Journy(app)`` (before a streaming response
    is iterated), or at teardown when the view raised. Only for backends that cross a process boundary."""

    def open_request_batch() -> None:
        setattr(g, _BATCH, open_batch())

    def close_request_batch() -> None:
        opened = g.pop(_BATCH, None)
        if opened is not None:
            close_batch(opened)

    def close_after_view(response: Response) -> Response:
        close_request_batch()
        return response

    def close_after_error(error: BaseException | None) -> None:
        close_request_batch()  # nothing left after close_after_view; the batch of a view that raised

    app.before_request(open_request_batch)
    app.after_request(close_after_view)
    app.teardown_request(close_after_error)


def connect_login_signals() -> bool:
    """Listen to Flask-Login's signals (once per process); False when Flask-Login is not installed."""
    if flask_login is None:
        return False
    with _signals_lock:
        if not _signals_connected:
            flask_login.user_logged_in.connect(_on_login, weak=False)
            flask_login.user_loaded_from_cookie.connect(_on_login, weak=False)
            _signals_connected.append(True)
    return True


def _on_login(sender: Any, user: Any = None, **extra: Any) -> None:
    app = sender if isinstance(sender, Flask) else current_app
    state: JournyState | None = app.extensions.get("journy")
    if state is None or user is None:
        return
    with guarded("linking the __journey cookie at login", loud=state.debug):
        link_device(
            state, user_id=user_id_of(state.settings, user), email=user_email_of(state.settings, user), user=user
        )


def current_user(state: JournyState) -> Any:
    """The logged-in user of this request (``JOURNY_CURRENT_USER``, else Flask-Login's), or None."""
    if state.settings.current_user is not None:
        found = state.settings.current_user()
        return found if found is not None and getattr(found, "is_authenticated", True) else None
    if state.has_login_manager is None:
        state.has_login_manager = flask_login is not None and getattr(current_app, "login_manager", None) is not None
    if not state.has_login_manager:
        return None  # Flask-Login absent, or installed but not set up on this app
    # The user itself, not the proxy: identities.py caches per class (type() of a proxy is LocalProxy). Flask
    # documents _get_current_object() for this ("Notes On Proxies"); it loads the user when nothing has yet.
    user = flask_login.current_user._get_current_object()
    return user if is_authenticated(user) else None


def current_account(state: JournyState, page: PageData | None = None) -> Any:
    """The account of this request: ``journy.set_account(...)``, else ``JOURNY_CURRENT_ACCOUNT()``, else None."""
    account = (page or page_data()).account
    if account is not UNSET:
        return account
    if state.settings.current_account is not None:
        return state.settings.current_account()
    return None


def skipped(state: JournyState, user: Any, page: PageData | None = None) -> bool:
    """Whether this request is left out of tracking (the rule of :func:`journy_core.filters.skip_reason`: staff,
    ``JOURNY_INTERNAL_IPS``, ``JOURNY_SKIP_REQUEST``); cached per request."""
    page = page or page_data()
    if page.skip is None:
        request = current_request._get_current_object()  # type: ignore[attr-defined]
        reason = skip_reason(state.settings, user=user, address=request.remote_addr, request=request)
        page.skip = reason is not None
    return page.skip


def link_device(
    state: JournyState,
    *,
    user_id: object = None,
    email: str | None = None,
    request: Request | None = None,
    user: Any = None,
) -> bool:
    """Queue ``link`` for the request's ``__journey`` cookie unless this session already linked that device to
    that user. Returns whether it did."""
    return _link(state, request, lambda: (user_id, email), lambda: user)


def _link_current_user(state: JournyState) -> bool:
    """Link the request's ``__journey`` cookie to the logged-in user, loaded only when the cookie holds a device
    that the session's record does not list."""
    settings = state.settings
    loaded: list[Any] = []

    def identify() -> linking.Identity | None:
        user = current_user(state)
        loaded.append(user)
        return None if user is None else (user_id_of(settings, user), user_email_of(settings, user))

    return _link(state, None, identify, lambda: loaded[-1])


def _link(
    state: JournyState,
    request: Request | None,
    identify: Callable[[], linking.Identity | None],
    user: Callable[[], Any],
) -> bool:
    """:func:`journy_core.linking.link_device` with Flask's facts: the request's cookie and session, and the skip
    filters of :func:`skipped` when in a request. ``user()`` is the user ``identify()`` named."""
    settings = state.settings
    in_request = has_request_context()
    request = request if request is not None else (current_request if in_request else None)
    if request is None:
        return False

    def skip() -> str | None:  # asked last, when all else says link
        return "a skip filter said so" if in_request and settings.has_skip_filters and skipped(state, user()) else None

    return linking.link_device(
        session._get_current_object() if in_request else None,  # type: ignore[attr-defined]
        request.cookies.get(COOKIE_NAME),
        enabled=settings.enabled,
        link_devices=settings.link_devices,
        identify=identify,
        enqueue=state.enqueue,
        skip_reason=skip,
    )
