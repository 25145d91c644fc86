"""What the ``outbox`` backend adds to a model save and commit: Flask + Flask-SQLAlchemy, journy off, the ``thread``
backend and the ``outbox`` backend side by side in one run, on PostgreSQL and on SQLite.

    .venv/bin/python benchmarks/outbox_commit.py [--transactions 2000] [--block 100] [--databases postgresql sqlite]
                                                 [--sqlite-journal delete|wal] [--insert | --with-load]

Each transaction changes one user (one of 100, in turn: ``user.full_name = ...``, the user loaded before the clock
starts) and commits; ``--insert`` adds a new user instead; ``--with-load`` starts the clock before loading the user
(a SELECT). Timed: the change, the flush and the commit, that is the UPDATE (or INSERT), journy's ``after_flush``
hook (with ``outbox``: the INSERT of the outbox row on the session's connection) and the COMMIT. Also printed: the
process's CPU time per transaction, every thread's, the sending included (the thread backend's worker, the relay;
with ``outbox`` alone an external relay would deliver, elsewhere). Configurations, each a Flask app
of its own (its own Flask-SQLAlchemy instance, so no app's session listeners run for another's sessions), in its own
PostgreSQL schema or SQLite file:

- ``off``: no ``Journy(app)`` at all;
- ``thread``: ``Journy(app)``, the default ``thread`` backend (the change queued in memory after the commit, sent by
  the worker thread);
- ``outbox``: ``JOURNY_QUEUE = {"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCESS": False}}``: only the write is
  measured (the rows wait for an external relay);
- ``outbox+relay``: the same with the in-process relay on (the default), which delivers while the app commits.

The apps take turns (each first in turn) in blocks of ``--block`` transactions until each has run
``--transactions``; after each block, untimed, the app's journy finishes sending (``flush()``; the relay delivers
its rows), so no app's threads run during another's turn. The thread backend and the relay send to the emulator in
its own process, no latency, the rate limit lifted. Printed per database: median and 95th percentile of a
transaction and the ratios of each to journy off's. Goal: ``outbox`` at most 1.2x journy off on PostgreSQL
(127.0.0.1:5432, trust, database ``test``; the schemas are dropped at the end). SQLite is a database file in a
temporary directory, in its default rollback journal (``DELETE``, ``synchronous=FULL``) unless
``--sqlite-journal wal``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _emulator import emulator_process

from journy_core.emulator import DEFAULT_API_KEY
from journy_core.outbox.backend import OutboxBackend
from journy_flask import Journy

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
USERS = 100

#: name -> the app's JOURNY_QUEUE (None: no Journy at all).
CONFIGURATIONS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "thread": {"BACKEND": "thread"},
    "outbox": {"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCESS": False}},
    "outbox+relay": {"BACKEND": "outbox", "OPTIONS": {"RELAY_IN_PROCESS": True}},
}


@dataclass
class Bench:
    """One configuration's app, its Flask-SQLAlchemy instance and user model, and what it measured."""

    name: str
    app: Flask
    db: SQLAlchemy
    user: Any
    seconds: list[float] = field(default_factory=list)
    cpu: float = 0.0
    done: int = 0


def make_bench(name: str, uri: str, engine_options: dict[str, Any], queue: dict[str, Any] | None, api: str) -> Bench:
    """The app of one configuration, with a ``bench_user`` table of its own and ``USERS`` users in it."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "bench_user"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))
        full_name: Mapped[str] = mapped_column(String(200), default="")

    app = Flask(f"bench_{name.replace('+', '_')}_{uuid.uuid4().hex[:6]}")
    app.config.update(SQLALCHEMY_DATABASE_URI=uri, SQLALCHEMY_ENGINE_OPTIONS=engine_options)
    db.init_app(app)
    if queue is not None:
        app.config.update(
            JOURNY_API_KEY=DEFAULT_API_KEY,
            JOURNY_API_URL=api,
            JOURNY_QUEUE=queue,
            JOURNY_USER_MODEL=User,
            JOURNY_USER_PROPERTIES={"full_name": "full_name"},
        )
        Journy(app)
    with app.app_context():
        db.create_all()
        db.session.add_all([User(email=f"user{i}@acme.test", full_name=f"User {i}") for i in range(USERS)])
        db.session.commit()
    return Bench(name, app, db, User)


def run_block(bench: Bench, count: int, insert: bool, with_load: bool = False) -> None:
    """``count`` transactions, each timed from the change (``with_load``: from loading the user) to the end of its
    commit."""
    db, user_model = bench.db, bench.user
    with bench.app.app_context():
        for _ in range(count):
            n = bench.done
            bench.done += 1
            if insert:
                started = time.perf_counter()
                db.session.add(user_model(email=f"new{n}@acme.test", full_name=f"New {n}"))
            else:
                before_load = time.perf_counter()
                user: Any = db.session.get(user_model, n % USERS + 1)  # a SELECT (the commit expired it)
                started = before_load if with_load else time.perf_counter()
                user.full_name = f"User {n}"
            db.session.commit()
            bench.seconds.append(time.perf_counter() - started)
        db.session.remove()


def settle(bench: Bench) -> None:
    """Wait, untimed, until the app's journy has nothing left to send (the thread backend's queue flushed, the
    outbox's rows delivered by the in-process relay), so that its threads do not run during the next app's turn."""
    extension = bench.app.extensions.get("journy")
    if extension is None:
        return
    journy = extension.journy
    journy.flush(30.0)
    backend = journy.backend
    if isinstance(backend, OutboxBackend) and backend.relay_in_process:
        deadline = time.monotonic() + 60
        while backend.backlog().pending and time.monotonic() < deadline:
            time.sleep(0.02)


def close_bench(bench: Bench) -> None:
    """Stop the app's journy (relay thread, worker) and close its connections."""
    journy = bench.app.extensions.get("journy")
    if journy is not None:
        journy.journy.close(1.0)
    with bench.app.app_context():
        bench.db.session.remove()
        bench.db.engine.dispose()


