"""What every delivery backend shares: the interface, the counters, and how a failure is reported."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from ..attempt import describe_error
from ..client import Client
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import is_transient
from ..stats import Stats

__all__ = ["Backend", "FailureCallback", "Stats", "describe_error", "report_failure"]

logger = logging.getLogger("journy")

#: ``on_failure(operation, error)``: called once for every operation that will not be delivered.
FailureCallback = Callable[[Operation, BaseException], None]


class Backend:
    """A way of getting operations to journy.io.

    ``enqueue`` must return quickly and never raise; ``flush`` waits (at most ``timeout`` seconds) until what was
    queued is delivered or given up on, and returns whether it all was; ``close`` flushes and releases resources.
    """

    #: The name in settings: ``{"BACKEND": "thread"}``.
    name: ClassVar[str] = ""
    #: The OPTIONS keys this backend understands (others are a configuration error).
    option_names: ClassVar[frozenset[str]] = frozenset()
    #: Whether operations made together (one request's, one transaction's) should reach :meth:`enqueue_many` as one
    #: batch: True for backends that cross a process boundary, whose separate messages concurrent workers may
    #: deliver out of order. In-process backends keep each entity's order themselves.
    sends_batches: ClassVar[bool] = False

    def __init__(
        self,
        *,
        client_factory: Callable[[], Client] | None,
        options: Mapping[str, Any] | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.options = dict(options or {})
        self.on_failure = on_failure
        self.stats = Stats()
        problem = unknown_backend_options(type(self), self.options)
        if problem is not None:
            raise ConfigurationError(problem)

    def enqueue(self, operation: Operation) -> None:
        raise NotImplementedError

    def enqueue_many(self, operations: Iterable[Operation]) -> None:
        """Queue operations that belong together (one transaction's or one request's), in order.

        Backends that cross a process boundary override it to send them as one message, so that concurrent
        workers cannot reorder them; the default queues them one by one.
        """
        for operation in operations:
            self.enqueue(operation)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def number_option(self, name: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
        """Read one numeric option, with an error that names it and says what it takes."""
        value = self.options.get(name, default)
        wrong_kind = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
        if wrong_kind or value < minimum:
            what = "a whole number" if integer else "a number"
            raise ConfigurationError(
                f"Queue option {name!r} of the {self.name!r} backend must be {what} >= {minimum}, got {value!r}."
            )
        return value

    def make_client(self) -> Client:
        if self.client_factory is None:
            raise ConfigurationError(
                f"The {self.name!r} queue backend delivers in this process and needs an API key: pass api_key to "
                "Journy(...), or set it in the JOURNY settings."
            )
        return self.client_factory()


def report_failure(
    operation: Operation,
    error: BaseException,
    attempts: int,
    stats: Stats,
    on_failure: FailureCallback | None,
) -> None:
    """Log, count and hand to ``on_failure`` an operation that will not be delivered. Never raises."""
    stats.add("failed")
    transient = is_transient(error)
    reason = "gave up after" if transient else "refused, not retried, after"
    logger.error(
        "journy: %s %s %d attempt(s): %s",
        operation.describe(),
        reason,
        attempts,
        describe_error(error),
    )
    if on_failure is not None:
        try:
            on_failure(operation, error)
        except Exception:
            logger.exception("journy: the on_failure callback raised for %s", operation.describe())


def unknown_backend_options(cls: type[Backend], options: Mapping[str, Any]) -> str | None:
    """What is wrong with ``options`` for the backend class ``cls`` (each unknown name, with the closest known one),
    or None when it takes them all."""
    unknown = sorted(set(options) - set(cls.option_names), key=str)
    if not unknown:
        return None
    hints = ""
    for name in unknown:
        close = difflib.get_close_matches(str(name), cls.option_names, n=1, cutoff=0.6)
        if close:
            hints += f" Did you mean {close[0]!r} for {name!r}?"
    known = ", ".join(sorted(cls.option_names)) or "none"
    return f"Unknown OPTIONS {unknown} for the {cls.name!r} queue backend; it takes: {known}.{hints}"
