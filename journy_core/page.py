"""Who a page is about (:class:`PageIdentity`) and its rendered snippet, cached (:class:`SnippetCache`).

Both adapters' snippet tags end here: each reads the request's user and account the way its framework says
(``request.user``, Flask-Login, ``CURRENT_ACCOUNT``), builds a :class:`PageIdentity`, and asks its
:class:`SnippetCache` for the page. A user browsing gets the same snippet on every page, and rendering it (JSON
escaping, up to three HMACs) is most of the tag's cost, so the HTML is kept by everything it depends on.

The rules, once:

- The key holds the screen, whether a page view is sent, the verification secret, and the identity with the type
  of every ID and property value: ``7``, ``"7"`` and ``True`` are equal to Python (``1 == True``) but not the same
  snippet (``True`` is refused as an ID; a property keeps its JSON type).
- Property values are read on every page and are part of the key, so a change shows on the next page.
- A value that cannot be hashed (a list among the properties) is rendered, not cached.
- A page with events is rendered anew: events are rare and their own.
- An adapter that can read, in one step, what a page's identity is made of (the instance's identity key and its
  raw attribute values, with their types) keys the page by that fingerprint instead
  (:meth:`SnippetCache.render_by`): the identity is then made only for a page not cached yet.
- The CSP nonce, new on every request, is added after the cache (:func:`~journy_core.snippet.with_nonce`), the way
  :func:`~journy_core.snippet.render_snippet` adds it, so a cached page with a nonce is the same HTML as an
  uncached one.
- Bounded: past ``size`` entries the cache starts over. A new tracker (fetched again) or a new settings object
  (a settings change, a test's override) starts it over too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

from .mapping import PropertyValues
from .snippet import SnippetEvent, render_snippet, with_nonce
from .tracker import Tracker

__all__ = ["NOBODY", "PageIdentity", "PropertyValues", "SnippetCache", "property_values"]

#: The HTML type an adapter marks its output with (``SafeString``, ``Markup``): a ``str`` subclass.
Html = TypeVar("Html", bound=str)


class PageIdentity(NamedTuple):
    """Who a page's snippet names: the user (``identify``) and the account (``account``); None where there is none.

    IDs are what the adapter read (an ``int`` primary key, a ``str``, a ``UUID``): the renderer checks and
    serializes them. ``email`` is a stripped string (:func:`journy_core.mapping.read_text`) or None. Properties are
    :data:`PropertyValues` (:meth:`~journy_core.mapping.PropertyMap.values`, or :func:`property_values` of a dict).
    """

    #: The user's ID, or None for an anonymous page.
    user_id: Any = None
    #: The user's email, or None.
    email: str | None = None
    #: The user's properties for ``identify``, or None to send none.
    user_properties: PropertyValues | None = None
    #: The page's account ID, or None.
    account_id: Any = None
    #: The account's properties for ``account``, or None to send none.
    account_properties: PropertyValues | None = None


#: The anonymous page: nobody logged in, no account.
NOBODY = PageIdentity()

#: Marks the keys of :meth:`SnippetCache.render_by`, so that no fingerprint equals a key of ``render``.
_BY_FINGERPRINT = object()


def property_values(properties: Mapping[str, object] | None) -> PropertyValues | None:
    """``properties`` (a property map's dict) as :data:`PropertyValues`, each value with its type.

    >>> property_values({"seats": 7, "plan": "7"})
    (('seats', <class 'int'>, 7), ('plan', <class 'str'>, '7'))
    """
    if properties is None:
        return None
    values = properties.values()
    return tuple(zip(properties.keys(), map(type, values), values, strict=True))  # no Python loop: on every page


def _as_dict(values: PropertyValues | None) -> dict[str, Any] | None:
    """The properties dict for the renderer (None for none, as an empty map sends none)."""
    if not values:
        return None
    return {name: value for name, _, value in values}


class SnippetCache(Generic[Html]):
    """Rendered snippets of one app (or process) by everything they depend on; see the module's rules.

    ``mark`` turns the renderer's escaped HTML into the adapter's safe-HTML type (Django's ``SafeString``, Flask's
    ``Markup``), once per entry rather than on every page. Safe to share between threads: at worst two threads
    render the same page once each.

    >>> cache = SnippetCache(str)
    >>> page = cache.render(Tracker("T1", "https://go.acme.com"), None, None, PageIdentity(user_id=7), None, True)
    >>> '"userId":"7"' in page, len(cache)
    (True, 1)
    """

    def __init__(self, mark: Callable[[str], Html], size: int = 4096) -> None:
        self._mark = mark
        #: How many pages are kept before the cache starts over.
        self.size = size
        self._entries: dict[tuple[object, ...], Html] = {}
        # What the entries were rendered with: the cache holds the tracker, so its identity is never reused.
        self._tracker: Tracker | None = None
        self._settings: object = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every rendered page."""
        self._entries.clear()

    def render(
        self,
        tracker: Tracker,
        settings: object,
        verification_secret: str | bytes | None,
        who: PageIdentity,
        screen: str | None,
        pageview: bool,
        nonce: object | None = None,
        events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    ) -> Html:
        """The snippet of a page about ``who``: :func:`~journy_core.snippet.render_snippet`'s HTML, marked.

        ``settings`` is the adapter's settings object (compared by identity: a new one starts the cache over).
        Positional arguments, since this runs on every page. Raises what the renderer raises for a bad ID.
        """
        if events:
            return self._mark(self._html(tracker, verification_secret, who, screen, pageview, nonce, events))
        key = (screen, pageview, verification_secret, who, who[0].__class__, who[3].__class__)
        return self._page(tracker, settings, verification_secret, key, lambda: who, screen, pageview, nonce)

    def render_by(
        self,
        tracker: Tracker,
        settings: object,
        verification_secret: str | bytes | None,
        fingerprint: tuple[object, ...],
        identify: Callable[[], PageIdentity],
        screen: str | None,
        pageview: bool,
        nonce: object | None = None,
    ) -> Html:
        """:meth:`render`, keyed by ``fingerprint`` instead of the identity: what the adapter reads the identity
        from (the object's identity key, its raw attribute values and their types), of which the identity is a
        function. ``identify()`` makes the identity only when the page is not cached: on the usual page, seen
        before, reading what the identity is made of costs less than making it."""
        key = (_BY_FINGERPRINT, screen, pageview, verification_secret, fingerprint)
        return self._page(tracker, settings, verification_secret, key, identify, screen, pageview, nonce)

    def _page(
        self,
        tracker: Tracker,
        settings: object,
        verification_secret: str | bytes | None,
        key: tuple[object, ...],
        identify: Callable[[], PageIdentity],
        screen: str | None,
        pageview: bool,
        nonce: object | None,
    ) -> Html:
        """The cached page of ``key``, rendered for ``identify()`` and kept when it is not there yet."""
        if tracker is not self._tracker or settings is not self._settings:
            self._entries.clear()
            self._tracker, self._settings = tracker, settings
        try:
            page = self._entries.get(key)
        except TypeError:  # an unhashable property value (a list): rendered, not cached
            return self._mark(self._html(tracker, verification_secret, identify(), screen, pageview, nonce, ()))
        if page is None:
            page = self._mark(self._html(tracker, verification_secret, identify(), screen, pageview, None, ()))
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = page
        if nonce is None:
            return page
        return self._mark(with_nonce(page, nonce))

    @staticmethod
    def _html(
        tracker: Tracker,
        verification_secret: str | bytes | None,
        who: PageIdentity,
        screen: str | None,
        pageview: bool,
        nonce: object | None,
        events: Iterable[SnippetEvent | Mapping[str, Any]],
    ) -> str:
        user_id, email, user_properties, account_id, account_properties = who
        return render_snippet(
            tracker,
            verification_secret=verification_secret,
            nonce=nonce,
            pageview=pageview,
            screen=screen,
            user_id=user_id,
            email=email,
            user_properties=_as_dict(user_properties),
            account_id=account_id,
            account_properties=_as_dict(account_properties),
            events=events,
        )
