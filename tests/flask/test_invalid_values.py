"""Model data journy.io would refuse (an email that is not one, a URL as domain): left out with a warning naming the
model and the object, and the object still synced by its ID."""

from __future__ import annotations

import logging

import pytest

from .conftest import Team, User, build_app, db, outbox_of


@pytest.mark.parametrize("email", ["not-an-email", "ada @acme.com"])
def test_a_user_whose_email_is_not_an_address_is_synced_by_id_alone(
    caplog: pytest.LogCaptureFixture, email: str
) -> None:
    app = build_app()
    with app.app_context(), caplog.at_level(logging.WARNING, logger="journy"):
        user = User(email=email, full_name="Ada")
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    [upsert] = outbox_of(app).users()
    assert upsert["identification"] == {"userId": str(user_id)}
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert f"User {user_id}: its email is not an email address" in warning
    assert email not in warning  # personal data stays out of the log


def test_an_account_whose_domain_is_a_url_is_synced_by_id_alone(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(JOURNY_ACCOUNT_DOMAIN_FIELD="name")
    with app.app_context(), caplog.at_level(logging.WARNING, logger="journy"):
        team = Team(name="https://acme.com/")
        db.session.add(team)
        db.session.commit()
        team_id = team.id
    [upsert] = outbox_of(app).of_kind("upsert_account")
    assert upsert.payload["identification"] == {"accountId": str(team_id)}
    assert any(f"Team {team_id}: its name is not a domain name" in r.getMessage() for r in caplog.records)
