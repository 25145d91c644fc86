"""Pausing model sync for a block: bulk imports, fixtures, migrations. One rule for both adapters.

>>> with pause_sync():                      # doctest: +SKIP
...     import_ten_thousand_users()         # no per-row calls; send the final state with the bulk sync afterwards

It covers the current thread (or asyncio task), nests, and works as a decorator (``@pause_sync()``); ``track()``
and device links are not paused. The adapters' model hooks ask :func:`sync_paused` before recording a change.
"""

from __future__ import annotations

import contextvars
from contextlib import ContextDecorator

__all__ = ["pause_sync", "sync_paused"]

_paused: contextvars.ContextVar[int] = contextvars.ContextVar("journy_sync_paused", default=0)


class pause_sync(ContextDecorator):
    """Stop syncing model changes to journy.io inside the block (or the decorated function)."""

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token[int]] = []

    def _recreate_cm(self) -> pause_sync:
        # Each call of a decorated function gets its own instance: threads never share the token stack.
        return type(self)()

    def __enter__(self) -> pause_sync:
        self._tokens.append(_paused.set(_paused.get() + 1))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _paused.reset(self._tokens.pop())


def sync_paused() -> bool:
    """Whether :class:`pause_sync` is active in this thread or task."""
    return _paused.get() > 0
