"""Workers whose child processes end without ``atexit``: a Celery prefork child recycled by ``--max-tasks-per-child``
or stopped by a warm shutdown, and RQ's forking work-horse, deliver what their jobs queued on the ``thread``
backend; an RQ horse without journy's worker class says so at once.

Real workers (subprocesses), a real Redis, real HTTP to the emulator; the jobs are in ``child_hooks_apps``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from journy_core.emulator import Emulator
from tests.backends.conftest import WorkerProcess, unique, wait_until, worker_env

celery = pytest.importorskip("celery")
rq = pytest.importorskip("rq")

from tests.backends.child_hooks_apps import TRACK_TASK, UPSERT_TASK  # noqa: E402 - after the importorskip

APPS = "tests.backends.child_hooks_apps"
RQ_WARNING = "ends with os._exit, which skips the exit flush"


def events_named(emulator: Emulator, name: str) -> list[str]:
    return [e["user"]["userId"] for e in emulator.state()["events"] if e["name"] == name]


def users_upserted(emulator: Emulator, prefix: str) -> list[str]:
    return [u["userId"] for u in emulator.state()["users"] if u["userId"].startswith(f"{prefix}-")]


def all_users(count: int) -> list[str]:
    return [str(n) for n in range(count)]


# -- Celery prefork -------------------------------------------------------------------------------------------


def celery_worker(emulator: Emulator, redis_url: str, queue: str, log_dir: Path) -> WorkerProcess:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        APPS,
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        "--max-tasks-per-child=10",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
    ]
    return WorkerProcess(f"celery {queue}", command, worker_env(emulator.url, redis_url), log_dir / f"{queue}.log")


def test_celery_prefork_children_deliver_what_their_tasks_queued_when_recycled_and_at_warm_shutdown(
    emulator: Emulator, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(rate_limit=100_000)
    queue = unique("journy-child-celery")
    producer = celery.Celery("journy_child_hooks_producer", broker=redis_url)
    worker = celery_worker(emulator, redis_url, queue, tmp_path).start(ready_marker="ready.")
    try:
        # 50 tasks of 10 events, one child at a time, each child recycled after 10 tasks: 5 children end.
        for start in range(0, 500, 10):
            producer.send_task(TRACK_TASK, args=["recycled", start, 10], queue=queue)
        wait_until(lambda: len(events_named(emulator, "recycled")) >= 500, 25, "500 events from recycled children")
        assert sorted(events_named(emulator, "recycled"), key=int) == all_users(500)
        children = set(re.findall(r"ForkPoolWorker-(\d+)\]", worker.log()))
        assert len(children) >= 5, worker.log()[-3000:]

        # 5 tasks upsert 50 users to a child that is not recycled: the upserts wait in its queue (a coalescing
        # window of a minute) until the warm shutdown ends the child.
        for start in range(0, 50, 10):
            producer.send_task(UPSERT_TASK, args=["warm", start, 10], queue=queue)
        wait_until(lambda: worker.log().count("succeeded") >= 55, 20, "the 55 tasks to run")
        assert users_upserted(emulator, "warm") == []
    finally:
        worker.stop(timeout=20)
        producer.close()
    assert sorted(users_upserted(emulator, "warm")) == sorted(f"warm-{n}" for n in range(50)), worker.log()[-3000:]


# -- RQ's forking worker --------------------------------------------------------------------------------------


def run_rq_burst(
    emulator: Emulator, redis_url: str, tmp_path: Path, name: str, jobs: int, worker_class: str | None
) -> str:
    """Queue ``jobs`` jobs of 20 events called ``name``, run ``rq worker --burst`` until they are done; its log."""
    import redis

    queue_name = unique("journy-child-rq")
    connection = redis.Redis.from_url(redis_url)
    try:
        queue = rq.Queue(queue_name, connection=connection)
        for start in range(0, jobs * 20, 20):
            queue.enqueue(f"{APPS}.track_batch", name, start, 20)
    finally:
        connection.close()
    command = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url, "--name", queue_name]
    if worker_class is not None:
        command += ["--worker-class", worker_class]
    result = subprocess.run(
        [*command, queue_name],
        env=worker_env(emulator.url, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    return log


def test_an_rq_work_horse_of_journys_worker_class_delivers_what_its_job_queued(
    emulator: Emulator, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(rate_limit=100_000)
    log = run_rq_burst(emulator, redis_url, tmp_path, "in_horse", 10, "journy_core.rq_worker.Worker")
    assert sorted(events_named(emulator, "in_horse"), key=int) == all_users(200), log[-3000:]
    assert RQ_WARNING not in log


def test_an_rq_work_horse_without_journys_worker_class_says_at_once_what_to_use(
    emulator: Emulator, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(rate_limit=100_000)
    log = run_rq_burst(emulator, redis_url, tmp_path, "unhooked", 2, None)
    warnings = [line for line in log.splitlines() if RQ_WARNING in line]
    assert len(warnings) == 2, log[-3000:]  # one per horse, i.e. per job
    assert "--worker-class journy_core.rq_worker.Worker" in warnings[0]
    assert "'sync'" in warnings[0]


def test_an_rq_simple_worker_needs_no_hook_and_logs_no_warning(
    emulator: Emulator, redis_url: str, tmp_path: Path
) -> None:
    emulator.configure(rate_limit=100_000)
    log = run_rq_burst(emulator, redis_url, tmp_path, "in_simple_worker", 2, "rq.worker.SimpleWorker")
    assert RQ_WARNING not in log
    assert sorted(events_named(emulator, "in_simple_worker"), key=int) == all_users(40), log[-3000:]
