# mypy: disable-error-code="import-untyped"
"""The journy.io snippet for one request: what ``{% journy_snippet %}`` renders.

``init``, then ``identify`` for a logged-in user and ``account`` for the request's account
(``JOURNY["CURRENT_ACCOUNT"]``), each with its ``verification`` HMAC when ``VERIFICATION_SECRET`` is set, then
``pageview`` (or ``screen`` when the view named one with :func:`set_screen`), then the events the view added with
:func:`add_page_event`. Values are escaped by :func:`journy_core.render_snippet`; the CSP nonce of Django 6's CSP
middleware or of django-csp goes on both script tags. When tracking is off, or the request is filtered, or the
snippet is misconfigured, the page gets an HTML comment saying why instead, never an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import MethodType
from typing import Any

from django.conf import settings
from django.db import models
from django.http import HttpRequest
from django.utils.functional import LazyObject, empty
from django.utils.safestring import SafeString, mark_safe

from journy_core import (
    InvalidArgumentError,
    Tracker,
    TrackerCache,
    disabled_comment,
)
from journy_core.guard import guarded, report_exception
from journy_core.page import NOBODY, PageIdentity, SnippetCache
from journy_core.snippet import SnippetEvent, event_left_out, page_event, render_event_script

from .conf import JournyConfigurationError, JournySettings, cached, journy_settings, snippet_client
from .filters import skip_reason, skip_reason_with
from .identity import (
    account_identity,
    account_properties,
    is_account,
    user_email,
    user_properties,
)

__all__ = [
    "add_page_event",
    "csp_nonce",
    "remember_auser",
    "render_event",
    "render_for_request",
    "request_user",
    "set_account",
    "set_screen",
    "tracker",
]

logger = logging.getLogger("journy")

try:  # Django >= 6.0: the nonce of its ContentSecurityPolicyMiddleware
    from django.middleware.csp import get_nonce as django_get_nonce
except ImportError:  # Django < 6.0
    django_get_nonce = None

_SCREEN = "_journy_screen"
_EVENTS = "_journy_page_events"
_ACCOUNT = "_journy_account"
_AUSER = "_journy_auser"  # the user request.auser() returned (set by remember_auser's wrapper)


def set_screen(request: HttpRequest, name: str) -> None:
    """Make the page's snippet call ``screen`` with ``name`` instead of ``pageview`` (single-page app views)."""
    setattr(request, _SCREEN, name)


def add_page_event(
    request: HttpRequest, name: str, metadata: Mapping[str, object] | None = None, *, account: Any = None
) -> None:
    """Record an event from the browser when this page loads (``journy("event", ...)`` in the snippet).

    Checked here as :func:`journy_django.track` checks an event: bad arguments (a list or None in the metadata, a
    lone surrogate, a number beyond 2**53) raise :class:`~journy_core.InvalidArgumentError` at this call, never
    while the page renders. For events the server knows about, :func:`journy_django.track` is more reliable (ad
    blockers do not stop it).
    """
    account_id = None if account is None else account_identity(account)["account_id"]
    event = page_event(name, metadata, account_id)
    events: list[SnippetEvent] | None = getattr(request, _EVENTS, None)
    if events is None:
        events = []
        setattr(request, _EVENTS, events)
    events.append(event)


def _tracker_or_reason() -> tuple[Tracker | None, str | None]:
    static: tuple[Tracker | None, str | None] | None = cached("static_tracker", _static_tracker)
    if static is not None:
        return static
    config = journy_settings()
    website = config["WEBSITE_DOMAIN"]
    if website:
        if not config.api_key:
            return None, "JOURNY['WEBSITE_DOMAIN'] needs JOURNY['API_KEY'] to fetch the snippet"

        def build_cache() -> TrackerCache:
            client = snippet_client()

            def fetch(domain: str) -> str:
                return str(client.get_tracking_snippet(domain).data["snippet"])

            return TrackerCache(fetch, website, ttl=config["SNIPPET_CACHE_SECONDS"])

        cache: TrackerCache = cached("tracker_cache", build_cache)
        fetched = cache.get()  # never waits: fetched in the background, a comment on the page until it is here
        if fetched is None:
            return None, cache.why_missing()
        return fetched, None
    return None, "set JOURNY['TRACKER_ID'] and JOURNY['TRACKER_DOMAIN'] (or JOURNY['WEBSITE_DOMAIN'])"


