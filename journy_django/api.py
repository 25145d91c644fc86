# mypy: disable-error-code="import-untyped"
"""``journy_django.track(...)``: record an event from a view, a task or a script, without waiting for journy.io."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models

from journy_core import operations as ops
from journy_core.errors import InvalidArgumentError

from .conf import get_journy, journy_settings
from .identity import account_identity, user_identity

__all__ = ["track"]


def track(
    name: str,
    *,
    user: Any = None,
    account: Any = None,
    metadata: Mapping[str, object] | None = None,
    triggered_at: Any = None,
) -> None:
    """Queue the event ``name`` (past tense: ``"created_invoice"``) for a user and/or an account.

    ``user`` and ``account`` are model instances or their IDs. It returns at once; delivery happens through
    ``JOURNY["QUEUE"]``. Bad arguments raise :class:`~journy_core.InvalidArgumentError` here, at the call site.
    Nothing is sent when ``ENABLED`` is False, or for a staff user with ``SKIP_STAFF``.

    >>> journy_django.track("created_invoice", user=request.user, account=org, metadata={"amount": 100})
    ... # doctest: +SKIP
    """
    config = journy_settings()
    identification: dict[str, Any] = {}
    if user is not None:
        if getattr(user, "is_anonymous", False) is True:
            raise InvalidArgumentError(
                "user",
                "nobody is logged in (an AnonymousUser): pass a user, a user's ID, or track for the account alone "
                "with account=...",
            )
        if config["SKIP_STAFF"] and isinstance(user, models.Model) and getattr(user, "is_staff", False):
            return
        identification.update(user_identity(user))
    if account is not None:
        identification.update(account_identity(account))
    operation = ops.track(name, metadata=metadata, triggered_at=triggered_at, **identification)
    if config.enabled:
        get_journy().enqueue(operation)
