"""What the Flask extension adds to a minimal logged-in page: the same app with and without ``Journy(app)``.

    .venv/bin/python benchmarks/flask_overhead.py [--requests 200] [--pairs 40] [--no-database] [--from-string]

Goal: at most 5% slower. Both apps are what a Flask-Login app is: Flask-SQLAlchemy models on SQLite (in memory), a
``user_loader`` that reads the user from the database on each request (as ``benchmarks/django_overhead.py`` reads
Django's session and user), a view that loads the page's team, and one small template, rendered through Werkzeug's
test client (the full WSGI stack: routing, cookie session, Flask-Login, Jinja). The journy app configures the user
and account models (so the snippet carries their properties) and puts ``{{ journy_snippet() }}`` in that template
(``init``, ``identify`` and ``account`` with their verification hashes, ``pageview``), and its client carries a
``__journey`` cookie already linked in the session, so the per-request link check runs too (both clients send the
cookie: the browser has it either way). ``--no-database`` keeps the users in a dict instead, a smaller page on which
the same extension weighs more. ``--from-string`` renders the page with ``render_template_string`` (the template
compiled anew on every request, as small apps and many tutorials do) instead of ``render_template``. A fourth app,
the "stand-in global", renders the journy page's template byte for byte with ``journy_snippet`` a plain global
returning the pasted snippet: against it, the ratio leaves out what compiling one more expression costs (the
whole difference with ``--from-string``, where any call in the template costs the same) and shows the extension's
own work.

The apps alternate in blocks of ``--requests``; the ratio is the median of the ratios of back-to-back blocks (robust
to the machine's load changing during the run), measured in wall time and in CPU time (the cost itself, less
disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, g, render_template, render_template_string
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from jinja2 import DictLoader
from markupsafe import Markup
from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from journy_core import Tracker, render_snippet
from journy_flask import Journy

PLAIN = (
    "<!doctype html><html><head><title>{{ g.team.name }}</title></head>"
    "<body>Hello {{ current_user.name }}</body></html>"
)
#: Without the extension, a team pastes journy.io's snippet into the layout: no identify, no account, no hashes.
PASTED = PLAIN.replace(
    "</title>",
    "</title>{% raw %}" + render_snippet(Tracker("bench-tracker", "https://go.acme.test")) + "{% endraw %}",
)
WITH_SNIPPET = PLAIN.replace("</title>", "</title>{{ journy_snippet() }}")
#: ``--stand-in``: the journy page's template, byte for byte, with its ``journy_snippet`` a plain global returning
#: the pasted snippet. With ``render_template_string`` every expression of a template is compiled on every request
#: (about 900,000 instructions here for any one call, whatever it calls), so this page shows what the extension's
#: own work costs, apart from what one more expression in the template costs.
STAND_IN = Markup(render_snippet(Tracker("bench-tracker", "https://go.acme.test")))


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class DbUser(UserMixin, db.Model):  # type: ignore[misc, name-defined]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DbTeam(db.Model):  # type: ignore[misc, name-defined]
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    plan: Mapped[str] = mapped_column(String(20))


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


def make_app(
    with_journy: bool,
    template: str | None = None,
    *,
    database: bool = True,
    from_string: bool = False,
    stand_in: bool = False,
    inject: bool = False,
) -> Flask:
    """The page's app; ``from_string``: its view renders with ``render_template_string`` (compiled per request);
    ``stand_in`` (without journy): the journy page's template, its ``journy_snippet()`` a plain global;
    ``inject`` (with journy): the page without journy's template call, ``JOURNY_INJECT_SNIPPET`` on."""
    app = Flask(f"bench_{with_journy}_{template is not None}_{database}_{from_string}_{stand_in}_{inject}")
    app.config.update(SECRET_KEY="bench")
    manager = LoginManager(app)
    if database:
        app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://")
        db.init_app(app)
        manager.user_loader(lambda user_id: db.session.get(DbUser, int(user_id)))
        with app.app_context():
            db.create_all()
            db.session.add(DbUser(id=1, name="Ada Lovelace", email="ada@acme.test", created_at=datetime.now(UTC)))
            db.session.add(DbTeam(id=7, name="Acme, Inc", plan="pro"))
            db.session.commit()
    else:
        manager.user_loader(lambda user_id: USERS.get(int(user_id)))
    home_source = template or (WITH_SNIPPET if (with_journy and not inject) or stand_in else PLAIN)
    if stand_in and not with_journy:
        app.add_template_global(lambda: STAND_IN, "journy_snippet")
    app.jinja_loader = DictLoader({"home.html": home_source})  # type: ignore[assignment]
    if with_journy:
        app.config.update(
            JOURNY_QUEUE={"BACKEND": "memory"},
            JOURNY_TRACKER_ID="bench-tracker",
            JOURNY_TRACKER_DOMAIN="https://go.acme.test",
            JOURNY_VERIFICATION_SECRET="bench-secret",
            JOURNY_CURRENT_ACCOUNT=lambda: g.team,  # the team the view loaded for the page
            JOURNY_INJECT_SNIPPET=inject,
        )
        if database:
            app.config.update(JOURNY_USER_MODEL=DbUser, JOURNY_ACCOUNT_MODEL=DbTeam)
        Journy(app)

    @app.get("/")
    def home() -> str:
        g.team = db.session.get(DbTeam, 7) if database else TEAM
        if from_string:
            return render_template_string(home_source)
        return render_template("home.html")

    @app.get("/login")
    def login() -> str:
        login_user(db.session.get(DbUser, 1) if database else USERS[1])
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
    parser.add_argument("--no-database", action="store_true", help="users in a dict: no query on the page")
    parser.add_argument("--from-string", action="store_true", help="render_template_string: compiled per request")
    args = parser.parse_args(argv)

    database, from_string = not args.no_database, args.from_string
    clients = {
        "bare page": logged_in_client(make_app(False, database=database, from_string=from_string)),
        "pasted snippet": logged_in_client(make_app(False, PASTED, database=database, from_string=from_string)),
        "journy": logged_in_client(make_app(True, database=database, from_string=from_string)),
        "stand-in global": logged_in_client(make_app(False, database=database, from_string=from_string, stand_in=True)),
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
        for name in ("bare page", "pasted snippet", "stand-in global"):
            ratios = [j / b for b, j in zip(times[name], times["journy"], strict=True)]
            results[label][f"ratio to {name}"] = statistics.median(ratios)
        # The fastest block of each is the one least disturbed by other processes: a second, steadier estimate.
        results[label]["best-block ratio"] = min(times["journy"]) / min(times["bare page"])

    total = args.requests * args.pairs
    where = "its user and team read from SQLite" if database else "its user and team in memory (--no-database)"
    if from_string:
        where += ", rendered with render_template_string (--from-string)"
    print(f"minimal logged-in page, {where}, {total} requests per app and clock, in blocks of {args.requests}:")
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
        print(
            f"             journy / the same template with a plain journy_snippet() global "
            f"({found['stand-in global']:6.1f} us) = {found['ratio to stand-in global']:.3f}"
        )
    return results


if __name__ == "__main__":
    main()
