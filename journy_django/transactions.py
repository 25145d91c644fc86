# mypy: disable-error-code="import-untyped"
"""Changes recorded during a database transaction, queued once it commits: never before, never on rollback.

Each change is recorded in the connection's :class:`~journy_core.changelog.CommitCallbackLog` and gets its own
``transaction.on_commit(callback, using=alias, robust=True)``. Django runs those callbacks after the outermost
commit, in registration order, and discards the ones registered in an ``atomic()`` block that rolls back (a
savepoint) or in a transaction that rolls back: the callbacks that run are exactly the committed changes, and the
last one of a commit queues them all together (see the log for how it knows it is the last). Only documented
``django.db.transaction`` functions are used; Django's list of commit hooks is never read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.transaction import TransactionManagementError

from journy_core.changelog import Change, CommitCallbackLog, buffer_of
from journy_core.changes import ChangeBuffer
from journy_core.guard import guarded

__all__ = ["Change", "record_change"]

# One log per connection object: Django gives each thread (and each async task) its own connections, so a log is
# only ever used by one of them. Weak keys: a closed thread's connections take their logs with them.
_logs: weakref.WeakKeyDictionary[Any, CommitCallbackLog] = weakref.WeakKeyDictionary()


def record_change(change: Change, *, using: str | None, enqueue: Callable[[ChangeBuffer], None]) -> None:
    """Queue ``change`` once the current transaction on ``using`` commits (at once outside a transaction)."""
    with guarded("recording a change for journy.io", loud=settings.DEBUG):
        if transaction.get_autocommit(using):
            # Autocommit: the statement that triggered the signal has already committed.
            enqueue(buffer_of([change]))
            return
        connection = transaction.get_connection(using)
        log = _logs.get(connection)
        if log is None:
            log = _logs[connection] = CommitCallbackLog(enqueue)
        try:
            transaction.on_commit(log.record(change), using=using, robust=True)
        except TransactionManagementError:
            # Manual transaction management (autocommit off, no atomic block): Django has no commit hook to offer,
            # so the change is queued now, as before the app turned autocommit off.
            enqueue(buffer_of([change]))
