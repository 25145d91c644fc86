# mypy: disable-error-code="import-untyped"
"""The Django ORM store of the ``outbox`` backend (:class:`journy_core.outbox.store.OutboxStore`).

Rows live in ``journy_outbox`` (``journy_django.models.OutboxRow``, created by this app's migration) on each
database alias the router lets the app migrate to: the sync receivers write a change's row on the alias of the
object that changed, so that it commits or rolls back with it, and the store's relay side reads every such alias.
An alias's rows get ids ``local_id * n + alias_index`` (``n`` aliases), so that one id names one row across them;
with a single database the ids are the table's own.

Claiming follows the shared design (the module docstring of :mod:`journy_core.outbox.store`): one short
transaction per alias, ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it (PostgreSQL, MySQL 8,
MariaDB 10.6+), a write transaction on SQLite (taken by a first write, so two relays run one after the other).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from datetime import datetime, timezone
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, OperationalError, connections, router, transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.db.transaction import TransactionManagementError
from django.utils import timezone as dj_timezone

from journy_core.errors import InvalidArgumentError
from journy_core.operations import Operation
from journy_core.outbox.store import DEAD, PENDING, Backlog, OutboxRow, StoredRow, entity_of

from .models import DELIVERED
from .models import OutboxRow as Row
from .outbox_order import in_entity_order

__all__ = ["DjangoStore", "serialize"]

logger = logging.getLogger("journy")

T = TypeVar("T")

#: Ids per ``IN (...)`` list: well under SQLite's and Oracle's limits on bound parameters.
_CHUNK = 500


def serialize(operation: Operation) -> str:
    """The JSON stored in the ``operation`` column."""
    return json.dumps(operation.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _to_db(moment: datetime) -> datetime:
    # With USE_TZ off Django refuses aware datetimes: the table then holds naive UTC.
    if settings.USE_TZ:
        return moment if dj_timezone.is_aware(moment) else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if dj_timezone.is_aware(moment) else moment


def _from_db(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if dj_timezone.is_aware(moment) else moment.replace(tzinfo=timezone.utc)


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk


def new_rows(operations: Sequence[Operation], now: datetime | None = None) -> list[Row]:
    """Unsaved rows for ``operations`` (what :meth:`DjangoStore.add_on` writes)."""
    created = _to_db(now or _utcnow())
    return [
        Row(
            entity=entity_of(operation),
            kind=operation.kind,
            operation=serialize(operation),
            created_at=created,
            next_attempt_at=created,
        )
        for operation in operations
    ]


class DjangoStore:
    """The outbox in the app's database, through the Django ORM.

    ``using``: the aliases to relay from (one alias, or several); by default every alias the database routers let
    ``journy_django`` migrate to. ``keep_delivered``: keep delivered rows (status ``"delivered"``) until
    :meth:`purge` deletes them, instead of deleting them at once. ``after_commit``: called once the transaction
    that :meth:`add` wrote in commits (the app wakes its relay with it).
    """

    def __init__(
        self,
        using: str | Sequence[str] | None = None,
        *,
        keep_delivered: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._using = (using,) if isinstance(using, str) else tuple(using) if using is not None else None
        self._aliases: tuple[str, ...] | None = None
        self.keep_delivered = keep_delivered
        self.after_commit = after_commit
        self._turn = 0

    def __repr__(self) -> str:
        return f"DjangoStore(using={self.aliases!r})"

    @property
    def aliases(self) -> tuple[str, ...]:
        """The database aliases whose ``journy_outbox`` this store reads, in a fixed order (it numbers the ids)."""
        if self._aliases is None:
            if self._using is not None:
                self._aliases = self._using
            else:
                found = tuple(alias for alias in connections if router.allow_migrate_model(alias, Row))
                self._aliases = found or (DEFAULT_DB_ALIAS,)
        return self._aliases

    # -- ids across aliases -------------------------------------------------------------------------------------

    def _global_id(self, alias_index: int, local_id: int) -> int:
        return local_id * len(self.aliases) + alias_index

    def _by_alias(self, ids: Iterable[int]) -> dict[str, list[int]]:
        count = len(self.aliases)
        grouped: dict[str, list[int]] = {}
        for row_id in ids:
            grouped.setdefault(self.aliases[row_id % count], []).append(row_id // count)
        return grouped

    def _rows(self, ids: Iterable[int]) -> Iterator[QuerySet[Any]]:
        """A queryset per alias and chunk of ``ids``."""
        for alias, local_ids in self._by_alias(ids).items():
            for chunk in _chunks(local_ids):
                yield Row.objects.using(alias).filter(id__in=chunk)

    # -- writing ------------------------------------------------------------------------------------------------

    def add(self, operations: Sequence[Operation]) -> None:
        """Write rows for ``operations`` on the alias the routers choose for writing (``default`` without a
        router; the store's first alias when it does not read that one): inside the caller's ``atomic()`` block
        on it, they commit or roll back with it."""
        alias = router.db_for_write(Row)
        alias = alias if alias in self.aliases else self.aliases[0]
        in_transaction = not transaction.get_autocommit(alias)
        if not in_transaction:
            self.add_on(alias, operations)
        else:
            # In the caller's transaction, a write that fails (the backend logs and counts it) must not take the
            # transaction with it: its own savepoint, rolled back alone, leaves the app's work to commit.
            with transaction.atomic(using=alias):
                self.add_on(alias, operations)
        if self.after_commit is not None and operations and in_transaction:
            with suppress(TransactionManagementError):  # autocommit off without atomic(): no commit hook
                transaction.on_commit(self.after_commit, using=alias)

    def add_on(self, alias: str | None, operations: Sequence[Operation]) -> None:
        """Write rows for ``operations`` on ``alias`` (the alias of the object a signal is about): in its current
        transaction when there is one, else in their own."""
        if operations:
            Row.objects.using(alias or DEFAULT_DB_ALIAS).bulk_create(new_rows(operations))

    # -- the relay's side ---------------------------------------------------------------------------------------

    def claim(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner``, in id order, keeping each entity's order; the aliases
        take turns at being read first, so that a busy one does not starve the others. With several aliases, one
        that fails (its table not migrated, its server away) is logged and skipped: the others still deliver."""
        claimed: list[OutboxRow] = []
        count = len(self.aliases)
        start, self._turn = self._turn, (self._turn + 1) % count
        for step in range(count):
            if len(claimed) >= limit:
                break
            index = (start + step) % count
            try:
                claim = partial(self._claim_on, index, owner, limit - len(claimed), lease_seconds, now)
                claimed.extend(_again_on_deadlock(self.aliases[index], claim))
            except DatabaseError:
                if count == 1:
                    raise  # the relay logs it and tries again
                logger.warning("journy: could not claim outbox rows on %r", self.aliases[index], exc_info=True)
        claimed.sort(key=lambda row: row.id)
        return claimed

    def _claim_on(self, index: int, owner: str, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        alias = self.aliases[index]
        connection = _fresh_connection(alias)
        moment = _to_db(now)
        until = _to_db(datetime.fromtimestamp(now.timestamp() + lease_seconds, timezone.utc))
        with transaction.atomic(using=alias):
            if connection.vendor == "sqlite":
                # A first write takes SQLite's write lock: no other relay claims until this one commits.
                Row.objects.using(alias).filter(id=0).update(locked_by="")
            due = (
                Row.objects.using(alias)
                .filter(status=PENDING, next_attempt_at__lte=moment)
                .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=moment))
                .order_by("id")
            )
            if connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True)
            picked: list[tuple[int, str, str]] = list(due.values_list("id", "entity", "kind")[:limit])
            keep = in_entity_order(Row.objects.using(alias), picked)
            if not keep:
                return []
            Row.objects.using(alias).filter(id__in=keep).update(locked_until=until, locked_by=owner[:64])
            rows = list(Row.objects.using(alias).filter(id__in=keep).order_by("id"))
        return self._decoded(index, rows)

    def _decoded(self, index: int, rows: list[Row]) -> list[OutboxRow]:
        decoded: list[OutboxRow] = []
        unreadable: list[int] = []
        for row in rows:
            try:
                operation = Operation.from_dict(json.loads(row.operation))
            except (ValueError, TypeError, InvalidArgumentError) as exc:
                logger.error("journy: outbox row %s holds no readable operation (%s): marked dead", row.id, exc)
                unreadable.append(self._global_id(index, row.id))
                continue
            decoded.append(
                OutboxRow(
                    id=self._global_id(index, row.id),
                    entity=row.entity,
                    operation=operation,
                    created_at=_from_db(row.created_at),
                    attempts=row.attempts,
                )
            )
        if unreadable:
            self.mark_dead(unreadable, error="unreadable operation JSON")
        return decoded

    def delivered(self, ids: Iterable[int], *, now: datetime) -> None:
        """Delete the rows of the calls that succeeded (or keep them as delivered, with ``keep_delivered``)."""
        if self.keep_delivered:
            self._settle(ids, status=DELIVERED, next_attempt_at=_to_db(now))
            return
        for alias, local_ids in self._by_alias(ids).items():
            _fresh_connection(alias)
            for chunk in _chunks(local_ids):
                _again_on_deadlock(alias, partial(_delete, alias, chunk))

    def retry_later(self, ids: Iterable[int], *, at: datetime, error: str) -> None:
        """Count an attempt, release the lease, and make the rows due again at ``at``."""
        self._settle(ids, attempts=F("attempts") + 1, next_attempt_at=_to_db(at), last_error=error)

    def mark_dead(self, ids: Iterable[int], *, error: str) -> None:
        """Status dead, with journy.io's answer; ``next_attempt_at`` becomes the time of this last attempt."""
        changes = {"status": DEAD, "attempts": F("attempts") + 1, "next_attempt_at": _to_db(_utcnow())}
        self._settle(ids, last_error=error, **changes)

    def release(self, ids: Iterable[int]) -> None:
        """Give leased rows back unattempted."""
        self._settle(ids)

    def _settle(self, ids: Iterable[int], **changes: Any) -> None:
        """Release the rows' lease, with ``changes``."""
        for rows in self._rows(ids):
            _fresh_connection(rows.db)
            _again_on_deadlock(rows.db, partial(rows.update, locked_until=None, locked_by="", **changes))

    # -- seeing and mending -------------------------------------------------------------------------------------

    def backlog(self, *, now: datetime) -> Backlog:
        """Pending and dead counts over every alias, and the oldest pending row's age in seconds."""
        pending = dead = 0
        oldest: datetime | None = None
        for alias in self.aliases:
            _fresh_connection(alias)
            counts = (
                Row.objects.using(alias)
                .filter(status__in=[PENDING, DEAD])
                .values("status")
                .annotate(rows=Count("id"), first=Min("created_at"))
                .order_by()
            )
            for item in counts:
                if item["status"] == DEAD:
                    dead += item["rows"]
                    continue
                pending += item["rows"]
                first = _from_db(item["first"])
                oldest = first if oldest is None else min(oldest, first)
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        return Backlog(pending=pending, dead=dead, oldest_pending_age=age)

    def retry_dead(self, ids: Iterable[int] | None = None) -> int:
        """Make dead rows (these, or all) pending and due now, with their attempts counted afresh."""
        changes: dict[str, Any] = {"status": PENDING, "attempts": 0, "next_attempt_at": _to_db(_utcnow())}
        changes.update(locked_until=None, locked_by="")
        if ids is None:
            return sum(Row.objects.using(alias).filter(status=DEAD).update(**changes) for alias in self.aliases)
        return sum(rows.filter(status=DEAD).update(**changes) for rows in self._rows(ids))

    def purge(self, *, dead_before: datetime | None = None, delivered_before: datetime | None = None) -> int:
        """Delete dead rows last attempted before ``dead_before`` and kept delivered rows delivered before
        ``delivered_before``; returns how many."""
        conditions = Q(pk__in=[])
        if dead_before is not None:
            conditions |= Q(status=DEAD, next_attempt_at__lt=_to_db(dead_before))
        if delivered_before is not None:
            conditions |= Q(status=DELIVERED, next_attempt_at__lt=_to_db(delivered_before))
        if dead_before is None and delivered_before is None:
            return 0
        deleted = 0
        for alias in self.aliases:
            _fresh_connection(alias)  # the relay purges now and then
            deleted += Row.objects.using(alias).filter(conditions).delete()[0]
        return deleted

    def list_rows(self, *, status: str, limit: int) -> list[StoredRow]:
        """The oldest ``limit`` rows of ``status`` over every alias."""
        found: list[StoredRow] = []
        for index, alias in enumerate(self.aliases):
            _fresh_connection(alias)
            rows = Row.objects.using(alias).filter(status=status).order_by("id")[:limit]
            found.extend(self._stored(index, row) for row in rows)
        found.sort(key=lambda row: (row.created_at, row.id))
        return found[:limit]

    def _stored(self, index: int, row: Row) -> StoredRow:
        return StoredRow(
            id=self._global_id(index, row.id),
            entity=row.entity,
            kind=row.kind,
            status=row.status,
            attempts=row.attempts,
            created_at=_from_db(row.created_at),
            next_attempt_at=_from_db(row.next_attempt_at),
            last_error=row.last_error,
        )


