"""The Journy entry point and the in-process backends, over real HTTP to the emulator."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from journy_core import InvalidArgumentError, Journy, Operation
from journy_core import operations as ops
from journy_core.backends import BACKENDS, load_backend
from journy_core.backends.base import Backend
from journy_core.backends.simple import MemoryBackend
from journy_core.emulator import Emulator
from journy_core.errors import ConfigurationError

FAST_RETRY = {"base": 0.01, "cap": 0.2, "max_attempts": 20, "max_age": 60}


@pytest.fixture
def journy(emulator: Emulator, api_key: str) -> Iterator[Journy]:
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"COALESCE_WINDOW": 0.05, "RETRY": FAST_RETRY}})
    yield j
    j.close(timeout=5)


def event_names(emulator: Emulator) -> list[str]:
    return [e["name"] for e in emulator.state()["events"]]


def test_queued_operations_are_all_delivered_by_flush(journy: Journy, emulator: Emulator) -> None:
    for i in range(30):
        journy.track(f"event_{i}", user_id="1")
    journy.upsert_user(user_id="1", properties={"plan": "pro"})
    assert journy.flush(timeout=10) is True
    assert sorted(event_names(emulator)) == sorted(f"event_{i}" for i in range(30))
    stats = journy.stats()
    assert stats["queued"] == 31
    assert stats["sent"] == 31
    assert stats["failed"] == stats["dropped"] == 0


def test_enqueueing_returns_before_the_call_is_made(emulator: Emulator, api_key: str) -> None:
    emulator.configure(latency=0.5)
    j = Journy(api_key, base_url=emulator.url)
    started = time.perf_counter()
    j.track("signed_in", user_id="1")
    assert time.perf_counter() - started < 0.1
    assert j.flush(timeout=5)
    assert event_names(emulator) == ["signed_in"]


def test_bad_arguments_raise_at_the_call_site_and_nothing_is_queued(journy: Journy) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        journy.track("signed_in", metadata={"x": 1})
    assert info.value.argument == "user_id"
    with pytest.raises(InvalidArgumentError):
        journy.upsert_user(user_id="1", properties={"nested": {"a": 1}})
    assert journy.stats()["queued"] == 0


def test_an_unreachable_api_never_raises_into_the_caller(api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    failures: list[tuple[Operation, BaseException]] = []
    j = Journy(
        api_key,
        base_url="http://127.0.0.1:9",
        queue={"OPTIONS": {"RETRY": {"max_attempts": 2, "base": 0.01, "cap": 0.02}}},
        on_failure=lambda op, err: failures.append((op, err)),
    )
    j.track("signed_in", user_id="1")
    assert j.flush(timeout=5)
    assert j.stats()["failed"] == 1
    assert j.stats()["retried"] == 1
    [(operation, _)] = failures
    assert operation.kind == "track"
    assert "track userId=1 name=signed_in gave up after 2 attempt(s)" in caplog.text


def test_a_full_queue_drops_counts_and_warns_once(
    emulator: Emulator, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(latency=0.3)
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"MAX_QUEUE_SIZE": 5, "CONCURRENCY": 1}})
    with caplog.at_level(logging.WARNING, logger="journy"):
        for i in range(20):
            j.track("signed_in", user_id=str(i))
    assert j.stats()["dropped"] == 15
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert "MAX_QUEUE_SIZE=5" in warnings[0].getMessage()
    j.close(timeout=5)


def test_a_4xx_answer_is_not_retried_and_reports_the_field_errors(
    journy: Journy, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.script_answer(400, {"message": "Validation failed", "errors": {"fields": {"name": "too long"}}})
    journy.track("signed_in", user_id="1")
    assert journy.flush(timeout=5)
    assert len(emulator.calls(path="/track")) == 1
    assert journy.stats()["failed"] == 1
    assert "name: too long" in caplog.text
    assert "not retried" in caplog.text


def test_the_failure_callback_raising_is_logged_not_raised(
    emulator: Emulator, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(op: Operation, err: BaseException) -> None:
        raise RuntimeError("callback bug")

    j = Journy(api_key, base_url=emulator.url, on_failure=explode)
    emulator.script_answer(422, {"message": "no"})
    j.track("signed_in", user_id="1")
    assert j.flush(timeout=5)
    assert "on_failure callback raised" in caplog.text


def test_saves_of_one_user_within_the_window_become_one_upsert(emulator: Emulator, api_key: str) -> None:
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"COALESCE_WINDOW": 1.0}})
    for i in range(100):
        j.upsert_user(user_id=str(i % 10), properties={"n": i})
    assert j.flush(timeout=10)
    upserts = emulator.calls(path="/users/upsert")
    assert len(upserts) == 10
    assert j.stats()["coalesced"] == 90
    final = {c["body"]["identification"]["userId"]: c["body"]["properties"]["n"] for c in upserts}
    assert final == {str(u): 90 + u for u in range(10)}


@pytest.mark.parametrize("backend", ["thread", "sync"])
@pytest.mark.parametrize("faults", [("5xx",), ("429",), ("timeout",), ("reset",), ("5xx", "429", "timeout", "reset")])
def test_every_operation_is_delivered_through_faults_and_only_unknown_outcomes_repeat(
    emulator: Emulator, api_key: str, faults: tuple[str, ...], backend: str
) -> None:
    emulator.configure(fault_rate=0.3, faults=faults, timeout_delay=0.6, rate_limit=100_000)
    j = Journy(
        api_key,
        base_url=emulator.url,
        timeout=(1.0, 0.3),
        queue={"BACKEND": backend, "OPTIONS": {"RETRY": FAST_RETRY}},
    )
    for i in range(40):
        j.track("signed_in", user_id="1", metadata={"n": i})
    assert j.flush(timeout=60)
    emulator.configure(fault_rate=0.0)
    applied: Counter[int] = Counter()
    timed_out: Counter[int] = Counter()
    for call in emulator.calls(path="/track"):
        n = call["body"]["metadata"]["n"]
        applied[n] += call["applied"]
        timed_out[n] += call["fault"] == "timeout"
    assert sorted(applied) == list(range(40))
    for n, count in applied.items():
        assert count >= 1
        assert count == 1 or timed_out[n] >= count - 1, f"operation {n} applied {count} times"
    assert j.stats()["failed"] == 0


def test_rate_limit_answers_pause_sending_and_everything_arrives(api_key: str) -> None:
    with Emulator(rate_limit=10, rate_window=1.0) as emu:
        options = {"RETRY": FAST_RETRY, "RATE_WINDOW": 1.0}
        j = Journy(api_key, base_url=emu.url, queue={"OPTIONS": options})
        for i in range(30):
            j.track("signed_in", user_id="1", metadata={"n": i})
        assert j.flush(timeout=30)
        statuses = Counter(c["status"] for c in emu.calls(path="/track"))
    assert statuses[201] == 30
    # The pacer learns the limit from the first answer's headers; a few 429s at the start are tolerable.
    assert statuses[429] <= 5


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_operations_queued_in_a_forked_child_are_delivered(emulator: Emulator, api_key: str) -> None:
    j = Journy(api_key, base_url=emulator.url)
    j.track("before_fork", user_id="1")
    assert j.flush(timeout=5)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            j.track("in_child", user_id="2")
            ok = j.flush(timeout=10) and j.stats()["sent"] == 1
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    j.track("in_parent", user_id="3")
    assert j.flush(timeout=5)
    assert sorted(event_names(emulator)) == ["before_fork", "in_child", "in_parent"]


def run_script(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_a_process_that_exits_without_flushing_still_delivers_its_queue(emulator: Emulator, api_key: str) -> None:
    emulator.configure(rate_limit=100_000)
    result = run_script(
        f"""
        import logging; logging.basicConfig(level=logging.INFO)
        from journy_core import Journy
        j = Journy({api_key!r}, base_url={emulator.url!r})
        for i in range(300):
            j.track("exiting", user_id=str(i))
        """
    )
    assert result.returncode == 0, result.stderr
    assert len(event_names(emulator)) == 300
    # Most go at exit; on a loaded machine the sender may deliver a few while the loop still runs.
    delivered_at_exit = re.search(r"delivered (\d+) operation\(s\) at exit", result.stderr)
    assert delivered_at_exit is not None, result.stderr
    assert 0 < int(delivered_at_exit.group(1)) <= 300
    assert "not delivered" not in result.stderr


def test_an_exit_flush_refused_by_journy_does_not_claim_it_delivered(emulator: Emulator) -> None:
    result = run_script(
        f"""
        import logging; logging.basicConfig(level=logging.INFO)
        from journy_core import Journy
        j = Journy("sk_a_key_the_emulator_does_not_know", base_url={emulator.url!r})
        for i in range(5):
            j.track("exiting", user_id=str(i))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "at exit" in result.stderr
    assert not re.search(r"delivered \d+ operation\(s\) at exit", result.stderr), result.stderr
    assert re.search(r"operation\(s\) settled at exit in [\d.]+ s, but \d+ call\(s\) failed", result.stderr)


