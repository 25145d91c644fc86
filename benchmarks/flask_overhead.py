"""What the Flask extension adds to a minimal logged-in page: the same app with and without ``Journy(app)``.

    .venv/bin/python benchmarks/flask_overhead.py [--requests 200] [--pairs 60]

Goal: at most 5% slower. Both apps use Flask-Login with a remembered user loaded from the session cookie and render
one small template through Werkzeug's test client (the full WSGI stack: routing, session, Flask-Login, Jinja). The
journy app puts ``{{ journy_snippet() }}`` in that template (``init``, ``identify`` and ``account`` with their
verification hashes, ``pageview``) and carries a ``__journey`` cookie already linked in the session, so the
per-request link check runs too. The two apps alternate in blocks of ``--requests``; the ratio is the median of
the ratios of back-to-back blocks (robust to the machine's load changing during the run), measured in wall time
and in CPU time (the cost itself, less disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, render_template
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, login_user
from jinja2 import DictLoader

from journy_core import Tracker, render_snippet
from journy_flask import Journy

PLAIN = "<!doctype html><html><head><title>Home</title></head><body>Hello {{ current_user.name }}</body></html>"
#: Without the extension, a team pastes journy.io's snippet into the layout: no identify, no account, no hashes.
PASTED = PLAIN.replace(
    "</title>",
    "</title>{% raw %}" + render_snippet(Tracker("bench-tracker", "https://go.acme.test")) + "{% endraw %}",
)
WITH_SNIPPET = (
    "<!doctype html><html><head><title>Home</title>{{ journy_snippet() }}</head>"
    "<body>Hello {{ current_user.name }}</body></html>"
)


@dataclass
class User(UserMixin):  # type: ignore[misc]
    id: int
    name: str
    email: str


@dataclass
class Team:
    id: int
    name: str


USERS = {1: User(1, "Ada Lovelace", "ada@acme.test")}
TEAM = Team(7, "Acme, Inc")


def make_app(with_journy: bool, template: str | None = None) -> Flask:
    app = Flask(f"bench_{with_journy}_{template is not None}")
    app.config.update(SECRET_KEY="bench")
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: USERS.get(int(user_id)))
    home = template or (WITH_SNIPPET if with_journy else PLAIN)
    app.jinja_loader = DictLoader({"home.html": home})  # type: ignore[assignment]
    if with_journy:
        app.config.update(
            JOURNY_QUEUE={"BACKEND": "memory"},
            JOURNY_TRACKER_ID="bench-tracker",
            JOURNY_TRACKER_DOMAIN="https://go.acme.test",
            JOURNY_VERIFICATION_SECRET="bench-secret",
            JOURNY_CURRENT_ACCOUNT=lambda: TEAM,
        )
        Journy(app)

    @app.get("/")
    def home() -> str:
        return render_template("home.html")

    @app.get("/login")
    def login() -> str:
        login_user(USERS[1])
        return "ok"

    return app


def logged_in_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("__journey", "bench-device")
    client.get("/login")  # the login links the device: later requests only check the session
    assert client.get("/").status_code == 200
    return client


def time_block(client: FlaskClient, requests: int, clock: Callable[[], float]) -> float:
    started = clock()
    for _ in range(requests):
        client.get("/")
    return (clock() - started) / requests * 1e6


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per block")
    parser.add_argument("--pairs", type=int, default=40, help="rounds of one block per app, alternating order")
    args = parser.parse_args(argv)

    clients = {
        "bare page": logged_in_client(make_app(False)),
        "pasted snippet": logged_in_client(make_app(False, PASTED)),
        "journy": logged_in_client(make_app(True)),
    }
    page = clients["journy"].get("/").text
    assert 'journy("identify"' in page, page
    assert '"verification"' in page, page
    assert 'journy("init"' in clients["pasted snippet"].get("/").text
    for client in clients.values():  # warm up
        time_block(client, args.requests * 2, time.perf_counter)

    results: dict[str, dict[str, float]] = {}
    for label, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        times: dict[str, list[float]] = {name: [] for name in clients}
        gc.collect()
        for block in range(args.pairs):
            order = list(clients.items())
            for name, client in order if block % 2 == 0 else reversed(order):
                times[name].append(time_block(client, args.requests, clock))
        # Blocks of one round ran back to back, under about the same machine load: compare within rounds.
        results[label] = {name: statistics.median(values) for name, values in times.items()}
        for name in ("bare page", "pasted snippet"):
            ratios = [j / b for b, j in zip(times[name], times["journy"], strict=True)]
            results[label][f"ratio to {name}"] = statistics.median(ratios)
        # The fastest block of each is the one least disturbed by other processes: a second, steadier estimate.
        results[label]["best-block ratio"] = min(times["journy"]) / min(times["bare page"])

    total = args.requests * args.pairs
    print(f"minimal logged-in page, {total} requests per app and clock, in alternating blocks of {args.requests}:")
    for label, found in results.items():
        ratio = found["ratio to bare page"]
        print(
            f"  {label:>4} time: bare page {found['bare page']:6.1f} us, with a pasted static snippet "
            f"{found['pasted snippet']:6.1f} us, with journy {found['journy']:6.1f} us"
        )
        print(
            f"             journy / bare page = {ratio:.3f} (goal <= 1.05: {'OK' if ratio <= 1.05 else 'OVER'}), "
            f"journy / pasted snippet = {found['ratio to pasted snippet']:.3f}, "
            f"best blocks: {found['best-block ratio']:.3f}"
        )
    return results


if __name__ == "__main__":
    main()
