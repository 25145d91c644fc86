"""The test app: tells the worker side how to reach the test's emulator, with a short read timeout."""

from __future__ import annotations

import os

from django.apps import AppConfig

from journy_core import Client
from journy_core.worker import configure_worker


class DjangoTasksTestConfig(AppConfig):
    name = "tests.backends.django_tasks_project"
    label = "journy_django_tasks_tests"

    def ready(self) -> None:
        # What journy_django's app will do from the JOURNY settings; here from the environment the test sets.
        url = os.environ.get("JOURNY_TEST_WORKER_URL")
        if not url:
            return
        key = os.environ["JOURNY_TEST_WORKER_KEY"]
        read_timeout = float(os.environ.get("JOURNY_TEST_WORKER_READ_TIMEOUT", "10"))

        def client() -> Client:
            return Client(key, base_url=url, timeout=(1.0, read_timeout), pool_size=1)

        configure_worker(client)
