"""No secret in a Flask app's error reports: Werkzeug's debugger page, the ``repr`` of the settings, the state and
the config, and the log, with distinctive values of ``JOURNY_API_KEY`` and ``JOURNY_VERIFICATION_SECRET``."""

from __future__ import annotations

import logging
import pprint
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.debug import DebuggedApplication
from werkzeug.test import Client

from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY, Emulator
from journy_flask import Journy
from journy_flask.state import get_state
from tests.core.test_secrets import KEY, SECRET, held, leaked, log_report

from .conftest import User, build_app, db


def bad_user_properties(user: Any) -> dict[str, object]:
    """JOURNY_USER_PROPERTIES returning what no property can hold: the snippet's rendering fails deep inside."""
    return {"preferences": {"theme": "dark"}}


def debugger_page(build: Callable[[], Flask], path: str) -> str:
    """The page Werkzeug's debugger (``flask run --debug``, evalex off) serves for ``path``; the app is built on
    the first request, as ``flask run`` does, so that an error at start-up shows there too."""

    def lazy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return build()(environ, start_response)

    response = Client(DebuggedApplication(lazy, evalex=False)).get(path)
    assert response.status_code == 500
    return response.get_data(as_text=True)


def direct_app(key: object) -> Flask:
    """An app with ``key`` whose view calls journy.io directly with the app's client (``flask journy check``'s)."""
    app = Flask("direct")
    app.config.update(JOURNY_API_KEY=key, JOURNY_API_URL="http://127.0.0.1:9", JOURNY_QUEUE={"BACKEND": "sync"})
    app.debug = True
    Journy(app)

    @app.get("/direct")
    def direct() -> str:
        get_state().client().track("exported_report", user_id="1")
        return "sent"

    return app


@pytest.mark.parametrize(
    ("key", "problem"),
    [(KEY + "\nX-Injected: 1", "line break"), (KEY.encode(), "got bytes")],
    ids=["line-break", "bytes"],
)
def test_debugger_page_of_an_app_with_a_broken_key_says_what_is_wrong_not_what_it_is(key: object, problem: str) -> None:
    page = debugger_page(lambda: direct_app(key), "/direct")
    assert "JOURNY_API_KEY" in page and problem in page
    assert leaked(page) == []


def test_debugger_page_of_a_view_whose_journy_call_raises_shows_neither_key_nor_secret() -> None:
    def build() -> Flask:
        app = build_app(JOURNY_API_KEY=KEY, JOURNY_VERIFICATION_SECRET=SECRET)
        app.debug = True

        @app.get("/track")
        def track() -> str:
            app.extensions["journy"].journy.track("exported_report")  # neither a user nor an account
            return "unreachable"

        return app

    page = debugger_page(build, "/track")
    assert "InvalidArgumentError" in page
    assert leaked(page) == []


def _drop(app: Flask) -> None:
    get_state(app).journy.close(timeout=2)
    with app.app_context():
        db.session.remove()
        db.drop_all()


def test_settings_state_and_config_hold_the_secrets_only_redacted() -> None:
    app = build_app(
        JOURNY_API_KEY=KEY,
        JOURNY_VERIFICATION_SECRET=SECRET,
        JOURNY_API_URL="http://127.0.0.1:9",
        JOURNY_QUEUE={"BACKEND": "thread"},
    )
    try:
        state = get_state(app)
        assert state.settings.api_key == KEY and state.settings.verification_secret == SECRET  # the values, as str
        assert app.config["JOURNY_API_KEY"] == KEY
        for obj in (state, state.settings, state.journy, state.journy.backend, state.client()):
            assert leaked(held(obj)) == [], type(obj)
        assert leaked(pprint.pformat(state.settings)) == []
        assert leaked(repr(app.config)) == []  # a variable of many frames, Flask's and the app's
    finally:
        _drop(app)


@pytest.fixture
def emulator_knows_the_key(emulator: Emulator) -> Iterator[Emulator]:
    emulator.configure(api_keys={KEY: ALL_PERMISSIONS})
    yield emulator
    emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})


def _logged_in_page(app: Flask) -> str:
    client = app.test_client()
    with app.app_context():
        ada = User(email="ada@acme.test", full_name="Ada")
        db.session.add(ada)
        db.session.commit()  # synced to journy.io
        ada_id = ada.id
    client.post(f"/login/{ada_id}")
    return client.get("/page").get_data(as_text=True)


def test_no_log_record_at_debug_carries_the_key_or_the_secret(
    emulator_knows_the_key: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = emulator_knows_the_key
    caplog.set_level(logging.DEBUG)
    secrets = {"JOURNY_API_KEY": KEY, "JOURNY_VERIFICATION_SECRET": SECRET, "JOURNY_API_URL": emulator.url}
    app = build_app(**secrets, JOURNY_QUEUE={"BACKEND": "thread"})
    broken = build_app(**secrets, JOURNY_USER_PROPERTIES=bad_user_properties)
    try:
        assert "verification" in _logged_in_page(app)
        journy = get_state(app).journy
        journy.track("exported_report", user_id="1")
        assert journy.flush(timeout=10)
        emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})  # the key is now refused: 401
        journy.track("failed_with_401", user_id="1")
        assert journy.flush(timeout=10)
        assert "could not be rendered" in _logged_in_page(broken)  # logged with its traceback
    finally:
        _drop(app)
        _drop(broken)
    assert "exported_report" in [e["name"] for e in emulator.state()["events"]]  # the flow really ran
    assert any(r.levelno >= logging.WARNING and r.exc_info for r in caplog.records)
    assert leaked(log_report(caplog.records)) == []
