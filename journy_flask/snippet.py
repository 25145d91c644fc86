"""The Jinja globals: ``{{ journy_snippet() }}`` for the base layout and ``{{ journy_event("name") }}``.

Both render with :mod:`journy_core.snippet`: every value goes through its script-safe JSON, the ``verification``
HMACs are computed here on the server (the secret never reaches the page), and the CSP nonce (``JOURNY_CSP_NONCE``,
else flask-talisman's ``csp_nonce()``) goes on each script tag. When tracking is off, or something fails, the page
gets an HTML comment saying why instead of the snippet: a template never breaks because of journy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import current_app, has_request_context
from jinja2 import pass_context
from jinja2.runtime import Context
from jinja2.utils import missing
from markupsafe import Markup
from werkzeug.local import LocalProxy

from journy_core.guard import guarded, report_exception
from journy_core.mapping import read_text
from journy_core.page import NOBODY, PageIdentity
from journy_core.snippet import SnippetEvent, Tracker, disabled_comment, render_event_script

from . import hooks
from .fingerprints import page_fingerprint
from .identities import _identify, account_id_of, is_account, is_authenticated, is_user
from .settings import Settings
from .state import EMPTY_PAGE, JournyState, page_data, recorded_page_data

__all__ = ["journy_event", "journy_snippet", "render_page_snippet", "snippet_global"]

_SKIPPED = "this request is skipped (JOURNY_SKIP_STAFF, JOURNY_INTERNAL_IPS or JOURNY_SKIP_REQUEST)"


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
    state = current_app.extensions.get("journy")
    if state is None:
        return None, _html(disabled_comment("journy_flask.Journy is not initialised on this app"))
    problem = state.settings.tracker_problem
    if problem is not None:
        return state, _html(disabled_comment(problem))
    return state, None


def render_page_snippet(
    state: JournyState,
    *,
    context: Context | None = None,
    screen: str | None = None,
    events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    pageview: bool | None = None,
) -> Markup:
    """The snippet for the current request (or, outside one, an anonymous page).

    This runs on every page, so it does the least it can: the HTML for a given user, account and screen is cached
    (:class:`~journy_core.page.SnippetCache`: rendering it costs JSON encoding and two HMACs), the CSP nonce added
    after the cache, and only pages with events are rendered anew.
    """
    return _page_snippet(state, context, screen, events, pageview)


def _page_snippet(
    state: JournyState,
    context: Context | None,
    screen: str | None,
    events: Iterable[SnippetEvent | Mapping[str, Any]],
    pageview: bool | None,
) -> Markup:
    """:func:`render_page_snippet` with positional arguments (cheaper to call on every page); ``pageview`` None:
    ``JOURNY_SEND_PAGEVIEW``."""
    settings = state.settings
    tracker = settings.tracker or _fetched_tracker(state)
    if tracker is None:
        return _html(disabled_comment(_why_no_tracker(state)))
    page, user, account = EMPTY_PAGE, None, None
    if has_request_context():
        page = recorded_page_data() or EMPTY_PAGE  # nothing set by the view: read-only defaults
        user = _page_user(state, context)
        if settings.has_skip_filters and hooks.skipped(state, user, page_data()):
            return _html(disabled_comment(_SKIPPED))
        account = hooks.current_account(state, page)
    cache, secret, nonce = state.snippet_cache, settings.verification_secret, _page_nonce(context, state)
    screen = page.screen if screen is None else screen
    pageview = settings.send_pageview if pageview is None else pageview
    if page.events or events:  # rendered anew: the events are this page's own
        identity = _identity(settings, user, account)
        return cache.render(tracker, settings, secret, identity, screen, pageview, nonce, [*page.events, *events])
    fingerprint = page_fingerprint(settings, user, account)
    if fingerprint is not None:  # model instances (or nobody): the identity is made only for a page not cached
        return cache.render_by(
            tracker, settings, secret, fingerprint, lambda: _identity(settings, user, account), screen, pageview, nonce
        )
    return cache.render(tracker, settings, secret, _identity(settings, user, account), screen, pageview, nonce)


def _fetched_tracker(state: JournyState) -> Tracker | None:
    """The tracker fetched by website domain when none is configured (never waited for: fetched in the
    background, a comment until it is here)."""
    return state.tracker_cache.get() if state.tracker_cache is not None else None


def _page_user(state: JournyState, context: Context | None) -> Any:
    """The logged-in user, taken from the page's context when Flask-Login put it there, else
    :func:`hooks.current_user`.

    Flask-Login's context processor (on unless ``LoginManager(add_context_processor=False)``) gives every template
    its ``current_user``, loaded already: reading it there is a dictionary lookup, where its ``current_user`` proxy
    reads ``flask.g`` twice through Flask's proxy (about 18,000 instructions, on every page). So the snippet
    identifies the user the page itself shows as ``current_user``: the same object, unless a view passes a
    ``current_user`` of its own to the template. A proxy passed that way (``current_user=current_user``) is
    resolved the usual way, since the identity caches go by the user's class.
    """
    if context is not None and state.has_login_manager and state.settings.current_user is None:
        found = context.parent.get("current_user")
        if found is not None and type(found) is not LocalProxy:
            return found if is_authenticated(found) else None
    return hooks.current_user(state)


def _identity(settings: Settings, user: Any, account: Any) -> PageIdentity:
    """What the snippet says of ``user`` (logged in, or None) and ``account`` (or None)."""
    user_id = email = user_properties = account_id = account_properties = None
    if user is not None:
        user_id = _identify(user, settings.user_id)  # user_id_of(), for a user known to be logged in
        email = read_text(user, settings.user_email)  # user_email_of(), for a user object
        user_map = settings.user_properties
        if user_map is not None and settings.snippet_properties and (user_id is not None or email is not None):
            user_properties = user_map.values(user) if is_user(settings, user) else None
    if account is not None:
        account_id = _identify(account, settings.account_id)  # account_id_of()
        account_map = settings.account_properties
        if account_map is not None and settings.snippet_properties and account_id is not None:
            account_properties = account_map.values(account) if is_account(settings, account) else None
    if user_id is None and email is None and account_id is None:
        return NOBODY
    return PageIdentity(user_id, email, user_properties, account_id, account_properties)


def _page_nonce(context: Context | None, state: JournyState) -> object | None:
    """The page's CSP nonce (:func:`_nonce`), answered without a call in the usual case: none anywhere."""
    if (
        state.settings.csp_nonce is None
        and context is not None
        and "csp_nonce" not in context.vars  # context.resolve_or_missing(), without the call
        and "csp_nonce" not in context.parent
    ):
        return None
    return _nonce(context, state)


