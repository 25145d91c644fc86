"""What journy_django adds to a minimal logged-in page: the middleware plus ``{% journy_snippet %}``.

    .venv/bin/python benchmarks/django_overhead.py [--rounds 30] [--requests 200] [--clock process]

One process, one database, one logged-in user whose ``__journey`` cookie is already linked (the steady state of a
browsing session). Two full handler stacks (session, auth, messages middleware; Django templates) render the same
page, one with ``JournyMiddleware`` and the tag (identify, account, pageview, with verification hashes), one
without. Each round runs one block of requests per stack, back to back, the order swapped every round; the ratio is
the median of the rounds' ratios, so that a change in the machine's load between rounds (a shared VM's neighbours)
moves both sides of a ratio instead of one side of a median. Goal (design.md): at most 5% slower. Both clocks are
reported: the wall clock, and this process's CPU time (``--clock process`` alone: the time other processes hold the
CPU stays out of either stack's figure). The ratio of the fastest blocks is printed as a third, steadier estimate.
"""

from __future__ import annotations

import argparse
import gc
import io
import statistics
import sys
import time
from collections.abc import Callable
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


class WsgiClient:
    """Requests straight through Django's WSGI handler, as a WSGI server makes them.

    Django's test ``Client`` connects two signal receivers on every request (to record templates and exceptions),
    and each connection leaves a ``weakref.finalize`` behind: about 3 objects a request that the garbage collector
    then walks for the rest of the run, slowing both stacks the longer the run. A WSGI server adds none of that."""

    def __init__(self, handler: Any, cookies: str) -> None:
        self.handler = handler
        self.environ = {
            "REQUEST_METHOD": "GET",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SCRIPT_NAME": "",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_COOKIE": cookies,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }
        self.status = ""

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        self.status = status

    def get(self, path: str) -> bytes:
        """The page's body; a status other than 200 is an error of the benchmark."""
        response = self.handler({**self.environ, "PATH_INFO": path}, self._start_response)
        try:
            body = b"".join(response)
        finally:
            response.close()
        assert self.status.startswith("200"), self.status
        return body


def logged_in_client(user: Any, with_journy: bool) -> tuple[WsgiClient, str]:
    """A client of one stack, logged in as ``user`` with a ``__journey`` cookie, and the URL of its page, after a
    first request (which links the device once)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import Client, override_settings

    session = Client()
    session.force_login(user)  # a session in the database, as a login leaves it
    cookies = (
        f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}; __journey=device-1"
    )
    with override_settings(MIDDLEWARE=JOURNY_MIDDLEWARE if with_journy else BASE_MIDDLEWARE):
        client = WsgiClient(WSGIHandler(), cookies)  # the handler loads MIDDLEWARE now
    url = "/journy/" if with_journy else "/plain/"
    client.get(url)
    return client, url


def run_rounds(
    stacks: dict[str, tuple[Any, str]], clock: Callable[[], float], rounds: int, requests: int
) -> dict[str, list[float]]:
    """Each round: one block of ``requests`` per stack, back to back; the time per request of each block."""
    timings: dict[str, list[float]] = {name: [] for name in stacks}
    order = list(stacks)
    for _ in range(rounds):
        order.reverse()  # neither stack always runs first (after the other's garbage)
        for name in order:
            client, url = stacks[name]
            gc.collect()
            started = clock()
            for _ in range(requests):
                client.get(url)
            timings[name].append((clock() - started) / requests)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="requests per round and stack")
    parser.add_argument("--clock", choices=("wall", "process", "both"), default="both", help="what a block's time is")
    args = parser.parse_args()
    configure()

    from journy_core.testing import Outbox
    from journy_django import get_journy

    user = set_up()
    stacks = {name: logged_in_client(user, with_journy) for name, with_journy in (("without", False), ("with", True))}
    html = stacks["with"][0].get("/journy/").decode()
    assert '"identify"' in html, html
    assert '"verification"' in html, html
    assert len(Outbox(get_journy().backend).of_kind("link")) == 1

    run_rounds(stacks, time.perf_counter, 2, args.requests)  # warm up: caches, the allocator's pools
    clocks = {"wall": time.perf_counter, "process": time.process_time}
    if args.clock != "both":
        clocks = {args.clock: clocks[args.clock]}
    print(f"Django {django.get_version()}, Python {sys.version.split()[0]}, {args.rounds} x {args.requests} requests")
    for label, clock in clocks.items():
        timings = run_rounds(stacks, clock, args.rounds, args.requests)
        without, with_ = statistics.median(timings["without"]), statistics.median(timings["with"])
        ratio = statistics.median(w / o for o, w in zip(timings["without"], timings["with"], strict=True))
        best = min(timings["with"]) / min(timings["without"])
        print(f"  {label} clock: without journy_django {without * 1e6:7.1f} us, with {with_ * 1e6:7.1f} us per request")
        print(
            f"    ratio (median of the rounds' ratios): {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; goal: at most +5%,"
            f" {'OK' if ratio <= 1.05 else 'OVER'}); fastest blocks: {best:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
