"""What stands between a call and its endpoint: the rate limit, the injected faults and the scripted answers.

Each part keeps its own lock, so an API call takes them one at a time and never holds two.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .endpoints import JSON, Endpoint, Outcome, json_outcome
from .options import Options

__all__ = ["Gate", "Limiter", "Script", "ScriptQueue", "server_error"]


@dataclass
class Gate:
    """The limiter's verdict on one call: refused (429, 401), or let through, perhaps with a fault to act out."""

    remaining: int
    refusal: tuple[int, dict[str, Any]] | None = None
    fault: str | None = None
    variant: int = 0


class Limiter:
    """A sliding-window rate limit per key, the permission check and the fault draw."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def reseed(self, seed: int) -> None:
        """Restarts the fault draw from ``seed``, for a reproducible run."""
        with self._lock:
            self._random.seed(seed)

    def reset(self) -> None:
        """Forgets every key's window."""
        with self._lock:
            self._windows.clear()

    def admit(self, options: Options, key: str, endpoint: Endpoint, perms: tuple[str, ...]) -> Gate:
        """Rate limit, permission and fault draw, in one critical section so concurrent calls count exactly."""
        limit = options.rate_limit
        with self._lock:
            window = self._windows.setdefault(key, deque())
            now = time.monotonic()
            edge = now - options.rate_window
            while window and window[0] <= edge:
                window.popleft()
            if len(window) >= limit:
                message = f"Rate limit exceeded: at most {limit} calls per {options.rate_window:g} seconds"
                return Gate(0, (429, {"message": message}))
            if endpoint.permission is not None and endpoint.permission not in perms:
                window.append(now)
                message = f"The API key does not have the permission {endpoint.permission}"
                return Gate(limit - len(window), (401, {"message": message}))
            fault = None
            if options.fault_rate > 0 and self._random.random() < options.fault_rate:
                fault = self._random.choice(options.faults)
            if fault == "429":
                # Like a real 429, the emulated one does not count against the window.
                return Gate(0, (429, {"message": "Rate limit exceeded (emulated fault)"}), fault)
            window.append(now)
            variant = self._random.randrange(4) if fault == "5xx" else 0
            return Gate(limit - len(window), None, fault, variant)


def server_error(variant: int, request_id: str, limit: int, remaining: int) -> Outcome:
    """An emulated 5xx in one of the shapes real gateways answer: the client must cope with each of them."""
    if variant == 1:
        page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        return Outcome(502, page, "text/html; charset=utf-8", limit, remaining)
    if variant == 2:
        return Outcome(503, b"", None, limit, remaining)
    if variant == 3:
        return Outcome(503, b"Service Unavailable", "text/plain; charset=utf-8", limit, remaining)
    return json_outcome(500, {"message": "Internal server error (emulated)"}, request_id, limit, remaining)


@dataclass(frozen=True)
class Script:
    """An answer the next call (to ``path``, or to any path) gets instead of being applied."""

    status: int
    body: dict[str, Any] | str | None
    path: str | None

    @classmethod
    def checked(cls, status: int, body: Mapping[str, Any] | str | None, path: str | None) -> Script:
        """A script from untrusted values; a bad one raises ValueError or TypeError."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if body is not None and not isinstance(body, str | Mapping):
            raise TypeError(f"body must be a mapping, a string or None, not {type(body).__name__}")
        if path is not None and not isinstance(path, str):
            raise TypeError(f"path must be a string such as '/track', not {type(path).__name__}")
        return cls(status, copy.deepcopy(dict(body)) if isinstance(body, Mapping) else body, path)

    def outcome(self, request_id: str, limit: int) -> Outcome:
        """The scripted answer, with journy.io's ``meta`` block added to a JSON body unless it has one."""
        if self.body is None:
            return Outcome(self.status, b"", None, limit, limit)
        if isinstance(self.body, str):
            return Outcome(self.status, self.body.encode(), "text/plain; charset=utf-8", limit, limit)
        meta = {} if "meta" in self.body else {"meta": {"requestId": request_id, "status": self.status}}
        document = {**meta, **self.body}
        return Outcome(self.status, json.dumps(document).encode(), JSON, limit, limit)


class ScriptQueue:
    """Scripted answers, first scripted first served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: deque[Script] = deque()

    def add(self, script: Script) -> int:
        """Queues ``script``; returns how many answers are now waiting."""
        with self._lock:
            self._scripts.append(script)
            return len(self._scripts)

    def take(self, path: str) -> Script | None:
        """The first script for ``path`` (or for any path), removed from the queue; None if there is none."""
        if not self._scripts:
            return None  # the common case, without taking the lock
        with self._lock:
            for index, script in enumerate(self._scripts):
                if script.path is None or script.path == path:
                    del self._scripts[index]
                    return script
        return None

    def clear(self) -> None:
        """Drops every waiting script."""
        with self._lock:
            self._scripts.clear()
