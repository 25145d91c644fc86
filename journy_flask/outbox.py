"""The ``outbox`` backend in Flask: the table in the app's metadata, the store on the watched session's engine, and
the rows of model changes written in the session's own transaction.

With ``JOURNY_QUEUE = {"BACKEND": "outbox"}`` and Flask-SQLAlchemy, ``init_app`` adds the ``journy_outbox`` table to
the metadata of ``JOURNY_USER_MODEL`` (Flask-SQLAlchemy's ``db.metadata``), so ``db.create_all()`` creates it and
``flask db migrate`` (Alembic autogenerate) writes its migration, and fills ``OPTIONS["STORE"]`` with a
:class:`FlaskStore` on the engine those models live in. To keep the table in the metadata whatever the backend of
the configuration in use (so autogenerate never proposes to drop it), call :func:`outbox_table` in your models
module: ``outbox_table(db.metadata)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask, has_app_context

from journy_core import ConfigurationError
from journy_core.backends import Backend, backend_class
from journy_core.operations import Operation
from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.sqlalchemy import OUTBOX_METADATA, SQLAlchemyStore, add_in, outbox_table

from .settings import Settings
from .state import session_target

try:
    from sqlalchemy import Engine, Table
    from sqlalchemy import inspect as sa_inspect
except ImportError:  # the outbox needs SQLAlchemy; init_app says so when it is configured without it
    pass

__all__ = [
    "OUTBOX_METADATA",
    "FlaskStore",
    "configure_outbox",
    "fallback_store",
    "outbox_table",
    "session_store",
    "uses_outbox",
    "write_changes",
    "write_rows",
]

logger = logging.getLogger("journy")

#: ``session.info`` key: this transaction flushed something (so a ``track()`` joins it rather than waiting on it).
FLUSHED_KEY = "journy.flushed"
#: ``session.info`` key: this transaction wrote outbox rows (so its commit wakes the in-process relay).
ROWS_KEY = "journy.outbox_rows"


def uses_outbox(settings: Settings) -> bool:
    """Whether the configuration delivers through the ``outbox`` backend (by name, or a dotted path to it or a
    subclass); a backend that cannot be loaded is not (building the queue reports it)."""
    if not settings.enabled or not settings.queue:
        return False
    try:
        return issubclass(backend_class(settings.queue.get("BACKEND", "thread")), OutboxBackend)
    except ConfigurationError:
        return False


class FlaskStore(SQLAlchemyStore):
    """The SQLAlchemy store of a Flask app: :meth:`add` (``track()``, ``link``, ``journy.sync()``) joins the
    watched session's transaction when that transaction has already written, and commits on its own otherwise.

    Joining keeps such an operation with the changes it goes with (committed together, rolled back together) and,
    on SQLite, keeps it from waiting on the write lock the session holds. A session that has only read is not
    joined: a request that never commits would silently take the operation with it.
    """

    def __init__(self, engine: Engine, table: Table, session_target: Any) -> None:
        super().__init__(engine, table)
        self.engine = engine
        self.session_target = session_target

    def add(self, operations: Sequence[Operation]) -> None:
        """Write rows for ``operations``: in the current session's transaction if it has written, else in one of
        their own."""
        session = self._writing_session()
        if session is None:
            super().add(operations)
        else:
            # A write that fails (the backend logs and counts it) must not take the session's transaction with it
            # (on PostgreSQL a failed statement aborts the whole transaction): its own savepoint is rolled back alone.
            write_rows(session, self, operations, savepoint=True)

    def _writing_session(self) -> Any:
        registry = getattr(self.session_target, "registry", None)  # a scoped_session (Flask-SQLAlchemy's db.session)
        if registry is None:
            return None
        try:
            if not registry.has():
                return None
        except RuntimeError:  # Flask-SQLAlchemy's scope is the app context: outside one, no current session
            return None
        session = self.session_target()
        return session if session.info.get(FLUSHED_KEY) and session.in_transaction() else None


def write_rows(
    session: Any, store: SQLAlchemyStore, operations: Sequence[Operation], *, savepoint: bool = False
) -> None:
    """Write rows for ``operations`` in ``session``'s transaction, on the store's engine; its commit wakes the
    relay. Database errors propagate: the transaction could not commit its rows, so it must not commit at all.
    ``savepoint``: in a savepoint of their own, so that a failed write leaves the transaction usable."""
    if not operations:
        return
    engine = store.bind if isinstance(store.bind, Engine) else None
    connection = session.connection(bind_arguments={"bind": engine}) if engine is not None else session.connection()
    if savepoint:
        with connection.begin_nested():
            add_in(connection, operations, store.table)
    else:
        add_in(connection, operations, store.table)
    session.info[ROWS_KEY] = True


def write_changes(session: Any, backend: Backend, store: SQLAlchemyStore, operations: Sequence[Operation]) -> None:
    """The rows of a flush's model changes, in the session's transaction, counted ``queued``."""
    if operations:
        write_rows(session, store, operations)
        backend.stats.add("queued", len(operations))


def session_store(backend: Any) -> SQLAlchemyStore | None:
    """The SQLAlchemy store whose table model changes are written to in the session's transaction, when the
    backend in use is the ``outbox`` over one (not during ``capture_operations``, which swaps in ``memory``)."""
    if not isinstance(backend, OutboxBackend):
        return None
    store = backend.store
    return store if isinstance(store, SQLAlchemyStore) else None


def configure_outbox(app: Flask, settings: Settings, target: Any) -> Settings:
    """``settings`` with ``QUEUE["OPTIONS"]["STORE"]`` filled in (when the backend is ``outbox`` and it is unset): a
    :class:`FlaskStore` on the engine of the watched models, its table added to their metadata."""
    if not uses_outbox(settings):
        return settings
    queue = dict(settings.queue or {})
    options = dict(queue.get("OPTIONS") or {})
    if options.get("STORE") is not None:
        return settings
    if target is None:
        extension = app.extensions.get("sqlalchemy")
        target = getattr(extension, "session", None)
    if target is None:
        raise ConfigurationError(
            "JOURNY_QUEUE = {'BACKEND': 'outbox'} writes to a table of the app's database: call db.init_app(app) "
            "(Flask-SQLAlchemy) before journy.init_app(app), set JOURNY_SESSION to your sessionmaker or "
            "scoped_session, or give JOURNY_QUEUE['OPTIONS']['STORE'] "
            "(journy_core.outbox.sqlalchemy.SQLAlchemyStore(engine))."
        )
    model = settings.user_model or settings.account_model
    table = outbox_table(_metadata_of(app, model))
    engine = _engine_of(app, target, model)
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        logger.warning(
            "journy: the outbox is on an in-memory SQLite database: other processes cannot relay its rows, and its "
            "one connection is shared by the app and the relay thread. Use a database file or server."
        )
    options["STORE"] = FlaskStore(engine, table, target)
    queue["OPTIONS"] = options
    return dataclasses.replace(settings, queue=queue)


def fallback_store(app: Flask, settings: Settings) -> SQLAlchemyStore:
    """A store on the watched session's engine, for the commands when the backend is no longer ``outbox`` (rows
    left from before are still delivered, listed, retried, purged)."""
    target = session_target(app, settings)
    if target is None:
        raise ConfigurationError(
            "No SQLAlchemy session to find the outbox table with (Flask-SQLAlchemy or JOURNY_SESSION)."
        )
    model = settings.user_model or settings.account_model
    return SQLAlchemyStore(_engine_of(app, target, model), outbox_table(_metadata_of(app, model)))


def _metadata_of(app: Flask, model: Any) -> Any:
    """The metadata the app creates and migrates its tables from: its user model's, else Flask-SQLAlchemy's."""
    mapper = sa_inspect(model, raiseerr=False) if model is not None else None
    if mapper is not None and getattr(mapper, "local_table", None) is not None:
        return mapper.local_table.metadata
    extension = app.extensions.get("sqlalchemy")
    metadata = getattr(extension, "metadata", None)
    return metadata if metadata is not None else OUTBOX_METADATA


def _engine_of(app: Flask, target: Any, model: Any) -> Engine:
    """The engine the watched session writes ``model`` with (Flask-SQLAlchemy finds it through the app)."""
    mapper = sa_inspect(model, raiseerr=False) if model is not None else None
    factory = getattr(target, "session_factory", target)  # a session of our own, never the app's current one
    with contextlib.nullcontext() if has_app_context() else app.app_context():
        session = factory()
        try:
            bind = session.get_bind(mapper=mapper)
        except Exception as exc:
            raise ConfigurationError(
                f"JOURNY_QUEUE = {{'BACKEND': 'outbox'}}: the watched session has no engine for its rows ({exc})."
            ) from exc
        finally:
            session.close()
    engine: Engine = bind if isinstance(bind, Engine) else bind.engine
    return engine
