"""The bulk sync runner, the key check and the test Outbox, against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from journy_core import Client, Journy
from journy_core import operations as ops
from journy_core.bulk import (
    BulkSync,
    Checkpoint,
    ProgressReport,
    default_since_field,
    missing_since_field,
    parse_since,
    since_scope,
)
from journy_core.diagnostics import check_api_key
from journy_core.emulator import Emulator
from journy_core.errors import ConfigurationError
from journy_core.testing import Outbox


def users(keys: range) -> Iterator[tuple[str, ops.Operation | None]]:
    for key in keys:
        yield str(key).zfill(6), ops.upsert_user(user_id=key, properties={"n": key})


@pytest.fixture
def fast_emulator(emulator: Emulator) -> Emulator:
    emulator.configure(rate_limit=100_000)
    return emulator


def test_a_bulk_sync_sends_everything_and_reports_progress(fast_emulator: Emulator, api_key: str) -> None:
    reports: list[ProgressReport] = []
    sync = BulkSync(Client(api_key, base_url=fast_emulator.url), batch_size=10, progress=reports.append)
    summary = sync.run("users", users(range(35)), total=35)
    assert (summary.sent, summary.failed, summary.skipped) == (35, 0, 0)
    assert [r.done for r in reports] == [10, 20, 30, 35]
    assert reports[-1].eta_seconds == 0
    assert len(fast_emulator.state()["users"]) == 35


def sync_checkpoint(path: Path, name: str) -> Checkpoint | None:
    """A stage's record, as a new run reads it from the file."""
    return BulkSync(Client("k", base_url="http://127.0.0.1:9"), state_file=path).checkpoint(name)


def test_an_interrupted_sync_resumes_after_the_last_completed_batch(
    fast_emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    state = tmp_path / "journy-sync.json"
    client = Client(api_key, base_url=fast_emulator.url)

    def interrupted() -> Iterator[tuple[str, ops.Operation | None]]:
        yield from users(range(25))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BulkSync(client, batch_size=10, state_file=state).run("users", interrupted())
    assert sync_checkpoint(state, "users") == Checkpoint("000019", sent=20)
    sync = BulkSync(client, batch_size=10, state_file=state)
    assert sync.resume_after("users") == "000019"
    summary = sync.run("users", users(range(20, 30)))
    assert summary.resumed_from == "000019"
    assert not state.exists()  # completed: nothing left to resume


def test_forgetting_a_checkpoint_restarts_from_the_beginning(tmp_path: Path, api_key: str) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"users": "000019", "accounts": "7"}))
    sync = BulkSync(Client(api_key, base_url="http://127.0.0.1:9"), state_file=state)
    sync.forget("users")
    assert sync.resume_after("users") is None
    assert sync.resume_after("accounts") == "7"
    sync.forget("accounts")
    assert not state.exists()


def test_a_checkpoint_is_resumed_only_by_a_run_with_the_same_since(
    fast_emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    state = tmp_path / "journy-sync.json"
    client = Client(api_key, base_url=fast_emulator.url)
    january = since_scope(parse_since("2026-01-01"), "updated_at")

    def interrupted() -> Iterator[tuple[str, ops.Operation | None]]:
        yield from users(range(15))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BulkSync(client, batch_size=10, state_file=state).run("users", interrupted(), scope=january)
    sync = BulkSync(client, batch_size=10, state_file=state)
    assert sync.checkpoint("users") == Checkpoint("000009", january, sent=10)
    assert sync.resume_after("users", january) == "000009"
    assert sync.resume_after("users", since_scope(parse_since("2026-01-01T01:00:00+01:00"), "updated_at")) == "000009"
    assert sync.resume_notice("users", january) is None
    # Another date, another field or no --since: the keys done say nothing about this run's rows.
    for other in (since_scope(parse_since("2026-02-01"), "updated_at"), since_scope(parse_since("2026-01-01"), "x")):
        assert sync.resume_after("users", other) is None
    assert sync.resume_after("users") is None
    notice = sync.resume_notice("users")
    assert notice is not None
    assert "not resuming after key 000009" in notice
    assert f"with {january}" in notice
    assert "this run is without --since; starting from the beginning" in notice
    # The unfiltered run that starts over replaces the checkpoint with its own.
    with pytest.raises(KeyboardInterrupt):
        sync.run("users", interrupted())
    assert sync.checkpoint("users") == Checkpoint("000009", None, sent=10)
    assert sync.resume_after("users") == "000009"
    assert sync.resume_after("users", january) is None


def test_a_checkpoint_file_of_an_earlier_version_is_read_as_unfiltered(tmp_path: Path, api_key: str) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"users": "19", "accounts": 7}))
    sync = BulkSync(Client(api_key, base_url="http://127.0.0.1:9"), state_file=state)
    assert sync.checkpoint("users") == Checkpoint("19")
    assert sync.resume_after("accounts") == "7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-15", datetime(2026, 1, 15, tzinfo=timezone.utc)),
        ("2026-01-15T10:30", datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2026-01-15 10:30:05", datetime(2026, 1, 15, 10, 30, 5, tzinfo=timezone.utc)),
        ("2026-01-15T10:30:00Z", datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2026-01-15T10:30:00+02:00", datetime(2026, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_since_accepts_a_date_or_an_iso_datetime_utc_without_an_offset(value: str, expected: datetime) -> None:
    parsed = parse_since(value)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "15/01/2026", ""])
def test_since_refuses_anything_else_naming_the_accepted_formats(value: str) -> None:
    with pytest.raises(ValueError, match=r"is not a date \(YYYY-MM-DD\) or an ISO 8601 datetime"):
        parse_since(value)


