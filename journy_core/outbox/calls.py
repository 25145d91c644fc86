"""A claimed batch of outbox rows as API calls: coalesced, and handed out in each entity's order.

The merging and ordering rules are :mod:`journy_core.coalesce`'s, reused through a
:class:`~journy_core.coalesce.PendingQueue` without a coalescing window: upserts of one user or account merge (later
values win), a delete replaces the upsert just before it and is never overtaken by an earlier one, memberships
group up to 100 users per call, events never merge. Each call remembers the rows it covers; a row is settled once
every call that covers it is (a membership row of more than 100 users becomes several calls).

Not thread-safe on its own: the sending threads use it under their batch's lock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..coalesce import Entry, PendingQueue, merge_key, superseded_key
from ..operations import Operation, split_memberships
from .store import OutboxRow

__all__ = ["Call", "CallPlan"]

#: A call whose entity must wait (its rows are to be retried) sits in line with this due time: never handed out,
#: so the later calls of its entity stay behind it.
_NEVER = float("inf")


@dataclass(eq=False)
class Call:
    """One API call of a batch and the rows it covers."""

    sequence: int
    rows: list[OutboxRow] = field(default_factory=list)
    operation: Operation | None = None  # the merged operation, set when the call is handed out

    @property
    def row_ids(self) -> list[int]:
        """The ids of the rows this call covers, in order."""
        return [row.id for row in self.rows]

    @property
    def attempts(self) -> int:
        """The attempt this call is for its most tried row (1 for the first)."""
        return max(row.attempts for row in self.rows) + 1

    @property
    def created_at(self) -> datetime:
        """When its oldest row was written (the age the retry policy reads)."""
        return min(row.created_at for row in self.rows)


class CallPlan:
    """The calls of one claimed batch. :meth:`next_call` hands out a call that may go now (first in line for every
    entity it concerns); the caller then reports it :meth:`sent`, :meth:`failed` or :meth:`held` (to be retried:
    the rest of its entity's calls stay behind it). The rows of calls never sent are :meth:`unsettled`."""

    def __init__(self, rows: Sequence[OutboxRow]) -> None:
        self._queue = PendingQueue(window=0.0)
        self._calls: list[Call] = []
        self._entries: dict[int, Entry] = {}  # call sequence -> its entry in line, while handed out
        self._outstanding: dict[int, int] = {}  # row id -> calls covering it not sent yet
        self._settled: set[int] = set()
        self.rows = len(rows)
        #: How many operations were folded into an earlier call.
        self.coalesced = 0
        latest: dict[Hashable, Call] = {}  # merge key -> the last call made with it (the one that absorbs)
        for row in rows:
            for part in split_memberships(row.operation):
                self._add(row, part, latest)

    def _add(self, row: OutboxRow, part: Operation, latest: dict[Hashable, Call]) -> None:
        before = len(self._queue)
        self._queue.append(part, 0.0)
        key = merge_key(part)
        if len(self._queue) > before:
            call = Call(len(self._calls) + 1)  # the queue numbers its entries 1, 2, 3... in the same order
            self._calls.append(call)
            if key is not None:
                latest[key] = call
        else:
            # Merged: the queue folds an operation into the waiting one of its merge key, the last one made (a
            # delete into the waiting upsert it replaces: that call then sends the delete and settles both rows).
            key = key if key is not None else superseded_key(part)
            assert key is not None
            call = latest[key]
            self.coalesced += 1
        if not call.rows or call.rows[-1] is not row:
            call.rows.append(row)
            self._outstanding[row.id] = self._outstanding.get(row.id, 0) + 1

    def __len__(self) -> int:
        """The number of calls."""
        return len(self._calls)

    @property
    def in_flight(self) -> int:
        """Calls handed out and not reported yet."""
        return self._queue.in_flight

    def next_call(self) -> Call | None:
        """A call that may be sent now, or None (none left, or every one left waits behind a call in flight)."""
        entry = self._queue.pop_ready(0.0)
        if entry is None:
            return None
        call = self._calls[entry.sequence - 1]
        call.operation = entry.operation
        self._entries[call.sequence] = entry
        return call

    def sent(self, call: Call) -> list[int]:
        """``call`` succeeded: returns the rows now delivered. The later calls of its entities stay behind it until
        :meth:`release`, which the sender calls once the store has recorded those rows: released before, a later
        call (a delete) could be sent and recorded while this one's rows are not, and a crash in between would
        leave them to be sent again after it (an upsert re-creating a deleted user)."""
        done = []
        for row_id in call.row_ids:
            self._outstanding[row_id] -= 1
            if self._outstanding[row_id] == 0 and row_id not in self._settled:
                self._settled.add(row_id)
                done.append(row_id)
        return done

    def failed(self, call: Call) -> list[int]:
        """``call`` will not be delivered (its rows go dead): returns the rows it settles. As for :meth:`sent`, the
        later calls of its entities wait for :meth:`release`."""
        return self._settle(call)

    def release(self, call: Call) -> None:
        """The store recorded the outcome of ``call`` (:meth:`sent` or :meth:`failed`): the later calls of its
        entities may go. Not called when recording failed: they then stay behind it, unsent, and are given back."""
        self._queue.done(self._entries.pop(call.sequence))

    def held(self, call: Call, *, settle: bool = True) -> list[int]:
        """``call`` must wait: the later calls of its entities stay behind it for the rest of the batch. Returns
        the rows it settles (to be retried later), none when ``settle`` is False (never attempted: released)."""
        self._queue.retry(self._entries.pop(call.sequence), _NEVER)
        return self._settle(call) if settle else []

    def _settle(self, call: Call) -> list[int]:
        fresh = [row_id for row_id in call.row_ids if row_id not in self._settled]
        self._settled.update(fresh)
        return fresh

    def unsettled(self) -> list[int]:
        """The rows no report settled: to be released (given back unattempted, or only partly sent)."""
        return [row_id for row_id in self._outstanding if row_id not in self._settled]
