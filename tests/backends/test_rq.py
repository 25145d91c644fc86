"""The ``rq`` backend: real Redis and a real ``rq worker --with-scheduler`` process against the emulator."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journy_core import ConfigurationError, Journy, Operation
from journy_core.backends import BACKENDS
from journy_core.emulator import Emulator
from tests.backends.conftest import (
    FAST_RETRY,
    RedisServer,
    WorkerProcess,
    all_delivered,
    assert_429_pauses_were_respected,
    assert_delivered_once_unless_the_outcome_was_unknown,
    fault_kinds_seen,
    free_port,
    recorded_failures,
    unique,
    wait_until,
    worker_env,
)

rq = pytest.importorskip("rq")

from journy_core.backends.rq import DeliveryFailedError, RQBackend, deliver_job  # noqa: E402

ON_FAILURE = "tests.backends.rq_settings.record_failure"


def rq_worker(emulator: Emulator, redis_url: str, queue: str, log_dir: Path, *extra: str) -> WorkerProcess:
    command = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--with-scheduler",
        "--url",
        redis_url,
        "-c",
        "tests.backends.rq_settings",
        "--name",
        unique(queue),
        *extra,
        queue,
    ]
    return WorkerProcess(f"rq worker {queue}", command, worker_env(emulator.url, redis_url), log_dir / f"{queue}.log")


@pytest.fixture(scope="module")
def worker_queue(
    _session_emulator: Emulator, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The queue a running ``rq worker --with-scheduler`` (RQ's default, forking worker) listens on."""
    queue = unique("journy-rq")
    worker = rq_worker(_session_emulator, redis_url, queue, tmp_path_factory.mktemp("rq"))
    worker.start(ready_marker="Listening on")
    yield queue
    worker.stop()


def journy_for(redis_url: str, queue: str, **options: Any) -> Journy:
    return Journy(queue={"BACKEND": "rq", "OPTIONS": {"URL": redis_url, "QUEUE": queue, **options}})


# -- delivery through a real worker --------------------------------------------------------------------------


def test_operations_enqueued_through_journy_are_delivered_by_the_rq_worker(
    emulator: Emulator, redis_url: str, worker_queue: str
) -> None:
    journy = journy_for(redis_url, worker_queue)
    journy.upsert_account(account_id="7", properties={"plan": "pro"})
    journy.upsert_user(user_id="42", email="ada@acme.com", properties={"full_name": "Ada"})
    journy.add_users_to_account(account_id="7", users=["42"])
    journy.link(device_id="device-1", user_id="42")
    for i in range(5):
        journy.track(f"created_invoice_{i}", user_id="42", account_id="7", metadata={"amount": i})

    def state() -> dict[str, Any] | None:
        current = emulator.state()
        return current if len(current["events"]) == 5 and current["links"] else None

    final = wait_until(state, 20, "the worker to deliver 9 operations")
    assert {u["userId"] for u in final["users"]} == {"42"}
    assert {a["accountId"] for a in final["accounts"]} == {"7"}
    assert sorted(e["name"] for e in final["events"]) == [f"created_invoice_{i}" for i in range(5)]
    assert journy.stats()["queued"] == 9
    assert journy.stats()["dropped"] == 0
    assert journy.flush(timeout=1) is True


def test_every_operation_survives_5xx_429_timeouts_and_resets_and_only_timeouts_cause_a_second_copy(
    emulator_faults: Emulator, redis_url: str, worker_queue: str
) -> None:
    emulator = emulator_faults
    # A 30% fault rate; with this seed the emulator's first four draws are one of each fault kind.
    emulator.configure(fault_rate=0.3, seed=14, timeout_delay=0.6)
    journy = journy_for(redis_url, worker_queue, RETRY=FAST_RETRY)
    keys = []
    for i in range(12):
        journy.track(f"fault_event_{i}", user_id=str(i))
        keys.append(f"event:fault_event_{i}")
    for i in range(4):
        journy.upsert_user(user_id=f"u{i}", properties={"plan": "pro"})
        keys.append(f"user:u{i}")

    wait_until(lambda: all_delivered(emulator, keys), 45, "every operation to be delivered through the faults")
    time.sleep(0.5)
    assert fault_kinds_seen(emulator) == {"5xx", "429", "timeout", "reset"}
    assert_delivered_once_unless_the_outcome_was_unknown(emulator, keys)
    assert journy.stats()["queued"] == 16


