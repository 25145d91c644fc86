"""What the adapters' outbox commands share: ``flask journy relay`` / ``manage.py journy_relay`` (a relay with the
backend's options, stopped by SIGTERM/SIGINT, ``--once`` and its exit code) and the backlog lines of
``flask journy check`` / ``manage.py journy_check``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..client import Client
from .backend import OutboxBackend
from .relay import Relay
from .store import Backlog, OutboxStore

__all__ = [
    "STALE_BACKLOG_SECONDS",
    "backlog_report",
    "relay_for",
    "relay_options_problem",
    "run_relay",
    "stop_on_signals",
]

#: A pending row older than this says no relay is delivering (none runs, or journy.io refuses the calls).
STALE_BACKLOG_SECONDS = 600.0


def relay_for(backend: OutboxBackend | None, store: OutboxStore, client_factory: Callable[[], Client]) -> Relay:
    """An external relay on ``store``: with ``backend``'s options (batch, lease, concurrency, retry, retention), or
    the defaults when the app's backend is not the outbox (rows left from when it was still get delivered)."""
    if backend is None:
        return Relay(store, client_factory)
    return backend.new_relay(store, client_factory)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` for the block (the relay finishes the call in flight and gives back the
    rest); no handler is installed outside the main thread, where Python allows none."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def handler(number: int, frame: Any) -> None:
        stop.set()

    for number in previous:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def relay_options_problem(once: bool, max_seconds: float | None) -> str | None:
    """What is wrong with the relay commands' options (``--max-seconds`` without ``--once``, or not above 0), or
    None: the one rule of ``manage.py journy_relay`` and ``flask journy relay``."""
    if max_seconds is None:
        return None
    if not once:
        return "--max-seconds goes with --once."
    if not max_seconds > 0:  # NaN too
        return f"--max-seconds must be a number of seconds above 0, not {max_seconds!r}."
    return None


def run_relay(relay: Relay, *, once: bool, max_seconds: float | None, echo: Callable[[str], None]) -> int:
    """Run ``relay`` until SIGTERM/SIGINT, or with ``once`` until every row pending at its start is settled (at
    most ``max_seconds``); returns the exit code: 0, or 1 when ``once`` left something deliverable."""
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            if once:
                deadline = None if max_seconds is None else time.monotonic() + max_seconds
                summary = relay.run_once(deadline, stop=stop)
                left = f"{summary.left} left" if summary.left >= 0 else "the outbox table cannot be read (see the log)"
                echo(f"{summary.delivered} row(s) delivered, {summary.dead} dead, in {summary.seconds:.1f} s; {left}.")
                return 1 if summary.left else 0
            echo(f"journy relay {relay.owner} delivering from {relay.store!r}; Ctrl-C stops it.")
            relay.run(stop)
            echo(f"Stopped: {relay.delivered_rows} delivered, {relay.dead_rows} dead.")
            return 0
    finally:
        relay.close()


def backlog_report(backlog: Backlog, relay_command: str, list_command: str) -> tuple[list[str], list[str]]:
    """The lines ``check`` prints about the outbox, and its warnings (a stale backlog, dead rows)."""
    age = backlog.oldest_pending_age
    oldest = "" if age is None else f", oldest {age:.0f} s old"
    lines = [f"outbox:              {backlog.pending} pending{oldest}, {backlog.dead} dead"]
    warnings = []
    if age is not None and age > STALE_BACKLOG_SECONDS:
        warnings.append(
            f"the outbox's oldest pending row is {age:.0f} s old: is a relay running (the app's relay thread "
            f"needs the API key; or `{relay_command}`), and does journy.io accept the calls?"
        )
    if backlog.dead:
        warnings.append(f"{backlog.dead} outbox row(s) are dead (journy.io refused them): `{list_command}` shows why")
    return lines, warnings
