"""Help for the app's own tests: what would have been sent to journy.io.

The Django app and the Flask extension switch their ``Journy`` to the ``memory`` backend in tests and hand you an
:class:`Outbox`:

>>> outbox = Outbox(Journy(queue={"BACKEND": "memory"}).backend)     # doctest: +SKIP
>>> outbox.events("signed_in")                                       # doctest: +SKIP
[<Operation track userId=42 name=signed_in>]
"""

from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .backends.simple import MemoryBackend
from .errors import ConfigurationError
from .operations import Operation

__all__ = ["Outbox"]


class Outbox:
    """A readable view of a :class:`~journy_core.backends.simple.MemoryBackend`."""

    def __init__(self, backend: Backend) -> None:
        if not isinstance(backend, MemoryBackend):
            raise ConfigurationError(
                f"the Outbox reads the 'memory' queue backend, but this Journy uses {backend.name!r}; set "
                "QUEUE={'BACKEND': 'memory'} in your test settings (the adapters' test helpers do it for you)"
            )
        self.backend = backend

    @property
    def operations(self) -> list[Operation]:
        """Everything queued, in order."""
        return list(self.backend.operations)

    def of_kind(self, kind: str) -> list[Operation]:
        return [op for op in self.backend.operations if op.kind == kind]

    def events(self, name: str | None = None) -> list[Operation]:
        """``track`` operations, all or those of one event name."""
        return [op for op in self.of_kind("track") if name is None or op.payload.get("name") == name]

    def users(self) -> list[dict[str, Any]]:
        """The payloads of user upserts: ``[{"identification": {...}, "properties": {...}}]``."""
        return [dict(op.payload) for op in self.of_kind("upsert_user")]

    def accounts(self) -> list[dict[str, Any]]:
        """The payloads of account upserts."""
        return [dict(op.payload) for op in self.of_kind("upsert_account")]

    def clear(self) -> None:
        self.backend.clear()

    def __len__(self) -> int:
        return len(self.backend.operations)

    def __repr__(self) -> str:
        return f"<Outbox {[op.describe() for op in self.backend.operations]}>"
