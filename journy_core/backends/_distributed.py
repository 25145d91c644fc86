"""What the distributed backends (Celery, RQ) share, without importing either engine: importable paths for
worker-side callbacks, the report of operations a broker did not take, and one delivery attempt in a worker."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import worker as journy_worker
from ..errors import ConfigurationError
from ..operations import Operation
from ..retry import RetryPolicy
from .base import Backend, FailureCallback, describe_error, report_failure

__all__ = ["DropReporter", "attempt_delivery", "callable_path", "describe_message", "import_object", "resolve_callback"]

logger = logging.getLogger("journy")


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
    except Exception as malformed:
        journy_worker.stats.add("failed")
        logger.error("journy: dropping a malformed queued operation: %s", describe_error(malformed))
        return journy_worker.Delivery("failed", 0.0, malformed)
    try:
        policy = RetryPolicy(**dict(retry)) if retry else RetryPolicy()
    except Exception as wrong:
        logger.warning("journy: ignoring the queued retry policy %r (%s); using the default", retry, wrong)
        policy = RetryPolicy()
    delivery = journy_worker.deliver(op, attempt=attempt, enqueued_at=enqueued_at, retry=policy)
    if delivery.outcome == "failed":
        error = delivery.error or RuntimeError("delivery failed")
        report_failure(op, error, attempt, journy_worker.stats, resolve_callback(on_failure))
    elif delivery.outcome == "retry":
        logger.log(
            retry_log_level,
            "journy: %s failed (attempt %d), retrying in %.2f s: %s",
            op.describe(),
            attempt,
            delivery.delay,
            describe_error(delivery.error) if delivery.error is not None else "",
        )
    return delivery
