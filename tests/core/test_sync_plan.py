"""The bulk-sync plan shared by both commands: stages, options, the state file, resuming and the summary.

Plain lists stand in for the ORM; the calls go over HTTP to the emulator."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from journy_core import Client
from journy_core import operations as ops
from journy_core.bulk import BulkSync, ProgressReport, SyncSummary, parse_since, since_scope, stage_items
from journy_core.emulator import Emulator
from journy_core.sync_plan import (
    DEFAULT_STATE_FILE,
    EARLIER_STATE_FILES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    STAGES,
    StageSource,
    SyncInterrupted,
    SyncOptions,
    SyncPlanError,
    SyncUsageError,
    check_options,
    progress_line,
    run_sync,
    select_stages,
    summary_line,
    sync_client,
)

Item = tuple[str, ops.Operation | None]


def key(n: int) -> str:
    return str(n).zfill(4)  # keys compare as strings here, as primary keys do in the database


def source(name: str, items: list[Item], since_field: str | None = None) -> StageSource:
    """A stage over a list ordered by key, honouring ``after`` as an ORM query would."""

    def rows(after: str | None) -> list[Item]:
        return [item for item in items if after is None or item[0] > after]

    return StageSource(name, count=lambda after: len({k for k, _ in rows(after)}), items=rows, since_field=since_field)


def upserts(kind: str, count: int) -> list[Item]:
    if kind == "users":
        return [(key(n), ops.upsert_user(user_id=n)) for n in range(1, count + 1)]
    return [(key(n), ops.upsert_account(account_id=n)) for n in range(1, count + 1)]


def memberships(accounts: dict[int, list[int]]) -> list[Item]:
    return [
        (key(account), ops.add_users_to_account(account_id=account, users=members) if members else None)
        for account, members in sorted(accounts.items())
    ]


@pytest.fixture
def client(emulator: Emulator, api_key: str) -> Iterator[Client]:
    emulator.configure(rate_limit=100_000)
    with Client(api_key, base_url=emulator.url) as direct:
        yield direct


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the default state file is relative to the current directory
    return tmp_path


def checkpoints(path: Path) -> dict[str, str]:
    """The last key done of each stage in a checkpoint file."""
    return {name: record["after"] for name, record in json.loads(path.read_text())["stages"].items()}


class Lines(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


# -- stages and options ----------------------------------------------------------------------------------------


def test_the_stages_are_users_accounts_memberships_in_that_order() -> None:
    assert STAGES == ("users", "accounts", "memberships")
    assert select_stages(False, False, unavailable={}) == STAGES
    assert select_stages(True, True, unavailable={}) == STAGES
    assert select_stages(True, False, unavailable={}) == ("users",)
    assert select_stages(False, True, unavailable={}) == ("accounts", "memberships")


def test_stages_the_configuration_cannot_sync_are_left_out_unless_asked_for() -> None:
    no_members = {"memberships": "JOURNY_ACCOUNT_MEMBERS is not set"}
    assert select_stages(False, False, unavailable=no_members) == ("users", "accounts")
    assert select_stages(False, True, unavailable=no_members) == ("accounts",)  # memberships are optional
    no_accounts = {"accounts": "JOURNY_ACCOUNT_MODEL is not set", "memberships": "JOURNY_ACCOUNT_MODEL is not set"}
    assert select_stages(False, False, unavailable=no_accounts) == ("users",)
    with pytest.raises(SyncPlanError, match=r"^--accounts: JOURNY_ACCOUNT_MODEL is not set\.$") as refused:
        select_stages(False, True, unavailable=no_accounts)
    assert refused.value.exit_code == EXIT_FAILED


def test_nothing_to_sync_names_every_missing_setting() -> None:
    # Memberships need the accounts' model: without it they are not synced even when not listed as unavailable.
    nothing = {"users": "JOURNY['SYNC_USERS'] is False", "accounts": "JOURNY['ACCOUNT_MODEL'] is not set"}
    with pytest.raises(SyncPlanError, match=r"nothing to sync: JOURNY\['SYNC_USERS'\] is False; JOURNY\['ACC"):
        select_stages(False, False, unavailable=nothing)


def test_option_combinations_the_plan_cannot_honour_are_usage_errors() -> None:
    check_options(since=None, since_field=None, batch_size=100)
    with pytest.raises(SyncUsageError, match="--since-field needs --since") as refused:
        check_options(since=None, since_field="updated_at", batch_size=100)
    assert refused.value.exit_code == EXIT_USAGE
    for size in (0, 10_001):
        with pytest.raises(SyncUsageError, match="--batch-size must be between 1 and 10000"):
            check_options(since=None, since_field=None, batch_size=size)


def test_a_real_run_needs_a_key_and_the_integration_enabled_a_dry_run_neither(emulator: Emulator) -> None:
    def spell(name: str) -> str:
        return f"JOURNY_{name}"

    with pytest.raises(SyncPlanError, match=r"^JOURNY_API_KEY is not set"):
        sync_client(None, emulator.url, enabled=True, dry_run=False, setting=spell)
    with pytest.raises(SyncPlanError, match=r"^JOURNY_ENABLED is False: .*--dry-run"):
        sync_client("key", emulator.url, enabled=False, dry_run=False, setting=spell)
    with pytest.raises(SyncPlanError, match=r"(?i)url"):
        sync_client("key", "not a url", enabled=True, dry_run=False, setting=spell)
    with sync_client(None, emulator.url, enabled=False, dry_run=True, setting=spell) as dry:
        assert dry.base_url == emulator.url


# -- running ---------------------------------------------------------------------------------------------------


def test_a_run_sends_every_stage_in_order_and_prints_progress_and_one_summary_line_each(
    client: Client, emulator: Emulator, workdir: Path
) -> None:
    say, tell = Lines(), Lines()
    sources = [
        source("users", upserts("users", 25)),
        source("accounts", upserts("accounts", 3)),
        source("memberships", memberships({1: [1, 2], 2: [], 3: [3]})),
    ]
    outcome = run_sync(client, sources, SyncOptions(batch_size=10), say=say, tell=tell)
    assert [summary.name for summary in outcome.summaries] == list(STAGES)
    assert (outcome.failed, outcome.exit_code, outcome.failure_message) == (0, EXIT_OK, None)
    assert len(emulator.state()["users"]) == 25
    assert len(emulator.state()["memberships"]) == 3
    assert tell[0] == "users: 25 to go"
    assert tell[1] == "  users: 10/25 done, 0 failed" or tell[1].startswith("  users: 10/25 done, 0 failed, about ")
    assert "  users: 25/25 done, 0 failed" in tell  # the last batch, without an estimate
    assert "memberships: 3 to go" in tell
    assert [line.split(" in ")[0] for line in say] == [
        "users: sent 25, failed 0, skipped 0",
        "accounts: sent 3, failed 0, skipped 0",
        "memberships: sent 2, failed 0, skipped 1",
    ]
    assert not (workdir / DEFAULT_STATE_FILE).exists()  # a complete run leaves no checkpoint


def test_the_progress_of_a_stage_is_printed_for_its_first_and_last_batch_and_every_interval_between(
    client: Client, workdir: Path
) -> None:
    tell = Lines()
    run_sync(
        client,
        [source("users", upserts("users", 50))],
        SyncOptions(batch_size=10, dry_run=True),
        say=Lines(),
        tell=tell,
        progress_interval=3600,
    )
    assert [line for line in tell if line.startswith("  ")] == [
        "  users: 10/50 done, 0 failed",
        "  users: 50/50 done, 0 failed",
    ]


def test_summary_and_progress_lines_read_the_same_in_both_commands() -> None:
    summary = SyncSummary("users", sent=40, failed=1, skipped=2, seconds=2.54, resumed_from="29")
    assert summary_line(summary) == (
        "users: sent 40, failed 1, skipped 2 in 2.5 s, resumed after 29 (with the interrupted run's counts)"
    )
    dry = SyncSummary("accounts", sent=3, failed=0, skipped=0, seconds=0.0, resumed_from=None, dry_run=True)
    assert summary_line(dry) == "accounts: would send 3, failed 0, skipped 0 in 0.0 s"
    assert progress_line(ProgressReport("users", 20, 40, 0, 12.4)) == "  users: 20/40 done, 0 failed, about 12 s left"
    assert progress_line(ProgressReport("users", 40, 40, 1, 0.0)) == "  users: 40/40 done, 1 failed"


def test_an_interrupted_run_keeps_its_checkpoint_in_the_default_state_file_and_the_next_run_resumes_there(
    client: Client, emulator: Emulator, workdir: Path
) -> None:
    everyone = upserts("users", 30)

    def interrupted(after: str | None) -> Iterable[Item]:
        yield from everyone[:25]
        raise KeyboardInterrupt

    stopping = StageSource("users", count=lambda after: 30, items=interrupted)
    say = Lines()
    with pytest.raises(SyncInterrupted, match="run the same command again to resume") as stopped:
        run_sync(client, [stopping], SyncOptions(batch_size=10), say=say)
    assert stopped.value.exit_code == EXIT_INTERRUPTED
    assert checkpoints(workdir / DEFAULT_STATE_FILE) == {"users": key(20)}
    emulator.reset()
    say = Lines()
    outcome = run_sync(client, [source("users", everyone)], SyncOptions(batch_size=10), say=say)
    assert "users: 10 to go, resuming after key 0020" in say
    assert outcome.summaries[0].resumed_from == key(20)
    assert sorted(int(u["userId"]) for u in emulator.state()["users"]) == list(range(21, 31))


def test_restart_forgets_the_checkpoints_of_the_stages_it_runs_and_keeps_the_others(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": key(20), "accounts": key(2)}))
    options = SyncOptions(state_file=state, restart=True)
    outcome = run_sync(client, [source("users", upserts("users", 30))], options, say=Lines())
    assert outcome.summaries[0].resumed_from is None
    assert len(emulator.state()["users"]) == 30
    assert checkpoints(state) == {"accounts": key(2)}


def test_a_dry_run_with_restart_neither_reads_nor_writes_the_checkpoint(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": key(20)}))
    say = Lines()
    run_sync(
        client,
        [source("users", upserts("users", 30))],
        SyncOptions(state_file=state, dry_run=True, restart=True),
        say=say,
    )
    assert say[-1].startswith("users: would send 30, failed 0, skipped 0")
    assert json.loads(state.read_text()) == {"users": key(20)}
    assert emulator.calls() == []


def test_a_state_file_of_the_earlier_django_name_is_renamed_and_resumed(
    client: Client, emulator: Emulator, workdir: Path
) -> None:
    (workdir / EARLIER_STATE_FILES[0]).write_text(json.dumps({"users": key(28), "accounts": key(1)}))
    tell = Lines()
    run_sync(client, [source("users", upserts("users", 30))], SyncOptions(), say=Lines(), tell=tell)
    assert f"renamed the checkpoint file .journy_sync_state.json to {DEFAULT_STATE_FILE}" in tell
    assert "users: 2 to go, resuming after key 0028" in tell
    assert not (workdir / EARLIER_STATE_FILES[0]).exists()
    assert checkpoints(workdir / DEFAULT_STATE_FILE) == {"accounts": key(1)}


def test_a_dry_run_reads_a_state_file_of_the_earlier_name_where_it_is(client: Client, workdir: Path) -> None:
    earlier = workdir / EARLIER_STATE_FILES[0]
    earlier.write_text(json.dumps({"users": key(28)}))
    tell = Lines()
    run_sync(client, [source("users", upserts("users", 30))], SyncOptions(dry_run=True), say=Lines(), tell=tell)
    assert "users: 2 to go, resuming after key 0028" in tell
    assert earlier.exists()
    assert not (workdir / DEFAULT_STATE_FILE).exists()


def test_a_checkpoint_of_the_earlier_members_stage_is_resumed_as_memberships(
    client: Client, emulator: Emulator, workdir: Path
) -> None:
    (workdir / DEFAULT_STATE_FILE).write_text(json.dumps({"members": key(2), "users": key(5)}))
    tell = Lines()
    teams = memberships({1: [1], 2: [2], 3: [3]})
    run_sync(client, [source("memberships", teams)], SyncOptions(), say=Lines(), tell=tell)
    assert "memberships: 1 to go, resuming after key 0002" in tell
    assert [m["account"]["accountId"] for m in emulator.state()["memberships"]] == ["3"]
    assert checkpoints(workdir / DEFAULT_STATE_FILE) == {"users": key(5)}  # rewritten, new name


def test_a_since_run_resumes_only_a_checkpoint_of_the_same_since(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    january = parse_since("2026-01-01")
    state.write_text(json.dumps({"users": {"after": key(20), "scope": since_scope(january, "updated_at")}}))
    tell = Lines()
    options = SyncOptions(since=datetime(2026, 2, 1, tzinfo=timezone.utc), state_file=state)
    run_sync(client, [source("users", upserts("users", 30), since_field="updated_at")], options, say=Lines(), tell=tell)
    assert tell[0].startswith("users: not resuming after key 0020")
    assert tell[1] == "users: 30 to go"
    with pytest.raises(ValueError, match="since_field"):
        run_sync(client, [source("users", [])], options, say=Lines())


def test_failed_calls_make_the_outcome_fail_with_one_line_saying_so(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.script_answer(400, {"message": "bad", "errors": {"fields": {"userId": "nope"}}})
    sync = source("users", upserts("users", 3))
    outcome = run_sync(client, [sync], SyncOptions(state_file=tmp_path / "s.json"), say=Lines())
    assert (outcome.failed, outcome.exit_code) == (1, EXIT_FAILED)
    assert outcome.failure_message is not None
    assert outcome.failure_message.startswith("1 call(s) failed")
    assert "\n" not in outcome.failure_message


def test_a_batch_ends_where_its_last_key_ends_so_a_resumed_run_skips_no_call_of_that_key(
    client: Client, tmp_path: Path
) -> None:
    # An account with more members than one call takes yields several calls under its key: the checkpoint must
    # not name it before all of them are done.
    state = tmp_path / "sync.json"
    calls = [(1, 1), (1, 2), (1, 3), (2, 4), (3, 5), (3, 6)]
    items: list[Item] = [(key(a), ops.add_users_to_account(account_id=a, users=[u])) for a, u in calls]
    written: list[tuple[int, object]] = []

    def record(report: ProgressReport) -> None:  # called after the batch's checkpoint is written
        written.append((report.done, checkpoints(state)["memberships"]))

    BulkSync(client, batch_size=2, state_file=state, progress=record).run("memberships", items)
    assert written == [(1, key(1)), (3, key(3))]  # rows done: account 1's three calls are one row


# -- resuming a run of several stages, and the checkpoint file -------------------------------------------------


def stop_after(name: str, items: list[Item], count: int, stop: BaseException) -> StageSource:
    """A stage whose stream stops (Ctrl-C, a signal) after ``count`` items, honouring ``after`` as a query would."""

    def rows(after: str | None) -> Iterator[Item]:
        for number, item in enumerate(it for it in items if after is None or it[0] > after):
            if number == count:
                raise stop
            yield item

    return StageSource(name, count=lambda _: len(items), items=rows)


def test_a_resumed_run_skips_the_stages_the_interrupted_run_finished(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    people, companies = upserts("users", 30), upserts("accounts", 30)
    options = SyncOptions(batch_size=10, state_file=state)
    with pytest.raises(SyncInterrupted):
        run_sync(
            client,
            [source("users", people), stop_after("accounts", companies, 15, KeyboardInterrupt())],
            options,
            say=Lines(),
        )
    assert checkpoints(state) == {"users": key(30), "accounts": key(10)}
    emulator.reset()
    say, tell = Lines(), Lines()
    outcome = run_sync(client, [source("users", people), source("accounts", companies)], options, say=say, tell=tell)
    assert "users: finished by the interrupted run; not sent again" in tell
    assert emulator.calls("/users/upsert") == []  # the finished stage is not sent again
    assert len(emulator.calls("/accounts/upsert")) == 20  # the unfinished one resumes after its checkpoint
    assert say[0] == "users: sent 30, failed 0, skipped 0 by the interrupted run, which finished this stage"
    assert say[1].startswith("accounts: sent 30, failed 0, skipped 0 in ")
    assert [summary.finished_earlier for summary in outcome.summaries] == [True, False]
    assert not state.exists()  # the whole run is done: nothing left to resume


def test_a_run_of_other_stages_does_not_skip_a_stage_another_run_finished(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    people = upserts("users", 5)
    options = SyncOptions(state_file=state)
    with pytest.raises(SyncInterrupted):
        run_sync(
            client,
            [source("users", people), stop_after("accounts", upserts("accounts", 5), 0, KeyboardInterrupt())],
            options,
            say=Lines(),
        )
    emulator.reset()
    run_sync(client, [source("users", people)], options, say=Lines())  # --users alone: a new run, sent whole
    assert len(emulator.calls("/users/upsert")) == 5


def test_calls_that_failed_before_an_interruption_still_fail_the_resumed_run(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    people = upserts("users", 30)
    emulator.script_answer(400, {"message": "bad", "errors": {"fields": {"userId": "nope"}}})
    options = SyncOptions(batch_size=10, state_file=state)
    with pytest.raises(SyncInterrupted):
        run_sync(client, [stop_after("users", people, 25, KeyboardInterrupt())], options, say=Lines())
    say = Lines()
    outcome = run_sync(client, [source("users", people)], options, say=say, tell=Lines())
    assert (outcome.failed, outcome.exit_code) == (1, EXIT_FAILED)
    assert say[0].startswith("users: sent 29, failed 1, skipped 0 in ")
    assert say[0].endswith("resumed after 0020 (with the interrupted run's counts)")


def test_a_checkpoint_key_the_model_cannot_have_is_refused_before_anything_is_sent(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": "not-a-number"}))
    numbered = StageSource("users", count=lambda _: 1, items=lambda _: iter(()), check_key=int)
    with pytest.raises(SyncPlanError, match=r"users checkpoint 'not-a-number' is not a key .*--restart") as refused:
        run_sync(client, [numbered], SyncOptions(state_file=state), say=Lines())
    assert refused.value.exit_code == EXIT_FAILED
    assert emulator.calls() == []


def test_a_checkpoint_file_of_another_app_is_refused_and_restart_replaces_it(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    people = upserts("users", 30)
    options = SyncOptions(batch_size=10, state_file=state)
    with pytest.raises(SyncInterrupted):
        run_sync(
            client, [stop_after("users", people, 15, KeyboardInterrupt())], options, say=Lines(), app="shop.User in A"
        )
    with pytest.raises(SyncPlanError, match=r"another app \(shop.User in A; this one is crm.User in B\)") as refused:
        run_sync(client, [source("users", people)], options, say=Lines(), app="crm.User in B")
    assert "--restart" in str(refused.value)
    assert checkpoints(state) == {"users": key(10)}  # left as it was
    emulator.reset()
    restart = SyncOptions(batch_size=10, state_file=state, restart=True)
    run_sync(client, [source("users", people)], restart, say=Lines(), app="crm.User in B")
    assert len(emulator.calls("/users/upsert")) == 30


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "my-project", "version": [1, 2]}',
        '{"name": "my-app", "version": "1.0.0"}',  # string values: not taken for keys of unknown stages
        "[1, 2, 3]",
        "not json {",
        "",
        '{"format": "other/9"}',
        '{"format": "journy-sync-checkpoints/3", "app": "another app", "stages": {}}',  # newer: kept even by --restart
        '{"format": "journy-sync-checkpoints/2", "stages": {"users": {"after": "9", "failed": "x"}}}',
        '{"format": "journy-sync-checkpoints/2", "stages": []}',
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser recurses
    ],
)
def test_a_file_that_is_not_a_checkpoint_file_is_refused_and_left_as_it_was(
    content: str, client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    mistyped = tmp_path / "package.json"
    mistyped.write_text(content)
    for restart in (False, True):
        options = SyncOptions(state_file=mistyped, restart=restart)
        with pytest.raises(SyncPlanError, match=r"the checkpoint file .*package.json: "):
            run_sync(client, [source("users", upserts("users", 3))], options, say=Lines())
    assert mistyped.read_text() == content
    assert emulator.calls() == []


def test_a_state_file_that_cannot_be_written_stops_the_run_before_anything_is_sent(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    for unwritable in (tmp_path / "missing-directory" / "sync.json", tmp_path):
        with pytest.raises(SyncPlanError, match=r"the checkpoint file .*(cannot be written|is a directory)"):
            run_sync(client, [source("users", upserts("users", 3))], SyncOptions(state_file=unwritable), say=Lines())
    assert emulator.calls() == []


def test_a_checkpoint_that_cannot_be_written_mid_run_stops_it_with_one_line(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    people = upserts("users", 30)

    def vanishing(after: str | None) -> Iterator[Item]:
        for number, item in enumerate(people):
            if number == 15:
                (directory / "sync.json").unlink()
                directory.rmdir()  # the checkpoint of the second batch has nowhere to go
            yield item

    stage = StageSource("users", count=lambda _: 30, items=vanishing)
    with pytest.raises(SyncPlanError, match=r"checkpoint file .*sync.json: it cannot be written") as stopped:
        run_sync(client, [stage], SyncOptions(batch_size=10, state_file=directory / "sync.json"), say=Lines())
    assert "\n" not in str(stopped.value)
    assert len(emulator.calls("/users/upsert")) == 20  # the run stopped at the batch it could not record


def test_sigterm_stops_the_run_at_its_checkpoint_with_exit_code_143(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    people = upserts("users", 30)

    def terminated(after: str | None) -> Iterator[Item]:
        for number, item in enumerate(people):
            if number == 15:
                os.kill(os.getpid(), signal.SIGTERM)  # as a deployment stopping the job does
            yield item

    stage = StageSource("users", count=lambda _: 30, items=terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SyncInterrupted, match="run the same command again to resume") as stopped:
        run_sync(client, [stage], SyncOptions(batch_size=10, state_file=state), say=Lines())
    assert stopped.value.exit_code == 143
    assert checkpoints(state) == {"users": key(10)}
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone with it


def test_progress_counts_rows_so_a_stage_with_several_calls_per_key_never_passes_its_total(
    client: Client, tmp_path: Path
) -> None:
    calls = [(a, u) for a in range(1, 6) for u in range(3)]  # five accounts, three calls each
    items: list[Item] = [(key(a), ops.add_users_to_account(account_id=a, users=[u])) for a, u in calls]
    tell = Lines()
    options = SyncOptions(batch_size=4, state_file=tmp_path / "s.json")
    run_sync(client, [source("memberships", items)], options, say=Lines(), tell=tell, progress_interval=0)
    progress = [line for line in tell if line.startswith("  ")]
    assert progress[-1] == "  memberships: 5/5 done, 0 failed"
    assert all(int(line.split()[1].split("/")[0]) <= 5 for line in progress)


def test_a_row_whose_calls_cannot_be_built_is_counted_as_failed_and_the_rest_of_the_stage_is_sent(
    client: Client, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def operations(number: int) -> list[ops.Operation]:
        if number == 3:
            raise ValueError("boom for 3")
        return [ops.upsert_user(user_id=number)]

    rows = stage_items(range(1, 6), key, operations, what="shop.User")
    stage = StageSource("users", count=lambda _: 5, items=lambda _: rows)
    say = Lines()
    outcome = run_sync(client, [stage], SyncOptions(state_file=tmp_path / "s.json"), say=say, tell=Lines())
    assert (outcome.failed, outcome.exit_code) == (1, EXIT_FAILED)
    assert say[0].startswith("users: sent 4, failed 1, skipped 0")
    assert len(emulator.calls("/users/upsert")) == 4
    assert "journy: shop.User 0003 not synced (counted as failed): ValueError: boom for 3" in caplog.text
    assert "Traceback" not in caplog.text  # one line; the traceback only at DEBUG


def test_a_refused_key_stops_the_run_at_its_checkpoint_instead_of_sending_every_row(
    emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    with (
        Client("a-wrong-key", base_url=emulator.url) as refused,
        pytest.raises(SyncPlanError, match=r"journy.io refused the calls \(.*401.*\): the sync stopped") as stopped,
    ):
        run_sync(
            refused,
            [source("users", upserts("users", 50))],
            SyncOptions(batch_size=10, state_file=state),
            say=Lines(),
        )
    assert "a-wrong-key" not in str(stopped.value)
    assert len(emulator.calls("/users/upsert")) == 10  # the first batch, not the 50 rows
    assert not state.exists()  # the batch is not recorded: the run after the fix sends it


def test_a_checkpoint_key_out_of_any_integer_column_range_is_refused(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": "9" * 30}))
    numbered = StageSource("users", count=lambda _: 1, items=lambda _: iter(()), check_key=int)
    with pytest.raises(SyncPlanError, match=r"is not a key of that model \(out of range .*--restart"):
        run_sync(client, [numbered], SyncOptions(state_file=state), say=Lines())


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_since_whose_utc_time_is_out_of_range_is_a_value_error_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_since(value)


def test_an_interruption_before_the_first_batch_says_the_next_run_starts_over(client: Client, tmp_path: Path) -> None:
    state = tmp_path / "sync.json"
    with pytest.raises(SyncInterrupted, match="before a batch was done: run the same command again to start over"):
        run_sync(
            client,
            [stop_after("users", upserts("users", 5), 0, KeyboardInterrupt())],
            SyncOptions(state_file=state),
            say=Lines(),
        )
    assert not state.exists()


def test_a_key_with_a_line_break_is_printed_escaped_on_one_line(
    client: Client, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": "a\nb"}))
    items: list[Item] = [("a\nb", ops.upsert_user(user_id=1)), ("z", ops.upsert_user(user_id=2))]
    say, tell = Lines(), Lines()
    run_sync(client, [source("users", items)], SyncOptions(state_file=state), say=say, tell=tell)
    assert "users: 1 to go, resuming after key 'a\\nb'" in tell
    assert all("\n" not in line for line in [*say, *tell])


def test_a_symlinked_state_file_stays_a_link_to_the_checkpoints(client: Client, tmp_path: Path) -> None:
    target = tmp_path / "shared" / "sync.json"
    target.parent.mkdir()
    link = tmp_path / "sync.json"
    link.symlink_to(target)
    people = upserts("users", 30)
    with pytest.raises(SyncInterrupted):
        run_sync(
            client,
            [stop_after("users", people, 15, KeyboardInterrupt())],
            SyncOptions(batch_size=10, state_file=link),
            say=Lines(),
        )
    assert link.is_symlink()
    assert checkpoints(target) == {"users": key(10)}
    run_sync(client, [source("users", people)], SyncOptions(batch_size=10, state_file=link), say=Lines())
    assert link.is_symlink()
    assert not target.exists()  # the run is done: its checkpoints went, from the file the link names


def test_an_interrupted_stage_closes_its_query_before_the_command_ends(client: Client, tmp_path: Path) -> None:
    # What Django's streamed queryset holds: a cursor closed in a generator's finally. Interrupted between two of
    # its rows, the stage's frames must not outlive the run in the exception's chain, or the cursor is closed at
    # the process's exit, after its connection ("Exception ignored ... Cannot operate on a closed database").
    closed: list[bool] = []

    def cursor() -> Iterator[int]:
        try:
            yield from range(1, 100)
        finally:
            closed.append(True)

    def rows(after: str | None) -> Iterator[Item]:
        for number in cursor():
            if number == 15:
                raise KeyboardInterrupt  # in the stage's frame, the cursor suspended
            yield key(number), ops.upsert_user(user_id=number)

    stage = StageSource("users", count=lambda _: 99, items=rows)
    with pytest.raises(SyncInterrupted) as stopped:
        run_sync(client, [stage], SyncOptions(batch_size=10, state_file=tmp_path / "s.json"), say=Lines())
    assert stopped.value.__context__ is None
    assert closed == [True]


def test_a_state_file_name_the_system_refuses_is_one_line(client: Client, tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300 + ".json")
    with pytest.raises(SyncPlanError, match=r"checkpoint file .*: it cannot be used \(File name too long\)"):
        run_sync(client, [source("users", upserts("users", 3))], SyncOptions(state_file=too_long), say=Lines())


def test_a_very_long_key_is_cut_in_the_messages(client: Client, emulator: Emulator, tmp_path: Path) -> None:
    state = tmp_path / "sync.json"
    state.write_text(json.dumps({"users": "7" * 5000}))
    numbered = StageSource("users", count=lambda _: 1, items=lambda _: iter(()), check_key=int)
    with pytest.raises(SyncPlanError) as refused:
        run_sync(client, [numbered], SyncOptions(state_file=state), say=Lines())
    assert len(str(refused.value)) < 600  # not the 5,000 digits
    assert "'" + "7" * 57 + "...'" in str(refused.value)
