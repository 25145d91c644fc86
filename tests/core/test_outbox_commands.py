"""What ``flask journy relay`` / ``manage.py journy_relay`` and the ``check`` commands share."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from journy_core import operations as ops
from journy_core.client import Client
from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_core.outbox.commands import backlog_report, relay_for, relay_options_problem, run_relay
from journy_core.outbox.memory import MemoryStore
from journy_core.outbox.relay import Relay
from journy_core.outbox.sqlalchemy import SQLAlchemyStore
from journy_core.outbox.store import Backlog


def test_a_relay_run_once_delivers_what_is_pending_and_exits_0(emulator: Emulator) -> None:
    store = MemoryStore()
    store.add([ops.upsert_user(user_id=1), ops.upsert_user(user_id=2)])
    relay = relay_for(None, store, lambda: Client(DEFAULT_API_KEY, base_url=emulator.url))
    said: list[str] = []
    assert run_relay(relay, once=True, max_seconds=30, echo=said.append) == 0
    assert said == [said[0]]
    assert said[0].startswith("2 row(s) delivered, 0 dead") and said[0].endswith("0 left.")
    assert sorted(user["userId"] for user in emulator.state()["users"]) == ["1", "2"]


def test_a_relay_run_once_that_runs_out_of_time_exits_1(emulator: Emulator) -> None:
    emulator.configure(fault_rate=1.0)
    store = MemoryStore()
    store.add([ops.upsert_user(user_id=1)])
    relay = relay_for(None, store, lambda: Client(DEFAULT_API_KEY, base_url=emulator.url, timeout=1.0))
    said: list[str] = []
    assert run_relay(relay, once=True, max_seconds=1.5, echo=said.append) == 1
    assert said[0].endswith("1 left.")


def test_the_backlog_report_warns_of_a_stale_backlog_and_dead_rows() -> None:
    lines, warnings = backlog_report(Backlog(pending=0, dead=0, oldest_pending_age=None), "relay", "list")
    assert lines == ["outbox:              0 pending, 0 dead"]
    assert warnings == []
    lines, warnings = backlog_report(Backlog(pending=3, dead=2, oldest_pending_age=1200.0), "relay", "list")
    assert lines == ["outbox:              3 pending, oldest 1200 s old, 2 dead"]
    assert "is a relay running" in warnings[0] and "`relay`" in warnings[0]
    assert warnings[1].startswith("2 outbox row(s) are dead") and "`list`" in warnings[1]


def test_a_relay_run_once_whose_table_cannot_be_read_gives_up_and_says_so(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'never-migrated.db'}")  # no journy_outbox table in it
    relay = Relay(SQLAlchemyStore(engine), lambda: Client(DEFAULT_API_KEY, base_url=emulator.url), poll_seconds=0.01)
    said: list[str] = []
    assert run_relay(relay, once=True, max_seconds=None, echo=said.append) == 1  # no deadline: it ends on its own
    assert said == ["0 row(s) delivered, 0 dead, in " + said[0].split(" in ")[1]]
    assert said[0].endswith("; the outbox table cannot be read (see the log).")
    assert "could not claim rows" in caplog.text
    engine.dispose()


@pytest.mark.parametrize(
    ("once", "max_seconds", "problem"),
    [
        (False, 3.0, "--max-seconds goes with --once."),
        (True, 0.0, "--max-seconds must be a number of seconds above 0, not 0.0."),
        (True, -3.0, "--max-seconds must be a number of seconds above 0, not -3.0."),
        (True, float("nan"), "--max-seconds must be a number of seconds above 0, not nan."),
        (True, 3.0, None),
        (True, None, None),
        (False, None, None),
    ],
)
def test_the_relay_commands_options_are_checked_by_one_rule(
    once: bool, max_seconds: float | None, problem: str | None
) -> None:
    assert relay_options_problem(once, max_seconds) == problem
