"""The ``outbox`` backend in a Django app: rows written in the app's transaction, delivered by the relay
(``manage.py journy_relay``), on SQLite, PostgreSQL and MariaDB (each when it runs)."""

from __future__ import annotations

import gc
import json
import time
from datetime import datetime, timezone

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connections, transaction

import journy_django
from journy_core import operations as ops
from journy_core.emulator import DEFAULT_API_KEY
from journy_django.conf import get_journy
from journy_django.models import OutboxRow as Row
from journy_django.outbox import DjangoStore
from tests.conftest import REQUIRE_SERVICES, require_service
from tests.django.testapp.models import Organization

User = get_user_model()

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgresql", marks=pytest.mark.services),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.services),
]
_PORTS = {"postgres": ("PostgreSQL", 5432), "mariadb": ("MariaDB", 3306)}

pytestmark = pytest.mark.django_db(transaction=True, databases=list(django_settings.DATABASES))


@pytest.fixture(autouse=True, scope="module")
def _collect_relay_connections():
    """The relay's worker threads end without closing their Django connections (cycles: freed by the collector),
    and a PostgreSQL test database cannot be dropped while one is open."""
    yield
    gc.collect()


@pytest.fixture(params=DATABASES)
def alias(request: pytest.FixtureRequest) -> str:
    name = request.param
    if name in _PORTS:
        require_service(_PORTS[name][0], "127.0.0.1", _PORTS[name][1])
        if name not in django_settings.DATABASES:
            reason = f"no {name} alias in the test settings (no MySQL driver, or it came up later)"
            pytest.fail(f"{reason}; JOURNY_REQUIRE_SERVICES=1 requires it") if REQUIRE_SERVICES else pytest.skip(reason)
    return name


def outbox_settings(settings, url: str, store: object, **options: object) -> None:
    """JOURNY with the outbox backend on ``store``, delivering to ``url``; no relay thread unless asked."""
    settings.JOURNY = {
        **settings.JOURNY,
        "API_KEY": DEFAULT_API_KEY,
        "API_URL": url,
        "QUEUE": {
            "BACKEND": "outbox",
            "OPTIONS": {"STORE": store, "RELAY_IN_PROCESS": False, "RETRY": {"base": 0.05, "cap": 0.2}, **options},
        },
    }


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_journy_relay_once_delivers_every_pending_row_and_exits_0(settings, emulator, alias, capsys):
    store = DjangoStore(using=alias)
    outbox_settings(settings, emulator.url, store)
    store.add([ops.upsert_user(user_id=n, email=f"u{n}@acme.com") for n in range(30)])
    store.add([ops.delete_user(user_id=3)])
    call_command("journy_relay", "--once")
    assert "31 row(s) delivered, 0 dead" in capsys.readouterr().out
    assert sorted(int(user["userId"]) for user in emulator.state()["users"]) == [n for n in range(30) if n != 3]
    assert Row.objects.using(alias).count() == 0


def test_journy_relay_once_marks_a_refused_row_dead_and_still_exits_0(settings, emulator, alias, capsys):
    store = DjangoStore(using=alias)
    outbox_settings(settings, emulator.url, store)
    store.add([ops.upsert_user(user_id=1)])
    emulator.script_answer(400, {"errors": {"fields": {"email": "invalid"}}, "message": "bad"})
    call_command("journy_relay", "--once")
    assert "0 row(s) delivered, 1 dead" in capsys.readouterr().out
    dead = store.list_rows(status="dead", limit=5)
    assert len(dead) == 1 and "400" in dead[0].last_error


def test_journy_relay_once_exits_1_when_journy_io_does_not_answer_in_time(settings, alias, capsys):
    store = DjangoStore(using=alias)
    outbox_settings(settings, "http://127.0.0.1:9", store)  # discard port: nothing listens
    store.add([ops.upsert_user(user_id=1)])
    with pytest.raises(CommandError, match="left") as raised:
        call_command("journy_relay", "--once", "--max-seconds", "1.5")
    assert raised.value.returncode == 1
    assert store.backlog(now=now()).pending == 1


def test_journy_relay_refuses_max_seconds_without_once(settings, emulator):
    outbox_settings(settings, emulator.url, DjangoStore())
    with pytest.raises(CommandError, match="--once"):
        call_command("journy_relay", "--max-seconds", "3")


# -- rows written by the app, at the signal, in its transaction ----------------------------------------------------


