"""Settings of the test project, chosen by environment variables.

- ``JOURNY_TEST_TASKS``: ``immediate`` (default: Django's ImmediateBackend) or ``database`` (the database task
  backend of ``django-tasks-db``, or of ``django-tasks`` < 0.12 which still shipped it, and its app).
- ``JOURNY_TEST_DATABASE``: ``sqlite:/path/to/file.sqlite3`` or ``postgresql:DBNAME`` (on 127.0.0.1:5432, user
  ``PGUSER`` or ``postgres``); default an in-memory SQLite database.
- ``JOURNY_TEST_WORKER_URL``, ``JOURNY_TEST_WORKER_KEY``, ``JOURNY_TEST_WORKER_READ_TIMEOUT``: see ``apps.py``.
- ``JOURNY_TEST_SYNC_QUEUE``: a ``JOURNY["QUEUE"]`` as JSON; when set, the project also runs ``journy_django``
  with the user model and the Django tests' ``Organization`` account model (``tests/backends/test_ordering.py``).
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec

SECRET_KEY = "journy-django-tasks-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DJANGO_TASKS_BUILT_IN = find_spec("django.tasks") is not None  # Django 6+
if DJANGO_TASKS_BUILT_IN:
    IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"
    DUMMY_BACKEND = "django.tasks.backends.dummy.DummyBackend"
else:
    IMMEDIATE_BACKEND = "django_tasks.backends.immediate.ImmediateBackend"
    DUMMY_BACKEND = "django_tasks.backends.dummy.DummyBackend"
if find_spec("django_tasks_db") is not None:
    DATABASE_BACKEND, DATABASE_APP = "django_tasks_db.DatabaseBackend", "django_tasks_db"
else:
    DATABASE_BACKEND = "django_tasks.backends.database.DatabaseBackend"
    DATABASE_APP = "django_tasks.backends.database"

MODE = os.environ.get("JOURNY_TEST_TASKS", "immediate")
INSTALLED_APPS = ["tests.backends.django_tasks_project.apps.DjangoTasksTestConfig"]
if not DJANGO_TASKS_BUILT_IN:
    INSTALLED_APPS.insert(0, "django_tasks")
if MODE == "database":
    INSTALLED_APPS.append(DATABASE_APP)

SYNC_QUEUE = os.environ.get("JOURNY_TEST_SYNC_QUEUE")
if SYNC_QUEUE:
    INSTALLED_APPS += ["django.contrib.auth", "django.contrib.contenttypes", "journy_django", "tests.django.testapp"]
    JOURNY = {
        "API_KEY": os.environ.get("JOURNY_TEST_WORKER_KEY", "not-used-by-the-producer"),
        "API_URL": os.environ.get("JOURNY_TEST_WORKER_URL"),
        "QUEUE": json.loads(SYNC_QUEUE),
        "ACCOUNT_MODEL": "testapp.Organization",
        "ACCOUNT_MEMBERS": "members",
        "ACCOUNT_PROPERTIES": {"name": "name"},
    }

TASKS = {
    "default": {
        "BACKEND": DATABASE_BACKEND if MODE == "database" else IMMEDIATE_BACKEND,
        "QUEUES": ["default", "journy"],
    },
    # For the configuration tests: an entry whose queues do not include "default".
    "journy_only": {"BACKEND": IMMEDIATE_BACKEND, "QUEUES": ["journy"]},
    "dummy": {"BACKEND": DUMMY_BACKEND},
}

_database = os.environ.get("JOURNY_TEST_DATABASE", "sqlite::memory:")
_engine, _, _name = _database.partition(":")
if _engine == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": ":memory:" if _name == ":memory:" else _name,
            "OPTIONS": {"timeout": 20},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"journy": {"handlers": ["stderr"], "level": os.environ.get("JOURNY_TEST_LOG_LEVEL", "WARNING")}},
}
