"""The public :class:`Emulator`: one :class:`~.service.Service` and the HTTP server that feeds it.

It only checks and forwards: the API rules live in the service, the wire in the server.
"""

from __future__ import annotations

import errno
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from ..secrets import redact
from .limits import Script
from .options import ALL_PERMISSIONS, DEFAULT_API_KEY, DEFAULT_TRACKER_ID, FAULT_KINDS, Website, is_loopback
from .server import EmulatorServer
from .service import Service

__all__ = ["Emulator"]


def _user_line(user: dict[str, Any]) -> str:
    return f"  user     {user.get('userId')} <{user.get('email')}> {user.get('properties') or ''}"


def _account_line(account: dict[str, Any]) -> str:
    return f"  account  {account.get('accountId')} ({account.get('domain')}) {account.get('properties') or ''}"


def _membership_line(membership: dict[str, Any]) -> str:
    account, user = membership.get("account") or {}, membership.get("user") or {}
    return (
        f"  member   user {user.get('userId') or user.get('email')} in account "
        f"{account.get('accountId') or account.get('domain')} ({membership.get('status')})"
    )


def _link_line(link: dict[str, Any]) -> str:
    user = link.get("user") or {}
    return f"  device   {link.get('deviceId')} -> user {user.get('userId') or user.get('email')}"


def _event_line(event: dict[str, Any]) -> str:
    return (
        f"  event    {event.get('name')} user={event.get('user')} account={event.get('account')} "
        f"{event.get('metadata') or ''}"
    )


def _browser_line(call: dict[str, Any]) -> str:
    verified = {True: "verified", False: "NOT VERIFIED", None: "-"}[call["verified"]]
    return f"  browser  {call['command']} {str(call['args'] or '')[:120]} [{verified}] on {call['page']}"


#: What :meth:`Emulator.report` prints, in order: each ``state()`` list and how one entry reads.
_REPORT_LINES: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("users", _user_line),
    ("accounts", _account_line),
    ("memberships", _membership_line),
    ("links", _link_line),
    ("events", _event_line),
    ("frontend", _browser_line),
)


