"""track(), the settings, the admin action and the test helpers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, TestCase, override_settings

import journy_django
from journy_core import ConfigurationError, InvalidArgumentError
from journy_core.emulator import DEFAULT_API_KEY
from journy_django.admin import sync_to_journy
from journy_django.conf import JournyConfigurationError, get_journy
from journy_django.testing import JournyTestMixin, capture_journy
from tests.django.testapp.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def test_track_takes_instances_or_ids(outbox):
    user = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME", domain="acme.com")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    journy_django.track("created_invoice", user=user, account=org, metadata={"amount": 100}, triggered_at=when)
    journy_django.track("ran_export", account=7)
    first, second = outbox.events()
    assert first.payload == {
        "identification": {
            "user": {"userId": str(user.pk), "email": "ada@acme.com"},
            "account": {"accountId": str(org.pk), "domain": "acme.com"},
        },
        "name": "created_invoice",
        "triggeredAt": "2026-01-02T03:04:05+00:00",
        "metadata": {"amount": 100},
    }
    assert second.payload["identification"] == {"account": {"accountId": "7"}}


def test_track_raises_on_bad_arguments_at_the_call_site():
    with pytest.raises(InvalidArgumentError, match="metadata"):
        journy_django.track("x", user=1, metadata={"tags": ["a"]})
    with pytest.raises(InvalidArgumentError):
        journy_django.track("x")


def test_track_from_a_view_is_delivered_to_the_api(client, settings, emulator):
    settings.JOURNY = {**settings.JOURNY, "API_KEY": DEFAULT_API_KEY, "API_URL": emulator.url, "QUEUE": None}
    user = User.objects.create_user("ada", "ada@acme.com")
    client.force_login(user)
    assert client.get("/track/").status_code == 200
    assert get_journy().flush(timeout=10)
    [event] = emulator.state()["events"]
    assert event["name"] == "exported_report"


def test_workers_of_this_project_build_their_client_from_the_settings(settings, emulator):
    from journy_core import operations, worker

    settings.JOURNY = {**settings.JOURNY, "API_KEY": DEFAULT_API_KEY, "API_URL": emulator.url}
    worker._local.__dict__.clear()  # a fresh worker thread
    try:
        assert worker.deliver(operations.track("ran_worker_test", user_id="1")).outcome == "sent"
    finally:
        worker._local.__dict__.clear()
    assert [e["name"] for e in emulator.state()["events"]] == ["ran_worker_test"]


def test_settings_are_read_when_used_so_override_settings_applies():
    first = get_journy()
    with override_settings(JOURNY={"QUEUE": {"BACKEND": "disabled"}}):
        assert get_journy().backend.name == "disabled"
    assert get_journy() is not first  # rebuilt after the override ended
    assert get_journy().backend.name == "memory"


def test_the_configuration_error_is_both_djangos_and_journys(settings):
    assert issubclass(JournyConfigurationError, ImproperlyConfigured)
    assert issubclass(JournyConfigurationError, ConfigurationError)
    settings.JOURNY = {"QUEUE": {"BACKEND": "thread"}}
    with pytest.raises(
        JournyConfigurationError, match=r"JOURNY\[.API_KEY.\] is not set, nor the JOURNY_API_KEY environment variable"
    ):
        get_journy()
    settings.JOURNY = {"API_KEY": "k", "NOT_A_KEY": 1}
    with pytest.raises(JournyConfigurationError, match="NOT_A_KEY"):
        get_journy()


def test_the_admin_action_queues_the_selected_accounts_with_members(outbox, admin_user):
    ada = User.objects.create_user("ada", "ada@acme.com")
    org = Organization.objects.create(name="ACME")
    org.members.add(ada)
    outbox.clear()
    request = RequestFactory().post("/admin/")
    request.user = admin_user
    request._messages = type("Messages", (), {"add": lambda *a, **k: None})()
    sync_to_journy(site._registry[Organization], request, Organization.objects.all())
    assert [op.kind for op in outbox.operations] == ["upsert_account", "add_users_to_account"]


def explode_for_broken(account):
    if account.name == "Broken":
        raise RuntimeError("the app's property map failed")
    return {"name": account.name}


def test_the_admin_action_reports_an_object_whose_property_map_raises_and_syncs_the_others(
    settings, admin_client, caplog
):
    settings.JOURNY = {**settings.JOURNY, "ACCOUNT_PROPERTIES": f"{__name__}.explode_for_broken"}
    broken = Organization.objects.create(name="Broken")
    fine = Organization.objects.create(name="Fine")
    with capture_journy() as outbox:
        response = admin_client.post(
            "/admin/testapp/organization/",
            {"action": "sync_to_journy", "_selected_action": [broken.pk, fine.pk]},
            follow=True,
        )
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert "Could not sync Broken: RuntimeError (see the journy log)." in shown
    assert "1 object queued for journy.io." in shown
    synced = [op.payload["identification"]["accountId"] for op in outbox.operations if op.kind == "upsert_account"]
    assert synced == [str(fine.pk)]
    assert f"syncing testapp.Organization (id {broken.pk}) to journy.io from the admin" in caplog.text


def test_the_admin_action_is_offered_on_the_account_admin(admin_client):
    Organization.objects.create(name="ACME")
    response = admin_client.get("/admin/testapp/organization/")
    assert "Sync to journy.io" in response.content.decode()


def test_capture_journy_records_what_would_be_sent(settings):
    settings.JOURNY = {**settings.JOURNY, "QUEUE": {"BACKEND": "disabled"}}
    with capture_journy() as outbox:
        journy_django.track("signed_in", user=1)
    assert [op.payload["name"] for op in outbox.events()] == ["signed_in"]
    assert get_journy().backend.name == "disabled"


def test_the_pytest_fixture(journy_outbox):
    journy_django.track("signed_in", user=1)
    assert len(journy_outbox.events("signed_in")) == 1


class MixinTests(JournyTestMixin, TestCase):
    def test_the_testcase_mixin_sees_saves_once_commit_hooks_run(self):
        with self.captureOnCommitCallbacks(execute=True):
            User.objects.create_user("ada", "ada@acme.com")
        assert [u["identification"]["email"] for u in self.journy_outbox.users()] == ["ada@acme.com"]

    def test_nothing_is_recorded_before_the_commit_hooks_run(self):
        User.objects.create_user("ada", "ada@acme.com")
        assert self.journy_outbox.operations == []


def test_tracking_for_an_anonymous_user_says_nobody_is_logged_in_in_the_adapters_own_words(outbox):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(InvalidArgumentError, match=r"^user: nobody is logged in \(an AnonymousUser\)"):
        journy_django.track("opened_billing", user=AnonymousUser())
    assert outbox.operations == []