def test_after_a_429_the_next_attempt_waits_at_least_the_pause_the_rate_limit_figures_call_for(
    emulator_faults: Emulator, redis_url: str, worker_queue: str
) -> None:
    emulator = emulator_faults
    emulator.configure(fault_rate=0.3, faults=["429"], seed=1)  # the first two calls get a 429
    journy = journy_for(redis_url, worker_queue, RETRY={"base": 0.01, "cap": 0.02, "max_attempts": 30})
    keys = [f"event:paced_{i}" for i in range(4)]
    for i in range(4):
        journy.track(f"paced_{i}", user_id="1")
    wait_until(lambda: all_delivered(emulator, keys), 30, "the rate-limited operations")
    assert assert_429_pauses_were_respected(emulator, minimum=0.24) >= 2
    assert_delivered_once_unless_the_outcome_was_unknown(emulator, keys)


def test_a_4xx_answer_is_not_retried_reaches_on_failure_and_leaves_a_failed_job(
    emulator: Emulator, redis_url: str, redis_client: Any, worker_queue: str
) -> None:
    journy = journy_for(redis_url, worker_queue, ON_FAILURE=ON_FAILURE, RETRY=FAST_RETRY)
    journy.enqueue(Operation("track", {"name": "refused_event", "identification": {}}))
    failures = wait_until(lambda: recorded_failures(redis_client), 20, "ON_FAILURE to be called in the worker")
    assert failures[0]["operation"]["payload"]["name"] == "refused_event"
    assert failures[0]["error"] == "BadRequestError"
    assert failures[0]["status"] == 400

    registry = rq.Queue(worker_queue, connection=redis_client).failed_job_registry
    job_ids = wait_until(registry.get_job_ids, 10, "the job to land in the FailedJobRegistry")
    job = rq.job.Job.fetch(job_ids[0], connection=redis_client)
    assert job.description == "track name=refused_event"
    assert "DeliveryFailedError" in (job.latest_result().exc_string or "")
    time.sleep(0.3)
    calls = emulator.calls("/track")
    assert [(c["status"], c["body"]["name"]) for c in calls] == [(400, "refused_event")]
    for job_id in job_ids:
        registry.remove(job_id, delete_job=True)


def test_the_simple_worker_class_delivers_and_retries_too(
    emulator_faults: Emulator, redis_url: str, tmp_path: Path
) -> None:
    emulator = emulator_faults
    emulator.configure(fault_rate=0.3, faults=["5xx", "reset"], seed=2)
    queue = unique("journy-rq-simple")
    worker = rq_worker(emulator, redis_url, queue, tmp_path, "--worker-class", "rq.worker.SimpleWorker")
    worker.start(ready_marker="Listening on")
    try:
        journy = journy_for(redis_url, queue, RETRY=FAST_RETRY)
        keys = [f"event:simple_{i}" for i in range(8)]
        for i in range(8):
            journy.track(f"simple_{i}", user_id="1")
        wait_until(lambda: all_delivered(emulator, keys), 30, "delivery by the SimpleWorker")
    finally:
        worker.stop()
    assert fault_kinds_seen(emulator)
    assert_delivered_once_unless_the_outcome_was_unknown(emulator, keys)


# -- publishing (the web process) ----------------------------------------------------------------------------


def test_enqueue_with_redis_refusing_connections_returns_at_once_and_counts_dropped() -> None:
    failures: list[tuple[Operation, BaseException]] = []
    journy = Journy(
        queue={"BACKEND": "rq", "OPTIONS": {"URL": f"redis://127.0.0.1:{free_port()}/0"}},
        on_failure=lambda op, err: failures.append((op, err)),
    )
    started = time.perf_counter()
    for i in range(3):
        journy.track(f"lost_{i}", user_id="1")
    assert time.perf_counter() - started < 1.0
    assert journy.stats()["dropped"] == 3
    assert journy.stats()["queued"] == 0
    assert [op.payload["name"] for op, _ in failures] == ["lost_0", "lost_1", "lost_2"]


