"""``flask journy check`` and ``flask journy sync`` against the emulator (real HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_flask import pause_sync

from .conftest import Team, User, build_app, db, postgres_database


def emulator_app(emulator: Emulator, uri: str = "sqlite://", **overrides: Any) -> Flask:
    return build_app(
        uri,
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator.url,
        JOURNY_QUEUE={"BACKEND": "sync"},
        **overrides,
    )


def seed(app: Flask, users: int, teams: int) -> None:
    with app.app_context(), pause_sync():
        people = [User(email=f"user{i}@acme.test", full_name=f"User {i}") for i in range(users)]
        db.session.add_all(people)
        for t in range(teams):
            db.session.add(Team(name=f"Team {t}", members=people[t::teams]))
        db.session.commit()


def test_check_reports_the_key_permissions_and_succeeds(emulator: Emulator) -> None:
    app = emulator_app(emulator)
    result = app.test_cli_runner().invoke(args=["journy", "check"])
    assert result.exit_code == 0, result.output
    assert "TrackData" in result.output
    assert "OK: journy.io is reachable" in result.output
    assert [call["path"] for call in emulator.calls()] == ["/validate"]


def test_check_fails_with_a_refused_key_and_says_what_to_fix(emulator: Emulator) -> None:
    app = build_app(JOURNY_API_KEY="wrong-key", JOURNY_API_URL=emulator.url, JOURNY_QUEUE={"BACKEND": "sync"})
    result = app.test_cli_runner().invoke(args=["journy", "check"])
    assert result.exit_code == 1
    assert "JOURNY_API_KEY" in result.output


def test_check_without_a_key_fails_before_any_request(emulator: Emulator) -> None:
    result = build_app().test_cli_runner().invoke(args=["journy", "check"])
    assert result.exit_code == 1
    assert "JOURNY_API_KEY is not set" in result.output
    assert emulator.calls() == []


def test_sync_sends_every_user_account_and_membership_with_a_summary(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=25, teams=3)
    state_file = tmp_path / "sync.json"
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--batch-size", "10", "--state-file", str(state_file)]
    )
    assert result.exit_code == 0, result.output
    assert "users: sent 25, failed 0" in result.output
    assert "accounts: sent 3, failed 0" in result.output
    assert "members: sent 3, failed 0" in result.output
    state = emulator.state()
    assert len(state["users"]) == 25
    assert len(state["accounts"]) == 3
    assert not state_file.exists() or json.loads(state_file.read_text()) == {}  # a complete sync forgets it


def test_sync_dry_run_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=5, teams=1)
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--dry-run", "--state-file", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 0, result.output
    assert "users: would send 5" in result.output
    assert "accounts" not in result.output
    assert emulator.calls() == []


def test_an_interrupted_sync_resumes_after_the_last_key_done(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=12, teams=0)
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"users": "8"}))  # what a run stopped after user 8 leaves behind
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert "resuming after key 8" in result.output
    assert "users: sent 4" in result.output
    assert sorted(int(u["userId"]) for u in emulator.state()["users"]) == [9, 10, 11, 12]


@pytest.mark.services
def test_sync_on_postgresql_streams_in_key_order(emulator: Emulator, tmp_path: Path) -> None:
    with postgres_database() as uri:
        app = emulator_app(emulator, uri)
        try:
            seed(app, users=30, teams=2)
            result = app.test_cli_runner().invoke(
                args=["journy", "sync", "--batch-size", "7", "--state-file", str(tmp_path / "s.json")]
            )
            assert result.exit_code == 0, result.output
            upserts = [call for call in emulator.calls() if call["path"] == "/users/upsert"]
            assert len(upserts) == 30
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


@pytest.mark.parametrize("flag", ["--users", "--accounts"])
def test_sync_without_models_says_what_to_set(flag: str, emulator: Emulator) -> None:
    app = emulator_app(emulator, JOURNY_USER_MODEL=None, JOURNY_ACCOUNT_MODEL=None, JOURNY_ACCOUNT_MEMBERS=None)
    result = app.test_cli_runner().invoke(args=["journy", "sync", flag])
    assert result.exit_code != 0
    assert "JOURNY_USER_MODEL" in result.output
