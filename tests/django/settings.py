"""Settings of the Django tests (configured in-process by ``tests/django/conftest.py``).

SQLite always; a second database alias ``postgres`` (127.0.0.1:5432, user ``postgres``) when PostgreSQL answers,
so that the transaction tests run on both. The test database name carries the process ID, so that two runs (Python
3.11 and 3.13) never share one.
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


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


POSTGRES = _postgres_reachable()
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