class Rollback(Exception):
    pass


def rolled_back(alias, action):
    try:
        with transaction.atomic(using=alias):
            action()
            raise Rollback
    except Rollback:
        pass


@pytest.fixture
def app_outbox(settings, emulator):
    """The outbox backend with the store the app fills in (every alias), no relay thread."""
    outbox_settings(settings, emulator.url, None)
    settings.JOURNY["QUEUE"]["OPTIONS"].pop("STORE")
    return emulator


def pending(alias):
    rows = Row.objects.using(alias).filter(status="pending").order_by("id")
    return [json.loads(row.operation)["kind"] for row in rows]


def test_a_commit_writes_its_rows_in_the_transaction_and_the_relay_delivers_them(app_outbox, alias):
    with transaction.atomic(using=alias):
        user = User.objects.db_manager(alias).create_user("ada", "ada@acme.com", first_name="Ada")
        assert pending(alias) == ["upsert_user"]  # written at the signal, inside the transaction
        user.first_name = "Ada L."
        user.save(using=alias)
    assert pending(alias) == ["upsert_user", "upsert_user"]
    call_command("journy_relay", "--once")
    [delivered] = app_outbox.state()["users"]
    assert (delivered["userId"], delivered["email"]) == (str(user.pk), "ada@acme.com")
    assert len(app_outbox.calls("/users/upsert")) == 1  # the relay merged the two upserts
    assert pending(alias) == []


def test_a_rolled_back_transaction_or_savepoint_leaves_no_row(app_outbox, alias):
    rolled_back(alias, lambda: User.objects.db_manager(alias).create_user("gone", "gone@acme.com"))
    assert pending(alias) == []
    with transaction.atomic(using=alias):
        User.objects.db_manager(alias).create_user("kept", "kept@acme.com")
        rolled_back(alias, lambda: User.objects.db_manager(alias).create_user("inner", "inner@acme.com"))
    call_command("journy_relay", "--once")
    assert [user["email"] for user in app_outbox.state()["users"]] == ["kept@acme.com"]


def test_deletes_and_memberships_are_written_at_their_signals(app_outbox, alias):
    with transaction.atomic(using=alias):
        ada = User.objects.db_manager(alias).create_user("ada", "ada@acme.com")
        bob = User.objects.db_manager(alias).create_user("bob", "bob@acme.com")
        org = Organization.objects.using(alias).create(name="Acme", domain="acme.com")
        org.members.add(ada, bob)
    org.members.remove(bob)
    bob.delete(using=alias)
    assert pending(alias) == [
        "upsert_user",
        "upsert_user",
        "upsert_account",
        "add_users_to_account",
        "remove_users_from_account",
        "delete_user",
    ]
    call_command("journy_relay", "--once")
    state = app_outbox.state()
    assert [user["email"] for user in state["users"]] == ["ada@acme.com"], (state, app_outbox.calls())
    active = [(m["account"]["accountId"], m["user"]["userId"]) for m in state["memberships"] if m["status"] == "active"]
    assert active == [(str(org.pk), str(ada.pk))]


def test_pause_sync_and_the_opt_out_still_apply(app_outbox, alias):
    with journy_django.pause_sync():
        User.objects.db_manager(alias).create_user("quiet", "quiet@acme.com")
    Organization.objects.using(alias).create(name="Private", opted_out=True)
    assert pending(alias) == []


def test_track_inside_atomic_joins_the_transaction(app_outbox):
    rolled_back("default", lambda: journy_django.track("signed_up", user="1"))
    assert pending("default") == []
    with transaction.atomic():
        journy_django.track("signed_up", user="2")
    assert pending("default") == ["track"]


