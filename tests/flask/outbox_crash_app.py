"""The app the outbox crash test kills: it commits users (and now and then a team with its member) one transaction at a
time, rolls some transactions and savepoints back, and prints the number of each committed transaction.

    CRASH_DB=sqlite:////tmp/x.db CRASH_API=http://127.0.0.1:8484 CRASH_SEED=1 python -m tests.flask.outbox_crash_app
    CRASH_DB=... CRASH_API=... flask --app tests.flask.outbox_crash_app:make_app journy relay --once
"""

from __future__ import annotations

import itertools
import os
import random

from flask import Flask

from journy_core.emulator import DEFAULT_API_KEY
from tests.flask.conftest import Team, User, build_app, db

#: Names of what a rolled-back transaction or savepoint wrote: none may reach journy.io.
GHOST = "ghost"


def make_app() -> Flask:
    """The app, on ``CRASH_DB``, delivering to ``CRASH_API`` through the outbox (with its in-process relay)."""
    return build_app(
        os.environ["CRASH_DB"],
        login=False,
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=os.environ["CRASH_API"],
        JOURNY_TIMEOUT=2.0,  # the emulator's "timeout" faults cost 2 s, not 10
        # A short lease: the rows the killed process's relay thread held are taken by the next relay soon after;
        # short backoffs: the test's faults are waited out in seconds, not minutes.
        JOURNY_QUEUE={
            "BACKEND": "outbox",
            "OPTIONS": {"POLL_SECONDS": 0.2, "LEASE_SECONDS": 3, "RETRY": {"base": 0.1, "cap": 1.0}},
        },
    )


def _one_transaction(n: int, rng: random.Random) -> bool:
    """Transaction ``n``: a user, maybe a team, maybe a savepoint rolled back; returns whether it committed."""
    rolled_back = rng.random() < 0.2
    user = User(email=f"{GHOST if rolled_back else 'user'}{n}@acme.test", full_name=f"User {n}")
    db.session.add(user)
    if rng.random() < 0.25:
        savepoint = db.session.begin_nested()
        db.session.add(User(email=f"{GHOST}-savepoint{n}@acme.test", full_name="Ghost"))
        db.session.flush()
        savepoint.rollback()
    if rng.random() < 0.2:
        db.session.add(Team(name=f"{GHOST if rolled_back else 'team'}{n}", members=[user]))
    user.full_name = f"User {n} (renamed)"  # a second flush of the user in the same transaction
    db.session.flush()
    if rolled_back:
        db.session.rollback()
        return False
    db.session.commit()
    return True


def main() -> None:
    app = make_app()
    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")))
    with app.app_context():
        for n in itertools.count():
            if _one_transaction(n, rng):
                print(n, flush=True)


if __name__ == "__main__":
    main()
