"""Model data journy.io would refuse (an email that is not one, a URL as domain): left out with a warning naming the
model and the object, and the object still synced by its ID."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

import journy_django
from tests.django.testapp.models import Organization

User = get_user_model()

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("email", ["not-an-email", "ada @acme.com"])
def test_a_user_whose_email_is_not_an_address_is_synced_by_id_alone(outbox, caplog, email):
    with caplog.at_level(logging.WARNING, logger="journy"), transaction.atomic():
        user = User.objects.create_user("ada", email)
    [upsert] = outbox.users()
    assert upsert["identification"] == {"userId": str(user.pk)}
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert f"User {user.pk}: its email is not an email address" in warning
    assert email not in warning  # personal data stays out of the log


@pytest.mark.parametrize("domain", ["https://acme.com/", "not a domain"])
def test_an_account_whose_domain_is_not_a_domain_is_synced_by_id_alone(outbox, caplog, domain):
    with caplog.at_level(logging.WARNING, logger="journy"), transaction.atomic():
        org = Organization.objects.create(name="Acme", domain=domain)
    [upsert] = outbox.of_kind("upsert_account")
    assert upsert.payload["identification"] == {"accountId": str(org.pk)}
    assert any(f"Organization {org.pk}: its domain is not a domain name" in r.getMessage() for r in caplog.records)


def test_track_for_a_user_with_an_invalid_email_still_sends_the_event(outbox):
    user = User.objects.create_user("ada", "ada@", password="pw")
    outbox.clear()
    journy_django.track("signed_in", user=user)
    [event] = outbox.of_kind("track")
    assert event.payload["identification"] == {"user": {"userId": str(user.pk)}}
