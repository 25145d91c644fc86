"""A long-running relay outlives its database connections: killed by the server (a restart, a failover, an idle
timeout, ``pg_terminate_backend``), they come back at the relay's next try, with no row lost.

Django recycles connections at the start and end of each request; a relay thread or a ``journy_relay`` process has
no requests, so without help a connection the server closed would fail every query until the process ends.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import require_service
from tests.django.test_outbox_crash import ROOT, app_env, run_app

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES))]

APPLICATION = "journy-relay-reconnect-test"


def _relay_database() -> dict[str, object]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    if "postgres" not in settings.DATABASES:
        pytest.fail("no postgres alias in the test settings although PostgreSQL answers")
    found = connections["postgres"].settings_dict
    database = {key: found[key] for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")}
    # A name of its own on the server, so that the test kills the relay's connections and nobody else's.
    database["OPTIONS"] = {**found["OPTIONS"], "application_name": APPLICATION}
    return database


def _kill_relay_connections() -> int:
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION]
        )
        (killed,) = cursor.fetchone()
    return int(killed)


def _wait_for_events(emulator, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        received = len(emulator.calls("/track"))
        if received >= count:
            return received
        time.sleep(0.2)
    return len(emulator.calls("/track"))


def test_a_relay_whose_database_connections_were_killed_delivers_the_rows_written_afterwards(emulator):
    emulator.configure(rate_limit=100_000)
    database = _relay_database()
    relay = subprocess.Popen(
        [sys.executable, "-m", "tests.django.outbox_app", "journy_relay"],
        env=app_env(database, emulator.url, relay=False),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run_app(database, "add-events", "20").returncode == 0
        assert _wait_for_events(emulator, 20, 30) == 20, "the relay did not deliver the first rows"
        assert _kill_relay_connections() >= 1, "the relay held no connection to kill"
        assert run_app(database, "add-events", "20").returncode == 0
        received = _wait_for_events(emulator, 40, 45)
    finally:
        relay.terminate()
        _, errors = relay.communicate(timeout=30)
    assert received == 40, f"{received} of 40 events delivered; the relay said:\n{errors[-3000:]}"
    assert relay.returncode == 0, errors[-3000:]
