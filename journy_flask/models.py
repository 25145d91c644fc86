"""Syncing the user and account models through SQLAlchemy session events, after the commit.

During each flush (``after_flush``, where ``session.new``, ``session.dirty``, ``session.deleted`` and the attribute
history still describe what the flush wrote) the hooks build finished operations from plain data: upserts for
inserted objects and for updates touching a synced column, deletes, and membership changes of the account's
members relationship. They go to the session's :class:`~journy_core.changelog.ChangeLog`, which the session's
transaction events drive: a SAVEPOINT (``begin_nested()``) opens a level, released when it commits, dropped when it
rolls back; the outermost commit queues everything in recording order, a rollback drops it. ``after_commit`` never
touches an instance (they are expired by then: reading one would run SQL inside the commit).

With the ``outbox`` backend the flush writes the operations as rows instead, through the session's own connection
(:mod:`journy_flask.outbox`): the database keeps or drops them with the transaction and its savepoints, and the
commit only wakes the in-process relay.

Listeners are attached once per session factory (a ``sessionmaker``, a ``scoped_session``, Flask-SQLAlchemy's
``db.session`` or a ``Session`` subclass) and find the app's state through ``current_app`` when there is an app
context, else through the app that attached them, so one ``db`` shared by several apps works.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from flask import current_app, has_app_context

from journy_core import operations as ops
from journy_core.changelog import Change, ChangeLog, buffer_of, delete_change, membership_change, upsert_change
from journy_core.guard import guarded, report_exception
from journy_core.pausing import pause_sync, sync_paused

from .identities import (
    account_id_of,
    account_operation,
    is_account,
    is_user,
    soft_deleted,
    user_id_of,
    user_operation,
    wants_sync,
)
from .state import JournyState

try:
    from sqlalchemy import event
    from sqlalchemy import inspect as sa_inspect

    from . import outbox

    HAS_SQLALCHEMY = True
except ImportError:  # SQLAlchemy is optional: model syncing needs it, nothing else does
    HAS_SQLALCHEMY = False

__all__ = ["attach_session_events", "pause_sync", "sync_paused"]

logger = logging.getLogger("journy")

_INFO_KEY = "journy.changelog"
_attached_lock = threading.Lock()
# id(target) -> (target, the state that attached it); the target is kept so its id is never reused.
_attached: dict[int, tuple[Any, JournyState]] = {}


def _state_for(session: Any) -> JournyState | None:
    """The app whose changes these are: the current app (None when it has no Journy: another app sharing the
    same ``db`` is none of our business), else, outside an app context, the app that attached the listeners."""
    if has_app_context():
        state: JournyState | None = current_app.extensions.get("journy")
        return state
    for target, owner in list(_attached.values()):
        if _session_matches(session, target):
            return owner
    return None


def _session_matches(session: Any, target: Any) -> bool:
    factory = getattr(target, "session_factory", target)  # scoped_session -> sessionmaker
    cls = getattr(factory, "class_", factory)  # sessionmaker -> its own Session subclass
    return isinstance(cls, type) and isinstance(session, cls)


def attach_session_events(target: Any, state: JournyState) -> None:
    """Listen to ``target``'s sessions (once per target, whatever the number of apps)."""
    with _attached_lock:
        if id(target) in _attached:
            return
        _attached[id(target)] = (target, state)
    event.listen(target, "after_transaction_create", _after_transaction_create)
    event.listen(target, "after_flush", _after_flush)
    event.listen(target, "after_commit", _after_commit)
    event.listen(target, "after_transaction_end", _after_transaction_end)


def _log(session: Any) -> ChangeLog:
    log: ChangeLog | None = session.info.get(_INFO_KEY)
    if log is None:
        log = session.info[_INFO_KEY] = ChangeLog()
    return log


def _after_transaction_create(session: Any, transaction: Any) -> None:
    # Savepoints are followed even while sync is paused or before anything was recorded: a change recorded later
    # inside this one must be dropped with it. (Subtransactions, the flush's own, are no savepoints.)
    if transaction.nested:
        _log(session).begin_savepoint(transaction)


def _after_flush(session: Any, flush_context: Any) -> None:
    session.info[outbox.FLUSHED_KEY] = True  # this transaction wrote: a track() joins it (journy_flask.outbox)
    if sync_paused():
        return
    state = _state_for(session)
    if state is None or not state.settings.enabled or not state.syncs_models:
        return
    backend, store, operations = state.journy.backend, None, None
    with guarded("recording model changes for journy.io", loud=state.debug):
        if session.get_transaction() is None:
            return
        recorded = _changes(state, session)
        store = outbox.session_store(backend)
        if store is None:
            _log(session).record(*recorded)
        else:
            operations = buffer_of(recorded).operations()
    if store is not None and operations:
        # Outside the guard: a row that cannot be written must fail the flush, or the change would commit without
        # its call (the outbox's promise). The session's savepoints and rollback take the rows with them.
        outbox.write_changes(session, backend, store, operations)


