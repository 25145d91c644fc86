"""Soft deletion (``USER_DELETED`` / ``ACCOUNT_DELETED``): a soft-deleted user or account is deleted in journy.io,
at the commit of its save, in ``journy_sync`` and in ``journy_django.sync()``; restored, it is upserted again."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

import journy_django
from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY
from journy_core.testing import Outbox
from journy_django.checks import check_property_attributes
from tests.django.testapp.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def is_inactive(user):
    """A dotted-path callable for ``USER_DELETED``: a deactivated user counts as deleted."""
    return not user.is_active


@pytest.fixture
def soft_delete(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_DELETED": is_inactive, "ACCOUNT_DELETED": "deleted_at"}


def current_outbox():
    """What the app queued, from the backend of the settings in force now (a settings change builds a new one)."""
    return Outbox(journy_django.get_journy().backend)


def kinds(outbox):
    return [op.kind for op in outbox.operations]


def test_an_account_saved_with_its_deleted_at_set_is_deleted_at_the_commit(soft_delete, outbox):
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    with transaction.atomic():
        org.deleted_at = timezone.now()
        org.save()
        assert outbox.operations == []
    [delete] = outbox.operations
    assert delete.kind == "delete_account"
    assert delete.payload["identification"] == {"accountId": str(org.pk)}


def test_a_save_with_update_fields_of_only_the_soft_delete_field_is_sent(soft_delete, outbox):
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    org.deleted_at = timezone.now()
    org.save(update_fields=["deleted_at"])
    assert kinds(outbox) == ["delete_account"]


def test_a_restored_account_is_upserted_again(soft_delete, outbox):
    org = Organization.objects.create(name="ACME", deleted_at=timezone.now())
    outbox.clear()
    org.deleted_at = None
    org.save(update_fields=["deleted_at"])
    [upsert] = outbox.accounts()
    assert upsert["identification"]["accountId"] == str(org.pk)
    assert upsert["properties"]["name"] == "ACME"


def test_the_state_at_the_commit_decides_between_delete_and_upsert(soft_delete, outbox):
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    with transaction.atomic():
        org.deleted_at = timezone.now()
        org.save()
        org.deleted_at = None
        org.save()
    assert kinds(outbox) == ["upsert_account"]


def test_a_user_deactivated_by_a_callable_is_deleted_and_upserted_once_reactivated(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_DELETED": "tests.django.test_soft_delete.is_inactive"}
    outbox = current_outbox()
    ada = User.objects.create_user("ada", "ada@acme.com")
    outbox.clear()
    ada.is_active = False
    ada.save(update_fields=["is_active"])  # a callable may read any field: every save counts
    [delete] = outbox.operations
    assert delete.kind == "delete_user"
    assert delete.payload["identification"] == {"userId": str(ada.pk)}
    outbox.clear()
    ada.is_active = True
    ada.save()
    assert kinds(outbox) == ["upsert_user"]


def test_a_user_attribute_name_is_read_as_the_soft_delete_flag(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_DELETED": "is_staff"}  # the default User has no deleted_at
    outbox = current_outbox()
    User.objects.create_user("ada", "ada@acme.com", is_staff=True)
    User.objects.create_user("bob", "bob@acme.com")
    assert kinds(outbox) == ["delete_user", "upsert_user"]


def test_no_member_is_added_to_a_soft_deleted_account(soft_delete, outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME", deleted_at=timezone.now())
    outbox.clear()
    org.members.add(ada)
    assert outbox.operations == []


def test_no_soft_deleted_account_is_joined_from_the_users_side(soft_delete, outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    gone = Organization.objects.create(name="Gone", deleted_at=timezone.now())
    live = Organization.objects.create(name="Live")
    outbox.clear()
    ada.organizations.add(gone, live)
    [added] = outbox.operations
    assert added.kind == "add_users_to_account"
    assert added.payload["account"] == {"accountId": str(live.pk)}


def test_no_soft_deleted_user_is_added_to_an_account(soft_delete, outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    bob = User.objects.create_user("bob", "bob@acme.com", is_active=False)  # deleted by is_inactive
    org = Organization.objects.create(name="ACME")
    outbox.clear()
    org.members.add(ada, bob)
    [added] = outbox.operations
    assert [member["identification"] for member in added.payload["users"]] == [{"userId": str(ada.pk)}]


def test_removing_a_soft_deleted_user_from_an_account_is_still_sent(soft_delete, outbox):
    bob = User.objects.create_user("bob", "bob@acme.com")
    org = Organization.objects.create(name="ACME")
    org.members.add(bob)
    bob.is_active = False
    bob.save()
    outbox.clear()
    org.members.remove(bob)
    assert kinds(outbox) == ["remove_users_from_account"]


def test_sync_sends_the_delete_of_a_soft_deleted_account_without_its_members(soft_delete, outbox):
    ada = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME")
    org.members.add(ada)
    with journy_django.pause_sync():
        org.deleted_at = timezone.now()
        org.save()
    outbox.clear()
    journy_django.sync(org, members=True)
    assert kinds(outbox) == ["delete_account"]


def test_an_attribute_the_model_lacks_is_a_system_check_error(settings):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_DELETED": "removed_at"}
    [error] = check_property_attributes()
    assert error.id == "journy.E011"
    assert "JOURNY['ACCOUNT_DELETED']='removed_at'" in error.msg
    assert "has no attribute 'removed_at'" in error.msg


def test_a_dotted_path_that_is_neither_an_attribute_nor_a_callable_is_a_system_check_error(settings):
    settings.JOURNY = {**settings.JOURNY, "USER_DELETED": "myapp.journy.is_deleted"}
    [error] = check_property_attributes()
    assert "neither an attribute" in error.msg


def test_an_attribute_the_model_lacks_is_logged_and_never_raised_into_save(settings, caplog):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_DELETED": "removed_at"}
    outbox = current_outbox()
    with caplog.at_level(logging.WARNING, logger="journy"):
        org = Organization.objects.create(name="ACME")
    assert org.pk is not None
    assert "JOURNY['ACCOUNT_DELETED']" in caplog.text
    assert outbox.accounts() == []


@pytest.fixture
def live(settings, emulator, soft_delete):
    settings.JOURNY = {**settings.JOURNY, "API_KEY": DEFAULT_API_KEY, "API_URL": emulator.url}
    yield emulator
    emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})


def test_journy_sync_sends_deletes_for_soft_deleted_rows_and_upserts_for_the_rest(live, tmp_path, capsys):
    with journy_django.pause_sync():
        ada = User.objects.create_user("ada", "ada@acme.com")
        gone = User.objects.create_user("gone", "gone@acme.com", is_active=False)
        kept = Organization.objects.create(name="Kept")
        closed = Organization.objects.create(name="Closed", deleted_at=timezone.now())
        kept.members.add(ada, gone)  # gone's delete is sent: its addition would bring it back
        closed.members.add(ada)
    call_command("journy_sync", "--state-file", str(tmp_path / "state.json"))
    deletes = {
        (call["path"], call["body"]["identification"].get("userId") or call["body"]["identification"].get("accountId"))
        for call in live.calls()
        if call["method"] == "DELETE"
    }
    assert deletes == {("/users", str(gone.pk)), ("/accounts", str(closed.pk))}
    stored = live.state()
    assert [user["userId"] for user in stored["users"]] == [str(ada.pk)]
    assert [account["accountId"] for account in stored["accounts"]] == [str(kept.pk)]
    [added] = live.calls("/accounts/users/add")
    assert added["body"]["account"]["accountId"] == str(kept.pk)
    assert [user["identification"] for user in added["body"]["users"]] == [{"userId": str(ada.pk)}]
    assert "memberships: sent 1, failed 0, skipped 1" in capsys.readouterr().out
