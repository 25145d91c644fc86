"""The outbox's SQLAlchemy store (Flask, or any app with SQLAlchemy sessions), with its table.

- :func:`outbox_table` adds the ``journy_outbox`` table to the app's own ``MetaData``, so ``create_all()`` and
  Alembic autogenerate see it; :data:`OUTBOX_METADATA` / :data:`OUTBOX_TABLE` serve apps without one.
- :func:`add_in` writes rows inside the caller's transaction (a ``Connection`` or a ``Session``): the adapter calls
  it during the flush, so the rows commit, or roll back, with the change they describe.
- :class:`SQLAlchemyStore` is the :class:`~journy_core.outbox.store.OutboxStore` the relay claims and settles with.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from ..operations import Operation
from .ordering import MEMBERSHIP_KINDS, claim_order
from .sqlalchemy_table import (
    DELIVERED,
    MYSQL_DIALECTS,
    OUTBOX_METADATA,
    OUTBOX_TABLE,
    TABLE_NAME,
    UTCDateTime,
    add_in,
    outbox_table,
    query_table,
)
from .store import DEAD, PENDING, Backlog, OutboxRow, StoredRow

__all__ = [
    "DELIVERED",
    "OUTBOX_METADATA",
    "OUTBOX_TABLE",
    "TABLE_NAME",
    "SQLAlchemyStore",
    "UTCDateTime",
    "add_in",
    "outbox_table",
]

# Dialects whose SELECT ... FOR UPDATE SKIP LOCKED lets several relays claim side by side.
_SKIP_LOCKED_DIALECTS = MYSQL_DIALECTS | {"postgresql"}
_DEADLOCK_RETRIES = 3
# MySQL/MariaDB's "Deadlock found" and lock wait timeout; PostgreSQL's deadlock_detected and serialization_failure.
_MYSQL_DEADLOCK_CODES = frozenset({1213, 1205})
_PG_DEADLOCK_STATES = frozenset({"40P01", "40001"})


class SQLAlchemyStore:
    """The :class:`~journy_core.outbox.store.OutboxStore` on a SQLAlchemy ``Engine`` or ``sessionmaker``.

    Every method runs its own short transaction. ``keep_delivered``: delivered rows stay, with status
    ``"delivered"``, until :meth:`purge` removes them (the relay purges them after the retention it is given);
    otherwise they are deleted at once.
    """

    def __init__(
        self,
        engine_or_sessionmaker: Engine | sessionmaker[Any],
        table: Table | None = None,
        *,
        keep_delivered: bool = False,
    ) -> None:
        self.bind = engine_or_sessionmaker
        self.table = OUTBOX_TABLE if table is None else query_table(table)
        self.keep_delivered = keep_delivered

    def __repr__(self) -> str:
        return f"<SQLAlchemyStore {self.table.name} on {self.bind!r}>"

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A connection in a transaction of its own, committed on success, rolled back on an exception."""
        # READ COMMITTED on MySQL/MariaDB: REPEATABLE READ's gap locks make a claim and another relay's settling
        # deadlock; the claim's locking read sees the latest committed rows either way.
        if isinstance(self.bind, Engine):
            with self.bind.connect() as connection:
                if connection.dialect.name in MYSQL_DIALECTS:
                    connection.execution_options(isolation_level="READ COMMITTED")
                with connection.begin():
                    yield connection
        else:
            with self.bind() as session, session.begin():
                mysql_like = session.get_bind().dialect.name in MYSQL_DIALECTS
                yield session.connection(
                    execution_options={"isolation_level": "READ COMMITTED"} if mysql_like else None
                )

    def add(self, operations: Sequence[Operation]) -> None:
        """Write rows for ``operations`` now, in order, in a transaction of their own."""
        if operations:
            with self._begin() as connection:
                add_in(connection, operations, self.table)

    def claim(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        """Lease up to ``limit`` due pending rows to ``owner`` in id order, keeping each entity's order: a row
        whose entity has an earlier pending row this claim does not hold (leased to another relay, waiting for its
        retry) is left alone, and so is a user's delete while an earlier membership naming that user is (see
        :mod:`journy_core.outbox.ordering`). A claim the database picks as a deadlock's victim is run again (it
        changed nothing)."""
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return self._claim_once(owner, limit=limit, lease_seconds=lease_seconds, now=now)
            except DBAPIError as exc:
                if attempt + 1 == _DEADLOCK_RETRIES or not _is_deadlock(exc):
                    raise
        return []  # not reached: the last attempt returns or raises

    def _claim_once(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        t = self.table
        with self._begin() as connection:
            dialect = connection.dialect.name
            if dialect == "sqlite":
                # BEGIN IMMEDIATE's effect without changing the app's engine: the first statement is a write, so
                # the transaction takes SQLite's write lock before it reads (waiting out the busy timeout for
                # another relay's claim). Reading first and writing later could fail instead of waiting.
                connection.execute(update(t).where(t.c.id < 0).values(locked_by=t.c.locked_by))
            due = (
                select(t.c.id, t.c.entity, t.c.kind, t.c.operation, t.c.created_at, t.c.attempts)
                .where(
                    t.c.status == PENDING,
                    t.c.next_attempt_at <= now,
                    or_(t.c.locked_until.is_(None), t.c.locked_until < now),
                )
                .order_by(t.c.id)
                .limit(limit)
            )
            if dialect in _SKIP_LOCKED_DIALECTS:
                due = due.with_for_update(skip_locked=True)
            found = connection.execute(due).all()
            kept = set(
                claim_order(
                    [(row.id, row.entity, row.kind) for row in found],
                    partial(self._first_pending, connection),
                    partial(self._memberships_before, connection),
                )
            )
            claimed, unreadable = _decode([row for row in found if row.id in kept])
            if claimed:
                connection.execute(
                    update(t)
                    .where(t.c.id.in_([row.id for row in claimed]))
                    .values(locked_until=now + timedelta(seconds=lease_seconds), locked_by=owner[:64])
                )
            for row_id, error in unreadable:
                connection.execute(
                    update(t).where(t.c.id == row_id).values(status=DEAD, last_error=error, next_attempt_at=now)
                )
        return claimed

    # The two queries of the claim's order rule (journy_core.outbox.ordering decides).

    def _first_pending(self, connection: Connection, entities: set[str], held: list[int]) -> dict[str, int]:
        """Each entity's first pending row outside the claim (before the last held row)."""
        t = self.table
        firsts = connection.execute(
            select(t.c.entity, func.min(t.c.id))
            .where(
                t.c.status == PENDING,
                t.c.entity.in_(sorted(entities)),
                t.c.id < max(held),
                t.c.id.not_in(sorted(held)),
            )
            .group_by(t.c.entity)
        ).all()
        return {str(entity): int(first) for entity, first in firsts}

    def _memberships_before(
        self, connection: Connection, held: list[int], given_back: list[int], before: int
    ) -> list[tuple[int, str]]:
        """The pending membership rows before ``before`` that this claim does not deliver (outside it, or given
        back)."""
        t = self.table
        outside = t.c.id.not_in(sorted(held))
        rows = connection.execute(
            select(t.c.id, t.c.operation).where(
                t.c.status == PENDING,
                t.c.kind.in_(MEMBERSHIP_KINDS),
                t.c.id < before,
                or_(outside, t.c.id.in_(sorted(given_back))) if given_back else outside,
            )
        ).all()
        return [(int(row_id), str(operation)) for row_id, operation in rows]

    def delivered(self, ids: Iterable[int], *, now: datetime) -> None:
        """Delete the rows, or keep them as delivered at ``now`` when the store keeps delivered rows."""
        t = self.table
        id_list = list(ids)
        if not id_list:
            return
        with self._begin() as connection:
            if self.keep_delivered:
                connection.execute(
                    update(t)
                    .where(t.c.id.in_(id_list))
                    .values(status=DELIVERED, next_attempt_at=now, locked_until=None, locked_by="")
                )
            else:
                connection.execute(delete(t).where(t.c.id.in_(id_list)))

    def retry_later(self, ids: Iterable[int], *, at: datetime, error: str) -> None:
        """Count an attempt, release the lease, try again at ``at``."""
        self._settle(ids, attempts=self.table.c.attempts + 1, next_attempt_at=at, last_error=error)

    def mark_dead(self, ids: Iterable[int], *, error: str) -> None:
        """Status dead with journy.io's answer; its ``next_attempt_at`` becomes the time it died (what
        :meth:`purge`'s ``dead_before`` compares)."""
        t = self.table
        self._settle(
            ids, status=DEAD, attempts=t.c.attempts + 1, next_attempt_at=datetime.now(timezone.utc), last_error=error
        )

    def release(self, ids: Iterable[int]) -> None:
        """Give rows back unattempted."""
        self._settle(ids)

    def _settle(self, ids: Iterable[int], **values: Any) -> None:
        id_list = list(ids)
        if id_list:
            t = self.table
            with self._begin() as connection:
                connection.execute(
                    update(t).where(t.c.id.in_(id_list)).values(locked_until=None, locked_by="", **values)
                )

    def backlog(self, *, now: datetime) -> Backlog:
        """Pending and dead counts and the oldest pending row's age in seconds."""
        t = self.table
        with self._begin() as connection:
            rows = connection.execute(
                select(t.c.status, func.count(), func.min(t.c.created_at))
                .where(t.c.status.in_([PENDING, DEAD]))
                .group_by(t.c.status)
            ).all()
        by_status = {status: (count, oldest) for status, count, oldest in rows}
        pending, oldest = by_status.get(PENDING, (0, None))
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        return Backlog(pending=int(pending), dead=int(by_status.get(DEAD, (0, None))[0]), oldest_pending_age=age)

    def retry_dead(self, ids: Iterable[int] | None = None) -> int:
        """Make dead rows (these, or all) pending again, due now with their attempts reset; returns how many."""
        t = self.table
        statement = update(t).where(t.c.status == DEAD)
        if ids is not None:
            id_list = list(ids)
            if not id_list:
                return 0
            statement = statement.where(t.c.id.in_(id_list))
        with self._begin() as connection:
            result = connection.execute(
                statement.values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=datetime.now(timezone.utc),
                    locked_until=None,
                    locked_by="",
                )
            )
        return int(result.rowcount)

    def purge(self, *, dead_before: datetime | None = None, delivered_before: datetime | None = None) -> int:
        """Delete dead rows that died before ``dead_before`` and delivered rows delivered before
        ``delivered_before``; returns how many."""
        t = self.table
        conditions = []
        if dead_before is not None:
            conditions.append((t.c.status == DEAD) & (t.c.next_attempt_at < dead_before))
        if delivered_before is not None:
            conditions.append((t.c.status == DELIVERED) & (t.c.next_attempt_at < delivered_before))
        if not conditions:
            return 0
        with self._begin() as connection:
            result = connection.execute(delete(t).where(or_(*conditions)))
        return int(result.rowcount)

    def list_rows(self, *, status: str, limit: int) -> list[StoredRow]:
        """The oldest ``limit`` rows of ``status``."""
        t = self.table
        with self._begin() as connection:
            rows = connection.execute(
                select(t.c.id, t.c.entity, t.c.kind, t.c.status, t.c.attempts)
                .add_columns(t.c.created_at, t.c.next_attempt_at, t.c.last_error)
                .where(t.c.status == status)
                .order_by(t.c.id)
                .limit(limit)
            ).all()
        return [StoredRow(*row) for row in rows]


def _is_deadlock(exc: DBAPIError) -> bool:
    """Whether the database rolled the transaction back to break a deadlock (so running it again is safe)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_DEADLOCK_STATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_DEADLOCK_CODES


def _decode(rows: Sequence[Any]) -> tuple[list[OutboxRow], list[tuple[int, str]]]:
    """The rows as the relay sees them, and the (id, error) of those whose operation cannot be read back (a row
    written by hand or by an incompatible version: it goes dead at once instead of blocking its entity)."""
    claimed: list[OutboxRow] = []
    unreadable: list[tuple[int, str]] = []
    for row in rows:
        try:
            operation = Operation.from_dict(json.loads(row.operation))
        except (ValueError, TypeError) as exc:
            unreadable.append((row.id, f"unreadable operation: {exc}"))
            continue
        claimed.append(OutboxRow(row.id, row.entity, operation, row.created_at, row.attempts))
    return claimed, unreadable
