"""The outbox through a journy.io outage, on SQLite and PostgreSQL: while every call fails (5xx, or no answer in
time) and the app keeps committing, rows wait in the table and the in-process relay only probes now and then; once
the API is back, every committed operation is delivered, without a 429. (``benchmarks/outbox_outage.py`` runs the
same for ten minutes and watches the process's memory.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_core.outbox.backend import OutboxBackend
from journy_flask import Journy

from .conftest import User, build_app, db, postgres_database

OUTAGE_SECONDS = 15.0
RATE = 10.0  # transactions a second, two rows each
USERS = 10
EVENTS = ("viewed_report", "exported_csv", "invited_colleague")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URI on SQLite (a file: the relay's threads and the app's share it) and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        with postgres_database() as uri:
            yield uri


@pytest.fixture
def app(emulator: Emulator, database: str) -> Iterator[Flask]:
    """An app with the outbox and its in-process relay, its users created while journy.io is already down."""
    # Every call fails: half 500/502/503, half applied but answered after the client's 1 s read timeout.
    emulator.configure(fault_rate=1.0, faults=("5xx", "timeout"), timeout_delay=2.0)
    app = build_app(
        database,
        login=False,
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator.url,
        JOURNY_TIMEOUT=1.0,
        # The outage pause grows up to the retry cap: 3 s instead of 300 keeps the test's recovery quick.
        JOURNY_QUEUE={"BACKEND": "outbox", "OPTIONS": {"RETRY": {"cap": 3.0}}},
    )
    with app.app_context():
        db.session.add_all([User(email=f"user{i}@acme.test", full_name="Initial") for i in range(USERS)])
        db.session.commit()
    yield app
    with app.app_context():
        app.extensions["journy"].journy.close(timeout=5)
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def backend_of(app: Flask) -> OutboxBackend:
    backend = app.extensions["journy"].journy.backend
    assert isinstance(backend, OutboxBackend)
    return backend


def commit_through_outage(app: Flask) -> tuple[int, list[int]]:
    """Commit ``RATE`` transactions a second for ``OUTAGE_SECONDS`` (transaction ``n``: user ``n % USERS + 1``
    renamed ``User n`` and an event tracked for them); the transactions and the pending count every 5 s."""
    pending: list[int] = []
    started, n = time.monotonic(), 0
    with app.app_context():
        while (elapsed := time.monotonic() - started) < OUTAGE_SECONDS:
            if elapsed >= 5 * (len(pending) + 1):
                pending.append(backend_of(app).backlog().pending)
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            user = db.session.get(User, n % USERS + 1)
            assert user is not None
            user.full_name = f"User {n}"
            db.session.flush()
            Journy().track(EVENTS[n % len(EVENTS)], user=user.id, metadata={"n": n})
            db.session.commit()
            n += 1
        pending.append(backend_of(app).backlog().pending)
        db.session.remove()
    return n, pending


def wait_until_drained(app: Flask, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (backlog := backend_of(app).backlog()).pending and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (backlog.pending, backlog.dead) == (0, 0)


def test_an_outage_costs_probes_not_rows_and_everything_committed_arrives_after_it(
    app: Flask, emulator: Emulator
) -> None:
    committed, pending = commit_through_outage(app)
    recovered = time.time()
    emulator.configure(fault_rate=0.0)
    rows = 2 * committed + USERS

    # Rows wait: none leaves the table while every call fails, and their number grows with each commit.
    assert pending == sorted(pending) and len(set(pending)) == len(pending), pending
    assert pending[-1] == rows
    # The relay stops at an outage and probes now and then: far fewer calls than rows.
    during = [call for call in emulator.calls() if call["time"] < recovered]
    assert 0 < len(during) < rows / 4, (len(during), rows)

    wait_until_drained(app, 30.0)
    state = emulator.state()
    received = {(event["name"], event["metadata"]["n"]) for event in state["events"]}
    assert {(EVENTS[n % len(EVENTS)], n) for n in range(committed)} <= received
    names = {user["userId"]: user["properties"]["full_name"] for user in state["users"]}
    last = {n % USERS + 1: f"User {n}" for n in range(committed)}  # later transactions overwrite earlier ones
    assert names == {str(user_id): name for user_id, name in last.items()}
    assert not [call for call in emulator.calls() if call["status"] == 429]
