"""Operations made together reach journy.io in the order they were made, through concurrent real workers.

For each distributed backend (Celery with a prefork pool of 4, four RQ workers, four ``db_worker`` processes of
the database task backend on PostgreSQL), the producers are the real integrations: a Django project (in a
subprocess, with ``journy_django`` installed) whose transactions create a user, an organization and the membership
and then delete the user, and whose requests pass through ``JournyMiddleware``; and a Flask app whose request
tracks events and links the visitor's device. Sent one message per operation, concurrent workers deliver them in
any order; sent together, one worker delivers them one after the other. What was made is recorded by the
producer (what it handed its backend); the emulator's call log says what journy.io saw, in order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from journy_core.emulator import Emulator
from journy_core.operations import Operation
from tests.backends.conftest import FAST_RETRY, WorkerProcess, unique, wait_until, worker_env
from tests.backends.test_django_tasks import (
    HAS_DATABASE_BACKEND,
    WORKER_COMMAND,
    _driver,
    _postgresql_database,
    _worker_env,
)

#: Concurrent workers (processes) per backend: enough that separate messages really are delivered out of order.
CONCURRENCY = 4
TRANSACTIONS = 40
REQUESTS = 30


@dataclass
class Deployment:
    """Running workers of one backend, and what a producer needs to reach them."""

    name: str
    #: JOURNY["QUEUE"] for the Django project (JSON data), without RETRY.
    queue: dict[str, Any]
    #: The environment of the Django project's subprocess.
    env: dict[str, str]
    #: JOURNY_QUEUE for a Flask app in this process, or None when the backend needs Django.
    flask_queue: dict[str, Any] | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {worker.name}\n{worker.log()[-3000:]}" for worker in self.workers)


def _start(deployment: Deployment, stack: ExitStack, worker: WorkerProcess, marker: str | None) -> None:
    deployment.workers.append(worker)
    stack.callback(worker.stop)
    worker.start(ready_marker=marker, timeout=30)


def _celery(stack: ExitStack, emulator: Emulator, redis_url: str, logs: Path) -> Deployment:
    celery = pytest.importorskip("celery")
    queue = unique("journy-order-celery")
    options = {"APP": "tests.backends.celery_app.app", "QUEUE": queue}
    env = _sync_env(
        emulator,
        {"BACKEND": "celery", "OPTIONS": options},
        JOURNY_TEST_REDIS_URL=redis_url,
        JOURNY_TEST_DATABASE=f"sqlite:{logs / 'project.sqlite3'}",  # a file: async views query from other threads
    )
    producer = celery.Celery("journy_order_producer", broker=redis_url)
    deployment = Deployment("celery", {"BACKEND": "celery", "OPTIONS": options}, env)
    deployment.flask_queue = {"BACKEND": "celery", "OPTIONS": {"APP": producer, "QUEUE": queue}}
    command = [
        *(sys.executable, "-m", "celery", "-A", "tests.backends.celery_app", "worker", "--pool=prefork"),
        *(f"--concurrency={CONCURRENCY}", "--without-heartbeat", "--without-gossip", "--without-mingle"),
        *("--loglevel=INFO", "-Q", queue, "-n", f"{queue}@%h"),
    ]
    worker = WorkerProcess("celery worker", command, worker_env(emulator.url, redis_url), logs / f"{queue}.log")
    _start(deployment, stack, worker, " ready.")
    return deployment


def _rq(stack: ExitStack, emulator: Emulator, redis_url: str, logs: Path) -> Deployment:
    pytest.importorskip("rq")
    queue = unique("journy-order-rq")
    options = {"URL": redis_url, "QUEUE": queue}
    queue_setting = {"BACKEND": "rq", "OPTIONS": options}
    env = _sync_env(emulator, queue_setting, JOURNY_TEST_DATABASE=f"sqlite:{logs / 'project.sqlite3'}")
    deployment = Deployment("rq", queue_setting, env)
    deployment.flask_queue = {"BACKEND": "rq", "OPTIONS": options}
    for number in range(CONCURRENCY):
        name = f"{queue}-{number}"
        command = [
            *(sys.executable, "-m", "rq.cli", "worker", "--with-scheduler", "--url", redis_url),
            *("-c", "tests.backends.rq_settings", "--worker-class", "rq.worker.SimpleWorker", "--name", name, queue),
        ]
        worker = WorkerProcess(f"rq worker {number}", command, worker_env(emulator.url, redis_url), logs / name)
        _start(deployment, stack, worker, "Listening on")
    return deployment


def _django_tasks(stack: ExitStack, emulator: Emulator, logs: Path) -> Deployment:
    if not HAS_DATABASE_BACKEND:
        pytest.skip("no database task backend installed: pip install django-tasks-db")
    database = stack.enter_context(_postgresql_database())
    queue = {"BACKEND": "django_tasks"}
    env = _sync_env(emulator, queue, JOURNY_TEST_TASKS="database", JOURNY_TEST_DATABASE=database)
    deployment = Deployment("django_tasks", queue, env)
    _driver("transactions", {"count": 0, "migrate": True}, env)  # the tables, before the workers look for them
    for number in range(CONCURRENCY):
        command = [*WORKER_COMMAND, "--worker-id", f"journy-order-{number}"]
        worker = WorkerProcess(f"db_worker {number}", command, env, logs / f"db_worker-{number}.log")
        _start(deployment, stack, worker, None)
    return deployment


def _sync_env(emulator: Emulator, queue: dict[str, Any], **values: str) -> dict[str, str]:
    """The Django project's environment: journy_django syncing its models through ``queue``."""
    return _worker_env(emulator, JOURNY_TEST_SYNC_QUEUE=json.dumps(queue), **values)


