"""The Jinja globals: ``{{ journy_snippet() }}`` for the base layout and ``{{ journy_event("name") }}``.

Both render with :mod:`journy_core.snippet`: every value goes through its script-safe JSON, the ``verification``
HMACs are computed here on the server (the secret never reaches the page), and the CSP nonce (``JOURNY_CSP_NONCE``,
else flask-talisman's ``csp_nonce()``) goes on each script tag. When tracking is off, or something fails, the page
gets an HTML comment saying why instead of the snippet: a template never breaks because of journy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flask import current_app, g, has_request_context
from flask import globals as _flask_globals
from jinja2 import pass_context
from jinja2.runtime import Context
from jinja2.utils import missing
from markupsafe import Markup

from journy_core.guard import guarded, report_exception
from journy_core.snippet import SnippetEvent, Tracker, disabled_comment, render_event_script, render_snippet

from . import hooks
from .identities import (
    _authenticated_by_class,
    _default_readers,
    _identify,
    _read_id,
    account_id_of,
    is_account,
    is_authenticated,
    is_user,
)
from .state import EMPTY_PAGE, G_NAME, UNSET, JournyState, page_data

#: The app context itself (Flask 3.0 and 3.1): one context-variable read instead of LocalProxy lookups on every
#: page; None on a Flask without it, where the public proxies do the same.
_cv_app: Any = getattr(_flask_globals, "_cv_app", None)
_cv_request: Any = getattr(_flask_globals, "_cv_request", None)

__all__ = ["SafeHTML", "journy_event", "journy_snippet", "render_page_snippet", "snippet_global"]


class SafeHTML(str):
    """HTML that is safe as it is, for Jinja: a ``str`` with ``__html__`` (markupsafe's protocol, as ``Markup``),
    whose ``__html__`` is ``str.__str__`` (C code): Jinja outputs it with two Python calls fewer than ``Markup``,
    and ``{{ journy_snippet() }}`` is on every page."""

    __slots__ = ()
    __html__ = str.__str__


def _html(text: str) -> Markup:
    """Mark the core renderer's output as safe HTML: it escapes every value it writes (script-safe JSON inside
    the script, ``html.escape`` in attributes, a comment that cannot be closed early)."""
    return Markup(text)  # noqa: S704 - built only from journy_core.snippet's escaped output


def _nonce(context: Context | None, state: JournyState) -> object | None:
    """``JOURNY_CSP_NONCE()``, else a ``csp_nonce`` in the template context or the Jinja globals (flask-talisman
    registers ``csp_nonce()`` there)."""
    csp_nonce = state.settings.csp_nonce
    if csp_nonce is not None:
        configured: object = csp_nonce()
        return configured
    if context is not None:
        found = context.resolve_or_missing("csp_nonce")  # not .get(): a miss would raise and catch a KeyError
        if found is missing:
            return None
    else:
        found = current_app.jinja_env.globals.get("csp_nonce")
    if callable(found):
        found = found()
    return None if found is None or found == "" else found


def _state_or_comment() -> tuple[Any, Markup | None]:
    app_ctx = _cv_app.get(None) if _cv_app is not None else None
    app = app_ctx.app if app_ctx is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get("journy")
    if state is None:
        return None, _html(disabled_comment("journy_flask.Journy is not initialised on this app"))
    problem = state.settings.tracker_problem
    if problem is not None:
        return state, _html(disabled_comment(problem))
    return state, None


#: Rendered snippets kept per app; past this many distinct (user, account, page) combinations the cache restarts.
SNIPPET_CACHE_SIZE = 2048


def render_page_snippet(
    state: JournyState,
    *,
    context: Context | None = None,
    screen: str | None = None,
    events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    pageview: bool = True,
) -> Markup:
    """The snippet for the current request (or, outside one, an anonymous page).

    This runs on every page, so it does the least it can: the HTML for a given user, account and screen is cached
    (rendering it costs JSON encoding and two HMACs), and only pages with a CSP nonce or events are rendered anew.
    """
    return _render_page_snippet(state, context, screen, events, pageview, None)


def _render_page_snippet(
    state: JournyState,
    context: Context | None,
    screen: str | None,
    events: Iterable[SnippetEvent | Mapping[str, Any]],
    pageview: bool,
    app_ctx: Any,
) -> Markup:
    """:func:`render_page_snippet`, with positional arguments (a cheaper call) and the app context when the caller
    has it."""
    settings = state.settings
    tracker: Tracker | None = settings.tracker
    if tracker is None and state.tracker_cache is not None:
        tracker = state.tracker_cache.get()  # never waits: fetched in the background, a comment until it is here
    if tracker is None:
        return _html(disabled_comment(_why_no_tracker(state)))
    user_id = email = account_id = user_properties = account_properties = None
    extra_events: Sequence[SnippetEvent | Mapping[str, Any]] = list(events) if events else ()
    if _cv_request.get(None) is not None if _cv_request is not None else has_request_context():
        if app_ctx is None and _cv_app is not None:
            app_ctx = _cv_app.get(None)
        namespace = app_ctx.g if app_ctx is not None else g._get_current_object()  # flask.g, looked up once
        namespace_vars = namespace.__dict__
        page = namespace_vars.get(G_NAME) or EMPTY_PAGE  # nothing set by the view: read-only defaults
        user = namespace_vars.get("_login_user") if state.has_login_manager else None  # Flask-Login's
        if user is None or settings.current_user is not None:
            user = hooks.current_user(state, namespace)
        elif not is_authenticated(user):
            user = None
        if settings.has_skip_filters and hooks.skipped(state, user, page_data()):
            return _html(disabled_comment("this request is skipped (JOURNY_INTERNAL_IPS or JOURNY_SKIP)"))
        if user is not None:
            user_id = _identify(user, settings.user_id)  # user_id_of(), for a user known to be logged in
            if settings.user_email is not None:  # user_email_of(), inlined
                found = getattr(user, settings.user_email, None)
                email = found if isinstance(found, str) and found.strip() else None
            user_map = settings.user_properties
            if (
                user_map is not None
                and settings.snippet_properties
                and (user_id is not None or email is not None)
                and is_user(settings, user)
            ):
                user_properties = user_map(user)
        account = page.account  # journy.set_account(...), else JOURNY_CURRENT_ACCOUNT()
        if account is UNSET:
            account = settings.current_account() if settings.current_account is not None else None
        if account is not None:
            account_id = _identify(account, settings.account_id)  # account_id_of()
            account_map = settings.account_properties
            if (
                account_map is not None
                and settings.snippet_properties
                and account_id is not None
                and is_account(settings, account)
            ):
                account_properties = account_map(account)
        if screen is None:
            screen = page.screen
        if page.events:
            extra_events = [*page.events, *extra_events]
    if (
        settings.csp_nonce is None
        and context is not None
        and "csp_nonce" not in context.vars  # context.resolve_or_missing(), without the call
        and "csp_nonce" not in context.parent
    ):
        nonce = None  # the usual case
    else:
        nonce = _nonce(context, state)
    key: tuple[object, ...] | None = None
    if nonce is None and not extra_events:  # a nonce changes on every request; events are rare: render those
        if state.snippet_cache_settings is not settings or state.snippet_cache_tracker is not tracker:
            state.snippet_cache.clear()  # a refreshed tracker, or settings swapped by the test helpers
            state.snippet_cache_settings, state.snippet_cache_tracker = settings, tracker
        key = (
            screen,
            pageview,
            user_id,
            email,
            None if user_properties is None else tuple(user_properties.items()),
            account_id,
            None if account_properties is None else tuple(account_properties.items()),
        )
        try:
            cached = state.snippet_cache.get(key)
        except TypeError:  # an unhashable property value (a list): no caching for this page
            key, cached = None, None
        if cached is not None:
            return cached
    html = _html(
        render_snippet(
            tracker,
            verification_secret=settings.verification_secret,
            nonce=nonce,
            pageview=pageview,
            screen=screen,
            user_id=user_id,
            email=email,
            user_properties=user_properties,
            account_id=account_id,
            account_properties=account_properties,
            events=extra_events,
        )
    )
    if key is not None:
        _keep(state.snippet_cache, key, html)
    return html


def _why_no_tracker(state: JournyState) -> str:
    """Why the page has no tracker: the fetch by website domain has not brought one (yet)."""
    if state.tracker_cache is not None:
        return state.tracker_cache.why_missing()
    return f"the snippet of {state.settings.website_domain!r} could not be fetched (see the log)"


def _keep(cache: dict[tuple[object, ...], Any], key: tuple[object, ...], html: str) -> None:
    """Cache ``html`` under ``key``; past :data:`SNIPPET_CACHE_SIZE` entries the cache starts over."""
    if len(cache) >= SNIPPET_CACHE_SIZE:
        cache.clear()
    cache[key] = html


def _allows_short_path(state: JournyState) -> bool:
    """Whether these settings let the short path of :func:`snippet_global` answer: tracking on, a configured
    tracker (not one fetched by website domain), Flask-Login's user (not ``JOURNY_CURRENT_USER``), no skip filter,
    no nonce callable. Checked once per settings object (the test helpers swap them)."""
    settings = state.settings
    state.page_cache.clear()
    state.page_cache_settings = settings
    state.short_path = (
        settings.tracker_problem is None
        and settings.tracker is not None
        and settings.current_user is None
        and settings.csp_nonce is None
        and not settings.has_skip_filters
    )
    return state.short_path


def _short_page(state: JournyState, context: Context) -> str | None:
    """The snippet of the usual page, from the cache in the fewest steps (this runs on every page), or None when
    the page needs :func:`_render_page_snippet`: a view that set a screen, an account or events, a CSP nonce, a user
    Flask-Login has not loaded, or settings that need more (see :func:`_allows_short_path`). Renders what
    :func:`_render_page_snippet` renders for the same page (tested)."""
    settings = state.settings
    if state.page_cache_settings is not settings and not _allows_short_path(state):
        return None
    if not state.short_path or "csp_nonce" in context.vars or "csp_nonce" in context.parent:
        return None
    app_ctx = _cv_app.get(None)
    if app_ctx is None or _cv_request.get(None) is None:
        return None
    namespace_vars = app_ctx.g.__dict__
    user = namespace_vars.get("_login_user")  # the user Flask-Login loaded for this request
    if user is None or G_NAME in namespace_vars:
        return None
    authenticated = _authenticated_by_class.get(type(user))  # is_authenticated(), for a class seen before
    if authenticated is None:
        return None
    user_id = email = user_properties = account_id = account_properties = None
    if authenticated:
        if settings.user_id is None and _default_readers.get(type(user)) is _read_id:  # _identify(), inlined
            value = getattr(user, "id", None)
            if value is not None and value is not True and value is not False:
                user_id = value if type(value) is str else str(value)
        else:
            user_id = _identify(user, settings.user_id)
        if settings.user_email is not None:
            found = getattr(user, settings.user_email, None)
            email = found if isinstance(found, str) and found.strip() else None
        if (
            settings.user_properties is not None
            and settings.snippet_properties
            and (user_id is not None or email is not None)
            and is_user(settings, user)
        ):
            user_properties = settings.user_properties(user)
    # From here on the page is rendered on this path: JOURNY_CURRENT_ACCOUNT() is the app's code, called once.
    current_account = settings.current_account
    account = current_account() if current_account is not None else None
    if account is not None:
        if settings.account_id is None and _default_readers.get(type(account)) is _read_id:  # _identify(), inlined
            value = getattr(account, "id", None)
            if value is not None and value is not True and value is not False:
                account_id = value if type(value) is str else str(value)
        else:
            account_id = _identify(account, settings.account_id)
        if (
            settings.account_properties is not None
            and settings.snippet_properties
            and account_id is not None
            and is_account(settings, account)
        ):
            account_properties = settings.account_properties(account)
    key: tuple[object, ...] | None = (user_id, email, account_id)
    if user_properties is not None or account_properties is not None:
        key = (
            user_id,
            email,
            account_id,
            None if user_properties is None else tuple(user_properties.items()),
            None if account_properties is None else tuple(account_properties.items()),
        )
    try:
        html = state.page_cache.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable property value (a list): rendered, not cached
        key, html = None, None
    if html is None:
        assert settings.tracker is not None  # checked by _allows_short_path()
        html = SafeHTML(
            render_snippet(
                settings.tracker,
                verification_secret=settings.verification_secret,
                user_id=user_id,
                email=email,
                user_properties=user_properties,
                account_id=account_id,
                account_properties=account_properties,
            )
        )
        if key is not None:
            _keep(state.page_cache, key, html)
    return html


def snippet_global(state: JournyState) -> Callable[..., Markup | str]:
    """The ``journy_snippet`` Jinja global of one app (``init_app`` registers it): :func:`journy_snippet` bound to
    the app's state, so that the usual page (no ``screen``, ``events`` or ``pageview=False``) skips finding the app
    and goes straight to the cache."""

    @pass_context
    def journy_snippet_for_app(
        context: Context,
        *,
        screen: str | None = None,
        events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
        pageview: bool = True,
    ) -> Markup | str:
        if screen is None and pageview and not events and _cv_app is not None:
            try:
                html = _short_page(state, context)
            except Exception:
                report_exception("rendering the journy.io snippet", loud=state.debug)
                return _html(disabled_comment("the snippet could not be rendered (see the log)"))
            if html is not None:
                return html
        return journy_snippet(context, screen=screen, events=events, pageview=pageview)

    journy_snippet_for_app.__name__ = journy_snippet_for_app.__qualname__ = "journy_snippet"
    journy_snippet_for_app.__doc__ = journy_snippet.__doc__
    return journy_snippet_for_app


@pass_context
def journy_snippet(
    context: Context,
    *,
    screen: str | None = None,
    events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    pageview: bool = True,
) -> Markup | str:
    """``{{ journy_snippet() }}``: the journy.io snippet for this page, with ``identify`` for the logged-in user
    and ``account`` for the current account. ``screen="Billing"`` records a screen instead of a pageview."""
    app_ctx = _cv_app.get(None) if _cv_app is not None else None  # _state_or_comment(), inlined: every page
    app = app_ctx.app if app_ctx is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get("journy")
    if state is None or state.settings.tracker_problem is not None:
        comment = _state_or_comment()[1]
        assert comment is not None  # what is wrong: not initialised, or no tracker
        return comment
    try:
        return _render_page_snippet(state, context, screen, events, pageview, app_ctx)
    except Exception:
        report_exception("rendering the journy.io snippet", loud=state.debug)
    return _html(disabled_comment("the snippet could not be rendered (see the log)"))


@pass_context
def journy_event(
    context: Context, name: str, metadata: Mapping[str, object] | None = None, *, account: Any = None
) -> Markup:
    """``{{ journy_event("opened_billing", {"plan": "pro"}) }}``: record an event from the browser when this part
    of the page loads (anywhere in the page, before or after the snippet). It carries the page's account (or
    ``account``) and its ``verification``."""
    state, comment = _state_or_comment()
    if comment is not None:
        return comment
    result: Markup | None = None
    with guarded("rendering a journy.io event", loud=state.debug):
        if has_request_context() and hooks.skipped(state, hooks.current_user(state)):
            return _html(disabled_comment("this request is skipped (JOURNY_INTERNAL_IPS or JOURNY_SKIP)"))
        result = _event_script(context, state, name, metadata, account)
    return result if result is not None else _html(disabled_comment("the event could not be rendered (see the log)"))


def _event_script(
    context: Context, state: JournyState, name: str, metadata: Mapping[str, object] | None, account: Any
) -> Markup:
    settings = state.settings
    if account is None and has_request_context():
        account = hooks.current_account(state)
    event = SnippetEvent(name, metadata, account_id_of(settings, account))
    nonce = _nonce(context, state)
    return _html(render_event_script(event, verification_secret=settings.verification_secret, nonce=nonce))
