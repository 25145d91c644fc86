"""The ``celery`` backend: a real Redis broker and a real ``celery worker`` process against the emulator."""

from __future__ import annotations

import base64
import importlib
import json
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
    calls_by_operation,
    fault_kinds_seen,
    free_port,
    recorded_failures,
    unique,
    wait_until,
    worker_env,
)

celery = pytest.importorskip("celery")

from journy_core.backends.celery import (  # noqa: E402 - after the importorskip
    ACKS_LATE_TASK_NAME,
    TASK_NAME,
    CeleryBackend,
)

ON_FAILURE = "tests.backends.celery_app.record_failure"


def celery_worker(emulator: Emulator, redis_url: str, queue: str, log_dir: Path) -> WorkerProcess:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.backends.celery_app",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
    ]
    return WorkerProcess(
        f"celery worker {queue}", command, worker_env(emulator.url, redis_url), log_dir / f"{queue}.log"
    )


@pytest.fixture(scope="module")
def worker_queue(
    _session_emulator: Emulator, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The queue a running celery worker (prefork, 2 processes) consumes, for the whole module."""
    queue = unique("journy-celery")
    worker = celery_worker(_session_emulator, redis_url, queue, tmp_path_factory.mktemp("celery"))
    worker.start(ready_marker=" ready.")
    yield queue
    worker.stop()


def journy_for(redis_url: str, queue: str, **options: Any) -> Journy:
    app = celery.Celery("journy_test_producer", broker=redis_url)
    return Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": app, "QUEUE": queue, **options}})


# -- delivery through a real worker --------------------------------------------------------------------------


def test_operations_enqueued_through_journy_are_delivered_by_the_celery_worker(
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
    assert journy.flush(timeout=1) is True  # nothing waits in the web process


def test_every_operation_survives_5xx_429_timeouts_and_resets_and_only_timeouts_cause_a_second_copy(
    emulator_faults: Emulator, redis_url: str, worker_queue: str
) -> None:
    emulator = emulator_faults
    # A 30% fault rate; with this seed the emulator's first four draws are one of each fault kind.
    emulator.configure(fault_rate=0.3, seed=14, timeout_delay=0.6)
    journy = journy_for(redis_url, worker_queue, RETRY=FAST_RETRY)
    keys = []
    for i in range(24):
        journy.track(f"fault_event_{i}", user_id=str(i))
        keys.append(f"event:fault_event_{i}")
    for i in range(6):
        journy.upsert_user(user_id=f"u{i}", properties={"plan": "pro"})
        keys.append(f"user:u{i}")

    wait_until(lambda: all_delivered(emulator, keys), 45, "every operation to be delivered through the faults")
    time.sleep(0.5)  # a duplicate sent late would show up now
    assert fault_kinds_seen(emulator) == {"5xx", "429", "timeout", "reset"}
    assert_delivered_once_unless_the_outcome_was_unknown(emulator, keys)
    assert journy.stats()["queued"] == 30


def test_after_a_429_the_next_attempt_waits_at_least_the_pause_the_rate_limit_figures_call_for(
    emulator_faults: Emulator, redis_url: str, worker_queue: str
) -> None:
    emulator = emulator_faults
    # 429 answers carry X-RateLimit-Limit 1800 per 60 s: the pacer pauses max(8 * 60/1800, 0.25) s = 0.27 s,
    # while the backoff alone (base 0.01) would retry within 0.02 s.
    emulator.configure(fault_rate=0.3, faults=["429"], seed=1)  # the first two calls get a 429
    journy = journy_for(redis_url, worker_queue, RETRY={"base": 0.01, "cap": 0.02, "max_attempts": 30})
    keys = [f"event:paced_{i}" for i in range(4)]
    for i in range(4):
        journy.track(f"paced_{i}", user_id="1")
    wait_until(lambda: all_delivered(emulator, keys), 30, "the rate-limited operations")
    assert assert_429_pauses_were_respected(emulator, minimum=0.24) >= 2
    assert_delivered_once_unless_the_outcome_was_unknown(emulator, keys)


def test_a_4xx_answer_is_not_retried_and_reaches_on_failure_in_the_worker(
    emulator: Emulator, redis_url: str, redis_client: Any, worker_queue: str
) -> None:
    journy = journy_for(redis_url, worker_queue, ON_FAILURE=ON_FAILURE, RETRY=FAST_RETRY)
    # Built by hand: the call-site checks would refuse an event without identification; the API answers 400.
    journy.enqueue(Operation("track", {"name": "refused_event", "identification": {}}))
    failures = wait_until(lambda: recorded_failures(redis_client), 20, "ON_FAILURE to be called in the worker")
    assert failures[0]["operation"]["payload"]["name"] == "refused_event"
    assert failures[0]["error"] == "BadRequestError"
    assert failures[0]["status"] == 400
    time.sleep(0.5)
    calls = emulator.calls("/track")
    assert [(c["status"], c["body"]["name"]) for c in calls] == [(400, "refused_event")]
    assert len(recorded_failures(redis_client)) == 1


def test_a_retry_waiting_for_its_countdown_goes_back_to_the_broker_when_the_worker_stops(
    emulator_faults: Emulator, redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    emulator = emulator_faults
    emulator.configure(fault_rate=1.0, faults=["5xx"])
    queue = unique("journy-celery-restart")
    journy = journy_for(redis_url, queue, RETRY={"base": 0.3, "cap": 1.0, "max_attempts": 50, "max_age": 300})
    first = celery_worker(emulator, redis_url, queue, tmp_path).start(ready_marker=" ready.")
    try:
        journy.track("survivor", user_id="1")
        wait_until(lambda: len(emulator.calls("/track")) >= 2, 20, "two failed attempts")
    finally:
        first.stop()
    assert first.process is not None and first.process.returncode == 0, first.log()[-2000:]
    attempts_before = len(emulator.calls("/track"))
    assert not any(c["applied"] for c in emulator.calls("/track"))
    assert redis_client.llen(queue) == 1  # the retry, waiting for its countdown, went back to the queue

    emulator.configure(fault_rate=0.0)
    second = celery_worker(emulator, redis_url, queue, tmp_path).start(ready_marker=" ready.")
    try:
        wait_until(lambda: all_delivered(emulator, ["event:survivor"]), 20, "the operation after the restart")
    finally:
        second.stop()
    calls = emulator.calls("/track")
    assert [c["applied"] for c in calls] == [False] * attempts_before + [True]


# -- publishing (the web process) ----------------------------------------------------------------------------


def test_enqueue_with_the_broker_refusing_connections_returns_at_once_and_counts_dropped() -> None:
    failures: list[tuple[Operation, BaseException]] = []
    app = celery.Celery("unreachable", broker=f"redis://127.0.0.1:{free_port()}/0")
    journy = Journy(
        queue={"BACKEND": "celery", "OPTIONS": {"APP": app}}, on_failure=lambda op, err: failures.append((op, err))
    )
    started = time.perf_counter()
    for i in range(3):
        journy.track(f"lost_{i}", user_id="1")
    assert time.perf_counter() - started < 1.0
    assert journy.stats()["dropped"] == 3
    assert journy.stats()["queued"] == 0
    assert [op.payload["name"] for op, _ in failures] == ["lost_0", "lost_1", "lost_2"]


def test_enqueue_with_a_broker_that_never_answers_waits_at_most_the_publish_timeout_then_drops_at_once(
    silent_server: int,
) -> None:
    app = celery.Celery("hung", broker=f"redis://127.0.0.1:{silent_server}/0")
    journy = Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": app, "PUBLISH_TIMEOUT": 1.0}})
    started = time.perf_counter()
    journy.track("first", user_id="1")
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(20):
        journy.track(f"during_the_pause_{i}", user_id="1")
    rest = time.perf_counter() - started
    assert first < 2.0
    assert rest < 0.2  # BROKER_DOWN_PAUSE: no waiting again right after a timeout
    assert journy.stats()["dropped"] == 21


def test_publishing_resumes_after_the_broker_restarts(private_redis: RedisServer) -> None:
    import redis

    app = celery.Celery("restarting", broker=private_redis.url)
    journy = Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": app, "QUEUE": "q"}})
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
    assert client.llen("q") == 1  # "before" went with the old server (no persistence); "after" is here
    client.close()


def test_messages_are_json_name_the_task_by_acks_late_policy_and_never_show_property_values(
    redis_url: str, redis_client: Any
) -> None:
    queue = unique("journy-celery-inspect")  # no worker consumes it: the messages stay for inspection
    journy = journy_for(redis_url, queue, ACKS_LATE="idempotent", ON_FAILURE=ON_FAILURE)
    journy.upsert_user(user_id="42", properties={"secret_plan": "platinum"})
    journy.track("signed_in", user_id="42", metadata={"secret_amount": "12345"})
    raw = [json.loads(m) for m in reversed(redis_client.lrange(queue, 0, -1))]
    assert [m["headers"]["task"] for m in raw] == [ACKS_LATE_TASK_NAME, TASK_NAME]
    assert {m["content-type"] for m in raw} == {"application/json"}
    for message in raw:
        shown = json.dumps(message["headers"])
        assert "platinum" not in shown and "12345" not in shown
    args, kwargs, _ = json.loads(base64.b64decode(raw[0]["body"]))
    assert args == []
    assert kwargs["operation"] == {
        "kind": "upsert_user",
        "payload": {"identification": {"userId": "42"}, "properties": {"secret_plan": "platinum"}},
    }
    assert kwargs["on_failure"] == ON_FAILURE
    assert kwargs["retry"] == {"max_attempts": 8, "base": 0.5, "cap": 60.0, "max_age": 3600.0}
    assert abs(kwargs["enqueued_at"] - time.time()) < 60


def test_with_task_always_eager_operations_are_delivered_in_the_calling_thread_with_retries(
    emulator_faults: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from journy_core import worker

    emulator = emulator_faults
    emulator.configure(fault_rate=0.5, faults=["5xx"], seed=1)
    monkeypatch.setenv("JOURNY_API_KEY", api_key)
    monkeypatch.setenv("JOURNY_API_URL", emulator.url)
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())
    app = celery.Celery("eager", broker=f"redis://127.0.0.1:{free_port()}/0")  # never contacted
    app.conf.task_always_eager = True
    journy = Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": app, "RETRY": FAST_RETRY}})
    for i in range(5):
        journy.track(f"eager_{i}", user_id="1")
        assert all_delivered(emulator, [f"event:eager_{i}"])  # before track() returned
    assert any(c["status"] >= 500 for c in emulator.calls("/track"))
    assert journy.stats()["queued"] == 5
    assert journy.stats()["dropped"] == 0


# -- configuration -------------------------------------------------------------------------------------------


def test_a_missing_celery_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)  # what an environment without Celery looks like
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[celery\]'"):
        Journy(queue={"BACKEND": "celery"})
    monkeypatch.delitem(sys.modules, "journy_core.backends.celery")
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[celery\]'"):
        importlib.import_module("journy_core.backends.celery")


def test_the_registry_maps_celery_to_this_backend() -> None:
    assert BACKENDS["celery"][:2] == ("journy_core.backends.celery.CeleryBackend", "celery")
    assert isinstance(Journy(queue={"BACKEND": "celery"}).backend, CeleryBackend)


def test_unknown_and_invalid_options_are_configuration_errors_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown OPTIONS \['QUEUES'\] for the 'celery' queue backend"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"QUEUES": ["journy"]}})
    with pytest.raises(ConfigurationError, match="'ACKS_LATE' of the 'celery' backend must be False, True or"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"ACKS_LATE": "sometimes"}})
    with pytest.raises(ConfigurationError, match="'ON_FAILURE' of the 'celery' backend must be the dotted path"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"ON_FAILURE": lambda op, err: None}})
    with pytest.raises(ConfigurationError, match="'PUBLISH_TIMEOUT' of the 'celery' backend must be a number"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"PUBLISH_TIMEOUT": "fast"}})
    with pytest.raises(ConfigurationError, match="'APP' of the 'celery' backend must be a Celery app"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": 42}})
    with pytest.raises(ConfigurationError, match="RETRY keys"):
        Journy(queue={"BACKEND": "celery", "OPTIONS": {"RETRY": {"tries": 3}}})


def test_a_module_level_on_failure_function_is_sent_as_its_import_path() -> None:
    from tests.backends import celery_app

    journy = Journy(queue={"BACKEND": "celery", "OPTIONS": {"ON_FAILURE": celery_app.record_failure}})
    backend = journy.backend
    assert isinstance(backend, CeleryBackend)
    assert backend.on_failure_path == "tests.backends.celery_app:record_failure"


def test_the_app_option_takes_a_dotted_path_and_a_wrong_one_is_reported_without_raising_into_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.backends import celery_app

    backend = Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": "tests.backends.celery_app.app"}}).backend
    assert isinstance(backend, CeleryBackend)
    assert backend.app is celery_app.app
    assert Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": "tests.backends.celery_app:app"}}).backend.app is (
        celery_app.app
    )

    journy = Journy(queue={"BACKEND": "celery", "OPTIONS": {"APP": "tests.backends.no_such_module.app"}})
    with caplog.at_level("WARNING", logger="journy"):
        journy.track("signed_in", user_id="1")  # does not raise
    assert journy.stats()["dropped"] == 1
    assert "misconfigured" in caplog.text
    assert "no module named 'tests.backends.no_such_module'" in caplog.text
    with pytest.raises(ConfigurationError, match=r"'APP'='tests\.backends\.no_such_module\.app'"):
        _ = journy.backend.app  # type: ignore[attr-defined]


def test_the_worker_delivers_for_idempotent_operations_through_the_acks_late_task(
    emulator: Emulator, redis_url: str, worker_queue: str
) -> None:
    journy = journy_for(redis_url, worker_queue, ACKS_LATE=True)
    journy.upsert_user(user_id="late-1")
    journy.track("late_event", user_id="late-1")
    wait_until(
        lambda: all_delivered(emulator, ["user:late-1", "event:late_event"]),
        20,
        "delivery via journy.deliver_acks_late",
    )
    assert len(calls_by_operation(emulator)["event:late_event"]) == 1


# -- operations made together ----------------------------------------------------------------------------------


def test_operations_made_together_are_one_message_acknowledged_late_only_when_every_one_is_idempotent(
    redis_url: str, redis_client: Any
) -> None:
    from journy_core import operations as ops

    queue = unique("journy-celery-batch")  # no worker consumes it: the messages stay for inspection
    journy = journy_for(redis_url, queue, ACKS_LATE="idempotent")
    journy.enqueue_many([ops.upsert_user(user_id="42"), ops.link(device_id="d-1", user_id="42")])
    journy.enqueue_many([ops.upsert_user(user_id="43"), ops.track("signed_up", user_id="43")])
    raw = [json.loads(m) for m in reversed(redis_client.lrange(queue, 0, -1))]
    assert [m["headers"]["task"] for m in raw] == [ACKS_LATE_TASK_NAME, TASK_NAME]  # an event is not idempotent
    assert raw[1]["headers"]["kwargsrepr"] == "2 operations: upsert_user userId=43; track userId=43 name=signed_up"
    _, kwargs, _ = json.loads(base64.b64decode(raw[1]["body"]))
    assert kwargs["operations"] == [
        {"kind": "upsert_user", "payload": {"identification": {"userId": "43"}}},
        {"kind": "track", "payload": {"identification": {"user": {"userId": "43"}}, "name": "signed_up"}},
    ]
    assert kwargs["attempt"] == 1
    assert "operation" not in kwargs
    assert journy.stats()["queued"] == 4


def test_an_operation_refused_in_a_message_of_several_reaches_on_failure_and_the_rest_is_delivered_in_order(
    emulator: Emulator, redis_url: str, redis_client: Any, worker_queue: str
) -> None:
    from journy_core import operations as ops

    emulator.script_answer(503, path="/users/upsert")  # and a transient failure before it, retried in order
    journy = journy_for(redis_url, worker_queue, ON_FAILURE=ON_FAILURE, RETRY=FAST_RETRY)
    journy.enqueue_many(
        [
            ops.upsert_user(user_id="b-1"),
            Operation("track", {"name": "refused_in_batch", "identification": {}}),  # the API answers 400
            ops.track("after_the_refusal", user_id="b-1"),
        ]
    )
    wait_until(lambda: all_delivered(emulator, ["user:b-1", "event:after_the_refusal"]), 20, "the rest")
    failures = wait_until(lambda: recorded_failures(redis_client), 10, "ON_FAILURE in the worker")
    assert [f["operation"]["payload"]["name"] for f in failures] == ["refused_in_batch"]
    calls = [(c["path"], c["status"]) for c in emulator.calls()]
    assert calls == [("/users/upsert", 503), ("/users/upsert", 201), ("/track", 400), ("/track", 201)]
