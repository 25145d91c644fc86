"""A Django app process for the outbox concurrency tests: ``python -m tests.django.outbox_concurrency_app ...``.

``tests/django/outbox_app.py``'s process (its settings and environment variables) with two more settings:
``JOURNY["TIMEOUT"]``'s read timeout from ``OUTBOX_APP_TIMEOUT`` (so that an unanswered call costs seconds, not the
default ten) and ``CONCURRENCY`` from ``OUTBOX_APP_CONCURRENCY``. Any command but the one below is a ``manage.py``
command (``journy_relay``).

``workload INDEX ROWS SEED`` commits changes, a few a transaction, through the models and ``track()``
(users created, renamed and deleted, accounts created and renamed, members added and removed, events) until
exactly ``ROWS`` outbox rows are written, on users and accounts of its own (``p{INDEX}-...``), so that two processes
never touch one entity. Then it waits (two minutes at most) until no row of the table is pending, stops its relay
thread, and prints what it did as JSON: rows written, rows its relay delivered, the events' names, the users it
deleted.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

from django.test import override_settings

from tests.django import outbox_app

#: Each step's kind, with its weight; ``track`` writes exactly one row, so the last steps fill up to ``ROWS``.
STEPS = {
    "create_user": 20,
    "rename_user": 20,
    "delete_user": 6,
    "create_account": 8,
    "rename_account": 8,
    "remove_member": 4,
    "track": 34,
}
#: Changes in one transaction, at most (1 to this many).
STEPS_PER_TRANSACTION = 12
#: Longest wait for the table to drain after the writes.
DRAIN_SECONDS = 120.0


def configure() -> None:
    """outbox_app's settings, with the read timeout and the relay's concurrency of this run."""
    outbox_app.configure()
    from django.conf import settings

    journy = dict(settings.JOURNY)
    options = dict(journy["QUEUE"]["OPTIONS"], CONCURRENCY=int(os.environ.get("OUTBOX_APP_CONCURRENCY", "4")))
    journy["QUEUE"] = {**journy["QUEUE"], "OPTIONS": options}
    journy["TIMEOUT"] = (5.0, float(os.environ.get("OUTBOX_APP_TIMEOUT", "10")))
    override_settings(JOURNY=journy).enable()


class Workload:
    """The changes of one process, on its own users and accounts; remembers what the emulator must end up with."""

    def __init__(self, index: int, seed: int) -> None:
        self.prefix = f"p{index}"
        self.rng = random.Random(seed)
        self.users: list[Any] = []
        self.accounts: list[Any] = []
        self.events: list[str] = []
        self.deleted: list[str] = []

    def step(self, number: int, kind: str) -> None:
        """One change (the caller's transaction)."""
        if kind == "create_user" or not self.users:
            self.create_user(number)
        elif kind == "rename_user":
            user = self.rng.choice(self.users)
            user.first_name, user.email = f"renamed-{number}", f"{self.prefix}-{number}@acme.test"
            user.save()
        elif kind == "delete_user":
            user = self.users.pop(self.rng.randrange(len(self.users)))
            self.deleted.append(str(user.pk))
            user.delete()
        elif kind == "create_account" or not self.accounts:
            self.create_account(number)
        elif kind == "rename_account":
            account = self.rng.choice(self.accounts)
            account.name = f"{self.prefix}-account-renamed-{number}"
            account.save()
            account.members.add(self.rng.choice(self.users))
        elif kind == "remove_member":
            account = self.rng.choice(self.accounts)
            member = account.members.first()
            if member is not None:
                account.members.remove(member)
        else:
            self.track(number)

    def create_user(self, number: int) -> None:
        from django.contrib.auth import get_user_model

        name = f"{self.prefix}-u{number}"
        user = get_user_model().objects.create_user(name, f"{name}@acme.test", first_name=f"first-{number}")
        self.users.append(user)

    def create_account(self, number: int) -> None:
        from tests.django.testapp.models import Organization

        name = f"{self.prefix}-account-{number}"
        account = Organization.objects.create(name=name, domain=f"{name}.test")
        account.members.add(*self.rng.sample(self.users, min(2, len(self.users))))
        self.accounts.append(account)

    def track(self, number: int) -> None:
        import journy_django

        name = f"{self.prefix}-event-{number}"
        journy_django.track(name, user=self.rng.choice(self.users), metadata={"step": number})
        self.events.append(name)


def workload(index: int, rows: int, seed: int) -> dict[str, Any]:
    """Write exactly ``rows`` rows, wait for the table to drain, stop the relay; returns the report."""
    from django.db import transaction

    from journy_django.conf import get_journy
    from journy_django.models import OutboxRow

    journy = get_journy()
    work = Workload(index, seed)
    kinds, weights = list(STEPS), list(STEPS.values())
    number, started = 0, time.monotonic()
    transactions = 0
    while journy.stats()["queued"] < rows:
        with transaction.atomic():
            for _ in range(work.rng.randint(1, STEPS_PER_TRANSACTION)):
                left = rows - journy.stats()["queued"]
                if left <= 0:
                    break
                # Near the end only one-row steps: the process writes exactly ``rows`` rows.
                work.step(number, work.rng.choices(kinds, weights)[0] if left > 5 else "track")
                number += 1
        transactions += 1
    wrote = time.monotonic()
    deadline = wrote + DRAIN_SECONDS
    while OutboxRow.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    relay = journy.backend.relay  # type: ignore[attr-defined]
    journy.close(timeout=30)
    return {
        "queued": journy.stats()["queued"],
        "relay_delivered": 0 if relay is None else relay.delivered_rows,
        "events": work.events,
        "deleted": work.deleted,
        "steps": number,
        "transactions": transactions,
        "seconds": [round(wrote - started, 1), round(time.monotonic() - wrote, 1)],
    }


def main(argv: list[str]) -> None:
    """Run ``workload``, or a ``manage.py`` command (``journy_relay``) with these settings."""
    configure()
    if argv[1] == "workload":
        print(json.dumps(workload(int(argv[2]), int(argv[3]), int(argv[4]))), flush=True)
        return
    from django.core.management import execute_from_command_line

    execute_from_command_line(["outbox_concurrency_app", *argv[1:]])


if __name__ == "__main__":
    main(sys.argv)
