# mypy: disable-error-code="import-untyped"
"""Model sync: users and accounts reach journy.io after each commit that changes them.

The signal receivers (connected in ``AppConfig.ready()``) record changes with
:func:`~journy_django.transactions.record_change`; nothing is queued before the commit or after a rollback. With the
``outbox`` backend they write each change's rows at the signal instead, in the transaction, on the object's database
alias (:func:`journy_django.outbox_sync.write_changes`): the rows commit or roll back with the change.

- ``post_save`` of the user model or ``JOURNY["ACCOUNT_MODEL"]``: an upsert built from the final state at commit; a
  save whose ``update_fields`` touch no synced field (``last_login`` at each login) records nothing.
- ``post_delete``: a delete (which replaces the upserts of the same transaction).
- a save of an object soft-deleted at the commit (``JOURNY["USER_DELETED"]`` / ``["ACCOUNT_DELETED"]``): a delete
  instead of the upsert; restored, the next save upserts it again. No membership is added to it meanwhile.
- ``m2m_changed`` on the ``JOURNY["ACCOUNT_MEMBERS"]`` relation (add, remove, clear, from either side): membership
  calls, grouped per account.

:func:`pause_sync` (a context manager and a decorator) stops recording in the current thread or task, for bulk
imports, migrations and tests; an object opts out with a ``journy_should_sync()`` method returning False, or
``JOURNY["SHOULD_SYNC"]``. Nothing here raises into the app's ``save()``: errors are logged (loudly with DEBUG); but
with the outbox, a row that cannot be written (the table missing) fails the ``save()``, as the transaction must not
commit the change without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save

from journy_core import operations as ops
from journy_core.changelog import Change, delete_change, membership_change, upsert_change
from journy_core.changes import ChangeBuffer
from journy_core.filters import should_sync as core_should_sync
from journy_core.guard import guarded
from journy_core.operations import MAX_USERS_PER_MEMBERSHIP_CALL, Operation
from journy_core.outbox.backend import OutboxBackend
from journy_core.pausing import pause_sync, sync_paused

from .conf import get_journy, journy_settings
from .identity import (
    account_identity,
    account_model,
    delete_operation,
    is_account,
    is_user,
    kept_for_memberships,
    member_id,
    members_of,
    members_relation,
    save_operation,
    soft_deleted,
    synced_fields,
)
from .transactions import record_change

__all__ = ["is_paused", "pause_sync", "should_sync", "sync"]

logger = logging.getLogger("journy")

#: Whether :class:`pause_sync` is active in this thread or task (the name this app has always exported).
is_paused = sync_paused


def should_sync(obj: models.Model) -> bool:
    """The per-object opt-out (:func:`journy_core.filters.should_sync`): ``obj.journy_should_sync()`` and
    ``JOURNY["SHOULD_SYNC"](obj)`` must not be False; with ``SKIP_STAFF`` staff users are not synced."""
    return core_should_sync(journy_settings(), obj, is_user=is_user(obj))


def _enqueue(buffer: ChangeBuffer) -> None:
    # One transaction's changes, together and in order: one message with the distributed backends.
    with guarded("queueing model changes for journy.io", loud=settings.DEBUG):
        get_journy().enqueue_many(buffer.operations())


def _record(change: Change, using: str | None) -> None:
    """Write the change's rows now with the outbox, else keep it in the change log until the commit. A failed
    write of a row raises into the app's ``save()``: the transaction must not commit the change without it."""
    backend = None
    with guarded("finding the journy.io queue backend", loud=settings.DEBUG):
        backend = get_journy().backend
    if isinstance(backend, OutboxBackend):
        from .outbox_sync import write_changes  # noqa: PLC0415 - imports the models: not before the app registry

        write_changes(backend, [change], using=using)
    else:
        record_change(change, using=using, enqueue=_enqueue)


def _builder(obj: models.Model) -> Callable[[], Operation | None]:
    def build() -> Operation | None:
        # Called at commit, from the object's final state (at the signal with the outbox, which merges later).
        # The opt-out, and whether it is soft-deleted (a delete then), are asked again with that state.
        operation = None
        with guarded(f"syncing {type(obj).__name__} {obj.pk}", loud=settings.DEBUG):
            if should_sync(obj):
                operation = save_operation(obj)
        return operation

    return build


def _synced_model(sender: type[models.Model]) -> str | None:
    """``"user"``, ``"account"`` or None for a model the app does not sync (the fast path of every save)."""
    concrete = sender._meta.concrete_model  # proxies of the user or account model count as them
    if concrete is get_user_model()._meta.concrete_model:
        return "user" if journy_settings()["SYNC_USERS"] else None
    accounts = account_model()
    if accounts is not None and concrete is accounts._meta.concrete_model:
        return "account"
    return None


def on_post_save(
    sender: type[models.Model], instance: models.Model, update_fields: Iterable[str] | None = None, **kwargs: Any
) -> None:
    if sync_paused() or kwargs.get("raw"):  # raw: loaddata fixtures
        return
    change: Change | None = None
    with guarded(f"recording a save of {sender.__name__}", loud=settings.DEBUG):
        config = journy_settings()
        if not config.enabled:
            return
        kind = _synced_model(sender)
        if kind is None:
            return
        if update_fields is not None:
            fields = synced_fields(sender)
            if fields is not None and not fields.intersection(update_fields):
                return
        change = upsert_change((kind, instance.pk), _builder(instance))
    if change is not None:
        _record(change, kwargs.get("using"))


