"""Model sync through SQLAlchemy session events: after commit, never on rollback, one upsert per object."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from flask import Flask
from sqlalchemy import ForeignKey, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from journy_flask import Journy, pause_sync

from .conftest import Team, User, db, outbox_of


class OwnBase(DeclarativeBase):
    pass


class Org(OwnBase):
    """An account whose members are a one-to-many relationship."""

    __tablename__ = "org"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    people: Mapped[list[Person]] = relationship(back_populates="org")


class Person(OwnBase):
    __tablename__ = "person"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"))
    # active_history: SQLAlchemy loads the previous org when this is set, so leaving an org is seen too
    org: Mapped[Org | None] = relationship(back_populates="people", active_history=True)


def kinds(app: Flask) -> list[str]:
    return [op.kind for op in outbox_of(app).operations]


def test_a_new_user_is_upserted_after_commit_and_not_before(db_app: Flask) -> None:
    with db_app.app_context():
        db.session.add(User(email="ada@acme.test", full_name="Ada Lovelace", plan="pro"))
        db.session.flush()
        assert outbox_of(db_app).operations == []  # flushed, not committed
        db.session.commit()
    (user,) = outbox_of(db_app).users()
    assert user["identification"] == {"userId": "1", "email": "ada@acme.test"}
    assert user["properties"] == {
        "full_name": "Ada Lovelace",
        "plan": "pro",
        "registered_at": "2024-01-15T00:00:00+00:00",
    }


def test_a_rolled_back_transaction_sends_nothing(db_app: Flask) -> None:
    with db_app.app_context():
        db.session.add(User(email="ada@acme.test"))
        db.session.flush()
        db.session.rollback()
        db.session.add(Team(name="Acme"))
        db.session.flush()
        db.session.close()  # closing with an open transaction rolls it back too
        db.session.commit()
    assert outbox_of(db_app).operations == []


def test_several_flushes_of_one_object_send_one_upsert_with_the_final_state(db_app: Flask) -> None:
    with db_app.app_context():
        user = User(email="ada@acme.test", full_name="Ada")
        db.session.add(user)
        db.session.flush()
        user.full_name = "Ada L."
        db.session.flush()
        user.plan = "enterprise"
        db.session.commit()
    (payload,) = outbox_of(db_app).users()
    assert payload["properties"]["full_name"] == "Ada L."
    assert payload["properties"]["plan"] == "enterprise"


def test_an_update_of_a_synced_column_upserts_and_of_another_column_does_not(db_app: Flask) -> None:
    with db_app.app_context():
        user = User(email="ada@acme.test")
        db.session.add(user)
        db.session.commit()
        outbox_of(db_app).clear()
        user.last_seen = "yesterday"
        db.session.commit()
        assert outbox_of(db_app).operations == []
        user.plan = "pro"
        db.session.commit()
        user.email = "ada@lovelace.test"
        db.session.commit()
    users = outbox_of(db_app).users()
    assert [u["properties"].get("plan") for u in users] == ["pro", "pro"]
    assert users[1]["identification"]["email"] == "ada@lovelace.test"


def test_the_columns_worth_a_call_follow_settings_swapped_after_the_first_flush(app: Flask) -> None:
    from journy_core.mapping import PropertyMap

    with app.app_context():
        user = User(email="ada@acme.test")
        db.session.add(user)
        db.session.commit()
        user.last_seen = "yesterday"  # not in the map: the class's watched columns are worked out, without it
        db.session.commit()
        assert len(outbox_of(app).users()) == 1  # the insert alone
        state = app.extensions["journy"]
        mapped = PropertyMap({"last_seen": "last_seen"}, "JOURNY_USER_PROPERTIES")
        state.settings = dataclasses.replace(state.settings, user_properties=mapped)
        user.last_seen = "today"
        db.session.commit()
    users = outbox_of(app).users()
    assert len(users) == 2
    assert users[1]["properties"] == {"last_seen": "today"}


def test_deleting_sends_delete_and_replaces_earlier_upserts_of_the_transaction(db_app: Flask) -> None:
    with db_app.app_context():
        user = User(email="ada@acme.test")
        team = Team(name="Acme")
        db.session.add_all([user, team])
        db.session.commit()
        outbox_of(db_app).clear()
        user.plan = "pro"
        db.session.flush()
        db.session.delete(user)
        db.session.delete(team)
        db.session.commit()
    ops = outbox_of(db_app).operations
    assert [(op.kind, op.payload["identification"]) for op in ops] == [
        ("delete_user", {"userId": "1"}),
        ("delete_account", {"accountId": "1"}),
    ]


def test_membership_changes_become_grouped_add_and_remove_calls(db_app: Flask) -> None:
    with db_app.app_context():
        ada, bob, cy = User(email="ada@acme.test"), User(email="bob@acme.test"), User(email="cy@acme.test")
        team = Team(name="Acme", members=[ada, bob])
        db.session.add_all([team, cy])
        db.session.commit()
        created = outbox_of(db_app).of_kind("add_users_to_account")
        assert len(created) == 1
        assert created[0].payload["account"] == {"accountId": "1"}
        assert sorted(u["identification"]["userId"] for u in created[0].payload["users"]) == ["1", "2"]
        outbox_of(db_app).clear()

        team.members.remove(bob)
        db.session.commit()
        db.session.expire_all()
        cy.teams.append(team)  # from the other side of the relationship, team.members not loaded
        db.session.commit()
    removed = outbox_of(db_app).of_kind("remove_users_from_account")
    added = outbox_of(db_app).of_kind("add_users_to_account")
    assert [u["identification"] for u in removed[0].payload["users"]] == [{"userId": "2"}]
    assert [u["identification"] for u in added[0].payload["users"]] == [{"userId": "3"}]
    assert outbox_of(db_app).of_kind("upsert_account") == []  # the team's own columns did not change


def test_a_rolled_back_savepoint_drops_only_its_own_changes(db_app: Flask) -> None:
    with db_app.app_context():
        db.session.add(User(email="kept@acme.test"))
        db.session.flush()
        savepoint = db.session.begin_nested()
        db.session.add(User(email="dropped@acme.test"))
        db.session.flush()
        savepoint.rollback()
        with db.session.begin_nested():
            db.session.add(Team(name="Released"))
        db.session.commit()
    assert [u["identification"]["email"] for u in outbox_of(db_app).users()] == ["kept@acme.test"]
    assert [a["properties"]["name"] for a in outbox_of(db_app).accounts()] == ["Released"]


def test_a_released_savepoint_is_sent_with_the_outer_commit_and_not_when_it_is_released(db_app: Flask) -> None:
    with db_app.app_context():
        db.session.add(User(email="outer@acme.test"))
        db.session.flush()
        with db.session.begin_nested():  # SQLAlchemy reports this RELEASE SAVEPOINT as an after_commit
            db.session.add(Team(name="Inner"))
        assert outbox_of(db_app).operations == []
        db.session.rollback()
        db.session.add(User(email="later@acme.test"))
        db.session.commit()
    assert [u["identification"]["email"] for u in outbox_of(db_app).users()] == ["later@acme.test"]
    assert outbox_of(db_app).accounts() == []


def test_rolling_back_a_savepoint_drops_the_savepoints_released_inside_it(db_app: Flask) -> None:
    with db_app.app_context():
        outer = db.session.begin_nested()
        db.session.add(User(email="outer@acme.test"))
        with db.session.begin_nested():
            db.session.add(User(email="inner@acme.test"))
        outer.rollback()
        db.session.add(User(email="kept@acme.test"))
        db.session.commit()
    assert [u["identification"]["email"] for u in outbox_of(db_app).users()] == ["kept@acme.test"]


def test_changes_across_savepoints_are_queued_in_the_order_they_were_made(db_app: Flask) -> None:
    with db_app.app_context():
        ada = User(email="ada@acme.test")
        db.session.add(ada)
        db.session.commit()
        outbox_of(db_app).clear()
        db.session.add(Team(name="First"))
        db.session.flush()
        with db.session.begin_nested():
            ada.plan = "pro"
            with db.session.begin_nested():
                db.session.add(Team(name="Third"))
        db.session.delete(ada)
        db.session.commit()
    assert [(op.kind, op.payload["identification"]) for op in outbox_of(db_app).operations] == [
        ("upsert_account", {"accountId": "1"}),
        ("delete_user", {"userId": "1"}),  # the upsert of the same commit is replaced, as without savepoints
        ("upsert_account", {"accountId": "2"}),
    ]


def test_after_commit_reads_no_instance_so_runs_no_sql(db_app: Flask) -> None:
    statements: list[str] = []
    in_commit = []

    with db_app.app_context():
        engine = db.engine

        def watch(conn: object, cursor: object, statement: str, *args: object) -> None:
            if in_commit:
                statements.append(statement)

        event.listen(engine, "before_cursor_execute", watch)
        session = db.session()
        event.listen(session, "after_commit", lambda s: in_commit.append(True))
        try:
            user = User(email="ada@acme.test")
            db.session.add(user)
            db.session.commit()  # expires user; the hook must not reload it
        finally:
            event.remove(engine, "before_cursor_execute", watch)
    assert len(outbox_of(db_app).users()) == 1
    assert statements == []


def test_paused_sync_records_nothing_and_is_a_decorator_too(app: Flask) -> None:
    with app.app_context():
        with pause_sync():
            db.session.add(User(email="imported@acme.test"))
            db.session.commit()

        @pause_sync()
        def seed() -> None:
            db.session.add(Team(name="Seeded"))
            db.session.commit()

        seed()
        db.session.add(User(email="live@acme.test"))
        db.session.commit()
    assert [u["identification"]["email"] for u in outbox_of(app).users()] == ["live@acme.test"]
    assert outbox_of(app).accounts() == []


def test_an_object_can_opt_out_of_sync(app: Flask) -> None:
    with app.app_context():
        db.session.add(User(email="private@acme.test", opted_out=True))
        db.session.commit()
    assert outbox_of(app).operations == []


def test_errors_in_the_hooks_never_reach_commit(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    def broken(user: object) -> dict[str, object]:
        raise RuntimeError("boom in the property map")

    from journy_core.mapping import PropertyMap

    state = app.extensions["journy"]
    state.settings = dataclasses.replace(state.settings, user_properties=PropertyMap(broken, "X"))
    with app.app_context(), caplog.at_level(logging.WARNING, logger="journy"):
        db.session.add(User(email="ada@acme.test"))
        db.session.commit()  # must not raise
        assert db.session.query(User).count() == 1
    assert "error while syncing tests.flask.conftest.User (id 1) to journy.io; skipped it alone" in caplog.text
    assert outbox_of(app).operations == []


def test_one_object_whose_properties_fail_is_skipped_alone_and_the_rest_of_its_commit_is_sent(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    def fussy(user: object) -> dict[str, object]:
        if getattr(user, "email", "").startswith("broken"):
            raise AttributeError("'User' object has no attribute 'nickname'")
        return {"plan": "pro"}

    from journy_core.mapping import PropertyMap

    state = app.extensions["journy"]
    state.settings = dataclasses.replace(state.settings, user_properties=PropertyMap(fussy, "X"))
    with app.app_context(), caplog.at_level(logging.WARNING, logger="journy"):
        team = Team(name="Acme")
        db.session.add_all([User(email="ada@acme.test"), User(email="broken@acme.test"), team])
        db.session.commit()
    users = outbox_of(app).users()
    assert [user["identification"]["email"] for user in users] == ["ada@acme.test"]
    assert "account" in {op.kind.split("_")[-1] for op in outbox_of(app).operations}
    assert "tests.flask.conftest.User (id 2)" in caplog.text and "nickname" in caplog.text


def test_a_property_map_naming_an_attribute_the_model_lacks_fails_init_app_naming_both() -> None:
    from journy_core import ConfigurationError

    from .conftest import build_app

    with pytest.raises(ConfigurationError, match=r"JOURNY_USER_PROPERTIES reads 'nickname'.*conftest.User"):
        build_app(JOURNY_USER_PROPERTIES=["full_name", "nickname"])


@pytest.mark.parametrize(
    ("key", "model"),
    [
        ("JOURNY_USER_ID", "User"),
        ("JOURNY_USER_EMAIL", "User"),
        ("JOURNY_ACCOUNT_ID", "Team"),
        ("JOURNY_ACCOUNT_DOMAIN_FIELD", "Team"),
    ],
)
def test_an_id_email_or_domain_attribute_the_model_lacks_fails_init_app_naming_both(key: str, model: str) -> None:
    from journy_core import ConfigurationError

    from .conftest import build_app

    with pytest.raises(ConfigurationError, match=rf"{key}='websight': tests.flask.conftest.{model} does not have"):
        build_app(**{key: "websight"})


def test_sync_sends_an_object_now_with_its_members(app: Flask) -> None:
    journy = app.extensions["journy"]
    with app.app_context(), pause_sync():
        team = Team(name="Acme", members=[User(email="ada@acme.test")])
        db.session.add(team)
        db.session.commit()
        Journy().sync(team)
        with pytest.raises(TypeError, match="JOURNY_USER_MODEL"):
            Journy().sync(object())
    assert journy.settings.account_members == "members"
    assert [op.kind for op in outbox_of(app).operations] == ["upsert_account", "add_users_to_account"]


def test_a_one_to_many_membership_is_tracked_through_the_relationship() -> None:
    engine = create_engine("sqlite://")
    OwnBase.metadata.create_all(engine)
    factory = sessionmaker(engine)
    app = Flask("one_to_many")
    app.config.update(
        JOURNY_QUEUE={"BACKEND": "memory"},
        JOURNY_SESSION=factory,
        JOURNY_USER_MODEL=Person,
        JOURNY_ACCOUNT_MODEL=Org,
        JOURNY_ACCOUNT_MEMBERS="people",
    )
    Journy(app)
    with app.app_context(), factory() as session:
        org = Org(name="Acme")
        ada = Person(email="ada@acme.test")
        session.add_all([org, ada])
        session.commit()
        outbox_of(app).clear()
        ada.org = org  # from the "many" side, org.people not loaded
        session.commit()
        ada.org = None
        session.commit()
    added, removed = outbox_of(app).operations
    assert (added.kind, removed.kind) == ("add_users_to_account", "remove_users_from_account")
    assert added.payload["users"] == removed.payload["users"] == [{"identification": {"userId": "1"}}]


def test_hook_errors_are_loud_in_debug_mode(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    from journy_core.mapping import PropertyMap

    def broken(user: object) -> dict[str, object]:
        raise RuntimeError("boom")

    state = app.extensions["journy"]
    state.debug = True  # what Journy(app) reads from app.debug
    state.settings = dataclasses.replace(state.settings, user_properties=PropertyMap(broken, "X"))
    with app.app_context(), caplog.at_level(logging.WARNING, logger="journy"):
        db.session.add(User(email="ada@acme.test"))
        db.session.commit()
    assert [record.levelname for record in caplog.records] == ["ERROR"]


def test_a_class_seen_before_is_identified_the_same_way_again() -> None:
    """The table of default readers is a shortcut: the second object of a class gives what the first did."""
    from journy_flask.identities import _identify

    @dataclasses.dataclass
    class Thing:
        id: object

    for value, expected in ((7, "7"), (None, None), (True, None), (False, None), ("a", "a")):
        assert _identify(Thing(value), None) == expected
        assert _identify(Thing(value), None) == expected  # the class is known now
    assert _identify(None, None) is None
    assert _identify(True, None) is None
    assert _identify(5, None) == "5"


def test_pause_sync_is_the_one_rule_in_journy_core() -> None:
    from journy_core.pausing import pause_sync as core_pause_sync

    assert pause_sync is core_pause_sync