def test_the_relay_thread_is_woken_by_the_commit(settings, emulator, alias):
    outbox_settings(settings, emulator.url, None, RELAY_IN_PROCESS=True, POLL_SECONDS=60)
    settings.JOURNY["QUEUE"]["OPTIONS"].pop("STORE")
    get_journy().backend.wake()  # the thread starts and takes its first (empty) look now
    time.sleep(0.3)
    with transaction.atomic(using=alias):
        User.objects.db_manager(alias).create_user("ada", "ada@acme.com")
    deadline = time.monotonic() + 10
    while not emulator.state()["users"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [user["email"] for user in emulator.state()["users"]] == ["ada@acme.com"]
    assert time.monotonic() < deadline - 5  # well before the 60 s poll
    get_journy().close(timeout=5)


def test_journy_check_reports_the_backlog(app_outbox, capsys):
    store = DjangoStore(using="default")
    store.add([ops.upsert_user(user_id=1), ops.upsert_user(user_id=2)])
    store.mark_dead([store.claim("me", limit=1, lease_seconds=5, now=now())[0].id], error="HTTP 400")
    call_command("journy_check", "--offline")
    out = capsys.readouterr().out
    assert "Outbox: 1 pending" in out
    assert "1 dead" in out


def test_the_admin_lists_rows_and_retries_and_purges_dead_ones(app_outbox, admin_client):
    store = DjangoStore(using="default")
    store.add([ops.upsert_user(user_id=n) for n in range(3)])
    rows = store.claim("me", limit=2, lease_seconds=5, now=now())
    store.mark_dead([row.id for row in rows], error="HTTP 400 invalid email")
    page = admin_client.get("/admin/journy_django/outboxrow/?status__exact=dead")
    assert page.status_code == 200
    assert "HTTP 400 invalid email" in page.content.decode()
    retry = admin_client.post(
        "/admin/journy_django/outboxrow/", {"action": "retry_rows", "_selected_action": [rows[0].id]}
    )
    assert retry.status_code == 302
    purge = admin_client.post(
        "/admin/journy_django/outboxrow/",
        {"action": "purge_rows", "_selected_action": [row.id for row in Row.objects.all()]},
    )
    assert purge.status_code == 302
    assert "1 dead row purged" in str([m.message for m in get_messages(purge.wsgi_request)])
    assert dict(Row.objects.filter(id__in=[row.id for row in rows]).values_list("id", "status")) == {
        rows[0].id: "pending"  # retried; the other dead row is purged
    }
    assert admin_client.get(f"/admin/journy_django/outboxrow/{rows[0].id}/change/").status_code == 200
    assert admin_client.get("/admin/journy_django/outboxrow/add/").status_code == 403


def test_a_row_that_cannot_be_written_fails_the_save(app_outbox, alias):
    if alias == "mariadb":
        pytest.skip("MariaDB commits DDL at once: the table cannot be dropped for one transaction")

    def save_without_the_table():
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("DROP TABLE journy_outbox")  # rolled back with the transaction
            User.objects.db_manager(alias).create_user("ada", "ada@acme.com")

    with pytest.raises(DatabaseError):
        save_without_the_table()
    assert not User.objects.using(alias).filter(username="ada").exists()
    assert Row.objects.using(alias).count() == 0  # the table is back


class WritesTo:
    """A database router sending the outbox's writes (``track()``'s rows) to one alias."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def db_for_write(self, model, **hints):
        return self.alias


def test_a_track_whose_row_cannot_be_written_is_dropped_and_the_apps_transaction_still_commits(
    settings, app_outbox, alias
):
    if alias == "mariadb":
        pytest.skip("MariaDB commits DDL at once: the table cannot be renamed for one transaction")
    settings.DATABASE_ROUTERS = [WritesTo(alias)]
    groups = Group.objects.using(alias)
    dropped = get_journy().stats()["dropped"]

    def app_transaction_without_the_table():
        with connections[alias].cursor() as cursor:
            cursor.execute("ALTER TABLE journy_outbox RENAME TO journy_outbox_away")  # rolled back below
        with transaction.atomic(using=alias):  # the app's transaction (a savepoint of the test's)
            groups.create(name="before")
            journy_django.track("signed_up", user="1")  # its row cannot be written: logged, counted, dropped
            groups.create(name="after")  # the transaction is still usable
        assert sorted(groups.values_list("name", flat=True)) == ["after", "before"]
        assert get_journy().stats()["dropped"] == dropped + 1

    rolled_back(alias, app_transaction_without_the_table)
    assert Row.objects.using(alias).count() == 0  # the table is back


def test_an_outbox_on_sqlite_with_deferred_transactions_is_warned_about(settings, emulator):
    from django.core.checks import run_checks

    from journy_django.outbox_sync import sqlite_lock_warnings

    outbox_settings(settings, emulator.url, None)
    warned = [message for message in run_checks() if message.id == "journy.W006"]
    assert ["'default'" in message.msg and "transaction_mode" in message.hint for message in warned] == [True]
    immediate = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "OPTIONS": {"transaction_mode": "IMMEDIATE"}}
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    assert sqlite_lock_warnings({"default": immediate, "postgres": postgres}) == []
