"""The ``django_tasks`` queue backend, against real task backends and real workers.

Everything that needs Django runs in subprocesses with the settings of ``tests/backends/django_tasks_project``
(chosen through environment variables), never in the pytest process: the suite also holds Django tests with
settings of their own (through pytest-django), and Django's settings can be configured only once per process.
The emulator runs in the pytest process; the subprocesses reach it over HTTP.

- the immediate task backend: ``Journy(queue={"BACKEND": "django_tasks"})`` delivers inline, retrying in place;
- the database task backend with ``manage.py db_worker`` as real worker processes, on SQLite (a temp file) and
  on PostgreSQL (a temporary database, when 127.0.0.1:5432 is reachable): retries are deferred tasks;
- faults (5xx, 429, timeouts, resets) injected by a seeded emulator: every operation arrives, and one arrives
  twice only when one of its attempts timed out after the emulator had applied it;
- 4xx answers are not retried and reach ON_FAILURE; configuration errors name what to fix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from journy_core import ConfigurationError, Journy
from journy_core.emulator import DEFAULT_API_KEY, FAULT_KINDS, Emulator
from journy_core.operations import Operation
from tests.backends.django_tasks_project.driver import key, operations
from tests.conftest import REQUIRE_SERVICES, require_service

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "tests.backends.django_tasks_project"
TASK_PATH = "journy_core.backends.django_tasks.deliver_operation"
# Short enough for quick tests, long enough that an operation never runs out of attempts at a 30% fault rate.
FAST_RETRY = {"base": 0.05, "cap": 0.4, "max_attempts": 30}
FAULT_RATE = 0.3
# The workers' read timeout: generous by default, so that a loaded machine never turns a slow answer into a
# retry; short in the fault tests, yet well under the emulator's stall, so that its "timeout" fault is exercised.
READ_TIMEOUT = 10.0
FAULT_READ_TIMEOUT = 0.5
FAULT_STALL = 1.2
# With this seed the emulator's first 11 draws hold every fault kind (the draws follow the call order).
FAULT_SEED = 23
FAULT_OPERATIONS = 20
# A task that returned: django-tasks before 0.12 called the status SUCCEEDED.
SUCCEEDED = {"SUCCESSFUL", "SUCCEEDED"}


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


HAS_FRAMEWORK = _has_module("django.tasks") or _has_module("django_tasks")
HAS_DATABASE_BACKEND = _has_module("django_tasks_db") or _has_module("django_tasks.backends.database")

needs_framework = pytest.mark.skipif(
    not HAS_FRAMEWORK and not REQUIRE_SERVICES,
    reason="neither django.tasks (Django 6) nor the django-tasks backport is installed: pip install 'journy[tasks]'",
)


def _require_database_backend() -> None:
    if HAS_DATABASE_BACKEND:
        return
    reason = "no database task backend installed: pip install django-tasks-db"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


# -- running the test project ----------------------------------------------------------------------------------


def _env(*, settings: bool = True, **values: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("JOURNY_") and name != "DJANGO_SETTINGS_MODULE"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if settings:
        env["DJANGO_SETTINGS_MODULE"] = f"{PROJECT}.settings"
    env.update(values)
    return env


def _worker_env(emulator: Emulator, read_timeout: float = READ_TIMEOUT, **values: str) -> dict[str, str]:
    """The worker side reaches ``emulator`` with this read timeout (configure_worker in the test app)."""
    return _env(
        JOURNY_TEST_WORKER_URL=emulator.url,
        JOURNY_TEST_WORKER_KEY=DEFAULT_API_KEY,
        JOURNY_TEST_WORKER_READ_TIMEOUT=str(read_timeout),
        **values,
    )


def _driver(command: str, spec: dict[str, Any], env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    process = subprocess.run(
        [sys.executable, "-m", f"{PROJECT}.driver", command, json.dumps(spec)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in process.stdout.splitlines():
        if line.startswith("JOURNY-RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("JOURNY-RESULT "))
            result["stderr"] = process.stderr
            return result
    pytest.fail(f"driver {command} exited {process.returncode}:\n{process.stdout}\n{process.stderr}")


WORKER_COMMAND = [
    sys.executable,
    "-m",
    "django",
    "db_worker",
    "--interval",
    "0.05",
    "--no-startup-delay",
    "--no-reload",
]


@contextmanager
def _db_workers(env: dict[str, str], logs: Path, count: int = 1, queue: str = "default") -> Iterator[list[Path]]:
    """``count`` real ``db_worker`` processes; stopped with SIGTERM (their graceful shutdown) on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    paths = [logs / f"db_worker-{number}.log" for number in range(count)]
    try:
        for number, path in enumerate(paths):
            with path.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [*WORKER_COMMAND, "--queue-name", queue, "--worker-id", f"journy-test-{number}"],
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield paths
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _logs(paths: list[Path]) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}" for path in paths)


