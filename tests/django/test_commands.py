"""journy_check and journy_sync against the emulator (real HTTP)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command, execute_from_command_line

import journy_django
from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY
from tests.django.testapp.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_projects" / "django_app"


@pytest.fixture
def live(settings, emulator):
    settings.JOURNY = {**settings.JOURNY, "API_KEY": DEFAULT_API_KEY, "API_URL": emulator.url}
    yield emulator
    emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})  # the emulator is shared by the session


def test_journy_check_lists_the_permissions_of_a_good_key(live, capsys):
    call_command("journy_check")
    out = capsys.readouterr().out
    assert "TrackData" in out
    assert "journy.io is ready." in out


def test_journy_check_fails_on_a_refused_key(live, settings, capsys):
    settings.JOURNY = {**settings.JOURNY, "API_KEY": "not-a-key"}
    with pytest.raises(CommandError, match="1 problem"):
        call_command("journy_check")
    assert "refused the API key" in capsys.readouterr().out


def test_journy_check_fails_on_a_missing_permission(live, settings, capsys):
    live.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS, "read-only": ["ReadEvents"]})
    settings.JOURNY = {**settings.JOURNY, "API_KEY": "read-only"}
    with pytest.raises(CommandError):
        call_command("journy_check")
    assert "TrackData" in capsys.readouterr().out


def test_journy_check_reports_configuration_errors_without_calling_the_api(live, settings, capsys):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_MODEL": "nope.Missing"}
    with pytest.raises(CommandError):
        call_command("journy_check")
    assert "journy.E005" in capsys.readouterr().out
    assert live.calls() == []


@pytest.fixture
def data():
    with journy_django.pause_sync():
        users = User.objects.bulk_create([User(username=f"u{i}", email=f"u{i}@acme.com") for i in range(40)])
        orgs = [Organization.objects.create(name=f"Org {i}") for i in range(3)]
        orgs[0].members.add(*users[:25])
        orgs[1].members.add(users[0])
    return users, orgs


def test_journy_sync_sends_every_user_account_and_membership(live, data, tmp_path, capsys):
    state = tmp_path / "state.json"
    call_command("journy_sync", "--state-file", str(state), "--batch-size", "15")
    stored = live.state()
    assert len(stored["users"]) == 40
    assert len(stored["accounts"]) == 3
    assert len(stored["memberships"]) == 26
    assert len(live.calls("/accounts/users/add")) == 2  # one call per organization with members
    out, err = capsys.readouterr()
    assert "users: 40 to go" in err  # progress and notices on stderr, as flask journy sync prints them
    assert "  users: 40/40 done, 0 failed" in err  # the progress line (the last one, at least)
    assert "  memberships: 3/3 done, 0 failed" in err  # rows, not calls: never past the total
    assert "to go" not in out
    assert "users: sent 40, failed 0" in out
    assert "memberships: sent 2, failed 0, skipped 1" in out
    assert not state.exists() or not json.loads(state.read_text())  # a finished sync forgets its checkpoints


def test_journy_sync_resumes_after_the_checkpoint(live, data, tmp_path, capsys):
    users, _ = data
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"users": str(users[29].pk)}))
    call_command("journy_sync", "--users", "--state-file", str(state))
    assert len(live.state()["users"]) == 10
    out, err = capsys.readouterr()
    assert f"users: 10 to go, resuming after key {users[29].pk}" in err
    assert f"resumed after {users[29].pk}" in out


def test_journy_sync_restart_ignores_the_checkpoint(live, data, tmp_path):
    users, _ = data
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"users": str(users[29].pk)}))
    call_command("journy_sync", "--users", "--restart", "--state-file", str(state))
    assert len(live.state()["users"]) == 40


def test_journy_sync_dry_run_sends_nothing(live, data, tmp_path, capsys):
    call_command("journy_sync", "--dry-run", "--state-file", str(tmp_path / "s.json"))
    assert live.calls() == []
    assert "users: would send 40" in capsys.readouterr().out


def test_journy_sync_since_filters_on_date_joined(live, data, tmp_path, capsys):
    call_command("journy_sync", "--users", "--since", "2999-01-01", "--state-file", str(tmp_path / "s.json"))
    assert live.calls() == []
    with pytest.raises(CommandError, match="not a date"):
        call_command("journy_sync", "--since", "yesterday")


def test_journy_sync_since_with_a_bad_date_on_the_command_line_is_one_line_naming_the_formats(live, capsys):
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "journy_sync", "--since", "yesterday"])
    assert exited.value.code == 2
    err = capsys.readouterr().err  # after the system checks' warnings, if any
    assert (
        err.splitlines()[-1] == "CommandError: --since 'yesterday' is not a date (YYYY-MM-DD) or an ISO 8601 datetime."
    )
    assert "Traceback" not in err
    assert live.calls() == []


def test_journy_sync_reads_a_state_file_of_the_earlier_default_name(live, data, tmp_path, monkeypatch, capsys):
    users, _ = data
    monkeypatch.chdir(tmp_path)  # the default state file is relative to the current directory
    (tmp_path / ".journy_sync_state.json").write_text(json.dumps({"users": str(users[29].pk)}))
    call_command("journy_sync", "--users")
    assert len(live.state()["users"]) == 10
    err = capsys.readouterr().err
    assert "renamed the checkpoint file .journy_sync_state.json to .journy-sync.json" in err
    assert not (tmp_path / ".journy_sync_state.json").exists()
    assert not (tmp_path / ".journy-sync.json").exists()  # completed: forgotten


def test_journy_sync_says_which_setting_keeps_a_stage_from_running(live, settings, tmp_path):
    settings.JOURNY = {**settings.JOURNY, "SYNC_USERS": False}
    with pytest.raises(CommandError, match=r"^--users: JOURNY\['SYNC_USERS'\] is False\.$"):
        call_command("journy_sync", "--users", "--state-file", str(tmp_path / "s.json"))
    assert live.calls() == []


def test_journy_sync_with_failed_calls_ends_with_a_command_error(live, data, tmp_path, capsys):
    live.script_answer(400, {"message": "bad", "errors": {"fields": {"userId": "nope"}}})
    with pytest.raises(CommandError, match=r"^1 call\(s\) failed") as failed:
        call_command("journy_sync", "--users", "--state-file", str(tmp_path / "s.json"))
    assert failed.value.returncode == 1
    assert "users: sent 39, failed 1, skipped 0" in capsys.readouterr().out


def test_journy_sync_since_on_a_model_without_timestamp_fields_stops_before_sending(live, data, tmp_path):
    with pytest.raises(CommandError, match=r"--since: testapp.Organization has none of updated_at.*--since-field"):
        call_command("journy_sync", "--since", "2000-01-01", "--state-file", str(tmp_path / "s.json"))
    assert live.calls() == []  # not even the users, which could be filtered


def test_journy_sync_since_field_naming_no_field_is_an_error_naming_it(live, data, tmp_path):
    with pytest.raises(CommandError, match="--since-field 'nope'"):
        call_command("journy_sync", "--users", "--since", "2000-01-01", "--since-field", "nope")
    with pytest.raises(CommandError, match="--since-field needs --since"):
        call_command("journy_sync", "--users", "--since-field", "date_joined")
    assert live.calls() == []


def test_journy_sync_since_does_not_resume_a_checkpoint_of_a_run_without_since(live, data, tmp_path, capsys):
    users, _ = data
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"users": str(users[29].pk)}))  # an unfiltered run stopped there
    call_command("journy_sync", "--users", "--since", "2000-01-01", "--state-file", str(state))
    assert len(live.calls("/users/upsert")) == 40  # resuming would have skipped the first 30
    err = capsys.readouterr().err
    assert f"users: not resuming after key {users[29].pk}" in err
    assert "users: 40 to go" in err


def _sync_peak_memory(rows: int, tmp_path) -> int:
    import tracemalloc

    User.objects.all().delete()
    with journy_django.pause_sync():
        User.objects.bulk_create(
            (User(username=f"bulk{i}", email=f"bulk{i}@acme.com") for i in range(rows)), batch_size=5000
        )
    tracemalloc.start()
    try:
        call_command("journy_sync", "--users", "--dry-run", "--state-file", str(tmp_path / "state.json"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_journy_sync_memory_does_not_grow_with_the_table(live, tmp_path):
    # Streaming: four times the rows, about the same peak (holding them all would be ~4x, tens of MB).
    small, large = _sync_peak_memory(2_000, tmp_path), _sync_peak_memory(8_000, tmp_path)
    assert large < small * 1.5 + 512 * 1024, f"peak {small / 1e6:.1f} MB for 2,000 rows, {large / 1e6:.1f} MB for 8,000"


def test_journy_check_prints_each_warning_once(settings, capsys):
    settings.JOURNY = {**settings.JOURNY, "VERIFICATION_SECRET": None}
    from journy_django.management.commands.journy_check import Command

    Command().run_from_argv(["manage.py", "journy_check", "--offline"])  # as from the shell, not call_command()
    out = capsys.readouterr()
    assert (out.out + out.err).count("journy.W002") == 1


def test_journy_sync_refuses_a_since_field_that_is_not_a_date_before_sending(live, data, tmp_path):
    for field in ("username", "organizations__name"):
        with pytest.raises(CommandError, match=rf"--since-field '{field}': .* not a date or datetime field") as refused:
            call_command("journy_sync", "--users", "--since", "2000-01-01", "--since-field", field)
        assert refused.value.returncode == 2
    assert live.calls() == []


def test_journy_sync_since_on_a_to_many_path_sends_each_row_once(live, data, tmp_path, capsys):
    # Organization 0 has 25 members: a join on them would yield it 25 times.
    args = ["--accounts", "--since", "2000-01-01", "--since-field", "members__date_joined"]
    call_command("journy_sync", *args, "--state-file", str(tmp_path / "s.json"))
    assert len(live.calls("/accounts/upsert")) == 2  # the two organizations with members
    assert "accounts: 2 to go" in capsys.readouterr().err


def test_journy_sync_refuses_a_checkpoint_key_that_is_not_a_primary_key(live, data, tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"users": "not-a-number"}))
    with pytest.raises(CommandError, match=r"users checkpoint 'not-a-number' is not a key .*--restart") as refused:
        call_command("journy_sync", "--users", "--state-file", str(state))
    assert refused.value.returncode == 1
    assert live.calls() == []


def test_journy_sync_dry_run_runs_its_system_checks_without_an_api_key(live, data, settings, tmp_path, capsys):
    settings.JOURNY = {name: value for name, value in settings.JOURNY.items() if name != "API_KEY"}
    execute_from_command_line(["manage.py", "journy_sync", "--dry-run", "--state-file", str(tmp_path / "s.json")])
    assert "users: would send 40" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a real run still needs it
        execute_from_command_line(["manage.py", "journy_sync", "--state-file", str(tmp_path / "s.json")])
    assert "JOURNY['API_KEY'] is not set" in capsys.readouterr().err
    assert live.calls() == []


def test_journy_sync_stopped_by_sigterm_exits_143_and_the_next_run_sends_the_rest(live, tmp_path):
    # A real process of the example project, stopped as a deployment stops a job, then run again.
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(JOURNY_API_URL=live.url, DEMO_DATABASE=str(tmp_path / "db.sqlite3"), PYTHONPATH=str(ROOT))

    def manage(*args: str, **options: Any) -> Any:
        command = [sys.executable, "manage.py", *args]
        return subprocess.Popen(command, cwd=project, env=env, stdout=PIPE, stderr=PIPE, text=True, **options)

    seed = "from django.contrib.auth.models import User; User.objects.bulk_create(User(username=i) for i in range(200))"
    for step in (("migrate", "-v0"), ("shell", "-c", seed)):
        prepared = manage(*step)
        assert prepared.communicate(timeout=120) and prepared.returncode == 0
    live.configure(latency=0.05)  # about 80 calls a second: a few seconds for the users
    try:
        sync = manage("journy_sync", "--users", "--batch-size", "5")
        state = project / ".journy-sync.json"
        deadline = time.monotonic() + 60
        while not state.exists() and sync.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        sync.send_signal(signal.SIGTERM)
        out, err = sync.communicate(timeout=60)
        assert sync.returncode == 143, out + err
        assert "interrupted: run the same command again to resume" in err
        assert "Traceback" not in err
        assert json.loads(state.read_text())["stages"]["users"]["after"]
    finally:
        live.configure(latency=0)
    again = manage("journy_sync", "--users")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert "resuming after key" in err
    arrived = [call["body"]["identification"]["userId"] for call in live.calls("/users/upsert")]
    assert len(set(arrived)) == 200  # every user, counted at the API
    assert len(arrived) <= 200 + 5 * 4  # at most the batch that was in flight is sent twice