def test_enqueue_with_a_redis_that_never_answers_waits_at_most_the_publish_timeout_then_drops_at_once(
    silent_server: int,
) -> None:
    journy = Journy(
        queue={"BACKEND": "rq", "OPTIONS": {"URL": f"redis://127.0.0.1:{silent_server}/0", "PUBLISH_TIMEOUT": 1.0}}
    )
    started = time.perf_counter()
    journy.track("first", user_id="1")
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(20):
        journy.track(f"during_the_pause_{i}", user_id="1")
    rest = time.perf_counter() - started
    assert first < 2.0
    assert rest < 0.2
    assert journy.stats()["dropped"] == 21


def test_publishing_resumes_after_redis_restarts(private_redis: RedisServer) -> None:
    import redis

    journy = Journy(queue={"BACKEND": "rq", "OPTIONS": {"URL": private_redis.url, "QUEUE": "q"}})
    journy.track("before", user_id="1")
    private_redis.stop()
    started = time.perf_counter()
    journy.track("while_down", user_id="1")
    assert time.perf_counter() - started < 1.0
    private_redis.start()
    journy.track("after", user_id="1")
    assert journy.stats()["queued"] == 2
    assert journy.stats()["dropped"] == 1
    client = redis.Redis.from_url(private_redis.url)
    assert len(rq.Queue("q", connection=client).get_job_ids()) == 1
    client.close()


def test_jobs_carry_plain_data_and_describe_themselves_without_property_values(
    redis_url: str, redis_client: Any
) -> None:
    queue_name = unique("journy-rq-inspect")  # no worker listens: the job stays for inspection
    journy = journy_for(redis_url, queue_name, ON_FAILURE=ON_FAILURE, SERIALIZER="json")
    journy.upsert_user(user_id="42", properties={"secret_plan": "platinum"})
    queue = rq.Queue(queue_name, connection=redis_client, serializer="json")
    [job] = queue.get_jobs()
    assert job.func_name == "journy_core.backends.rq.deliver_job"
    assert job.description == "upsert_user userId=42"
    assert job.timeout == 180
    assert job.failure_ttl == 7 * 24 * 3600
    [message] = job.args
    assert message["operation"] == {
        "kind": "upsert_user",
        "payload": {"identification": {"userId": "42"}, "properties": {"secret_plan": "platinum"}},
    }
    assert message["attempt"] == 1
    assert message["on_failure"] == ON_FAILURE
    assert message["retry"] == {"max_attempts": 8, "base": 0.5, "cap": 60.0, "max_age": 3600.0}
    job.delete()


def test_the_job_reports_a_4xx_as_failed_and_raises_so_that_rq_keeps_it_in_the_failed_registry(
    emulator: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from journy_core import worker

    monkeypatch.setenv("JOURNY_API_KEY", api_key)
    monkeypatch.setenv("JOURNY_API_URL", emulator.url)
    # This process's worker configuration and cached client, as if it were a fresh worker; restored afterwards.
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())
    message = {"operation": {"kind": "track", "payload": {"name": "x", "identification": {}}}, "attempt": 1}
    failed_before = worker.stats["failed"]
    with pytest.raises(DeliveryFailedError, match="track name=x: given up after 1 attempt"):
        deliver_job(message)
    assert worker.stats["failed"] == failed_before + 1
    valid = {"kind": "track", "payload": {"name": "y", "identification": {"user": {"userId": "1"}}}}
    assert deliver_job({"operation": valid}) == "sent"
    assert [c["status"] for c in emulator.calls("/track")] == [400, 201]


