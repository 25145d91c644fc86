"""The emulated API apart from HTTP: options, keys, stored data, the call log, and what one call gets.

The HTTP handler and the control views talk to a :class:`Service` through its public methods only; the public
:class:`~journy_core.emulator.Emulator` wraps one together with the server that feeds it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from ..secrets import redact
from .endpoints import ROUTES, Endpoint, EndpointContext, Outcome, check_body, json_outcome, parse_json, refusal
from .frontend import frontend_entries, verification_key
from .limits import Limiter, Script, ScriptQueue, server_error
from .options import Options, Website, check_api_keys, check_disabled_keys, check_websites, fingerprint
from .state import Store

__all__ = ["MAX_CALLS", "Service"]

#: Bound on the call log, so a long benchmark cannot exhaust memory; the oldest calls go first.
MAX_CALLS = 100_000

_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})


class Service:
    """The emulator's state and rules; ``url`` gives the emulator's base URL once it serves (for snippets)."""

    def __init__(self, url: Callable[[], str], seed: int | None = None) -> None:
        self._url = url
        # One lock keeps each applied call atomic with its entry in the call log, and the views consistent.
        self._lock = threading.Lock()
        self._configure_lock = threading.Lock()
        self._store = Store()
        self._calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self._call_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        # A random prefix keeps request IDs unique across emulator instances and restarts.
        self._request_prefix = f"emu-{secrets.token_hex(4)}"
        self._limiter = Limiter(seed)
        self._scripts = ScriptQueue()
        self._keys: dict[str, tuple[str, ...]] = {}
        self._fingerprints: dict[str, str] = {}
        self._disabled: frozenset[str] = frozenset()
        self._websites: dict[str, Website] = {}
        self._options = Options()
        # The website's identity-verification secret as HMAC key bytes (redacted repr), or None: nothing checked.
        self._verification_key: bytes | None = None

    @property
    def options(self) -> Options:
        """The current options (swapped whole by :meth:`configure`)."""
        return self._options

    # --- control ---

    def configure(
        self,
        *,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        disabled_keys: Iterable[str] | None = None,
        seed: int | None = None,
        websites: Iterable[Website | str | Mapping[str, Any]] | None = None,
        verification_secret: str | bytes | None = None,
        **options: Any,
    ) -> None:
        """Changes options while serving (see :meth:`Options.updated`); invalid values raise ValueError.

        ``verification_secret`` checks the browser calls' hashes from now on; ``""`` stops checking them.
        """
        verification_secret = redact(verification_secret)  # first: no frame below may show it raw
        # Serializes configure() calls, each of which reads the old options to build the new ones.
        with self._configure_lock:
            new = self._options.updated(**options)
            keys = None if api_keys is None else check_api_keys(api_keys)
            sites = None if websites is None else check_websites(websites)
            disabled = None if disabled_keys is None else check_disabled_keys(disabled_keys)
            key = None if verification_secret is None else verification_key(verification_secret)
            with self._lock:
                if verification_secret is not None:
                    self._verification_key = key
                self._options = new
                if keys is not None:
                    self._keys = keys
                    self._fingerprints = {key: fingerprint(key) for key in keys}
                if sites is not None:
                    self._websites = sites
                if disabled is not None:
                    self._disabled = disabled
            if seed is not None:
                self._limiter.reseed(seed)

    def config(self) -> dict[str, Any]:
        """The current options as JSON-ready data; keys appear only as fingerprints."""
        with self._lock:
            keys, websites, disabled = self._keys, self._websites, self._disabled
        return {
            **self._options.view(),
            "api_keys": [{"fingerprint": fingerprint(key), "permissions": list(perms)} for key, perms in keys.items()],
            "disabled_keys": sorted(fingerprint(key) for key in disabled),
            "websites": [dataclasses.asdict(site) for site in websites.values()],
            # Whether browser calls are checked; the secret itself is never shown, not even as a fingerprint.
            "verification_secret_set": self._verification_key is not None,
        }

    def add_script(self, script: Script) -> int:
        """Queues a scripted answer; returns how many are waiting."""
        return self._scripts.add(script)

    def reset(self) -> None:
        """Forgets the stored data, the call log, the rate windows and scripted answers; keeps the options."""
        with self._lock:
            self._store = Store()
            self._calls.clear()
        self._limiter.reset()
        self._scripts.clear()

    # --- views ---

    def calls(self, path: str | None = None, *, last: int | None = None) -> list[dict[str, Any]]:
        """Copies of the logged calls, oldest first; only those to ``path`` if given, only the ``last`` ones."""
        with self._lock:
            if last is not None:
                recent = list(itertools.islice(reversed(self._calls), last))[::-1]
                return copy.deepcopy([call for call in recent if path is None or call["path"] == path])
            return copy.deepcopy([call for call in self._calls if path is None or call["path"] == path])

    def state(self, events_limit: int | None = None) -> dict[str, Any]:
        """A copy of the stored data, with at most the ``events_limit`` latest events if given."""
        with self._lock:
            return self._store.snapshot(events_limit=events_limit)

    # --- browser calls (the tracker script's POST /_emulator/frontend) ---

    def record_frontend(self, raw: bytes, referer: str | None) -> tuple[int, dict[str, Any]]:
        """Checks and records the ``journy(...)`` calls a page's tracker script posted; the answer to send."""
        document, error = parse_json(raw) if raw else (None, "no body")
        entries = frontend_entries(document, referer, self._verification_key) if error is None else error
        if isinstance(entries, str):
            return 400, {"message": entries}
        with self._lock:
            self._store.record_frontend(entries)
        return 200, {"recorded": len(entries)}

    # --- API calls (from the handler threads) ---

    def handle_api(self, method: str, path: str, query: str, headers: Message, raw: bytes) -> Outcome:
        """The answer to one API call, logged; a fault's delay and reset are for the HTTP layer to act out."""
        options = self._options
        key = headers.get("X-Api-Key")
        request_id = f"{self._request_prefix}-{next(self._request_ids):06d}"
        params = dict(parse_qsl(query, keep_blank_values=True))
        body, body_error = parse_json(raw) if raw else (None, None)
        endpoint = ROUTES.get(path, {}).get(method)
        entry = self._entry(method, path, params, body, request_id, endpoint, key, headers)
        scripted = self._scripts.take(path)
        if scripted is not None:
            entry["scripted"] = True
            outcome = scripted.outcome(request_id, options.rate_limit)
        else:
            outcome = self._answer(options, endpoint, entry, key, (body, raw, body_error))
        outcome.delay += options.latency
        if not outcome.reset:
            entry["status"] = outcome.status
        with self._lock:
            entry["id"] = next(self._call_ids)
            self._calls.append(entry)
        return outcome

    def _entry(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: Any,
        request_id: str,
        endpoint: Endpoint | None,
        key: str | None,
        headers: Message,
    ) -> dict[str, Any]:
        return {
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
            "ignored": [] if endpoint is None else endpoint.ignored(body),
            "deprecated": endpoint is not None and endpoint.deprecated,
            "scripted": False,
            "api_key_sent": key is not None,
            "api_key_fingerprint": None if key is None else (self._fingerprints.get(key) or fingerprint(key)),
            # Credentials are left out: the log is served to anyone who can reach the emulator.
            "headers": {name: value for name, value in headers.items() if name.lower() not in _SECRET_HEADERS},
        }

    def _answer(
        self,
        options: Options,
        endpoint: Endpoint | None,
        entry: dict[str, Any],
        key: str | None,
        request: tuple[Any, bytes, str | None],
    ) -> Outcome:
        limit, request_id = options.rate_limit, entry["request_id"]
        perms = self._keys.get(key) if key else None
        if endpoint is not None and key in self._disabled:
            # The spec's 403: a key journy.io knows but has disabled; checked before the window, which it never uses.
            return json_outcome(403, {"message": "The API key is disabled"}, request_id, limit, limit)
        if endpoint is None or key is None or perms is None:
            status, payload = refusal(entry["method"], entry["path"], endpoint, key)
            outcome = json_outcome(status, payload, request_id, limit, limit)
            if status == 405:
                outcome.headers = (("Allow", ", ".join(ROUTES[entry["path"]])),)
            return outcome
        gate = self._limiter.admit(options, key, endpoint, perms)
        entry["fault"] = gate.fault
        if gate.refusal is not None:
            return json_outcome(gate.refusal[0], gate.refusal[1], request_id, limit, gate.remaining)
        if gate.fault in ("5xx", "500"):  # "500": variant 0, journy.io's own JSON answer
            return server_error(gate.variant, request_id, limit, gate.remaining)
        if gate.fault == "reset":
            return Outcome(0, b"", None, limit, gate.remaining, reset=True)
        body, raw, body_error = request
        invalid = check_body(endpoint, body, raw, body_error)
        answer: dict[str, Any] | None
        if invalid is not None:
            status, answer = 400, invalid
        else:
            with self._lock:
                context = EndpointContext(self._store, options, self._websites, self._url)
                status, answer = endpoint.apply(context, body, entry["query"], perms)
        entry["applied"] = 200 <= status < 300
        outcome = json_outcome(status, answer, request_id, limit, gate.remaining)
        if gate.fault == "timeout":
            outcome.delay = options.timeout_delay
        return outcome
