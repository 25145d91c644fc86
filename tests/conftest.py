"""Fixtures shared by every test package: the emulator, and services that are used when reachable.

Tests that need PostgreSQL, Redis or RabbitMQ skip with a reason when the service is not reachable, unless
JOURNY_REQUIRE_SERVICES=1 (CI sets it), where a missing service fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journy_core.emulator import DEFAULT_API_KEY, FAULT_KINDS, Emulator

REQUIRE_SERVICES = os.environ.get("JOURNY_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under JOURNY_REQUIRE_SERVICES=1, fail) when ``host:port`` does not accept connections."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} is not reachable on {host}:{port} ({exc})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Debian's Chromium: Playwright's own browser download cannot be used here (scripts/ensure_chromium.sh installs it).
CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags Chromium keeps trying to reach Google's hosts on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's headless Chromium; skips (or, under JOURNY_REQUIRE_SERVICES=1, fails) with
    the reason when Chromium or Playwright is missing."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            reason = "playwright is not installed (pip install playwright)"
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def _no_env_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may export JOURNY_API_URL for the demo; tests choose their URLs themselves.
    monkeypatch.delenv("JOURNY_API_URL", raising=False)


@pytest.fixture(scope="session")
def _session_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(_session_emulator: Emulator) -> Emulator:
    """A running emulator on a free loopback port, reset before each test (shared for speed).

    Every option a test may change goes back to its default here, not only the common ones: a test that left a
    subset of fault kinds behind once shifted a later test's seeded fault draws."""
    _session_emulator.configure(
        latency=0.0,
        fault_rate=0.0,
        faults=FAULT_KINDS,
        timeout_delay=30.0,
        rate_limit=1800,
        rate_window=60.0,
        rejected_properties={},
        verification_secret="",
    )
    _session_emulator.reset()
    return _session_emulator


@pytest.fixture
def api_key() -> str:
    return DEFAULT_API_KEY
