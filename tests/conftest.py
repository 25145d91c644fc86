"""Fixtures shared by every test package: the emulator, and services that are used when reachable.

Tests that need PostgreSQL, Redis or RabbitMQ skip with a reason when the service is not reachable, unless
JOURNY_REQUIRE_SERVICES=1 (CI sets it), where a missing service fails the test instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from journy_core.emulator import DEFAULT_API_KEY, Emulator

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
    """A running emulator on a free loopback port, reset before each test (shared for speed)."""
    _session_emulator.configure(latency=0.0, fault_rate=0.0, rate_limit=1800, rate_window=60.0)
    _session_emulator.reset()
    return _session_emulator


@pytest.fixture
def api_key() -> str:
    return DEFAULT_API_KEY
