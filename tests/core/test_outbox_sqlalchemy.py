"""The SQLAlchemy outbox store on real databases: SQLite (a file), PostgreSQL and MariaDB when they are running.

Each test gets a database of its own (a temporary one on the servers), so these never meet the tables of other
test runs sharing the servers.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, create_engine, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from journy_core import operations as ops
from journy_core.operations import Operation
from journy_core.outbox.sqlalchemy import DELIVERED, SQLAlchemyStore, add_in, outbox_table
from journy_core.outbox.store import DEAD, PENDING, OutboxStore
from tests.conftest import require_service

LEASE = 30.0
#: Each test that takes an engine or a database runs on each of these.
DATABASES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.services),
    pytest.param("mariadb", marks=pytest.mark.services),
]


@contextlib.contextmanager
def _server_database(kind: str) -> Iterator[str]:
    """A temporary database on the local PostgreSQL or MariaDB, dropped afterwards."""
    name = f"journy_sa_{uuid.uuid4().hex[:10]}"
    if kind == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        admin_url, url = (
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        )
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        require_service("MariaDB", "127.0.0.1", 3306)
        pytest.importorskip("pymysql", reason="pymysql (the dev extra's MariaDB driver) is not installed")
        admin_url, url = "mysql+pymysql://root@127.0.0.1:3306/test", f"mysql+pymysql://root@127.0.0.1:3306/{name}"
        create, drop = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4", f"DROP DATABASE IF EXISTS `{name}`"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(create))
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(drop))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on each database, the outbox table created through an app's own MetaData."""
    with contextlib.ExitStack() as stack:
        url = (
            f"sqlite:///{tmp_path / 'outbox.db'}"
            if request.param == "sqlite"
            else stack.enter_context(_server_database(request.param))
        )
        engine = create_engine(url)
        metadata = MetaData()
        outbox_table(metadata)
        metadata.create_all(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def store(engine: Engine) -> SQLAlchemyStore:
    return SQLAlchemyStore(engine)


def _now(seconds: float = 1.0) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def _user(n: int, plan: str = "pro") -> Operation:
    return ops.upsert_user(user_id=n, properties={"plan": plan})


def test_the_store_implements_the_outbox_store_interface(store: SQLAlchemyStore) -> None:
    assert isinstance(store, OutboxStore)


def test_outbox_table_joins_the_apps_metadata_once_with_its_indexes(engine: Engine) -> None:
    metadata = MetaData()
    table = outbox_table(metadata)
    assert outbox_table(metadata) is table
    assert set(metadata.tables) == {"journy_outbox"}
    columns = {column["name"] for column in inspect(engine).get_columns("journy_outbox")}
    assert columns == {c.name for c in table.columns}
    indexes = {tuple(index["column_names"]) for index in inspect(engine).get_indexes("journy_outbox")}
    assert {("status", "next_attempt_at", "id"), ("entity", "id")} <= indexes


def test_claimed_rows_carry_the_operation_its_entity_and_aware_utc_times(store: SQLAlchemyStore) -> None:
    operations = [_user(1), ops.upsert_account(account_id="a1", properties={"seats": 3}), _user(2)]
    store.add(operations)
    rows = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=_now())
    assert [row.operation for row in rows] == operations
    assert [row.entity for row in rows] == ["user:1", "account:a1", "user:2"]
    assert rows[0].id < rows[1].id < rows[2].id
    assert all(row.attempts == 0 for row in rows)
    created = rows[0].created_at
    assert created.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60


def test_a_claim_is_a_lease_that_another_relay_gets_once_it_expires(store: SQLAlchemyStore) -> None:
    store.add([_user(1), _user(2)])
    now = _now()
    assert len(store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now)) == 2
    assert store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now + timedelta(seconds=LEASE - 1)) == []
    retaken = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now + timedelta(seconds=LEASE + 1))
    assert [row.entity for row in retaken] == ["user:1", "user:2"]