class Emulator:
    """A local journy.io API for development, demos and tests, with controllable rate limits and faults.

    ``api_keys`` maps each accepted key to its permissions (default: :data:`DEFAULT_API_KEY` with
    :data:`ALL_PERMISSIONS`). ``rate_limit`` calls per ``rate_window`` seconds per key, sliding window; a call
    answered 429 does not count. ``latency`` seconds are added before every API answer. With probability
    ``fault_rate`` a call gets one of ``faults`` (drawn from a generator seeded with ``seed``):

    - ``"5xx"``: 500, 502 or 503, sometimes with a non-JSON or empty body (as a gateway in front of an API
      answers); the call is not applied. ``"500"`` (not among the defaults): journy.io's JSON 500 alone.
    - ``"429"``: a rate-limit answer; not applied.
    - ``"timeout"``: the call IS applied, then the answer waits ``timeout_delay`` seconds, so a client that
      gives up first cannot know the outcome (the case where a resend may duplicate).
    - ``"reset"``: the connection is closed abruptly (TCP RST); not applied.

    With ``ssl_context`` (a server-side :class:`ssl.SSLContext` with a certificate loaded) it serves https, for
    trying a client the way it talks to journy.io (benchmarks use it to include the TLS handshake).

    ``disabled_keys`` are keys journy.io knows but has disabled: every API call with one answers 403 (the spec's
    "not enabled"), whether or not the key is also in ``api_keys``.

    ``websites`` are the sites ``GET /tracking/snippet`` knows (default: ``localhost``), each a :class:`Website`,
    a domain (``"acme.com"``) or a mapping of Website's fields; the snippet of one without a ``tracking_domain``
    loads the tracker from the emulator. Upserts drop the
    properties named in ``rejected_properties`` and report them in ``rejected``, for testing that a client
    surfaces them; :meth:`script_answer` makes the next call get any answer at all (a 422, a non-JSON 200).
    Every answer to a call is in :meth:`calls`, the stored data in :meth:`state`, both also
    served as JSON under ``/_emulator/`` for other processes, and as a live page at ``/``.

    It also stands in for journy.io's tracker: ``/tracker.js`` (and ``/analytics.js``) sends a page's ``journy(...)``
    calls back to the emulator, which lists them in ``state()["frontend"]``. With ``verification_secret`` (the
    website's identity-verification secret, as the app has it) each call's ``verification`` is checked
    (``verified``: True or False; None where the call carries no ID, or without a secret). The secret is never
    shown: not in the state, the config view, the log or the page.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        disabled_keys: Iterable[str] = (),
        rate_limit: int = 1800,
        rate_window: float = 60.0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        faults: Iterable[str] = FAULT_KINDS,
        timeout_delay: float = 30.0,
        seed: int | None = None,
        websites: Iterable[Website | str | Mapping[str, Any]] | None = None,
        rejected_properties: Mapping[str, str] | None = None,
        verification_secret: str | bytes | None = None,
        allow_remote: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        verification_secret = redact(verification_secret)  # first: a traceback shows it only redacted
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}: the emulator accepts a published key and shows every "
                "user it receives to anyone who can reach it; pass allow_remote=True to expose it on purpose"
            )
        self.host = host
        self.port = port
        #: Serve https with this context (a server-side context with a certificate loaded); None for http.
        self.ssl_context = ssl_context
        self._service = Service(lambda: self.url, seed)
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self.configure(
            api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS} if api_keys is None else api_keys,
            disabled_keys=disabled_keys,
            rate_limit=rate_limit,
            rate_window=rate_window,
            latency=latency,
            fault_rate=fault_rate,
            faults=faults,
            timeout_delay=timeout_delay,
            websites=[Website("localhost", DEFAULT_TRACKER_ID)] if websites is None else websites,
            rejected_properties=rejected_properties or {},
            verification_secret=verification_secret,
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
        for key, line in _REPORT_LINES:
            lines.extend(line(entry) for entry in state[key])
        lines.append(f"  ({len(self.calls())} API calls in all; the emulator's page: {self.url}/)")
        return "\n".join(lines)

    def start(self) -> Emulator:
        """Starts serving in a daemon thread (on a free port when ``port=0``) and returns ``self``."""
        if self._server is not None:
            raise RuntimeError("this emulator is already started; create a new one to serve again")
        self._server = EmulatorServer((self.host, self.port), self._service, lambda: self.url, self.ssl_context)
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
        if server is None or server.stopping.is_set():
            return
        server.stop(self._thread)

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
        return self._service.calls(path)

    def state(self) -> dict[str, Any]:
        """A copy of the stored users, accounts, memberships, events and links (as ``/_emulator/state``)."""
        return self._service.state()

    def reset(self) -> None:
        """Forgets the stored data, the call log, the rate windows and scripted answers; keeps the options."""
        self._service.reset()

    def script_answer(
        self, status: int, body: Mapping[str, Any] | str | None = None, *, path: str | None = None
    ) -> None:
        """Makes the next API call (to ``path``, or to any path) get exactly this answer, without applying it.

        For testing how a client handles answers the emulator would never give by itself (a 422, a 200 that is
        not JSON, an upsert with ``rejected``). A mapping becomes a JSON body, with ``meta`` added unless given;
        a string is sent as plain text; ``None`` sends no body. Answers queue up, first scripted first served;
        they skip authentication and the rate limit, and the call appears in the log with ``scripted: True``.
        """
        self._service.add_script(Script.checked(status, body, path))

    def configure(
        self,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        disabled_keys: Iterable[str] | None = None,
        rate_limit: int | None = None,
        rate_window: float | None = None,
        latency: float | None = None,
        fault_rate: float | None = None,
        faults: Iterable[str] | str | None = None,
        timeout_delay: float | None = None,
        seed: int | None = None,
        websites: Iterable[Website | str | Mapping[str, Any]] | None = None,
        rejected_properties: Mapping[str, str] | None = None,
        verification_secret: str | bytes | None = None,
    ) -> None:
        """Changes options while serving; ``None`` leaves one unchanged; invalid values raise ValueError.

        ``verification_secret=""`` stops checking the browser calls' verification hashes.
        """
        verification_secret = redact(verification_secret)  # first: a traceback shows it only redacted
        self._service.configure(
            api_keys=api_keys,
            disabled_keys=disabled_keys,
            seed=seed,
            websites=websites,
            rate_limit=rate_limit,
            rate_window=rate_window,
            latency=latency,
            fault_rate=fault_rate,
            faults=faults,
            timeout_delay=timeout_delay,
            rejected_properties=rejected_properties,
            verification_secret=verification_secret,
        )

    def config(self) -> dict[str, Any]:
        """The current options as JSON-ready data; keys appear only as fingerprints."""
        return self._service.config()