def test_the_since_field_is_the_first_default_timestamp_a_model_has() -> None:
    assert default_since_field(["id", "created_at", "date_joined", "email"]) == "date_joined"
    assert default_since_field(["modified", "updated_at"]) == "updated_at"
    assert default_since_field(["id", "name"]) is None
    assert "Team has none of updated_at" in missing_since_field("Team")
    assert "--since-field" in missing_since_field("Team")


def test_the_since_scope_names_one_instant_and_the_field() -> None:
    assert since_scope(None, "updated_at") is None
    scope = since_scope(parse_since("2026-01-01T02:00:00+02:00"), "updated_at")
    assert scope == since_scope(parse_since("2026-01-01"), "updated_at")
    assert scope == "--since 2026-01-01T00:00:00+00:00 on updated_at"


def test_a_dry_run_counts_without_sending(fast_emulator: Emulator, api_key: str, tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    sync = BulkSync(Client(api_key, base_url=fast_emulator.url), dry_run=True, state_file=state)
    summary = sync.run("users", users(range(12)), total=12)
    assert summary.sent == 12
    assert summary.dry_run
    assert fast_emulator.calls() == []
    assert not state.exists()


def test_a_dry_run_leaves_the_checkpoint_of_a_real_run_in_place(
    fast_emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"users": "000005"}))
    sync = BulkSync(Client(api_key, base_url=fast_emulator.url), dry_run=True, state_file=state)
    summary = sync.run("users", users(range(6, 12)), total=6)
    assert (summary.sent, summary.resumed_from) == (6, "000005")
    assert sync_checkpoint(state, "users") == Checkpoint("000005")  # what the interrupted real run left


def test_failures_are_counted_and_skipped_rows_too(fast_emulator: Emulator, api_key: str) -> None:
    fast_emulator.script_answer(400, {"message": "bad", "errors": {"fields": {"properties.n": "nope"}}})
    items = [("1", ops.upsert_user(user_id=1)), ("2", None), ("3", ops.upsert_user(user_id=3))]
    summary = BulkSync(Client(api_key, base_url=fast_emulator.url), concurrency=1).run("users", items)
    assert (summary.sent, summary.failed, summary.skipped) == (1, 1, 1)


def test_transient_failures_are_retried_during_a_bulk_sync(fast_emulator: Emulator, api_key: str) -> None:
    fast_emulator.configure(fault_rate=0.3, faults=("5xx", "reset"))
    from journy_core.retry import RetryPolicy

    sync = BulkSync(
        Client(api_key, base_url=fast_emulator.url), retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=20)
    )
    summary = sync.run("users", users(range(30)))
    fast_emulator.configure(fault_rate=0.0)
    assert summary.failed == 0
    assert len(fast_emulator.state()["users"]) == 30


def test_a_bulk_sync_started_after_another_paces_at_the_rate_of_the_budget_left(
    emulator: Emulator, api_key: str
) -> None:
    client = Client(api_key, base_url=emulator.url)
    for key in range(600):  # what an earlier run, now finished, left in the key's window (journy.io's limit)
        client.upsert_user(user_id=f"earlier-{key}")
    sync = BulkSync(client, batch_size=10)
    summary = sync.run("users", users(range(30)))
    assert summary.sent == 30
    # The budget's rate (0.97 x 1800 - 600 a minute), not a share of the window (30 of 630) nor the floor.
    assert sync.pacer.interval == pytest.approx(60 / (0.97 * 1800 - 600), rel=0.02)
    assert all(call["status"] != 429 for call in emulator.calls())


def test_check_api_key_lists_permissions_and_what_is_missing() -> None:
    with Emulator(api_keys={"full": ["TrackData", "GetTrackingSnippet"], "partial": ["ReadEvents"]}) as emu:
        good = check_api_key(Client("full", base_url=emu.url), needs_snippet=True)
        partial = check_api_key(Client("partial", base_url=emu.url))
        unknown = check_api_key(Client("unknown", base_url=emu.url))
    assert good.ok
    assert good.permissions == ["TrackData", "GetTrackingSnippet"]
    assert good.calls_remaining is not None
    assert not partial.ok
    assert partial.missing == ["TrackData"]
    assert partial.problem and "TrackData" in partial.problem
    assert not unknown.ok
    assert unknown.problem and "refused the API key" in unknown.problem


def test_check_api_key_reports_an_unreachable_api_without_raising(api_key: str) -> None:
    report = check_api_key(Client(api_key, base_url="http://127.0.0.1:9"))
    assert not report.ok
    assert report.problem and "could not be reached" in report.problem


def test_the_outbox_reads_what_the_memory_backend_recorded() -> None:
    journy = Journy(queue={"BACKEND": "memory"})
    outbox = Outbox(journy.backend)
    journy.upsert_user(user_id=1, properties={"plan": "pro"})
    journy.upsert_account(account_id=7)
    journy.track("signed_in", user_id=1)
    journy.track("signed_out", user_id=1)
    assert len(outbox) == 4
    assert [e.payload["name"] for e in outbox.events()] == ["signed_in", "signed_out"]
    assert len(outbox.events("signed_in")) == 1
    assert outbox.users() == [{"identification": {"userId": "1"}, "properties": {"plan": "pro"}}]
    assert outbox.accounts() == [{"identification": {"accountId": "7"}}]
    outbox.clear()
    assert outbox.operations == []


def test_the_outbox_refuses_a_backend_that_records_nothing() -> None:
    with pytest.raises(ConfigurationError, match="memory"):
        Outbox(Journy(queue={"BACKEND": "disabled"}).backend)
