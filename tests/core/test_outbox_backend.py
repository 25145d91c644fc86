"""The ``outbox`` queue backend: rows written on enqueue, delivered by the in-process relay, over real HTTP."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from journy_core import Journy, Operation
from journy_core import operations as ops
from journy_core.backends import BACKENDS, load_backend
from journy_core.emulator import Emulator
from journy_core.errors import ConfigurationError
from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.memory import MemoryStore
from journy_core.outbox.relay import DEFAULT_RETRY

FAST_RETRY = {"base": 0.01, "cap": 0.05}


def outbox_journy(emulator: Emulator, api_key: str, store: Any, **options: Any) -> Journy:
    return Journy(
        api_key,
        base_url=emulator.url,
        queue={"BACKEND": "outbox", "OPTIONS": {"STORE": store, "RETRY": FAST_RETRY, **options}},
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def journy(emulator: Emulator, api_key: str, store: MemoryStore) -> Iterator[Journy]:
    # A long poll: delivery within the test's wait proves the relay was woken.
    j = outbox_journy(emulator, api_key, store, POLL_SECONDS=30)
    yield j
    j.close(timeout=5)


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def event_names(emulator: Emulator) -> list[str]:
    return [event["name"] for event in emulator.state()["events"]]


def test_outbox_is_a_known_backend_without_extra() -> None:
    assert BACKENDS["outbox"] == ("journy_core.outbox.backend.OutboxBackend", None, None)
    backend = load_backend({"BACKEND": "outbox", "OPTIONS": {"STORE": MemoryStore()}}, client_factory=None)
    assert isinstance(backend, OutboxBackend)


def test_enqueued_operations_are_rows_delivered_by_the_woken_in_process_relay(
    journy: Journy, emulator: Emulator, store: MemoryStore
) -> None:
    journy.track("signed_in", user_id="1")
    journy.enqueue_many([ops.upsert_user(user_id="1", properties={"plan": "pro"}), ops.delete_user(user_id="2")])
    assert wait_for(lambda: len(store) == 0)
    assert event_names(emulator) == ["signed_in"]
    assert emulator.state()["users"][0]["properties"]["plan"] == "pro"
    assert journy.stats()["queued"] == 3
    assert wait_for(lambda: journy.stats()["sent"] == 3)
    backlog = journy.backend.backlog()  # type: ignore[attr-defined]
    assert (backlog.pending, backlog.dead) == (0, 0)


def test_wake_delivers_rows_written_by_the_adapter_itself(
    journy: Journy, emulator: Emulator, store: MemoryStore
) -> None:
    journy.track("first", user_id="1")  # starts the relay
    assert wait_for(lambda: len(store) == 0)
    store.add([ops.track("committed", user_id="1")])  # as an adapter does in the app's transaction
    journy.backend.wake()  # type: ignore[attr-defined]  # as the adapter does after the commit
    assert wait_for(lambda: event_names(emulator) == ["first", "committed"])


def test_without_the_in_process_relay_rows_wait_for_an_external_one(
    emulator: Emulator, api_key: str, store: MemoryStore
) -> None:
    j = outbox_journy(emulator, api_key, store, RELAY_IN_PROCESS=False)
    j.track("signed_in", user_id="1")
    time.sleep(0.2)
    assert j.backend.relay is None  # type: ignore[attr-defined]
    assert store.backlog(now=datetime.now(timezone.utc)).pending == 1
    assert emulator.calls() == []


def test_flush_waits_for_nothing_and_close_stops_the_relay_leaving_rows_for_the_next(
    emulator: Emulator, api_key: str, store: MemoryStore
) -> None:
    emulator.configure(latency=0.5)
    j = outbox_journy(emulator, api_key, store, CONCURRENCY=1)
    j.track("in_flight", user_id="1")
    time.sleep(0.1)
    for n in range(5):
        j.track(f"later_{n}", user_id="1")
    started = time.monotonic()
    assert j.flush(timeout=10) is True
    j.close()
    assert time.monotonic() - started < 0.2
    thread = j.backend._thread  # type: ignore[attr-defined]
    thread.join(5)
    assert not thread.is_alive()
    assert event_names(emulator) == ["in_flight"]  # the call in flight finished
    assert store.backlog(now=datetime.now(timezone.utc)).pending == 5
    j.track("after_close", user_id="2")  # still written: an external relay delivers it
    assert store.backlog(now=datetime.now(timezone.utc)).pending == 6


class BrokenStore(MemoryStore):
    def add(self, operations: Sequence[Operation]) -> None:
        raise RuntimeError("the database is away")


def test_a_failed_write_never_raises_into_the_app(
    emulator: Emulator, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    j = outbox_journy(emulator, api_key, BrokenStore())
    with caplog.at_level(logging.ERROR, logger="journy"):
        j.track("signed_in", user_id="1")
    assert j.stats()["dropped"] == 1
    assert "could not write 1 operation(s) to the outbox" in caplog.text


def test_a_missing_store_says_who_fills_it_in() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_backend({"BACKEND": "outbox"}, client_factory=None)
    message = str(info.value)
    assert "OPTIONS['STORE']" in message
    assert "Django" in message
    assert "Flask" in message
    assert "SQLAlchemyStore(engine)" in message


@pytest.mark.parametrize(
    "value", ["journy_core.outbox.memory.MemoryStore", MemoryStore, lambda: MemoryStore(), MemoryStore()]
)
def test_the_store_may_be_an_instance_a_callable_or_a_dotted_path(value: Any) -> None:
    backend = OutboxBackend(client_factory=None, options={"STORE": value})
    assert isinstance(backend.store, MemoryStore)
    assert backend.store is backend.store


@pytest.mark.parametrize(
    "value", ["journy_core.outbox.memory.nothing", 42, lambda: 42, "journy_core.operations.Operation"]
)
def test_a_store_option_that_gives_no_store_says_so(value: Any) -> None:
    backend = OutboxBackend(client_factory=None, options={"STORE": value})
    with pytest.raises(ConfigurationError, match="STORE"):
        backend.store  # noqa: B018


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="RELAY_IN_PROCESS"):
        OutboxBackend(client_factory=None, options={"STORE": MemoryStore(), "RELAY_IN_PROCESS": "yes"})
    with pytest.raises(ConfigurationError, match="BATCH_SIZE"):
        OutboxBackend(client_factory=None, options={"STORE": MemoryStore(), "BATCH_SIZE": 0})
    with pytest.raises(ConfigurationError, match="COALESCE_WINDOW"):
        OutboxBackend(client_factory=None, options={"STORE": MemoryStore(), "COALESCE_WINDOW": 1})


def test_retry_defaults_to_the_outbox_policy_and_a_partial_retry_keeps_its_other_values() -> None:
    assert OutboxBackend(client_factory=None, options={"STORE": MemoryStore()}).retry == DEFAULT_RETRY
    backend = OutboxBackend(client_factory=None, options={"STORE": MemoryStore(), "RETRY": {"max_attempts": 3}})
    assert backend.retry.max_attempts == 3
    assert backend.retry.cap == DEFAULT_RETRY.cap
    assert backend.retry.max_age == DEFAULT_RETRY.max_age


def test_keep_delivered_days_keeps_delivered_rows_in_the_store(
    emulator: Emulator, api_key: str, store: MemoryStore
) -> None:
    j = outbox_journy(emulator, api_key, store, KEEP_DELIVERED_DAYS=2)
    j.track("signed_in", user_id="1")
    assert wait_for(lambda: len(store.list_rows(status="delivered", limit=10)) == 1)
    assert store.keep_delivered is True
    j.close(timeout=5)


def test_without_an_api_key_rows_wait_and_a_warning_says_why(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    j = Journy(queue={"BACKEND": "outbox", "OPTIONS": {"STORE": store}})
    with caplog.at_level(logging.WARNING, logger="journy"):
        j.track("a", user_id="1")
        j.track("b", user_id="1")
    assert caplog.text.count("cannot run in this process without an API key") == 1
    assert len(store) == 2


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from journy_core import Journy
    from journy_core.outbox.memory import MemoryStore

    store = MemoryStore()
    journy = Journy("journy-emulator-key", base_url=sys.argv[1],
                    queue={"BACKEND": "outbox", "OPTIONS": {"STORE": store, "POLL_SECONDS": 30}})

    def drained():
        deadline = time.monotonic() + 10
        while len(store) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not len(store)

    journy.track("in_parent", user_id="1")
    assert drained()
    parent_relay = journy.backend.relay
    pid = os.fork()
    if pid == 0:
        # The parent's relay thread does not exist here: the child starts its own.
        assert journy.backend.relay is None
        journy.track("in_child", user_id="2")
        os._exit(0 if drained() and journy.backend.relay is not parent_relay else 1)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_starts_its_own_relay(emulator: Emulator) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, emulator.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(event_names(emulator)) == ["in_child", "in_parent"]


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from journy_core import Journy
    from journy_core.outbox.memory import MemoryStore

    journy = Journy("journy-emulator-key", base_url=sys.argv[1],
                    queue={"BACKEND": "outbox", "OPTIONS": {"STORE": MemoryStore()}})
    for n in range(40):
        journy.track(f"event_{n}", user_id=str(n))
    time.sleep(0.3)  # the relay is in the middle of its batch
    print(time.monotonic(), flush=True)
    """
)


def test_a_process_ends_at_once_in_the_middle_of_a_batch(emulator: Emulator) -> None:
    emulator.configure(latency=0.5)
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, emulator.url], capture_output=True, text=True, timeout=60, check=False
    )
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert ended - float(result.stdout) < 1.5  # not the 5 s the batch would take
    assert len(emulator.calls()) < 20