def test_an_exit_flush_that_runs_out_of_time_counts_exactly_what_it_did_not_deliver(
    emulator: Emulator, api_key: str
) -> None:
    emulator.configure(latency=0.2)
    result = run_script(
        f"""
        from journy_core import Journy
        options = {{"EXIT_TIMEOUT": 0.5, "CONCURRENCY": 1}}
        j = Journy({api_key!r}, base_url={emulator.url!r}, queue={{"OPTIONS": options}})
        for i in range(50):
            j.track("exiting", user_id=str(i))
        """
    )
    assert result.returncode == 0
    delivered = len(event_names(emulator))
    assert 0 < delivered < 50
    found = re.search(
        r"(\d+) operation\(s\) not delivered at exit within EXIT_TIMEOUT=0.5 s; (\d+) more were in flight",
        result.stderr,
    )
    assert found, result.stderr
    not_delivered, in_flight = map(int, found.groups())
    # journy.io answers, so the calls in flight got their answer before the count: it is exact.
    assert (not_delivered, in_flight) == (50 - delivered, 0)


# -- configuration -------------------------------------------------------------------------------------------


def test_an_unknown_backend_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="neither a known backend"):
        Journy("k", queue={"BACKEND": "carrier_pigeon"})


def test_a_misspelt_backend_or_option_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigurationError, match=r"QUEUE\['BACKEND'\]='outbx': did you mean 'outbox'\?"):
        Journy("k", queue={"BACKEND": "outbx"})
    with pytest.raises(ConfigurationError, match=r"Did you mean 'CONCURRENCY' for 'CONCURENCY'\?"):
        Journy("k", queue={"OPTIONS": {"CONCURENCY": 2}})
    with pytest.raises(ConfigurationError, match=r"QUEUE must be a dict"):
        Journy("k", queue="thread")  # type: ignore[arg-type]


