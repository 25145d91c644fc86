"""Several relays on one outbox table, on PostgreSQL and MariaDB (``SELECT ... FOR UPDATE SKIP LOCKED``): two app
processes with their in-process relay writing 2,000 rows through the models and ``track()`` while two
``manage.py journy_relay`` processes run too; and a relay killed mid-batch, whose rows another relay delivers after
the lease. Everything is counted at the emulator's call log and in the table.

The app processes are ``tests/django/outbox_concurrency_app.py`` (``workload``), the relays its ``journy_relay``
(the settings of ``tests/django/outbox_app.py``, with a short read timeout); the relay that finishes the killed one's
work is ``outbox_app.py``'s ``journy_relay --once``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections

from journy_core import operations as ops
from journy_django.models import OutboxRow
from journy_django.outbox import DjangoStore
from tests.conftest import REQUIRE_SERVICES, require_service
from tests.django.test_outbox_crash import ROOT, app_env, emulator_view, run_app
from tests.django.testapp.models import Organization

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES)),
]

#: Rows each of the two app processes writes: 2,000 in all.
ROWS_PER_APP = 1000
#: Calls in flight per relay (``CONCURRENCY``): at most this many unsettled calls die with a relay.
CONCURRENCY = 4
#: The client's read timeout (s), and how long the emulator's ``timeout`` fault keeps its answer: longer.
READ_TIMEOUT = 3.0
TIMEOUT_DELAY = 5.0
#: The killed relay's lease (s): short, so that its rows come back soon.
SHORT_LEASE = 3.0
#: Generous waits: other runs share this machine.
WAIT = 240.0


@pytest.fixture(
    params=[pytest.param("postgres", id="postgresql"), pytest.param("mariadb", id="mariadb")],
)
def server_database(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """The alias and the app processes' ``DATABASES["default"]``: this run's migrated test database of the
    PostgreSQL or MariaDB alias (emptied after the test like any other)."""
    alias = request.param
    name, port = {"postgres": ("PostgreSQL", 5432), "mariadb": ("MariaDB", 3306)}[alias]
    require_service(name, "127.0.0.1", port)
    if alias not in settings.DATABASES:
        reason = f"no {alias} alias in the test settings (no MySQL driver, or it came up later)"
        pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it") if REQUIRE_SERVICES else pytest.skip(reason)
    found = connections[alias].settings_dict
    return alias, {key: found[key] for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")}


def start(module: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"tests.django.{module}", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def running(processes: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Kill whatever is still running when the block ends (a failed wait, an assertion)."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def stop(relay: subprocess.Popen[str]) -> str:
    """SIGTERM a ``journy_relay`` (it finishes its calls in flight); its output, once it exited 0."""
    relay.send_signal(signal.SIGTERM)
    out, err = relay.communicate(timeout=WAIT)
    assert relay.returncode == 0, out + err
    return out


def left_in_table(alias: str) -> dict[str, int]:
    """The rows still in the table by status (delivered rows are deleted: none should be left)."""
    rows = OutboxRow.objects.using(alias).values_list("status", flat=True)
    return dict(Counter(rows))


def database_view(alias: str) -> dict[str, Any]:
    """The users, accounts and memberships in the database, as the emulator should hold them (``outbox_app``'s
    ``dump``, read from this process)."""
    users = {str(pk): email for pk, email in get_user_model().objects.using(alias).values_list("pk", "email")}
    accounts = {str(pk): name for pk, name in Organization.objects.using(alias).values_list("pk", "name")}
    links = Organization.members.through.objects.using(alias).values_list("organization_id", "user_id")
    return {"users": users, "accounts": accounts, "members": sorted([str(org), str(user)] for org, user in links)}


def applied_tracks(emulator: Any) -> tuple[Counter[str], Counter[str]]:
    """The event names the emulator applied: those whose answer the sender could read, and the copies applied under
    a ``timeout`` fault (the answer never came: the relay cannot know it landed, and sends it again)."""
    answered: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for call in emulator.calls("/track"):
        if call["applied"]:
            (unknown if call["fault"] == "timeout" else answered)[call["body"]["name"]] += 1
    return answered, unknown


def test_two_external_and_two_in_process_relays_deliver_2000_rows_each_once_in_entity_order(server_database, emulator):
    alias, database = server_database
    emulator.configure(
        rate_limit=100_000, fault_rate=0.01, faults=("timeout", "reset", "5xx"), timeout_delay=TIMEOUT_DELAY, seed=5
    )
    # A lease longer than any batch: with no relay killed, a row is sent twice only after a timeout fault.
    common = {
        "OUTBOX_APP_LEASE": "60",
        "OUTBOX_APP_TIMEOUT": str(READ_TIMEOUT),
        "OUTBOX_APP_CONCURRENCY": str(CONCURRENCY),
    }
    relay_env = {**app_env(database, emulator.url, relay=False), **common}
    app_env_on = {**app_env(database, emulator.url, relay=True), **common}
    started = time.monotonic()
    relays = [start("outbox_concurrency_app", "journy_relay", env=relay_env) for _ in "ab"]
    apps = [
        start("outbox_concurrency_app", "workload", str(index), str(ROWS_PER_APP), str(40 + index), env=app_env_on)
        for index in (0, 1)
    ]
    with running(relays + apps):
        finished = [app.communicate(timeout=WAIT) for app in apps]
        assert [app.returncode for app in apps] == [0, 0], finished
        reports = [json.loads(out) for out, _ in finished]
        assert left_in_table(alias) == {}  # nothing pending, nothing dead: every row delivered
        outputs = [stop(relay) for relay in relays]
    seconds = time.monotonic() - started

    # 2,000 rows, each delivered (settled) by exactly one of the four relays.
    assert sum(report["queued"] for report in reports) == 2 * ROWS_PER_APP
    external = [int(out.rsplit("Stopped: ", 1)[1].split(" ")[0]) for out in outputs]
    in_process = [report["relay_delivered"] for report in reports]
    assert sum(external) + sum(in_process) == 2 * ROWS_PER_APP, (external, in_process)

    # Every event exactly once, but for the copies applied under a timeout fault (their outcome unknown).
    answered, unknown = applied_tracks(emulator)
    events = [name for report in reports for name in report["events"]]
    assert sorted(answered.elements()) == sorted(events)
    assert set(unknown) <= set(events)

    # Each user, account and membership as the database holds it: a user's and an account's last values (their
    # upserts kept in order across relays), the deleted users gone (no upsert nor membership sent after the delete).
    expected = database_view(alias)
    got = emulator_view(emulator.state(), set(expected["users"]))
    assert got["users"] == expected["users"]
    assert got["accounts"] == expected["accounts"]
    assert got["members"] == expected["members"]
    deleted = {user for report in reports for user in report["deleted"]}
    assert deleted and not deleted & set(got["users"])
    # Each deleted user got its delete (the upserts a relay claimed with it were replaced by it, never sent).
    deletes = {call["body"]["identification"]["userId"] for call in emulator.calls("/users") if call["applied"]}
    assert deleted <= deletes

    calls = emulator.calls()
    faults = Counter(call["fault"] for call in calls if call["fault"])
    print(
        f"\n{2 * ROWS_PER_APP} rows in {seconds:.1f} s: {len(calls)} calls ({dict(Counter(c['path'] for c in calls))}),"
        f" faults {dict(faults)}; delivered by external relays {external}, in-process {in_process};"
        f" {len(events)} events, {sum(unknown.values())} applied twice after a timeout; {len(deleted)} users deleted;"
        f" app seconds (write, drain) {[report['seconds'] for report in reports]}"
    )


def test_a_relay_killed_mid_batch_leaves_its_rows_to_the_next_relay_after_the_lease(server_database, emulator):
    alias, database = server_database
    events = 200
    # 100 ms a call: the relay is mid-batch, calls in flight, when it is killed.
    emulator.configure(rate_limit=100_000, latency=0.1)
    # Seven users' events (each user's delivered in order, one at a time): every worker busy.
    DjangoStore(using=alias).add([ops.track(f"event-{n}", user_id=n % 7) for n in range(events)])
    env = {
        **app_env(database, emulator.url, relay=False),
        "OUTBOX_APP_LEASE": str(SHORT_LEASE),
        "OUTBOX_APP_CONCURRENCY": str(CONCURRENCY),
    }
    killed = start("outbox_concurrency_app", "journy_relay", env=env)
    with running([killed]):
        deadline = time.monotonic() + WAIT
        while len(emulator.calls("/track")) < 12 and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.poll() is None, "the relay ended before it was killed:\n" + "".join(killed.communicate())[-3000:]
        killed.kill()
        killed.communicate(timeout=WAIT)
    killed_at = time.time()
    # What the killed relay still held: its lease, and the events in it.
    leased = OutboxRow.objects.using(alias).exclude(locked_by="")
    held = {json.loads(row.operation)["payload"]["name"]: row.locked_until for row in leased}
    assert held, "the relay was killed between batches"
    emulator.configure(latency=0.0)

    after = run_app(database, "journy_relay", "--once", "--max-seconds", "120", api_url=emulator.url, timeout=WAIT)
    assert after.returncode == 0, after.stdout + after.stderr
    assert left_in_table(alias) == {}

    calls = [call for call in emulator.calls("/track") if call["applied"]]
    sent = Counter(call["body"]["name"] for call in calls)
    assert set(sent) == {f"event-{n}" for n in range(events)}  # every row delivered
    twice = {name for name, count in sent.items() if count > 1}
    # Sent twice: only calls the killed relay had in flight (sent before the kill, not settled), at most one per
    # worker; each sent again only once its lease had ended.
    assert max(sent.values()) <= 2
    assert twice <= set(held)
    assert len(twice) <= CONCURRENCY
    for name in twice:
        first, second = (call["time"] for call in calls if call["body"]["name"] == name)
        assert first < killed_at < second
    for call in calls:
        lease_end = held.get(call["body"]["name"])
        if lease_end is not None and call["time"] > killed_at:
            assert datetime.fromtimestamp(call["time"], timezone.utc) > lease_end
    print(
        f"\n{events} rows; killed after {len(calls) - sum(c['time'] > killed_at for c in calls)} calls holding "
        f"{len(held)} rows; {len(calls)} calls in all, {len(twice)} sent twice"
    )
