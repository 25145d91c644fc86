"""Delivering what an in-process queue holds when a process ends without running ``atexit``.

Interpreter exit runs ``atexit``; several hosts end their child processes another way, with ``os._exit`` after
their own clean-up. Each in-process backend that starts delivering calls :func:`watch`, which installs, once per
process and only for the hosts already imported there, the hook each host really offers:

- ``multiprocessing`` children (``Process`` with fork, spawn or forkserver, ``Pool`` and
  ``concurrent.futures.ProcessPoolExecutor`` workers) run the finalizers registered with an ``exitpriority`` when
  their target returns: a ``multiprocessing.util.Finalize`` flushes there.
- Celery's prefork children send ``worker_process_shutdown`` before they leave (recycled by
  ``--max-tasks-per-child`` or at a warm shutdown): a receiver flushes there.
- RQ's work-horse leaves with ``os._exit`` after its one job and offers no hook of its own:
  :class:`journy_core.rq_worker.Worker` flushes at the end of the job. Without it, the first operation a horse
  queues logs a warning saying what to use instead.

A killed process (SIGKILL, SIGTERM without a handler, ``os._exit`` anywhere else) cannot be saved by an in-memory
queue: the durable ``outbox`` backend is the answer there.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Any, Protocol

__all__ = ["flush_all", "flush_at_process_end", "flushed_by_rq_worker", "on_fork_and_exit", "watch"]

logger = logging.getLogger("journy")

#: Runs before multiprocessing's own finalizers with a lower priority (a Queue's feeder thread is joined at -5).
FINALIZE_PRIORITY = 100
_CELERY_DISPATCH_UID = "journy.lifecycle.flush_at_process_end"
RQ_WORKER_CLASS = "journy_core.rq_worker.Worker"


def on_fork_and_exit(obj: object, *, after_fork: str, at_exit: str) -> None:
    """Call ``obj.<after_fork>()`` in each forked child and ``obj.<at_exit>()`` at interpreter exit, for as long
    as ``obj`` lives: both hooks hold it weakly (a bound method would keep it alive for the life of the process)."""
    ref = weakref.ref(obj)
    os.register_at_fork(after_in_child=lambda: _call_if_alive(ref, after_fork))
    atexit.register(_call_if_alive, ref, at_exit)


def _call_if_alive(ref: weakref.ref[Any], method: str) -> None:
    found = ref()
    if found is not None:
        getattr(found, method)()


class _Flushable(Protocol):
    def flush_at_exit(self) -> None: ...


class _State:
    """What this module knows about the current process (each attribute names the process it holds for)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self.pid = os.getpid()  # the process ``watched`` belongs to
        self.hooked_pid: int | None = None  # the process whose hooks are installed
        self.flushed_pid: int | None = None  # the process whose end a hook has flushed
        self.rq_worker_pid: int | None = None  # the RQ work-horse that journy's worker class flushes


_state = _State()


def watch(backend: _Flushable) -> None:
    """Flush ``backend`` (its bounded exit flush) when this process ends, however it ends normally.

    Called by a backend when its delivery starts in a process (so again in each child); cheap, never raises.
    """
    state = _state
    try:
        with state.lock:
            pid = os.getpid()
            if state.pid != pid:  # a forked child: the parent's backends are the parent's to flush
                state.watched.clear()
                state.pid = pid
            state.watched.add(backend)
            if state.hooked_pid == pid:
                return
            state.hooked_pid = pid
        _install_hooks()
    except Exception:  # never into the app: the operation is queued all the same
        logger.exception("journy: could not install the hooks that flush the queue when this process ends")


def flush_all() -> None:
    """Run the exit flush of every backend this process watches."""
    with _state.lock:
        backends = list(_state.watched) if _state.pid == os.getpid() else []
    for backend in backends:
        try:
            backend.flush_at_exit()
        except Exception:
            logger.exception("journy: the exit flush failed")


def flush_at_process_end() -> None:
    """What a host's end-of-process hook calls: :func:`flush_all`, once per process."""
    with _state.lock:
        if _state.flushed_pid == os.getpid():
            return
        _state.flushed_pid = os.getpid()
    flush_all()


def flushed_by_rq_worker() -> None:
    """Note that this process is an RQ work-horse whose end flushes (called by :mod:`journy_core.rq_worker`)."""
    _state.rq_worker_pid = os.getpid()


# -- the hosts' hooks -------------------------------------------------------------------------------------------


# Each hook imports its host lazily, and only once ``sys.modules`` shows the app already did: journy never imports
# an engine the app does not use.


def _install_hooks() -> None:
    if "multiprocessing" in sys.modules:
        _hook_multiprocessing()
    if "celery" in sys.modules:
        _hook_celery()
    if "rq" in sys.modules:
        _check_rq_horse()


def _hook_multiprocessing() -> None:
    import multiprocessing  # noqa: PLC0415 - see above
    import multiprocessing.util  # noqa: PLC0415

    # Only in a multiprocessing child: the main process flushes at interpreter exit. A forked child clears the
    # finalizers it inherited before its target runs, and this runs from the target's first operation, so the
    # finalizer registered here is this child's own.
    if multiprocessing.parent_process() is None:
        return
    multiprocessing.util.Finalize(None, flush_at_process_end, exitpriority=FINALIZE_PRIORITY)


def _hook_celery() -> None:
    from celery import signals  # noqa: PLC0415

    # dispatch_uid: one receiver however often this runs; weak=False: the receiver is a module function anyway.
    signals.worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False, dispatch_uid=_CELERY_DISPATCH_UID)


def _on_worker_process_shutdown(*args: Any, **kwargs: Any) -> None:
    flush_at_process_end()


def _check_rq_horse() -> None:
    import rq  # noqa: PLC0415

    job = rq.get_current_job()
    # RQ's forking (and spawning) workers set RQ_JOB_ID for the horse they start; SimpleWorker runs jobs in the
    # worker process itself, which exits through atexit, and never sets it.
    if job is None or os.environ.get("RQ_JOB_ID") != job.id or _state.rq_worker_pid == os.getpid():
        return
    logger.warning(
        "journy: this RQ work-horse (job %s) ends with os._exit, which skips the exit flush, so what the 'thread' "
        "queue backend holds when the job ends is lost. Run the worker with --worker-class %s (it flushes at "
        "the end of each job), or use the 'sync' queue backend in RQ workers.",
        job.id,
        RQ_WORKER_CLASS,
    )