def test_a_later_row_waits_while_an_earlier_row_of_its_entity_is_held_elsewhere(store: SQLAlchemyStore) -> None:
    store.add([_user(1, "free"), _user(1, "pro"), _user(2)])
    now = _now()
    first = store.claim("relay-1", limit=1, lease_seconds=LEASE, now=now)
    assert [row.operation for row in first] == [_user(1, "free")]
    # user:1's second row is released at once: only user:2 goes to the second relay.
    second = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now)
    assert [row.entity for row in second] == ["user:2"]
    store.delivered([first[0].id], now=now)
    third = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now)
    assert [row.operation for row in third] == [_user(1, "pro")]


def test_a_row_waiting_for_its_retry_holds_back_its_entity(store: SQLAlchemyStore) -> None:
    store.add([_user(1, "free"), _user(1, "pro"), _user(2)])
    now = _now()
    first = store.claim("relay-1", limit=1, lease_seconds=LEASE, now=now)
    store.retry_later([first[0].id], at=now + timedelta(seconds=60), error="HTTP 503")
    other = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now)
    assert [row.entity for row in other] == ["user:2"]
    store.delivered([other[0].id], now=now)
    later = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now + timedelta(seconds=61))
    assert [(row.operation, row.attempts) for row in later] == [(_user(1, "free"), 1), (_user(1, "pro"), 0)]
    pending = store.list_rows(status=PENDING, limit=10)
    assert pending[0].last_error == "HTTP 503"


def test_a_users_delete_waits_for_an_earlier_membership_naming_the_user_held_elsewhere_or_retrying(
    store: SQLAlchemyStore,
) -> None:
    store.add([ops.add_users_to_account(account_id="a1", users=["5"]), ops.delete_user(user_id="5"), _user(6)])
    now = _now()
    membership = store.claim("relay-1", limit=1, lease_seconds=LEASE, now=now)
    assert [row.operation.kind for row in membership] == ["add_users_to_account"]
    # Its entity is the account, yet it names user 5: sent after the delete, it would create the user again.
    other = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now)
    assert [row.operation for row in other] == [_user(6)]
    store.delivered([other[0].id], now=now)
    store.retry_later([membership[0].id], at=now + timedelta(seconds=60), error="HTTP 503")
    assert store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now + timedelta(seconds=1)) == []
    later = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now + timedelta(seconds=61))
    assert [row.operation.kind for row in later] == ["add_users_to_account", "delete_user"]


def test_a_users_delete_waits_for_a_membership_the_claim_gives_back(store: SQLAlchemyStore) -> None:
    store.add([ops.upsert_account(account_id="a1"), ops.add_users_to_account(account_id="a1", users=["5"])])
    store.add([ops.delete_user(user_id="5")])
    now = _now()
    first = store.claim("relay-1", limit=1, lease_seconds=LEASE, now=now)
    assert [row.operation.kind for row in first] == ["upsert_account"]
    assert store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now) == []


def test_rows_without_an_entity_keep_no_order(store: SQLAlchemyStore) -> None:
    loose = Operation("get_tracking_snippet", {"domain": "acme.test"})
    store.add([loose, loose])
    now = _now()
    assert len(store.claim("relay-1", limit=1, lease_seconds=LEASE, now=now)) == 1
    second = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now)
    assert [row.entity for row in second] == [""]


def test_released_rows_are_claimable_again_unattempted(store: SQLAlchemyStore) -> None:
    store.add([_user(1)])
    now = _now()
    rows = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now)
    store.release([row.id for row in rows])
    again = store.claim("relay-2", limit=10, lease_seconds=LEASE, now=now)
    assert [(row.id, row.attempts) for row in again] == [(rows[0].id, 0)]


def test_dead_rows_stay_until_retried_or_purged(store: SQLAlchemyStore) -> None:
    store.add([_user(1), _user(2)])
    now = _now()
    rows = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now)
    store.mark_dead([rows[0].id], error='HTTP 400 {"errors": ["bad"]}')
    store.delivered([rows[1].id], now=now)
    dead = store.list_rows(status=DEAD, limit=10)
    assert [(row.entity, row.kind, row.attempts, row.last_error) for row in dead] == [
        ("user:1", "upsert_user", 1, 'HTTP 400 {"errors": ["bad"]}')
    ]
    assert dead[0].created_at.utcoffset() == timedelta(0)
    assert store.claim("relay-1", limit=10, lease_seconds=LEASE, now=now + timedelta(days=1)) == []
    assert store.retry_dead() == 1
    retried = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=_now())
    assert [(row.id, row.attempts) for row in retried] == [(rows[0].id, 0)]
    store.mark_dead([rows[0].id], error="HTTP 422")
    assert store.retry_dead([rows[0].id + 1000]) == 0
    assert store.purge(dead_before=_now(-3600)) == 0
    assert store.purge(dead_before=_now(60)) == 1
    assert store.list_rows(status=DEAD, limit=10) == []


