# mypy: disable-error-code="import-untyped"
"""The app config: ``ready()`` registers the system checks, connects the model and login receivers, and tells
Celery/RQ/Django-tasks workers of this project to build their client from ``settings.JOURNY``."""

from __future__ import annotations

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in

from journy_core.worker import configure_worker

from .checks import register_checks
from .conf import worker_client
from .links import on_user_logged_in
from .sync import connect


class JournyConfig(AppConfig):  # type: ignore[misc]
    name = "journy_django"
    label = "journy_django"
    verbose_name = "journy.io"

    def ready(self) -> None:
        from . import outbox_sync  # noqa: F401, PLC0415 - registers the outbox table check; imports the models

        register_checks()
        connect()
        user_logged_in.connect(on_user_logged_in, dispatch_uid="journy_django.links.user_logged_in")
        configure_worker(worker_client)
