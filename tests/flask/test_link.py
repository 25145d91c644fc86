"""Linking the ``__journey`` cookie: at login, from a remembered session, on a later request, once per device."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from journy_flask import Journy
from journy_flask.hooks import SESSION_KEY

from .conftest import build_app, db, outbox_of


def links(app: Flask) -> list[dict[str, object]]:
    return [dict(op.payload) for op in outbox_of(app).of_kind("link")]


def test_login_links_the_device_once_per_session(app: Flask, add_user: Callable[..., int]) -> None:
    user_id = add_user()
    client = app.test_client()
    client.set_cookie("__journey", "device-1")
    client.post(f"/login/{user_id}")
    client.get("/page")
    client.get("/plain")
    assert links(app) == [{"deviceId": "device-1", "identification": {"userId": "1", "email": "ada@acme.test"}}]


def test_a_cookie_set_after_login_is_linked_on_the_next_request(app: Flask, add_user: Callable[..., int]) -> None:
    user_id = add_user()
    client = app.test_client()
    client.post(f"/login/{user_id}")
    assert links(app) == []
    client.set_cookie("__journey", "device-2")
    client.get("/plain")
    client.get("/plain")
    assert [link["deviceId"] for link in links(app)] == ["device-2"]


@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")  # Flask-Login's, on 3.13
def test_a_remembered_session_links_the_device(app: Flask, add_user: Callable[..., int]) -> None:
    user_id = add_user()
    client = app.test_client()
    client.post(f"/login/{user_id}?remember=1")
    remember = client.get_cookie("remember_token")
    assert remember is not None
    fresh = app.test_client()  # a new browser session that only has the remember-me cookie
    fresh.set_cookie("remember_token", remember.value)
    fresh.set_cookie("__journey", "device-3")
    outbox_of(app).clear()
    assert fresh.get("/page").status_code == 200
    assert [link["deviceId"] for link in links(app)] == ["device-3"]


def test_another_user_logging_in_on_the_same_device_is_linked_too(app: Flask, add_user: Callable[..., int]) -> None:
    first, second = add_user(), add_user(email="bob@acme.test")
    client = app.test_client()
    client.set_cookie("__journey", "shared-device")
    client.post(f"/login/{first}")
    client.post("/logout")
    client.post(f"/login/{second}")
    assert [link["identification"]["userId"] for link in links(app)] == ["1", "2"]  # type: ignore[index]


def test_a_second_user_logging_in_within_the_session_gets_its_own_link(
    app: Flask, add_user: Callable[..., int]
) -> None:
    first, second = add_user(), add_user(email="bob@acme.test")
    client = app.test_client()
    client.set_cookie("__journey", "shared-device")
    client.post(f"/login/{first}")
    client.post(f"/login/{second}")  # no logout: login_user() replaces the user, the session's data stays
    client.get("/plain")
    with client.session_transaction() as session:
        assert session[SESSION_KEY] == f"{second}\nshared-device"  # journy_core.linking's record: who, then devices
    assert [link["identification"]["userId"] for link in links(app)] == ["1", "2"]  # type: ignore[index]


@pytest.mark.parametrize("old_key", ["_journy", "_journy_linked_devices"])
def test_a_session_from_an_older_version_links_its_device_once_more(
    app: Flask, add_user: Callable[..., int], old_key: str
) -> None:
    user_id = add_user()
    client = app.test_client()
    client.post(f"/login/{user_id}")
    with client.session_transaction() as session:
        session[old_key] = f"{user_id}\ndevice-1" if old_key == "_journy" else ["device-1"]
    client.set_cookie("__journey", "device-1")
    client.get("/plain")
    client.get("/plain")
    assert [link["deviceId"] for link in links(app)] == ["device-1"]


def test_untrusted_cookie_values_are_never_linked(app: Flask, add_user: Callable[..., int]) -> None:
    user_id = add_user()
    for value in ["", "a;b", "x" * 500, "bad\x01value"]:
        client = app.test_client()
        client.set_cookie("__journey", value)
        client.post(f"/login/{user_id}")
        client.get("/plain")
    assert links(app) == []


def test_anonymous_visitors_with_a_cookie_are_not_linked(app: Flask) -> None:
    client = app.test_client()
    client.set_cookie("__journey", "device-4")
    client.get("/plain")
    assert links(app) == []


def test_internal_ips_and_the_skip_filter_are_not_linked(add_user: Callable[..., int]) -> None:
    for overrides in ({"JOURNY_INTERNAL_IPS": ["127.0.0.0/8"]}, {"JOURNY_SKIP_REQUEST": lambda user: True}):
        app = build_app(**overrides)
        with app.app_context():
            from .conftest import User

            db.session.add(User(email="ada@acme.test"))
            db.session.commit()
        client = app.test_client()
        client.set_cookie("__journey", "device-5")
        client.post("/login/1")
        client.get("/plain")
        assert links(app) == [], overrides
        assert "skipped" in client.get("/page").text


def test_apps_without_flask_login_link_by_hand() -> None:
    app = build_app(login=False, JOURNY_USER_MODEL=None, JOURNY_ACCOUNT_MODEL=None, JOURNY_ACCOUNT_MEMBERS=None)
    journy = Journy()

    @app.post("/signin")
    def signin() -> str:
        return "linked" if journy.link(user_id=42, email="ada@acme.test") else "not linked"

    client = app.test_client()
    client.set_cookie("__journey", "device-6")
    assert client.post("/signin").text == "linked"
    assert client.post("/signin").text == "not linked"  # once per session and device
    assert links(app) == [{"deviceId": "device-6", "identification": {"userId": "42", "email": "ada@acme.test"}}]


def test_link_takes_an_explicit_request_outside_flask_request_handling(app: Flask) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    request = Request(EnvironBuilder(headers={"Cookie": "__journey=device-7"}).get_environ())
    with app.app_context():
        assert Journy().link(user_id="9", request=request) is True
    assert [link["deviceId"] for link in links(app)] == ["device-7"]


def test_requests_without_the_cookie_do_not_touch_the_session(app: Flask, add_user: Callable[..., int]) -> None:
    user_id = add_user()
    client = app.test_client()
    client.post(f"/login/{user_id}")
    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers  # the per-request check left the session alone
    assert links(app) == []