def test_delivered_rows_are_deleted_or_kept_until_purged(engine: Engine) -> None:
    deleting, keeping = SQLAlchemyStore(engine), SQLAlchemyStore(engine, keep_delivered=True)
    deleting.add([_user(1), _user(2)])
    now = _now()
    first, second = deleting.claim("relay-1", limit=10, lease_seconds=LEASE, now=now)
    deleting.delivered([first.id], now=now)
    keeping.delivered([second.id], now=now)
    assert [row.id for row in keeping.list_rows(status=DELIVERED, limit=10)] == [second.id]
    assert keeping.backlog(now=now).pending == 0
    assert keeping.purge(delivered_before=now) == 0
    assert keeping.purge(dead_before=now + timedelta(days=1), delivered_before=now + timedelta(seconds=1)) == 1
    assert keeping.list_rows(status=DELIVERED, limit=10) == []


def test_backlog_counts_pending_and_dead_and_ages_the_oldest_pending_row(store: SQLAlchemyStore) -> None:
    assert store.backlog(now=_now()).pending == 0
    assert store.backlog(now=_now()).oldest_pending_age is None
    store.add([_user(1), _user(2), _user(3)])
    rows = store.claim("relay-1", limit=1, lease_seconds=LEASE, now=_now())
    store.mark_dead([rows[0].id], error="HTTP 400")
    backlog = store.backlog(now=_now(120))
    assert (backlog.pending, backlog.dead) == (2, 1)
    assert backlog.oldest_pending_age is not None
    assert 110 < backlog.oldest_pending_age < 180


def test_an_unreadable_row_goes_dead_instead_of_blocking_its_entity(engine: Engine, store: SQLAlchemyStore) -> None:
    store.add([_user(1, "free"), _user(1, "pro")])
    table = store.table
    with engine.begin() as connection:
        first = connection.execute(select(table.c.id).order_by(table.c.id)).scalars().first()
        connection.execute(table.update().where(table.c.id == first).values(operation="{not json"))
    rows = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=_now())
    assert [row.operation for row in rows] == [_user(1, "pro")]
    dead = store.list_rows(status=DEAD, limit=10)
    assert [row.id for row in dead] == [first]
    assert dead[0].last_error.startswith("unreadable operation")


def test_rows_written_in_the_callers_transaction_share_its_fate(engine: Engine, store: SQLAlchemyStore) -> None:
    with engine.connect() as connection:
        with connection.begin():
            add_in(connection, [_user(1)])
        transaction = connection.begin()
        add_in(connection, [_user(2)])
        transaction.rollback()
    factory = sessionmaker(engine)
    with factory() as session:
        add_in(session, [_user(3)])
        savepoint = session.begin_nested()
        add_in(session, [_user(4)])
        savepoint.rollback()
        add_in(session, [_user(5)])
        session.commit()
    with factory() as session:
        add_in(session, [_user(6)])
        session.rollback()
    rows = store.claim("relay-1", limit=10, lease_seconds=LEASE, now=_now())
    assert [row.entity for row in rows] == ["user:1", "user:3", "user:5"]


def test_a_store_on_a_sessionmaker_claims_like_one_on_an_engine(engine: Engine) -> None:
    store = SQLAlchemyStore(sessionmaker(engine))
    store.add([_user(1)])
    assert [row.entity for row in store.claim("relay-1", limit=10, lease_seconds=LEASE, now=_now())] == ["user:1"]


def test_naive_datetimes_are_refused(store: SQLAlchemyStore) -> None:
    with pytest.raises(Exception, match="timezone-aware"):
        store.claim("relay-1", limit=10, lease_seconds=LEASE, now=datetime.now())


