"""What the distributed backends (Celery, RQ, Django tasks) share, without importing any engine: importable paths
for worker-side callbacks, the report of operations a broker did not take, one delivery attempt in a worker, and
the delivery of a message's operations in order.

**Messages.** A message carries one operation (``operation``: the format every version wrote) or several that
were made together (``operations``: a list, delivered in order by the worker that takes the message, with the
``attempt`` number of the first). :func:`deliver_in_order` delivers such a list: a transient failure of one
operation stops there and returns it and everything after it, in order, for the next attempt (so nothing made
after it overtakes it); an operation given up on is reported and the rest go on. After :data:`MESSAGE_SECONDS` of
delivering, what is left goes on as a new message too, so that no task holds a worker for long, a worker killed
mid-message loses (acknowledged early) or repeats (acknowledged late) little, and RQ's job timeout is never hit.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import worker as journy_worker
from ..attempt import log_retry
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from .base import Backend, FailureCallback, describe_error, report_failure

__all__ = [
    "MESSAGE_SECONDS",
    "DropReporter",
    "MessageBackend",
    "Progress",
    "attempt_delivery",
    "callable_path",
    "deliver_in_order",
    "describe_batch",
    "describe_message",
    "import_object",
    "message_operations",
    "resolve_callback",
]

logger = logging.getLogger("journy")

#: How long one message delivers before handing what is left to a new message (in order).
MESSAGE_SECONDS = 30.0


def callable_path(value: object, option: str, backend: str) -> str | None:
    """The importable path of ``value`` (a dotted path, ``module:qualname``, or a module-level function)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip() and ("." in value or ":" in value) and " " not in value.strip():
        return value.strip()
    qualname = getattr(value, "__qualname__", None)
    module = getattr(value, "__module__", None)
    if (
        callable(value)
        and isinstance(qualname, str)
        and isinstance(module, str)
        and "<" not in qualname
        and module != "__main__"
    ):
        return f"{module}:{qualname}"
    raise ConfigurationError(
        f"Queue option {option!r} of the {backend!r} backend must be the dotted path of a module-level function "
        f"that the worker can import (e.g. 'myapp.journy.on_failure'), got {value!r}."
    )


def import_object(path: str, option: str, backend: str) -> Any:
    """Import ``"package.module.attribute"`` or ``"package.module:qualified.name"``."""
    if ":" in path:
        module_name, _, attribute = path.partition(":")
        candidates = [(module_name, attribute)]
    else:
        parts = path.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    problem = "no module found"
    missing: str | None = None  # the longest module path that does not exist
    for module_name, attribute in candidates:
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                problem = f"importing {module_name!r} failed: {exc}"
                break
            missing = missing or module_name
            continue
        except Exception as exc:
            problem = f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            break
        try:
            for name in attribute.split("."):
                target = getattr(target, name)
        except AttributeError:
            problem = f"no module named {missing!r}" if missing else f"{module_name!r} has no attribute {attribute!r}"
            break
        return target
    else:
        if missing:
            problem = f"no module named {missing!r}"
    raise ConfigurationError(f"Queue option {option!r}={path!r} of the {backend!r} backend: {problem}.")


class MessageBackend(Backend):
    """A backend that hands operations to other processes as messages (Celery, RQ, Django tasks).

    Operations made together (one transaction's, one request's) arrive at :meth:`enqueue_many` and go as one
    message, delivered in order by one worker: separate messages may be taken by concurrent workers in any order.
    """

    sends_batches = True

    def enqueue(self, operation: Operation) -> None:
        """Send ``operation`` as a message of its own; never raises."""
        self.publish([operation])

    def enqueue_many(self, operations: Iterable[Operation]) -> None:
        """Send operations made together as one message; never raises."""
        pending = list(operations)
        if pending:
            self.publish(pending)

    def publish(self, operations: list[Operation]) -> None:
        """Send ``operations`` (at least one) as one message, in order; never raises."""
        raise NotImplementedError