def _fresh_connection(alias: str) -> Any:
    """This thread's connection to ``alias``, closed first when it is broken or past ``CONN_MAX_AGE`` (the next
    query opens a new one), outside a transaction.

    Django recycles connections around each request; the relay's threads serve none, so without this a connection
    the server dropped (a restart, a failover, ``pg_terminate_backend``) would fail every claim or settle of that
    thread until the process ends. It is what ``close_old_connections()`` does for each of a request's aliases.
    """
    connection = connections[alias]
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
    return connection


def _delete(alias: str, ids: list[int]) -> None:
    # One statement: a queryset's delete() would read the rows first, since post_delete has receivers (journy's).
    connection = connections[alias]
    table = connection.ops.quote_name(Row._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)  # noqa: S608 - the table name is ours


#: Deadlock and lock-wait errors: InnoDB's (MySQL/MariaDB error numbers), PostgreSQL's (SQLSTATE), SQLite's
#: (primary result codes: BUSY, and LOCKED, which a shared-cache database returns at once, with no busy wait).
_MYSQL_RETRY = frozenset({1213, 1205})
_POSTGRES_RETRY = frozenset({"40P01", "40001"})
_SQLITE_RETRY = frozenset({5, 6})


def _is_lock_conflict(cause: BaseException | None) -> bool:
    if cause is None:
        return False
    sqlite_code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _SQLITE_RETRY
    args: tuple[Any, ...] = tuple(getattr(cause, "args", ()))
    return getattr(cause, "sqlstate", None) in _POSTGRES_RETRY or (bool(args) and args[0] in _MYSQL_RETRY)


def _again_on_deadlock(alias: str, statement: Callable[[], T]) -> T:
    """Run ``statement`` (its own transaction), again up to four times when it lost a lock conflict (a deadlock's
    victim, a lock wait): two relays claiming and settling at once can deadlock on InnoDB's index locks, and a settle
    given up would have its rows sent again after the lease."""
    for attempt in range(5):
        try:
            return statement()
        except OperationalError as exc:
            if not _is_lock_conflict(exc.__cause__) or attempt == 4 or connections[alias].in_atomic_block:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover
