"""The outbox's rows and the storage interface a database layer implements for the relay.

A row is one operation: its entity key (the user or account whose calls must keep their order), the operation as
JSON, when it was created, how many attempts it had, when it may be tried next, its status and its last error.
Rows are written by the adapter in the app's own transaction (the interface's :meth:`OutboxStore.add` is for
writes outside one, such as a ``track()`` in autocommit); the relay only claims and settles them.

Claiming is the part every store must get right (the txoutbox list of relay bugs is the checklist):
- two relays never hold one row: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and MySQL/MariaDB, a write
  transaction on SQLite (one relay at a time there);
- a claim is a lease (``locked_until``): a relay killed mid-batch holds its rows only until the lease expires;
- an entity's rows are delivered in order: a relay keeps only rows whose earlier pending rows of the same entity it
  holds too (it releases the others at once), so a later row never overtakes an earlier one held by another relay
  or waiting for its retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..coalesce import entity_keys
from ..operations import Operation

__all__ = ["DEAD", "PENDING", "Backlog", "OutboxRow", "OutboxStore", "StoredRow", "entity_of"]

#: A row waiting to be delivered (now, or at ``next_attempt_at`` after a transient failure).
PENDING = "pending"
#: A row journy.io refused (a 4xx other than 429) or whose retries ran out: kept until retried or purged.
DEAD = "dead"
#: Longest entity key stored (the column's size): longer keys are cut, which only coarsens the ordering.
MAX_ENTITY_LENGTH = 255


def entity_of(operation: Operation) -> str:
    """The entity whose rows keep their order: the operation's first entity (``"user:42"``, ``"account:7"``;
    a membership's account, an event's user), or ``""`` for one that concerns none."""
    keys = entity_keys(operation)
    return keys[0][:MAX_ENTITY_LENGTH] if keys else ""


@dataclass(frozen=True)
class OutboxRow:
    """One claimed row, as the relay sees it."""

    id: int
    entity: str
    operation: Operation
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class Backlog:
    """What ``journy_check`` / ``flask journy check`` and ``stats()`` report."""

    pending: int
    dead: int
    oldest_pending_age: float | None  # seconds; None when nothing is pending


@dataclass(frozen=True)
class StoredRow:
    """A row as the admin and ``flask journy outbox`` list it."""

    id: int
    entity: str
    kind: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str


@runtime_checkable
class OutboxStore(Protocol):
    """What the relay needs from a database layer. Times are timezone-aware UTC datetimes; every method commits
    its own short transaction (none runs inside the app's)."""

    def add(self, operations: Sequence[Operation]) -> None:
        """Write rows for ``operations`` now, in order (outside a transaction: their own)."""

    def claim(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        """Lease up to ``limit`` due pending rows to ``owner``, in id order, keeping each entity's order (see the
        module docstring). Rows whose lease expired are claimable again."""

    def delivered(self, ids: Iterable[int], *, now: datetime) -> None:
        """The calls of these rows succeeded: delete them (or keep them as delivered, when the store keeps N days)."""

    def retry_later(self, ids: Iterable[int], *, at: datetime, error: str) -> None:
        """A transient failure: count an attempt, release the lease, try again at ``at``."""

    def mark_dead(self, ids: Iterable[int], *, error: str) -> None:
        """Refused (a 4xx other than 429) or out of retries: status dead, with journy.io's answer."""

    def release(self, ids: Iterable[int]) -> None:
        """Give rows back unattempted (a relay stopping, or rows kept back for an entity's order)."""

    def backlog(self, *, now: datetime) -> Backlog:
        """Pending and dead counts and the oldest pending row's age."""

    def retry_dead(self, ids: Iterable[int] | None = None) -> int:
        """Make dead rows (these, or all) pending again; returns how many."""

    def purge(self, *, dead_before: datetime | None = None, delivered_before: datetime | None = None) -> int:
        """Delete dead rows last attempted before ``dead_before`` and kept delivered rows before
        ``delivered_before``; returns how many."""

    def list_rows(self, *, status: str, limit: int) -> list[StoredRow]:
        """The oldest ``limit`` rows of ``status`` (pending or dead)."""
