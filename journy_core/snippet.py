"""The journy.io website snippet, rendered on the server with ``verification`` hashes and safe escaping.

Shared by the Django template tag and the Flask Jinja global. Every value written into the inline script goes
through :func:`script_json`, so no user-controlled value (a name, an email, a property) can close the
``<script>`` element or break out of the JavaScript string it is in. The verification secret is used to
compute hashes and never written out.

Page events follow :func:`~journy_core.operations.track`'s rules: :func:`page_event` checks one where the app
adds it (raising :class:`InvalidArgumentError`), and the renderers leave out an event that is still bad at render
time (an HTML comment and a warning naming it) instead of the whole snippet.
"""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone, tzinfo
from typing import Any

from .errors import InvalidArgumentError
from .secrets import redact
from .tracker import Tracker, TrackerCache
from .values import serialize_id, serialize_metadata, serialize_properties, serialize_text
from .verification import secret_key, sign

__all__ = [
    "SnippetEvent",
    "Tracker",
    "TrackerCache",
    "disabled_comment",
    "event_left_out",
    "page_event",
    "render_event_script",
    "render_snippet",
    "script_json",
    "with_nonce",
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
    if not text.isascii():
        # A lone surrogate (values.py refuses them; a fetched snippet could still hold one) as its JSON escape,
        # the same string to JavaScript, where written raw it would fail to encode and take the page down.
        text = _SURROGATE.sub(_escape_surrogate, text)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


@dataclass(frozen=True)
class SnippetEvent:
    """An event to record from the browser when the page loads (``journy("event", {...})``).

    ``account_id`` defaults to the page's account; ``metadata`` follows the API's rules (no lists, no None).
    """

    name: str
    metadata: Mapping[str, object] | None = None
    account_id: str | int | uuid.UUID | None = None


_EVENT_KEYS = frozenset({"name", "metadata", "account_id"})


def page_event(
    name: object,
    metadata: Mapping[str, object] | None = None,
    account_id: object = None,
    *,
    naive_timezone: tzinfo = timezone.utc,
) -> SnippetEvent:
    """A page event checked as :func:`~journy_core.operations.track` checks an event (the same functions, the
    same argument names): raises :class:`InvalidArgumentError` naming the field, at the call site. The adapters'
    ``add_page_event`` and ``browser_event`` call it. The event returned holds the serialized values.

    >>> page_event("opened_billing", {"seats": 3}, account_id=7)
    SnippetEvent(name='opened_billing', metadata={'seats': 3}, account_id='7')
    """
    event_name = serialize_text(name, "name", "an event name in the past tense, e.g. 'opened_billing'")
    serialized = serialize_metadata(metadata, naive_timezone=naive_timezone)
    account = None if account_id is None else serialize_id(account_id, "account_id")
    return SnippetEvent(event_name, serialized or None, account)


def event_left_out(event: object, error: InvalidArgumentError) -> str:
    """Log a warning naming the page event ``event`` (a :class:`SnippetEvent`, a mapping or a name) that cannot
    be rendered, and return the HTML comment that takes its place: the rest of the page renders as usual. The
    comment names the field, not the message, which may quote the page's data."""
    name = event.name if isinstance(event, SnippetEvent) else event
    if isinstance(event, Mapping):
        name = event.get("name")
    label = repr(name)[:80]  # repr(): a lone surrogate shows as its escape
    logger.warning("journy.io: the page event %s is left out of the page: %s", label, error)
    return _comment(f"journy.io: page event {label} left out ({error.argument} is invalid; see the journy log)")


def _event(item: object, where: str) -> SnippetEvent:
    if isinstance(item, SnippetEvent):
        return item
    if isinstance(item, Mapping):
        unknown = sorted(str(key) for key in item if key not in _EVENT_KEYS)
        if unknown:
            raise InvalidArgumentError(where, f"unknown keys {unknown}; allowed: 'name', 'metadata', 'account_id'")
        if "name" not in item:
            raise InvalidArgumentError(where, "needs a 'name'")
        return SnippetEvent(item["name"], item.get("metadata"), item.get("account_id"))
    got = type(item).__name__
    raise InvalidArgumentError(where, f"expected a SnippetEvent or a dict, got {got}")


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
    item: object, where: str, page_account: str | None, key: bytes | None, naive_timezone: tzinfo
) -> dict[str, Any]:
    """The arguments of ``journy("event", ...)``; errors name ``{where}.name`` and so on (``where`` empty: the
    argument names of :func:`page_event`)."""
    event = _event(item, where or "event")
    field = f"{where}." if where else ""
    args: dict[str, Any] = {"name": serialize_text(event.name, f"{field}name", "an event name")}
    account = page_account
    if event.account_id is not None:
        account = serialize_id(event.account_id, f"{field}account_id")
    _with_account(args, account, key)
    metadata = serialize_metadata(event.metadata, argument=f"{field}metadata", naive_timezone=naive_timezone)
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
    goes on both tags (:func:`with_nonce`). Bad values raise :class:`InvalidArgumentError` naming the argument,
    except in ``events``: a bad event is left out (:func:`event_left_out`: an HTML comment after the script, and
    a warning). The output is the same string for the same input.

    >>> print(render_snippet(Tracker("T1", "https://go.acme.com"), user_id=42))  # doctest: +ELLIPSIS
    <script async src="https://go.acme.com/tracker.js"></script>
    <script>
    window.journy=window.journy||function(...)...};
    journy("init", {"trackerId":"T1","domain":"https://go.acme.com"});
    journy("identify", {"userId":"42"});
    journy("pageview");
    </script>
    """
    verification_secret = redact(verification_secret)  # first: no frame below may show it raw
    if not isinstance(tracker, Tracker):
        raise InvalidArgumentError("tracker", f"expected a Tracker, got {type(tracker).__name__}")
    key = None if verification_secret is None else secret_key(verification_secret, "verification_secret")

    uid, mail, aid = _page_ids(user_id, email, account_id, user_properties, account_properties)
    screen_name = None if screen is None else serialize_text(screen, "screen", "a screen name")

    tz = naive_timezone
    init: dict[str, Any] = {"trackerId": tracker.tracker_id, "domain": tracker.domain}
    if tracker.site_id is not None:
        init["siteId"] = tracker.site_id
    lines = [LOADER_STUB, _call("init", init)]

    if uid is not None or mail is not None:
        lines.append(_identify_call(uid, mail, key, user_properties, tz))
    if aid is not None:
        lines.append(_account_call(aid, key, account_properties, tz))
    if screen_name is not None:
        lines.append(_call("screen", _with_account({"name": screen_name}, aid, key)))
    elif pageview:
        lines.append(_call("pageview", _with_account({}, aid, key)) if aid is not None else _call("pageview"))

    left_out = _add_events(lines, events, aid, key, tz)

    src = html.escape(tracker.script_url, quote=True)
    body = "\n".join(lines)
    return with_nonce(f'<script async src="{src}"></script>\n<script>\n{body}\n</script>{left_out}', nonce)


def with_nonce(page: str, nonce: object | None) -> str:
    """``page`` (this module's output) with the CSP nonce ``nonce`` as the first attribute of every script tag.

    The one way a nonce is written, by the renderers and by :class:`~journy_core.page.SnippetCache` after its cache:
    only the renderers' own tags can match, since every value they write has ``<`` escaped. The result is a plain
    ``str`` even for a ``Markup`` (whose own ``replace`` would escape the tag).
    """
    if nonce is None:
        return str(page)
    return str.replace(page, "<script", f'<script nonce="{html.escape(str(nonce), quote=True)}"')


def _page_ids(
    user_id: object, email: object, account_id: object, user_properties: object, account_properties: object
) -> tuple[str | None, str | None, str | None]:
    """The page's user ID, email and account ID as the snippet writes them, checked (properties need an owner)."""
    uid = None if user_id is None else serialize_id(user_id, "user_id")
    mail = None if email is None else serialize_text(email, "email", "an email address")
    aid = None if account_id is None else serialize_id(account_id, "account_id")
    if user_properties is not None and uid is None and mail is None:
        raise InvalidArgumentError("user_properties", "need user_id or email to say whose they are")
    if account_properties is not None and aid is None:
        raise InvalidArgumentError("account_properties", "need account_id to say whose they are")
    return uid, mail, aid


def _identify_call(
    uid: str | None, mail: str | None, key: bytes | None, properties: Mapping[str, object] | None, tz: tzinfo
) -> str:
    """``journy("identify", ...)``: the user ID with its verification when a secret is set, the email, the
    properties."""
    identify: dict[str, Any] = {}
    if uid is not None:
        identify["userId"] = uid
    if mail is not None:
        identify["email"] = mail
    if uid is not None and key is not None:
        identify["verification"] = sign(key, uid)
    props = serialize_properties(properties, argument="user_properties", naive_timezone=tz)
    if props:
        identify["properties"] = props
    return _call("identify", identify)


def _account_call(aid: str, key: bytes | None, properties: Mapping[str, object] | None, tz: tzinfo) -> str:
    """``journy("account", ...)``: the account ID with its verification, the properties."""
    account = _with_account({}, aid, key)
    props = serialize_properties(properties, argument="account_properties", naive_timezone=tz)
    if props:
        account["properties"] = props
    return _call("account", account)


def _add_events(
    lines: list[str], events: Iterable[object], page_account: str | None, key: bytes | None, tz: tzinfo
) -> str:
    """Add one ``journy("event", ...)`` line per event; return the comments of the events left out."""
    left_out = ""
    for index, item in enumerate(events):
        try:
            lines.append(_call("event", _event_args(item, f"events[{index}]", page_account, key, tz)))
        except InvalidArgumentError as exc:  # this event only: the page keeps its identify and pageview
            left_out += "\n" + event_left_out(item, exc)
    return left_out


def render_event_script(
    event: SnippetEvent | Mapping[str, Any],
    *,
    verification_secret: str | bytes | None = None,
    nonce: object | None = None,
    naive_timezone: tzinfo = timezone.utc,
) -> str:
    """One inline ``<script>`` that records ``event`` from the browser, wherever it sits in the page (before or
    after the snippet: it carries the queue stub). The event's ``account_id`` gets its ``verification`` when a
    secret is given; values are escaped as in :func:`render_snippet`. A bad event renders the comment of
    :func:`event_left_out` instead (and logs a warning): a template tag never breaks its page.

    >>> print(render_event_script(SnippetEvent("opened_billing", account_id=7)))  # doctest: +ELLIPSIS
    <script>
    window.journy=window.journy||function(...)...};
    journy("event", {"name":"opened_billing","accountId":"7"});
    </script>
    """
    verification_secret = redact(verification_secret)  # first: no frame below may show it raw
    key = None if verification_secret is None else secret_key(verification_secret, "verification_secret")
    try:
        args = _event_args(event, "", None, key, naive_timezone)
    except InvalidArgumentError as exc:
        return event_left_out(event, exc)
    return with_nonce(f"<script>\n{LOADER_STUB}\n{_call('event', args)}\n</script>", nonce)


def disabled_comment(reason: str) -> str:
    """An HTML comment saying why the snippet is not on the page; ``reason`` cannot end the comment early.

    >>> disabled_comment("no TRACKER_ID --> <script>")
    '<!-- journy.io tracking disabled: no TRACKER_ID - -&gt; &lt;script&gt; -->'
    """
    return _comment(f"journy.io tracking disabled: {reason}")


def _comment(text: str) -> str:
    """``<!-- text -->``, with nothing in ``text`` able to end the comment early or fail to encode."""
    text = str(text).replace("<", "&lt;").replace(">", "&gt;")
    # Any "--" could start "-->" or "--!>": a space after every dash that precedes another dash breaks them.
    text = re.sub(r"-(?=-)", "- ", text)
    if not text.isascii():
        text = _SURROGATE.sub(_escape_surrogate, text)
    return f"<!-- {text} -->"