def _deliver_with_db_workers(
    emulator: Emulator,
    database: str,
    tmp_path: Path,
    *,
    count: int,
    options: dict[str, Any],
    workers: int = 1,
    journy: dict[str, Any] | None = None,
    queue: str = "default",
    env: dict[str, str] | None = None,
    read_timeout: float = READ_TIMEOUT,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enqueue ``count`` operations into the database task backend, run workers until no task is left."""
    env = env or _worker_env(emulator, read_timeout, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=database)
    spec = {"migrate": True, "count": count, "journy": {"queue": {"BACKEND": "django_tasks", "OPTIONS": options}}}
    spec["journy"].update(journy or {})
    enqueued = _driver("enqueue", spec, env)
    with _db_workers(env, tmp_path, workers, queue) as logs:
        finished = _driver("wait", {"timeout": 40}, env)
    assert finished["idle"], f"tasks were left undone:\n{finished['rows']}\n{_logs(logs)}"
    failed = [row for row in finished["rows"] if row["status"] not in SUCCEEDED]
    assert not failed, f"task rows did not succeed:\n{failed}\n{_logs(logs)}"
    return enqueued, finished


# -- what the emulator saw -------------------------------------------------------------------------------------


def _calls_by_operation(emulator: Emulator) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for call in emulator.calls():
        grouped[key(call["path"], call["body"])].append(call)
    return grouped


def _assert_each_delivered_once(emulator: Emulator, expected: list[Operation]) -> None:
    grouped = _calls_by_operation(emulator)
    assert set(grouped) == {key(op.path, op.payload) for op in expected}
    for op in expected:
        calls = grouped[key(op.path, op.payload)]
        assert [call["status"] for call in calls] == [201], f"{op!r}: {calls}"
        assert calls[0]["body"] == op.payload


def _assert_delivered_despite_faults(emulator: Emulator, expected: list[Operation]) -> dict[str, int]:
    """Every operation applied at least once; more than once only after applied attempts that timed out."""
    grouped = _calls_by_operation(emulator)
    assert set(grouped) == {key(op.path, op.payload) for op in expected}
    faults: dict[str, int] = defaultdict(int)
    for op in expected:
        calls = grouped[key(op.path, op.payload)]
        for call in calls:
            if call["fault"]:
                faults[call["fault"]] += 1
        applied = [call for call in calls if call["applied"]]
        assert applied, f"{op!r} never delivered: {calls}"
        assert all(call["body"] == op.payload for call in applied)
        timed_out = [call for call in applied if call["fault"] == "timeout"]
        assert len(applied) <= 1 + len(timed_out), f"{op!r} applied twice without a timeout: {calls}"
    # The test proves something only if every kind of fault happened.
    assert set(faults) == set(FAULT_KINDS), dict(faults)
    return dict(faults)


def _sorted_json(items: Iterable[Any]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def fault_emulator() -> Iterator[Emulator]:
    """An emulator failing 30% of calls with 5xx, 429, a reset, or a stall past the workers' read timeout."""
    with Emulator(seed=FAULT_SEED, fault_rate=FAULT_RATE, timeout_delay=FAULT_STALL) as emulator:
        yield emulator


@pytest.fixture(params=["sqlite", "postgresql"])
def task_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``JOURNY_TEST_DATABASE`` for the test project: a temp SQLite file, or a temporary PostgreSQL database."""
    _require_database_backend()
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'tasks.sqlite3'}"
    else:
        with _postgresql_database() as database:
            yield database


@contextmanager
def _postgresql_database() -> Iterator[str]:
    """A temporary database on 127.0.0.1:5432 (trust authentication, user PGUSER or postgres), dropped after."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"journy_tasks_{uuid.uuid4().hex[:12]}"
    server = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("PGUSER", "postgres"), "dbname": "postgres"}
    with psycopg.connect(**server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql:{name}"
    finally:
        with psycopg.connect(**server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the immediate task backend --------------------------------------------------------------------------------


@needs_framework
def test_immediate_backend_delivers_each_operation_with_the_worker_settings_from_the_environment(
    emulator: Emulator,
) -> None:
    env = _env(JOURNY_API_KEY=DEFAULT_API_KEY, JOURNY_API_URL=emulator.url)
    result = _driver("enqueue", {"count": 8, "journy": {"queue": {"BACKEND": "django_tasks"}}}, env)

    _assert_each_delivered_once(emulator, operations(8))
    assert result["stats"] == {**result["stats"], "queued": 8, "sent": 8, "dropped": 0, "failed": 0}
    assert result["worker_stats"]["sent"] == 8
    users = {user["userId"] for user in emulator.state()["users"]}
    assert {"user-0", "user-4"} <= users


@needs_framework
def test_immediate_backend_delivers_with_the_key_given_to_journy_when_no_worker_is_configured(
    emulator: Emulator,
) -> None:
    spec = {
        "count": 4,
        "journy": {"api_key": DEFAULT_API_KEY, "base_url": emulator.url, "queue": {"BACKEND": "django_tasks"}},
    }
    result = _driver("enqueue", spec, _env())

    _assert_each_delivered_once(emulator, operations(4))
    assert result["stats"]["sent"] == 4


@needs_framework
def test_immediate_backend_retries_in_place_until_every_operation_is_delivered_despite_faults(
    fault_emulator: Emulator,
) -> None:
    options = {"RETRY": FAST_RETRY}
    env = _worker_env(fault_emulator, FAULT_READ_TIMEOUT)
    result = _driver(
        "enqueue",
        {"count": FAULT_OPERATIONS, "journy": {"queue": {"BACKEND": "django_tasks", "OPTIONS": options}}},
        env,
    )

    faults = _assert_delivered_despite_faults(fault_emulator, operations(FAULT_OPERATIONS))
    assert result["stats"]["sent"] == FAULT_OPERATIONS
    assert result["stats"]["failed"] == 0
    assert result["worker_stats"]["retried"] == sum(faults.values())


@needs_framework
@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_client_errors_are_not_retried_and_reach_on_failure(emulator: Emulator, tmp_path: Path, status: int) -> None:
    failures = tmp_path / "failures.jsonl"
    emulator.script_answer(status, {"message": f"refused with {status}"}, path="/track")
    options = {"RETRY": FAST_RETRY, "ON_FAILURE": f"{PROJECT}.hooks.record_failure"}
    env = _worker_env(emulator, JOURNY_TEST_FAILURES=str(failures))
    result = _driver("enqueue", {"count": 2, "journy": {"queue": {"BACKEND": "django_tasks", "OPTIONS": options}}}, env)

    track_calls = emulator.calls("/track")
    assert [call["status"] for call in track_calls] == [status]
    assert not track_calls[0]["applied"]
    assert [call["status"] for call in emulator.calls("/users/upsert")] == [201]
    recorded = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [(line["kind"], line["status"]) for line in recorded] == [("track", status)]
    assert result["stats"] == {**result["stats"], "queued": 2, "sent": 1, "failed": 1}
    assert result["worker_stats"]["retried"] == 0
    assert "refused, not retried, after 1 attempt" in result["stderr"]


# -- the database task backend with real db_worker processes ---------------------------------------------------


@needs_framework
def test_database_worker_delivers_every_operation_exactly_once(
    emulator: Emulator, task_database: str, tmp_path: Path
) -> None:
    # Two workers on PostgreSQL (rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED); SQLite has one writer.
    workers = 2 if task_database.startswith("postgresql") else 1
    options = {"QUEUE_NAME": "journy", "PRIORITY": 5}
    enqueued, finished = _deliver_with_db_workers(
        emulator, task_database, tmp_path, count=12, options=options, workers=workers, queue="journy"
    )

    _assert_each_delivered_once(emulator, operations(12))
    # Enqueueing wrote the rows; the workers, not this process, delivered them.
    assert enqueued["stats"] == {**enqueued["stats"], "queued": 12, "sent": 0, "dropped": 0}
    assert enqueued["worker_stats"]["sent"] == 0
    rows = finished["rows"]
    assert len(rows) == 12
    assert {(row["task_path"], row["queue_name"], row["priority"]) for row in rows} == {(TASK_PATH, "journy", 5)}
    assert {row["return_value"] for row in rows} == {"sent"}
    assert _sorted_json(row["kwargs"]["operation"] for row in rows) == _sorted_json(
        op.to_dict() for op in operations(12)
    )


@needs_framework
def test_database_worker_delivers_every_operation_despite_faults_with_deferred_retries(
    fault_emulator: Emulator, task_database: str, tmp_path: Path
) -> None:
    workers = 2 if task_database.startswith("postgresql") else 1
    enqueued, finished = _deliver_with_db_workers(
        fault_emulator,
        task_database,
        tmp_path,
        count=FAULT_OPERATIONS,
        options={"RETRY": FAST_RETRY},
        workers=workers,
        read_timeout=FAULT_READ_TIMEOUT,
    )

    faults = _assert_delivered_despite_faults(fault_emulator, operations(FAULT_OPERATIONS))
    assert enqueued["stats"]["queued"] == FAULT_OPERATIONS
    rows = finished["rows"]
    first_attempts = [row for row in rows if row["kwargs"]["attempt"] == 1]
    retries = [row for row in rows if row["kwargs"]["attempt"] > 1]
    # Each transient failure became one deferred task carrying the next attempt number and the retry policy.
    assert len(first_attempts) == FAULT_OPERATIONS
    assert len(retries) == sum(faults.values())
    assert all(row["deferred"] for row in retries)
    assert all(row["kwargs"]["retry"] == {**row["kwargs"]["retry"], **FAST_RETRY} for row in rows)
    assert sum(row["return_value"] == "retry_scheduled" for row in rows) == len(retries)
    assert sum(row["return_value"] == "sent" for row in rows) == FAULT_OPERATIONS
    # The age limit counts from the first enqueue, across every copy.
    first_enqueued = {
        json.dumps(row["kwargs"]["operation"], sort_keys=True): row["kwargs"]["enqueued_at"] for row in first_attempts
    }
    assert all(
        row["kwargs"]["enqueued_at"] == first_enqueued[json.dumps(row["kwargs"]["operation"], sort_keys=True)]
        for row in retries
    )


@needs_framework
def test_database_worker_does_not_retry_a_client_error_and_calls_journys_on_failure_in_the_worker(
    emulator: Emulator, tmp_path: Path
) -> None:
    _require_database_backend()
    failures = tmp_path / "failures.jsonl"
    database = f"sqlite:{tmp_path / 'tasks.sqlite3'}"
    env = _worker_env(
        emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=database, JOURNY_TEST_FAILURES=str(failures)
    )
    emulator.script_answer(422, {"message": "unprocessable"}, path="/track")
    # A module-level function passed to Journy(on_failure=...) travels to the worker as its dotted path.
    enqueued, finished = _deliver_with_db_workers(
        emulator,
        database,
        tmp_path,
        count=2,
        options={},
        journy={"on_failure": f"{PROJECT}.hooks.record_failure"},
        env=env,
    )

    assert [call["status"] for call in emulator.calls("/track")] == [422]
    outcomes = {row["kwargs"]["operation"]["kind"]: row["return_value"] for row in finished["rows"]}
    assert outcomes == {"upsert_user": "sent", "track": "failed"}
    assert all(row["kwargs"]["attempt"] == 1 for row in finished["rows"])
    recorded = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [(line["kind"], line["status"]) for line in recorded] == [("track", 422)]
    assert recorded[0]["pid"] != enqueued["pid"]  # called by the worker, not by the process that enqueued


@needs_framework
def test_enqueue_counts_and_logs_an_operation_the_task_backend_refuses_instead_of_raising(
    emulator: Emulator, tmp_path: Path
) -> None:
    _require_database_backend()
    # No migrate: the task table does not exist, so every INSERT fails.
    env = _worker_env(emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=f"sqlite:{tmp_path / 'x.db'}")
    result = _driver("enqueue", {"count": 3, "journy": {"queue": {"BACKEND": "django_tasks"}}}, env)

    assert result["stats"] == {**result["stats"], "queued": 0, "dropped": 3}
    # One log line (with the traceback) per minute, not one per operation.
    assert result["stderr"].count("journy: dropped") == 1
    assert "the task backend refused it" in result["stderr"]
    assert emulator.calls() == []


@needs_framework
def test_a_refused_enqueue_inside_a_transaction_leaves_the_transaction_usable(emulator: Emulator) -> None:
    # PostgreSQL refuses every statement of a transaction after a failed one, unless it was in a savepoint.
    _require_database_backend()
    with _postgresql_database() as database:
        env = _worker_env(emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=database)
        spec = {"count": 2, "atomic": "commit", "journy": {"queue": {"BACKEND": "django_tasks"}}}
        result = _driver("enqueue", spec, env)  # not migrated: both INSERTs fail

    assert result["stats"]["dropped"] == 2
    assert result["transaction_usable"] is True


@needs_framework
def test_enqueue_from_an_event_loop_reaches_the_database_through_a_helper_thread(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Django refuses database access on an event loop's thread (SynchronousOnlyOperation): an async view calling
    # journy.track() must still get its operation queued.
    _require_database_backend()
    env = _worker_env(emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=f"sqlite:{tmp_path / 'a.db'}")
    spec = {"migrate": True, "count": 3, "in_event_loop": True, "journy": {"queue": {"BACKEND": "django_tasks"}}}
    enqueued = _driver("enqueue", spec, env)
    finished = _driver("wait", {"timeout": 0}, env)

    assert enqueued["flushed"] is True
    assert enqueued["stats"] == {**enqueued["stats"], "queued": 3, "dropped": 0}
    assert len(finished["rows"]) == 3


@needs_framework
def test_database_backend_enqueue_rolls_back_with_the_callers_transaction(emulator: Emulator, tmp_path: Path) -> None:
    _require_database_backend()
    env = _worker_env(emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=f"sqlite:{tmp_path / 't.db'}")
    spec = {"migrate": True, "count": 3, "atomic": "rollback", "journy": {"queue": {"BACKEND": "django_tasks"}}}
    enqueued = _driver("enqueue", spec, env)
    finished = _driver("wait", {"timeout": 0}, env)

    assert enqueued["stats"]["queued"] == 3
    assert enqueued["transaction_usable"] is True
    assert finished["rows"] == []


def test_a_malformed_queued_operation_fails_once_and_is_logged_without_its_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A row written by hand or by an incompatible version: retrying cannot help. (No Django needed: the task
    # function returns before it looks at its context.)
    from journy_core import worker
    from journy_core.backends.django_tasks import _deliver_operation

    failed_before = worker.stats["failed"]
    with caplog.at_level("ERROR", logger="journy"):
        outcome = _deliver_operation(None, {"kind": "upsert_users", "payload": {"secret": "s3cr3t"}})

    assert outcome == "failed"
    assert worker.stats["failed"] == failed_before + 1
    assert "malformed queued operation (kind 'upsert_users')" in caplog.text
    assert "s3cr3t" not in caplog.text


# -- configuration ---------------------------------------------------------------------------------------------


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *hidden: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name in hidden else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_tasks_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "django.tasks", "django_tasks")
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[tasks\]'"):
        Journy(queue={"BACKEND": "django_tasks"})


def test_missing_django_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "django")
    with pytest.raises(ConfigurationError, match=r"needs 'django'.*pip install 'journy\[tasks\]'"):
        Journy(queue={"BACKEND": "django_tasks"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"QUEUE": "journy"}, r"Unknown OPTIONS \['QUEUE'\].*BACKEND_ALIAS, ON_FAILURE, PRIORITY, QUEUE_NAME, RETRY"),
        ({"BACKEND_ALIAS": ""}, r"'BACKEND_ALIAS'.*non-empty string"),
        ({"QUEUE_NAME": 3}, r"'QUEUE_NAME'.*non-empty string"),
        ({"PRIORITY": "high"}, r"'PRIORITY'.*whole number"),
        ({"PRIORITY": 101}, r"'PRIORITY'.*between -100 and 100"),
        ({"RETRY": {"attempts": 3}}, r"RETRY keys \['attempts'\]"),
        ({"ON_FAILURE": "nowhere.at_all"}, r"'ON_FAILURE'='nowhere.at_all' of the 'django_tasks' backend: no module"),
        (
            {"ON_FAILURE": "json.nothing_here"},
            r"'ON_FAILURE'='json.nothing_here' of the 'django_tasks' backend: 'json' has no attribute 'nothing_here'",
        ),
        ({"ON_FAILURE": lambda operation, error: None}, r"ON_FAILURE=.*must be importable by the workers"),
    ],
)
def test_bad_options_are_configuration_errors_naming_the_option(options: dict[str, Any], message: str) -> None:
    # These are checked before Django's settings are read, so this runs in the pytest process.
    with pytest.raises(ConfigurationError, match=message):
        Journy(queue={"BACKEND": "django_tasks", "OPTIONS": options})


