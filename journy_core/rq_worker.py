"""An RQ worker class whose work-horse delivers what the ``thread`` queue backend holds before it leaves.

RQ's default worker runs each job in a forked work-horse that leaves with ``os._exit`` right after the job, so
``atexit`` never runs there and what the job queued in memory would be lost. Run the worker with::

    rq worker --worker-class journy_core.rq_worker.Worker ...
    python manage.py rqworker --worker-class journy_core.rq_worker.Worker ...   # django-rq

and each horse runs the bounded exit flush (``EXIT_TIMEOUT``) when its job ends, whether the job succeeded or
failed. For another worker class (``SpawnWorker``, ``HerokuWorker``, your own), put :class:`FlushAfterJob` first
among its bases.
"""

from __future__ import annotations

from typing import Any

from . import lifecycle
from .errors import ConfigurationError

try:
    import rq
except ImportError as exc:  # pragma: no cover - exercised only without RQ installed
    raise ConfigurationError(
        f"journy_core.rq_worker needs RQ, which cannot be imported ({exc}): pip install 'journy[rq]'."
    ) from exc

__all__ = ["FlushAfterJob", "Worker"]


class FlushAfterJob:
    """Mixin for an RQ worker class: a work-horse flushes journy's in-process queue when its job ends.

    In workers that run jobs in their own process (``SimpleWorker``) it does nothing: that process exits through
    ``atexit``, where the flush runs anyway.
    """

    def perform_job(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> Any:
        """Perform the job (RQ's own ``perform_job``), then, in a work-horse, flush before RQ's ``os._exit``."""
        horse = bool(getattr(self, "is_horse", False))
        if horse:
            lifecycle.flushed_by_rq_worker()
        try:
            return super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
        finally:
            if horse:
                lifecycle.flush_at_process_end()


class Worker(FlushAfterJob, rq.Worker):
    """RQ's default forking worker, whose work-horse flushes journy's in-process queue when its job ends."""