def _why_no_tracker(state: JournyState) -> str:
    """Why the page has no tracker: the fetch by website domain has not brought one (yet)."""
    if state.tracker_cache is not None:
        return state.tracker_cache.why_missing()
    return f"the snippet of {state.settings.website_domain!r} could not be fetched (see the log)"


def _snippet_or_comment(
    state: JournyState | None,
    context: Context,
    screen: str | None,
    events: Iterable[SnippetEvent | Mapping[str, Any]],
    pageview: bool | None,
) -> Markup:
    """:func:`render_page_snippet` for a template: an HTML comment instead when tracking is off or it fails."""
    if state is None or state.settings.tracker_problem is not None:
        comment = _state_or_comment()[1]
        assert comment is not None  # what is wrong: not initialised, or no tracker
        return comment
    try:
        return _page_snippet(state, context, screen, events, pageview)
    except Exception:
        report_exception("rendering the journy.io snippet", loud=state.debug)
    return _html(disabled_comment("the snippet could not be rendered (see the log)"))


def snippet_global(state: JournyState) -> Callable[..., Markup]:
    """The ``journy_snippet`` Jinja global of one app (``init_app`` registers it): :func:`journy_snippet` bound to
    the app's state, which it then need not look up on every page."""

    @pass_context
    def journy_snippet_for_app(
        context: Context,
        *,
        screen: str | None = None,
        events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
        pageview: bool | None = None,
    ) -> Markup:
        return _snippet_or_comment(state, context, screen, events, pageview)

    journy_snippet_for_app.__name__ = journy_snippet_for_app.__qualname__ = "journy_snippet"
    journy_snippet_for_app.__doc__ = journy_snippet.__doc__
    return journy_snippet_for_app


@pass_context
def journy_snippet(
    context: Context,
    *,
    screen: str | None = None,
    events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    pageview: bool | None = None,
) -> Markup:
    """``{{ journy_snippet() }}``: the journy.io snippet for this page, with ``identify`` for the logged-in user
    and ``account`` for the current account. ``screen="Billing"`` records a screen instead of a pageview;
    ``pageview=False`` leaves the page view out (default: ``JOURNY_SEND_PAGEVIEW``)."""
    return _snippet_or_comment(current_app.extensions.get("journy"), context, screen, events, pageview)


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
            return _html(disabled_comment(_SKIPPED))
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