#: The tests parametrize this fixture indirectly: every backend for the Django project, the Redis ones for Flask.
EVERY_BACKEND = pytest.mark.parametrize("deployment", ["celery", "rq", "django_tasks"], indirect=True)
FLASK_BACKENDS = pytest.mark.parametrize("deployment", ["celery", "rq"], indirect=True)


@pytest.fixture(scope="module")
def deployment(
    request: pytest.FixtureRequest,
    _session_emulator: Emulator,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """Concurrent workers of one backend, delivering to the session's emulator, for the whole module."""
    logs = tmp_path_factory.mktemp(f"order-{request.param}")
    with ExitStack() as stack:
        if request.param == "celery":
            yield _celery(stack, _session_emulator, redis_url, logs)
        elif request.param == "rq":
            yield _rq(stack, _session_emulator, redis_url, logs)
        else:
            yield _django_tasks(stack, _session_emulator, logs)


def _with_retry(deployment: Deployment, retry: dict[str, Any]) -> dict[str, str]:
    queue = {**deployment.queue, "OPTIONS": {**deployment.queue.get("OPTIONS", {}), "RETRY": retry}}
    return {**deployment.env, "JOURNY_TEST_SYNC_QUEUE": json.dumps(queue)}


# -- what the emulator saw ------------------------------------------------------------------------------------


def _key(path: str, body: Any) -> str:
    return f"{path} {json.dumps(body, sort_keys=True)}"


def _answered(emulator: Emulator) -> list[str]:
    """The calls journy.io applied or refused for good, in the order they came (not those a fault turned away)."""
    return [
        _key(call["path"], call["body"])
        for call in emulator.calls()
        if not call.get("scripted") and call["fault"] is None and call["status"] < 500 and call["status"] != 429
    ]


def _expected(group: list[dict[str, Any]]) -> list[str]:
    return [_key(Operation.from_dict(operation).path, operation["payload"]) for operation in group]


def _all_arrived(emulator: Emulator, made: list[list[dict[str, Any]]]) -> bool:
    answered = set(_answered(emulator))
    return all(key in answered for group in made for key in _expected(group))


def _out_of_order(emulator: Emulator, made: list[list[dict[str, Any]]]) -> list[tuple[list[str], list[str]]]:
    """(made, arrived) for each group whose operations journy.io saw in another order than they were made."""
    answered = _answered(emulator)
    wrong = []
    for group in made:
        expected = _expected(group)
        mine = set(expected)
        seen = [key for key in answered if key in mine]
        # A call whose answer the worker did not see in time (its 0.3 s read timeout, on a loaded machine) is sent
        # again, right after itself: at least once, and still in order. Such repeats are not reorderings.
        arrived = [key for index, key in enumerate(seen) if index == 0 or key != seen[index - 1]]
        if arrived != expected:
            wrong.append((expected, arrived))
    return wrong


def _wait_and_check(emulator: Emulator, deployment: Deployment, made: list[list[dict[str, Any]]]) -> None:
    assert made and all(made), "the producer made nothing"
    if not _all_arrived(emulator, made):
        try:
            wait_until(lambda: _all_arrived(emulator, made), 90, f"the {deployment.name} workers to deliver")
        except BaseException:
            print(deployment.logs())
            raise
    wrong = _out_of_order(emulator, made)
    assert not wrong, f"{len(wrong)} of {len(made)} groups arrived out of order, e.g. {wrong[0]}"


# -- the tests ------------------------------------------------------------------------------------------------


@EVERY_BACKEND
def test_a_django_transactions_operations_reach_the_api_in_the_order_they_were_made_despite_concurrent_workers(
    emulator: Emulator, deployment: Deployment
) -> None:
    result = _driver("transactions", {"count": TRANSACTIONS, "tag": unique("tx")}, deployment.env)
    made = result["made"]
    assert [[op["kind"] for op in group] for group in made] == [
        ["upsert_user", "upsert_account", "add_users_to_account"]
    ] * TRANSACTIONS
    _wait_and_check(emulator, deployment, made)


@EVERY_BACKEND
def test_what_one_django_request_queues_outside_a_transaction_reaches_the_api_in_order(
    emulator: Emulator, deployment: Deployment
) -> None:
    result = _driver("requests", {"count": REQUESTS}, deployment.env)
    made = result["made"]
    # Created, tracked, renamed, tracked: each save commits on its own (autocommit), between the events.
    assert [[op["kind"] for op in group] for group in made] == [
        ["upsert_account", "track", "upsert_account", "track"]
    ] * REQUESTS
    _wait_and_check(emulator, deployment, made)


@EVERY_BACKEND
def test_what_one_async_django_request_queues_reaches_the_api_in_order(
    emulator: Emulator, deployment: Deployment
) -> None:
    result = _driver("async_requests", {"count": REQUESTS}, deployment.env)
    made = result["made"]
    assert [[op["kind"] for op in group] for group in made] == [
        ["upsert_account", "track", "upsert_account", "track"]
    ] * REQUESTS
    _wait_and_check(emulator, deployment, made)


@EVERY_BACKEND
def test_a_transient_failure_in_the_middle_of_a_transaction_is_retried_before_what_was_made_after_it(
    emulator: Emulator, deployment: Deployment
) -> None:
    # The first upsert of an account gets a 503: the membership made after it must wait for its retry.
    emulator.script_answer(503, {"message": "emulated outage"}, path="/accounts/upsert")
    env = _with_retry(deployment, {**FAST_RETRY, "base": 0.2})
    result = _driver("transactions", {"count": 4, "tag": unique("fault")}, env)
    made = result["made"]
    _wait_and_check(emulator, deployment, made)
    refused = [call for call in emulator.calls("/accounts/upsert") if call.get("scripted")]
    assert [call["status"] for call in refused] == [503]  # the fault did happen, and was retried
    assert len(_answered(emulator)) == sum(len(group) for group in made)  # each delivered once


@FLASK_BACKENDS
def test_the_tracks_and_link_of_one_flask_request_reach_the_api_in_the_order_they_were_made(
    emulator: Emulator, deployment: Deployment
) -> None:
    from flask import Flask

    from journy_flask import Journy

    assert deployment.flask_queue is not None
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", JOURNY_QUEUE=deployment.flask_queue, JOURNY_LINK_DEVICES=True)
    journy = Journy(app)

    @app.post("/checkout/<user>")
    def checkout(user: str) -> str:
        journy.track("opened_checkout", user=user)
        journy.track("entered_address", user=user)
        journy.link(user_id=user)
        journy.track("paid", user=user, metadata={"amount": 100})
        journy.track("received_receipt", user=user)
        return "ok"

    made = []
    for number in range(REQUESTS):
        user = f"shopper-{number}"
        client = app.test_client()
        client.set_cookie("__journey", f"device-{number}")
        assert client.post(f"/checkout/{user}").status_code == 200
        events = [
            {"kind": "track", "payload": {"identification": {"user": {"userId": user}}, "name": name}}
            for name in ("opened_checkout", "entered_address")
        ]
        link = {"kind": "link", "payload": {"deviceId": f"device-{number}", "identification": {"userId": user}}}
        paid = {
            "kind": "track",
            "payload": {"identification": {"user": {"userId": user}}, "name": "paid", "metadata": {"amount": 100}},
        }
        last = {"kind": "track", "payload": {"identification": {"user": {"userId": user}}, "name": "received_receipt"}}
        made.append([*events, link, paid, last])
    _wait_and_check(emulator, deployment, made)


@EVERY_BACKEND
def test_what_a_django_request_queued_before_its_view_raised_is_still_sent_in_order(
    emulator: Emulator, deployment: Deployment
) -> None:
    result = _driver("requests", {"count": REQUESTS, "ending": "raises"}, deployment.env)
    assert result["raised"] == REQUESTS
    made = result["made"]
    assert [len(group) for group in made] == [4] * REQUESTS
    _wait_and_check(emulator, deployment, made)


@EVERY_BACKEND
def test_a_django_streaming_response_sends_what_its_view_queued_when_the_view_returns(
    emulator: Emulator, deployment: Deployment
) -> None:
    result = _driver("requests", {"count": REQUESTS, "ending": "streams"}, deployment.env)
    # Handed over when the view returned, before the stream was read: not held until the stream ends.
    made = result["made"]
    assert [len(group) for group in made] == [4] * REQUESTS
    # What the stream queued while it was read went on its own.
    assert [[op["payload"]["name"] for op in group] for group in result["after_stream"]] == [
        ["streamed_team"]
    ] * REQUESTS
    _wait_and_check(emulator, deployment, [*made, *result["after_stream"]])


def _flask_app(deployment: Deployment) -> tuple[Any, Any]:
    from flask import Flask

    from journy_flask import Journy

    assert deployment.flask_queue is not None
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", JOURNY_QUEUE=deployment.flask_queue)
    return app, Journy(app)


def _event(user: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "track", "payload": {"identification": {"user": {"userId": user}}, "name": name, **extra}}


@FLASK_BACKENDS
def test_what_a_flask_view_queued_before_it_raised_is_still_sent_in_order(
    emulator: Emulator, deployment: Deployment
) -> None:
    app, journy = _flask_app(deployment)

    @app.post("/fail/<user>")
    def fail(user: str) -> str:
        for step in range(4):
            journy.track(f"step_{step}", user=user)
        raise RuntimeError("the view failed after its work")

    client = app.test_client()
    app.testing = False  # a 500 page, as in production, instead of the exception in the test
    for number in range(REQUESTS):
        assert client.post(f"/fail/failing-{number}").status_code == 500
    made = [[_event(f"failing-{number}", f"step_{step}") for step in range(4)] for number in range(REQUESTS)]
    _wait_and_check(emulator, deployment, made)


@FLASK_BACKENDS
def test_a_flask_streaming_response_sends_what_its_view_queued_before_the_stream_is_read(
    emulator: Emulator, deployment: Deployment
) -> None:
    from flask import Response, stream_with_context

    app, journy = _flask_app(deployment)

    @app.get("/export/<user>")
    def export(user: str) -> Response:
        for step in range(4):
            journy.track(f"export_{step}", user=user)

        def rows() -> Iterator[str]:
            journy.track("export_streamed", user=user)
            yield "row\n"

        return Response(stream_with_context(rows()))

    client = app.test_client()
    responses = [client.get(f"/export/exporter-{number}", buffered=False) for number in range(REQUESTS)]
    made = [[_event(f"exporter-{number}", f"export_{step}") for step in range(4)] for number in range(REQUESTS)]
    bodies = []
    try:
        _wait_and_check(emulator, deployment, made)  # while every stream is still open
    finally:
        for response in reversed(responses):  # each stream holds its request context: last opened, first closed
            bodies.append(response.get_data(as_text=True))
            response.close()
    assert bodies == ["row\n"] * REQUESTS
    streamed = [[_event(f"exporter-{number}", "export_streamed")] for number in range(REQUESTS)]
    _wait_and_check(emulator, deployment, streamed)
