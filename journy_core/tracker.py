"""Where a website's tracker loads from (:class:`Tracker`), and :class:`TrackerCache`, which fetches it from
journy.io in the background when only the website's domain is configured (``WEBSITE_DOMAIN``).

No page ever waits on journy.io for it: until the first fetch has arrived, pages render an HTML comment saying
why instead of the loader; a failed refresh keeps the last good tracker.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidArgumentError, JournyError
from .urls import is_loopback_host
from .values import serialize_text, utf8_text

__all__ = ["Tracker", "TrackerCache"]

logger = logging.getLogger("journy")


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
        for field in ("tracker_id", "script_path", "domain", "site_id"):
            value = getattr(self, field)
            if isinstance(value, str):
                utf8_text(value, field)  # written into every page: it must encode
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
    ``lambda d: client.get_tracking_snippet(d).data["snippet"]``. :meth:`get` never waits and never raises: it
    returns what it has (None before the first fetch has arrived) and, when that is missing or older than
    ``ttl`` seconds, starts a fetch in a background thread (one at a time per process). A failed fetch logs a
    warning, keeps the last good tracker, and is tried again after ``retry_after`` seconds. :meth:`why_missing`
    says why there is no tracker yet, for the comment a page carries instead. A forked child process starts its
    own fetch: the parent's thread did not come along.
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
        self._lock = threading.Lock()  # held only to start a fetch, never during one
        self._lock_pid = os.getpid()
        self._worker: threading.Thread | None = None
        self._failed = False
        # One tuple, replaced whole, so the lock-free read in get() never sees half an update:
        # (tracker, next fetch at, pid of the process whose thread is fetching now, or None).
        self._state: tuple[Tracker | None, float | None, int | None] = (None, None, None)

    def get(self) -> Tracker | None:
        """The tracker, or None until a fetch has brought one; never waits for journy.io."""
        try:
            tracker, next_fetch, fetching_in = self._state
            if next_fetch is not None and self._clock() < next_fetch:
                return tracker
            if fetching_in is None or fetching_in != os.getpid():
                self._start()
            return tracker
        except Exception:  # never let the snippet break a page
            logger.exception("journy.io: unexpected error in TrackerCache.get()")
            return self._state[0]

    def wait(self, timeout: float | None = None) -> Tracker | None:
        """:meth:`get`, then wait at most ``timeout`` seconds for the fetch in progress in this process: for
        start-up code, checks and tests, never for a page (that is what :meth:`get` is for)."""
        tracker = self.get()
        worker = self._worker
        if worker is not None and self._lock_pid == os.getpid():
            worker.join(timeout)
            return self._state[0]
        return tracker

    def why_missing(self) -> str:
        """Why :meth:`get` returned None, for the HTML comment a page carries instead of the loader."""
        if self._failed:
            return (
                f"the snippet of {self.domain!r} could not be fetched from journy.io (see the journy log); "
                f"next attempt within {self._retry_after:.0f} s"
            )
        return f"the snippet of {self.domain!r} is being fetched from journy.io; pages carry it once it has arrived"

    def _start(self) -> None:
        """Start the background fetch, unless one is running in this process or the tracker is fresh."""
        pid = os.getpid()
        if self._lock_pid != pid:
            # A forked child: the parent's fetch thread is not here, and the lock may have been held at the fork.
            self._lock, self._lock_pid, self._worker = threading.Lock(), pid, None
        if not self._lock.acquire(blocking=False):
            return  # another thread is starting it
        try:
            tracker, next_fetch, fetching_in = self._state
            if fetching_in == pid or (next_fetch is not None and self._clock() < next_fetch):
                return
            worker = threading.Thread(target=self._run, name="journy-snippet-fetch", daemon=True)
            self._state, self._worker = (tracker, next_fetch, pid), worker
            try:
                worker.start()
            except RuntimeError:  # at interpreter shutdown, or past the thread limit: try again later
                self._state, self._worker = (tracker, self._clock() + self._retry_after, None), None
                raise
        finally:
            self._lock.release()

    def _run(self) -> None:
        """The fetch, in the background thread; whatever happens, it leaves no 'fetch in progress' behind."""
        fresh: Tracker | None = None
        next_fetch = math.inf  # only if the clock fails: then never again, rather than a fetch per page
        try:
            try:
                fresh = Tracker.from_snippet(self._fetch(self.domain))
            except Exception as exc:
                self._log_failure(exc)
            next_fetch = self._clock() + (self._ttl if fresh is not None else self._retry_after)
        except Exception:
            logger.exception("journy.io: unexpected error while fetching the tracking snippet")
        finally:
            self._failed = fresh is None
            self._state = (fresh or self._state[0], next_fetch, None)

    def _log_failure(self, exc: Exception) -> None:
        # JournyError messages never carry the API key; other exceptions are not known to be clean.
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, JournyError) else type(exc).__name__
        logger.warning(
            "journy.io: could not load the tracking snippet for %r (%s); %s, next attempt in %.0f s",
            self.domain,
            reason,
            "keeping the previous tracker" if self._state[0] is not None else "pages render without it",
            self._retry_after,
        )
        details = not isinstance(exc, JournyError)
        logger.debug("journy.io: snippet fetch failure details", exc_info=details)
