"""Model changes reach journy.io in the order they were committed, with the default thread backend."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from journy_core.emulator import DEFAULT_API_KEY
from journy_django.conf import get_journy
from tests.django.testapp.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


@pytest.fixture
def thread_backend(settings, emulator):
    emulator.configure(rate_limit=1_000_000)
    settings.JOURNY = {**settings.JOURNY, "API_KEY": DEFAULT_API_KEY, "API_URL": emulator.url, "QUEUE": None}
    yield
    get_journy().close(timeout=10)


def test_a_user_created_then_deleted_is_not_recreated_in_journy(thread_backend, emulator):
    for n in range(100):
        user = User.objects.create_user(f"user{n}", f"user{n}@acme.com")
        user.delete()
    assert get_journy().flush(timeout=30)
    assert emulator.state()["users"] == []
    deletes = emulator.calls(path="/users")
    assert len(deletes) == 100


def test_a_membership_committed_with_its_account_and_user_follows_their_upserts(thread_backend, emulator):
    for n in range(20):
        with transaction.atomic():
            user = User.objects.create_user(f"member{n}", f"member{n}@acme.com")
            org = Organization.objects.create(name=f"Org {n}", domain=f"org{n}.com")
            org.members.add(user)
    assert get_journy().flush(timeout=30)
    # Every membership call comes after the upserts of the account and user it names.
    calls = [call for call in emulator.calls() if call["applied"]]
    joined = 0
    seen_users: set[str] = set()
    seen_accounts: set[str] = set()
    for call in calls:
        body = call["body"]
        if call["path"] == "/users/upsert":
            seen_users.add(body["identification"]["userId"])
        elif call["path"] == "/accounts/upsert":
            seen_accounts.add(body["identification"]["accountId"])
        elif call["path"] == "/accounts/users/add":
            assert body["account"]["accountId"] in seen_accounts
            assert {u["identification"]["userId"] for u in body["users"]} <= seen_users
            joined += len(body["users"])
    assert joined == 20


def test_a_user_created_joined_and_deleted_in_one_transaction_is_not_recreated(thread_backend, emulator):
    for n in range(10):
        with transaction.atomic():
            user = User.objects.create_user(f"gone{n}", f"gone{n}@acme.com")
            org = Organization.objects.create(name=f"Team {n}", domain=f"team{n}.com")
            org.members.add(user)
            user.delete()
    assert get_journy().flush(timeout=30)
    assert emulator.state()["users"] == []
    assert len(emulator.state()["accounts"]) == 10
