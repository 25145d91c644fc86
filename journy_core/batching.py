"""Operations made together (one web request) leave together: one message, delivered in order by one worker.

With a distributed backend (Celery, RQ, Django tasks) each message may be taken by a different worker, so two
messages about one user can reach journy.io in either order. :func:`batch` collects what :class:`~journy_core.Journy`
queues in the block (in this thread, or this asyncio task and the threads it hands work to) and, when the block
ends, hands it to the backend's ``enqueue_many``: one message, in the order it was made.

Only backends that cross a process boundary (``Backend.sends_batches``) take part; with the in-process ones
(``thread``, ``sync``...) :class:`~journy_core.Journy` never looks here, and the adapters do not even open a batch.
The Django middleware and the Flask extension open one per request and close it as soon as the view has returned
(before a streaming response is iterated), and also when the view raised: what was made before is still sent.

>>> with batch():                                            # doctest: +SKIP
...     journy.upsert_user(user_id="42")
...     journy.track("signed_up", user_id="42")              # one message, in this order
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .operations import Operation

__all__ = ["MAX_BATCH", "Batch", "batch", "close_batch", "collect", "open_batch"]

logger = logging.getLogger("journy")

#: A batch sends what it holds once it reaches this many operations (and goes on collecting).
MAX_BATCH = 1000

_current: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("journy_batch", default=None)


class Batch:
    """The operations collected so far, per backend, in the order they were made."""

    __slots__ = ("_closed", "_previous", "pending")

    def __init__(self, previous: Batch | None) -> None:
        #: backend -> its operations, in order (one backend in practice; a dict keeps first-use order).
        self.pending: dict[Any, list[Operation]] = {}
        self._previous = previous
        self._closed = False

    def __len__(self) -> int:
        return sum(len(operations) for operations in self.pending.values())

    def add(self, backend: Any, operations: Iterable[Operation]) -> None:
        """Keep ``operations`` (in order) for ``backend``; past :data:`MAX_BATCH` of them, send what is there."""
        pending = self.pending.setdefault(backend, [])
        pending.extend(operations)
        if len(pending) >= MAX_BATCH:  # a long block (a command looping in batch()) must not hold them all
            self.pending[backend] = []
            _send(backend, pending)

    def send(self) -> None:
        """Hand what was collected to each backend's ``enqueue_many`` (one message each); never raises."""
        pending, self.pending = self.pending, {}
        for backend, operations in pending.items():
            if operations:
                _send(backend, operations)


def _send(backend: Any, operations: list[Operation]) -> None:
    try:
        backend.enqueue_many(operations)
    except Exception:  # a backend's enqueue never raises by contract; a third-party one might
        logger.exception("journy: could not queue %d operation(s) made together", len(operations))


def collect(backend: Any, operations: Iterable[Operation]) -> bool:
    """Add ``operations`` to the open batch of this context, if any; False when there is none (send them now)."""
    current = _current.get()
    if current is None or current._closed:
        return False
    current.add(backend, operations)
    return True


def open_batch() -> Batch:
    """Start collecting in this context; pair with :func:`close_batch` (or use :func:`batch`)."""
    opened = Batch(_current.get())
    _current.set(opened)
    return opened


def close_batch(opened: Batch, *, send: bool = True) -> None:
    """Stop collecting into ``opened`` (what is queued afterwards goes at once) and send what it collected; with
    ``send=False`` the caller sends it (``opened.send()``), e.g. from another thread. Idempotent, and safe from
    another context than the one that opened it."""
    if opened._closed:
        return
    opened._closed = True
    if _current.get() is opened:
        _current.set(opened._previous)
    if send:
        opened.send()


@contextmanager
def batch() -> Iterator[Batch]:
    """Collect what is queued in the block and send it as one message per backend when the block ends (also
    when it raises). Nested blocks send their own operations when they end."""
    opened = open_batch()
    try:
        yield opened
    finally:
        close_batch(opened)
