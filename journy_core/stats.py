"""Delivery counters, shared by the backends, the worker side of the distributed ones, and the bulk sync."""

from __future__ import annotations

import threading
from typing import ClassVar

__all__ = ["Stats"]


class Stats:
    """Counters of one backend, safe to update from several threads.

    ``queued``: operations accepted; ``sent``: API calls that succeeded; ``retried``: attempts that failed
    transiently and were scheduled again; ``coalesced``: operations merged into a waiting one; ``dropped``:
    operations refused because the queue was full or closed; ``failed``: operations given up on.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("queued", "sent", "retried", "coalesced", "dropped", "failed")

    def __init__(self, lock: threading.Lock | None = None) -> None:
        #: The lock guarding the counters; a backend may share its own, to count inside its critical section.
        self.lock = lock or threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self._counts[name] += amount

    def add_locked(self, name: str, amount: int = 1) -> None:
        """:meth:`add` for a caller that already holds :attr:`lock`."""
        self._counts[name] += amount

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"<Stats {self.snapshot()}>"
