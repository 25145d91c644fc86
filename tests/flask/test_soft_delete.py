"""Soft deletion (``JOURNY_USER_DELETED`` / ``JOURNY_ACCOUNT_DELETED``): a soft-deleted user or account is deleted in
journy.io, at the commit of its flush, in ``flask journy sync`` and in ``journy.sync()``; restored, upserted again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from journy_core import ConfigurationError
from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_flask import Journy, pause_sync

from .conftest import Team, User, build_app, db, outbox_of

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


def is_closed(team: Team) -> bool:
    """A callable for ``JOURNY_ACCOUNT_DELETED`` (also given by its dotted path)."""
    return team.is_deleted


def soft_delete_app(**overrides: Any) -> Flask:
    config: dict[str, Any] = {"JOURNY_USER_DELETED": "deleted_at", "JOURNY_ACCOUNT_DELETED": is_closed}
    return build_app(**{**config, **overrides})


@pytest.fixture
def app() -> Iterator[Flask]:
    app = soft_delete_app()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()


def kinds(app: Flask) -> list[str]:
    return [op.kind for op in outbox_of(app).operations]


def add(app: Flask, obj: Any) -> Any:
    with app.app_context():
        db.session.add(obj)
        db.session.commit()
        return obj.id


def test_a_user_committed_with_deleted_at_set_is_deleted(app: Flask) -> None:
    user_id = add(app, User(email="ada@acme.test"))
    outbox_of(app).clear()
    with app.app_context():
        db.session.get(User, user_id).deleted_at = NOW
        db.session.flush()
        assert outbox_of(app).operations == []  # flushed, not committed
        db.session.commit()
    [delete] = outbox_of(app).operations
    assert delete.kind == "delete_user"
    assert delete.payload["identification"] == {"userId": str(user_id)}


def test_a_restored_user_is_upserted_again(app: Flask) -> None:
    user_id = add(app, User(email="ada@acme.test", full_name="Ada", deleted_at=NOW))
    assert kinds(app) == ["delete_user"]
    outbox_of(app).clear()
    with app.app_context():
        db.session.get(User, user_id).deleted_at = None  # the soft-delete column alone counts as a synced change
        db.session.commit()
    [upsert] = outbox_of(app).users()
    assert upsert["identification"] == {"userId": str(user_id), "email": "ada@acme.test"}
    assert upsert["properties"]["full_name"] == "Ada"


def test_the_last_flush_before_the_commit_decides(app: Flask) -> None:
    user_id = add(app, User(email="ada@acme.test"))
    outbox_of(app).clear()
    with app.app_context():
        user = db.session.get(User, user_id)
        user.deleted_at = NOW
        db.session.flush()
        user.deleted_at = None
        db.session.commit()
    assert kinds(app) == ["delete_user", "upsert_user"]  # in order: the user exists at the end


def test_an_account_soft_deleted_by_a_callable_is_deleted_and_gets_no_member_added(app: Flask) -> None:
    team_id = add(app, Team(name="ACME"))
    outbox_of(app).clear()
    with app.app_context():
        team = db.session.get(Team, team_id)
        team.is_deleted = True  # a callable decides: any column change counts
        team.members.append(User(email="ada@acme.test"))
        db.session.commit()
    assert sorted(kinds(app)) == ["delete_account", "upsert_user"]  # and no add_users_to_account
    [delete] = outbox_of(app).of_kind("delete_account")
    assert delete.payload["identification"] == {"accountId": str(team_id)}


def test_a_member_added_later_to_a_soft_deleted_account_is_not_sent(app: Flask) -> None:
    team_id = add(app, Team(name="ACME", is_deleted=True))
    user_id = add(app, User(email="ada@acme.test"))
    outbox_of(app).clear()
    with app.app_context():
        user = db.session.get(User, user_id)
        user.teams.append(db.session.get(Team, team_id))
        db.session.commit()
    assert kinds(app) == []


def test_no_soft_deleted_user_is_added_to_a_team(app: Flask) -> None:
    team_id = add(app, Team(name="ACME"))
    ada_id = add(app, User(email="ada@acme.test"))
    bob_id = add(app, User(email="bob@acme.test", deleted_at=NOW))
    outbox_of(app).clear()
    with app.app_context():
        team = db.session.get(Team, team_id)
        team.members.extend([db.session.get(User, ada_id), db.session.get(User, bob_id)])
        db.session.commit()
    [added] = outbox_of(app).operations
    assert added.kind == "add_users_to_account"
    assert [member["identification"] for member in added.payload["users"]] == [{"userId": str(ada_id)}]


def test_a_dotted_path_of_a_callable_is_resolved() -> None:
    app = soft_delete_app(JOURNY_ACCOUNT_DELETED="tests.flask.test_soft_delete.is_closed")
    add(app, Team(name="ACME", is_deleted=True))
    assert kinds(app) == ["delete_account"]


def test_sync_sends_the_delete_of_a_soft_deleted_object_without_members(app: Flask) -> None:
    with app.app_context(), pause_sync():
        team = Team(name="ACME", is_deleted=True, members=[User(email="ada@acme.test", deleted_at=NOW)])
        db.session.add(team)
        db.session.commit()
        Journy().sync(team)
        Journy().sync(team.members[0])
    assert kinds(app) == ["delete_account", "delete_user"]


def test_an_attribute_the_model_lacks_fails_init_app() -> None:
    with pytest.raises(ConfigurationError, match=r"JOURNY_USER_DELETED='removed_at'.*has no attribute 'removed_at'"):
        soft_delete_app(JOURNY_USER_DELETED="removed_at")


def test_a_value_of_the_wrong_type_fails_init_app() -> None:
    with pytest.raises(ConfigurationError, match="JOURNY_ACCOUNT_DELETED must be an attribute name"):
        soft_delete_app(JOURNY_ACCOUNT_DELETED=3)


def test_flask_journy_sync_sends_deletes_for_soft_deleted_rows_and_upserts_for_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    app = soft_delete_app(JOURNY_API_KEY=DEFAULT_API_KEY, JOURNY_API_URL=emulator.url, JOURNY_QUEUE={"BACKEND": "sync"})
    with app.app_context(), pause_sync():
        ada, gone = User(email="ada@acme.test"), User(email="gone@acme.test", deleted_at=NOW)
        kept, closed = Team(name="Kept", members=[ada, gone]), Team(name="Closed", is_deleted=True, members=[ada])
        db.session.add_all([ada, gone, kept, closed])
        db.session.commit()
        ids = {"ada": ada.id, "gone": gone.id, "kept": kept.id, "closed": closed.id}
    result = app.test_cli_runner().invoke(args=["journy", "sync", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    deleted = {
        (call["path"], *call["body"]["identification"].values())
        for call in emulator.calls()
        if call["method"] == "DELETE"
    }
    assert deleted == {("/users", str(ids["gone"])), ("/accounts", str(ids["closed"]))}
    state = emulator.state()
    assert [user["userId"] for user in state["users"]] == [str(ids["ada"])]
    assert [account["accountId"] for account in state["accounts"]] == [str(ids["kept"])]
    [added] = emulator.calls("/accounts/users/add")
    assert added["body"]["account"]["accountId"] == str(ids["kept"])
    # gone's delete was sent: its addition would have brought it back
    assert [user["identification"] for user in added["body"]["users"]] == [{"userId": str(ids["ada"])}]
    assert "memberships: sent 1, failed 0, skipped 1" in result.output
