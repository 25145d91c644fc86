"""The waiting line: what merges, what keeps its order, and what never merges."""

from __future__ import annotations

from journy_core import operations as ops
from journy_core.coalesce import PendingQueue


def drain_kinds(queue: PendingQueue) -> list[tuple[str, dict]]:
    return [(e.operation.kind, dict(e.operation.payload)) for e in queue.drain()]


def test_upserts_of_one_user_merge_with_later_values_winning() -> None:
    q = PendingQueue()
    assert q.append(ops.upsert_user(user_id=1, properties={"plan": "free", "seats": 1}), 0) == 0
    assert q.append(ops.upsert_user(user_id=1, email="a@b.c", properties={"plan": "pro"}), 0.1) == 1
    [(kind, payload)] = drain_kinds(q)
    assert kind == "upsert_user"
    assert payload == {
        "identification": {"userId": "1", "email": "a@b.c"},
        "properties": {"plan": "pro", "seats": 1},
    }


def test_upserts_of_different_users_and_of_accounts_do_not_merge() -> None:
    q = PendingQueue()
    q.append(ops.upsert_user(user_id=1), 0)
    q.append(ops.upsert_user(user_id=2), 0)
    q.append(ops.upsert_account(account_id=1), 0)
    assert len(q) == 3


def test_an_upsert_after_a_delete_is_not_folded_into_the_one_before() -> None:
    q = PendingQueue()
    q.append(ops.upsert_user(user_id=1, properties={"a": 1}), 0)
    q.append(ops.delete_user(user_id=1), 0)
    q.append(ops.upsert_user(user_id=1, properties={"b": 2}), 0)
    assert drain_kinds(q) == [
        ("delete_user", {"identification": {"userId": "1"}}),
        ("upsert_user", {"identification": {"userId": "1"}, "properties": {"b": 2}}),
    ]


def test_a_delete_replaces_the_waiting_upserts_of_its_user_or_account_so_they_are_never_sent() -> None:
    q = PendingQueue()
    q.append(ops.upsert_user(user_id=1, email="ada@acme.test", properties={"plan": "pro"}), 0)
    q.append(ops.upsert_user(user_id=1, properties={"seats": 3}), 0)
    assert q.append(ops.delete_user(user_id=1), 0) == 1
    q.append(ops.upsert_account(account_id=7, domain="acme.test"), 0)
    assert q.append(ops.delete_account(domain="acme.test"), 0) == 0  # named otherwise: not the same waiting upsert
    assert q.append(ops.delete_account(account_id=7), 0) == 0  # the delete by domain now stands after it
    assert [kind for kind, _ in drain_kinds(q)] == ["delete_user", "upsert_account", "delete_account", "delete_account"]


def test_a_delete_keeps_an_upsert_that_something_else_followed_or_that_was_taken() -> None:
    q = PendingQueue()
    q.append(ops.upsert_user(user_id=1), 0)
    q.append(ops.track("signed_in", user_id=1), 0)  # it needs the user first
    q.append(ops.delete_user(user_id=1), 0)
    q.append(ops.upsert_account(account_id=7), 0)
    q.append(ops.add_users_to_account(account_id=7, users=[2]), 0)
    q.append(ops.delete_account(account_id=7), 0)
    assert [kind for kind, _ in drain_kinds(q)] == [
        "upsert_user",
        "track",
        "delete_user",
        "upsert_account",
        "add_users_to_account",
        "delete_account",
    ]
    q.append(ops.upsert_user(user_id=3), 0)
    taken = q.pop_ready(5.0)
    assert taken is not None
    q.retry(taken, due=10.0)  # sent once, to be sent again: it stays an upsert
    assert q.append(ops.delete_user(user_id=3), 0) == 0
    assert [kind for kind, _ in drain_kinds(q)] == ["upsert_user", "delete_user"]


def test_events_are_never_merged() -> None:
    q = PendingQueue()
    for _ in range(3):
        assert q.append(ops.track("signed_in", user_id=1), 0) == 0
    assert len(q) == 3


