"""What journy_django adds to a minimal logged-in page: the middleware plus ``{% journy_snippet %}``.

    .venv/bin/python benchmarks/django_overhead.py [--rounds 30] [--requests 200] [--clock process]

One process, one database, one logged-in user whose ``__journey`` cookie is already linked (the steady state of a
browsing session). Two full handler stacks (session, auth, messages middleware; Django templates) render the same
page, one with ``JournyMiddleware`` and the tag (identify, account, pageview, with verification hashes), one
without. Rounds alternate between them so that drift hits both; the report is the median time per request and the
ratio. Goal (design.md): at most 5% slower. ``--clock process`` counts this process's CPU time instead of the wall
clock: on a shared, loaded machine the time other processes hold the CPU stays out of either stack's figure.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
PAGE = "<html><head><title>Dashboard</title>{}</head><body><h1>Hello {{{{ user.get_full_name }}}}</h1></body></html>"


def configure() -> None:
    settings.configure(
        SECRET_KEY="benchmark-only",
        DEBUG=False,
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "journy_django",
        ],
        MIDDLEWARE=BASE_MIDDLEWARE,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                    ],
                    "loaders": [  # cached, as in production (DEBUG off)
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                (
                                    "django.template.loaders.locmem.Loader",
                                    {
                                        "plain.html": PAGE.format(""),
                                        "journy.html": "{% load journy %}" + PAGE.format("{% journy_snippet %}"),
                                    },
                                )
                            ],
                        )
                    ],
                },
            }
        ],
        JOURNY={
            "API_KEY": "benchmark",
            "QUEUE": {"BACKEND": "memory"},
            "TRACKER_ID": "tracker-1",
            "TRACKER_DOMAIN": "https://go.acme.test",
            "VERIFICATION_SECRET": "website-secret",
            "CURRENT_ACCOUNT": f"{__name__}.current_account",
        },
    )
    django.setup()


def current_account(request: object) -> str:
    return "7"  # an app would look it up; the same cost with and without the integration


def page(request: object, template: str) -> object:
    """One view and one URL pattern for both stacks, so that both resolve and dispatch alike."""
    from django.shortcuts import render

    return render(request, f"{template}.html")  # type: ignore[arg-type]


urlpatterns: list[object] = []

JOURNY_MIDDLEWARE = [*BASE_MIDDLEWARE, "journy_django.middleware.JournyMiddleware"]


def set_up() -> Any:
    """After :func:`configure`: the URL pattern, the tables, and the user both stacks log in as."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.urls import re_path

    urlpatterns[:] = [re_path(r"^(?P<template>plain|journy)/$", page)]
    call_command("migrate", verbosity=0)
    return get_user_model().objects.create_user("ada", "ada@acme.com", "pw", first_name="Ada", last_name="Lovelace")


def logged_in_client(user: Any, with_journy: bool) -> tuple[Any, str]:
    """A test client of one stack, logged in as ``user`` with a ``__journey`` cookie, and the URL of its page,
    after a first request (which links the device once)."""
    from django.test import Client, override_settings

    with override_settings(MIDDLEWARE=JOURNY_MIDDLEWARE if with_journy else BASE_MIDDLEWARE):
        client = Client()  # the handler loads MIDDLEWARE now
        client.force_login(user)
        client.cookies["__journey"] = "device-1"
        url = "/journy/" if with_journy else "/plain/"
        response = client.get(url)
        assert response.status_code == 200, response.status_code
    return client, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="requests per round and stack")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall", help="what a round's time is")
    args = parser.parse_args()
    configure()

    from journy_core.testing import Outbox
    from journy_django import get_journy

    user = set_up()
    stacks = {name: logged_in_client(user, with_journy) for name, with_journy in (("without", False), ("with", True))}
    html = stacks["with"][0].get("/journy/").content.decode()
    assert '"identify"' in html, html
    assert '"verification"' in html, html
    assert len(Outbox(get_journy().backend).of_kind("link")) == 1

    timings: dict[str, list[float]] = {"without": [], "with": []}
    order = list(stacks)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for _ in range(args.rounds):
        order.reverse()  # neither stack always runs first (after the other's garbage)
        for name in order:
            client, url = stacks[name]
            gc.collect()
            started = clock()
            for _ in range(args.requests):
                client.get(url)
            timings[name].append((clock() - started) / args.requests)
    without, with_ = statistics.median(timings["without"]), statistics.median(timings["with"])
    print(
        f"Django {django.get_version()}, Python {sys.version.split()[0]}, {args.rounds} x {args.requests} requests"
        f" ({args.clock} clock)"
    )
    print(f"  without journy_django: {without * 1e6:8.1f} us per request")
    print(f"  with    journy_django: {with_ * 1e6:8.1f} us per request")
    print(f"  ratio: {with_ / without:.3f} ({(with_ / without - 1) * 100:+.1f}%; goal: at most +5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
