"""The claim's order rule, shared by every outbox store: which claimed rows may be delivered now.

A claim picks due pending rows in id order; it keeps only those that no earlier undelivered row must precede, and
the store releases the others at once. Two rules decide:

1. **Entity order.** A claimed row is kept only when no earlier pending row of its entity (the row's ``entity``
   column) is outside the claim: held by another relay, waiting for its retry, or not yet due. Once a row of an
   entity waits, every later row of that entity in the claim waits too. So a later row never overtakes an earlier
   one, across relays and across retries. Rows of entity ``""`` keep no order.
2. **Memberships before a user's delete.** A row's entity is only its *first* entity: a membership call's is its
   account. The users it names are not covered by rule 1, yet an add sent after a user's delete would create the
   deleted user again (at journy.io, without an e-mail). So a ``delete_user`` row also waits while an earlier
   pending membership row naming that user is not delivered by this claim (outside it, or given back by rule 1).

The stores run the queries (:func:`claim_order` takes them as two callables); the decisions live here, pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..coalesce import entity_keys
from ..operations import Operation
from .store import MAX_ENTITY_LENGTH

__all__ = [
    "DELETE_USER",
    "MEMBERSHIP_KINDS",
    "FirstPending",
    "MembershipsBefore",
    "Picked",
    "StoredOperation",
    "claim_order",
    "first_naming",
    "given_back",
    "kept_in_order",
    "users_named",
]

#: The membership calls: their row's entity is the account, and they name users too.
MEMBERSHIP_KINDS = ("add_users_to_account", "remove_users_from_account")
#: The kind that waits for the earlier memberships naming its user.
DELETE_USER = "delete_user"

#: A row's operation as stored: JSON text (the database stores) or the decoded dict (the memory store).
StoredOperation = str | Mapping[str, Any]
#: ``(id, entity, kind)`` of a row a claim picked, in id order.
Picked = tuple[int, str, str]
#: ``first_pending(entities, held)``: for each of ``entities``, the smallest id of its pending rows below
#: ``max(held)`` whose id is not in ``held`` (entities without one are left out).
FirstPending = Callable[[set[str], list[int]], Mapping[str, int]]
#: ``memberships_before(held, given_back, before)``: ``(id, operation JSON)`` of the pending membership rows with an
#: id below ``before`` that are not in ``held``, or are in ``given_back``; in any order.
MembershipsBefore = Callable[[list[int], list[int], int], Iterable[tuple[int, StoredOperation]]]


def kept_in_order(
    picked: Sequence[Picked], first_pending: Mapping[str, int], first_naming: Mapping[str, int] | None = None
) -> list[int]:
    """The ids of ``picked`` that may be delivered now, in id order.

    ``first_pending``: per entity, its first pending row outside the claim (rule 1); ``first_naming``: per user
    entity, its first earlier pending membership row that the claim does not deliver (rule 2).
    """
    naming = first_naming or {}
    keep: list[int] = []
    stopped: set[str] = set()  # entities whose earlier row waits: their later rows wait too
    for row_id, entity, kind in picked:
        waits = row_id > first_pending.get(entity, row_id) or (
            kind == DELETE_USER and row_id > naming.get(entity, row_id)
        )
        if entity and (waits or entity in stopped):
            stopped.add(entity)
            continue
        keep.append(row_id)
    return keep


def given_back(picked: Sequence[Picked], kept: Iterable[int]) -> list[int]:
    """The membership rows of ``picked`` that are not in ``kept``: rule 2 counts them as not delivered."""
    keep = set(kept)
    return [row_id for row_id, _, kind in picked if kind in MEMBERSHIP_KINDS and row_id not in keep]


def users_named(operation: StoredOperation) -> tuple[str, ...]:
    """The entities a membership row names besides its own (its users: ``"user:42"``, ``"email:ada@acme.com"``),
    from its operation as stored (JSON text, or the decoded dict); ``()`` for a row that cannot be read (it goes dead
    when claimed, so it orders nothing)."""
    try:
        data = json.loads(operation) if isinstance(operation, str) else operation
        keys = entity_keys(Operation.from_dict(dict(data)))
    except (ValueError, TypeError, AttributeError):  # AttributeError: a payload of the wrong shape
        return ()
    # The first key is the row's entity (the account), which rule 1 already orders.
    return tuple(key[:MAX_ENTITY_LENGTH] for key in keys[1:])


def first_naming(memberships: Iterable[tuple[int, StoredOperation]]) -> dict[str, int]:
    """For each user named by ``memberships`` (``(id, operation)`` pairs, any order), the smallest such id."""
    first: dict[str, int] = {}
    for row_id, operation in memberships:
        for key in users_named(operation):
            if row_id < first.get(key, row_id + 1):
                first[key] = row_id
    return first


def claim_order(
    picked: Sequence[Picked], first_pending: FirstPending, memberships_before: MembershipsBefore
) -> list[int]:
    """The ids of ``picked`` that may be delivered now (both rules), asking the store's two queries only what is
    needed: the membership query runs only when rule 1 keeps a picked ``delete_user`` row."""
    held = [row_id for row_id, _, _ in picked]
    entities = {entity for _, entity, _ in picked if entity}
    first = dict(first_pending(entities, held)) if entities else {}
    keep = kept_in_order(picked, first)
    kept = set(keep)
    deletes = [row_id for row_id, _, kind in picked if kind == DELETE_USER and row_id in kept]
    if not deletes:
        return keep
    # A membership's fate depends on its account's rows, so the ones given back are known from rule 1. Rule 2 only
    # stops more rows; that gives back more memberships only where one's entity is a user (a call without an
    # account), so this settles in a step or two.
    returned = given_back(picked, keep)
    while True:
        naming = first_naming(memberships_before(held, returned, max(deletes)))
        keep = kept_in_order(picked, first, naming)
        now_returned = given_back(picked, keep)
        if now_returned == returned:
            return keep
        returned = now_returned
