"""Settings of the Django tests (configured in-process by ``tests/django/conftest.py``).

SQLite always; a second database alias ``postgres`` (127.0.0.1:5432, user ``postgres``) when PostgreSQL answers,
so that the transaction tests run on both; a third, ``mariadb`` (127.0.0.1:3306, user ``root`` without password),
when MariaDB/MySQL answers and a MySQL driver (``mysqlclient``) is installed (``JOURNY_TEST_MARIADB=0`` leaves it
out). The test database name carries the process ID, so that two runs (Python 3.11 and 3.13) never share one.
"""

from __future__ import annotations

import os
import socket

SECRET_KEY = "journy-django-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.django.testapp.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "journy_django",
    "tests.django.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "journy_django.middleware.JournyMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _mysql_driver() -> bool:
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return False
    return True


POSTGRES = _reachable(5432)
MARIADB = os.environ.get("JOURNY_TEST_MARIADB", "1") != "0" and _reachable(3306) and _mysql_driver()
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
if POSTGRES:
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "TEST": {"NAME": f"test_journy_django_{os.getpid()}"},
    }
if MARIADB:
    DATABASES["mariadb"] = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"test_journy_django_{os.getpid()}", "CHARSET": "utf8mb4"},
    }

JOURNY = {
    "API_KEY": "test-key",
    "QUEUE": {"BACKEND": "memory"},
    "TRACKER_ID": "tracker-1",
    "TRACKER_DOMAIN": "https://go.acme.test",
    "VERIFICATION_SECRET": "website-secret",
    "ACCOUNT_MODEL": "testapp.Organization",
    "ACCOUNT_MEMBERS": "members",
    "ACCOUNT_DOMAIN_FIELD": "domain",
    "ACCOUNT_PROPERTIES": {"name": "name", "plan": "plan"},
    "CURRENT_ACCOUNT": "tests.django.testapp.views.current_account",
}
