# mypy: disable-error-code="import-untyped"
"""How the Django app uses the ``outbox`` backend: the store it is given by default, the rows the sync receivers
write at the signal, and the system check that the table exists.

With the outbox, a model change is written at its signal, inside the transaction, on the database alias of the
object that changed: a rollback, or a savepoint rolled back, takes the row with it, and a commit makes the call
certain even if the process dies on the next line. The operation is built at the signal from the object's state
then (the relay merges repeated upserts of one object). Right after the commit, ``transaction.on_commit`` wakes
this process's relay thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, router, transaction
from django.db.transaction import TransactionManagementError

from journy_core.assembly import queue_of
from journy_core.changelog import Change, buffer_of
from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.store import Backlog

from .models import OutboxRow
from .outbox import DjangoStore

__all__ = [
    "app_store",
    "check_outbox_table",
    "check_sqlite_transactions",
    "outbox_backend",
    "outbox_backlog",
    "sqlite_lock_warnings",
    "write_changes",
]

#: The dotted path the app puts in ``OPTIONS["STORE"]`` when the settings name none.
APP_STORE = "journy_django.outbox_sync.app_store"


def app_store() -> DjangoStore:
    """The store of the app's outbox when ``OPTIONS["STORE"]`` is unset: every database alias the routers let
    ``journy_django`` migrate to; rows written by ``track()`` and the like inside ``atomic()`` wake this
    process's relay when the transaction commits."""
    return DjangoStore(after_commit=_wake_app_relay)


def _wake_app_relay() -> None:
    backend = outbox_backend()
    if backend is not None:
        backend.wake()


def outbox_backend() -> OutboxBackend | None:
    """The app's backend when it is the outbox, else None."""
    from .conf import get_journy  # noqa: PLC0415 - conf imports the models' app registry lazily too

    backend = get_journy().backend
    return backend if isinstance(backend, OutboxBackend) else None


def write_changes(backend: OutboxBackend, changes: Iterable[Change], *, using: str | None) -> None:
    """Write the rows of ``changes`` (the operations built now) on ``using``, in its current transaction, and
    wake the relay once it commits (at once outside a transaction)."""
    operations = buffer_of(changes).operations()
    if not operations:
        return
    alias = using or DEFAULT_DB_ALIAS
    store = backend.store
    if isinstance(store, DjangoStore):
        store.add_on(alias, operations)
    else:  # a store of the app's own choosing (OPTIONS["STORE"]) writes where it writes
        store.add(operations)
    backend.stats.add("queued", len(operations))
    # Autocommit off without atomic(): no commit hook to offer; the relay's poll finds the row.
    with suppress(TransactionManagementError):
        transaction.on_commit(backend.wake, using=alias)


def outbox_backlog() -> Backlog | None:
    """The outbox's backlog (pending, dead, oldest pending age), or None when the backend is not the outbox."""
    backend = outbox_backend()
    return None if backend is None else backend.backlog()


def _uses_outbox() -> bool:
    from .conf import journy_settings  # noqa: PLC0415

    return queue_of(journy_settings()).get("BACKEND") == "outbox"


@register(Tags.database)  # type: ignore[untyped-decorator]
def check_outbox_table(databases: Iterable[str] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``journy.W005``: the ``outbox`` backend is chosen but a database it writes to has no ``journy_outbox``
    table (``migrate`` not run). A database check: ``manage.py check --database default``, ``migrate`` and
    ``journy_check`` run it."""
    try:
        if not _uses_outbox():
            return []
    except Exception:  # the settings' own checks report that
        return []
    aliases = DjangoStore().aliases if databases is None else databases
    problems: list[CheckMessage] = []
    for alias in aliases:
        if not router.allow_migrate_model(alias, OutboxRow):
            continue
        try:
            with transaction.atomic(using=alias):  # a savepoint: a failed query leaves the caller's transaction
                OutboxRow.objects.using(alias).exists()
        except DatabaseError as exc:
            problems.append(
                Warning(
                    f"The outbox table journy_outbox is missing on database {alias!r} ({exc}).",
                    hint=f"Run: manage.py migrate journy_django --database {alias}",
                    id="journy.W005",
                )
            )
    return problems


@register()  # type: ignore[untyped-decorator]
def check_sqlite_transactions(**kwargs: Any) -> list[CheckMessage]:
    """``journy.W006``: the outbox is on a SQLite database whose transactions begin deferred.

    A relay writes to the table while the app runs. SQLite then refuses, at once and whatever the ``timeout``, a
    transaction that read and now wants to write (it cannot wait without risking a deadlock): ``database is
    locked`` from a ``delete()`` or an ``m2m`` change. Transactions that take the write lock when they begin
    (``transaction_mode = "IMMEDIATE"``, Django 5.1+) wait their turn instead."""
    try:
        if not _uses_outbox():
            return []
    except Exception:  # the settings' own checks report that
        return []
    return sqlite_lock_warnings(settings.DATABASES)


def sqlite_lock_warnings(databases: Mapping[str, Mapping[str, Any]]) -> list[CheckMessage]:
    """The ``journy.W006`` warnings for ``databases`` (``settings.DATABASES``): each SQLite alias the outbox may
    be written to whose transactions begin deferred."""
    problems: list[CheckMessage] = []
    for alias, database in databases.items():
        if database.get("ENGINE") != "django.db.backends.sqlite3" or not router.allow_migrate_model(alias, OutboxRow):
            continue
        if str((database.get("OPTIONS") or {}).get("transaction_mode", "")).upper() == "IMMEDIATE":
            continue
        problems.append(
            Warning(
                f"The outbox is on SQLite database {alias!r}, whose transactions begin deferred: while a relay "
                "writes, a transaction of the app that read and then writes fails at once with 'database is locked'.",
                hint=(
                    f"Set DATABASES[{alias!r}]['OPTIONS']['transaction_mode'] = 'IMMEDIATE' (Django 5.1+); on an "
                    "older Django, put the outbox on PostgreSQL or MySQL/MariaDB."
                ),
                id="journy.W006",
            )
        )
    return problems
