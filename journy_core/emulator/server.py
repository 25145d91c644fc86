"""The emulator's HTTP server: the journy.io API contract, rate limiting, injected faults and the JSON views.

Standard library only, so ``python -m journy_core.emulator`` works in any environment that has the package.
Each connection gets a daemon thread (``ThreadingHTTPServer``) and keeps alive (HTTP/1.1), like the real API,
because the client's delivery loop relies on one reused connection and the benchmarks measure exactly that.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import email.utils
import errno
import hashlib
import ipaddress
import itertools
import json
import logging
import random
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import validation
from .page import PAGE_CSP, TRACKER_JS, render_page, render_snippet
from .state import DEFAULT_SEGMENTS, Store

__all__ = ["ALL_PERMISSIONS", "DEFAULT_API_KEY", "FAULT_KINDS", "Emulator", "Website"]

logger = logging.getLogger("journy_core.emulator")

#: Every permission a journy.io API key can hold; the default key has them all.
ALL_PERMISSIONS: tuple[str, ...] = (
    "TrackData",
    "GetTrackingSnippet",
    "ReadEvents",
    "ReadProperties",
    "ReadSegments",
)

#: The emulator's own development key. Not a secret: it only opens the emulator, and it is printed on start.
DEFAULT_API_KEY = "journy-emulator-key"

#: The faults the emulator can inject, the transient failures a client must survive (see ``Emulator``).
FAULT_KINDS: tuple[str, ...] = ("5xx", "429", "timeout", "reset")

#: Bound on the call log, so a long benchmark cannot exhaust memory; the oldest calls go first.
MAX_CALLS = 100_000

_MAX_BODY = 10 * 1024 * 1024
_JSON = "application/json"
_EMPTY_PARAMETERS: dict[str, dict[str, str]] = {"header": {}, "query": {}, "path": {}}
_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class Website:
    """A website the snippet endpoint knows; ``tracking_domain=None`` points the snippet at the emulator."""

    domain: str
    tracker_id: str
    tracking_domain: str | None = None


@dataclass(frozen=True)
class _Config:
    # Frozen and swapped whole by configure(): a request reads one consistent configuration without the lock.
    rate_limit: int
    rate_window: float
    latency: float
    fault_rate: float
    faults: tuple[str, ...]
    timeout_delay: float
    rejected_properties: Mapping[str, str]


@dataclass
class _Outcome:
    status: int
    body: bytes
    content_type: str | None
    limit: int
    remaining: int
    delay: float = 0.0
    reset: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Script:
    status: int
    body: dict[str, Any] | str | None
    path: str | None

    def outcome(self, request_id: str, limit: int) -> _Outcome:
        if self.body is None:
            return _Outcome(self.status, b"", None, limit, limit)
        if isinstance(self.body, str):
            return _Outcome(self.status, self.body.encode(), "text/plain; charset=utf-8", limit, limit)
        meta = {} if "meta" in self.body else {"meta": {"requestId": request_id, "status": self.status}}
        document = {**meta, **self.body}
        return _Outcome(self.status, json.dumps(document).encode(), _JSON, limit, limit)


@dataclass
class _Gate:
    remaining: int
    refusal: tuple[int, dict[str, Any]] | None = None
    fault: str | None = None
    variant: int = 0


_Apply = Callable[["Emulator", Any, Mapping[str, str], tuple[str, ...]], tuple[int, dict[str, Any] | None]]


@dataclass(frozen=True)
class _Endpoint:
    permission: str | None
    # None: the endpoint takes no body (a GET); otherwise the body is required and checked by this function.
    check: Callable[[dict[str, Any]], dict[str, str]] | None
    apply: _Apply
    deprecated: bool = False


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    # The Date header changes once a second: formatting it once per second rather than per answer saves a few
    # microseconds on every call of a throughput benchmark.
    global _date_cache  # noqa: PLW0603 - a one-entry cache; a race merely formats the date twice
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _fingerprint(key: str) -> str:
    """A short, non-reversible name for a key, so logs can tell keys apart without ever holding one."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(raw, parse_constant=_reject_constant), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, str(exc)


def _check_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(permissions, str):
        raise TypeError("permissions must be an iterable of permission names, not a string")
    wanted = tuple(dict.fromkeys(permissions))
    unknown = [name for name in wanted if name not in ALL_PERMISSIONS]
    if unknown:
        # A typo here would otherwise surface as a puzzling 401 in some test much later.
        raise ValueError(f"unknown permission(s) {unknown}; known: {list(ALL_PERMISSIONS)}")
    return wanted


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- The API's endpoints: each apply function runs under the emulator's lock, with a checked body. ---


def _validate(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    return 200, {"data": {"permissions": list(perms)}}


def _upsert(kind: str) -> _Apply:
    def apply(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        rejected_config = emu._config.rejected_properties
        if kind == "users":
            rejected = emu._store.upsert_user(body, rejected_config)
        else:
            rejected = emu._store.upsert_account(body, rejected_config)
        answer: dict[str, Any] = {"message": f"{'User' if kind == 'users' else 'Account'} upserted"}
        if rejected:
            answer["rejected"] = rejected
        return 201, answer

    return apply


def _delete_user(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    emu._store.delete_user(body)
    return 202, {"message": "User will be deleted"}


def _delete_account(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    emu._store.delete_account(body)
    return 202, {"message": "Account will be deleted"}


def _add_users(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    emu._store.set_members(body, "active")
    return 201, {"message": "Users added to account"}


def _remove_users(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    emu._store.set_members(body, "removed")
    return 204, None


def _track(deprecated: bool) -> _Apply:
    def apply(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        emu._store.track(body, deprecated=deprecated)
        return 201, {"message": "Event tracked"}

    return apply


def _link(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    emu._store.link(body)
    return 201, {"message": "Device linked"}


def _snippet(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    domain = query.get("domain", "")
    if domain == "":
        return 400, {
            "message": "The query parameter domain is required",
            "errors": {"fields": {}, "parameters": {**_EMPTY_PARAMETERS, "query": {"domain": "is required"}}},
        }
    website = emu._websites.get(domain.lower())
    if website is None:
        return 404, {"message": f"No website found for domain {domain}"}
    snippet = render_snippet(website.tracker_id, website.domain, website.tracking_domain or emu.url)
    return 200, {"data": {"domain": website.domain, "snippet": snippet}}


def _list_events(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
    return 200, {"data": emu._store.list_events()}


def _list(kind: str, what: str) -> _Apply:
    def apply(emu: Emulator, body: Any, query: Mapping[str, str], perms: tuple[str, ...]) -> tuple[int, Any]:
        if what == "properties":
            return 200, {"data": emu._store.list_properties(kind)}
        return 200, {"data": copy.deepcopy(DEFAULT_SEGMENTS[kind])}

    return apply


_ROUTES: dict[str, dict[str, _Endpoint]] = {
    "/validate": {"GET": _Endpoint(None, None, _validate)},
    "/users/upsert": {"POST": _Endpoint("TrackData", validation.check_upsert_user, _upsert("users"))},
    "/users": {"DELETE": _Endpoint("TrackData", validation.check_user_delete, _delete_user)},
    "/accounts/upsert": {"POST": _Endpoint("TrackData", validation.check_upsert_account, _upsert("accounts"))},
    "/accounts": {"DELETE": _Endpoint("TrackData", validation.check_account_delete, _delete_account)},
    "/accounts/users/add": {"POST": _Endpoint("TrackData", validation.check_membership, _add_users)},
    "/accounts/users/remove": {"POST": _Endpoint("TrackData", validation.check_membership, _remove_users)},
    "/track": {"POST": _Endpoint("TrackData", validation.check_track, _track(deprecated=False))},
    "/events": {
        "GET": _Endpoint("ReadEvents", None, _list_events),
        "POST": _Endpoint("TrackData", validation.check_track, _track(deprecated=True), deprecated=True),
    },
    "/link": {"POST": _Endpoint("TrackData", validation.check_link, _link)},
    "/tracking/snippet": {"GET": _Endpoint("GetTrackingSnippet", None, _snippet)},
    "/properties/users": {"GET": _Endpoint("ReadProperties", None, _list("users", "properties"))},
    "/properties/accounts": {"GET": _Endpoint("ReadProperties", None, _list("accounts", "properties"))},
    "/segments/users": {"GET": _Endpoint("ReadSegments", None, _list("users", "segments"))},
    "/segments/accounts": {"GET": _Endpoint("ReadSegments", None, _list("accounts", "segments"))},
}


def _bad_request(fields: Mapping[str, str], message: str | None = None) -> dict[str, Any]:
    if message is None:
        first, reason = next(iter(fields.items()))
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        message = f"Validation failed: {first} {reason}{more}"
    return {
        "message": message,
        "errors": {"fields": dict(fields), "parameters": copy.deepcopy(_EMPTY_PARAMETERS)},
    }


class Emulator:
    """A local journy.io API for development, demos and tests, with controllable rate limits and faults.

    ``api_keys`` maps each accepted key to its permissions (default: :data:`DEFAULT_API_KEY` with
    :data:`ALL_PERMISSIONS`). ``rate_limit`` calls per ``rate_window`` seconds per key, sliding window; a call
    answered 429 does not count. ``latency`` seconds are added before every API answer. With probability
    ``fault_rate`` a call gets one of ``faults`` (drawn from a generator seeded with ``seed``):

    - ``"5xx"``: 500, 502 or 503, sometimes with a non-JSON or empty body; the call is not applied.
    - ``"429"``: a rate-limit answer; not applied.
    - ``"timeout"``: the call IS applied, then the answer waits ``timeout_delay`` seconds, so a client that
      gives up first cannot know the outcome (the case where a resend may duplicate).
    - ``"reset"``: the connection is closed abruptly (TCP RST); not applied.

    With ``ssl_context`` (a server-side :class:`ssl.SSLContext` with a certificate loaded) it serves https, for
    trying a client the way it talks to journy.io (benchmarks use it to include the TLS handshake).

    ``websites`` are the sites ``GET /tracking/snippet`` knows (default: ``localhost``). Upserts drop the
    properties named in ``rejected_properties`` and report them in ``rejected``, for testing that a client
    surfaces them; :meth:`script_answer` makes the next call get any answer at all (a 422, a non-JSON 200).
    Every answer to a call is in :meth:`calls`, the stored data in :meth:`state`, both also
    served as JSON under ``/_emulator/`` for other processes, and as a live page at ``/``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        rate_limit: int = 1800,
        rate_window: float = 60.0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        faults: Iterable[str] = FAULT_KINDS,
        timeout_delay: float = 30.0,
        seed: int | None = None,
        websites: Iterable[Website] | None = None,
        rejected_properties: Mapping[str, str] | None = None,
        allow_remote: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}: the emulator accepts a published key and shows every "
                "user it receives to anyone who can reach it; pass allow_remote=True to expose it on purpose"
            )
        self.host = host
        self.port = port
        #: Serve https with this context (a server-side context with a certificate loaded); None for http.
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._configure_lock = threading.Lock()
        self._stopping = threading.Event()
        self._store = Store()
        self._calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self._call_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        # A random prefix keeps request IDs unique across emulator instances and restarts.
        self._request_prefix = f"emu-{secrets.token_hex(4)}"
        self._windows: dict[str, deque[float]] = {}
        self._scripts: deque[_Script] = deque()
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._keys: dict[str, tuple[str, ...]] = {}
        self._fingerprints: dict[str, str] = {}
        self._websites: dict[str, Website] = {}
        self._config = _Config(1800, 60.0, 0.0, 0.0, FAULT_KINDS, 30.0, {})
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.configure(
            api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS} if api_keys is None else api_keys,
            rate_limit=rate_limit,
            rate_window=rate_window,
            latency=latency,
            fault_rate=fault_rate,
            faults=faults,
            timeout_delay=timeout_delay,
            websites=[Website("localhost", "emulator-tracker")] if websites is None else websites,
            rejected_properties=rejected_properties or {},
        )

    # --- lifecycle ---

    @classmethod
    def start_on(cls, port: int = 8484, **options: Any) -> Emulator:
        """A started emulator on ``port``, or on a free port when that one is taken (look at ``.port``): what
        demos and example projects want, where a second run must not fail on a busy port."""
        try:
            return cls(port=port, **options).start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return cls(port=0, **options).start()

    def report(self) -> str:
        """What the emulator received, as lines of text for a terminal."""
        state = self.state()
        lines = ["What the emulator received:"]
        for user in state["users"]:
            lines.append(f"  user     {user.get('userId')} <{user.get('email')}> {user.get('properties') or ''}")
        for account in state["accounts"]:
            lines.append(
                f"  account  {account.get('accountId')} ({account.get('domain')}) {account.get('properties') or ''}"
            )
        for membership in state["memberships"]:
            account, user = membership.get("account") or {}, membership.get("user") or {}
            lines.append(
                f"  member   user {user.get('userId') or user.get('email')} in account "
                f"{account.get('accountId') or account.get('domain')} ({membership.get('status')})"
            )
        for link in state["links"]:
            user = link.get("user") or {}
            lines.append(f"  device   {link.get('deviceId')} -> user {user.get('userId') or user.get('email')}")
        for event in state["events"]:
            lines.append(
                f"  event    {event.get('name')} user={event.get('user')} account={event.get('account')} "
                f"{event.get('metadata') or ''}"
            )
        lines.append(f"  ({len(self.calls())} API calls in all; the emulator's page: {self.url}/)")
        return "\n".join(lines)

    def start(self) -> Emulator:
        """Starts serving in a daemon thread (on a free port when ``port=0``) and returns ``self``."""
        if self._server is not None:
            raise RuntimeError("this emulator is already started; create a new one to serve again")
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="journy-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes every open connection; never waits for a sleeping ``timeout`` fault."""
        server = self._server
        if server is None or self._stopping.is_set():
            return
        self._stopping.set()  # wakes every latency and timeout wait at once
        stopper = threading.Thread(target=server.shutdown, name="journy-emulator-stop", daemon=True)
        stopper.start()
        address = (self.host, self.port)
        while stopper.is_alive():
            # serve_forever() notices the shutdown only when select() returns: a connection wakes it at once
            # instead of after its poll interval, which keeps stop() (and each test's teardown) fast.
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.2).close()
            stopper.join(0.05)
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # Idle keep-alive connections would otherwise keep answering after stop().
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321`` (known once started)."""
        if self._server is None:
            raise RuntimeError("the emulator has no URL until start() has bound its port")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104 - only a display name
        host = "[::1]" if host == "::" else host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://[{host.strip('[]')}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    # --- views and control ---

    def calls(self, path: str | None = None) -> list[dict[str, Any]]:
        """Copies of the logged API calls, oldest first; only those to ``path`` (e.g. ``"/track"``) if given."""
        with self._lock:
            selected = [call for call in self._calls if path is None or call["path"] == path]
            return copy.deepcopy(selected)

    def state(self) -> dict[str, Any]:
        """A copy of the stored users, accounts, memberships, events and links (as ``/_emulator/state``)."""
        with self._lock:
            return self._store.snapshot()

    def reset(self) -> None:
        """Forgets the stored data, the call log, the rate windows and scripted answers; keeps the options."""
        with self._lock:
            self._store = Store()
            self._calls.clear()
            self._windows.clear()
            self._scripts.clear()

    def script_answer(
        self, status: int, body: Mapping[str, Any] | str | None = None, *, path: str | None = None
    ) -> None:
        """Makes the next API call (to ``path``, or to any path) get exactly this answer, without applying it.

        For testing how a client handles answers the emulator would never give by itself (a 422, a 200 that is
        not JSON, an upsert with ``rejected``). A mapping becomes a JSON body, with ``meta`` added unless given;
        a string is sent as plain text; ``None`` sends no body. Answers queue up, first scripted first served;
        they skip authentication and the rate limit, and the call appears in the log with ``scripted: True``.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if body is not None and not isinstance(body, str | Mapping):
            raise TypeError(f"body must be a mapping, a string or None, not {type(body).__name__}")
        if path is not None and not isinstance(path, str):
            raise TypeError(f"path must be a string such as '/track', not {type(path).__name__}")
        script = _Script(status, copy.deepcopy(dict(body)) if isinstance(body, Mapping) else body, path)
        with self._lock:
            self._scripts.append(script)

    def _take_script(self, path: str) -> _Script | None:
        with self._lock:
            for index, script in enumerate(self._scripts):
                if script.path is None or script.path == path:
                    del self._scripts[index]
                    return script
        return None

    def configure(
        self,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        rate_limit: int | None = None,
        rate_window: float | None = None,
        latency: float | None = None,
        fault_rate: float | None = None,
        faults: Iterable[str] | str | None = None,
        timeout_delay: float | None = None,
        seed: int | None = None,
        websites: Iterable[Website] | None = None,
        rejected_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Changes options while serving; ``None`` leaves one unchanged; invalid values raise ValueError."""
        # Serializes configure() calls, each of which reads the old configuration to build the new one.
        with self._configure_lock:
            self._configure(
                api_keys=api_keys,
                rate_limit=rate_limit,
                rate_window=rate_window,
                latency=latency,
                fault_rate=fault_rate,
                faults=faults,
                timeout_delay=timeout_delay,
                seed=seed,
                websites=websites,
                rejected_properties=rejected_properties,
            )

    def _configure(
        self,
        *,
        api_keys: Mapping[str, Iterable[str]] | None,
        rate_limit: int | None,
        rate_window: float | None,
        latency: float | None,
        fault_rate: float | None,
        faults: Iterable[str] | str | None,
        timeout_delay: float | None,
        seed: int | None,
        websites: Iterable[Website] | None,
        rejected_properties: Mapping[str, str] | None,
    ) -> None:
        old = self._config

        def number(name: str, value: float | None, default: float, minimum: float, maximum: float) -> float:
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
                raise ValueError(f"{name} must be a number between {minimum} and {maximum}, not {value!r}")
            return float(value)

        if rate_limit is not None and (
            isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise ValueError(f"rate_limit must be a positive integer, not {rate_limit!r}")
        if isinstance(faults, str):
            faults = [name.strip() for name in faults.split(",") if name.strip()]
        fault_names = old.faults if faults is None else tuple(dict.fromkeys(faults))
        unknown = [name for name in fault_names if name not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {list(FAULT_KINDS)}")
        if not fault_names:
            raise ValueError(f"faults must name at least one of {list(FAULT_KINDS)}")
        if rejected_properties is not None and not all(
            isinstance(name, str) and isinstance(reason, str) for name, reason in dict(rejected_properties).items()
        ):
            raise ValueError("rejected_properties must map property names to reasons (strings)")
        new = _Config(
            rate_limit=old.rate_limit if rate_limit is None else rate_limit,
            rate_window=number("rate_window", rate_window, old.rate_window, 0.001, 86400.0),
            latency=number("latency", latency, old.latency, 0.0, 3600.0),
            fault_rate=number("fault_rate", fault_rate, old.fault_rate, 0.0, 1.0),
            faults=fault_names,
            timeout_delay=number("timeout_delay", timeout_delay, old.timeout_delay, 0.0, 3600.0),
            rejected_properties=(old.rejected_properties if rejected_properties is None else dict(rejected_properties)),
        )
        keys = None
        if api_keys is not None:
            keys = {str(key): _check_permissions(perms) for key, perms in api_keys.items()}
            if any(key == "" for key in keys):
                raise ValueError("an API key must not be empty")
        sites = None
        if websites is not None:
            sites = {site.domain.lower(): site for site in websites}
        with self._lock:
            self._config = new
            if seed is not None:
                self._random.seed(seed)
            if keys is not None:
                self._keys = keys
                self._fingerprints = {key: _fingerprint(key) for key in keys}
            if sites is not None:
                self._websites = sites

    def config(self) -> dict[str, Any]:
        """The current options as JSON-ready data; keys appear only as fingerprints."""
        cfg = self._config
        return {
            "rate_limit": cfg.rate_limit,
            "rate_window": cfg.rate_window,
            "latency": cfg.latency,
            "fault_rate": cfg.fault_rate,
            "faults": list(cfg.faults),
            "timeout_delay": cfg.timeout_delay,
            "rejected_properties": dict(cfg.rejected_properties),
            "api_keys": [
                {"fingerprint": _fingerprint(key), "permissions": list(perms)} for key, perms in self._keys.items()
            ],
            "websites": [dataclasses.asdict(site) for site in self._websites.values()],
        }

    # --- request handling (called by the handler threads) ---

    def _request_id(self) -> str:
        return f"{self._request_prefix}-{next(self._request_ids):06d}"

    def _json_outcome(
        self, status: int, payload: Mapping[str, Any] | None, request_id: str, limit: int, remaining: int
    ) -> _Outcome:
        if payload is None:
            return _Outcome(status, b"", None, limit, remaining)
        document = {"meta": {"requestId": request_id, "status": status}, **payload}
        return _Outcome(status, json.dumps(document, separators=(",", ":")).encode(), _JSON, limit, remaining)

    def _handle_api(self, method: str, path: str, query: str, headers: Message, raw: bytes) -> _Outcome:
        cfg = self._config
        key = headers.get("X-Api-Key")
        request_id = self._request_id()
        params = dict(parse_qsl(query, keep_blank_values=True))
        body, body_error = _parse_json(raw) if raw else (None, None)
        endpoint = _ROUTES.get(path, {}).get(method)
        entry: dict[str, Any] = {
            "id": 0,
            "time": time.time(),
            "method": method,
            "path": path,
            "query": params,
            "body": body,
            "status": None,
            "request_id": request_id,
            "fault": None,
            "applied": False,
            "deprecated": endpoint is not None and endpoint.deprecated,
            "scripted": False,
            "api_key_sent": key is not None,
            "api_key_fingerprint": None if key is None else (self._fingerprints.get(key) or _fingerprint(key)),
            # Credentials are left out: the log is served to anyone who can reach the emulator.
            "headers": {name: value for name, value in headers.items() if name.lower() not in _SECRET_HEADERS},
        }
        perms = self._keys.get(key) if key else None
        scripted = self._take_script(path) if self._scripts else None
        if scripted is not None:
            entry["scripted"] = True
            outcome = scripted.outcome(request_id, cfg.rate_limit)
        elif endpoint is None or key is None or perms is None:
            status, payload = self._refusal(method, path, endpoint, key)
            outcome = self._json_outcome(status, payload, request_id, cfg.rate_limit, cfg.rate_limit)
            if status == 405:
                outcome.headers = (("Allow", ", ".join(_ROUTES[path])),)
        else:
            gate = self._admit(cfg, key, endpoint, perms)
            entry["fault"] = gate.fault
            if gate.refusal is not None:
                outcome = self._json_outcome(
                    gate.refusal[0], gate.refusal[1], request_id, cfg.rate_limit, gate.remaining
                )
            elif gate.fault == "5xx":
                outcome = self._server_error(gate.variant, request_id, cfg.rate_limit, gate.remaining)
            elif gate.fault == "reset":
                outcome = _Outcome(0, b"", None, cfg.rate_limit, gate.remaining, reset=True)
            else:
                status, payload = self._run(endpoint, body, raw=raw, body_error=body_error, query=params, perms=perms)
                entry["applied"] = 200 <= status < 300
                outcome = self._json_outcome(status, payload, request_id, cfg.rate_limit, gate.remaining)
                if gate.fault == "timeout":
                    outcome.delay = cfg.timeout_delay
        outcome.delay += cfg.latency
        if not outcome.reset:
            entry["status"] = outcome.status
        with self._lock:
            entry["id"] = next(self._call_ids)
            self._calls.append(entry)
        return outcome

    @staticmethod
    def _refusal(method: str, path: str, endpoint: _Endpoint | None, key: str | None) -> tuple[int, Any]:
        if endpoint is None and path in _ROUTES:
            return 405, {"message": f"Method {method} is not allowed on {path}"}
        if endpoint is None:
            return 404, {"message": f"No such endpoint: {method} {path}"}
        if not key:
            return 401, {"message": "Missing API key: send it in the X-Api-Key header"}
        return 401, {"message": "The API key is not valid"}

    def _admit(self, cfg: _Config, key: str, endpoint: _Endpoint, perms: tuple[str, ...]) -> _Gate:
        """Rate limit, permission and fault draw, in one critical section so concurrent calls count exactly."""
        limit = cfg.rate_limit
        with self._lock:
            window = self._windows.setdefault(key, deque())
            now = time.monotonic()
            edge = now - cfg.rate_window
            while window and window[0] <= edge:
                window.popleft()
            if len(window) >= limit:
                message = f"Rate limit exceeded: at most {limit} calls per {cfg.rate_window:g} seconds"
                return _Gate(0, (429, {"message": message}))
            if endpoint.permission is not None and endpoint.permission not in perms:
                window.append(now)
                message = f"The API key does not have the permission {endpoint.permission}"
                return _Gate(limit - len(window), (401, {"message": message}))
            fault = None
            if cfg.fault_rate > 0 and self._random.random() < cfg.fault_rate:
                fault = self._random.choice(cfg.faults)
            if fault == "429":
                # Like a real 429, the emulated one does not count against the window.
                return _Gate(0, (429, {"message": "Rate limit exceeded (emulated fault)"}), fault)
            window.append(now)
            variant = self._random.randrange(4) if fault == "5xx" else 0
            return _Gate(limit - len(window), None, fault, variant)

    def _run(
        self,
        endpoint: _Endpoint,
        body: Any,
        *,
        raw: bytes,
        body_error: str | None,
        query: Mapping[str, str],
        perms: tuple[str, ...],
    ) -> tuple[int, dict[str, Any] | None]:
        if endpoint.check is not None:
            if body_error is not None:
                return 400, _bad_request({"body": f"is not valid JSON ({body_error})"}, "The body is not valid JSON")
            if not raw:
                return 400, _bad_request({"body": "is required"}, "A JSON body is required")
            if not isinstance(body, dict):
                return 400, _bad_request({"body": "must be a JSON object"})
            errors = endpoint.check(body)
            if errors:
                return 400, _bad_request(errors)
        with self._lock:
            return endpoint.apply(self, body, query, perms)

    def _server_error(self, variant: int, request_id: str, limit: int, remaining: int) -> _Outcome:
        # Real gateways answer 5xx in every shape: the client must cope with each of them.
        if variant == 1:
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return _Outcome(502, page, "text/html; charset=utf-8", limit, remaining)
        if variant == 2:
            return _Outcome(503, b"", None, limit, remaining)
        if variant == 3:
            return _Outcome(503, b"Service Unavailable", "text/plain; charset=utf-8", limit, remaining)
        return self._json_outcome(500, {"message": "Internal server error (emulated)"}, request_id, limit, remaining)

    def _handle_control(self, method: str, path: str, query: str, raw: bytes) -> tuple[int, Any]:
        if path == "/_emulator/calls" and method == "GET":
            return 200, self.calls(dict(parse_qsl(query)).get("path"))
        if path == "/_emulator/state" and method == "GET":
            return 200, self.state()
        if path == "/_emulator/reset" and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if path == "/_emulator/script" and method == "POST":
            script, error = _parse_json(raw) if raw else (None, "no body")
            if error is not None or not isinstance(script, dict) or set(script) - {"status", "body", "path"}:
                return 400, {"message": 'the body must be {"status": int, "body"?: object|string|null, "path"?: str}'}
            try:
                self.script_answer(script.get("status", 0), script.get("body"), path=script.get("path"))
            except (TypeError, ValueError) as exc:
                return 400, {"message": str(exc)}
            return 200, {"scripted": len(self._scripts)}
        if path == "/_emulator/config" and method in ("GET", "POST"):
            if method == "POST":
                options, error = _parse_json(raw) if raw else ({}, None)
                if error is not None or not isinstance(options, dict):
                    return 400, {"message": "the body must be a JSON object of options"}
                allowed = {
                    "rate_limit",
                    "rate_window",
                    "latency",
                    "fault_rate",
                    "faults",
                    "timeout_delay",
                    "seed",
                    "rejected_properties",
                }
                unknown = sorted(set(options) - allowed)
                if unknown:
                    return 400, {"message": f"unknown option(s) {unknown}; known: {sorted(allowed)}"}
                try:
                    self.configure(**options)
                except (TypeError, ValueError) as exc:
                    return 400, {"message": str(exc)}
            return 200, self.config()
        return 404, {"message": f"No such emulator view: {method} {path}"}

    def _page(self) -> str:
        with self._lock:
            state = self._store.snapshot(events_limit=200)
            calls = copy.deepcopy(list(itertools.islice(reversed(self._calls), 50))[::-1])
        cfg = self._config
        summary = (
            f"rate limit {cfg.rate_limit} per {cfg.rate_window:g} s, latency {cfg.latency:g} s, "
            f"fault rate {cfg.fault_rate:g} ({', '.join(cfg.faults)})"
        )
        return render_page(state, calls, self.url, summary)

    def _host_allowed(self, host_header: str | None) -> bool:
        # A web page could otherwise read this dev data through DNS rebinding (evil.example -> 127.0.0.1).
        if host_header is None or not _is_loopback(self.host):
            return True
        host = host_header.strip()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        return _is_loopback(host)

    def _track_connection(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Never join handler threads on close: one may be sleeping through a "timeout" fault.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], emulator: Emulator) -> None:
        self.emulator = emulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall start-up.
        import socketserver  # noqa: PLC0415 - only for the base class's method

        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        context = self.emulator.ssl_context
        if context is not None:
            # The handshake happens on the first read, in the connection's own thread, not in the accept loop.
            connection = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections is routine (timeouts, resets they asked for); anything else is a bug
        # worth seeing, without socketserver's default traceback dump on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            logger.debug("emulator: connection error with %s", client_address, exc_info=True)
        else:
            logger.exception("emulator: error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "journy-emulator"
    # Idle keep-alive connections are closed after this many seconds, as real servers do.
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Answers go out in one write, but without NODELAY a client's delayed ACK could still cost 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("emulator: %s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_OPTIONS(self) -> None:
        self._answer("OPTIONS")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def _read_body(self) -> bytes | None:
        """The request body, or None when it cannot be read (the connection is then closed)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if length == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > _MAX_BODY:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if not 0 <= length <= _MAX_BODY:
            return None
        return self.rfile.read(length)

    def _answer(self, method: str) -> None:
        try:
            self._dispatch(method)
        except OSError:
            raise  # the connection broke: nothing to answer on it
        except Exception:
            # An emulator bug must show as a 500 with a log entry, not as a silently dropped connection that
            # would look like a "reset" fault to the client under test.
            logger.exception("emulator: failed to answer %s %s", method, self.path)
            self.close_connection = True
            self._send_plain(500, {"message": "The emulator failed to answer; see its log"})

    def _dispatch(self, method: str) -> None:
        emulator = self.server.emulator
        split = urlsplit(self.path)
        path = split.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send_plain(400, {"message": "The request body cannot be read"})
            return
        if not emulator._host_allowed(self.headers.get("Host")):
            self._send_plain(421, {"message": "This emulator only answers to loopback host names"})
            return
        head = method == "HEAD"
        if path.startswith("/_emulator/"):
            status, document = emulator._handle_control("GET" if head else method, path, split.query, raw)
            self._send_plain(status, document, head=head)
        elif path in ("/", "/index.html") and method in ("GET", "HEAD"):
            page_headers = (("Content-Security-Policy", PAGE_CSP), ("Cache-Control", "no-store"))
            self._send_plain(200, emulator._page(), "text/html; charset=utf-8", page_headers, head=head)
        elif path == "/tracker.js" and method in ("GET", "HEAD"):
            js_headers = (("Cache-Control", "no-cache"),)
            self._send_plain(200, TRACKER_JS, "application/javascript; charset=utf-8", js_headers, head=head)
        elif path == "/favicon.ico":
            self._send_plain(204, "", None)
        else:
            outcome = emulator._handle_api(method, path, split.query, self.headers, raw)
            if outcome.delay > 0 and emulator._stopping.wait(outcome.delay):
                self.close_connection = True
                return
            if outcome.reset:
                self._reset()
                return
            self._send(
                outcome.status,
                outcome.body,
                outcome.content_type,
                limit=outcome.limit,
                remaining=outcome.remaining,
                headers=outcome.headers,
                head=head,
            )

    def _send_plain(
        self,
        status: int,
        document: Any,
        content_type: str | None = _JSON,
        headers: Iterable[tuple[str, str]] = (),
        *,
        head: bool = False,
    ) -> None:
        """Answers outside the API: no key, so the rate-limit headers show the untouched limit."""
        body = document.encode() if isinstance(document, str) else json.dumps(document).encode()
        limit = self.server.emulator._config.rate_limit
        self._send(status, body, content_type, limit=limit, remaining=limit, headers=headers, head=head)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        *,
        limit: int,
        remaining: int,
        headers: Iterable[tuple[str, str]] = (),
        head: bool = False,
    ) -> None:
        # Status line, headers and body in a single write: one TCP segment for small answers.
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"X-RateLimit-Limit: {limit}",
            f"X-RateLimit-Remaining: {remaining}",
        ]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        if status != 204:
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head and status != 204:
            data += body
        try:
            self.wfile.write(data)
        except OSError:
            # The client gave up (e.g. after its read timeout during a "timeout" fault): nothing to answer.
            self.close_connection = True

    def _reset(self) -> None:
        self.close_connection = True
        try:
            # Linger 0 turns close() into a TCP RST: the client sees "connection reset", not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
