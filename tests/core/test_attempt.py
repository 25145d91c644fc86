"""One delivery attempt, shared by every sending path: outcome, counting, and what the pacer learns."""

from __future__ import annotations

import socket

import pytest

from journy_core import Client
from journy_core import operations as ops
from journy_core.attempt import attempt
from journy_core.emulator import Emulator
from journy_core.pacing import Pacer
from journy_core.retry import RetryPolicy
from journy_core.stats import Stats

POLICY = RetryPolicy(max_attempts=3, base=0.01, cap=0.05, max_age=60)


@pytest.fixture
def client(emulator: Emulator, api_key: str) -> Client:
    return Client(api_key, base_url=emulator.url)


def test_a_success_is_counted_and_its_rate_limit_figures_reach_the_pacer(client: Client, emulator: Emulator) -> None:
    emulator.configure(rate_limit=600)
    pacer, stats = Pacer(), Stats()
    outcome = attempt(
        client.send, ops.track("x", user_id="1"), pacer=pacer, retry=POLICY, attempts=1, age=0, stats=stats
    )
    assert (outcome.outcome, outcome.answered) == ("sent", True)
    assert stats["sent"] == 1
    assert pacer.limit == 600  # the server's X-RateLimit-Limit replaced the default 1800


def test_a_refusal_fails_at_once_naming_the_fields_the_server_refused(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(400, {"message": "Bad request", "errors": {"fields": {"name": "is required"}}})
    pacer = Pacer()
    outcome = attempt(client.send, ops.track("x", user_id="1"), pacer=pacer, retry=POLICY, attempts=1, age=0)
    assert (outcome.outcome, outcome.answered) == ("failed", True)
    assert outcome.error is not None and "name" in str(outcome.error)


def test_a_5xx_is_retried_until_the_policy_gives_up_and_counts_as_no_answer(client: Client, emulator: Emulator) -> None:
    stats = Stats()
    for attempts, expected in ((1, "retry"), (2, "retry"), (3, "failed")):
        emulator.script_answer(503, {"message": "down"})
        outcome = attempt(
            client.send, ops.track("x", user_id="1"), pacer=Pacer(), retry=POLICY, attempts=attempts, age=0, stats=stats
        )
        assert (outcome.outcome, outcome.answered) == (expected, False)
        assert 0 <= outcome.delay <= POLICY.cap
    assert stats["retried"] == 2


def test_a_429_waits_at_least_the_pause_the_pacer_calls_for(client: Client, emulator: Emulator) -> None:
    emulator.script_answer(429, {"message": "Too many requests"})
    pacer = Pacer()
    outcome = attempt(client.send, ops.track("x", user_id="1"), pacer=pacer, retry=POLICY, attempts=1, age=0)
    assert (outcome.outcome, outcome.answered) == ("retry", True)  # journy.io answered: it is not down
    assert outcome.delay > 0


def test_a_refused_connection_is_a_transient_failure_without_an_answer(api_key: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    outcome = attempt(
        Client(api_key, base_url=url).send, ops.track("x", user_id="1"), pacer=Pacer(), retry=POLICY, attempts=1, age=0
    )
    assert (outcome.outcome, outcome.answered) == ("retry", False)
