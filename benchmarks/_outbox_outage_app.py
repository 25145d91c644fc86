"""The app process of ``benchmarks/outbox_outage.py`` (and of ``tests/flask/test_outbox_outage.py``'s scenario):
Flask + Flask-SQLAlchemy with the ``outbox`` backend and its in-process relay, committing one transaction after
another at a steady rate.

    .venv/bin/python benchmarks/_outbox_outage_app.py API_URL DATABASE_URL SCHEMA SECONDS RATE USERS

Transaction ``n`` renames user ``n % USERS + 1`` to ``User n`` (an upsert row) and tracks the event
``EVENTS[n % len(EVENTS)]`` with ``{"n": n}`` for that user (an event row), in one commit. ``SCHEMA`` is the
PostgreSQL schema the tables go in ("" for SQLite). Prints ``ready`` once the users exist, then ``committed N``
after ``SECONDS`` of committing, then keeps running (the relay delivering) until stdin closes or SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from journy_core.emulator import DEFAULT_API_KEY
from journy_flask import Journy

#: The events' names, in turn: delivery is checked per name.
EVENTS = ("viewed_report", "exported_csv", "invited_colleague")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "outage_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    full_name: Mapped[str] = mapped_column(String(200), default="")


def expected_name(n: int, users: int, user_id: int) -> str:
    """User ``user_id``'s full name after ``n`` transactions (``Initial`` if none renamed it)."""
    last = max((k for k in range(user_id - 1, n, users)), default=None)
    return "Initial" if last is None else f"User {last}"


def make_app(api: str, database: str, schema: str) -> Flask:
    """The app; its tables created (the users' table and ``journy_outbox``)."""
    options: dict[str, Any] = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
    app = Flask(f"outage_{uuid.uuid4().hex[:6]}")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=api,
        JOURNY_QUEUE={"BACKEND": "outbox"},  # the defaults: in-process relay, patient retry
        JOURNY_USER_MODEL=User,
        JOURNY_USER_PROPERTIES={"full_name": "full_name"},
    )
    db.init_app(app)
    Journy(app)
    with app.app_context():
        db.create_all()
    return app


def commit_one(n: int, users: int) -> None:
    """Transaction ``n``: a user renamed and an event tracked for them, committed together."""
    user = db.session.get(User, n % users + 1)
    assert user is not None
    user.full_name = f"User {n}"
    db.session.flush()  # the event row then joins this transaction rather than committing on its own
    Journy().track(EVENTS[n % len(EVENTS)], user=user.id, metadata={"n": n})
    db.session.commit()


def main() -> None:
    api, database, schema, seconds, rate, users = sys.argv[1:7]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = make_app(api, database, schema)
    with app.app_context():
        db.session.add_all([User(email=f"user{i}@acme.test", full_name="Initial") for i in range(int(users))])
        db.session.commit()
        print("ready", flush=True)
        started, n = time.monotonic(), 0
        while time.monotonic() - started < float(seconds):
            # A steady rate: each transaction at its own time, not a burst to catch up after a slow one.
            time.sleep(max(0.0, started + n / float(rate) - time.monotonic()))
            commit_one(n, int(users))
            n += 1
        db.session.remove()
        print(f"committed {n}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin: the relay thread delivers meanwhile


if __name__ == "__main__":
    main()