def test_a_transient_failure_schedules_the_next_attempt_no_earlier_than_its_delay_and_warns_without_a_scheduler(
    emulator_faults: Emulator,
    api_key: str,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from journy_core import worker

    emulator = emulator_faults
    emulator.configure(fault_rate=1.0, faults=["5xx"])
    monkeypatch.setenv("JOURNY_API_KEY", api_key)
    monkeypatch.setenv("JOURNY_API_URL", emulator.url)
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())
    # A synchronous queue runs the job right here, as a worker would, and no scheduler serves it.
    queue = rq.Queue(unique("journy-rq-sync"), connection=redis_client, is_async=False)
    operation = {"kind": "track", "payload": {"name": "later", "identification": {"user": {"userId": "1"}}}}
    retry = {"max_attempts": 5, "base": 2.0, "cap": 2.0, "max_age": 60}
    started = time.time()
    with caplog.at_level("INFO", logger="journy"):
        queue.enqueue(deliver_job, {"operation": operation, "attempt": 1, "enqueued_at": started, "retry": retry})
    [retry_id] = queue.scheduled_job_registry.get_job_ids()
    scheduled = rq.job.Job.fetch(retry_id, connection=redis_client)
    assert scheduled.args[0] == {"operation": operation, "attempt": 2, "enqueued_at": started, "retry": retry}
    assert scheduled.description == "track userId=1 name=later"
    due = redis_client.zscore(queue.scheduled_job_registry.key, retry_id)
    logged_delay = float(caplog.text.split("retrying in ")[1].split(" s")[0])
    assert due >= started + logged_delay - 0.01  # RQ's whole seconds, rounded up: never earlier than the delay
    assert due < time.time() + logged_delay + 1.01
    assert "no RQ scheduler runs for the queue" in caplog.text
    assert [c["status"] >= 500 for c in emulator.calls("/track")] == [True]
    scheduled.delete()


# -- configuration -------------------------------------------------------------------------------------------


def test_a_missing_rq_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rq", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[rq\]'"):
        Journy(queue={"BACKEND": "rq"})
    monkeypatch.delitem(sys.modules, "journy_core.backends.rq")
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[rq\]'"):
        importlib.import_module("journy_core.backends.rq")


def test_the_registry_maps_rq_to_this_backend() -> None:
    assert BACKENDS["rq"][:2] == ("journy_core.backends.rq.RQBackend", "rq")
    backend = Journy(queue={"BACKEND": "rq"}).backend
    assert isinstance(backend, RQBackend)
    assert backend.queue_name == "journy"
    assert backend.connection.connection_pool.connection_kwargs["port"] == 6379


def test_unknown_and_invalid_options_are_configuration_errors_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown OPTIONS \['QUEUE_NAME'\] for the 'rq' queue backend"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"QUEUE_NAME": "journy"}})
    with pytest.raises(ConfigurationError, match="'URL' and 'CONNECTION' of the 'rq' backend exclude each other"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"URL": "redis://x", "CONNECTION": "a.b"}})
    with pytest.raises(ConfigurationError, match="'URL' of the 'rq' backend"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"URL": "http://localhost:6379"}})
    with pytest.raises(ConfigurationError, match="'SERIALIZER'='yaml' of the 'rq' backend"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"SERIALIZER": "yaml"}})
    with pytest.raises(ConfigurationError, match="'JOB_TIMEOUT' of the 'rq' backend must be a whole number >= 1"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"JOB_TIMEOUT": 0}})
    with pytest.raises(ConfigurationError, match="'ON_FAILURE' of the 'rq' backend must be the dotted path"):
        Journy(queue={"BACKEND": "rq", "OPTIONS": {"ON_FAILURE": 3}})


def test_the_connection_option_takes_a_client_or_a_dotted_path(redis_client: Any) -> None:
    backend = Journy(queue={"BACKEND": "rq", "OPTIONS": {"CONNECTION": redis_client}}).backend
    assert isinstance(backend, RQBackend)
    assert backend.connection is redis_client
    journy = Journy(queue={"BACKEND": "rq", "OPTIONS": {"CONNECTION": "tests.backends.no_such_module.redis"}})
    journy.track("signed_in", user_id="1")  # does not raise
    assert journy.stats()["dropped"] == 1
    with pytest.raises(ConfigurationError, match=r"'CONNECTION'='tests\.backends\.no_such_module\.redis'"):
        _ = journy.backend.connection  # type: ignore[attr-defined]


# -- operations made together ----------------------------------------------------------------------------------