def test_a_missing_engine_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "celery", ("journy_core.backends.celery.CeleryBackend", "celery", "no_such_engine"))
    with pytest.raises(ConfigurationError, match=r"pip install 'journy\[celery\]'"):
        Journy("k", queue={"BACKEND": "celery"})


def test_unknown_options_and_bad_values_name_the_option() -> None:
    with pytest.raises(ConfigurationError, match="Unknown OPTIONS \\['CONCURENCY'\\]"):
        Journy("k", queue={"OPTIONS": {"CONCURENCY": 2}})
    with pytest.raises(ConfigurationError, match="'CONCURRENCY' of the 'thread' backend must be a whole number >= 1"):
        Journy("k", queue={"OPTIONS": {"CONCURRENCY": 0}})
    with pytest.raises(ConfigurationError, match="RETRY keys"):
        Journy("k", queue={"OPTIONS": {"RETRY": {"tries": 3}}})


class RecordingBackend(Backend):
    name = "recording"
    seen: list[Any] = []

    def enqueue(self, operation: Operation) -> None:
        self.seen.append(operation.to_dict())


def test_a_dotted_path_selects_a_users_own_backend_class() -> None:
    j = Journy(queue={"BACKEND": f"{__name__}.RecordingBackend"})
    j.link(device_id="d", user_id=1)
    assert RecordingBackend.seen[-1] == {
        "kind": "link",
        "payload": {"deviceId": "d", "identification": {"userId": "1"}},
    }


def test_a_dotted_path_that_is_not_a_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a subclass"):
        load_backend({"BACKEND": "os.path.join"}, client_factory=None)


def test_the_thread_backend_needs_an_api_key() -> None:
    with pytest.raises(InvalidArgumentError, match="api_key: is required for the 'thread' backend"):
        Journy()


def test_the_memory_backend_records_what_would_be_sent() -> None:
    j = Journy(queue={"BACKEND": "memory"})
    j.track("signed_in", user_id=1)
    backend = j.backend
    assert isinstance(backend, MemoryBackend)
    assert [op.kind for op in backend.operations] == ["track"]


def test_the_disabled_backend_sends_nothing_but_still_checks_arguments() -> None:
    j = Journy(queue={"BACKEND": "disabled"})
    j.track("signed_in", user_id=1)
    with pytest.raises(InvalidArgumentError):
        j.track("signed_in")
    assert j.stats()["queued"] == 0


def test_the_sync_backend_delivers_before_returning(emulator: Emulator, api_key: str) -> None:
    j = Journy(api_key, base_url=emulator.url, queue={"BACKEND": "sync"})
    j.track("signed_in", user_id=1)
    assert event_names(emulator) == ["signed_in"]
    assert j.stats()["sent"] == 1


def test_operations_round_trip_through_plain_json() -> None:
    op = ops.track("signed_in", user_id=1, metadata={"n": 1})
    assert Operation.from_dict(json.loads(json.dumps(op.to_dict()))) == op


def test_the_api_key_is_not_in_the_repr_of_journy() -> None:
    j = Journy("sk-secret-123", queue={"BACKEND": "memory"})
    assert "sk-secret-123" not in repr(j)


def test_worker_clients_are_closed_at_worker_shutdown(emulator: Emulator, api_key: str) -> None:
    from journy_core import worker

    worker.configure_worker(api_key=api_key, base_url=emulator.url)
    try:
        assert worker.is_configured()
        delivery = worker.deliver(ops.track("signed_in", user_id="1"))
        assert delivery.outcome == "sent"
        client = worker.worker_client()
        pools = client._session.get_adapter(emulator.url).poolmanager.pools
        assert len(pools.keys()) == 1
        worker.close_clients()
        assert len(pools.keys()) == 0  # the session's pools are cleared on close
        assert worker.worker_client() is not client  # a later delivery builds a fresh one
    finally:
        worker.configure_worker(None)
        worker.close_clients()
