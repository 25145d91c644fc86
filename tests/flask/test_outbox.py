"""The ``outbox`` backend in Flask, on SQLite and PostgreSQL: a committed change is a row in the app's transaction,
delivered by a relay; a rolled-back transaction or savepoint leaves none; a process killed at any point loses
nothing committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from journy_core import operations as ops
from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_core.emulator.options import FAULT_KINDS
from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.store import DEAD, PENDING
from journy_flask import Journy
from journy_flask.outbox import FlaskStore
from journy_flask.testing import capture_operations

from .conftest import Team, User, build_app, db, postgres_database

ROOT = Path(__file__).resolve().parents[2]
RELAY = [sys.executable, "-m", "flask", "--app", "tests.flask.outbox_crash_app:make_app", "journy", "relay"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URI on SQLite (a file: the relay's threads and the app's share it) and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        with postgres_database() as uri:
            yield uri


def outbox_app(emulator: Emulator, uri: str, **options: Any) -> Flask:
    return build_app(
        uri,
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator.url,
        JOURNY_QUEUE={"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCESS": False, **options}},
    )


@pytest.fixture
def app(emulator: Emulator, database: str) -> Iterator[Flask]:
    app = outbox_app(emulator, database)
    yield app
    with app.app_context():
        app.extensions["journy"].journy.close()
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def store_of(app: Flask) -> FlaskStore:
    backend = app.extensions["journy"].journy.backend
    assert isinstance(backend, OutboxBackend)
    store = backend.store
    assert isinstance(store, FlaskStore)
    return store


def pending_kinds(app: Flask) -> list[tuple[str, str]]:
    return [(row.kind, row.entity) for row in store_of(app).list_rows(status=PENDING, limit=100)]


def relay_once(app: Flask) -> Any:
    result = app.test_cli_runner().invoke(args=["journy", "relay", "--once", "--max-seconds", "30"])
    assert result.exit_code == 0, result.output
    return result


def test_the_table_joins_the_apps_metadata_and_the_store_its_engine(app: Flask) -> None:
    assert "journy_outbox" in db.metadata.tables
    with app.app_context():
        assert store_of(app).engine is db.engine


def test_a_committed_change_is_a_row_until_the_relay_delivers_it(app: Flask, emulator: Emulator) -> None:
    with app.app_context():
        db.session.add(User(email="ada@acme.test", full_name="Ada"))
        db.session.commit()
    assert pending_kinds(app) == [("upsert_user", "user:1")]
    assert emulator.calls() == []
    result = relay_once(app)
    assert "1 row(s) delivered" in result.output
    assert [user["email"] for user in emulator.state()["users"]] == ["ada@acme.test"]
    assert pending_kinds(app) == []


def test_a_rollback_and_a_rolled_back_savepoint_leave_no_row(app: Flask) -> None:
    with app.app_context():
        db.session.add(User(email="gone@acme.test"))
        db.session.flush()
        db.session.rollback()
        db.session.add(User(email="kept@acme.test"))
        savepoint = db.session.begin_nested()
        db.session.add(User(email="ghost@acme.test"))
        db.session.flush()
        savepoint.rollback()
        db.session.commit()
        kept = db.session.query(User).filter_by(email="kept@acme.test").one().id
    assert pending_kinds(app) == [("upsert_user", f"user:{kept}")]


def test_a_team_and_its_members_are_rows_in_commit_order(app: Flask, emulator: Emulator) -> None:
    with app.app_context():
        ada = User(email="ada@acme.test")
        db.session.add(Team(name="Acme", members=[ada]))
        db.session.commit()
        db.session.delete(ada)
        db.session.commit()
    kinds = [kind for kind, _ in pending_kinds(app)]
    assert sorted(kinds[:3]) == ["add_users_to_account", "upsert_account", "upsert_user"]
    assert kinds[3:] == ["delete_user"]
    relay_once(app)
    state = emulator.state()
    assert state["users"] == []
    assert [account["accountId"] for account in state["accounts"]] == ["1"]


def test_track_joins_a_transaction_that_has_written_and_commits_alone_otherwise(app: Flask) -> None:
    with app.app_context():
        db.session.add(User(email="ada@acme.test"))
        db.session.flush()
        Journy().track("rolled_back", user=1)
        db.session.rollback()
        db.session.query(User).count()  # a transaction that only read
        Journy().track("alone", user=7)
        db.session.rollback()
    assert pending_kinds(app) == [("track", "user:7")]


def test_a_track_whose_row_cannot_be_written_is_dropped_and_the_sessions_transaction_still_commits(
    app: Flask,
) -> None:
    journy = app.extensions["journy"].journy
    with app.app_context():
        db.session.add(User(email="ada@acme.test"))
        db.session.flush()  # its row is written; track() now joins this transaction
        db.session.execute(text("ALTER TABLE journy_outbox RENAME TO journy_outbox_away"))
        Journy().track("signed_up", user=1)  # its row cannot be written: logged, counted, dropped
        db.session.execute(text("ALTER TABLE journy_outbox_away RENAME TO journy_outbox"))  # still usable
        db.session.commit()
        assert db.session.query(User).count() == 1
    assert journy.stats()["dropped"] == 1
    assert pending_kinds(app) == [("upsert_user", "user:1")]


def test_the_in_process_relay_delivers_right_after_the_commit(emulator: Emulator, database: str) -> None:
    app = outbox_app(emulator, database, RELAY_IN_PROCESS=True, POLL_SECONDS=30)
    try:
        with app.app_context():
            db.session.add(User(email="ada@acme.test"))
            db.session.commit()
        deadline = time.monotonic() + 10
        while not emulator.state()["users"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [user["email"] for user in emulator.state()["users"]] == ["ada@acme.test"]
    finally:
        with app.app_context():
            app.extensions["journy"].journy.close(timeout=5)
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_capture_operations_records_instead_of_writing_rows(app: Flask) -> None:
    with capture_operations(app) as outbox, app.app_context():
        db.session.add(User(email="ada@acme.test"))
        db.session.commit()
    assert [operation.kind for operation in outbox.operations] == ["upsert_user"]
    assert pending_kinds(app) == []


def test_outbox_commands_list_retry_and_purge_dead_rows(app: Flask, emulator: Emulator) -> None:
    with app.app_context():
        db.session.add_all([User(email="ada@acme.test"), User(email="bob@acme.test")])
        db.session.commit()
    store = store_of(app)
    rows = store.claim("test", limit=10, lease_seconds=30, now=_now())
    store.mark_dead([rows[0].id], error='HTTP 400 {"errors": ["bad"]}')
    store.release([rows[1].id])
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["journy", "outbox", "list", "--dead"])
    assert listed.exit_code == 0, listed.output
    assert "1 pending, 1 dead" in listed.output
    assert f"#{rows[0].id} upsert_user user:1 attempts=1" in listed.output
    assert "HTTP 400" in listed.output
    check = runner.invoke(args=["journy", "check"])
    assert "outbox:              1 pending" in check.output
    assert "1 outbox row(s) are dead" in check.output
    assert runner.invoke(args=["journy", "outbox", "retry"]).output.startswith("1 dead row(s) pending again")
    store.mark_dead([rows[0].id], error="HTTP 422")
    assert "0 row(s) deleted" in runner.invoke(args=["journy", "outbox", "purge", "--older-than-days", "1"]).output
    assert "1 row(s) deleted" in runner.invoke(args=["journy", "outbox", "purge"]).output
    assert store.list_rows(status=DEAD, limit=10) == []


def test_without_its_table_a_change_cannot_commit_and_check_says_why(app: Flask) -> None:
    with app.app_context():
        db.metadata.tables["journy_outbox"].drop(db.engine)
        db.session.add(User(email="ada@acme.test"))
        with pytest.raises(DBAPIError):  # committed without its row, the change would never be sent
            db.session.commit()
        db.session.rollback()
        assert db.session.query(User).count() == 0
    result = app.test_cli_runner().invoke(args=["journy", "check"])
    assert result.exit_code == 1
    assert "the outbox table cannot be read" in result.output
    with app.app_context():
        db.metadata.tables["journy_outbox"].create(db.engine)


def test_the_relay_command_stops_on_sigterm(emulator: Emulator, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'app.db'}"
    env = _environment(uri, emulator, 0)
    relay = subprocess.Popen(RELAY, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert relay.stdout is not None
        assert "delivering from" in relay.stdout.readline()
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=15) == 0
        assert "Stopped: 0 delivered, 0 dead." in relay.stdout.read()
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()


def _now() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=1)


# -- a process killed at random points ---------------------------------------------------------------------------


def _environment(uri: str, emulator: Emulator, seed: int) -> dict[str, str]:
    env = dict(os.environ, CRASH_DB=uri, CRASH_API=emulator.url, CRASH_SEED=str(seed), PYTHONPATH=str(ROOT))
    env.pop("JOURNY_API_URL", None)
    return env


def _run_until_killed(env: dict[str, str], commits: int, log: Path) -> int:
    """Start the app committing, SIGKILL it once it printed ``commits`` transactions; returns how many it printed."""
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.flask.outbox_crash_app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        printed = 0
        try:
            assert process.stdout is not None
            for _line in process.stdout:
                printed += 1
                if printed >= commits:
                    break
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, log.read_text()
    return printed


def _committed(uri: str) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """What the database holds: user emails, team IDs, (team ID, user ID) memberships."""
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            emails = set(connection.execute(text('SELECT email FROM "user"')).scalars())
            teams = {str(i) for i in connection.execute(text("SELECT id FROM team")).scalars()}
            members = {
                (str(t), str(u)) for t, u in connection.execute(text("SELECT team_id, user_id FROM team_members"))
            }
    finally:
        engine.dispose()
    return emails, teams, members


def _why_left(uri: str, emulator: Emulator) -> str:
    """What a failed run leaves to read: the pending rows' attempts, errors and leases, and the emulator's answers."""
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, entity, attempts, locked_by, locked_until, last_error FROM journy_outbox LIMIT 20")
            ).all()
    finally:
        engine.dispose()
    answers = Counter((call["status"], call.get("fault")) for call in emulator.calls())
    return f"\npending rows (first 20): {[tuple(row) for row in rows]}\nemulator answers: {dict(answers)}"


def _delivered(emulator: Emulator) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    state = emulator.state()
    emails = {user["email"] for user in state["users"]}
    teams = {account["accountId"] for account in state["accounts"]}
    members = {
        (entry["account"]["accountId"], entry["user"]["userId"])
        for entry in state["memberships"]
        if entry["status"] == "active"
    }
    return emails, teams, members


@pytest.mark.parametrize(("seed", "fault_rate"), [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.3)])
def test_a_process_killed_at_random_points_loses_no_committed_change(
    emulator: Emulator, database: str, seed: int, fault_rate: float, tmp_path: Path
) -> None:
    # 5xx, timeouts and resets, retried with backoff on the row. (Not 429s: after one the pacer holds every call
    # for a pause that doubles up to a whole minute's window, which is the pacer's business and its tests'.)
    emulator.configure(fault_rate=fault_rate, faults=("5xx", "timeout", "reset"), timeout_delay=3.0)
    try:
        env = _environment(database, emulator, seed)
        printed = _run_until_killed(env, random.Random(seed).randint(5, 60), tmp_path / "app.log")
        relay = subprocess.run(
            [*RELAY, "--once", "--max-seconds", "60"],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        emulator.configure(fault_rate=0.0, faults=FAULT_KINDS)
    assert relay.returncode == 0, relay.stdout + relay.stderr + _why_left(database, emulator)
    emails, teams, members = _committed(database)
    assert len(emails) >= printed  # every printed transaction committed (one more may have, unprinted)
    assert _delivered(emulator) == (emails, teams, members)
    assert not any("ghost" in email for email in emails)


# -- a relay outliving its database connections ------------------------------------------------------------------


def _kill_connections_of(application: str) -> int:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
        found = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [application]
        ).fetchone()
    assert found is not None
    return int(found[0])


def _tracked_events(emulator: Emulator, count: int, seconds: float, relay: subprocess.Popen[str]) -> int:
    """The events tracked once ``count`` arrived, ``seconds`` passed, or the relay exited (nothing more comes)."""
    deadline = time.monotonic() + seconds
    while len(emulator.calls("/track")) < count and relay.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(emulator.calls("/track"))


@pytest.mark.services
def test_a_relay_whose_database_connections_were_killed_delivers_the_rows_written_afterwards(
    emulator: Emulator,
) -> None:
    emulator.configure(rate_limit=100_000)
    application = f"journy-relay-{uuid.uuid4().hex[:8]}"
    with postgres_database() as uri:
        app = outbox_app(emulator, uri)
        with app.app_context():
            db.create_all()
        env = _environment(f"{uri}?application_name={application}", emulator, 0)
        relay = subprocess.Popen(RELAY, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with app.app_context():
                store_of(app).add([ops.track(f"before-{n}", user_id="1") for n in range(20)])
                assert _tracked_events(emulator, 20, 30, relay) == 20, "the relay did not deliver the first rows"
                assert _kill_connections_of(application) >= 1, "the relay held no connection to kill"
                store_of(app).add([ops.track(f"after-{n}", user_id="1") for n in range(20)])
                received = _tracked_events(emulator, 40, 45, relay)
        finally:
            relay.terminate()
            output, _ = relay.communicate(timeout=30)
            with app.app_context():
                app.extensions["journy"].journy.close()
                db.session.remove()
                db.engine.dispose()
        assert received == 40, f"{received} of 40 events delivered; the relay said:\n{output[-3000:]}"
