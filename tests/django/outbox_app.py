"""A small Django process for the outbox crash tests: ``python -m tests.django.outbox_app COMMAND ...``.

The test settings (``tests/django/settings.py``) with one database, the ``outbox`` backend and the emulator:

- ``OUTBOX_APP_DATABASE``: the JSON of ``DATABASES["default"]`` (a file SQLite, or the test database of the
  PostgreSQL or MariaDB alias, which the test process created and migrated);
- ``OUTBOX_APP_API_URL``: the emulator's URL; ``OUTBOX_APP_RELAY``: ``1`` to run the in-process relay;
  ``OUTBOX_APP_LEASE``: ``LEASE_SECONDS`` (2 by default).

Commands: ``write SEED`` commits user, account and membership changes one transaction at a time, forever (until
killed), with some transactions and savepoints rolled back on purpose; ``add-events N`` writes N event rows;
``dump`` prints what the database holds
(JSON), to be compared with the emulator; anything else is a ``manage.py`` command (``migrate``,
``journy_relay --once``).
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import django
from django.conf import settings


class Rollback(Exception):
    """Raised to roll a transaction or a savepoint back on purpose."""


def configure() -> None:
    from tests.django import settings as test_settings

    values = {name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()}
    values["DATABASES"] = {"default": json.loads(os.environ["OUTBOX_APP_DATABASE"])}
    options = {
        "RELAY_IN_PROCESS": os.environ.get("OUTBOX_APP_RELAY") == "1",
        "POLL_SECONDS": 0.2,
        # Short by default: the killed relay's rows come back soon.
        "LEASE_SECONDS": float(os.environ.get("OUTBOX_APP_LEASE", "2")),
        "RETRY": {"base": 0.05, "cap": 0.5},
    }
    values["JOURNY"] = {
        **values["JOURNY"],
        "API_KEY": os.environ.get("OUTBOX_APP_API_KEY", "journy-emulator-key"),
        "API_URL": os.environ["OUTBOX_APP_API_URL"],
        "QUEUE": {"BACKEND": "outbox", "OPTIONS": options},
    }
    settings.configure(**values)
    django.setup()


def _change(rng: random.Random, step: int) -> None:
    """One transaction's worth of changes (the caller's atomic block)."""
    from django.contrib.auth import get_user_model

    from tests.django.testapp.models import Organization

    users = get_user_model()
    choice = rng.random()
    if choice < 0.35 or not users.objects.exists():
        users.objects.create_user(f"u{step}", f"u{step}@acme.test", first_name=f"first-{step}")
    elif choice < 0.55:
        user = users.objects.order_by("?").first()
        user.first_name = f"renamed-{step}"
        user.save()
    elif choice < 0.62:
        users.objects.order_by("?").first().delete()
    elif choice < 0.75:
        org = Organization.objects.create(name=f"org-{step}", domain=f"org{step}.test")
        org.members.add(*users.objects.order_by("?")[:2])
    elif choice < 0.88 and Organization.objects.exists():
        org = Organization.objects.order_by("?").first()
        org.name = f"org-renamed-{step}"
        org.save()
        org.members.add(users.objects.order_by("?").first())
    elif Organization.objects.exists():
        org = Organization.objects.order_by("?").first()
        member = org.members.first()
        if member is not None:
            org.members.remove(member)


def write(seed: int) -> None:
    """Commit changes one transaction at a time until killed; one in ten rolls back, one in ten loses a
    savepoint. Prints each committed step (the test only needs the process to be busy when it kills it)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    users = get_user_model()
    rng = random.Random(seed)
    for step in range(1_000_000):
        while not _commit_step(rng, step, users, transaction):
            pass  # SQLite was locked by the relay: the same step again (see _commit_step)


def _commit_step(rng: random.Random, step: int, users: Any, transaction: Any) -> bool:
    """One step's transaction; False when SQLite refused it as locked and it must be tried again.

    On SQLite a relay writing the outbox makes a deferred transaction that reads and then writes fail at once
    (journy.W006); Django 5.1+ avoids it with ``transaction_mode = "IMMEDIATE"`` (the crash test sets it), and on
    Django 4.2 the app has to try again, as this writer does, with the same random draws."""
    from django.db import OperationalError

    before = rng.getstate()
    try:
        _one_step(rng, step, users, transaction)
    except OperationalError as exc:
        if "locked" not in str(exc):
            raise
        rng.setstate(before)
        return False
    return True


def _one_step(rng: random.Random, step: int, users: Any, transaction: Any) -> None:
    roll = rng.random()
    try:
        with transaction.atomic():
            _change(rng, step)
            if roll < 0.1:
                users.objects.create_user(f"rolled-back-{step}", f"rb{step}@acme.test")
                raise Rollback
            if roll < 0.2:
                try:
                    with transaction.atomic():
                        users.objects.create_user(f"savepoint-{step}", f"sp{step}@acme.test")
                        raise Rollback
                except Rollback:
                    pass
    except Rollback:
        return
    print(step, flush=True)


def dump() -> dict[str, Any]:
    """The users, accounts and memberships in the database, as the emulator should hold them."""
    from django.contrib.auth import get_user_model

    from tests.django.testapp.models import Organization

    users = {str(user.pk): user.email for user in get_user_model().objects.all()}
    accounts = {str(org.pk): org.name for org in Organization.objects.all()}
    members = sorted(
        [str(org_id), str(user_id)]
        for org_id, user_id in Organization.members.through.objects.values_list("organization_id", "user_id")
    )
    return {"users": users, "accounts": accounts, "members": members}


def main(argv: list[str]) -> None:
    configure()
    if argv[1] == "write":
        write(int(argv[2]))
    elif argv[1] == "add-events":
        from journy_core import operations as ops
        from journy_django.outbox import DjangoStore

        count = int(argv[2])
        DjangoStore().add([ops.track(f"event-{n}", user_id=n % 7) for n in range(count)])
    elif argv[1] == "dump":
        print(json.dumps(dump()))
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["outbox_app", *argv[1:]])


if __name__ == "__main__":
    main(sys.argv)
