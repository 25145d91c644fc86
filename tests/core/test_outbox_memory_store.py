"""The in-memory outbox store follows the claim rules of the database stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from journy_core import Operation
from journy_core import operations as ops
from journy_core.outbox.memory import DELIVERED, MemoryStore
from journy_core.outbox.store import DEAD, PENDING, OutboxStore

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def new_store(**options: bool) -> MemoryStore:
    return MemoryStore(clock=lambda: NOW, **options)


def claimed_ids(store: MemoryStore, owner: str = "a", *, now: datetime = NOW, limit: int = 100) -> list[int]:
    return [row.id for row in store.claim(owner, limit=limit, lease_seconds=60, now=now)]


def test_it_is_an_outbox_store() -> None:
    assert isinstance(new_store(), OutboxStore)


def test_a_claim_is_a_lease_that_expires() -> None:
    store = new_store()
    store.add([ops.track("a", user_id="1"), ops.track("b", user_id="2")])
    assert claimed_ids(store, "a") == [1, 2]
    assert claimed_ids(store, "b", now=at(30)) == []
    assert claimed_ids(store, "b", now=at(61)) == [1, 2]


def test_rows_come_back_as_operations_in_id_order_up_to_the_limit() -> None:
    store = new_store()
    store.add([ops.track(f"e{n}", user_id=str(n)) for n in range(5)])
    rows = store.claim("a", limit=3, lease_seconds=60, now=NOW)
    assert [row.operation for row in rows] == [ops.track(f"e{n}", user_id=str(n)) for n in range(3)]
    assert (rows[0].entity, rows[0].attempts, rows[0].created_at) == ("user:0", 0, NOW)


def test_a_row_waiting_for_its_retry_holds_back_the_later_rows_of_its_entity() -> None:
    store = new_store()
    store.add([ops.upsert_user(user_id="1"), ops.delete_user(user_id="1"), ops.track("x", user_id="2")])
    assert claimed_ids(store) == [1, 2, 3]
    store.retry_later([1], at=at(10), error="503")
    store.release([2])
    store.delivered([3], now=NOW)
    assert claimed_ids(store, now=at(5)) == []  # row 2 may not overtake row 1
    assert claimed_ids(store, now=at(11)) == [1, 2]
    [first, _] = store.list_rows(status=PENDING, limit=10)
    assert (first.attempts, first.last_error) == (1, "503")


def test_a_row_leased_by_another_relay_holds_back_the_later_rows_of_its_entity() -> None:
    store = new_store()
    store.add([ops.track("a", user_id="1")])
    assert claimed_ids(store, "first") == [1]
    store.add([ops.track("b", user_id="1"), ops.track("c", user_id="2")])
    assert claimed_ids(store, "second") == [3]
    store.delivered([1], now=NOW)
    assert claimed_ids(store, "second") == [2]


def test_rows_without_an_entity_keep_no_order() -> None:
    store = new_store()
    store.add([Operation("track", {"name": "a"}), Operation("track", {"name": "b"})])
    store.retry_later([1], at=at(10), error="503")
    assert claimed_ids(store) == [2]


def test_dead_rows_hold_nothing_back_and_can_be_retried() -> None:
    store = new_store()
    store.add([ops.upsert_user(user_id="1"), ops.delete_user(user_id="1")])
    claimed_ids(store)
    store.mark_dead([1], error="400 identification")
    store.release([2])
    assert claimed_ids(store) == [2]
    [dead] = store.list_rows(status=DEAD, limit=10)
    assert (dead.attempts, dead.last_error) == (1, "400 identification")
    assert store.backlog(now=at(3)).dead == 1
    assert store.retry_dead() == 1
    [revived, _] = store.list_rows(status=PENDING, limit=10)
    assert revived.attempts == 0


def test_backlog_counts_pending_and_dead_rows_and_the_oldest_age() -> None:
    store = new_store()
    assert store.backlog(now=NOW).oldest_pending_age is None
    store.add([ops.track("a", user_id="1"), ops.track("b", user_id="2")])
    store.mark_dead([2], error="400")
    backlog = store.backlog(now=at(42))
    assert (backlog.pending, backlog.dead, backlog.oldest_pending_age) == (1, 1, 42.0)


def test_delivered_rows_are_deleted_or_kept_then_purged() -> None:
    store = new_store()
    store.add([ops.track("a", user_id="1")])
    store.delivered([1], now=NOW)
    assert len(store) == 0
    keeping = new_store(keep_delivered=True)
    keeping.add([ops.track("a", user_id="1"), ops.track("b", user_id="1")])
    keeping.delivered([1], now=NOW)
    keeping.mark_dead([2], error="400")
    assert [row.id for row in keeping.list_rows(status=DELIVERED, limit=10)] == [1]
    assert keeping.purge(delivered_before=NOW) == 0
    assert keeping.purge(delivered_before=at(1)) == 1
    assert keeping.purge(dead_before=at(1)) == 1
    assert len(keeping) == 0


def test_a_users_delete_waits_for_an_earlier_membership_naming_that_user_held_elsewhere_or_retrying() -> None:
    store = new_store()
    store.add([ops.add_users_to_account(account_id="a", users=["1"]), ops.delete_user(user_id="1")])
    assert claimed_ids(store, "a", limit=1) == [1]
    assert claimed_ids(store, "b") == []  # the membership's entity is its account, yet it names user 1
    store.retry_later([1], at=at(10), error="503")
    assert claimed_ids(store, "b", now=at(5)) == []
    assert claimed_ids(store, "b", now=at(11)) == [1, 2]


def test_a_users_delete_waits_for_a_membership_naming_that_user_that_the_claim_gives_back() -> None:
    store = new_store()
    store.add([ops.upsert_account(account_id="a")])
    assert claimed_ids(store, "a") == [1]
    store.add([ops.add_users_to_account(account_id="a", users=["1"]), ops.delete_user(user_id="1")])
    assert claimed_ids(store, "b") == []  # the membership waits for the account's upsert, the delete for both
    store.delivered([1], now=NOW)
    assert claimed_ids(store, "b") == [2, 3]
