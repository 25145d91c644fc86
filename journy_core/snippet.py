"""The journy.io website snippet, rendered on the server with ``verification`` hashes and safe escaping.

Shared by the Django template tag and the Flask Jinja global. Every value written into the inline script goes
through :func:`script_json`, so no user-controlled value (a name, an email, a property) can close the
``<script>`` element or break out of the JavaScript string it is in. The verification secret is used to
compute hashes and never written out.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone, tzinfo
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidArgumentError, JournyError
from .urls import is_loopback_host
from .values import serialize_id, serialize_metadata, serialize_properties, serialize_text
from .verification import secret_key, sign

__all__ = [
    "SnippetEvent",
    "Tracker",
    "TrackerCache",
    "disabled_comment",
    "render_event_script",
    "render_snippet",
    "script_json",
]

logger = logging.getLogger("journy")

#: The queue stub of journy.io's own snippets. It is written without ``||=`` (unlike the contract's
#: description) so that it also runs in browsers that predate logical assignment (Safari < 14, Chrome < 85).
LOADER_STUB = (
    "window.journy=window.journy||function(_,n,o){window.__journy_queue__||(window.__journy_queue__=[]),"
    "window.__journy_queue__.push({command:_,args:n,date:Date.now(),callback:o})};"
)


def script_json(value: object) -> str:
    """``value`` as JSON that is safe anywhere inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` (so ``</script>`` and ``<!--``
    cannot appear), and U+2028/U+2029 become escapes (older JavaScript engines end a string at them), as
    Django's ``json_script`` and Jinja's ``tojson`` do.

    >>> script_json({"name": "</script>"})
    '{"name":"\\\\u003c/script\\\\u003e"}'
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _blank(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


@dataclass(frozen=True)
class Tracker:
    """Where a website's tracker loads from and how it is initialised.

    ``tracking_domain`` is the customer's CNAME origin (``https://go.acme.com``) serving ``script_path``
    (``/tracker.js``; newer installs use ``/analytics.js``). ``domain`` is the value passed to
    ``journy("init", {domain})``; journy.io's own snippets (the WordPress plugin, the Next.js demo, the
    ``@journyio/web-types`` README) pass the tracking origin there, which is the default. ``site_id`` is
    passed as ``siteId`` when set (some installs have one).

    >>> Tracker("8f2c", "https://go.acme.com/").script_url
    'https://go.acme.com/tracker.js'
    """

    tracker_id: str
    tracking_domain: str
    script_path: str = "/tracker.js"
    domain: str | None = None
    site_id: str | None = None

    def __post_init__(self) -> None:
        if _blank(self.tracker_id):
            raise InvalidArgumentError("tracker_id", "must be a non-empty string (the snippet's tracker ID)")
        object.__setattr__(self, "tracker_id", self.tracker_id.strip())
        origin = _origin(self.tracking_domain)
        object.__setattr__(self, "tracking_domain", origin)
        path = self.script_path
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or _has_space(path):
            raise InvalidArgumentError(
                "script_path",
                "must be a path starting with a single '/', such as '/tracker.js' or '/analytics.js'",
            )
        if self.domain is None:
            object.__setattr__(self, "domain", origin)
        elif _blank(self.domain) or _has_space(self.domain.strip()):
            raise InvalidArgumentError("domain", "must be a non-empty string without spaces, or None")
        else:
            object.__setattr__(self, "domain", self.domain.strip())
        if self.site_id is not None:
            if _blank(self.site_id):
                raise InvalidArgumentError("site_id", "must be a non-empty string, or None")
            object.__setattr__(self, "site_id", self.site_id.strip())

    @property
    def script_url(self) -> str:
        """The URL of the tracker script."""
        return self.tracking_domain + self.script_path

    @classmethod
    def from_snippet(cls, snippet_html: str) -> Tracker:
        """The tracker described by a snippet from ``GET /tracking/snippet`` (``result.data["snippet"]``).

        Reads the script URL (a ``<script src>`` or a script created in JavaScript, ending in ``/tracker.js``
        or ``/analytics.js``) and the ``trackerId``, ``domain`` and ``siteId`` of ``journy("init", {...})``,
        with JavaScript or JSON keys and either quote. Raises :class:`InvalidArgumentError` (``"snippet"``)
        otherwise.
        """
        if not isinstance(snippet_html, str):
            raise InvalidArgumentError(
                "snippet", f"expected the snippet's HTML as a str, got {type(snippet_html).__name__}"
            )
        init = _INIT.search(snippet_html)
        if init is None:
            raise InvalidArgumentError("snippet", 'no journy("init", {...}) call found')
        fields = {m["key"]: _js_string(m["value"], m["quote"]) for m in _FIELD.finditer(init["body"])}
        if "trackerId" not in fields:
            raise InvalidArgumentError("snippet", 'journy("init", {...}) has no trackerId string')
        script = _SCRIPT_URL.search(snippet_html)
        if script is None:
            raise InvalidArgumentError(
                "snippet", "no tracker script URL (ending in /tracker.js or /analytics.js) found"
            )
        url = html.unescape(script["url"])
        if url.startswith("//"):
            url = "https:" + url
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            return cls(
                tracker_id=fields["trackerId"],
                tracking_domain=f"{parts.scheme}://{parts.netloc}",
                script_path=path,
                domain=fields.get("domain"),
                site_id=fields.get("siteId"),
            )
        except InvalidArgumentError as exc:
            raise InvalidArgumentError("snippet", f"unusable tracker: {exc}") from None


def _has_space(text: str) -> bool:
    return any(ch.isspace() or ord(ch) < 32 for ch in text)


# A host name or bracketed IPv6 address, and an optional port: nothing that could need escaping.
_NETLOC = re.compile(r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _origin(value: object) -> str:
    problem = None
    if not isinstance(value, str):
        problem = f"expected a URL string, got {type(value).__name__}"
    else:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "must be the tracking origin as an absolute URL, such as 'https://go.acme.com'"
        elif not _NETLOC.fullmatch(parts.netloc):
            problem = "has characters a host name cannot have; expected e.g. 'https://go.acme.com'"
        elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            problem = "must be an origin only, such as 'https://go.acme.com'; put the path in script_path"
        elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
            problem = "must use https (plain http is only accepted for localhost/127.0.0.1)"
        else:
            return f"{parts.scheme}://{parts.netloc}".lower()
    raise InvalidArgumentError("tracking_domain", problem)


# journy("init", {...}) and the quoted fields in its object: trackerId: "x", "domain": 'y', ...
_INIT = re.compile(r"""journy\(\s*(["'])init\1\s*,\s*\{(?P<body>[^{}]*)\}""")
_FIELD = re.compile(
    r"""(?<![\w$])(?P<kq>["']?)(?P<key>trackerId|domain|siteId)(?P=kq)\s*:\s*"""
    r"""(?P<quote>["'])(?P<value>(?:\\.|(?!(?P=quote))[^\\\n])*)(?P=quote)"""
)
# The tracker script URL, quoted, in a src attribute or a JavaScript assignment.
_SCRIPT_URL = re.compile(
    r"""(["'])(?P<url>(?:https?:)?//[^"'\s<>/]+(?:/[^"'\s<>]*)?/(?:tracker|analytics)\.js(?:\?[^"'\s<>]*)?)\1"""
)


def _js_string(body: str, quote: str) -> str:
    """The value of a quoted JavaScript string literal's body (simple escapes, as snippets contain)."""
    if "\\" not in body:
        return body
    if quote == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    try:
        value = json.loads(f'"{body}"')
    except ValueError:
        raise InvalidArgumentError(
            "snippet", 'a journy("init") string uses an escape this parser cannot read'
        ) from None
    return str(value)


class TrackerCache:
    """The :class:`Tracker` of a website, fetched from journy.io when only the website's domain is configured.

    ``fetch(domain)`` returns the snippet's HTML; the adapters pass
    ``lambda d: client.get_tracking_snippet(d).data["snippet"]``. :meth:`get` fetches lazily, keeps the result
    for ``ttl`` seconds, and never raises: on failure it logs a warning and serves the last good tracker (or
    None) without trying again for ``retry_after`` seconds, so an outage of journy.io never slows pages down
    by more than one fetch per ``retry_after``.
    """

    def __init__(
        self,
        fetch: Callable[[str], str],
        domain: str,
        ttl: float = 3600.0,
        retry_after: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(fetch):
            raise InvalidArgumentError("fetch", "must be a callable returning the snippet HTML of a domain")
        self.domain = serialize_text(domain, "domain", "the website's domain name")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidArgumentError("ttl", "must be a positive number of seconds")
        if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or not retry_after >= 0:
            raise InvalidArgumentError("retry_after", "must be a number of seconds, zero or more")
        self._fetch = fetch
        self._ttl = float(ttl)
        self._retry_after = float(retry_after)
        self._clock = clock
        self._lock = threading.Lock()
        # One tuple, replaced whole, so the lock-free read in get() never sees half an update.
        self._state: tuple[Tracker | None, float | None] = (None, None)  # (tracker, next fetch at)

    def get(self) -> Tracker | None:
        """The tracker, fetched when missing or older than ``ttl``; None while it could never be fetched."""
        try:
            tracker, next_fetch = self._state
            if next_fetch is not None and self._clock() < next_fetch:
                return tracker
            if tracker is not None:
                # Stale: one thread refreshes while the others keep serving the old tracker.
                if not self._lock.acquire(blocking=False):
                    return tracker
            else:
                # Nothing yet: wait for the fetch in flight rather than render pages without the snippet.
                self._lock.acquire()
            try:
                return self._refresh()
            finally:
                self._lock.release()
        except Exception:  # never let the snippet break a page
            logger.exception("journy.io: unexpected error in TrackerCache.get()")
            return self._state[0]

    def _refresh(self) -> Tracker | None:
        tracker, next_fetch = self._state
        now = self._clock()
        if next_fetch is not None and now < next_fetch:
            return tracker  # another thread refreshed (or failed) while this one waited
        try:
            fresh = Tracker.from_snippet(self._fetch(self.domain))
        except Exception as exc:
            # JournyError messages never carry the API key; other exceptions are not known to be clean.
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, JournyError) else type(exc).__name__
            logger.warning(
                "journy.io: could not load the tracking snippet for %r (%s); %s, next attempt in %.0f s",
                self.domain,
                reason,
                "keeping the previous tracker" if tracker is not None else "pages render without it",
                self._retry_after,
            )
            details = not isinstance(exc, JournyError)
            logger.debug("journy.io: snippet fetch failure details", exc_info=details)
            self._state = (tracker, self._clock() + self._retry_after)
            return tracker
        self._state = (fresh, self._clock() + self._ttl)
        return fresh


@dataclass(frozen=True)
class SnippetEvent:
    """An event to record from the browser when the page loads (``journy("event", {...})``).

    ``account_id`` defaults to the page's account; ``metadata`` follows the API's rules (no lists, no None).
    """

    name: str
    metadata: Mapping[str, object] | None = None
    account_id: str | int | uuid.UUID | None = None


_EVENT_KEYS = frozenset({"name", "metadata", "account_id"})


def _event(item: object, index: int) -> SnippetEvent:
    if isinstance(item, SnippetEvent):
        return item
    if isinstance(item, Mapping):
        unknown = sorted(str(key) for key in item if key not in _EVENT_KEYS)
        if unknown:
            raise InvalidArgumentError(
                f"events[{index}]", f"unknown keys {unknown}; allowed: 'name', 'metadata', 'account_id'"
            )
        if "name" not in item:
            raise InvalidArgumentError(f"events[{index}]", "needs a 'name'")
        return SnippetEvent(item["name"], item.get("metadata"), item.get("account_id"))
    got = type(item).__name__
    raise InvalidArgumentError(f"events[{index}]", f"expected a SnippetEvent or a dict, got {got}")


def _call(command: str, args: Mapping[str, Any] | None = None) -> str:
    if args is None:
        return f"journy({script_json(command)});"
    return f"journy({script_json(command)}, {script_json(args)});"


def _with_account(args: dict[str, Any], account: str | None, key: bytes | None) -> dict[str, Any]:
    """``args`` plus ``accountId`` and, with a secret, its ``verification``."""
    if account is not None:
        args["accountId"] = account
        if key is not None:
            args["verification"] = sign(key, account)
    return args


def _event_args(
    item: object, index: int, page_account: str | None, key: bytes | None, naive_timezone: tzinfo
) -> dict[str, Any]:
    event = _event(item, index)
    where = f"events[{index}]"
    args: dict[str, Any] = {"name": serialize_text(event.name, f"{where}.name", "an event name")}
    account = page_account
    if event.account_id is not None:
        account = serialize_id(event.account_id, f"{where}.account_id")
    _with_account(args, account, key)
    metadata = serialize_metadata(event.metadata, argument=f"{where}.metadata", naive_timezone=naive_timezone)
    if metadata:
        args["metadata"] = metadata
    return args


def render_snippet(
    tracker: Tracker,
    *,
    verification_secret: str | bytes | None = None,
    nonce: object | None = None,
    pageview: bool = True,
    screen: str | None = None,
    user_id: str | int | uuid.UUID | None = None,
    email: str | None = None,
    user_properties: Mapping[str, object] | None = None,
    account_id: str | int | uuid.UUID | None = None,
    account_properties: Mapping[str, object] | None = None,
    events: Iterable[SnippetEvent | Mapping[str, Any]] = (),
    naive_timezone: tzinfo = timezone.utc,
) -> str:
    """The HTML of the snippet for one page: the loader ``<script async src>`` and one inline ``<script>``.

    The inline script defines the queue stub, then calls ``init``; ``identify`` when ``user_id`` or ``email``
    is given; ``account`` when ``account_id`` is given; ``screen`` when ``screen`` is given, else ``pageview``
    when ``pageview`` is true (both carry the page's account); then one ``event`` per item of ``events``.

    With ``verification_secret``, each call carrying a ``userId`` (identify) or an ``accountId`` (account,
    pageview, screen, event) gets ``verification``, the HMAC of that ID. An identify by ``email`` alone gets
    none: journy.io documents the hash for the user ID only, so whether such a call is accepted on a site that
    enforces verification is open; pass ``user_id`` whenever the user has one.

    ``nonce`` (a CSP nonce; compared with ``is not None`` because lazy nonce objects are falsy until used)
    goes on both tags. Bad values raise :class:`InvalidArgumentError` naming the argument; the output is the
    same string for the same input.

    >>> print(render_snippet(Tracker("T1", "https://go.acme.com"), user_id=42))  # doctest: +ELLIPSIS
    <script async src="https://go.acme.com/tracker.js"></script>
    <script>
    window.journy=window.journy||function(...)...};
    journy("init", {"trackerId":"T1","domain":"https://go.acme.com"});
    journy("identify", {"userId":"42"});
    journy("pageview");
    </script>
    """
    if not isinstance(tracker, Tracker):
        raise InvalidArgumentError("tracker", f"expected a Tracker, got {type(tracker).__name__}")
    key = None if verification_secret is None else secret_key(verification_secret, "verification_secret")

    uid = None if user_id is None else serialize_id(user_id, "user_id")
    mail = None if email is None else serialize_text(email, "email", "an email address")
    aid = None if account_id is None else serialize_id(account_id, "account_id")
    if user_properties is not None and uid is None and mail is None:
        raise InvalidArgumentError("user_properties", "need user_id or email to say whose they are")
    if account_properties is not None and aid is None:
        raise InvalidArgumentError("account_properties", "need account_id to say whose they are")
    screen_name = None if screen is None else serialize_text(screen, "screen", "a screen name")

    tz = naive_timezone
    init: dict[str, Any] = {"trackerId": tracker.tracker_id, "domain": tracker.domain}
    if tracker.site_id is not None:
        init["siteId"] = tracker.site_id
    lines = [LOADER_STUB, _call("init", init)]

    if uid is not None or mail is not None:
        identify: dict[str, Any] = {}
        if uid is not None:
            identify["userId"] = uid
        if mail is not None:
            identify["email"] = mail
        if uid is not None and key is not None:
            identify["verification"] = sign(key, uid)
        props = serialize_properties(user_properties, argument="user_properties", naive_timezone=tz)
        if props:
            identify["properties"] = props
        lines.append(_call("identify", identify))

    if aid is not None:
        account = _with_account({}, aid, key)
        props = serialize_properties(account_properties, argument="account_properties", naive_timezone=tz)
        if props:
            account["properties"] = props
        lines.append(_call("account", account))

    if screen_name is not None:
        lines.append(_call("screen", _with_account({"name": screen_name}, aid, key)))
    elif pageview:
        lines.append(_call("pageview", _with_account({}, aid, key)) if aid is not None else _call("pageview"))

    for index, item in enumerate(events):
        lines.append(_call("event", _event_args(item, index, aid, key, tz)))

    nonce_attr = "" if nonce is None else f' nonce="{html.escape(str(nonce), quote=True)}"'
    src = html.escape(tracker.script_url, quote=True)
    body = "\n".join(lines)
    return f'<script async src="{src}"{nonce_attr}></script>\n<script{nonce_attr}>\n{body}\n</script>'


def render_event_script(
    event: SnippetEvent | Mapping[str, Any],
    *,
    verification_secret: str | bytes | None = None,
    nonce: object | None = None,
    naive_timezone: tzinfo = timezone.utc,
) -> str:
    """One inline ``<script>`` that records ``event`` from the browser, wherever it sits in the page (before or
    after the snippet: it carries the queue stub). The event's ``account_id`` gets its ``verification`` when a
    secret is given; values are escaped as in :func:`render_snippet`.

    >>> print(render_event_script(SnippetEvent("opened_billing", account_id=7)))  # doctest: +ELLIPSIS
    <script>
    window.journy=window.journy||function(...)...};
    journy("event", {"name":"opened_billing","accountId":"7"});
    </script>
    """
    key = None if verification_secret is None else secret_key(verification_secret, "verification_secret")
    args = _event_args(event, 0, None, key, naive_timezone)
    nonce_attr = "" if nonce is None else f' nonce="{html.escape(str(nonce), quote=True)}"'
    return f"<script{nonce_attr}>\n{LOADER_STUB}\n{_call('event', args)}\n</script>"


def disabled_comment(reason: str) -> str:
    """An HTML comment saying why the snippet is not on the page; ``reason`` cannot end the comment early.

    >>> disabled_comment("no TRACKER_ID --> <script>")
    '<!-- journy.io tracking disabled: no TRACKER_ID - -&gt; &lt;script&gt; -->'
    """
    text = str(reason).replace("<", "&lt;").replace(">", "&gt;")
    # Any "--" could start "-->" or "--!>": a space after every dash that precedes another dash breaks them.
    text = re.sub(r"-(?=-)", "- ", text)
    return f"<!-- journy.io tracking disabled: {text} -->"