def _changes(state: JournyState, session: Any) -> list[Change]:
    """What this flush wrote to the synced models, as changes."""
    recorded: list[Change] = []
    # One object's failure (a property map naming what it lacks, a property that raises) skips that object
    # alone: the rest of the commit is still sent. The log's name for the object is made only then: reading its
    # primary key costs more than recording most changes.
    steps = ((session.new, _record_inserted), (session.dirty, _record_updated), (session.deleted, _record_delete))
    for objects, record in steps:
        for obj in objects:
            try:
                record(state, obj, recorded)
            except Exception:
                report_exception(_syncing(obj), loud=state.debug)
    return recorded


def _syncing(obj: Any) -> str:
    """``syncing app.models.User (id 42) to journy.io``: what the log names when one object cannot be synced."""
    # After the flush the primary key is set, while the object may still count as new (no identity key yet).
    key = [part for part in sa_inspect(obj).mapper.primary_key_from_instance(obj) if part is not None]
    ident = ", ".join(str(part) for part in key) if key else "not yet saved"
    return f"syncing {type(obj).__module__}.{type(obj).__qualname__} (id {ident}) to journy.io; skipped it alone"


def _synced_columns_changed(state: JournyState, obj: Any, *, account: bool) -> bool:
    insp = sa_inspect(obj)
    attrs = insp.attrs
    return any(attrs[name].history.has_changes() for name in _watched(state, insp.mapper, account=account))


def _watched(state: JournyState, mapper: Any, *, account: bool) -> frozenset[str]:
    """:func:`_watched_columns` of ``mapper``, worked out once per class and settings instead of at every flush."""
    cache = state.watched_columns
    if state.watched_settings is not state.settings:  # settings swapped (the test helpers do): start over
        cache.clear()
        state.watched_settings = state.settings
    watched: frozenset[str] | None = cache.get((mapper, account))
    if watched is None:
        names = _watched_columns(state.settings, mapper, account=account)
        watched = cache[mapper, account] = frozenset(name for name in names if name in mapper.attrs)
    return watched


def _watched_columns(settings: Any, mapper: Any, *, account: bool) -> set[str]:
    """The columns whose change is worth a call: the mapped properties, the ID, email or domain, the primary key and
    the soft-delete column; every column when a callable decides the properties or the soft delete."""
    properties = settings.account_properties if account else settings.user_properties
    fields = None if properties is None else properties.fields
    deleted = settings.account_deleted if account else settings.user_deleted
    deleted_fields = getattr(deleted, "fields", None)  # the column that deletes or restores
    if (fields is None and properties is not None) or (deleted is not None and deleted_fields is None):
        return {prop.key for prop in mapper.column_attrs}  # a callable decides: any column may matter
    watched = set(fields or ())
    watched.update(_named_columns(settings, account=account, deleted_fields=deleted_fields or ()))
    watched.update(prop.key for prop in mapper.column_attrs if prop.columns[0].primary_key)
    return watched


def _named_columns(settings: Any, *, account: bool, deleted_fields: Iterable[str]) -> list[str]:
    """The ID, email (or domain) and soft-delete attributes the settings name (callables left out)."""
    if account:
        named = (settings.account_domain_field, settings.account_id, *deleted_fields)
    else:
        named = (settings.user_email, settings.user_id, *deleted_fields)
    return [name for name in named if isinstance(name, str)]


def _record_save(state: JournyState, obj: Any, recorded: list[Change], *, inserted: bool) -> None:
    # A soft-deleted object (JOURNY_USER_DELETED / JOURNY_ACCOUNT_DELETED) is recorded as its delete: the change
    # log keeps the last flush's, so the state at the commit decides; restored, the next flush upserts it again.
    settings = state.settings
    if is_user(settings, obj):
        if not wants_sync(settings, obj):
            return
        if inserted or _synced_columns_changed(state, obj, account=False):
            deleted = soft_deleted(settings, obj)
            operation = user_operation(settings, obj, delete=deleted)
            if operation is not None:
                key = ("user", operation.payload["identification"].get("userId"))
                recorded.append(delete_change(key, operation) if deleted else upsert_change(key, operation))
        _record_memberships_of_user(state, obj, recorded)
    elif is_account(settings, obj):
        account_id = account_id_of(settings, obj)
        if account_id is None or not wants_sync(settings, obj):
            return
        if inserted or _synced_columns_changed(state, obj, account=True):
            deleted = soft_deleted(settings, obj)
            operation = account_operation(settings, obj, delete=deleted)
            if operation is not None:
                key = ("account", account_id)
                recorded.append(delete_change(key, operation) if deleted else upsert_change(key, operation))
        _record_members(state, obj, account_id, recorded)


def _record_inserted(state: JournyState, obj: Any, recorded: list[Change]) -> None:
    _record_save(state, obj, recorded, inserted=True)


