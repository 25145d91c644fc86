"""The waiting line of operations: one entity's operations in the order they were made, merging what can merge.

Order. Every operation concerns one or more entities: a user (by user ID and by email) or an account (by account
ID and by domain). An upsert or delete concerns its user or account; a membership call its account and every user
in it; an event its user and its account; a link its user. The line keeps, per entity, the operations not yet done
(waiting, in flight, or waiting for a retry) in the order they were made, and an operation may be sent only when it
is first in line for every entity it concerns. So a delete is never overtaken by an earlier upsert (nor by that
upsert's retries), a membership call never precedes the upserts of its account and users made before it, and an
event never precedes an earlier upsert of its user or account: it waits for that upsert's coalescing window.
Operations on different entities go out in parallel.

Merging, while an operation still waits:
- Upserts of the same user (or account) merge into one, later property values winning.
- A delete of a user (or account) replaces its waiting upsert when nothing else about either waits after that
  upsert: the upsert is never sent (nor the deleted user's email and properties).
- Membership adds (or removes) for one account merge into one call of up to 100 users.
- Identical ``link`` operations collapse into one.
- Events are never merged.

A merge moves the later operation's change back to the earlier one's place, so it is refused when that would jump
it over an operation that must stay between them: a delete of the same entity, a membership call of the other kind
for the same account, or anything at all about an entity the earlier operation did not concern yet.

Upserts, deletes, memberships and links wait a short coalescing window before they are sent, so later changes can
merge into them. Not thread-safe on its own: the caller holds a lock.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .operations import MAX_USERS_PER_MEMBERSHIP_CALL, Operation, split_memberships

__all__ = ["Entry", "PendingQueue", "entity_keys", "merge_key", "superseded_key"]

_MEMBERSHIP = ("add_users_to_account", "remove_users_from_account")
_DELETES = frozenset({"delete_user", "delete_account"})
#: What a merge of each kind may not jump over when it shares an entity with it.
_BARRIERS = {
    "add_users_to_account": _DELETES | {"remove_users_from_account"},
    "remove_users_from_account": _DELETES | {"add_users_to_account"},
}

#: Kinds that wait for the coalescing window before they are sent, so that later changes can merge into them.
LINGERING_KINDS = frozenset({"upsert_user", "upsert_account", "delete_user", "delete_account", "link", *_MEMBERSHIP})


def _user_keys(ident: Mapping[str, Any] | None, keys: list[str]) -> None:
    if ident:
        if user_id := ident.get("userId"):
            keys.append("user:" + user_id)
        if email := ident.get("email"):
            keys.append("email:" + email.casefold())


def _account_keys(ident: Mapping[str, Any] | None, keys: list[str]) -> None:
    if ident:
        if account_id := ident.get("accountId"):
            keys.append("account:" + account_id)
        if domain := ident.get("domain"):
            keys.append("domain:" + domain.casefold())


def entity_keys(operation: Operation) -> tuple[str, ...]:
    """The entities ``operation`` concerns, each once: ``"user:42"``, ``"email:ada@acme.com"``, ``"account:7"``,
    ``"domain:acme.com"``. Two operations sharing one are sent in the order they were made.

    Plain strings, not tuples: the line holds one per waiting operation and entity, and strings cost the garbage
    collector nothing.
    """
    kind, payload = operation.kind, operation.payload
    ident = payload.get("identification") or {}
    keys: list[str] = []
    if kind == "track":
        _user_keys(ident.get("user"), keys)
        _account_keys(ident.get("account"), keys)
        return tuple(keys)
    if kind in ("upsert_user", "delete_user", "link"):
        _user_keys(ident, keys)
    elif kind in ("upsert_account", "delete_account"):
        _account_keys(ident, keys)
    elif kind in _MEMBERSHIP:
        _account_keys(payload.get("account"), keys)
        for user in payload.get("users") or ():
            _user_keys(user.get("identification"), keys)
        return tuple(dict.fromkeys(keys))  # a user listed twice is one entity
    return tuple(keys)


def _subject(ident: Mapping[str, Any], primary: str, secondary: str) -> tuple[str, str] | None:
    if ident.get(primary):
        return (primary, str(ident[primary]))
    if ident.get(secondary):
        return (secondary, str(ident[secondary]))
    return None


def merge_key(operation: Operation) -> Hashable | None:
    """The key under which a waiting operation absorbs later ones, or None for operations that never merge."""
    kind, payload = operation.kind, operation.payload
    if kind == "upsert_user":
        subject = _subject(payload.get("identification") or {}, "userId", "email")
    elif kind == "upsert_account":
        subject = _subject(payload.get("identification") or {}, "accountId", "domain")
    elif kind in _MEMBERSHIP:
        subject = _subject(payload.get("account") or {}, "accountId", "domain")
    elif kind == "link":
        ident = payload.get("identification") or {}
        return ("link", payload.get("deviceId"), tuple(sorted(ident.items())))
    else:
        return None
    return (kind, subject) if subject else None


def superseded_key(operation: Operation) -> Hashable | None:
    """For a delete, the :func:`merge_key` of the upserts of its user or account that it replaces when they still
    wait (see :class:`PendingQueue`); None for other operations."""
    ident = operation.payload.get("identification") or {}
    if operation.kind == "delete_user":
        subject = _subject(ident, "userId", "email")
        return ("upsert_user", subject) if subject else None
    if operation.kind == "delete_account":
        subject = _subject(ident, "accountId", "domain")
        return ("upsert_account", subject) if subject else None
    return None


@dataclass(eq=False, slots=True)
class Entry:
    """An operation in line, with its delivery bookkeeping."""

    operation: Operation
    enqueued_at: float
    sequence: int = 0
    keys: tuple[str, ...] = ()  # the entities it concerns (see entity_keys)
    key: Hashable | None = field(default=None, repr=False)  # its merge key
    #: When it may be sent: after the coalescing window, or when its retry is due.
    available_at: float = 0.0
    attempts: int = 0
    merged: int = 0  # how many operations were folded into this one
    #: Taken by a sender at least once: nothing merges into it any more.
    sealed: bool = False
    in_flight: bool = False
    version: int = 0  # which of its places in the ready heap is current


class PendingQueue:
    """The operations not yet done, in per-entity order; see the module's docstring.

    ``pop_ready`` hands out an operation that may be sent now; the sender then calls ``done`` (delivered or given
    up on) or ``retry`` (send it again later, still first in line for its entities).
    """

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._sequence = 0
        self._live: dict[int, Entry] = {}  # sequence -> entry, every entry not done, in order
        self.in_flight = 0
        self._chains: dict[str, deque[Entry]] = {}  # entity -> its entries not done, in order
        self._ready: list[tuple[float, int, int, Entry]] = []  # (available_at, sequence, version, entry)
        self._open: dict[Hashable, Entry] = {}  # merge key -> the entry that absorbs later operations

    def __len__(self) -> int:
        """Operations not done: waiting, in flight, or waiting for a retry."""
        return len(self._live)

    def append(self, operation: Operation, now: float) -> int:
        """Queue ``operation``; return how many of its parts were merged into waiting operations.

        A membership operation of more than 100 users is queued as several parts.
        """
        if operation.kind not in _MEMBERSHIP:
            return int(self._append_one(operation, now))
        return sum(self._append_one(part, now) for part in split_memberships(operation))

    def _append_one(self, operation: Operation, now: float) -> bool:
        key = merge_key(operation)
        keys = entity_keys(operation)
        if operation.kind in _DELETES and self._supersede(operation, keys):
            return True
        if key is not None:
            waiting = self._open.get(key)
            mergeable = waiting is not None and not waiting.sealed and self._may_merge(waiting, operation, keys)
            if mergeable and waiting is not None and self._merge(waiting, operation):
                waiting.merged += 1
                self._grow(waiting, keys)
                return True
        self._sequence += 1
        lingers = operation.kind in LINGERING_KINDS
        entry = Entry(operation, now, self._sequence, keys, key, now + self.window if lingers else now)
        if key is not None:
            self._open[key] = entry
        self._live[entry.sequence] = entry
        runnable = True
        for entity in keys:
            chain = self._chains.get(entity)
            if chain is None:
                self._chains[entity] = deque((entry,))
            else:
                chain.append(entry)
                runnable = False
        if runnable:
            self._push(entry)
        return False

    def _supersede(self, delete: Operation, keys: tuple[str, ...]) -> bool:
        """Fold ``delete`` into the waiting upsert of its user or account when that upsert is the last thing in
        line for every entity either concerns: the delete takes its place, and the upsert is never sent."""
        key = superseded_key(delete)
        waiting = None if key is None else self._open.get(key)
        if waiting is None or waiting.sealed:
            return False
        for entity in (*waiting.keys, *keys):
            chain = self._chains.get(entity)
            if chain and chain[-1] is not waiting:
                return False  # something stands between them (a membership, an event): both go, in order
        del self._open[key]
        waiting.operation, waiting.key = delete, None
        waiting.merged += 1
        self._grow(waiting, keys)
        return True

    def _may_merge(self, waiting: Entry, operation: Operation, keys: tuple[str, ...]) -> bool:
        """Whether folding ``operation`` into ``waiting`` keeps every entity's order."""
        barriers = _BARRIERS.get(operation.kind, _DELETES)  # upserts: only a delete
        for entity in keys:
            known = entity in waiting.keys
            for later in reversed(self._chains.get(entity, ())):
                if later.sequence <= waiting.sequence:
                    break
                if not known or later.operation.kind in barriers:
                    return False
        return True

    def _grow(self, entry: Entry, keys: tuple[str, ...]) -> None:
        """After a merge: ``entry`` now also concerns ``keys`` (no later entry concerns the new ones)."""
        fresh = [entity for entity in keys if entity not in entry.keys]
        if not fresh:
            return
        entry.keys += tuple(fresh)
        for entity in fresh:
            self._chains.setdefault(entity, deque()).append(entry)
        # If an earlier entry concerns a new entity, this one is no longer first in line: its heap place goes stale.
        if not self._is_first(entry):
            entry.version += 1

    def _is_first(self, entry: Entry) -> bool:
        chains = self._chains
        return all(chains[entity][0] is entry for entity in entry.keys)

    def _push(self, entry: Entry) -> None:
        entry.version += 1
        heapq.heappush(self._ready, (entry.available_at, entry.sequence, entry.version, entry))

    def _top(self) -> Entry | None:
        """The runnable entry due first, dropping stale heap places."""
        ready = self._ready
        while ready:
            _, _, version, entry = ready[0]
            if version == entry.version and not entry.in_flight:
                return entry
            heapq.heappop(ready)
        return None

    def ready_at(self, *, hurry: bool = False) -> float | None:
        """When the next entry may be sent (a time in the past means now), or None when none may be sent
        (nothing waits, or everything waiting is behind an entry in flight)."""
        entry = self._top()
        if entry is None:
            return None
        return 0.0 if hurry else entry.available_at

    def pop_ready(self, now: float, *, hurry: bool = False) -> Entry | None:
        """Take the entry due first if it may be sent now, or None. ``hurry`` ignores the coalescing window and
        retry delays (flushing)."""
        entry = self._top()
        if entry is None or (not hurry and entry.available_at > now):
            return None
        heapq.heappop(self._ready)
        if entry.key is not None and self._open.get(entry.key) is entry:
            del self._open[entry.key]
        entry.sealed = True
        entry.in_flight = True
        self.in_flight += 1
        return entry

    def retry(self, entry: Entry, due: float) -> None:
        """Put back an entry taken by :meth:`pop_ready`, to be sent again at ``due``; it stays first in line."""
        entry.in_flight = False
        self.in_flight -= 1
        entry.available_at = due
        self._push(entry)

    def done(self, entry: Entry) -> None:
        """An entry taken by :meth:`pop_ready` is finished (delivered or given up on): the next in line go."""
        entry.in_flight = False
        self.in_flight -= 1
        self._remove(entry)

    def _remove(self, entry: Entry) -> None:
        del self._live[entry.sequence]
        entry.version += 1  # its heap place, if any, goes stale
        for entity in entry.keys:
            chain = self._chains[entity]
            if chain[0] is entry:
                chain.popleft()
            else:  # only when draining: entries behind one in flight
                chain.remove(entry)
            if not chain:
                del self._chains[entity]
                continue
            following = chain[0]
            if not following.in_flight and self._is_first(following):
                self._push(following)

    def drain(self) -> list[Entry]:
        """Remove and return every entry not in flight, in the order they were queued."""
        entries = [entry for entry in self._live.values() if not entry.in_flight]
        for entry in entries:
            if entry.key is not None and self._open.get(entry.key) is entry:
                del self._open[entry.key]
            self._remove(entry)
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