def _static_tracker() -> tuple[Tracker | None, str | None] | None:
    """The tracker of ``TRACKER_ID``/``TRACKER_DOMAIN`` (or the reason there is none); None for ``WEBSITE_DOMAIN``."""
    config = journy_settings()
    tracker_id, tracking_domain = config["TRACKER_ID"], config["TRACKER_DOMAIN"]
    if tracker_id and tracking_domain:
        try:
            return Tracker(tracker_id, tracking_domain, script_path=config["TRACKER_SCRIPT_PATH"]), None
        except ValueError as exc:
            raise JournyConfigurationError(f"JOURNY['TRACKER_ID'/'TRACKER_DOMAIN']: {exc}") from None
    if config["WEBSITE_DOMAIN"]:
        return None
    return None, "set JOURNY['TRACKER_ID'] and JOURNY['TRACKER_DOMAIN'] (or JOURNY['WEBSITE_DOMAIN'])"


def tracker() -> Tracker | None:
    """The website's tracker from the settings (or fetched for ``WEBSITE_DOMAIN``), or None."""
    return _tracker_or_reason()[0]


def csp_nonce(request: HttpRequest) -> object | None:
    """The request's CSP nonce: Django 6's ``ContentSecurityPolicyMiddleware`` or django-csp's; None without one.

    Both are lazy objects, falsy until read: compare with ``is not None``.
    """
    nonce = None if django_get_nonce is None else django_get_nonce(request)
    if nonce is None:
        nonce = getattr(request, "csp_nonce", None)  # django-csp
    return nonce


def _in_event_loop() -> bool:
    """Whether this thread runs an event loop: a template an async view renders, where no query may run."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _remembering_auser(request: HttpRequest, auser: Callable[[], Awaitable[Any]]) -> Any:
    user = await auser()
    setattr(request, _AUSER, user)
    return user


def remember_auser(request: HttpRequest) -> None:
    """Make ``request.auser()`` leave the user it loads where the tag finds it (``JournyMiddleware`` calls this).

    A template an async view renders runs in the event loop, where ``request.user`` may not run its query: the tag
    identifies the user the view awaited instead. ``AuthenticationMiddleware`` sets ``request.auser`` (Django >=
    5.0) as a plain attribute; this wraps it the same way (a ``partial``), so nothing else changes.
    """
    auser = getattr(request, "auser", None)
    if auser is not None:
        request.auser = partial(_remembering_auser, request, auser)


def _loaded_lazy_user(user: Any) -> Any:
    """A lazy ``request.user`` already loaded (in a thread, by an async view), else None, never loading it.

    Django has no public way to ask whether a ``LazyObject`` was evaluated, and Django 4.2 has no ``auser()``: this
    is the one read of its private ``_wrapped``, from the lazy object's own ``__dict__`` (``getattr`` would load the
    user). If a Django version renames it, the tag falls back to rendering anonymously in the event loop, and
    ``test_a_lazy_user_loaded_in_a_thread_is_found_without_loading_an_unloaded_one`` fails on that version.
    """
    if not isinstance(user, LazyObject):
        return user
    wrapped = vars(user).get("_wrapped", empty)
    return None if wrapped is empty else wrapped


def request_user(request: HttpRequest) -> Any:
    """The request's user without a database query in an event loop (an async view rendering a template): the
    user ``auser()`` already loaded, or None when it was never loaded there."""
    return _request_user(request, _in_event_loop())


def _request_user(request: HttpRequest, in_event_loop: bool) -> Any:
    user = getattr(request, "user", None)
    if user is None or not in_event_loop:
        return user
    awaited = getattr(request, _AUSER, None)
    if awaited is not None:
        return awaited
    return _loaded_lazy_user(user)


def set_account(request: HttpRequest, account: Any) -> None:
    """Name the request's account (an instance or its ID) instead of asking ``JOURNY["CURRENT_ACCOUNT"]``; async
    views need it, since a template rendered in the event loop cannot run the callable's queries."""
    setattr(request, _ACCOUNT, account)


def _current_account(request: HttpRequest, config: JournySettings, in_event_loop: bool) -> Any:
    if hasattr(request, _ACCOUNT):
        return getattr(request, _ACCOUNT)
    function = config.current_account
    if function is None:
        return None
    if in_event_loop:
        logger.debug("journy: an async view rendered the snippet: call journy_django.set_account() for its account")
        return None
    return function(request)


def render_for_request(request: HttpRequest | None, *, screen: str | None = None) -> SafeString:
    """The snippet's HTML for ``request`` (an HTML comment when it is not rendered)."""
    try:
        html = _render(request, screen)
    except Exception:  # a plain try keeps guarded()'s set-up off every page's path
        report_exception("rendering the journy.io snippet", loud=settings.DEBUG)
        html = disabled_comment("error while rendering the snippet (see the journy log)")
    if html.__class__ is SafeString:  # a cached snippet, marked safe once
        return html
    return mark_safe(html)  # noqa: S308 - render_snippet and disabled_comment escape every value