def test_identical_links_collapse_and_different_devices_do_not() -> None:
    q = PendingQueue()
    q.append(ops.link(device_id="d1", user_id=1), 0)
    assert q.append(ops.link(device_id="d1", user_id=1), 0) == 1
    assert q.append(ops.link(device_id="d2", user_id=1), 0) == 0
    assert len(q) == 2


def test_membership_adds_for_one_account_group_up_to_100_users() -> None:
    q = PendingQueue()
    for user in range(150):
        q.append(ops.add_users_to_account(account_id=7, users=[user]), 0)
    sizes = [len(p["users"]) for _, p in drain_kinds(q)]
    assert sizes == [100, 50]


def test_a_membership_operation_of_250_users_is_queued_as_three_calls() -> None:
    q = PendingQueue()
    q.append(ops.add_users_to_account(account_id=7, users=range(250)), 0)
    assert [len(p["users"]) for _, p in drain_kinds(q)] == [100, 100, 50]


def test_add_remove_add_keeps_its_order_instead_of_merging_across_the_remove() -> None:
    q = PendingQueue()
    q.append(ops.add_users_to_account(account_id=7, users=[1]), 0)
    q.append(ops.remove_users_from_account(account_id=7, users=[1]), 0)
    q.append(ops.add_users_to_account(account_id=7, users=[2]), 0)
    assert [k for k, _ in drain_kinds(q)] == [
        "add_users_to_account",
        "remove_users_from_account",
        "add_users_to_account",
    ]


def test_upserts_linger_for_the_window_while_events_of_other_users_are_ready_at_once() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_user(user_id=1), 10.0)
    q.append(ops.track("signed_in", user_id=2), 10.0)
    first = q.pop_ready(10.0)
    assert first is not None and first.operation.kind == "track"
    assert q.pop_ready(10.5) is None
    assert q.ready_at() == 11.0
    later = q.pop_ready(11.0)
    assert later is not None and later.operation.kind == "upsert_user"


def test_hurrying_ignores_the_window() -> None:
    q = PendingQueue(window=60.0)
    q.append(ops.upsert_user(user_id=1), 0.0)
    entry = q.pop_ready(0.0, hurry=True)
    assert entry is not None


def test_a_taken_entry_no_longer_absorbs_changes() -> None:
    q = PendingQueue(window=0.0)
    q.append(ops.upsert_user(user_id=1, properties={"a": 1}), 0)
    taken = q.pop_ready(0.0)
    assert taken is not None
    assert q.append(ops.upsert_user(user_id=1, properties={"a": 2}), 0) == 0
    assert taken.operation.payload["properties"] == {"a": 1}
    assert len(q) == 2  # the one in flight and the new one


def test_a_delete_never_overtakes_a_waiting_upsert_of_the_same_user() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_user(user_id=1), 0.0)
    q.append(ops.track("signed_up", user_id=1), 0.2)  # keeps the upsert (a delete replaces only the last in line)
    q.append(ops.delete_user(user_id=1), 0.5)
    assert sent_in_order(q, now=5.0) == ["upsert_user", "track", "delete_user"]


def sent_in_order(q: PendingQueue, now: float = 100.0) -> list[str]:
    """Take and finish entries one at a time, as a single sender would; their kinds in the order sent."""
    kinds = []
    while (entry := q.pop_ready(now)) is not None:
        kinds.append(entry.operation.kind)
        q.done(entry)
    return kinds


def test_an_event_waits_for_the_upsert_of_its_user_queued_before_it() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_user(user_id=1), 10.0)
    q.append(ops.track("signed_up", user_id=1), 10.0)
    assert q.pop_ready(10.5) is None
    upsert = q.pop_ready(11.0)
    assert upsert is not None and upsert.operation.kind == "upsert_user"
    assert q.pop_ready(11.0) is None  # the upsert is in flight: its user's event waits for its answer
    q.done(upsert)
    event = q.pop_ready(11.0)
    assert event is not None and event.operation.kind == "track"


