"""Which failures are worth another attempt, and how long to wait before it.

Transient: connection errors, timeouts, 408, 429 and 5xx. Everything else (400, 401, 403, 404, 422...) fails the
same way again and is never retried. Backoff is exponential with full jitter and a cap, so that many processes
recovering from the same outage do not retry in step.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import APIError, ConfigurationError, TransportError

__all__ = ["RetryPolicy", "is_transient"]


def is_transient(error: BaseException) -> bool:
    """Whether sending the same operation again can succeed."""
    if isinstance(error, TransportError):
        return True
    if isinstance(error, APIError):
        return error.transient
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long an operation is retried.

    ``max_attempts`` counts the first one; ``max_age`` (seconds since the operation was queued) bounds how stale a
    retried operation may get; the wait before attempt ``n + 1`` is uniform in ``[0, min(cap, base * 2**n)]``.
    """

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 60.0
    max_age: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "base", "cap", "max_age"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"Queue option RETRY[{name!r}] must be a number > 0, got {value!r}.")

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> RetryPolicy:
        """From the ``RETRY`` queue option: ``{"max_attempts": 8, "base": 0.5, "cap": 60, "max_age": 3600}``."""
        options = dict(options or {})
        unknown = set(options) - {"max_attempts", "base", "cap", "max_age"}
        if unknown:
            raise ConfigurationError(
                f"Unknown queue option RETRY keys {sorted(unknown)}; known: max_attempts, base, cap, max_age."
            )
        return cls(**options)

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """The policy a ``RETRY`` option describes: a :class:`RetryPolicy` as it is, a dict (or None) through
        :meth:`from_options`. Every backend reads its option through this one place."""
        if isinstance(value, RetryPolicy):
            return value
        if value is not None and not isinstance(value, Mapping):
            raise ConfigurationError(
                f"Queue option RETRY must be a dict such as {{'max_attempts': 8}}, got {type(value).__name__}."
            )
        return cls.from_options(dict(value) if value is not None else None)

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (full jitter)."""
        ceiling = min(self.cap, self.base * (2 ** min(attempts, 32)))
        return (rng or random).uniform(0, ceiling)

    def gives_up(self, attempts: int, age: float) -> bool:
        """Whether an operation that failed ``attempts`` times and was queued ``age`` seconds ago is done for."""
        return attempts >= self.max_attempts or age >= self.max_age
