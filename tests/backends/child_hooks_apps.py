"""What the child-process hook tests run in real workers: a Celery app and an RQ job that track with the default
``thread`` queue backend, as an app's own tasks do.

``celery -A tests.backends.child_hooks_apps worker ...`` and ``rq worker ...`` import this module; the Redis
database, the key and the emulator's URL come from the environment the tests give the workers
(``JOURNY_TEST_REDIS_URL``, ``JOURNY_API_KEY``, ``JOURNY_API_URL``).
"""

from __future__ import annotations

import os

from celery import Celery

from journy_core import Journy

REDIS_URL = os.environ.get("JOURNY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TRACK_TASK = "journy_child_hooks.track_batch"
UPSERT_TASK = "journy_child_hooks.upsert_batch"

app = Celery("journy_child_hooks", broker=REDIS_URL)
app.conf.update(
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)

_journy: list[Journy] = []


def journy() -> Journy:
    """The process's ``Journy`` on the thread backend, built on first use (after the fork, as apps' often are)."""
    if not _journy:
        # The emulator's limit is raised by the tests: the pacer need not wait for its headers to say so. Upserts
        # wait a minute for later changes to merge into them: only a flush delivers them within a test.
        options = {"RATE_LIMIT": 100_000, "COALESCE_WINDOW": 60.0}
        _journy.append(Journy(os.environ["JOURNY_API_KEY"], queue={"BACKEND": "thread", "OPTIONS": options}))
    return _journy[0]


def track_batch(name: str, start: int, count: int) -> None:
    """Track ``count`` events called ``name`` for users ``start`` to ``start + count - 1``, and return at once."""
    for number in range(start, start + count):
        journy().track(name, user_id=str(number))


def upsert_batch(prefix: str, start: int, count: int) -> None:
    """Upsert ``count`` users ``{prefix}-{start}`` onwards, and return at once (they wait in the queue)."""
    for number in range(start, start + count):
        journy().upsert_user(user_id=f"{prefix}-{number}", properties={"batch": prefix})


@app.task(name=TRACK_TASK)
def track_batch_task(name: str, start: int, count: int) -> None:
    """The Celery task: :func:`track_batch`."""
    track_batch(name, start, count)


@app.task(name=UPSERT_TASK)
def upsert_batch_task(prefix: str, start: int, count: int) -> None:
    """The Celery task: :func:`upsert_batch`."""
    upsert_batch(prefix, start, count)