def on_post_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if sync_paused():
        return
    change: Change | None = None
    with guarded(f"recording a delete of {sender.__name__}", loud=settings.DEBUG):
        if not journy_settings().enabled:
            return
        kind = _synced_model(sender)
        if kind is None or not should_sync(instance):
            return
        change = delete_change((kind, instance.pk), delete_operation(instance, instance.pk))
    if change is not None:
        _record(change, kwargs.get("using"))


_CLEARED = "_journy_cleared_members"


def _remember_cleared(relation: Any, instance: models.Model, from_account: bool, using: str | None) -> None:
    """Before a ``clear()``: who is about to be removed, which ``post_clear`` does not say (the rows are gone)."""
    mine, other = (
        (relation.account_attname, relation.user_attname)
        if from_account
        else (relation.user_attname, relation.account_attname)
    )
    rows = relation.through._default_manager.using(using).filter(**{mine: instance.pk}).values_list(other, flat=True)
    setattr(instance, _CLEARED, list(rows))


def _membership_of(action: str, instance: models.Model, pk_set: set[Any] | None) -> tuple[str, set[Any]] | None:
    """``("add" | "remove", the other side's keys)`` for an ``m2m_changed`` action that changes memberships."""
    if action == "post_clear":
        return "remove", set(instance.__dict__.pop(_CLEARED, []))
    if action in ("post_add", "post_remove"):
        return ("add" if action == "post_add" else "remove"), set(pk_set or ())
    return None


def on_m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    pk_set: set[Any] | None = None,
    **kwargs: Any,
) -> None:
    if sync_paused():
        return
    recorded: Change | None = None
    with guarded(f"recording a membership change ({action})", loud=settings.DEBUG):
        if not journy_settings().enabled:
            return
        relation = members_relation()
        if relation is None or sender is not relation.through:
            return
        from_account = is_account(instance)
        if action == "pre_clear":
            _remember_cleared(relation, instance, from_account, kwargs.get("using"))
            return
        found = _membership_of(action, instance, pk_set)
        if found is None:
            return
        membership, pk_set = found
        # An add would bring a soft-deleted user or account back in journy.io; a user or account not synced is
        # named in no membership call (as with Flask's session events).
        if (membership == "add" and soft_deleted(instance)) or not should_sync(instance):
            return
        pk_set = kept_for_memberships(from_account, pk_set, kwargs.get("using"), adding=membership == "add")
        if not pk_set:
            return
        pairs = [(instance.pk, other) if from_account else (other, instance.pk) for other in pk_set]
        changes = [
            membership_change(membership, {"account_id": account_pk}, {"user_id": user_pk})
            for account_pk, user_pk in sorted(pairs, key=str)
        ]

        def apply(buffer: ChangeBuffer) -> None:
            for change in changes:
                change(buffer)

        recorded = apply
    if recorded is not None:
        _record(recorded, kwargs.get("using"))


def sync(obj: models.Model, *, members: bool = False) -> None:
    """Queue an upsert of a user or account now (not waiting for a commit), whatever pause or opt-out says; its
    delete when it is soft-deleted (``USER_DELETED`` / ``ACCOUNT_DELETED``).

    With ``members=True`` (an account that is not soft-deleted), also queue the addition of its current members.

    >>> journy_django.sync(request.user)          # doctest: +SKIP
    """
    operation = save_operation(obj)
    operations = [operation]
    if members and operation.kind == "upsert_account":
        operations.extend(membership_operations(obj))
    get_journy().enqueue_many(operations)


def membership_operations(account: models.Model) -> Iterator[Operation]:
    """``add_users_to_account`` calls of at most 100 users for every member of ``account`` that is not
    soft-deleted (``USER_DELETED``: its delete was sent, and an addition would bring it back in journy.io)."""
    batch: list[Any] = []
    ident = account_identity(account)
    # Members read from the relation are primary keys: their soft deletes are asked of the database, per call.
    using = account._state.db if members_relation() is not None else None
    for user in members_of(account):
        if isinstance(user, models.Model) and (soft_deleted(user) or not should_sync(user)):
            continue
        batch.append(member_id(user))
        if len(batch) == MAX_USERS_PER_MEMBERSHIP_CALL:
            yield from _additions(ident, batch, using)
            batch = []
    if batch:
        yield from _additions(ident, batch, using)


def _additions(ident: dict[str, Any], user_ids: list[Any], using: str | None) -> Iterator[Operation]:
    if using is not None:
        kept = kept_for_memberships(True, set(user_ids), using)
        user_ids = [user_id for user_id in user_ids if user_id in kept]
    if user_ids:
        yield ops.add_users_to_account(**ident, users=user_ids)


def connect() -> None:
    """Connect the receivers (``AppConfig.ready()`` does it); every model, filtered cheaply in the receiver, so
    that ``override_settings(JOURNY=...)`` may change the account model."""
    post_save.connect(on_post_save, dispatch_uid="journy_django.sync.post_save")
    post_delete.connect(on_post_delete, dispatch_uid="journy_django.sync.post_delete")
    m2m_changed.connect(on_m2m_changed, dispatch_uid="journy_django.sync.m2m_changed")