def _render(request: HttpRequest | None, screen: str | None) -> str:
    config = journy_settings()
    found, comment = _page_tracker(config, request)
    if found is None or request is None:
        return comment
    in_event_loop = _in_event_loop()  # asked once: outside a loop, the answer costs an exception
    user = _request_user(request, in_event_loop)
    reason = skip_reason_with(config, request, user)
    if reason is not None:
        return disabled_comment(reason)
    who = _identity(request, config, user, in_event_loop)
    if screen is None:
        screen = getattr(request, _SCREEN, None)
    secret = config["VERIFICATION_SECRET"] or None
    events = getattr(request, _EVENTS, ())
    page: str = _PAGES.render(
        found, config, secret, who, screen, bool(config["SEND_PAGEVIEW"]), csp_nonce(request), events
    )
    return page


def _page_tracker(config: Any, request: HttpRequest | None) -> tuple[Tracker | None, str]:
    """The tracker the page loads, or None and the HTML comment that says why the page has no snippet."""
    if not config.enabled:
        return None, disabled_comment("JOURNY['ENABLED'] is False")
    found, problem = _tracker_or_reason()
    if found is None:
        return None, disabled_comment(problem or "no tracker")
    if request is None:
        return None, disabled_comment(
            "no request in the template context (add 'django.template.context_processors.request')"
        )
    return found, ""


def _identity(request: HttpRequest, config: Any, user: Any, in_event_loop: bool) -> PageIdentity:
    """What the snippet says about the user and account, read once: the cache key and the renderer's arguments."""
    if user is not None:
        user = _user_itself(user)
    if user is None or not getattr(user, "is_authenticated", False):
        return NOBODY
    if isinstance(user, models.Model):
        user_id, email = user.pk, user_email(user)
    else:
        user_id, email = user, None
    # SNIPPET_PROPERTIES False: the page names the user and account, and the server-side sync sends properties.
    user_values = user_properties().values(user) if config.snippet_properties else None
    account = _current_account(request, config, in_event_loop)
    if account is None:
        return PageIdentity(user_id, email, user_values)
    account_id = account.pk if isinstance(account, models.Model) else account
    account_map = None
    if config.snippet_properties and isinstance(account, models.Model) and is_account(account):
        account_map = account_properties()
    account_values = None if account_map is None else account_map.values(account)
    return PageIdentity(user_id, email, user_values, account_id, account_values)


def _user_itself(user: Any) -> Any:
    """The user object itself when ``user`` is the lazy ``request.user`` in front of it, else ``user``.

    Every read through the lazy proxy is a chain of Python calls (about 1.5 us), and the snippet reads whether the
    user is logged in, the ID, the email and each property: one read instead, of ``get_username()`` (users and
    ``AnonymousUser`` have it), a bound method whose ``__self__`` is the object itself.
    """
    method = getattr(user, "get_username", None)
    if isinstance(method, MethodType) and not isinstance(method.__self__, type):
        return method.__self__
    return user


#: Rendered snippets (marked safe) by what they depend on: :class:`~journy_core.page.SnippetCache` keeps the rules.
_PAGES: SnippetCache[SafeString] = SnippetCache(SafeString, size=4096)


def render_event(
    request: HttpRequest | None, name: str, metadata: Mapping[str, object] | None = None, account: Any = None
) -> SafeString:
    """A ``<script>`` calling ``journy("event", ...)`` (what ``{% journy_event %}`` renders), with the request's
    account and its verification; empty when tracking is off or the request is filtered. Rendered by
    :func:`~journy_core.snippet.render_event_script`, as Flask's tag is: it carries the queue stub, so it works
    before the snippet too. An event that :func:`~journy_core.snippet.page_event` refuses renders an HTML comment
    and logs a warning naming it: a bad value in a template never breaks the page."""
    html = ""
    with guarded(f"rendering the journy.io event {name!r}", loud=settings.DEBUG):
        html = _render_event(request, name, metadata, account)
    return mark_safe(html)  # noqa: S308 - render_event_script and event_left_out escape every value


def _render_event(request: HttpRequest | None, name: str, metadata: Mapping[str, object] | None, account: Any) -> str:
    config = journy_settings()
    if not config.enabled or request is None:
        return ""
    in_event_loop = _in_event_loop()  # asked once: outside a loop, the answer costs an exception
    user = _request_user(request, in_event_loop)
    if skip_reason(request, user) is not None:
        return ""
    if account is None and user is not None and getattr(user, "is_authenticated", False):
        account = _current_account(request, config, in_event_loop)
    try:
        event = page_event(name, metadata, None if account is None else account_identity(account)["account_id"])
    except InvalidArgumentError as exc:
        return event_left_out(name, exc)
    secret = config["VERIFICATION_SECRET"] or None
    return render_event_script(event, verification_secret=secret, nonce=csp_nonce(request))