@contextlib.contextmanager
def postgres_schemas(names: list[str]) -> Iterator[Callable[[str], tuple[str, dict[str, Any]]]]:
    """One schema of the ``test`` database per configuration (so each has its own ``journy_outbox``), dropped at
    the end; yields ``target(name) -> (uri, engine options)``."""
    import psycopg

    prefix = f"bench_outbox_{uuid.uuid4().hex[:6]}"
    admin = POSTGRES.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names:
            connection.execute(f'CREATE SCHEMA "{prefix}_{_slug(name)}"')
    try:
        yield lambda name: (POSTGRES, {"connect_args": {"options": f"-csearch_path={prefix}_{_slug(name)}"}})
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            for name in names:
                connection.execute(f'DROP SCHEMA IF EXISTS "{prefix}_{_slug(name)}" CASCADE')


@contextlib.contextmanager
def sqlite_files(journal: str) -> Iterator[Callable[[str], tuple[str, dict[str, Any]]]]:
    """One database file per configuration in a temporary directory, in ``journal`` mode."""
    with tempfile.TemporaryDirectory() as tmp:

        def target(name: str) -> tuple[str, dict[str, Any]]:
            path = Path(tmp) / f"{_slug(name)}.db"
            if journal == "wal":
                import sqlite3

                with contextlib.closing(sqlite3.connect(path)) as connection:
                    connection.execute("PRAGMA journal_mode=WAL")  # kept in the file: every connection uses it
            return f"sqlite:///{path}", {}

        yield target


def _slug(name: str) -> str:
    return name.replace("+", "_")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(label: str, targets: Any, args: argparse.Namespace, api: str) -> dict[str, float]:
    """Run every configuration on one database, in alternating blocks; print and return the median ratios."""
    names = list(CONFIGURATIONS)
    with targets(names) as target:
        benches = []
        for name in names:
            uri, options = target(name)
            benches.append(make_bench(name, uri, options, CONFIGURATIONS[name], api))
        try:
            for bench in benches:  # warm-up: connections, statement caches, the relay and worker threads
                run_block(bench, min(args.block, 50), args.insert, args.with_load)
                settle(bench)
                bench.seconds.clear()
            for turn in range(-(-args.transactions // args.block)):
                for bench in benches[turn % len(benches) :] + benches[: turn % len(benches)]:  # each goes first in turn
                    cpu = time.process_time()
                    run_block(bench, args.block, args.insert, args.with_load)
                    settle(bench)
                    bench.cpu += time.process_time() - cpu
        finally:
            for bench in benches:
                close_bench(bench)
    base = benches[0]
    base_median, base_p95 = statistics.median(base.seconds), percentile(base.seconds, 0.95)
    what = "insert" if args.insert else ("load, update" if args.with_load else "update")
    print(f"{label}: {args.transactions} transactions per configuration ({what}, commit)")
    ratios = {}
    for bench in benches:
        median, p95 = statistics.median(bench.seconds), percentile(bench.seconds, 0.95)
        ratios[bench.name] = median / base_median
        print(
            f"  {bench.name:<13} median {median * 1e3:7.3f} ms  p95 {p95 * 1e3:7.3f} ms   "
            f"x{median / base_median:.2f} / x{p95 / base_p95:.2f} vs journy off   "
            f"CPU {bench.cpu / len(bench.seconds) * 1e3:.3f} ms a transaction with sending"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=2000, help="timed transactions per configuration")
    parser.add_argument("--block", type=int, default=100, help="transactions in a row before the next app's turn")
    parser.add_argument("--databases", nargs="+", choices=["postgresql", "sqlite"], default=["postgresql", "sqlite"])
    parser.add_argument("--sqlite-journal", choices=["delete", "wal"], default="delete")
    parser.add_argument("--insert", action="store_true", help="insert a new user per transaction instead")
    parser.add_argument("--with-load", action="store_true", help="time loading the user (a SELECT) too")
    args = parser.parse_args()
    with emulator_process("--rate-limit", "1000000") as api:
        for database in args.databases:
            if database == "postgresql":
                ratios = measure("PostgreSQL 127.0.0.1:5432/test", postgres_schemas, args, api)
                verdict = "met" if ratios["outbox"] <= 1.2 else "NOT met"
                print(f"  goal: outbox at most 1.2x journy off on PostgreSQL -> {verdict}")
            else:
                journal = args.sqlite_journal
                label = f"SQLite file, journal_mode={journal.upper()}" + (", synchronous=FULL" * (journal == "delete"))
                measure(label, lambda names, j=journal: sqlite_files(j), args, api)


if __name__ == "__main__":
    main()