@pytest.fixture(scope="module")
def configuration_results() -> list[dict[str, Any]]:
    """Journy(...) built with each case inside the test project, in one subprocess."""
    if not HAS_FRAMEWORK and not REQUIRE_SERVICES:
        pytest.skip("no tasks framework installed")
    cases = [
        {"queue": {"BACKEND": "django_tasks", "OPTIONS": {"BACKEND_ALIAS": "nope"}}},
        {"queue": {"BACKEND": "django_tasks", "OPTIONS": {"BACKEND_ALIAS": "journy_only"}}},
        {"queue": {"BACKEND": "django_tasks", "OPTIONS": {"BACKEND_ALIAS": "journy_only", "QUEUE_NAME": "journy"}}},
        {"queue": {"BACKEND": "django_tasks", "OPTIONS": {"BACKEND_ALIAS": "dummy", "PRIORITY": -5}}},
    ]
    results: list[dict[str, Any]] = _driver("configure", {"cases": cases}, _env())["results"]
    return results


def test_unknown_backend_alias_is_a_configuration_error_listing_the_tasks_entries(
    configuration_results: list[dict[str, Any]],
) -> None:
    result = configuration_results[0]
    assert result["error"] == "ConfigurationError"
    assert "BACKEND_ALIAS='nope'" in result["message"]
    assert "'default', 'journy_only', 'dummy'" in result["message"]


