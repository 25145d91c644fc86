"""Best-effort code that runs inside the host app (its request, its ``save()``, its template) must never raise
into it. :func:`guarded` runs a block, and on any exception logs it (with a traceback) and counts it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

__all__ = ["error_counts", "guarded", "report_exception"]

logger = logging.getLogger("journy")

_lock = threading.Lock()
_counts: dict[str, int] = {}


@contextlib.contextmanager
def guarded(what: str, *, loud: bool = False) -> Iterator[None]:
    """Swallow, log and count any exception raised in the block. ``what`` says what was being done
    ("syncing User 42"); ``loud`` (the adapters pass the framework's debug flag) logs at ERROR instead of WARNING.
    """
    try:
        yield
    except Exception:
        report_exception(what, loud=loud)


def report_exception(what: str, *, loud: bool = False) -> None:
    """Log (with the traceback) and count the exception being handled; for ``except`` blocks on hot paths,
    where a context manager costs more than the ``try`` it replaces."""
    word = what.split(" ", 1)[0]
    with _lock:
        _counts[word] = _counts.get(word, 0) + 1
    (logger.error if loud else logger.warning)("journy: error while %s", what, exc_info=True)


def error_counts() -> dict[str, int]:
    """How many errors :func:`guarded` swallowed, by the first word of ``what``."""
    with _lock:
        return dict(_counts)
