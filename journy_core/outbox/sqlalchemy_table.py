"""The ``journy_outbox`` table for SQLAlchemy, and writing its rows inside the caller's transaction.

Re-exported by :mod:`journy_core.outbox.sqlalchemy`, which adds the store the relay uses. Times are stored as UTC:
``timestamp with time zone`` on PostgreSQL, naive UTC elsewhere (SQLite and MySQL keep no zone), and always read back
timezone-aware.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Dialect,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..operations import Operation
from .store import PENDING, entity_of

__all__ = [
    "DELIVERED",
    "OUTBOX_METADATA",
    "OUTBOX_TABLE",
    "PLAIN_UTC_DATETIME",
    "TABLE_NAME",
    "UTCDateTime",
    "add_in",
    "outbox_table",
    "query_table",
]

#: The table's name, the same for the Django and the SQLAlchemy stores.
TABLE_NAME = "journy_outbox"
#: A delivered row kept for ``keep_delivered`` (its ``next_attempt_at`` is then the time of delivery).
DELIVERED = "delivered"
_KIND_LENGTH = 40
#: MariaDB reports itself as "mysql" through most drivers, as "mariadb" through its own.
MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database: ``timestamp with time zone`` on PostgreSQL, naive UTC with
    microseconds elsewhere (MySQL's plain DATETIME would drop them, and with them the order of a lease's instants)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """DATETIME(6) on MySQL/MariaDB, ``DateTime(timezone=True)`` elsewhere."""
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware values only (a naive one would be read in the server's zone); naive UTC where no zone is kept."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{TABLE_NAME} stores timezone-aware datetimes only, got {value!r}")
        value = value.astimezone(timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always aware UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


#: The time columns' type in the table the app's metadata holds: plain SQLAlchemy types, so that the migration Alembic
#: autogenerates from it runs as written (a custom type is written with its module path, which the migration does
#: not import). The same columns as :class:`UTCDateTime`'s; the stores query through :func:`query_table`.
PLAIN_UTC_DATETIME: TypeEngine[datetime] = DateTime(timezone=True).with_variant(
    mysql.DATETIME(fsp=6), "mysql", "mariadb"
)


def outbox_table(metadata: MetaData) -> Table:
    """The ``journy_outbox`` table in ``metadata`` (the app's own, so ``create_all()`` and Alembic autogenerate
    pick it up); calling it again returns the table already there."""
    if TABLE_NAME in metadata.tables:
        return metadata.tables[TABLE_NAME]
    return _table(metadata, PLAIN_UTC_DATETIME)


def _table(metadata: MetaData, moment: TypeEngine[datetime]) -> Table:
    # SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid), not a BIGINT one.
    big_id = BigInteger().with_variant(Integer(), "sqlite")
    table = Table(
        TABLE_NAME,
        metadata,
        # Commit order within an entity is id order: the relay delivers an entity's rows by id.
        Column("id", big_id, primary_key=True, autoincrement=True),
        Column("entity", String(255), nullable=False, default=""),
        Column("kind", String(_KIND_LENGTH), nullable=False, default=""),
        Column("operation", Text, nullable=False),
        Column("status", String(10), nullable=False, default=PENDING),
        Column("attempts", Integer, nullable=False, default=0),
        Column("created_at", moment, nullable=False),
        Column("next_attempt_at", moment, nullable=False),
        Column("locked_until", moment, nullable=True),
        Column("locked_by", String(64), nullable=False, default=""),
        Column("last_error", Text, nullable=False, default=""),
    )
    Index("journy_outbox_due", table.c.status, table.c.next_attempt_at, table.c.id)
    Index("journy_outbox_entity", table.c.entity, table.c.id)
    return table


#: A ``MetaData`` holding only the outbox table, for apps without their own: ``OUTBOX_METADATA.create_all(engine)``.
OUTBOX_METADATA = MetaData()
#: The table in :data:`OUTBOX_METADATA`, its times read and written as aware UTC (:class:`UTCDateTime`).
OUTBOX_TABLE = _table(OUTBOX_METADATA, UTCDateTime())
_twins: dict[str | None, Table] = {None: OUTBOX_TABLE}


def query_table(table: Table) -> Table:
    """The table the stores read and write ``table`` through: the same database table (name and schema), with its
    times as :class:`UTCDateTime`, whatever types the app's metadata gives them (:func:`outbox_table`)."""
    if isinstance(table.c.created_at.type, UTCDateTime):
        return table
    twin = _twins.get(table.schema)
    if twin is None:
        twin = _twins[table.schema] = _table(MetaData(schema=table.schema), UTCDateTime())
    return twin


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _row_values(operations: Sequence[Operation], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "entity": entity_of(operation),
            "kind": operation.kind[:_KIND_LENGTH],
            "operation": json.dumps(operation.to_dict(), separators=(",", ":")),
            "status": PENDING,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
            "locked_until": None,
            "locked_by": "",
            "last_error": "",
        }
        for operation in operations
    ]


def add_in(
    connection_or_session: Connection | Session | Any, operations: Sequence[Operation], table: Table | None = None
) -> None:
    """Write rows for ``operations``, in order, inside the caller's transaction: a ``Connection``, or a ``Session``
    (or ``scoped_session``) whose ``connection()`` it joins. Nothing is committed here: the rows commit, or roll
    back (savepoint included), with that transaction."""
    if not operations:
        return
    connection = (
        connection_or_session if isinstance(connection_or_session, Connection) else connection_or_session.connection()
    )
    rows = _row_values(operations, _utcnow())
    # Ids are assigned in list order, which is the order the relay delivers an entity in. One row (a flush of one
    # change, the common case) goes as a plain execute: a list would take the driver's executemany path, which
    # costs more for one row (psycopg enters and leaves its pipeline mode for it).
    connection.execute(_insert_into(OUTBOX_TABLE if table is None else table), rows[0] if len(rows) == 1 else rows)


_inserts: weakref.WeakKeyDictionary[Table, Insert] = weakref.WeakKeyDictionary()


def _insert_into(table: Table) -> Insert:
    """The INSERT into ``table`` through its :func:`query_table`, built once per table: SQLAlchemy then finds its
    compiled form by the statement's cache key, which a new statement at every flush would make it work out again."""
    insert = _inserts.get(table)
    if insert is None:
        insert = _inserts[table] = query_table(table).insert()
    return insert
