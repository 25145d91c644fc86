"""The per-transaction change log both adapters feed: savepoints, commit order, rollbacks, commit callbacks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from journy_core import operations as ops
from journy_core.changelog import (
    ChangeLog,
    CommitCallbackLog,
    delete_change,
    membership_change,
    upsert_change,
)
from journy_core.changes import ChangeBuffer
from journy_core.operations import Operation


def upsert_user(user_id: int, **properties: object) -> Callable[[ChangeBuffer], None]:
    return upsert_change(("user", user_id), ops.upsert_user(user_id=user_id, properties=properties or None))


def upsert_account(account_id: int) -> Callable[[ChangeBuffer], None]:
    return upsert_change(("account", account_id), ops.upsert_account(account_id=account_id))


def delete_user(user_id: int) -> Callable[[ChangeBuffer], None]:
    return delete_change(("user", user_id), ops.delete_user(user_id=user_id))


def summary(operations: list[Operation]) -> list[tuple[str, object]]:
    def subject(operation: Operation) -> object:
        if "identification" in operation.payload:
            return operation.payload["identification"]
        return [user["identification"] for user in operation.payload["users"]]

    return [(operation.kind, subject(operation)) for operation in operations]


# -- ChangeLog: a framework that reports each savepoint (SQLAlchemy) --------------------------------------------


def test_the_outermost_commit_returns_the_changes_in_the_order_they_were_recorded() -> None:
    log = ChangeLog()
    log.record(upsert_account(7))
    log.record(upsert_user(1), membership_change("add", {"account_id": "7"}, {"user_id": "1"}))
    log.record(upsert_user(2))
    assert summary(log.commit().operations()) == [
        ("upsert_account", {"accountId": "7"}),
        ("upsert_user", {"userId": "1"}),
        ("upsert_user", {"userId": "2"}),
        ("add_users_to_account", [{"userId": "1"}]),
    ]
    assert len(log) == 0  # the next transaction starts empty
    assert not log.commit()


def test_released_nested_savepoints_are_committed_with_the_outer_transaction() -> None:
    log = ChangeLog()
    log.record(upsert_user(1))
    log.begin_savepoint("outer")
    log.record(upsert_user(2))
    log.begin_savepoint("inner")
    log.record(upsert_user(3))
    log.release_savepoint("inner")
    log.record(upsert_user(4))
    log.release_savepoint("outer")
    assert log.depth == 0
    assert [op.payload["identification"]["userId"] for op in log.commit().operations()] == ["1", "2", "3", "4"]


def test_rolling_back_to_a_savepoint_drops_its_changes_and_those_of_the_savepoints_inside_it() -> None:
    log = ChangeLog()
    log.record(upsert_user(1))
    log.begin_savepoint("outer")
    log.record(upsert_user(2))
    log.begin_savepoint("inner")
    log.record(upsert_user(3))
    log.release_savepoint("inner")
    log.begin_savepoint("still open")
    log.record(upsert_user(4))
    log.rollback_savepoint("outer")
    assert log.depth == 0
    log.record(upsert_user(5))
    assert [op.payload["identification"]["userId"] for op in log.commit().operations()] == ["1", "5"]


def test_a_rolled_back_savepoint_keeps_the_changes_before_it_and_the_ones_after() -> None:
    log = ChangeLog()
    log.record(upsert_user(1))
    log.begin_savepoint()
    log.record(delete_user(1))
    log.rollback_savepoint()  # the innermost, by default
    log.record(upsert_user(2))
    assert summary(log.commit().operations()) == [
        ("upsert_user", {"userId": "1"}),
        ("upsert_user", {"userId": "2"}),
    ]


def test_a_rollback_of_the_outer_transaction_drops_everything_its_savepoints_held() -> None:
    log = ChangeLog()
    log.record(upsert_user(1))
    log.begin_savepoint("sp")
    log.record(upsert_user(2))
    log.release_savepoint("sp")
    log.begin_savepoint("open")
    log.record(upsert_user(3))
    log.rollback()
    assert (len(log), log.depth) == (0, 0)
    log.record(upsert_user(4))
    assert [op.payload["identification"]["userId"] for op in log.commit().operations()] == ["4"]


def test_a_released_or_unknown_savepoint_is_ignored() -> None:
    log = ChangeLog()
    log.begin_savepoint("sp")
    log.record(upsert_user(1))
    log.release_savepoint("sp")
    log.rollback_savepoint("sp")  # a framework reporting the end of every savepoint, released ones too
    log.release_savepoint("never opened")
    log.rollback_savepoint()
    assert [op.payload["identification"]["userId"] for op in log.commit().operations()] == ["1"]


def test_saves_in_several_savepoints_make_one_upsert_and_a_later_delete_replaces_it() -> None:
    log = ChangeLog()
    log.record(upsert_user(1, plan="free"))
    log.begin_savepoint("sp")
    log.record(upsert_user(1, plan="pro"))
    log.release_savepoint("sp")
    assert [op.payload["properties"] for op in log.commit().operations()] == [{"plan": "pro"}]
    log.record(upsert_user(1, plan="pro"))
    log.begin_savepoint("sp")
    log.record(delete_user(1))
    log.release_savepoint("sp")
    assert [op.kind for op in log.commit().operations()] == ["delete_user"]


def test_a_membership_of_a_user_deleted_in_the_same_commit_is_dropped() -> None:
    log = ChangeLog()
    log.record(upsert_user(1), upsert_account(7), membership_change("add", {"account_id": "7"}, {"user_id": "1"}))
    log.begin_savepoint("sp")
    log.record(delete_user(1))
    log.release_savepoint("sp")
    # Sent after the delete, the add would create the deleted user again in journy.io.
    assert [op.kind for op in log.commit().operations()] == ["delete_user", "upsert_account"]


# -- CommitCallbackLog: a framework that runs a callback per change after the commit (Django) --------------------


class Transactions:
    """Django's documented ``on_commit`` rules in a few lines: callbacks run after the outermost commit, in
    registration order; those registered in a savepoint (or a transaction) that rolls back are discarded."""

    def __init__(self) -> None:
        self.hooks: list[tuple[frozenset[int], Callable[[], None]]] = []
        self.savepoints: list[int] = []
        self.opened = 0

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.hooks.append((frozenset(self.savepoints), callback))

    def savepoint(self) -> None:
        self.opened += 1
        self.savepoints.append(self.opened)

    def release(self) -> None:
        self.savepoints.pop()

    def rollback_savepoint(self) -> None:
        sid = self.savepoints.pop()
        self.hooks = [(sids, callback) for sids, callback in self.hooks if sid not in sids]

    def commit(self) -> None:
        hooks, self.hooks = self.hooks, []
        while hooks:
            _, callback = hooks.pop(0)
            callback()

    def rollback(self) -> None:
        self.hooks = []


@pytest.fixture
def emitted() -> list[list[tuple[str, object]]]:
    return []


@pytest.fixture
def log(emitted: list[list[tuple[str, object]]]) -> CommitCallbackLog:
    return CommitCallbackLog(lambda buffer: emitted.append(summary(buffer.operations())))


def test_a_commit_emits_its_changes_once_after_the_last_callback_in_recording_order(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    db = Transactions()
    for change in (upsert_user(1, plan="free"), upsert_account(7), upsert_user(1, plan="pro")):
        db.on_commit(log.record(change))
    db.on_commit(lambda: emitted.append([("the app's own hook", None)]))
    assert emitted == []
    db.commit()
    assert emitted == [
        [("upsert_user", {"userId": "1"}), ("upsert_account", {"accountId": "7"})],
        [("the app's own hook", None)],
    ]
    assert len(log) == 0


def test_the_changes_of_a_rolled_back_savepoint_are_never_emitted_even_at_the_end_of_the_commit(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    db = Transactions()
    db.on_commit(log.record(upsert_user(1)))
    db.savepoint()
    db.on_commit(log.record(upsert_user(2)))
    db.savepoint()
    db.on_commit(log.record(upsert_user(3)))
    db.release()
    db.rollback_savepoint()  # the outer savepoint, with the inner one it released
    db.savepoint()
    db.on_commit(log.record(upsert_user(4)))
    db.release()
    db.savepoint()
    db.on_commit(log.record(upsert_user(5)))
    db.rollback_savepoint()  # the last change of the transaction
    db.commit()
    assert emitted == [[("upsert_user", {"userId": "1"}), ("upsert_user", {"userId": "4"})]]


def test_a_rolled_back_transaction_emits_nothing_and_the_next_commit_only_its_own_changes(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    db = Transactions()
    db.on_commit(log.record(upsert_user(1)))
    db.rollback()
    assert emitted == []
    db.on_commit(log.record(upsert_user(2)))
    db.commit()
    assert emitted == [[("upsert_user", {"userId": "2"})]]


def test_a_membership_of_a_user_deleted_in_the_same_commit_is_dropped_by_callbacks_too(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    db = Transactions()
    for change in (upsert_user(1), membership_change("add", {"account_id": "7"}, {"user_id": "1"}), delete_user(1)):
        db.on_commit(log.record(change))
    db.commit()
    assert emitted == [[("delete_user", {"userId": "1"})]]


def test_a_callback_run_twice_emits_its_change_once(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    callback = log.record(upsert_user(1))
    callback()  # captureOnCommitCallbacks(execute=True) inside a transaction...
    callback()  # ...that later commits for real
    assert emitted == [[("upsert_user", {"userId": "1"})]]


def test_callbacks_that_never_run_do_not_hold_back_the_ones_registered_after_them(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    never_run = log.record(upsert_user(1))  # a TestCase's fixture: its transaction never commits
    captured = [log.record(upsert_user(2)), log.record(upsert_account(7))]
    for callback in captured:  # captureOnCommitCallbacks(execute=True)
        callback()
    assert emitted == [[("upsert_user", {"userId": "2"}), ("upsert_account", {"accountId": "7"})]]
    assert len(log) == 1
    del never_run


def test_when_the_framework_stops_running_callbacks_halfway_the_ones_that_ran_are_emitted(
    log: CommitCallbackLog, emitted: list[list[tuple[str, object]]]
) -> None:
    db = Transactions()
    db.on_commit(log.record(upsert_user(1)))

    def broken() -> None:
        raise RuntimeError("an app's hook")

    db.on_commit(broken)
    db.on_commit(log.record(upsert_user(2)))
    with pytest.raises(RuntimeError):
        db.commit()  # the rest of the list is dropped with the exception
    assert emitted == [[("upsert_user", {"userId": "1"})]]


def test_a_connection_that_keeps_rolling_back_keeps_no_changes(log: CommitCallbackLog) -> None:
    db = Transactions()
    for user in range(1000):
        db.on_commit(log.record(upsert_user(user)))
        db.rollback()
    assert len(log) == 0
    assert len(log._entries) < 130  # discarded changes are forgotten as the log grows


def test_a_change_recorded_while_a_commit_is_being_emitted_waits_for_its_own_commit(
    emitted: list[list[tuple[str, object]]],
) -> None:
    db = Transactions()

    def emit(buffer: ChangeBuffer) -> None:
        emitted.append(summary(buffer.operations()))
        if len(emitted) == 1:  # the app's code, run while building the operations, saves again in a transaction
            db.on_commit(changes.record(upsert_user(2)))

    changes = CommitCallbackLog(emit)
    db.on_commit(changes.record(upsert_user(1)))
    db.commit()
    assert emitted == [[("upsert_user", {"userId": "1"})]]
    db.commit()
    assert emitted == [[("upsert_user", {"userId": "1"})], [("upsert_user", {"userId": "2"})]]
