"""The per-transaction change log: what model hooks record during a transaction, emitted once it commits.

Nothing is sent before the commit, nothing on rollback; changes made in a savepoint that rolls back are dropped and
the rest of the transaction is sent. The changes of one commit are replayed, in the order they were recorded, into
one :class:`~journy_core.changes.ChangeBuffer`, so its rules apply to the whole commit: many saves of one object make
one upsert, a delete replaces the upserts before it, a membership of a user or account deleted in the same commit is
not sent.

A framework tells how a transaction ends in one of two ways, and each has its log here:

- :class:`ChangeLog`, for a framework that reports every savepoint and the outermost commit or rollback (SQLAlchemy's
  session events): a change goes to the innermost open savepoint; releasing a savepoint hands its changes to the
  level around it, rolling back to one drops them (and those of the savepoints opened inside it).
- :class:`CommitCallbackLog`, for a framework that reports no savepoint but runs a callback registered during the
  transaction after the outermost commit, in registration order, and discards the callbacks of a savepoint or
  transaction that rolls back (Django's ``transaction.on_commit``): each change gets its own callback; the changes
  whose callbacks ran are the committed ones.

A :data:`Change` applies itself to a buffer; :func:`upsert_change`, :func:`delete_change` and
:func:`membership_change` make the usual ones.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from .changes import Builder, ChangeBuffer
from .operations import Operation

__all__ = [
    "Change",
    "ChangeLog",
    "CommitCallbackLog",
    "buffer_of",
    "delete_change",
    "membership_change",
    "upsert_change",
]

#: One recorded change: applied to the buffer of its commit, in recording order.
Change = Callable[[ChangeBuffer], None]


def upsert_change(key: Hashable, change: Operation | Builder) -> Change:
    """A save of the object ``key`` (``("user", 42)``): a finished operation, or a builder called at the commit."""

    def apply(buffer: ChangeBuffer) -> None:
        buffer.upsert(key, change)

    return apply


def delete_change(key: Hashable, operation: Operation) -> Change:
    """A delete of the object ``key``."""

    def apply(buffer: ChangeBuffer) -> None:
        buffer.delete(key, operation)

    return apply


def membership_change(action: str, account: Mapping[str, Any], user: Mapping[str, Any]) -> Change:
    """``user`` (``{"user_id": ...}``) joined (``"add"``) or left (``"remove"``) ``account``."""

    def apply(buffer: ChangeBuffer) -> None:
        buffer.membership(action, account, user)

    return apply


def buffer_of(changes: Iterable[Change]) -> ChangeBuffer:
    """The buffer ``changes`` come to, applied in order."""
    buffer = ChangeBuffer()
    for change in changes:
        change(buffer)
    return buffer


class ChangeLog:
    """The changes of one session's transaction, by savepoint, for a framework that reports each savepoint.

    >>> log = ChangeLog()
    >>> log.record(upsert_change(("user", 1), operation))          # doctest: +SKIP
    >>> log.begin_savepoint("sp1")
    >>> log.record(delete_change(("user", 2), other))               # doctest: +SKIP
    >>> log.rollback_savepoint("sp1")                               # the delete is dropped
    >>> log.commit().operations()                                   # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._changes: list[Change] = []
        # (savepoint token, where its changes start in _changes), innermost last. A released savepoint's changes
        # stay where they are: they simply belong to the level around it from then on.
        self._savepoints: list[tuple[object, int]] = []

    def __len__(self) -> int:
        """How many changes are recorded in the open transaction."""
        return len(self._changes)

    @property
    def depth(self) -> int:
        """How many savepoints are open."""
        return len(self._savepoints)

    def record(self, *changes: Change) -> None:
        """Record ``changes`` in the innermost open savepoint (or the transaction itself)."""
        self._changes.extend(changes)

    def begin_savepoint(self, token: object = None) -> None:
        """A savepoint opened; ``token`` names it for :meth:`release_savepoint` and :meth:`rollback_savepoint`."""
        self._savepoints.append((token, len(self._changes)))

    def release_savepoint(self, token: object = None) -> None:
        """The savepoint ``token`` (default: the innermost) was released: its changes, and those of the savepoints
        still open inside it, now belong to the level around it. An unknown token is ignored."""
        index = self._find(token)
        if index is not None:
            del self._savepoints[index:]

    def rollback_savepoint(self, token: object = None) -> None:
        """The transaction rolled back to the savepoint ``token`` (default: the innermost): its changes, and those
        of the savepoints opened inside it, never happened. An unknown token (already released) is ignored."""
        index = self._find(token)
        if index is not None:
            del self._changes[self._savepoints[index][1] :]
            del self._savepoints[index:]

    def commit(self) -> ChangeBuffer:
        """The outermost transaction committed: everything recorded, in order, as one buffer; the log is empty
        again."""
        buffer = buffer_of(self._changes)
        self.rollback()
        return buffer

    def rollback(self) -> None:
        """The outermost transaction rolled back (or ended without a commit): forget everything."""
        self._changes = []
        self._savepoints = []

    def _find(self, token: object) -> int | None:
        if not self._savepoints:
            return None
        if token is None:
            return len(self._savepoints) - 1
        for index in range(len(self._savepoints) - 1, -1, -1):
            if self._savepoints[index][0] is token:
                return index
        return None


