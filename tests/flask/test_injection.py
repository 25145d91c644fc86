"""``JOURNY_INJECT_SNIPPET``: pages whose templates do not call ``journy_snippet()`` get the snippet all the same."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask, Response, jsonify, render_template_string, stream_with_context

from journy_core import verification_hash

from .conftest import PAGE, SECRET, build_app, db
from .test_snippet import calls, logged_in

BARE = "<!doctype html><html><head><title>{{ current_user.email }}</title></head><body>hi</body></html>"


def injecting_app(**overrides: object) -> Flask:
    app = build_app(JOURNY_INJECT_SNIPPET=True, **overrides)

    @app.get("/bare")
    def bare() -> str:
        return render_template_string(BARE)

    @app.get("/json")
    def as_json() -> Response:
        return jsonify(html="<html><head></head></html>")

    @app.get("/stream")
    def streamed() -> Response:
        return Response(stream_with_context(iter(["<html><head>", "</head></html>"])), mimetype="text/html")

    return app


@pytest.fixture
def app() -> Iterator[Flask]:
    app = injecting_app()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()


def test_a_page_rendered_from_a_string_without_the_tag_gets_the_verified_snippet(app: Flask) -> None:
    client, user_id, _ = logged_in(app)
    response = client.get("/bare")
    html = response.text
    assert html.index("window.journy=") < html.index("</head>")
    assert calls(html)["identify"]["verification"] == verification_hash(SECRET, str(user_id))
    assert response.headers["Content-Length"] == str(len(response.data))


def test_a_page_whose_template_calls_the_snippet_has_it_once(app: Flask) -> None:
    client, _, team_id = logged_in(app)
    assert client.get(f"/page?team={team_id}").text.count("window.journy=") == 1


def test_json_and_streamed_responses_are_left_as_they_are(app: Flask) -> None:
    client, _, _ = logged_in(app)
    assert "window.journy" not in client.get("/json").text
    assert client.get("/stream").text == "<html><head></head></html>"


def test_without_the_option_a_page_without_the_tag_has_no_snippet() -> None:
    app = build_app()

    @app.get("/bare")
    def bare() -> str:
        return render_template_string(BARE)

    client, _, _ = logged_in(app)
    assert "window.journy" not in client.get("/bare").text
    assert PAGE  # the same app serves the tag's page: the option alone decides


def test_a_failure_while_injecting_leaves_the_page_intact_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken_account() -> None:
        raise RuntimeError("the account lookup failed")

    app = injecting_app(JOURNY_CURRENT_ACCOUNT=broken_account)
    client, _, _ = logged_in(app)
    with caplog.at_level(logging.ERROR, logger="journy"):
        response = client.get("/bare")
    assert response.status_code == 200
    assert response.text == "<!doctype html><html><head><title>ada@acme.test</title></head><body>hi</body></html>"
    assert any("the account lookup failed" in (record.exc_text or "") for record in caplog.records)