def test_queue_the_tasks_entry_does_not_serve_is_a_configuration_error_naming_its_queues(
    configuration_results: list[dict[str, Any]],
) -> None:
    result = configuration_results[1]
    assert result["error"] == "ConfigurationError"
    assert "QUEUE_NAME='default'" in result["message"]
    assert "its queues: journy" in result["message"]


def test_a_tasks_entry_with_matching_queue_and_priority_is_accepted(
    configuration_results: list[dict[str, Any]],
) -> None:
    assert configuration_results[2] == {"error": None, "backend": "DjangoTasksBackend"}
    assert configuration_results[3] == {"error": None, "backend": "DjangoTasksBackend"}


@needs_framework
def test_unconfigured_django_settings_are_a_configuration_error() -> None:
    spec = {"setup": False, "cases": [{"queue": {"BACKEND": "django_tasks"}}]}
    [result] = _driver("configure", spec, _env(settings=False))["results"]
    assert result["error"] == "ConfigurationError"
    assert "set DJANGO_SETTINGS_MODULE" in result["message"]


# -- operations made together ------------------------------------------------------------------------------------


@needs_framework
def test_immediate_backend_delivers_operations_made_together_in_order_and_counts_each_one(emulator: Emulator) -> None:
    emulator.script_answer(422, {"message": "unprocessable"}, path="/track")
    env = _worker_env(emulator)
    spec = {"count": 4, "together": True, "journy": {"queue": {"BACKEND": "django_tasks", "OPTIONS": {}}}}
    result = _driver("enqueue", spec, env)

    # The refused event is reported; the operations after it still go, in the order they were made.
    assert [call["path"] for call in emulator.calls()] == [op.path for op in operations(4)]
    assert [call["status"] for call in emulator.calls()] == [201, 422, 201, 201]
    assert result["stats"] == {**result["stats"], "queued": 4, "sent": 3, "failed": 1, "dropped": 0}


@needs_framework
def test_database_backend_queues_operations_made_together_as_one_task_that_one_worker_delivers_in_order(
    emulator: Emulator, tmp_path: Path
) -> None:
    _require_database_backend()
    env = _worker_env(emulator, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=f"sqlite:{tmp_path / 'b.db'}")
    spec = {"migrate": True, "count": 8, "together": True, "journy": {"queue": {"BACKEND": "django_tasks"}}}
    enqueued = _driver("enqueue", spec, env)
    assert enqueued["stats"]["queued"] == 8
    with _db_workers(env, tmp_path) as logs:
        finished = _driver("wait", {"timeout": 40}, env)
    assert finished["idle"], _logs(logs)
    [row] = finished["rows"]
    assert row["kwargs"]["operations"] == [op.to_dict() for op in operations(8)]
    assert row["return_value"] == "sent"
    assert [call["path"] for call in emulator.calls()] == [op.path for op in operations(8)]
