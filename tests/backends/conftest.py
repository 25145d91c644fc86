"""Fixtures for the distributed backends: a Redis database of our own, real worker processes, fault helpers.

Every test run takes a Redis database (8 to 15 on 127.0.0.1:6379) that no other run holds, by setting a lock key
in it, empties it before and after, and gives each worker its own queue name. Workers are subprocesses started
in their own process group, pointed at the session's emulator through JOURNY_API_URL, and always stopped in
teardown (SIGTERM, then SIGKILL of their group).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journy_core.emulator import DEFAULT_API_KEY, FAULT_KINDS, Emulator
from tests.conftest import free_port, require_service

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ROOT = Path(__file__).resolve().parents[2]
LOCK_KEY = "journy-tests:lock"
#: Where the test workers' ON_FAILURE callbacks record what they were given (see celery_app / rq_settings).
FAILURES_KEY = "journy-test:failures"
#: The worker's HTTP read timeout (s), shorter than the emulator's timeout fault, so "timeout" is exercised.
READ_TIMEOUT = 0.3
FAST_RETRY = {"base": 0.05, "cap": 0.5, "max_attempts": 30, "max_age": 300}


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/N`` for a database this run alone uses; emptied before and after."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    token = uuid.uuid4().hex
    for db in range(8, 16):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        if client.set(LOCK_KEY, token, nx=True, ex=600):
            break
        client.close()
    else:  # pragma: no cover - eight concurrent runs
        pytest.fail("every Redis database 8-15 is locked by another test run (key journy-tests:lock)")
    for key in client.scan_iter(count=1000):  # leftovers of a run that crashed
        if key != LOCK_KEY.encode():
            client.delete(key)
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        if client.get(LOCK_KEY) == token.encode():
            client.flushdb()
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete(FAILURES_KEY)
    yield client
    client.close()


def recorded_failures(client: Any) -> list[dict[str, Any]]:
    """What the workers' ON_FAILURE callbacks recorded, oldest first."""
    return [json.loads(raw) for raw in client.lrange(FAILURES_KEY, 0, -1)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds, or as
    soon as a worker started by the test has exited (nothing more will come: its log says why)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for worker in list(_RUNNING):
            if worker.process is not None and worker.process.poll() is not None:
                pytest.fail(
                    f"{worker.name} exited ({worker.process.returncode}) while waiting for {what}:\n"
                    f"{worker.log()[-3000:]}"
                )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


#: The workers started and not yet stopped: wait_until stops waiting when one of them exits.
_RUNNING: set[WorkerProcess] = set()


class WorkerProcess:
    """A worker subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_marker: str | None, timeout: float = 20.0) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        _RUNNING.add(self)
        if ready_marker is not None:
            deadline = time.monotonic() + timeout
            while ready_marker not in self.log():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{self.name} did not start:\n{self.log()[-3000:]}")
                time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """Warm shutdown (SIGTERM to the worker), then SIGKILL of its whole process group if it lingers."""
        process = self.process
        if process is None:
            return None
        _RUNNING.discard(self)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # prefork children, should any have outlived their parent
        return process.returncode


def worker_env(emulator_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator_url,
        JOURNY_TEST_REDIS_URL=redis_url,
        JOURNY_TEST_READ_TIMEOUT=str(READ_TIMEOUT),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def emulator_faults(emulator: Emulator) -> Iterator[Emulator]:
    """The emulator, with fault kinds and the timeout delay put back after the test."""
    yield emulator
    emulator.configure(fault_rate=0.0, faults=FAULT_KINDS, timeout_delay=30.0)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (in the kernel's backlog) and never answers: a hung broker."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


class RedisServer:
    """A private redis-server that a test can stop and start again on the same port (a broker restart)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)
        self.process = None


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


# -- checking the emulator's call log -----------------------------------------------------------------------


def calls_by_operation(emulator: Emulator) -> dict[str, list[dict[str, Any]]]:
    """Calls to /track keyed by event name and to /users/upsert keyed by user ID, in the order they came."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in emulator.calls():
        body = call.get("body") or {}
        if call["path"] == "/track":
            grouped[f"event:{body.get('name')}"].append(call)
        elif call["path"] == "/users/upsert":
            grouped[f"user:{body.get('identification', {}).get('userId')}"].append(call)
    return grouped


def all_delivered(emulator: Emulator, keys: list[str]) -> bool:
    grouped = calls_by_operation(emulator)
    return all(any(c["applied"] and c["fault"] is None for c in grouped.get(key, [])) for key in keys)


def assert_delivered_once_unless_the_outcome_was_unknown(emulator: Emulator, keys: list[str]) -> None:
    """Each operation was applied, by exactly one attempt that got its answer (the last one); any other
    application came from an attempt whose answer the client never saw (the emulator's ``timeout`` fault)."""
    grouped = calls_by_operation(emulator)
    for key in keys:
        attempts = grouped.get(key, [])
        summary = [(c["status"], c["fault"], c["applied"]) for c in attempts]
        known_successes = [c for c in attempts if c["applied"] and c["fault"] is None]
        assert len(known_successes) == 1, f"{key}: {summary}"
        assert attempts[-1] is known_successes[0], f"{key} was sent again after a known success: {summary}"
        unknown = [c for c in attempts if c["applied"] and c["fault"] != "timeout" and c is not known_successes[0]]
        assert not unknown, f"{key} applied twice without an unknown outcome: {summary}"


def assert_429_pauses_were_respected(emulator: Emulator, minimum: float) -> int:
    """After every attempt answered 429, the same operation's next attempt came at least ``minimum`` s later.
    Returns how many 429 answers were checked."""
    checked = 0
    for key, attempts in calls_by_operation(emulator).items():
        for before, after in itertools.pairwise(attempts):
            if before["status"] == 429:
                checked += 1
                gap = after["time"] - before["time"]
                assert gap >= minimum, f"{key}: retried {gap:.3f} s after a 429"
    return checked


def fault_kinds_seen(emulator: Emulator) -> set[str]:
    return {c["fault"] for c in emulator.calls() if c["fault"]}
