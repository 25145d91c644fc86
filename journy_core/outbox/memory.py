"""An outbox store in the process's memory: the real claim rules without a database.

For tests (yours and the relay's own) and for trying the ``outbox`` backend out: it follows the same rules as the
database stores (a claim is a lease, each entity's rows go in id order, a row waiting for its retry blocks the
later rows of its entity, dead rows are kept until retried or purged), but it is only as durable as the process.

>>> from journy_core import Journy
>>> from journy_core.outbox.memory import MemoryStore
>>> journy = Journy("key", queue={"BACKEND": "outbox", "OPTIONS": {"STORE": MemoryStore(), "RELAY_IN_PROCESS": False}})
>>> journy.track("signed_in", user_id="42")
>>> journy.backend.backlog().pending
1
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..operations import Operation
from .ordering import MEMBERSHIP_KINDS, claim_order
from .store import DEAD, PENDING, Backlog, OutboxRow, StoredRow, entity_of

__all__ = ["DELIVERED", "MemoryStore"]

#: The status of a delivered row kept for ``KEEP_DELIVERED_DAYS``.
DELIVERED = "delivered"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Record:
    """One row, as a database would hold it (the operation as plain JSON data, not the caller's object)."""

    id: int
    entity: str
    kind: str
    operation: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime  # for settled rows: when they were settled (what purging reads)
    locked_until: datetime | None = None
    locked_by: str = ""
    last_error: str = ""

    def stored(self) -> StoredRow:
        return StoredRow(
            self.id,
            self.entity,
            self.kind,
            self.status,
            self.attempts,
            self.created_at,
            self.next_attempt_at,
            self.last_error,
        )


class MemoryStore:
    """A thread-safe :class:`~journy_core.outbox.store.OutboxStore` in memory.

    :param keep_delivered: keep delivered rows (status ``"delivered"``) instead of deleting them; the backend sets
        it from ``KEEP_DELIVERED_DAYS``, and purging removes them.
    :param clock: the current time for the methods that take none (``add``, ``mark_dead``, ``retry_dead``), as an
        aware datetime; tests move it.
    """

    def __init__(self, *, keep_delivered: bool = False, clock: Callable[[], datetime] = _utcnow) -> None:
        self.keep_delivered = keep_delivered
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rows: dict[int, _Record] = {}  # in id order: ids only grow and dicts keep insertion order

    def __len__(self) -> int:
        """Rows of every status."""
        with self._lock:
            return len(self._rows)

    def add(self, operations: Sequence[Operation]) -> None:
        """Write one pending row per operation, in order."""
        now = self._clock()
        with self._lock:
            for operation in operations:
                row_id = next(self._ids)
                self._rows[row_id] = _Record(
                    row_id, entity_of(operation), operation.kind, operation.to_dict(), PENDING, 0, now, now
                )

    def claim(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` in id order, keeping only rows whose entity has no earlier
        pending row outside this claim; a user's delete also waits for the earlier memberships naming that user that
        this claim does not deliver (:mod:`journy_core.outbox.ordering`). The others are left unleased."""
        with self._lock:
            due = [row for row in self._rows.values() if self._claimable(row, now)][:limit]
            picked = [(row.id, row.entity, row.kind) for row in due]
            keep = set(claim_order(picked, self._first_pending, self._memberships_before))
            claimed: list[OutboxRow] = []
            lease_end = now.timestamp() + lease_seconds
            until = datetime.fromtimestamp(lease_end, timezone.utc)
            for row in due:
                if row.id not in keep:
                    continue  # left unleased: the same as leasing and releasing it at once
                row.locked_until, row.locked_by = until, owner
                claimed.append(
                    OutboxRow(row.id, row.entity, Operation.from_dict(row.operation), row.created_at, row.attempts)
                )
            return claimed

    # The two queries of the claim's order rule, run under the lock (journy_core.outbox.ordering decides).

    def _first_pending(self, entities: set[str], held: list[int]) -> dict[str, int]:
        """Each entity's first pending row outside the claim."""
        first: dict[str, int] = {}
        outside = set(held)
        for row in self._rows.values():
            if row.status == PENDING and row.entity in entities and row.id not in outside:
                first.setdefault(row.entity, row.id)
        return first

    def _memberships_before(
        self, held: list[int], given_back: list[int], before: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """The pending membership rows before ``before`` that this claim does not deliver (outside it, or given
        back)."""
        inside, returned = set(held), set(given_back)
        return [
            (row.id, row.operation)
            for row in self._rows.values()
            if row.id < before
            and row.status == PENDING
            and row.kind in MEMBERSHIP_KINDS
            and (row.id not in inside or row.id in returned)
        ]

    @staticmethod
    def _claimable(row: _Record, now: datetime) -> bool:
        return (
            row.status == PENDING
            and row.next_attempt_at <= now
            and (row.locked_until is None or row.locked_until < now)
        )

    def delivered(self, ids: Iterable[int], *, now: datetime) -> None:
        """Delete the rows, or keep them as delivered (``keep_delivered``)."""
        with self._lock:
            for row_id in ids:
                if self.keep_delivered and (row := self._rows.get(row_id)) is not None:
                    row.status, row.next_attempt_at = DELIVERED, now
                    row.locked_until, row.locked_by = None, ""
                else:
                    self._rows.pop(row_id, None)

    def retry_later(self, ids: Iterable[int], *, at: datetime, error: str) -> None:
        """Count an attempt, release the lease, make the rows due at ``at``."""
        with self._lock:
            for row in self._find(ids):
                row.attempts += 1
                row.next_attempt_at, row.last_error = at, error
                row.locked_until, row.locked_by = None, ""

    def mark_dead(self, ids: Iterable[int], *, error: str) -> None:
        """Count an attempt and keep the rows as dead, with ``error``, until retried or purged."""
        now = self._clock()
        with self._lock:
            for row in self._find(ids):
                row.attempts += 1
                row.status, row.last_error, row.next_attempt_at = DEAD, error, now
                row.locked_until, row.locked_by = None, ""

    def release(self, ids: Iterable[int]) -> None:
        """Give the rows back unattempted: claimable again at once."""
        with self._lock:
            for row in self._find(ids):
                row.locked_until, row.locked_by = None, ""

    def backlog(self, *, now: datetime) -> Backlog:
        """Pending and dead counts and the oldest pending row's age in seconds."""
        with self._lock:
            pending = [row.created_at for row in self._rows.values() if row.status == PENDING]
            dead = sum(1 for row in self._rows.values() if row.status == DEAD)
        age = (now - min(pending)).total_seconds() if pending else None
        return Backlog(len(pending), dead, age)

    def retry_dead(self, ids: Iterable[int] | None = None) -> int:
        """Make dead rows (these, or all) pending and due now, with their attempts counted from zero again."""
        now = self._clock()
        with self._lock:
            rows = self._rows.values() if ids is None else self._find(ids)
            revived = [row for row in rows if row.status == DEAD]
            for row in revived:
                row.status, row.attempts, row.next_attempt_at = PENDING, 0, now
            return len(revived)

    def purge(self, *, dead_before: datetime | None = None, delivered_before: datetime | None = None) -> int:
        """Delete dead rows settled before ``dead_before`` and kept delivered rows before ``delivered_before``."""
        with self._lock:
            doomed = [
                row.id
                for row in self._rows.values()
                if (dead_before is not None and row.status == DEAD and row.next_attempt_at < dead_before)
                or (delivered_before is not None and row.status == DELIVERED and row.next_attempt_at < delivered_before)
            ]
            for row_id in doomed:
                del self._rows[row_id]
            return len(doomed)

    def list_rows(self, *, status: str, limit: int) -> list[StoredRow]:
        """The oldest ``limit`` rows of ``status``."""
        with self._lock:
            return [row.stored() for row in self._rows.values() if row.status == status][:limit]

    def _find(self, ids: Iterable[int]) -> list[_Record]:
        rows = self._rows
        return [rows[row_id] for row_id in ids if row_id in rows]