def _record_updated(state: JournyState, obj: Any, recorded: list[Change]) -> None:
    _record_save(state, obj, recorded, inserted=False)


def _record_members(state: JournyState, account: Any, account_id: str, recorded: list[Change]) -> None:
    name = state.settings.account_members
    if name is None:
        return
    history = sa_inspect(account).attrs[name].history
    account_gone = soft_deleted(state.settings, account)
    for action, users in (("add", history.added), ("remove", history.deleted)):
        for user in users or ():
            if action == "add" and (account_gone or soft_deleted(state.settings, user)):
                continue  # an add would bring a soft-deleted user or account back in journy.io
            user_id = user_id_of(state.settings, user)
            if user_id is not None and wants_sync(state.settings, user):
                recorded.append(membership_change(action, {"account_id": account_id}, {"user_id": user_id}))


def reverse_members(settings: Any) -> str | None:
    """The user model's side of ``JOURNY_ACCOUNT_MEMBERS`` (its ``back_populates`` or ``backref``), if any."""
    if settings.account_model is None or settings.account_members is None:
        return None
    relationships = sa_inspect(settings.account_model).relationships
    if settings.account_members not in relationships:
        return None
    prop = relationships[settings.account_members]
    if prop.back_populates:
        return str(prop.back_populates)
    backref = prop.backref
    if isinstance(backref, str):
        return backref
    if isinstance(backref, tuple) and backref:
        return str(backref[0])
    return None


def _record_memberships_of_user(state: JournyState, user: Any, recorded: list[Change]) -> None:
    """Membership changes made from the user's side (``user.teams.append(team)``, ``user.team = team``): the
    account's collection may not be loaded, so its own history may not show them."""
    settings = state.settings
    reverse = reverse_members(settings)
    if reverse is None:
        return
    history = sa_inspect(user).attrs[reverse].history
    user_id = user_id_of(settings, user)
    if user_id is None:
        return
    user_gone = soft_deleted(settings, user)
    for action, accounts in (("add", history.added), ("remove", history.deleted)):
        for account in accounts or ():
            if account is None or not wants_sync(settings, account):
                continue
            if action == "add" and (user_gone or soft_deleted(settings, account)):
                continue  # as in _record_members
            account_id = account_id_of(settings, account)
            if account_id is not None:
                recorded.append(membership_change(action, {"account_id": account_id}, {"user_id": user_id}))


def _record_delete(state: JournyState, obj: Any, recorded: list[Change]) -> None:
    settings = state.settings
    if is_user(settings, obj) and wants_sync(settings, obj):
        user_id = user_id_of(settings, obj)
        if user_id is not None:
            recorded.append(delete_change(("user", user_id), ops.delete_user(user_id=user_id)))
    elif is_account(settings, obj) and wants_sync(settings, obj):
        account_id = account_id_of(settings, obj)
        if account_id is not None:
            recorded.append(delete_change(("account", account_id), ops.delete_account(account_id=account_id)))


def _after_commit(session: Any) -> None:
    if session.get_nested_transaction() is None and session.info.pop(outbox.ROWS_KEY, False):
        _wake_relay(session)
    log: ChangeLog | None = session.info.get(_INFO_KEY)
    if log is None:
        return
    savepoint = session.get_nested_transaction()
    if savepoint is not None:
        # SQLAlchemy reports a released SAVEPOINT as a commit too: its changes now belong to the level around it.
        log.release_savepoint(savepoint)
        return
    if not log:
        log.rollback()  # nothing to send; forget any savepoint left open
        return
    buffer = log.commit()
    state = _state_for(session)
    if state is None:
        return
    with guarded("queueing model changes for journy.io", loud=state.debug):
        # One transaction's changes, together and in order: one message with the distributed backends.
        state.enqueue_many(buffer.operations())


def _wake_relay(session: Any) -> None:
    """This commit wrote outbox rows: the in-process relay delivers them now rather than at its next poll."""
    state = _state_for(session)
    if state is not None:
        wake = getattr(state.journy.backend, "wake", None)
        if wake is not None:
            wake()  # never raises


def _after_transaction_end(session: Any, transaction: Any) -> None:
    info = session.info
    if not info:  # nothing recorded, nothing flushed: every read-only request's transaction
        return
    if transaction.parent is None and not transaction.nested:
        info.pop(outbox.FLUSHED_KEY, None)
        info.pop(outbox.ROWS_KEY, None)
    log: ChangeLog | None = info.get(_INFO_KEY)
    if log is None:
        return
    if transaction.nested:
        # Not released by a commit (after_commit did that), so rolled back, or closed with its session: what it
        # recorded never reached the database for good. A released one is no longer in the log.
        log.rollback_savepoint(transaction)
    elif transaction.parent is None:
        # The outermost transaction ended without a commit (rolled back, or closed): nothing of it is sent. After a
        # commit the log is already empty.
        log.rollback()
