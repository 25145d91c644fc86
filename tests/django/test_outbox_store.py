"""The Django ORM outbox store: claim, lease, per-entity order, retry, dead rows, purge and backlog, on SQLite,
PostgreSQL and MariaDB (each when it runs), and two relays claiming at once never holding one row."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from django.conf import settings
from django.db import connections, transaction

from journy_core import operations as ops
from journy_core.outbox.store import DEAD, PENDING, OutboxStore
from journy_django.models import OutboxRow as Row
from journy_django.outbox import DjangoStore
from tests.conftest import REQUIRE_SERVICES, require_service

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgresql", marks=pytest.mark.services),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.services),
]
_PORTS = {"postgres": ("PostgreSQL", 5432), "mariadb": ("MariaDB", 3306)}

pytestmark = pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES))


@pytest.fixture(params=DATABASES)
def alias(request: pytest.FixtureRequest) -> str:
    name = request.param
    if name in _PORTS:
        require_service(_PORTS[name][0], "127.0.0.1", _PORTS[name][1])
        if name not in settings.DATABASES:
            reason = f"no {name} alias in the test settings (no MySQL driver, or it came up later)"
            pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it") if REQUIRE_SERVICES else pytest.skip(reason)
    return name


@pytest.fixture
def store(alias: str) -> DjangoStore:
    return DjangoStore(using=alias)


def now() -> datetime:
    return datetime.now(timezone.utc)


def user(n: int, name: str = "x") -> ops.Operation:
    return ops.upsert_user(user_id=n, properties={"name": name})


def claim(store: DjangoStore, owner: str = "relay-1", limit: int = 100, at: datetime | None = None, lease=30.0):
    return store.claim(owner, limit=limit, lease_seconds=lease, now=at or now())


def test_the_store_implements_the_outbox_interface(store):
    assert isinstance(store, OutboxStore)


def test_claim_leases_due_rows_in_id_order_with_their_operation_and_utc_times(store):
    store.add([user(1, "ada"), ops.track("signed_up", user_id=2), user(3)])
    rows = claim(store)
    assert [row.operation for row in rows] == [user(1, "ada"), ops.track("signed_up", user_id=2), user(3)]
    assert [row.entity for row in rows] == ["user:1", "user:2", "user:3"]
    assert [row.id for row in rows] == sorted(row.id for row in rows)
    assert all(row.attempts == 0 for row in rows)
    assert all(row.created_at.utcoffset() == timedelta(0) for row in rows)
    assert abs((rows[0].created_at - now()).total_seconds()) < 60


def test_a_leased_row_is_not_claimed_again_until_its_lease_expires(store):
    store.add([user(1)])
    start = now()
    assert len(claim(store, "relay-1", at=start, lease=30)) == 1
    assert claim(store, "relay-2", at=start + timedelta(seconds=29)) == []
    again = claim(store, "relay-2", at=start + timedelta(seconds=31))
    assert [row.operation for row in again] == [user(1)]


def test_claim_takes_at_most_limit_rows_and_the_next_claim_the_rest(store):
    store.add([user(n) for n in range(5)])
    first = claim(store, limit=2)
    second = claim(store, limit=10)
    assert len(first) == 2 and len(second) == 3
    assert max(row.id for row in first) < min(row.id for row in second)


def test_a_later_row_of_an_entity_held_by_another_relay_waits(store):
    store.add([user(1, "a"), user(2), user(1, "b")])
    held = claim(store, "relay-1", limit=1)
    assert [row.operation for row in held] == [user(1, "a")]
    other = claim(store, "relay-2")
    assert [row.operation for row in other] == [user(2)]  # user 1's second row waits for the first
    store.delivered([held[0].id], now=now())
    assert [row.operation for row in claim(store, "relay-2")] == [user(1, "b")]


def test_a_row_waiting_for_its_retry_blocks_the_later_rows_of_its_entity(store):
    store.add([user(1, "a"), user(1, "b"), user(2)])
    first = claim(store, limit=1)
    retry_at = now() + timedelta(minutes=5)
    store.retry_later([first[0].id], at=retry_at, error="HTTP 503")
    other = claim(store)
    assert [row.operation for row in other] == [user(2)]
    store.delivered([other[0].id], now=now())
    later = claim(store, at=retry_at + timedelta(seconds=1))
    assert [(row.operation, row.attempts) for row in later] == [(user(1, "a"), 1), (user(1, "b"), 0)]


def test_a_users_delete_waits_for_an_earlier_membership_row_naming_the_user(store):
    store.add([ops.add_users_to_account(account_id=1, users=[{"user_id": 5}]), ops.delete_user(user_id=5), user(5)])
    store.add([user(6)])
    membership = claim(store, "relay-1", limit=1)
    assert [row.operation.kind for row in membership] == ["add_users_to_account"]
    # Sent after the delete, the add would create user 5 again: the delete (and user 5's later rows) wait.
    assert [row.operation for row in claim(store, "relay-2")] == [user(6)]
    store.delivered([membership[0].id], now=now())
    assert [row.operation.kind for row in claim(store, "relay-2")] == ["delete_user", "upsert_user"]


def test_a_users_delete_waits_for_a_membership_row_the_claim_gives_back(store):
    store.add([ops.upsert_account(account_id=1), ops.add_users_to_account(account_id=1, users=[{"user_id": 5}])])
    store.add([ops.delete_user(user_id=5)])
    first = claim(store, "relay-1", limit=1)
    assert [row.operation.kind for row in first] == ["upsert_account"]
    assert claim(store, "relay-2") == []  # the membership waits for its account, the delete for the membership


def test_a_users_delete_waits_for_an_earlier_membership_row_naming_the_user_waiting_for_its_retry(store):
    store.add([ops.remove_users_from_account(account_id=1, users=[{"user_id": 5}]), ops.delete_user(user_id=5)])
    membership = claim(store, limit=1)
    retry_at = now() + timedelta(minutes=5)
    store.retry_later([membership[0].id], at=retry_at, error="HTTP 503")
    assert claim(store) == []
    later = claim(store, at=retry_at + timedelta(seconds=1))
    assert [row.operation.kind for row in later] == ["remove_users_from_account", "delete_user"]


def test_rows_without_an_entity_keep_no_order(store, alias):
    store.add([user(1)])
    Row.objects.using(alias).create(
        entity="",
        kind="upsert_user",
        operation='{"kind":"upsert_user","payload":{}}',
        created_at=now(),
        next_attempt_at=now(),
    )
    store.retry_later([claim(store, limit=1)[0].id], at=now() + timedelta(hours=1), error="later")
    assert [row.entity for row in claim(store)] == [""]


def test_a_dead_row_is_kept_listed_retried_and_purged(store):
    store.add([user(1), user(2)])
    rows = claim(store)
    store.mark_dead([rows[0].id], error='HTTP 400 {"errors": {"email": "invalid"}}')
    store.delivered([rows[1].id], now=now())
    assert claim(store, at=now() + timedelta(days=1)) == []
    dead = store.list_rows(status=DEAD, limit=10)
    assert [(row.id, row.kind, row.status, row.attempts) for row in dead] == [(rows[0].id, "upsert_user", DEAD, 1)]
    assert "invalid" in dead[0].last_error
    assert store.backlog(now=now()).dead == 1
    assert store.retry_dead([rows[0].id]) == 1
    assert store.list_rows(status=PENDING, limit=10)[0].attempts == 0
    again = claim(store)
    assert [row.operation for row in again] == [user(1)]
    store.mark_dead([again[0].id], error="HTTP 400")
    assert store.purge(dead_before=now() - timedelta(days=1)) == 0
    assert store.purge(dead_before=now() + timedelta(seconds=1)) == 1
    assert store.backlog(now=now()).dead == 0


def test_retry_dead_without_ids_revives_every_dead_row(store):
    store.add([user(1), user(2)])
    store.mark_dead([row.id for row in claim(store)], error="HTTP 422")
    assert store.retry_dead() == 2
    assert len(claim(store)) == 2


def test_delivered_rows_are_deleted_or_kept_until_purged(alias):
    deleting, keeping = DjangoStore(using=alias), DjangoStore(using=alias, keep_delivered=True)
    deleting.add([user(1), user(2)])
    first, second = claim(deleting)
    deleting.delivered([first.id], now=now())
    assert Row.objects.using(alias).count() == 1
    keeping.delivered([second.id], now=now() - timedelta(days=8))
    assert Row.objects.using(alias).get().status == "delivered"
    assert keeping.backlog(now=now()).pending == 0
    assert keeping.purge(delivered_before=now() - timedelta(days=7)) == 1
    assert Row.objects.using(alias).count() == 0


def test_released_rows_are_claimable_at_once_with_no_attempt_counted(store):
    store.add([user(1)])
    rows = claim(store, "relay-1")
    store.release([row.id for row in rows])
    assert [(row.operation, row.attempts) for row in claim(store, "relay-2")] == [(user(1), 0)]


def test_backlog_counts_pending_and_dead_rows_and_the_oldest_pending_age(store):
    assert store.backlog(now=now()) == type(store.backlog(now=now()))(pending=0, dead=0, oldest_pending_age=None)
    store.add([user(1), user(2), user(3)])
    store.mark_dead([claim(store, limit=1)[0].id], error="HTTP 400")
    backlog = store.backlog(now=now() + timedelta(seconds=90))
    assert (backlog.pending, backlog.dead) == (2, 1)
    assert 89 <= backlog.oldest_pending_age < 150


def test_add_inside_atomic_rolls_back_with_the_transaction(store, alias):
    class Rollback(Exception):
        pass

    try:
        with transaction.atomic(using=alias):
            store.add_on(alias, [user(1)])
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic(using=alias):
        store.add_on(alias, [user(2)])
        try:
            with transaction.atomic(using=alias):
                store.add_on(alias, [user(3)])
                raise Rollback
        except Rollback:
            pass
    assert [row.operation for row in claim(store)] == [user(2)]


def test_an_unreadable_row_is_marked_dead_instead_of_stopping_the_relay(store, alias):
    Row.objects.using(alias).create(
        entity="user:1", kind="upsert_user", operation="{not json", created_at=now(), next_attempt_at=now()
    )
    store.add([user(2)])
    assert [row.operation for row in claim(store)] == [user(2)]
    assert store.backlog(now=now()).dead == 1


def test_one_store_reads_several_aliases_and_routes_each_id_back_to_its_own():
    aliases = [name for name in ("default", "postgres", "mariadb") if name in settings.DATABASES]
    if len(aliases) < 2:
        pytest.skip("needs a second database")
    store = DjangoStore(using=aliases)
    for n, name in enumerate(aliases):
        store.add_on(name, [user(n)])
    rows = claim(store)
    assert sorted(row.operation.payload["identification"]["userId"] for row in rows) == [
        str(n) for n in range(len(aliases))
    ]
    assert len({row.id for row in rows}) == len(aliases)
    store.delivered([rows[0].id], now=now())
    store.mark_dead([row.id for row in rows[1:]], error="HTTP 400")
    assert sum(Row.objects.using(name).filter(status=DEAD).count() for name in aliases) == len(aliases) - 1
    assert store.backlog(now=now()).dead == len(aliases) - 1
    assert store.retry_dead([rows[1].id]) == 1


def test_two_relays_claiming_at_once_never_hold_one_row(store, alias):
    if alias == "default":
        pytest.skip("SQLite's in-memory test database: one writer at a time, shown by the write lock itself")
    total = 400
    store.add([user(n) for n in range(total)])
    seen: dict[str, list[int]] = {"relay-1": [], "relay-2": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def relay(owner: str) -> None:
        mine = DjangoStore(using=alias)
        try:
            start.wait()
            while rows := mine.claim(owner, limit=7, lease_seconds=60, now=now()):
                seen[owner].extend(row.id for row in rows)
                mine.delivered([row.id for row in rows], now=now())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=relay, args=(owner,)) for owner in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    together = seen["relay-1"] + seen["relay-2"]
    assert len(together) == len(set(together)) == total
    assert seen["relay-1"] and seen["relay-2"]  # both took part
