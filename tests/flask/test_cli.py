"""``flask journy check`` and ``flask journy sync`` against the emulator (real HTTP)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from journy_core.bulk import parse_since, since_scope
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
    assert "memberships: sent 3, failed 0" in result.output
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
    assert "users: 4 to go, resuming after key 8" in result.output
    assert "users: sent 4" in result.output
    assert sorted(int(u["userId"]) for u in emulator.state()["users"]) == [9, 10, 11, 12]


def test_sync_refuses_a_checkpoint_key_that_is_not_a_primary_key(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=3, teams=0)
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"users": "eight"}))
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", "--state-file", str(state_file)])
    assert result.exit_code == 1
    assert "users checkpoint 'eight' is not a key" in result.output
    assert "--restart" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert emulator.calls() == []


def test_sync_refuses_the_checkpoint_file_of_another_app(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=3, teams=0)
    state_file = tmp_path / "sync.json"
    other = {"users": {"after": "1", "scope": None}}
    written = {
        "format": "journy-sync-checkpoints/2",
        "app": "billing.Customer in the mysql database crm",
        "stages": other,
    }
    state_file.write_text(json.dumps(written))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["journy", "sync", "--users", "--state-file", str(state_file)])
    assert result.exit_code == 1
    assert "another app (billing.Customer in the mysql database crm; this one is " in result.output
    assert "in the sqlite database" in result.output
    assert emulator.calls() == []
    result = runner.invoke(args=["journy", "sync", "--users", "--restart", "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert len(emulator.calls("/users/upsert")) == 3


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users"], "Error: --users: JOURNY_USER_MODEL is not set."),
        (["--accounts"], "Error: --accounts: JOURNY_ACCOUNT_MODEL is not set."),
        ([], "Error: nothing to sync: JOURNY_USER_MODEL is not set; JOURNY_ACCOUNT_MODEL is not set."),
    ],
)
def test_sync_without_models_says_what_to_set(args: list[str], message: str, emulator: Emulator) -> None:
    app = emulator_app(emulator, JOURNY_USER_MODEL=None, JOURNY_ACCOUNT_MODEL=None, JOURNY_ACCOUNT_MEMBERS=None)
    result = app.test_cli_runner().invoke(args=["journy", "sync", *args])
    assert result.exit_code == 1
    assert result.output.strip() == message


def test_sync_without_a_key_stops_before_reading_but_a_dry_run_needs_none(emulator: Emulator, tmp_path: Path) -> None:
    app = build_app(JOURNY_API_URL=emulator.url, JOURNY_QUEUE={"BACKEND": "memory"})
    seed(app, users=2, teams=1)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["journy", "sync", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: JOURNY_API_KEY is not set: the sync has nothing to send with."
    result = runner.invoke(args=["journy", "sync", "--dry-run", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "users: would send 2" in result.output
    assert emulator.calls() == []


def test_sync_with_failed_calls_exits_1_with_one_line_saying_so(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=3, teams=0)
    emulator.script_answer(400, {"message": "bad", "errors": {"fields": {"userId": "nope"}}})
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", "--state-file", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "users: sent 2, failed 1, skipped 0" in result.output
    assert (
        result.output.splitlines()[-1]
        == "Error: 1 call(s) failed: the log has journy.io's answers, and the rows whose data could not be read; "
        "a run after the fix sends them again."
    )


def test_sync_resumes_a_checkpoint_of_the_earlier_members_stage_name(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed(app, users=6, teams=3)
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"members": "2"}))  # left by a run before the stages had one name
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--accounts", "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert "memberships: 1 to go, resuming after key 2" in result.output
    assert "memberships: sent 1, failed 0, skipped 0" in result.output


def test_sync_keeps_its_checkpoint_in_the_current_directory_by_default(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = emulator_app(emulator)
    seed(app, users=5, teams=0)
    (tmp_path / ".journy-sync.json").write_text(json.dumps({"users": "3"}))
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users"])
    assert result.exit_code == 0, result.output
    assert "users: 2 to go, resuming after key 3" in result.output
    assert not (tmp_path / ".journy-sync.json").exists()


# --since: users 1 to 6 created at these (naive UTC) times; --since 2024-02-01 selects users 2, 4, 5 (created on the
# boundary: the filter is >=) and 6, which are not a range of keys.
CREATED = [
    datetime(2024, 1, 1),
    datetime(2024, 3, 1),
    datetime(2023, 12, 31, 23, 59, 59),
    datetime(2024, 2, 15),
    datetime(2024, 2, 1),
    datetime(2024, 6, 1),
]
SINCE_FEBRUARY = [2, 4, 5, 6]


def seed_dated_users(app: Flask) -> None:
    with app.app_context(), pause_sync():
        db.session.add_all(
            [User(email=f"user{n}@acme.test", full_name=f"User {n}", created_at=at) for n, at in enumerate(CREATED, 1)]
        )
        db.session.commit()


def upserted_user_ids(emulator: Emulator) -> list[int]:
    """The user IDs of every upsert that reached the emulator, one per call."""
    return sorted(int(call["body"]["identification"]["userId"]) for call in emulator.calls("/users/upsert"))


@pytest.mark.parametrize(
    "since",
    ["2024-02-01", "2024-02-01T00:00:00", "2024-02-01T01:00:00+01:00", "2024-02-01T00:00:00Z"],
)
def test_sync_since_sends_only_the_users_created_or_changed_since_the_date(
    since: str, emulator: Emulator, tmp_path: Path
) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--since", since, "--state-file", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 0, result.output
    assert upserted_user_ids(emulator) == SINCE_FEBRUARY  # an offset is converted: the same instant everywhere
    assert "users: sent 4, failed 0, skipped 0" in result.output


def test_sync_since_counts_only_the_selected_rows_in_the_progress(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    state_file = str(tmp_path / "s.json")
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--since", "2024-02-01", "--batch-size", "3", "--state-file", state_file]
    )
    assert result.exit_code == 0, result.output
    assert "  users: 3/4" in result.output
    assert "  users: 4/4" in result.output
    assert "/6" not in result.output


def test_sync_since_with_a_dry_run_counts_the_selected_rows_and_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--since", "2024-02-01", "--dry-run", "--state-file", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert "users: would send 4" in result.output
    assert emulator.calls() == []


@pytest.mark.parametrize("since", ["yesterday", "2024-13-01", "01/02/2024", ""])
def test_sync_since_with_a_bad_date_is_a_usage_error_naming_the_formats(since: str, emulator: Emulator) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--since", since])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--since'" in result.output
    assert "YYYY-MM-DD" in result.output
    assert "ISO 8601" in result.output
    assert emulator.calls() == []


def test_sync_since_on_a_model_without_timestamp_columns_stops_before_sending_and_says_to_use_since_field(
    emulator: Emulator, tmp_path: Path
) -> None:
    app = emulator_app(emulator)
    seed(app, users=3, teams=1)  # users have created_at; Team has no timestamp column
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--since", "2024-01-01", "--state-file", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 2, result.output
    assert "--since: Team has none of updated_at, modified_at" in result.output
    assert "--since-field" in result.output
    assert emulator.calls() == []  # not even the users, which could be filtered


class AuditBase(DeclarativeBase):  # its own metadata: the other tests' databases do not get this table
    pass


class Customer(AuditBase):
    """A user model with two timestamps: ``created_at`` (the default --since column) and ``billed_at``."""

    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    billed_at: Mapped[datetime | None]
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def customer_app(emulator: Emulator) -> Flask:
    """An app whose users are :class:`Customer` rows, without accounts."""
    return emulator_app(
        emulator,
        JOURNY_USER_MODEL=Customer,
        JOURNY_USER_PROPERTIES=["email"],
        JOURNY_ACCOUNT_MODEL=None,
        JOURNY_ACCOUNT_MEMBERS=None,
    )


def test_sync_since_field_filters_on_the_named_column(emulator: Emulator, tmp_path: Path) -> None:
    app = customer_app(emulator)
    billed = [datetime(2024, 5, 1), None, datetime(2023, 1, 1), datetime(2024, 4, 1), None, datetime(2024, 2, 1)]
    with app.app_context(), pause_sync():
        AuditBase.metadata.create_all(db.engine)
        db.session.add_all(
            [
                Customer(email=f"c{n}@acme.test", created_at=created, billed_at=billed_at)
                for n, (created, billed_at) in enumerate(zip(CREATED, billed, strict=True), 1)
            ]
        )
        db.session.commit()
    state_file = str(tmp_path / "s.json")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["journy", "sync", "--since", "2024-02-01", "--since-field", "billed_at", "--state-file", state_file]
    )
    assert result.exit_code == 0, result.output
    assert upserted_user_ids(emulator) == [1, 4, 6]  # billed since February; NULL never matches
    emulator.reset()
    result = runner.invoke(args=["journy", "sync", "--since", "2024-02-01", "--state-file", state_file])
    assert result.exit_code == 0, result.output
    assert upserted_user_ids(emulator) == SINCE_FEBRUARY  # without --since-field: created_at


@pytest.mark.parametrize(
    ("field", "message"),
    [("nope", "'nope' is not a column of User"), ("email", "User.email is not a date or datetime column")],
)
def test_sync_since_field_naming_no_timestamp_column_is_an_error_naming_it(
    field: str, message: str, emulator: Emulator
) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--since", "2024-01-01", "--since-field", field]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--since-field'" in result.output
    assert message in result.output
    assert emulator.calls() == []


def test_sync_since_field_without_since_is_a_usage_error(emulator: Emulator) -> None:
    result = emulator_app(emulator).test_cli_runner().invoke(args=["journy", "sync", "--since-field", "created_at"])
    assert result.exit_code == 2
    assert "--since-field needs --since" in result.output


FEBRUARY = since_scope(parse_since("2024-02-01"), "created_at")


@pytest.mark.parametrize(
    ("checkpoint", "args", "expected"),
    [
        pytest.param("4", ["--since", "2024-02-01"], SINCE_FEBRUARY, id="unfiltered-checkpoint-then-since"),
        pytest.param(
            {"after": "4", "scope": since_scope(parse_since("2024-03-01"), "created_at")},
            ["--since", "2024-02-01"],
            SINCE_FEBRUARY,
            id="another-since",
        ),
        pytest.param({"after": "4", "scope": FEBRUARY}, [], [1, 2, 3, 4, 5, 6], id="since-checkpoint-then-unfiltered"),
    ],
)
def test_a_checkpoint_left_by_a_run_with_another_since_is_not_resumed_so_no_row_is_skipped(
    checkpoint: Any, args: list[str], expected: list[int], emulator: Emulator, tmp_path: Path
) -> None:
    # The keys done by a run filtered differently say nothing about this run's rows: resuming after key 4 would
    # silently skip users 2 and 4 (or 1 to 4).
    app = emulator_app(emulator)
    seed_dated_users(app)
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"users": checkpoint}))
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", *args, "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert "users: not resuming after key 4" in result.output
    assert "starting from the beginning" in result.output
    assert upserted_user_ids(emulator) == expected
    assert not state_file.exists()  # completed: its checkpoint replaced the other one, then went


def test_a_checkpoint_left_by_a_run_with_the_same_since_is_resumed(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator)
    seed_dated_users(app)
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"users": {"after": "4", "scope": FEBRUARY}}))  # users 2 and 4 were sent
    result = app.test_cli_runner().invoke(
        args=["journy", "sync", "--users", "--since", "2024-02-01T01:00:00+01:00", "--state-file", str(state_file)]
    )
    assert result.exit_code == 0, result.output
    assert "users: 2 to go, resuming after key 4" in result.output
    assert "  users: 2/2" in result.output  # the count honours both the checkpoint and --since
    assert upserted_user_ids(emulator) == [5, 6]


@pytest.mark.services
def test_sync_since_on_postgresql_sends_only_the_rows_changed_since_the_date(
    emulator: Emulator, tmp_path: Path
) -> None:
    with postgres_database() as uri:
        app = emulator_app(emulator, uri)
        try:
            seed_dated_users(app)
            since = ["--since", "2024-02-01T01:00:00+01:00"]
            result = app.test_cli_runner().invoke(
                args=["journy", "sync", "--users", *since, "--batch-size", "3", "--state-file", str(tmp_path / "s")]
            )
            assert result.exit_code == 0, result.output
            assert upserted_user_ids(emulator) == SINCE_FEBRUARY
            assert "  users: 4/4" in result.output
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def test_sync_users_with_sync_users_off_says_which_setting_keeps_them_out(emulator: Emulator, tmp_path: Path) -> None:
    app = emulator_app(emulator, JOURNY_SYNC_USERS=False)
    seed(app, users=2, teams=1)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["journy", "sync", "--users", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --users: JOURNY_SYNC_USERS is False."
    result = runner.invoke(args=["journy", "sync", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "users:" not in result.output
    assert "accounts: sent 1, failed 0, skipped 0" in result.output


@pytest.mark.parametrize("since", ["2024-02-01", "2024-02-01T02:00:00+02:00", "2024-01-31T19:00:00-05:00"])
def test_sync_since_on_a_timezone_column_of_sqlite_selects_the_same_rows_for_every_spelling_of_an_instant(
    since: str, emulator: Emulator, tmp_path: Path
) -> None:
    app = customer_app(emulator)
    utc = timezone.utc
    seen = [datetime(2024, 1, 31, 23, 30, tzinfo=utc), datetime(2024, 2, 1, 0, 30, tzinfo=utc)]
    with app.app_context(), pause_sync():
        AuditBase.metadata.create_all(db.engine)
        db.session.add_all(
            [
                Customer(email=f"c{n}@acme.test", created_at=datetime(2024, 1, 1), seen_at=at)
                for n, at in enumerate(seen, 1)
            ]
        )
        db.session.commit()
    args = ["journy", "sync", "--since", since, "--since-field", "seen_at", "--state-file", str(tmp_path / "s")]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert upserted_user_ids(emulator) == [2]  # SQLite compared the wall-clock times with the offset dropped


def test_a_row_whose_data_cannot_be_read_is_counted_as_failed_and_the_rest_is_sent(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def properties(user: Any) -> dict[str, Any]:
        if user.id == 2:
            raise RuntimeError("the billing service is down")
        return {"name": user.full_name}

    app = emulator_app(emulator, JOURNY_USER_PROPERTIES=properties)
    seed(app, users=4, teams=0)
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", "--state-file", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "users: sent 3, failed 1, skipped 0" in result.output
    assert "Traceback" not in result.output
    assert upserted_user_ids(emulator) == [1, 3, 4]
    assert "tests.flask.conftest.User 2 not synced (counted as failed): RuntimeError: the billing service is down" in (
        caplog.text
    )


def test_users_alone_after_an_interrupted_full_run_sends_every_user_and_keeps_the_accounts_checkpoint(
    emulator: Emulator, tmp_path: Path
) -> None:
    from journy_flask.cli import _app

    app = emulator_app(emulator)
    seed(app, users=6, teams=3)
    with app.app_context():
        label = _app(app.extensions["journy"].settings, db.session)
    run = ["users", "accounts", "memberships"]
    stages = {
        "users": {"after": "6", "done": True, "run": run, "scope": None, "sent": 6, "failed": 0, "skipped": 0},
        "accounts": {"after": "1", "done": False, "run": run, "scope": None, "sent": 1, "failed": 0, "skipped": 0},
    }
    state_file = tmp_path / "sync.json"
    state_file.write_text(json.dumps({"format": "journy-sync-checkpoints/2", "app": label, "stages": stages}))
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--users", "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert upserted_user_ids(emulator) == [1, 2, 3, 4, 5, 6]  # another run: the done mark is not its own
    assert set(json.loads(state_file.read_text())["stages"]) == {"accounts"}  # the full run's own checkpoint stays
    emulator.reset()
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--state-file", str(state_file)])
    assert result.exit_code == 0, result.output
    assert "accounts: 2 to go, resuming after key 1" in result.output
    assert not state_file.exists()


def test_sync_names_no_user_the_sync_leaves_out_in_a_membership(emulator: Emulator, tmp_path: Path) -> None:
    def should_sync(obj: Any) -> bool:
        return not (isinstance(obj, User) and obj.email == "user0@acme.test")

    app = emulator_app(emulator, JOURNY_SHOULD_SYNC=should_sync)
    seed(app, users=3, teams=1)
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--state-file", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    [add] = emulator.calls("/accounts/users/add")
    assert sorted(user["identification"]["userId"] for user in add["body"]["users"]) == ["2", "3"]
    assert upserted_user_ids(emulator) == [2, 3]
