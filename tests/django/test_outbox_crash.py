"""A Django process committing users, accounts and memberships one transaction at a time, killed with SIGKILL at a
random point, then ``manage.py journy_relay --once``: every committed change is at the emulator, nothing from a
rolled back transaction or savepoint. On SQLite (a file), PostgreSQL and MariaDB; also with 30% faults.

The process is ``tests/django/outbox_app.py`` (the test settings, one database, the outbox backend with its relay
thread running: some rows are delivered before the kill, some are in flight when it comes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import REQUIRE_SERVICES, require_service

ROOT = Path(__file__).resolve().parents[2]

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgresql", marks=pytest.mark.services),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.services),
]
_PORTS = {"postgres": ("PostgreSQL", 5432), "mariadb": ("MariaDB", 3306)}

pytestmark = pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES))


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The app process's ``DATABASES["default"]``: a migrated SQLite file, or this run's (migrated) test database
    of the PostgreSQL or MariaDB alias (emptied after the test like any other)."""
    alias = request.param
    if alias == "default":
        config: dict[str, object] = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "app.sqlite3")}
        if django.VERSION >= (5, 1):  # what journy.W006 asks of an outbox on SQLite (the writer retries on 4.2)
            config["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
        run_app(config, "migrate", "--verbosity", "0", timeout=120)
        return config
    require_service(_PORTS[alias][0], "127.0.0.1", _PORTS[alias][1])
    if alias not in settings.DATABASES:
        reason = f"no {alias} alias in the test settings (no MySQL driver, or it came up later)"
        pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it") if REQUIRE_SERVICES else pytest.skip(reason)
    found = connections[alias].settings_dict
    return {key: found[key] for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")}


def app_env(database: dict[str, object], api_url: str, *, relay: bool) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOURNY_")}
    env.update(
        OUTBOX_APP_DATABASE=json.dumps(database),
        OUTBOX_APP_API_URL=api_url,
        OUTBOX_APP_RELAY="1" if relay else "0",
        PYTHONPATH=str(ROOT),
    )
    return env


def run_app(
    database: dict[str, object], *args: str, api_url: str = "http://127.0.0.1:9", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.django.outbox_app", *args],
        env=app_env(database, api_url, relay=False),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kill_while_writing(database: dict[str, object], api_url: str, seed: int) -> int:
    """Start the writing process, SIGKILL it after a random number of commits; returns the last step it printed."""
    rng = random.Random(seed)
    commits = rng.randint(30, 200)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.django.outbox_app", "write", str(seed)],
        env=app_env(database, api_url, relay=True),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = -1
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            last = int(line)
            commits -= 1
            if commits <= 0:
                break
        writer.send_signal(signal.SIGKILL)  # mid-transaction, mid-call, or between: wherever it is now
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert last >= 0, writer.stderr.read() if writer.stderr else "the writer printed nothing"
    return last


def emulator_view(state: dict[str, list[dict[str, object]]], users: set[str]) -> dict[str, object]:
    """The emulator's state in the shape of the app's ``dump``."""
    accounts = {str(a["accountId"]): a["properties"]["name"] for a in state["accounts"]}  # type: ignore[index]
    members = sorted(
        [str(m["account"]["accountId"]), str(m["user"]["userId"])]  # type: ignore[index]
        for m in state["memberships"]
        if m["status"] == "active" and str(m["user"]["userId"]) in users  # type: ignore[index]
    )
    return {
        "users": {str(u["userId"]): u["email"] for u in state["users"]},
        "accounts": accounts,
        "members": members,
    }


def crash_then_relay(database: dict[str, object], emulator, seed: int) -> None:
    last = kill_while_writing(database, emulator.url, seed)
    relay = run_app(database, "journy_relay", "--once", "--max-seconds", "90", api_url=emulator.url, timeout=150)
    assert relay.returncode == 0, relay.stdout + relay.stderr
    dumped = run_app(database, "dump")
    assert dumped.returncode == 0, dumped.stderr
    expected = json.loads(dumped.stdout)
    assert len(expected["users"]) > 0, f"nothing committed before step {last}"
    state = emulator.state()
    got = emulator_view(state, set(expected["users"]))
    # Every committed user (with its e-mail), account (with its last name: each entity's order kept) and membership.
    assert {key: got["users"].get(key) for key in expected["users"]} == expected["users"]
    assert got["accounts"] == expected["accounts"]
    assert got["members"] == expected["members"]
    # Nothing from a rolled back transaction or savepoint, and the deleted users gone: not even re-created by a
    # membership call (retried, or left leased by the killed relay) arriving after the delete.
    assert not any("rolled-back" in str(u) or "savepoint" in str(u) for u in state["users"])
    extra = {key: email for key, email in got["users"].items() if key not in expected["users"]}
    assert extra == {}, _calls_naming(emulator, extra)


def _calls_naming(emulator, user_ids: dict[str, object]) -> str:
    """The emulator's calls that name these users, in the order it logged them: what a failure needs to be read."""
    lines = []
    for call in emulator.calls():
        text = json.dumps(call.get("body"))
        if any(f'"userId": "{user_id}"' in text for user_id in user_ids):
            lines.append(f"{call['time']:.3f} {call['path']} {call['status']} fault={call['fault']} {text[:160]}")
    return "calls naming them:\n" + "\n".join(lines)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_committed_change_reaches_journy_io_after_a_sigkill(database, emulator, seed):
    emulator.configure(rate_limit=100_000)
    crash_then_relay(database, emulator, seed)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_committed_change_reaches_journy_io_after_a_sigkill_with_30_percent_faults(database, emulator, seed):
    emulator.configure(rate_limit=100_000, fault_rate=0.3, faults=("5xx", "reset"), seed=seed)
    crash_then_relay(database, emulator, seed)


def test_two_relay_processes_deliver_every_row_once(database, emulator):
    # 20 ms a call: alone, one relay would need seconds for them all, so the two overlap.
    emulator.configure(rate_limit=100_000, latency=0.02)
    added = run_app(database, "add-events", "600")
    assert added.returncode == 0, added.stderr
    command = [sys.executable, "-m", "tests.django.outbox_app", "journy_relay", "--once", "--max-seconds", "90"]
    # A lease longer than any batch: a row is sent twice only when its lease runs out before it is settled.
    env = {**app_env(database, emulator.url, relay=False), "OUTBOX_APP_LEASE": "60"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    relays = [subprocess.Popen(command, env=env, cwd=ROOT, **pipes) for _ in "ab"]
    outputs = [relay.communicate(timeout=150) for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0], outputs
    names = [call["body"]["name"] for call in emulator.calls("/track")]
    assert sorted(names) == sorted(f"event-{n}" for n in range(600))  # each once: no row held by both relays
    assert all(b" 0 row(s) delivered" not in out for out, _ in outputs)  # both took part


def test_the_check_warns_when_the_outbox_table_is_not_migrated(tmp_path):
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "new.sqlite3")}
    before = run_app(database, "check", "--database", "default")
    assert "journy.W005" in before.stderr
    assert "manage.py migrate journy_django --database default" in before.stderr
    run_app(database, "migrate", "--verbosity", "0")
    after = run_app(database, "check", "--database", "default")
    assert "journy.W005" not in after.stdout + after.stderr