_PENDING, _CONFIRMED, _EMITTED = 0, 1, 2


class _Entry:
    __slots__ = ("callback", "change", "index", "state")

    def __init__(self, change: Change, index: int) -> None:
        self.change: Change | None = change
        self.index = index
        self.state = _PENDING
        self.callback: weakref.ref[Callable[[], None]] | None = None

    def waiting(self) -> bool:
        """Whether this change's callback may still run: not run yet, and still held by the framework."""
        return self.state == _PENDING and self.callback is not None and self.callback() is not None


class CommitCallbackLog:
    """The changes of one connection, confirmed one by one by callbacks its framework runs after the commit.

    :meth:`record` returns the callback to register (Django: ``transaction.on_commit(callback, robust=True)``). A
    change is emitted only once its callback has run, so a change of a rolled-back savepoint or transaction, whose
    callback the framework discarded, is never sent. The log keeps only a weak reference to each callback: one the
    framework discarded is gone at once (CPython frees it with the framework's list), so when a callback runs and no
    later one is still held, it is the last of its commit, and the changes confirmed so far go out together to
    ``emit``. Weak references only decide *when* to emit, never *what*: a discarded callback that lingers (another
    Python's garbage collector) delays the emit until it is collected, and never sends its change.

    A callback registered earlier that has not run does not hold the others back: a test's ``TestCase`` transaction
    never commits, and ``captureOnCommitCallbacks(execute=True)`` runs only the callbacks registered inside it.
    """

    def __init__(self, emit: Callable[[ChangeBuffer], None]) -> None:
        self._emit = emit
        self._entries: list[_Entry] = []
        self._confirmed = 0  # confirmed and not yet emitted
        self._last_confirmed = -1  # index of the latest confirmed entry
        self._compact_at = 64

    def __len__(self) -> int:
        """How many changes wait for their callback or for the last callback of their commit."""
        return sum(1 for entry in self._entries if entry.state == _CONFIRMED or entry.waiting())

    def record(self, change: Change) -> Callable[[], None]:
        """Record ``change``; return the callback to run after the commit, which emits it (with the rest of its
        commit)."""
        if len(self._entries) >= self._compact_at:
            self._compact()
        entry = _Entry(change, len(self._entries))

        # A function, not an object: Django names a failing robust callback by its __qualname__.
        def commit_callback() -> None:
            self._confirm(entry)

        # Weak: only the framework keeps the callback alive, so one it discards is gone.
        entry.callback = weakref.ref(commit_callback, self._discarded)
        self._entries.append(entry)
        return commit_callback

    def _confirm(self, entry: _Entry) -> None:
        if entry.state != _PENDING:
            return  # run twice (captureOnCommitCallbacks, then a real commit): sent once
        entry.state = _CONFIRMED
        self._confirmed += 1
        self._last_confirmed = max(self._last_confirmed, entry.index)
        self._settle()

    def _discarded(self, _ref: object) -> None:
        # A callback was dropped: if confirmed changes waited for it, they may go now (the framework stopped running
        # its callbacks halfway, or a discarded callback outlived its savepoint on a collecting Python).
        if self._confirmed:
            self._settle()

    def _settle(self) -> None:
        """Emit the confirmed changes unless a callback registered after the latest confirmed one may still run."""
        if not self._confirmed:
            return
        entries = self._entries
        for index in range(self._last_confirmed + 1, len(entries)):
            if entries[index].waiting():
                return  # its commit is still running callbacks: that one will settle
        confirmed = [entry for entry in entries if entry.state == _CONFIRMED]
        self._keep(entry for entry in entries if entry.waiting())
        changes: list[Change] = []
        for entry in confirmed:
            entry.state = _EMITTED
            if entry.change is not None:
                changes.append(entry.change)
            entry.change = None  # an emitted change's callback may live on in the framework: let its objects go
        # The log is consistent before emitting: building the operations may run app code that records again.
        buffer = buffer_of(changes)
        if buffer:
            self._emit(buffer)

    def _compact(self) -> None:
        """Forget the changes whose callbacks were discarded, so a connection that keeps rolling back does not
        grow."""
        self._keep(entry for entry in self._entries if entry.state == _CONFIRMED or entry.waiting())

    def _keep(self, entries: Iterable[_Entry]) -> None:
        self._entries = list(entries)
        self._last_confirmed = -1
        self._confirmed = 0
        for index, entry in enumerate(self._entries):
            entry.index = index
            if entry.state == _CONFIRMED:
                self._confirmed += 1
                self._last_confirmed = index
        self._compact_at = max(64, 2 * len(self._entries))