def test_an_event_for_an_account_waits_for_the_accounts_upsert_by_domain_too() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_account(account_id=7, domain="Acme.com"), 0.0)
    q.append(ops.track("exported", domain="acme.com"), 0.0)
    assert sent_in_order(q) == ["upsert_account", "track"]


def test_a_delete_waits_for_the_retries_of_the_upsert_before_it() -> None:
    q = PendingQueue(window=0.0)
    q.append(ops.upsert_user(user_id=1), 0.0)
    upsert = q.pop_ready(0.0)
    assert upsert is not None
    q.append(ops.delete_user(user_id=1), 0.0)  # the upsert was sent: nothing replaces it any more
    q.retry(upsert, due=5.0)
    assert q.pop_ready(1.0) is None  # the delete may not overtake the retry
    again = q.pop_ready(5.0)
    assert again is upsert
    q.done(again)
    delete = q.pop_ready(5.0)
    assert delete is not None and delete.operation.kind == "delete_user"


def test_a_delete_by_email_is_ordered_after_an_upsert_by_id_and_email() -> None:
    q = PendingQueue(window=0.0)
    q.append(ops.upsert_user(user_id=1, email="ada@acme.com"), 0.0)
    q.append(ops.delete_user(email="ADA@acme.com"), 0.0)
    q.append(ops.upsert_user(user_id=1, email="ada@acme.com", properties={"back": True}), 0.0)
    assert sent_in_order(q) == ["upsert_user", "delete_user", "upsert_user"]


def test_a_membership_waits_for_the_upserts_of_its_account_and_users() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_account(account_id=7), 0.0)
    q.append(ops.upsert_user(user_id=1), 0.5)
    q.append(ops.add_users_to_account(account_id=7, users=[1]), 0.5)
    assert sent_in_order(q) == ["upsert_account", "upsert_user", "add_users_to_account"]


def test_a_membership_add_does_not_merge_over_the_upsert_of_a_new_user() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.add_users_to_account(account_id=7, users=[1]), 0.0)
    q.append(ops.upsert_user(user_id=2), 0.0)
    assert q.append(ops.add_users_to_account(account_id=7, users=[2]), 0.0) == 0
    assert sent_in_order(q) == ["add_users_to_account", "upsert_user", "add_users_to_account"]


def test_membership_adds_still_merge_when_nothing_else_concerns_their_users() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.add_users_to_account(account_id=7, users=[1]), 0.0)
    assert q.append(ops.add_users_to_account(account_id=7, users=[2]), 0.0) == 1
    [entry] = q.drain()
    assert len(entry.operation.payload["users"]) == 2


def test_an_upsert_does_not_merge_across_a_delete_of_the_same_account_by_domain() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_account(account_id=7, domain="acme.com"), 0.0)
    q.append(ops.delete_account(domain="acme.com"), 0.0)
    assert q.append(ops.upsert_account(account_id=7, domain="acme.com"), 0.0) == 0
    assert sent_in_order(q) == ["upsert_account", "delete_account", "upsert_account"]


def test_different_users_are_not_held_behind_each_other() -> None:
    q = PendingQueue(window=0.0)
    q.append(ops.upsert_user(user_id=1), 0.0)
    q.append(ops.track("a", user_id=1), 0.0)
    q.append(ops.track("b", user_id=2), 0.0)
    first = q.pop_ready(0.0)
    second = q.pop_ready(0.0)  # user 1's event waits, user 2's goes in parallel
    assert first is not None and second is not None
    assert second.operation.payload["name"] == "b"
    assert len(q) == 3 and q.in_flight == 2


def test_the_queue_counts_each_operation_once_whether_waiting_in_flight_or_retrying() -> None:
    q = PendingQueue(window=0.0)
    for user in range(3):
        q.append(ops.track("a", user_id=user), 0.0)
    entry = q.pop_ready(0.0)
    assert entry is not None and len(q) == 3
    q.retry(entry, due=1.0)
    assert len(q) == 3
    q.done(q.pop_ready(5.0, hurry=True) or entry)
    assert len(q) == 2
