"""Operations on one user or account reach the API in the order they were made, over real HTTP to the emulator.

Before per-entity order, an upsert and a delete of one user could leave the queue together and race on two
connections (96 of 300 deleted users came back), and an event could overtake the upsert of its user that was still
in its coalescing window (69 of 200).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from journy_core import Journy
from journy_core.emulator import Emulator

FAST_RETRY = {"base": 0.01, "cap": 0.2, "max_attempts": 30, "max_age": 60}


@pytest.fixture
def journy_default(emulator: Emulator, api_key: str) -> Iterator[Journy]:
    """The thread backend with its defaults (a 1 s coalescing window, 4 senders), fast retries."""
    emulator.configure(rate_limit=1_000_000)
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"RETRY": FAST_RETRY}})
    yield j
    j.close(timeout=10)


def applied(emulator: Emulator) -> list[dict[str, Any]]:
    return [call for call in emulator.calls() if call["applied"]]


def first_applied(calls: list[dict[str, Any]], path: str, match: Any) -> dict[int, int]:
    """{subject: id of the first applied call to ``path``}, the subject read by ``match(body)``."""
    found: dict[int, int] = {}
    for call in calls:
        if call["path"] == path:
            found.setdefault(match(call["body"]), call["id"])
    return found


@pytest.mark.parametrize("faults", [None, ("5xx", "reset")], ids=["no-faults", "30%-5xx-and-resets"])
def test_a_deleted_user_is_never_recreated_by_the_upsert_queued_before_the_delete(
    journy_default: Journy, emulator: Emulator, faults: tuple[str, ...] | None
) -> None:
    if faults:
        emulator.configure(fault_rate=0.3, faults=faults)
    for user in range(300):
        journy_default.upsert_user(user_id=str(user), properties={"plan": "pro"})
        journy_default.delete_user(user_id=str(user))
    assert journy_default.flush(timeout=60)
    emulator.configure(fault_rate=0.0)
    assert emulator.state()["users"] == []
    assert journy_default.stats()["failed"] == 0


def test_an_event_reaches_the_api_after_the_upsert_of_its_user_and_account_made_before_it(
    journy_default: Journy, emulator: Emulator
) -> None:
    for n in range(100):
        journy_default.upsert_account(account_id=f"a{n}", properties={"plan": "pro"})
        journy_default.upsert_user(user_id=f"u{n}", properties={"plan": "pro"})
        journy_default.track("signed_up", user_id=f"u{n}", account_id=f"a{n}")
    assert journy_default.flush(timeout=60)
    calls = applied(emulator)
    accounts = first_applied(calls, "/accounts/upsert", lambda body: body["identification"]["accountId"])
    users = first_applied(calls, "/users/upsert", lambda body: body["identification"]["userId"])
    events = first_applied(calls, "/track", lambda body: body["identification"]["user"]["userId"])
    assert len(events) == 100
    early = [n for n in range(100) if events[f"u{n}"] < max(users[f"u{n}"], accounts[f"a{n}"])]
    assert early == []


def test_a_membership_reaches_the_api_after_the_upserts_of_its_account_and_users(
    journy_default: Journy, emulator: Emulator
) -> None:
    for n in range(50):
        journy_default.upsert_account(account_id=f"a{n}")
        journy_default.upsert_user(user_id=f"u{n}")
        journy_default.add_users_to_account(account_id=f"a{n}", users=[f"u{n}"])
    assert journy_default.flush(timeout=60)
    calls = applied(emulator)
    accounts = first_applied(calls, "/accounts/upsert", lambda body: body["identification"]["accountId"])
    users = first_applied(calls, "/users/upsert", lambda body: body["identification"]["userId"])
    joins = first_applied(calls, "/accounts/users/add", lambda body: body["account"]["accountId"])
    assert len(joins) == 50
    early = [n for n in range(50) if joins[f"a{n}"] < max(users[f"u{n}"], accounts[f"a{n}"])]
    assert early == []


def test_one_users_events_arrive_in_the_order_they_were_tracked_through_retries(
    emulator: Emulator, api_key: str
) -> None:
    emulator.configure(fault_rate=0.3, faults=("5xx", "reset"), rate_limit=1_000_000)
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"RETRY": FAST_RETRY, "CONCURRENCY": 4}})
    for n in range(60):
        j.track("step", user_id="ada", metadata={"n": n})
    assert j.flush(timeout=60)
    j.close(timeout=5)
    order = [call["body"]["metadata"]["n"] for call in applied(emulator) if call["path"] == "/track"]
    assert order == list(range(60))


def test_operations_on_different_users_still_go_out_in_parallel(emulator: Emulator, api_key: str) -> None:
    # 0.3 s a call: one user's chain of 8 events takes 2.4 s, while 8 users' events go four at a time.
    emulator.configure(latency=0.3, rate_limit=1_000_000)
    j = Journy(api_key, base_url=emulator.url, queue={"OPTIONS": {"CONCURRENCY": 4}})
    for user in range(8):
        j.track("signed_in", user_id=str(user))
    assert j.flush(timeout=30)
    j.close(timeout=5)
    starts = sorted(call["time"] for call in emulator.calls(path="/track"))
    # Four senders: the eighth call started while the first ones were still being answered, not 7 x 0.3 s later.
    assert starts[-1] - starts[0] < 7 * 0.3