class DropReporter:
    """Counts, logs (at most once a minute) and reports operations the broker did not take; pauses publishing
    after a publish that timed out."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.last_error: BaseException | None = None
        self._paused_until = float("-inf")
        self._unreported = 0
        self._last_warning = float("-inf")
        self._lock = threading.Lock()

    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def failed_publish(self, operation: Operation, error: BaseException, elapsed: float) -> None:
        timeout: float = getattr(self.backend, "publish_timeout", 1.0)
        pause: float = getattr(self.backend, "broker_down_pause", 0.0)
        self.last_error = error
        if pause > 0 and elapsed >= timeout / 4:  # it waited: the broker is not answering, not refusing
            self._paused_until = time.monotonic() + pause
        self.drop(operation, "the broker did not take it", error)

    def failed_publish_many(self, operations: Sequence[Operation], error: BaseException, elapsed: float) -> None:
        """:meth:`failed_publish` for a message of several operations: each is dropped and reported."""
        self.failed_publish(operations[0], error, elapsed)
        for operation in operations[1:]:
            self.drop(operation, "the broker did not take it", error)

    def drop_many(self, operations: Sequence[Operation], why: str, error: BaseException | None) -> None:
        for operation in operations:
            self.drop(operation, why, error)

    def drop(self, operation: Operation, why: str, error: BaseException | None) -> None:
        backend = self.backend
        backend.stats.add("dropped")
        now = time.monotonic()
        with self._lock:
            self._unreported += 1
            report = now - self._last_warning >= 60.0
            if report:
                count, self._unreported, self._last_warning = self._unreported, 0, now
        if report:
            logger.warning(
                "journy: dropped %d operation(s) (the latest: %s) because %s: %s",
                count,
                operation.describe(),
                why,
                describe_error(error) if error is not None else "no error",
            )
        callback = backend.on_failure
        if callback is None:
            path = getattr(backend, "on_failure_path", None)
            callback = resolve_callback(path) if path else None
        if callback is not None:
            try:
                callback(operation, error or ConfigurationError(why))
            except Exception:
                logger.exception("journy: the on_failure callback raised for %s", operation.describe())


_callbacks: dict[str, FailureCallback | None] = {}


def resolve_callback(path: str | None) -> FailureCallback | None:
    """The ``ON_FAILURE`` function at ``path`` (imported once per process); None, logged, when it cannot be."""
    if not path:
        return None
    if path not in _callbacks:
        try:
            found = import_object(path, "ON_FAILURE", "journy")
        except ConfigurationError:
            logger.exception("journy: cannot import the ON_FAILURE callback %r", path)
            found = None
        if found is not None and not callable(found):
            logger.error("journy: the ON_FAILURE callback %r is not callable", path)
            found = None
        _callbacks[path] = found
    return _callbacks[path]


def describe_message(operation: Mapping[str, Any]) -> str:
    try:
        return Operation.from_dict(operation).describe()
    except Exception:
        return "<malformed operation>"


def describe_batch(operations: Sequence[Mapping[str, Any]], shown: int = 3) -> str:
    """What engines log and show for a message of several operations: the count, the first few kinds and IDs."""
    described = "; ".join(describe_message(operation) for operation in operations[:shown])
    more = f"; and {len(operations) - shown} more" if len(operations) > shown else ""
    return f"{len(operations)} operations: {described}{more}"


def message_operations(operation: Any, operations: Any) -> list[Any]:
    """The operations a message carries, in order: ``operations`` (a list) or the single ``operation``."""
    if operations is None:
        return [operation if operation is not None else {}]
    if isinstance(operations, (list, tuple)) and operations:
        return list(operations)
    return [operations]  # not a non-empty list: reported as one malformed operation


def attempt_delivery(
    operation: Mapping[str, Any],
    attempt: int,
    enqueued_at: float | None,
    retry: Mapping[str, Any] | None,
    on_failure: str | None,
    *,
    retry_log_level: int = logging.INFO,
) -> journy_worker.Delivery:
    """One delivery attempt in a worker; reports (logs, counts, ``ON_FAILURE``) an operation given up on.

    A retry is logged at ``retry_log_level`` (Celery logs its retries itself, so its backend passes DEBUG).
    """
    try:
        op = Operation.from_dict(operation)
    except Exception as malformed:  # a message written by hand or by an incompatible version: retrying cannot help
        journy_worker.stats.add("failed")
        kind = operation.get("kind") if isinstance(operation, Mapping) else type(operation).__name__
        logger.error(
            "journy: dropped a malformed queued operation (kind %r): %s", str(kind)[:64], describe_error(malformed)
        )
        return journy_worker.Delivery("failed", 0.0, malformed)
    try:
        policy = RetryPolicy.coerce(retry)
    except Exception as wrong:
        logger.warning("journy: ignoring the queued retry policy %r (%s); using the default", retry, wrong)
        policy = RetryPolicy()
    delivery = journy_worker.deliver(op, attempt=attempt, enqueued_at=enqueued_at, retry=policy)
    if delivery.outcome == "failed":
        error = delivery.error or RuntimeError("delivery failed")
        report_failure(op, error, attempt, journy_worker.stats, resolve_callback(on_failure))
    elif delivery.outcome == "retry":
        log_retry(op, attempt, delivery, retry_log_level)
    return delivery


@dataclass(frozen=True)
class Progress:
    """What delivering a message's operations came to.

    ``remaining`` is empty when every operation was sent or given up on; otherwise it holds, in order, what a new
    message must carry ``delay`` seconds from now, the first of them at attempt ``attempt``: after a transient
    failure of that first one (``error``), or, with ``error`` None and no delay, because the message ran out of
    time. ``failures`` are the operations given up on (already reported), with their attempt count and error.
    """

    sent: int = 0
    remaining: list[Any] = field(default_factory=list)
    attempt: int = 1
    delay: float = 0.0
    error: BaseException | None = None
    failures: list[tuple[Any, int, BaseException]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """``"sent"`` (all of it), ``"failed"`` (done, some given up on), or ``"retry"`` (something remains)."""
        if self.remaining:
            return "retry"
        return "failed" if self.failures else "sent"


def deliver_in_order(
    operations: Sequence[Any],
    attempt: int,
    enqueued_at: float | None,
    retry: Mapping[str, Any] | None,
    on_failure: str | None,
    *,
    retry_log_level: int = logging.INFO,
    seconds: float = MESSAGE_SECONDS,
) -> Progress:
    """Deliver ``operations`` one after the other, the first at attempt ``attempt`` and the others at their first.

    Stops at the first transient failure and returns that operation and the ones after it (see :class:`Progress`);
    an operation given up on (a 4xx, or too many attempts) is reported by :func:`attempt_delivery` and the next
    one goes on. Never raises.
    """
    started = time.monotonic()
    sent = 0
    failures: list[tuple[Any, int, BaseException]] = []
    for index, operation in enumerate(operations):
        if index and time.monotonic() - started >= seconds:
            return Progress(sent, list(operations[index:]), 1, 0.0, None, failures)
        current = attempt if index == 0 else 1
        delivery = attempt_delivery(operation, current, enqueued_at, retry, on_failure, retry_log_level=retry_log_level)
        if delivery.outcome == "retry":
            return Progress(sent, list(operations[index:]), current + 1, delivery.delay, delivery.error, failures)
        if delivery.outcome == "sent":
            sent += 1
        else:
            failures.append((operation, current, delivery.error or RuntimeError("delivery failed")))
    return Progress(sent, [], 1, 0.0, None, failures)
