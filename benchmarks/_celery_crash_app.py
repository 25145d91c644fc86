"""The Celery app of ``celery_crash.py``'s worker: ``celery -A _celery_crash_app worker`` (``benchmarks/`` on the path).

From the environment: the broker (``JOURNY_BENCH_BROKER``: Redis or RabbitMQ); the Redis transport's
``visibility_timeout`` (``JOURNY_BENCH_VISIBILITY_TIMEOUT``) and its restore sweep interval
(``JOURNY_BENCH_RESTORE_INTERVAL``) when set; the worker's key and the emulator's URL (``JOURNY_API_KEY``,
``JOURNY_API_URL``). ``include`` registers journy's delivery tasks, as in a project's own Celery module.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("journy_crash", broker=os.environ["JOURNY_BENCH_BROKER"], include=["journy_core.backends.celery"])
app.conf.update(worker_enable_remote_control=False, broker_connection_retry_on_startup=True)
options = {}
if os.environ.get("JOURNY_BENCH_VISIBILITY_TIMEOUT"):
    options["visibility_timeout"] = float(os.environ["JOURNY_BENCH_VISIBILITY_TIMEOUT"])
if os.environ.get("JOURNY_BENCH_RESTORE_INTERVAL"):  # kombu >= 5.7: sweep every interval x throttle seconds
    options.update(
        unacked_restore_interval=float(os.environ["JOURNY_BENCH_RESTORE_INTERVAL"]), unacked_restore_throttle=1
    )
app.conf.broker_transport_options = options
