# mypy: disable-error-code="import-untyped"
"""Changes recorded during a database transaction, queued once it commits: never before, never on rollback.

Each recorded change registers a small marker with ``transaction.on_commit(..., robust=True)``. Django drops the
markers of a savepoint that rolls back (``atomic()`` blocks nested in the transaction) and of a transaction that
rolls back, so after the commit the markers that ran are exactly the changes that were committed. One flush per
transaction, kept after every marker, then replays the confirmed changes into a
:class:`~journy_core.changes.ChangeBuffer`: many saves of one object become one upsert built from its final state,
membership changes are grouped by account.

The flush is appended to the connection's list of commit hooks without savepoint IDs (Django's own
``on_commit`` would tie it to the innermost savepoint, and a rollback of that savepoint would drop it while later
changes still need it). That list is Django's (``(savepoint_ids, callback, robust)`` entries since 4.2, read by
``captureOnCommitCallbacks`` too); if its shape ever changes, the flush falls back to a plain ``on_commit``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

from journy_core.changes import ChangeBuffer
from journy_core.guard import guarded

__all__ = ["record_change"]

logger = logging.getLogger("journy")

_ATTRIBUTE = "_journy_pending_changes"

#: A change applies itself to the buffer the flush replays into.
Change = Callable[[ChangeBuffer], None]


class _Entry:
    __slots__ = ("apply", "committed")

    def __init__(self, apply: Change) -> None:
        self.apply = apply
        self.committed = False

    def confirm(self) -> None:
        self.committed = True


class _PendingChanges:
    """The changes of one transaction on one connection."""

    def __init__(self, connection: Any, enqueue: Callable[[ChangeBuffer], None]) -> None:
        self.connection = connection
        self.enqueue = enqueue
        self.entries: list[_Entry] = []
        self.hooks: Any = connection.run_on_commit  # the list object the flush hook was put in
        self.flush_hook: tuple[Any, ...] | None = None
        self.generation = 0
        self.done = False

    def belongs_to_current_transaction(self) -> bool:
        if self.done:
            return False
        hooks = self.connection.run_on_commit
        if hooks is self.hooks:
            return True
        # A savepoint rollback rebuilds the list (keeping the flush hook); a full rollback empties it.
        if self.flush_hook is not None and any(hook is self.flush_hook for hook in hooks):
            self.hooks = hooks
            return True
        return False

    def add(self, change: Change, using: str | None) -> None:
        entry = _Entry(change)
        self.entries.append(entry)
        transaction.on_commit(entry.confirm, using=using, robust=True)
        self._keep_flush_last(using)

    def _keep_flush_last(self, using: str | None) -> None:
        hooks = self.connection.run_on_commit
        if self.flush_hook is not None and hooks and hooks[-1] is self.flush_hook:
            return
        if _known_layout(hooks):
            # A new flush at the end; the one before it becomes a no-op (its generation is stale).
            self.generation += 1
            hook: tuple[set[str], Callable[[], None], bool] = (set(), self._flush_hook(self.generation), True)
            hooks.append(hook)
            self.hooks, self.flush_hook = hooks, hook
        else:
            # An unknown layout: a public on_commit after each change, sending what is confirmed so far. Correct,
            # but saves of one object in one transaction may then send more than one upsert.
            transaction.on_commit(self._send_confirmed, using=using, robust=True)
            self.flush_hook = ()

    def _flush_hook(self, generation: int) -> Callable[[], None]:
        def flush() -> None:
            self.flush(generation)

        flush.__qualname__ = "journy_django.transactions.flush"  # what Django's log names if it ever raised
        return flush

    def flush(self, generation: int) -> None:
        if generation != self.generation or self.done:
            return  # a later flush hook took over
        self.done = True
        if getattr(self.connection, _ATTRIBUTE, None) is self:
            delattr(self.connection, _ATTRIBUTE)
        self._send_confirmed()

    def _send_confirmed(self) -> None:
        buffer = ChangeBuffer()
        remaining = []
        for entry in self.entries:
            if entry.committed:
                entry.apply(buffer)
            else:
                remaining.append(entry)
        self.entries = remaining if not self.done else []
        if buffer:
            self.enqueue(buffer)


def _known_layout(hooks: object) -> bool:
    """Whether the connection's commit hooks are the list of ``(savepoint_ids, callback, robust)`` of Django 4.2+."""
    return isinstance(hooks, list) and (not hooks or (isinstance(hooks[-1], tuple) and len(hooks[-1]) == 3))


def record_change(change: Change, *, using: str | None, enqueue: Callable[[ChangeBuffer], None]) -> None:
    """Queue ``change`` once the current transaction on ``using`` commits (at once outside a transaction)."""
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        # Autocommit: the statement that triggered the signal has already committed.
        buffer = ChangeBuffer()
        change(buffer)
        enqueue(buffer)
        return
    pending: _PendingChanges | None = getattr(connection, _ATTRIBUTE, None)
    if pending is None or not pending.belongs_to_current_transaction():
        pending = _PendingChanges(connection, enqueue)
        setattr(connection, _ATTRIBUTE, pending)
    with guarded("recording a change for journy.io", loud=settings.DEBUG):
        pending.add(change, using)
