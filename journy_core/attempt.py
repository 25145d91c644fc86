"""One delivery attempt, the same for every path that sends: the ``thread`` and ``sync`` backends, the worker side
of the distributed ones, and the bulk sync.

:func:`attempt` sends an operation once, tells the pacer what the answer said about the rate limit (a success, an
API error and a 429 all carry the figures), counts it, and decides what comes next: ``sent``, ``retry`` after a
delay (transient failures, within the :class:`~journy_core.retry.RetryPolicy`), or ``failed``. What each caller does
with that (sleep and loop, put the entry back in line, ``self.retry()`` a Celery task) is its own business; the
rule is here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .client import Result
from .errors import APIError, JournyError, RateLimitedError
from .operations import Operation
from .pacing import Pacer
from .retry import RetryPolicy, is_transient
from .stats import Stats

__all__ = ["Attempt", "attempt", "describe_error", "log_retry"]

logger = logging.getLogger("journy")


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt: ``sent``, ``retry`` (after ``delay`` seconds) or ``failed``.

    ``answered`` is False when journy.io did not answer (a transport error or a 5xx), which the exit flush reads to
    stop waiting for an API that is down.
    """

    outcome: str
    delay: float = 0.0
    error: BaseException | None = None
    answered: bool = True


SENT = Attempt("sent")


def attempt(
    send: Callable[[Operation], Result],
    operation: Operation,
    *,
    pacer: Pacer,
    retry: RetryPolicy,
    attempts: int,
    age: float,
    stats: Stats | None = None,
) -> Attempt:
    """Make attempt number ``attempts`` (1 for the first) at ``operation``, queued ``age`` seconds ago; never
    raises. ``send`` is the client's ``send`` or ``perform``; the caller has already taken its pacer slot."""
    try:
        result = send(operation)
    except Exception as error:
        pause = 0.0
        if isinstance(error, RateLimitedError):
            pause = pacer.rate_limited(error.rate_limit)
        elif isinstance(error, APIError):
            pacer.observe(error.rate_limit, error.calls_remaining)
        transient = is_transient(error)
        answered = not transient or isinstance(error, RateLimitedError)
        if transient and not retry.gives_up(attempts, age):
            if stats is not None:
                stats.add("retried")
            return Attempt("retry", max(pause, retry.backoff(attempts)), error, answered)
        return Attempt("failed", 0.0, error, answered)
    pacer.observe(result.rate_limit, result.calls_remaining)
    if stats is not None:
        stats.add("sent")
    return SENT


def describe_error(error: BaseException) -> str:
    """A log-safe one-line description: the status and the server's message and field errors for API errors."""
    if isinstance(error, JournyError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def log_retry(operation: Operation, attempts: int, outcome: Attempt, level: int = logging.INFO) -> None:
    """Log that attempt number ``attempts`` at ``operation`` failed and when it is tried again."""
    logger.log(
        level,
        "journy: %s failed (attempt %d), retrying in %.2f s: %s",
        operation.describe(),
        attempts,
        outcome.delay,
        describe_error(outcome.error) if outcome.error is not None else "",
    )
