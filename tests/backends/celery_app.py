"""The Celery app of the backend tests' worker: ``celery -A tests.backends.celery_app worker``.

It is what a project's own Celery module looks like with journy: ``include`` names the module that registers
``journy.deliver``. Configuration comes from the environment the tests give the worker: the Redis database
(``JOURNY_TEST_REDIS_URL``), the key and emulator URL (``JOURNY_API_KEY``, ``JOURNY_API_URL``, read by the
client), and a short HTTP read timeout (``JOURNY_TEST_READ_TIMEOUT``) so that the emulator's timeout fault is
a timeout for the client.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery

from journy_core import Client, Operation
from journy_core.worker import configure_worker

REDIS_URL = os.environ.get("JOURNY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
FAILURES_KEY = "journy-test:failures"

app = Celery("journy_tests", broker=REDIS_URL, include=["journy_core.backends.celery"])
app.conf.update(
    worker_enable_remote_control=False,  # no pidbox keys or broadcast traffic in the test database
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=4,
)

_read_timeout = os.environ.get("JOURNY_TEST_READ_TIMEOUT")
if _read_timeout:

    def _client() -> Client:
        return Client(os.environ["JOURNY_API_KEY"], timeout=(1.0, float(_read_timeout)), pool_size=1)

    configure_worker(_client)


def record_failure(operation: Operation, error: BaseException) -> None:
    """The tests' ON_FAILURE: writes what it got to a Redis list the test reads."""
    entry = {
        "operation": operation.to_dict(),
        "error": type(error).__name__,
        "status": getattr(error, "status", None),
        "pid": os.getpid(),
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.rpush(FAILURES_KEY, json.dumps(entry))
    finally:
        client.close()
