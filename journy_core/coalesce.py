"""The waiting line of operations, merging what can be merged while it waits.

- Upserts of the same user (or account) merge into one, later property values winning. A delete of that user
  (or account) ends the merge window, so an upsert after a delete is never folded into one before it.
- Membership adds (or removes) for one account merge into one call of up to 100 users, as long as no call of
  the other kind for that account was queued in between (the order of add and remove matters).
- Identical ``link`` operations collapse into one.
- Events are never merged.

Only operations still waiting merge: one a sender has taken is out of reach. Mergeable operations wait a short
coalescing window before they are sent. Not thread-safe on its own: the caller holds a lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .operations import MAX_USERS_PER_MEMBERSHIP_CALL, Operation, split_memberships

__all__ = ["Entry", "PendingQueue", "merge_key"]

_MEMBERSHIP = ("add_users_to_account", "remove_users_from_account")
_UPSERT_DELETE = {
    "upsert_user": ("user", "delete_user"),
    "delete_user": ("user", None),
    "upsert_account": ("account", "delete_account"),
    "delete_account": ("account", None),
}


def _ident_key(ident: Mapping[str, Any], primary: str, secondary: str) -> tuple[str, str] | None:
    if ident.get(primary):
        return (primary, str(ident[primary]))
    if ident.get(secondary):
        return (secondary, str(ident[secondary]))
    return None


def _subject(operation: Operation) -> tuple[str, Hashable] | None:
    """Who an upsert/delete/membership is about: ("user", ("userId", "42")) or ("account", ...)."""
    payload = operation.payload
    if operation.kind in ("upsert_user", "delete_user"):
        key = _ident_key(payload.get("identification") or {}, "userId", "email")
        return ("user", key) if key else None
    if operation.kind in ("upsert_account", "delete_account"):
        key = _ident_key(payload.get("identification") or {}, "accountId", "domain")
        return ("account", key) if key else None
    if operation.kind in _MEMBERSHIP:
        key = _ident_key(payload.get("account") or {}, "accountId", "domain")
        return ("membership", key) if key else None
    return None


def merge_key(operation: Operation) -> Hashable | None:
    """The key under which a waiting operation absorbs later ones, or None for operations that never merge."""
    kind = operation.kind
    if kind in ("upsert_user", "upsert_account") or kind in _MEMBERSHIP:
        subject = _subject(operation)
        return (kind, subject) if subject else None
    if kind == "link":
        payload = operation.payload
        ident = payload.get("identification") or {}
        return ("link", payload.get("deviceId"), tuple(sorted(ident.items())))
    return None


@dataclass
class Entry:
    """An operation waiting in line, with its delivery bookkeeping."""

    operation: Operation
    enqueued_at: float
    attempts: int = 0
    merged: int = 0  # how many operations were folded into this one
    key: Hashable | None = field(default=None, repr=False)
    taken: bool = False


#: Kinds that wait for the coalescing window before they are sent, so that later changes can merge into them.
#: Deletes wait too, in the same line, so that a delete never overtakes an upsert of the same user or account.
LINGERING_KINDS = frozenset({"upsert_user", "upsert_account", "delete_user", "delete_account", "link", *_MEMBERSHIP})


class PendingQueue:
    """The operations waiting to be sent, in two FIFO lines.

    Events (and retries) are ready at once. Upserts, deletes, memberships and links linger for ``window`` seconds
    after they were first queued, absorbing later operations on the same subject; their line keeps their order.
    """

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._ready: deque[Entry] = deque()
        self._lingering: deque[Entry] = deque()
        self._open: dict[Hashable, Entry] = {}

    def __len__(self) -> int:
        return len(self._ready) + len(self._lingering)

    def append(self, operation: Operation, now: float) -> int:
        """Queue ``operation``; return how many of its parts were merged into waiting operations.

        A membership operation of more than 100 users is queued as several parts.
        """
        if operation.kind not in _MEMBERSHIP:
            return int(self._append_one(operation, now))
        return sum(self._append_one(part, now) for part in split_memberships(operation))

    def _append_one(self, operation: Operation, now: float) -> bool:
        kind = operation.kind
        if kind in ("delete_user", "delete_account"):
            upsert_kind = "upsert_user" if kind == "delete_user" else "upsert_account"
            self._open.pop((upsert_kind, _subject(operation)), None)
        elif kind in _MEMBERSHIP:
            # A call of the other kind for this account ends the merge window of the previous kind.
            other = _MEMBERSHIP[1] if kind == _MEMBERSHIP[0] else _MEMBERSHIP[0]
            self._open.pop((other, _subject(operation)), None)
        key = merge_key(operation)
        if key is not None:
            waiting = self._open.get(key)
            if waiting is not None and not waiting.taken and self._merge(waiting, operation):
                waiting.merged += 1
                return True
        entry = Entry(operation, now, key=key)
        if key is not None:
            self._open[key] = entry
        (self._lingering if kind in LINGERING_KINDS else self._ready).append(entry)
        return False

    def append_ready(self, entry: Entry) -> None:
        """Put back an entry (a retry): ready at once; it does not merge, and nothing merges into it."""
        entry.taken = True
        self._ready.append(entry)

    def ready_at(self, *, hurry: bool = False) -> float | None:
        """When the next entry may be sent (a time in the past means now), or None when nothing waits."""
        if self._ready:
            return 0.0
        if self._lingering:
            return 0.0 if hurry else self._lingering[0].enqueued_at + self.window
        return None

    def pop_ready(self, now: float, *, hurry: bool = False) -> Entry | None:
        """The oldest entry that may be sent now, or None. ``hurry`` ignores the coalescing window (flushing)."""
        lingering_ok = bool(self._lingering) and (hurry or self._lingering[0].enqueued_at + self.window <= now)
        if self._ready and (not lingering_ok or self._ready[0].enqueued_at <= self._lingering[0].enqueued_at):
            entry = self._ready.popleft()
        elif lingering_ok:
            entry = self._lingering.popleft()
        else:
            return None
        if entry.key is not None and self._open.get(entry.key) is entry:
            del self._open[entry.key]
        entry.taken = True
        return entry

    def drain(self) -> list[Entry]:
        """Remove and return everything waiting."""
        entries = [*self._ready, *self._lingering]
        self._ready.clear()
        self._lingering.clear()
        self._open.clear()
        return entries

    def _merge(self, waiting: Entry, operation: Operation) -> bool:
        kind = operation.kind
        old, new = waiting.operation.payload, operation.payload
        if kind == "link":
            return True  # identical: nothing to add
        if kind in _MEMBERSHIP:
            users = list(old["users"])
            known = {_user_marker(u) for u in users}
            fresh = [u for u in new["users"] if _user_marker(u) not in known]
            if len(users) + len(fresh) > MAX_USERS_PER_MEMBERSHIP_CALL:
                return False
            waiting.operation = Operation(kind, {**old, "users": users + fresh})
            return True
        payload: dict[str, Any] = {"identification": {**old["identification"], **new["identification"]}}
        properties = {**(old.get("properties") or {}), **(new.get("properties") or {})}
        if properties:
            payload["properties"] = properties
        waiting.operation = Operation(kind, payload)
        return True


def _user_marker(user: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((user.get("identification") or {}).items()))
