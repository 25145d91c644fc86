"""Settings of the example project: SQLite, the journy.io emulator on 127.0.0.1:8484 by default.

Environment: ``JOURNY_API_URL`` (the emulator's URL; journy_core reads it too), ``JOURNY_API_KEY``,
``DEMO_DATABASE`` (the SQLite file), ``DEMO_VERIFICATION_SECRET``.
"""

from __future__ import annotations

import os
from pathlib import Path

from journy_core.emulator import DEFAULT_API_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-project-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "demo_site.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "journy_django",
    "organizations",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "journy_django.middleware.JournyMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}
STATIC_URL = "static/"

EMULATOR_URL = os.environ.get("JOURNY_API_URL", "http://127.0.0.1:8484")

JOURNY = {
    "API_KEY": os.environ.get("JOURNY_API_KEY", DEFAULT_API_KEY),
    "API_URL": EMULATOR_URL,
    # The emulator serves a do-nothing /tracker.js, so the snippet loads from it.
    "TRACKER_ID": "emulator-tracker",
    "TRACKER_DOMAIN": EMULATOR_URL,
    "VERIFICATION_SECRET": os.environ.get("DEMO_VERIFICATION_SECRET", "demo-verification-secret"),
    "ACCOUNT_MODEL": "organizations.Organization",
    "ACCOUNT_MEMBERS": "members",
    "ACCOUNT_PROPERTIES": {"name": "name", "plan": "plan"},
    "CURRENT_ACCOUNT": "organizations.views.current_organization",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"journy": {"handlers": ["console"], "level": "INFO"}},
}