def test_two_concurrent_claimers_never_hold_one_row_and_keep_each_entitys_order(engine: Engine) -> None:
    store = SQLAlchemyStore(engine)
    operations = [_user(n % 15, f"plan-{n}") for n in range(300)]
    for start in range(0, len(operations), 50):
        store.add(operations[start : start + 50])
    held: dict[int, str] = {}
    delivered: list[tuple[str, int]] = []
    overlaps: list[int] = []
    owners: set[str] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()

    start = threading.Barrier(2)

    def relay(owner: str) -> None:
        try:
            start.wait(timeout=10)
            idle = 0
            while idle < 20:
                rows = store.claim(owner, limit=7, lease_seconds=LEASE, now=_now(0))
                idle = idle + 1 if not rows else 0
                with lock:
                    overlaps.extend(row.id for row in rows if row.id in held)
                    held.update((row.id, owner) for row in rows)
                    delivered.extend((row.entity, row.id) for row in rows)
                    owners.update(owner for _ in rows[:1])
                time.sleep(0.002)  # the call to journy.io: the lock is free meanwhile
                store.delivered([row.id for row in rows], now=_now(0))
                with lock:
                    for row in rows:
                        del held[row.id]
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=relay, args=(f"relay-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert overlaps == []
    if engine.dialect.name != "sqlite":  # SQLite runs one claim at a time: one relay may take every batch
        assert owners == {"relay-0", "relay-1"}
    assert len(delivered) == len({row_id for _, row_id in delivered}) == len(operations)
    for entity in {entity for entity, _ in delivered}:
        ids = [row_id for e, row_id in delivered if e == entity]
        assert ids == sorted(ids), entity
    assert store.backlog(now=_now()).pending == 0


def test_sqlite_claimers_on_separate_engines_wait_for_each_other(tmp_path: Path) -> None:
    """Two relay processes on one SQLite file: the second claim waits for the first one's write lock instead of
    failing on a lock upgrade."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    engines = [create_engine(url), create_engine(url)]
    metadata = MetaData()
    outbox_table(metadata)
    metadata.create_all(engines[0])
    first, second = (SQLAlchemyStore(engine) for engine in engines)
    first.add([_user(n) for n in range(20)])
    with Session(engines[0]) as session:
        # A reader holds a snapshot open while the claims run (what breaks a read-then-write transaction).
        session.execute(text("SELECT count(*) FROM journy_outbox")).scalar()
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda s=s: results.append(len(s.claim("r", limit=10, lease_seconds=LEASE, now=_now())))
            )
            for s in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert sorted(results) == [10, 10]
    for engine in engines:
        engine.dispose()


@pytest.fixture(params=DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        with _server_database(request.param) as url:
            yield url


def test_the_migration_alembic_autogenerates_for_the_table_runs_as_written_and_leaves_nothing_to_change(
    empty_database: str, tmp_path: Path
) -> None:
    from alembic import command
    from alembic.config import Config

    # What `alembic init` and `flask db init` give, with the app's metadata holding the outbox table (docs/outbox.md).
    config = Config(str(tmp_path / "alembic.ini"))
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("sqlalchemy.url", empty_database)
    command.init(config, str(tmp_path / "migrations"))
    env = tmp_path / "migrations" / "env.py"
    source = env.read_text().replace(
        "target_metadata = None",
        "from sqlalchemy import MetaData\nfrom journy_core.outbox.sqlalchemy import outbox_table\n"
        "target_metadata = MetaData()\noutbox_table(target_metadata)",
    )
    # Not the logging set-up from alembic.ini: it would disable the loggers of the rest of this test run.
    env.write_text(source.replace("fileConfig(config.config_file_name)", "pass"))
    command.revision(config, message="journy outbox", autogenerate=True)
    command.upgrade(config, "head")  # the generated file as it is: no import added by hand
    command.check(config)  # a second autogenerate finds the table as the metadata has it
    engine = create_engine(empty_database)
    try:
        assert "journy_outbox" in inspect(engine).get_table_names()
        store = SQLAlchemyStore(engine)
        store.add([_user(1)])
        [row] = store.claim("relay", limit=10, lease_seconds=LEASE, now=_now())
        assert row.created_at.tzinfo is not None
    finally:
        engine.dispose()