def test_operations_made_together_are_one_job_that_describes_them_without_property_values(
    redis_url: str, redis_client: Any
) -> None:
    from journy_core import operations as ops

    queue_name = unique("journy-rq-batch")  # no worker listens: the job stays for inspection
    journy = journy_for(redis_url, queue_name)
    made = [ops.upsert_user(user_id="42", properties={"plan": "platinum"}), ops.track("signed_up", user_id="42")]
    journy.enqueue_many(made)
    [job] = rq.Queue(queue_name, connection=redis_client).get_jobs()
    assert job.description == "2 operations: upsert_user userId=42; track userId=42 name=signed_up"
    [message] = job.args
    assert message["operations"] == [operation.to_dict() for operation in made]
    assert message["attempt"] == 1
    assert "operation" not in message
    assert journy.stats()["queued"] == 2
    job.delete()


def test_a_transient_failure_in_a_job_of_several_schedules_that_operation_and_the_ones_after_it(
    emulator: Emulator, api_key: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from journy_core import operations as ops
    from journy_core import worker

    monkeypatch.setenv("JOURNY_API_KEY", api_key)
    monkeypatch.setenv("JOURNY_API_URL", emulator.url)
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())
    emulator.script_answer(503, path="/accounts/upsert")
    queue = rq.Queue(unique("journy-rq-sync"), connection=redis_client, is_async=False)
    made = [
        ops.upsert_user(user_id="1").to_dict(),
        ops.upsert_account(account_id="7").to_dict(),
        ops.add_users_to_account(account_id="7", users=["1"]).to_dict(),
    ]
    message = {"operations": made, "attempt": 1, "enqueued_at": time.time(), "retry": FAST_RETRY}
    queue.enqueue(deliver_job, message)
    [retry_id] = queue.scheduled_job_registry.get_job_ids()
    scheduled = rq.job.Job.fetch(retry_id, connection=redis_client)
    assert scheduled.args[0] == {**message, "operations": made[1:], "attempt": 2}
    assert scheduled.description.startswith("2 operations: upsert_account accountId=7; add_users_to_account")
    assert [(c["path"], c["status"]) for c in emulator.calls()] == [("/users/upsert", 201), ("/accounts/upsert", 503)]
    scheduled.delete()


def test_an_operation_refused_in_a_job_of_several_becomes_a_failed_job_of_its_own_and_the_rest_is_delivered(
    emulator: Emulator, redis_url: str, redis_client: Any, worker_queue: str
) -> None:
    from journy_core import operations as ops

    journy = journy_for(redis_url, worker_queue, ON_FAILURE=ON_FAILURE, RETRY=FAST_RETRY)
    refused = Operation("track", {"name": "refused_in_batch", "identification": {}})  # the API answers 400
    journy.enqueue_many([ops.upsert_user(user_id="b-1"), refused, ops.track("after_the_refusal", user_id="b-1")])
    wait_until(lambda: all_delivered(emulator, ["user:b-1", "event:after_the_refusal"]), 20, "the rest")
    failures = wait_until(lambda: recorded_failures(redis_client), 10, "ON_FAILURE in the worker")
    assert [f["operation"]["payload"]["name"] for f in failures] == ["refused_in_batch"]
    assert [c["status"] for c in emulator.calls()] == [201, 400, 201]

    # Only the refused operation waits in the FailedJobRegistry, as a job that `rq requeue` sends again alone.
    registry = rq.Queue(worker_queue, connection=redis_client).failed_job_registry
    [job_id] = wait_until(registry.get_job_ids, 10, "the failed operation's job")
    job = rq.job.Job.fetch(job_id, connection=redis_client)
    assert job.description == "track name=refused_in_batch"
    assert job.args[0]["operation"] == refused.to_dict()
    assert job.args[0]["attempt"] == 1
    assert "operations" not in job.args[0]
    registry.requeue(job_id)
    wait_until(lambda: len(emulator.calls("/track")) == 3, 20, "the requeued operation's attempt")
    assert [c["status"] for c in emulator.calls()] == [201, 400, 201, 400]  # alone: nothing else sent again
    wait_until(registry.get_job_ids, 10, "the requeued job to fail again")
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)
