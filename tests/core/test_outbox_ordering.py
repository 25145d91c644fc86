"""The outbox claim's order rule, shared by every store: entity order, and a user's delete after the memberships
naming that user."""

from __future__ import annotations

import json

from journy_core import operations as ops
from journy_core.outbox.ordering import (
    Picked,
    StoredOperation,
    claim_order,
    first_naming,
    given_back,
    kept_in_order,
    users_named,
)
from journy_core.outbox.store import entity_of

ADD = "add_users_to_account"


def _json(operation: ops.Operation) -> str:
    return json.dumps(operation.to_dict())


def test_rows_without_an_earlier_pending_row_outside_the_claim_are_all_kept() -> None:
    picked: list[Picked] = [(1, "user:1", "upsert_user"), (2, "user:1", "delete_user"), (3, "account:a", ADD)]
    assert kept_in_order(picked, {}) == [1, 2, 3]


def test_a_row_after_its_entitys_first_pending_row_outside_the_claim_waits_with_the_later_ones() -> None:
    picked: list[Picked] = [(2, "user:1", "upsert_user"), (4, "user:1", "upsert_user"), (5, "user:2", "upsert_user")]
    assert kept_in_order(picked, {"user:1": 3}) == [2, 5]
    assert kept_in_order(picked, {"user:1": 1}) == [5]


def test_rows_without_an_entity_keep_no_order() -> None:
    picked: list[Picked] = [(2, "", "get_tracking_snippet"), (3, "", "get_tracking_snippet")]
    assert kept_in_order(picked, {"": 1}) == [2, 3]


def test_a_users_delete_waits_for_an_earlier_membership_naming_that_user() -> None:
    picked: list[Picked] = [(5, "user:1", "delete_user"), (6, "user:1", "upsert_user"), (7, "user:2", "delete_user")]
    assert kept_in_order(picked, {}, {"user:1": 3, "user:2": 9}) == [7]


def test_only_a_delete_waits_for_the_memberships_naming_its_user() -> None:
    picked: list[Picked] = [(5, "user:1", "upsert_user")]
    assert kept_in_order(picked, {}, {"user:1": 3}) == [5]


def test_memberships_not_kept_are_given_back() -> None:
    picked: list[Picked] = [(1, "account:a", ADD), (2, "account:b", "remove_users_from_account"), (3, "user:1", ADD)]
    assert given_back(picked, [2]) == [1, 3]


def test_a_membership_names_its_users_by_id_and_email_but_not_its_account() -> None:
    membership = ops.add_users_to_account(account_id="a", users=["1", {"email": "Ada@Acme.com"}])
    assert users_named(_json(membership)) == ("user:1", "email:ada@acme.com")
    assert users_named(membership.to_dict()) == ("user:1", "email:ada@acme.com")


def test_an_unreadable_row_names_nobody() -> None:
    assert users_named("{not json") == ()
    assert users_named('{"kind": 3}') == ()
    assert users_named('{"kind": "add_users_to_account", "payload": {"users": [3]}}') == ()


def test_each_user_is_named_first_by_its_smallest_membership_id() -> None:
    one = _json(ops.add_users_to_account(account_id="a", users=["1", "2"]))
    two = _json(ops.remove_users_from_account(account_id="b", users=["1"]))
    assert first_naming([(8, two), (4, one)]) == {"user:1": 4, "user:2": 4}


class _Table:
    """The two queries over a list of (id, entity, kind, operation JSON) pending rows, recording their calls."""

    def __init__(self, rows: list[tuple[int, str, str, str]]) -> None:
        self.rows = rows
        self.membership_queries = 0

    def first_pending(self, entities: set[str], held: list[int]) -> dict[str, int]:
        first: dict[str, int] = {}
        for row_id, entity, _, _ in self.rows:
            if entity in entities and row_id < max(held) and row_id not in held:
                first.setdefault(entity, row_id)
        return first

    def memberships_before(
        self, held: list[int], returned: list[int], before: int
    ) -> list[tuple[int, StoredOperation]]:
        self.membership_queries += 1
        return [
            (row_id, text)
            for row_id, _, kind, text in self.rows
            if kind in (ADD, "remove_users_from_account")
            and row_id < before
            and (row_id not in held or row_id in returned)
        ]

    def claim(self, ids: list[int]) -> list[int]:
        picked = [(row_id, entity, kind) for row_id, entity, kind, _ in self.rows if row_id in ids]
        return claim_order(picked, self.first_pending, self.memberships_before)


def _row(row_id: int, operation: ops.Operation) -> tuple[int, str, str, str]:
    return (row_id, entity_of(operation), operation.kind, _json(operation))


def test_a_delete_claimed_while_a_membership_naming_its_user_is_held_elsewhere_waits() -> None:
    table = _Table(
        [_row(1, ops.add_users_to_account(account_id="a", users=["1"])), _row(2, ops.delete_user(user_id="1"))]
    )
    assert table.claim([2]) == []
    assert table.claim([1, 2]) == [1, 2]


def test_a_delete_waits_for_a_membership_the_claim_gives_back() -> None:
    table = _Table(
        [
            _row(1, ops.upsert_account(account_id="a")),
            _row(2, ops.add_users_to_account(account_id="a", users=["1"])),
            _row(3, ops.delete_user(user_id="1")),
            _row(4, ops.track("x", user_id="2")),
        ]
    )
    # Row 1 is held elsewhere: the membership is given back, so the delete of the user it names waits too.
    assert table.claim([2, 3, 4]) == [4]


def test_the_membership_query_runs_only_when_a_delete_is_kept_by_entity_order() -> None:
    table = _Table([_row(1, ops.upsert_user(user_id="1")), _row(2, ops.track("x", user_id="1"))])
    assert table.claim([1, 2]) == [1, 2]
    assert table.membership_queries == 0
