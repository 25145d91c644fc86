"""Delivering the operations of one message in order (``_distributed.deliver_in_order``), against the emulator.

The workers of every distributed backend (Celery, RQ, Django tasks) run this; here it runs in the test process,
configured as a fresh worker would be (its key and URL from the environment).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from journy_core import operations as ops
from journy_core import worker
from journy_core.backends._distributed import deliver_in_order, describe_batch, message_operations
from journy_core.emulator import Emulator

FAST = {"max_attempts": 5, "base": 0.01, "cap": 0.02, "max_age": 60}


@pytest.fixture
def as_a_worker(emulator: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("JOURNY_API_KEY", api_key)
    monkeypatch.setenv("JOURNY_API_URL", emulator.url)
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())
    return emulator


def _message() -> list[dict[str, Any]]:
    return [
        ops.upsert_user(user_id="1").to_dict(),
        ops.upsert_account(account_id="7").to_dict(),
        ops.add_users_to_account(account_id="7", users=["1"]).to_dict(),
        ops.track("joined_team", user_id="1", account_id="7").to_dict(),
    ]


def test_a_transient_failure_stops_the_message_and_returns_that_operation_and_the_ones_after_it(
    as_a_worker: Emulator,
) -> None:
    as_a_worker.script_answer(503, path="/accounts/upsert")
    message = _message()
    progress = deliver_in_order(message, 1, None, FAST, None)
    assert progress.outcome == "retry"
    assert (progress.sent, progress.remaining, progress.attempt) == (1, message[1:], 2)
    assert progress.error is not None and progress.delay <= 0.02
    # Nothing after the failed one was sent: the next attempt carries them, in order.
    assert [call["path"] for call in as_a_worker.calls()] == ["/users/upsert", "/accounts/upsert"]

    again = deliver_in_order(progress.remaining, progress.attempt, None, FAST, None)
    assert (again.outcome, again.sent) == ("sent", 3)
    paths = [call["path"] for call in as_a_worker.calls() if call["status"] < 500]
    assert paths == ["/users/upsert", "/accounts/upsert", "/accounts/users/add", "/track"]


def test_the_attempt_count_belongs_to_the_first_operation_the_others_start_at_their_first(
    as_a_worker: Emulator,
) -> None:
    # The first operation is at its last attempt: its failure is final, and the next one still gets its own tries.
    as_a_worker.script_answer(503, path="/users/upsert")
    as_a_worker.script_answer(503, path="/accounts/upsert")
    progress = deliver_in_order(_message(), FAST["max_attempts"], None, FAST, None)
    assert [operation["kind"] for operation, _, _ in progress.failures] == ["upsert_user"]
    assert progress.failures[0][1] == FAST["max_attempts"]
    assert progress.remaining == _message()[1:]
    assert progress.attempt == 2


def test_an_operation_refused_for_good_is_reported_and_the_rest_of_the_message_goes_on(
    as_a_worker: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    as_a_worker.script_answer(422, {"message": "unprocessable"}, path="/accounts/upsert")
    with caplog.at_level("ERROR", logger="journy"):
        progress = deliver_in_order(_message(), 1, None, FAST, None)
    assert progress.outcome == "failed"
    assert progress.sent == 3
    assert [operation["kind"] for operation, _, _ in progress.failures] == ["upsert_account"]
    assert "upsert_account accountId=7 refused, not retried, after 1 attempt" in caplog.text
    assert [call["status"] for call in as_a_worker.calls()] == [201, 422, 201, 201]


def test_a_message_that_runs_out_of_time_hands_the_rest_on_without_delay(as_a_worker: Emulator) -> None:
    message = _message()
    progress = deliver_in_order(message, 3, None, FAST, None, seconds=0.0)
    # The first operation is always attempted; the rest starts at its first attempt, at once.
    assert (progress.outcome, progress.sent, progress.remaining) == ("retry", 1, message[1:])
    assert (progress.attempt, progress.delay, progress.error) == (1, 0.0, None)


def test_a_malformed_operation_in_a_message_is_dropped_and_the_rest_delivered(
    as_a_worker: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    message = [{"kind": "upsert_users", "payload": {"secret": "s3cr3t"}}, *_message()[:1]]
    with caplog.at_level("ERROR", logger="journy"):
        progress = deliver_in_order(message, 1, None, None, None)
    assert (progress.outcome, progress.sent, len(progress.failures)) == ("failed", 1, 1)
    assert "malformed queued operation (kind 'upsert_users')" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_message_names_its_operations_without_their_values() -> None:
    message = [ops.upsert_user(user_id=str(n), properties={"plan": "secret-plan"}).to_dict() for n in range(5)]
    shown = describe_batch(message)
    assert shown == ("5 operations: upsert_user userId=0; upsert_user userId=1; upsert_user userId=2; and 2 more")
    assert message_operations(None, message) == message
    assert message_operations(message[0], None) == [message[0]]
