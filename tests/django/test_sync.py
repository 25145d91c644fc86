"""Model sync after commit: users, accounts and memberships, on SQLite and (when it runs) PostgreSQL."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

import journy_django
from journy_core.testing import Outbox
from tests.conftest import require_service
from tests.django.testapp.models import Organization

User = get_user_model()

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgresql", marks=pytest.mark.services),
]


@pytest.fixture(params=DATABASES)
def db_alias(request: pytest.FixtureRequest) -> str:
    alias = request.param
    if alias == "postgres":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        if "postgres" not in settings.DATABASES:  # pragma: no cover - came up after the settings were made
            pytest.skip("PostgreSQL came up after the test settings were loaded")
    return alias


pytestmark = pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES))


class Rollback(Exception):
    pass


def rolled_back(using, action):
    """Run ``action`` in an atomic block (a savepoint when nested) that rolls back."""
    try:
        with transaction.atomic(using=using):
            action()
            raise Rollback
    except Rollback:
        pass


def kinds(outbox):
    return [op.kind for op in outbox.operations]


def test_nothing_is_queued_before_the_commit_and_one_upsert_with_the_final_state_after(outbox, db_alias):
    with transaction.atomic(using=db_alias):
        user = User.objects.db_manager(db_alias).create_user("ada", "ada@acme.com", first_name="Ada")
        user.last_name = "Lovelace"
        user.save(using=db_alias)
        user.first_name = "Augusta"
        user.save(using=db_alias)
        assert outbox.operations == []
    [upsert] = outbox.users()
    assert upsert["identification"] == {"userId": str(user.pk), "email": "ada@acme.com"}
    assert upsert["properties"]["first_name"] == "Augusta"
    assert upsert["properties"]["full_name"] == "Augusta Lovelace"
    assert upsert["properties"]["registered_at"].startswith(str(user.date_joined.year))


def test_a_rollback_sends_nothing(outbox, db_alias):
    rolled_back(db_alias, lambda: User.objects.db_manager(db_alias).create_user("ada", "ada@acme.com"))
    assert outbox.operations == []


def test_a_rolled_back_savepoint_drops_only_its_own_changes(outbox, db_alias):
    users = User.objects.db_manager(db_alias)
    with transaction.atomic(using=db_alias):
        kept = users.create_user("kept", "kept@acme.com")
        rolled_back(db_alias, lambda: users.create_user("ghost", "ghost@acme.com"))
    assert [u["identification"]["userId"] for u in outbox.users()] == [str(kept.pk)]


def test_changes_after_a_rolled_back_first_savepoint_are_still_sent(outbox, db_alias):
    users = User.objects.db_manager(db_alias)
    with transaction.atomic(using=db_alias):
        rolled_back(db_alias, lambda: users.create_user("ghost", "ghost@acme.com"))
        later = users.create_user("later", "later@acme.com")
    assert [u["identification"]["userId"] for u in outbox.users()] == [str(later.pk)]


def test_rolling_back_a_savepoint_drops_the_savepoints_released_inside_it(outbox, db_alias):
    users = User.objects.db_manager(db_alias)

    def outer_and_inner():
        users.create_user("outer", "outer@acme.com")
        with transaction.atomic(using=db_alias):
            users.create_user("inner", "inner@acme.com")

    with transaction.atomic(using=db_alias):
        first = users.create_user("first", "first@acme.com")
        with transaction.atomic(using=db_alias):
            released = users.create_user("released", "released@acme.com")
            rolled_back(db_alias, outer_and_inner)
        assert outbox.operations == []
    assert [u["identification"]["userId"] for u in outbox.users()] == [str(first.pk), str(released.pk)]


def test_changes_across_savepoints_reach_the_queue_in_the_order_they_were_made(outbox, db_alias):
    users = User.objects.db_manager(db_alias)
    ada = users.create_user("ada", "ada@acme.com")
    outbox.clear()
    with transaction.atomic(using=db_alias):
        first = Organization.objects.db_manager(db_alias).create(name="First")
        with transaction.atomic(using=db_alias):
            ada.first_name = "Ada"
            ada.save(using=db_alias)
            with transaction.atomic(using=db_alias):
                third = Organization.objects.db_manager(db_alias).create(name="Third")
        rolled_back(db_alias, lambda: users.create_user("ghost", "ghost@acme.com"))
        ada_pk = ada.pk
        ada.delete()
    assert [(op.kind, op.payload["identification"]) for op in outbox.operations] == [
        ("upsert_account", {"accountId": str(first.pk)}),
        ("delete_user", {"userId": str(ada_pk)}),  # the upsert of the same commit is replaced, as without savepoints
        ("upsert_account", {"accountId": str(third.pk)}),
    ]


def test_the_changes_of_one_commit_are_queued_together_after_the_last_of_them(outbox):
    seen_by_the_apps_hooks = []
    with transaction.atomic():
        transaction.on_commit(lambda: seen_by_the_apps_hooks.append(len(outbox.operations)))
        User.objects.create_user("ada", "ada@acme.com")
        transaction.on_commit(lambda: seen_by_the_apps_hooks.append(len(outbox.operations)))
        Organization.objects.create(name="ACME")
        transaction.on_commit(lambda: seen_by_the_apps_hooks.append(len(outbox.operations)))
    # Hooks run in registration order: the journy.io changes go out with the last change's, all at once.
    assert seen_by_the_apps_hooks == [0, 0, 2]


def test_an_app_commit_hook_that_raises_does_not_hold_back_the_changes_whose_hooks_ran(outbox):
    def broken() -> None:
        raise RuntimeError("the app's own hook")

    def commit() -> None:
        with transaction.atomic():
            User.objects.create_user("ada", "ada@acme.com")
            transaction.on_commit(broken)  # not robust: Django stops running hooks here, after the commit
            User.objects.create_user("bob", "bob@acme.com")

    with pytest.raises(RuntimeError, match="the app's own hook"):
        commit()
    # Ada's hook ran before the app's hook raised; Bob's never ran (Django dropped it).
    assert [u["identification"]["email"] for u in outbox.users()] == ["ada@acme.com"]


@pytest.mark.django_db  # a TestCase-style test: its transaction never commits
def test_captured_commit_hooks_send_their_changes_while_earlier_ones_never_run(
    outbox, django_capture_on_commit_callbacks
):
    User.objects.create_user("fixture", "fixture@acme.com")  # its hook waits for a commit that never comes
    with django_capture_on_commit_callbacks(execute=True):
        ada = User.objects.create_user("ada", "ada@acme.com")
        Organization.objects.create(name="ACME")
    assert [u["identification"]["userId"] for u in outbox.users()] == [str(ada.pk)]
    assert len(outbox.accounts()) == 1


def test_a_save_outside_a_transaction_is_queued_at_once(outbox):
    user = User.objects.create_user("ada", "ada@acme.com")
    assert [u["identification"]["userId"] for u in outbox.users()] == [str(user.pk)]


def test_update_fields_touching_no_synced_field_send_nothing(outbox):
    user = User.objects.create_user("ada", "ada@acme.com")
    outbox.clear()
    user.save(update_fields=["last_login"])
    user.save(update_fields=["password"])
    assert outbox.operations == []
    user.first_name = "Ada"
    user.save(update_fields=["first_name"])
    assert outbox.users()[0]["properties"]["first_name"] == "Ada"


def test_logging_in_does_not_resend_the_user(client, outbox):
    User.objects.create_user("ada", "ada@acme.com", password="pw")
    outbox.clear()
    assert client.login(username="ada", password="pw")
    assert outbox.users() == []


def test_a_delete_after_saves_in_one_transaction_sends_only_the_delete(outbox):
    with transaction.atomic():
        user = User.objects.create_user("ada", "ada@acme.com")
        pk = user.pk
        user.first_name = "Ada"
        user.save()
        user.delete()
    assert [(op.kind, op.payload["identification"]) for op in outbox.operations] == [
        ("delete_user", {"userId": str(pk)})
    ]


def test_accounts_are_synced_with_their_domain_and_mapped_properties(outbox):
    org = Organization.objects.create(name="ACME", domain="acme.com", plan="pro")
    [account] = outbox.accounts()
    assert account == {
        "identification": {"accountId": str(org.pk), "domain": "acme.com"},
        "properties": {"name": "ACME", "plan": "pro"},
    }
    outbox.clear()
    org.internal_note = "not synced"
    org.save(update_fields=["internal_note"])
    assert outbox.operations == []
    org.delete()
    assert kinds(outbox) == ["delete_account"]


def test_membership_changes_become_grouped_add_and_remove_calls(outbox, db_alias):
    users = User.objects.db_manager(db_alias)
    ada, bob, cy = (users.create_user(n, f"{n}@acme.com") for n in ("ada", "bob", "cy"))
    org = Organization.objects.db_manager(db_alias).create(name="ACME")
    outbox.clear()
    with transaction.atomic(using=db_alias):
        org.members.add(ada, bob)
        cy.organizations.add(org)  # from the user's side
    [add] = outbox.of_kind("add_users_to_account")
    assert add.payload["account"] == {"accountId": str(org.pk)}
    assert sorted(u["identification"]["userId"] for u in add.payload["users"]) == sorted(
        str(u.pk) for u in (ada, bob, cy)
    )
    outbox.clear()
    with transaction.atomic(using=db_alias):
        org.members.remove(ada)
        bob.organizations.clear()
    [remove] = outbox.of_kind("remove_users_from_account")
    assert sorted(u["identification"]["userId"] for u in remove.payload["users"]) == sorted([str(ada.pk), str(bob.pk)])
    outbox.clear()
    org.members.clear()
    [remove] = outbox.of_kind("remove_users_from_account")
    assert [u["identification"]["userId"] for u in remove.payload["users"]] == [str(cy.pk)]


def outbox_with(settings, **options):  # type: ignore[no-untyped-def]
    """The outbox of the Journy built for ``JOURNY`` with ``options`` (the ``outbox`` fixture holds the one built
    before a test changes the settings: an assertion on it could not fail)."""
    settings.JOURNY = {**settings.JOURNY, **options}
    return Outbox(journy_django.get_journy().backend)


def test_a_staff_user_left_out_of_the_sync_is_named_in_no_membership_call(settings):
    outbox = outbox_with(settings, SKIP_STAFF=True)
    ada = User.objects.create_user("ada", "ada@acme.com")
    root = User.objects.create_user("root", "root@acme.com", is_staff=True)
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    org.members.add(ada, root)
    root.organizations.remove(org)  # from the user's side: the staff user is the instance
    [add] = outbox.of_kind("add_users_to_account")
    assert [u["identification"]["userId"] for u in add.payload["users"]] == [str(ada.pk)]
    assert outbox.of_kind("remove_users_from_account") == []
    org.members.add(root)
    outbox.clear()
    journy_django.sync(org, members=True)  # the bulk path: the relation's keys, filtered by one query
    [add] = outbox.of_kind("add_users_to_account")
    assert [u["identification"]["userId"] for u in add.payload["users"]] == [str(ada.pk)]


def test_an_add_then_a_remove_of_one_member_in_a_transaction_sends_the_last_action(outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    with transaction.atomic():
        org.members.add(ada)
        org.members.remove(ada)
    assert kinds(outbox) == ["remove_users_from_account"]


def test_pause_sync_as_a_context_manager_and_a_decorator(outbox):
    with journy_django.pause_sync():
        User.objects.create_user("ada", "ada@acme.com")
        assert journy_django.is_paused()

    @journy_django.pause_sync()
    def bulk_import():
        Organization.objects.create(name="ACME")

    bulk_import()
    assert not journy_django.is_paused()
    assert outbox.operations == []
    User.objects.create_user("bob", "bob@acme.com")
    assert len(outbox.users()) == 1


def test_a_paused_function_called_from_many_threads_at_once(outbox):
    import threading

    barrier = threading.Barrier(4)
    errors = []

    @journy_django.pause_sync()
    def work():
        barrier.wait(5)
        assert journy_django.is_paused()

    def run():
        try:
            work()
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert not journy_django.is_paused()


def test_an_object_can_opt_out_with_a_method_or_a_setting(outbox, settings):
    Organization.objects.create(name="Secret", opted_out=True)
    assert outbox.accounts() == []
    settings.JOURNY = {**settings.JOURNY, "SHOULD_SYNC": lambda obj: not obj.username.startswith("bot")}
    journy = journy_django.get_journy()
    User.objects.create_user("bot-7", "bot@acme.com")
    User.objects.create_user("ada", "ada@acme.com")
    assert [op.payload["identification"]["email"] for op in journy.backend.operations] == ["ada@acme.com"]


def test_staff_users_are_not_synced_with_skip_staff(outbox, settings):
    settings.JOURNY = {**settings.JOURNY, "SKIP_STAFF": True}
    User.objects.create_user("admin", "admin@acme.com", is_staff=True)
    User.objects.create_user("ada", "ada@acme.com")
    from journy_core.testing import Outbox

    assert [u["identification"]["email"] for u in Outbox(journy_django.get_journy().backend).users()] == [
        "ada@acme.com"
    ]


def test_an_error_in_a_property_callable_never_reaches_save_and_is_logged(outbox, settings, caplog):
    def broken(user):
        raise ZeroDivisionError("bug in the app's mapping")

    settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": broken}
    with caplog.at_level(logging.WARNING, logger="journy"):
        user = User.objects.create_user("ada", "ada@acme.com")
    assert user.pk is not None
    assert "syncing User" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_debug_makes_hook_errors_loud(settings, caplog):
    settings.DEBUG = True
    settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": lambda user: 1 / 0}
    with caplog.at_level(logging.WARNING, logger="journy"):
        User.objects.create_user("ada", "ada@acme.com")
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_a_misconfigured_account_model_does_not_break_saves(settings, caplog):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_MODEL": "nope.Missing"}
    with caplog.at_level(logging.WARNING, logger="journy"):
        org = Organization.objects.create(name="ACME")
    assert org.pk is not None
    assert "ACCOUNT_MODEL" in caplog.text


def test_disabled_sends_nothing(settings):
    settings.JOURNY = {**settings.JOURNY, "ENABLED": False}
    User.objects.create_user("ada", "ada@acme.com")
    assert journy_django.get_journy().backend.name == "disabled"


def test_sync_queues_an_upsert_now_with_members(outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME")
    org.members.add(ada)
    outbox.clear()
    with transaction.atomic():
        journy_django.sync(org, members=True)
        assert kinds(outbox) == ["upsert_account", "add_users_to_account"]


def test_membership_of_more_than_100_users_is_split_by_sync(outbox):
    with journy_django.pause_sync():
        users = User.objects.bulk_create([User(username=f"u{i}", email=f"u{i}@acme.com") for i in range(150)])
        org = Organization.objects.create(name="ACME")
        org.members.add(*users)
    journy_django.sync(org, members=True)
    assert [len(op.payload["users"]) for op in outbox.of_kind("add_users_to_account")] == [100, 50]


def test_sync_users_off_leaves_users_alone(settings):
    outbox = outbox_with(settings, SYNC_USERS=False)
    ada = User.objects.create_user("ada", "ada@acme.com")
    Organization.objects.create(name="ACME").members.add(ada)
    assert outbox.users() == []
    assert outbox.of_kind("add_users_to_account") == []  # a user never sent is named in no membership
    assert [account["identification"]["accountId"] for account in outbox.accounts()] != []  # accounts still go


def test_pause_sync_is_the_one_rule_in_journy_core():
    from journy_core.pausing import pause_sync, sync_paused

    assert journy_django.pause_sync is pause_sync
    assert journy_django.is_paused is sync_paused
