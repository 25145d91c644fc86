"""The settings module of the backend tests' RQ worker: ``rq worker -c tests.backends.rq_settings ...``.

RQ imports it when the worker starts, which is where a project configures journy for its workers; here, a client
with a short HTTP read timeout (``JOURNY_TEST_READ_TIMEOUT``) so that the emulator's timeout fault is a timeout
for the client. The key and the emulator URL come from ``JOURNY_API_KEY`` and ``JOURNY_API_URL``.
"""

from __future__ import annotations

import json
import os

import redis

from journy_core import Client, Operation
from journy_core.worker import configure_worker

REDIS_URL = os.environ.get("JOURNY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
FAILURES_KEY = "journy-test:failures"

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
