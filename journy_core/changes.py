"""What one database transaction changed, turned into operations once it commits.

Model hooks (Django signals, SQLAlchemy session events) record here during the transaction; after the commit the
adapter calls :meth:`ChangeBuffer.operations` and queues the result; on rollback it simply drops the buffer.

- Many saves of one object make one upsert, built from the object's final state: :meth:`upsert` takes a builder
  (called at commit: Django, where the instance is still readable) or a finished operation (SQLAlchemy, where
  ``after_commit`` must not touch expired instances, so the payload is built during the flush).
- A delete after upserts of the same object leaves only the delete; an upsert after a delete sends both, in order.
- Membership changes keep the last action per (account, user), grouped into one call per account and action.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from . import operations as ops
from .operations import Operation

__all__ = ["ChangeBuffer"]

Builder = Callable[[], "Operation | None"]


class ChangeBuffer:
    """Changes of one transaction, in the order they first happened."""

    def __init__(self) -> None:
        self._objects: dict[Hashable, list[Operation | Builder]] = {}
        # (account key) -> {user key: ("add" | "remove", account ident, user ident)}
        self._members: dict[Hashable, dict[Hashable, tuple[str, dict[str, Any], dict[str, Any]]]] = {}

    def __bool__(self) -> bool:
        return bool(self._objects) or bool(self._members)

    def upsert(self, key: Hashable, change: Operation | Builder) -> None:
        """Record a save of the object ``key`` (e.g. ``("user", 42)``); a later save replaces an earlier one."""
        steps = self._objects.setdefault(key, [])
        if steps and _is_upsert(steps[-1]):
            steps[-1] = change
        else:
            steps.append(change)

    def delete(self, key: Hashable, operation: Operation) -> None:
        """Record a delete of ``key``; it replaces the upserts recorded since the previous delete."""
        steps = self._objects.setdefault(key, [])
        while steps and _is_upsert(steps[-1]):
            steps.pop()
        steps.append(operation)

    def membership(
        self,
        action: str,
        account: Mapping[str, Any],
        user: Mapping[str, Any],
    ) -> None:
        """Record that ``user`` (``{"user_id": ...}``) joined (``"add"``) or left (``"remove"``) ``account``
        (``{"account_id": ...}``); the last action per pair wins."""
        if action not in ("add", "remove"):
            raise ValueError(f"membership action must be 'add' or 'remove', not {action!r}")
        account_key = tuple(sorted(account.items()))
        user_key = tuple(sorted(user.items()))
        self._members.setdefault(account_key, {})[user_key] = (action, dict(account), dict(user))

    def operations(self) -> list[Operation]:
        """The operations to queue, builders called now; a builder returning None (opted out) is skipped."""
        result: list[Operation] = []
        for steps in self._objects.values():
            for step in steps:
                operation = step() if callable(step) else step
                if operation is not None:
                    result.append(operation)
        gone = self._deleted()
        for pairs in self._members.values():
            for action in ("remove", "add"):
                # A membership of a user or account this transaction deleted is moot: sent after the delete, an add
                # would create the deleted user again.
                users = [
                    user
                    for done, account, user in pairs.values()
                    if done == action and not (_marks(user) & gone or _marks(account) & gone)
                ]
                if users:
                    account = next(acc for done, acc, _ in pairs.values() if done == action)
                    build = ops.add_users_to_account if action == "add" else ops.remove_users_from_account
                    result.append(build(**account, users=users))
        return result

    def _deleted(self) -> set[str]:
        """``"userId:42"``-style marks of the users and accounts whose last change here is a delete."""
        marks: set[str] = set()
        for steps in self._objects.values():
            last = steps[-1] if steps else None
            if last is not None and not callable(last) and last.kind in ("delete_user", "delete_account"):
                marks.update(f"{name}:{value}" for name, value in last.payload["identification"].items())
        return marks

    def clear(self) -> None:
        self._objects.clear()
        self._members.clear()


def _is_upsert(step: Operation | Builder) -> bool:
    return callable(step) or step.kind in ("upsert_user", "upsert_account")


#: The membership helpers' argument names, as the API names them in an identification.
_API_NAMES = {"user_id": "userId", "email": "email", "account_id": "accountId", "domain": "domain"}


def _marks(identity: Mapping[str, Any]) -> set[str]:
    return {f"{_API_NAMES.get(name, name)}:{value}" for name, value in identity.items() if value is not None}
