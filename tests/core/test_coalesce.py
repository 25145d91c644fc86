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
    kinds = [k for k, _ in drain_kinds(q)]
    assert kinds == ["upsert_user", "delete_user", "upsert_user"]


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


def test_upserts_linger_for_the_window_while_events_are_ready_at_once() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_user(user_id=1), 10.0)
    q.append(ops.track("signed_in", user_id=1), 10.0)
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
    assert len(q) == 1


def test_a_delete_never_overtakes_a_waiting_upsert_of_the_same_user() -> None:
    q = PendingQueue(window=1.0)
    q.append(ops.upsert_user(user_id=1), 0.0)
    q.append(ops.delete_user(user_id=1), 0.5)
    first = q.pop_ready(5.0)
    second = q.pop_ready(5.0)
    assert first is not None and second is not None
    assert (first.operation.kind, second.operation.kind) == ("upsert_user", "delete_user")
