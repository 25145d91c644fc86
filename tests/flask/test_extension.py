"""The extension surface: init_app, defaults, factories, configuration errors, track and the testing fixture."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_sqlalchemy import SQLAlchemy

from journy_core import ConfigurationError, InvalidArgumentError
from journy_core.testing import Outbox
from journy_core.worker import worker_client
from journy_flask import DEFAULTS, Journy, JournyState
from journy_flask.testing import capture_operations

from .conftest import Team, User, build_app, db, outbox_of


def bare_app(**config: Any) -> Flask:
    app = Flask("bare")
    app.config.update(config)
    return app


def test_init_app_sets_every_default_and_keeps_state_on_the_app_not_the_extension() -> None:
    journy = Journy()
    app = bare_app(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_ENABLED=True)
    journy.init_app(app)
    assert isinstance(app.extensions["journy"], JournyState)
    assert {key: app.config[key] for key in DEFAULTS if key != "JOURNY_QUEUE"} == {
        key: value for key, value in DEFAULTS.items() if key != "JOURNY_QUEUE"
    }
    assert not hasattr(journy, "app")
    assert "journy_snippet" in app.jinja_env.globals
    assert "journy" in app.cli.commands


def test_one_extension_serves_several_apps_each_with_its_own_queue() -> None:
    journy = Journy()
    first, second = bare_app(JOURNY_QUEUE={"BACKEND": "memory"}), bare_app(JOURNY_QUEUE={"BACKEND": "memory"})
    journy.init_app(first)
    journy.init_app(second)
    with first.app_context():
        journy.track("signed_in", user="1")
    with second.app_context():
        journy.track("signed_in", user="2")
    assert [op.payload["identification"] for op in outbox_of(first).operations] == [{"user": {"userId": "1"}}]
    assert [op.payload["identification"] for op in outbox_of(second).operations] == [{"user": {"userId": "2"}}]


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({}, "JOURNY_API_KEY"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_TRACKER_ID": "t"}, "JOURNY_TRACKER_DOMAIN"),
        (
            {"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_TRACKER_ID": "t", "JOURNY_TRACKER_DOMAIN": "ftp://x"},
            "JOURNY_TRACKER_DOMAIN",
        ),
        ({"JOURNY_QUEUE": {"BACKEND": "nope"}}, "JOURNY_QUEUE"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_USER_MODEL": "myapp.models.Nope"}, "JOURNY_USER_MODEL"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_CURRENT_ACCOUNT": "os.path.nope"}, "JOURNY_CURRENT_ACCOUNT"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_USER_MODEL": User}, "db.init_app(app)"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_ACCOUNT_MEMBERS": "members"}, "JOURNY_ACCOUNT_MODEL"),
        (
            {"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_ACCOUNT_MODEL": Team, "JOURNY_ACCOUNT_MEMBERS": "people"},
            "JOURNY_ACCOUNT_MEMBERS",
        ),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_INTERNAL_IPS": ["10.0.0.300"]}, "JOURNY_INTERNAL_IPS"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_APIKEY": "typo"}, "JOURNY_APIKEY"),
        ({"JOURNY_QUEUE": {"BACKEND": "memory"}, "JOURNY_WEBSITE_DOMAIN": "acme.com"}, "JOURNY_API_KEY"),
        ({"JOURNY_API_KEY": "k", "JOURNY_API_URL": "http://journy.example.com"}, "JOURNY_API_URL"),
    ],
)
def test_a_configuration_error_at_init_app_names_what_to_set(config: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names.replace("(", r"\(").replace(")", r"\)")):
        Journy(bare_app(**config))


def test_tracking_can_be_switched_off_without_an_api_key() -> None:
    app = bare_app(JOURNY_ENABLED=False)
    Journy(app)
    with app.app_context():
        Journy().track("signed_in", user="1")  # validated, then dropped
        assert app.extensions["journy"].journy.backend.name == "disabled"


def test_initialising_twice_is_an_error() -> None:
    app = bare_app(JOURNY_QUEUE={"BACKEND": "memory"})
    Journy(app)
    with pytest.raises(RuntimeError, match="once per app"):
        Journy(app)


def test_a_quart_app_is_refused_at_init_app_by_name() -> None:
    quart = pytest.importorskip("quart", reason="Quart is in the dev extra")
    app = quart.Quart("quart_app")
    with pytest.raises(ConfigurationError, match=r"Quart app: Quart is not supported") as info:
        Journy(app)  # type: ignore[arg-type]
    assert "journy_core.Journy" in str(info.value)
    assert "journy" not in app.extensions


def test_something_that_is_not_a_flask_app_is_refused_at_init_app() -> None:
    with pytest.raises(ConfigurationError, match=r"needs a flask.Flask app, got builtins.dict"):
        Journy().init_app({})  # type: ignore[arg-type]


def test_track_in_a_request_defaults_to_the_current_user_and_account(app: Flask) -> None:
    journy = Journy()

    @app.post("/invoice")
    def invoice() -> str:
        journy.track("created_invoice", metadata={"amount": 100})
        return "ok"

    with app.app_context():
        user = User(email="ada@acme.test")
        team = Team(name="Acme", members=[user])
        db.session.add(team)
        db.session.commit()
    client = app.test_client()
    client.post("/login/1")
    client.post("/invoice?team=1")
    (event,) = outbox_of(app).events("created_invoice")
    assert event.payload["identification"] == {"user": {"userId": "1"}, "account": {"accountId": "1"}}
    assert event.payload["metadata"] == {"amount": 100}


def test_track_outside_a_request_takes_instances_or_ids(app: Flask) -> None:
    journy = Journy()
    with app.app_context():
        team = Team(name="Acme")
        db.session.add(team)
        db.session.commit()
        journy.track("renewed", account=team, triggered_at=datetime(2024, 5, 1, tzinfo=timezone.utc))
        journy.track("exported", user=42, account=None)
        with pytest.raises(InvalidArgumentError, match="user_id"):
            journy.track("nobody", user=None, account=None)
    renewed, exported = outbox_of(app).events()
    assert renewed.payload["identification"] == {"account": {"accountId": "1"}}
    assert renewed.payload["triggeredAt"] == "2024-05-01T00:00:00+00:00"
    assert exported.payload["identification"] == {"user": {"userId": "42"}}


def test_the_api_needs_an_app_context_and_says_so() -> None:
    with pytest.raises(RuntimeError, match="application context"):
        Journy().track("signed_in", user="1")


def test_workers_of_this_app_build_their_client_from_its_config() -> None:
    app = bare_app(JOURNY_API_KEY="worker-key", JOURNY_API_URL="http://127.0.0.1:9", JOURNY_QUEUE={"BACKEND": "memory"})
    Journy(app)
    client = worker_client()
    assert client.base_url == "http://127.0.0.1:9"


def test_the_fixture_switches_to_memory_and_restores_the_queue(journy_outbox: Outbox, app: Flask) -> None:
    with app.app_context():
        Journy().track("signed_in", user="1")
    assert [op.payload["name"] for op in journy_outbox.events()] == ["signed_in"]


def test_capture_operations_records_even_when_the_app_disables_tracking() -> None:
    app = build_app(JOURNY_ENABLED=False)
    before = app.extensions["journy"].journy
    with capture_operations(app) as outbox, app.app_context():
        db.session.add(User(email="ada@acme.test"))
        db.session.commit()
    assert [u["identification"]["email"] for u in outbox.users()] == ["ada@acme.test"]
    assert app.extensions["journy"].journy is before


def test_a_plain_sqlalchemy_session_is_watched_through_journy_session(tmp_path: Any) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from .conftest import Base

    engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    app = bare_app(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_USER_MODEL=User, JOURNY_SESSION=factory)
    Journy(app)
    with factory() as session:  # no app context: the hooks find the app that attached them
        session.add(User(email="plain@acme.test"))
        session.commit()
    assert [u["identification"]["email"] for u in outbox_of(app).users()] == ["plain@acme.test"]


def test_flask_sqlalchemy_installed_but_not_initialised_is_fine_without_models() -> None:
    SQLAlchemy()  # present, never init_app'ed
    app = bare_app(JOURNY_QUEUE={"BACKEND": "memory"})
    Journy(app)
    assert app.extensions["journy"].syncs_models is False


def test_an_app_without_journy_sharing_the_db_sends_nothing_through_another_app() -> None:
    with_journy = build_app()
    without = Flask("no_journy")
    without.config.update(SQLALCHEMY_DATABASE_URI="sqlite://")
    db.init_app(without)
    with without.app_context():
        db.create_all()
        db.session.add(User(email="elsewhere@acme.test"))
        db.session.commit()
    assert outbox_of(with_journy).operations == []


def test_a_misspelt_key_fails_init_app_suggesting_the_right_name() -> None:
    with pytest.raises(ConfigurationError, match=r"JOURNY_TRACKER_DOMIAN: did you mean JOURNY_TRACKER_DOMAIN\?"):
        Journy(bare_app(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_TRACKER_DOMIAN="https://go.acme.test"))
    with pytest.raises(ConfigurationError, match="JOURNY_SKIP_IMPERSONATED is a Django option"):
        Journy(bare_app(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_SKIP_IMPERSONATED=True))


def test_timeout_reaches_the_workers_client() -> None:
    app = bare_app(JOURNY_API_KEY="worker-key", JOURNY_QUEUE={"BACKEND": "sync"}, JOURNY_TIMEOUT=(1.5, 3))
    Journy(app)
    assert worker_client().timeout == (1.5, 3.0)


def test_on_failure_is_called_for_a_call_journy_refuses(emulator: Any) -> None:
    failures: list[tuple[Any, BaseException]] = []
    app = bare_app(
        JOURNY_API_KEY="sk_not_a_key_the_emulator_knows",
        JOURNY_API_URL=emulator.url,
        JOURNY_QUEUE={"BACKEND": "sync"},
        JOURNY_ON_FAILURE=lambda operation, error: failures.append((operation, error)),
    )
    journy = Journy(app)
    with app.app_context():
        journy.track("signed_in", user="1")
    assert [operation.kind for operation, _ in failures] == ["track"]
    assert "401" in str(failures[0][1])


def test_skip_request_and_skip_staff_leave_the_user_out_of_the_page() -> None:
    def logged_in_page(app: Flask, **fields: Any) -> str:
        with app.app_context():
            user = User(email="ada@acme.test", **fields)
            db.session.add(user)
            db.session.commit()
            user_id = user.id
        client = app.test_client()
        client.post(f"/login/{user_id}")
        return client.get("/page?internal=1").text

    by_request = build_app(JOURNY_SKIP_REQUEST=lambda request: request.args.get("internal") == "1")
    assert "identify" not in logged_in_page(by_request)
    staff = build_app(JOURNY_SKIP_STAFF=True)
    User.is_staff = property(lambda user: user.plan == "staff")  # type: ignore[attr-defined]
    try:
        assert "identify" not in logged_in_page(staff, plan="staff")
        assert "identify" in logged_in_page(staff, plan="pro")
    finally:
        del User.is_staff  # type: ignore[attr-defined]


def test_send_pageview_false_leaves_the_page_view_out_unless_the_template_asks() -> None:
    app = build_app(JOURNY_SEND_PAGEVIEW=False)
    with app.test_request_context("/"):
        assert 'journy("pageview"' not in render_template_string("{{ journy_snippet() }}")
        assert 'journy("pageview"' in render_template_string("{{ journy_snippet(pageview=True) }}")
    assert 'journy("pageview"' not in app.test_client().get("/page").text


@pytest.mark.parametrize("url", ["ftp://api.example.com", "http://api.example.com"])
def test_a_bad_api_url_in_the_app_config_is_refused_naming_the_setting_not_the_environment_variable(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNY_API_URL", raising=False)
    app = Flask(__name__)
    app.config.update(JOURNY_API_KEY="key", JOURNY_API_URL=url)
    with pytest.raises(ConfigurationError) as refused:
        Journy(app)
    assert str(refused.value).startswith("JOURNY_API_URL: ")  # the setting, not "QUEUE", nor "environment variable"
    assert "environment variable" not in str(refused.value)


@pytest.mark.parametrize("session", [123, "builtins.len"])
def test_a_journy_session_that_is_not_a_session_factory_is_refused_naming_the_setting(session: object) -> None:
    app = bare_app(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_USER_MODEL=User, JOURNY_SESSION=session)
    with pytest.raises(ConfigurationError, match=r"^JOURNY_SESSION must be a SQLAlchemy sessionmaker"):
        Journy(app)
