"""``{{ journy_snippet() }}`` and ``{% journy_event %}``: verification on the server, escaping, nonce, comments."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import flask_login
import pytest
from flask import Flask, render_template_string, request
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, login_user
from jinja2 import TemplateSyntaxError
from sqlalchemy.orm import defer

from journy_core import InvalidArgumentError, verification_hash
from journy_core.emulator import Emulator
from journy_flask import Journy
from journy_flask.fingerprints import page_fingerprint
from journy_flask.identities import account_id_of, is_authenticated, user_id_of
from journy_flask.snippet import render_page_snippet

from .conftest import PAGE, SECRET, Team, User, base_config, build_app, db


def calls(html: str) -> dict[str, Any]:
    """The journy(...) calls of a rendered snippet, by command."""
    found: dict[str, Any] = {}
    for command, args in re.findall(r'journy\("(\w+)"(?:, (\{.*?\}))?\);', html):
        found[command] = json.loads(args) if args else None
    return found


def logged_in(app: Flask, **user_fields: Any) -> Any:
    with app.app_context():
        user = User(email=user_fields.pop("email", "ada@acme.test"), **user_fields)
        team = Team(name="Acme <Corp>", plan="pro", members=[user])
        db.session.add(team)
        db.session.commit()
        user_id, team_id = user.id, team.id
    client = app.test_client()
    client.post(f"/login/{user_id}")
    return client, user_id, team_id


def test_the_snippet_identifies_the_user_and_account_with_server_side_hashes(app: Flask) -> None:
    client, user_id, team_id = logged_in(app, full_name="Ada")
    html = client.get(f"/page?team={team_id}").text
    found = calls(html)
    assert '<script async src="https://go.acme.test/tracker.js"></script>' in html
    assert found["init"] == {"trackerId": "tracker-1", "domain": "https://go.acme.test"}
    assert found["identify"]["userId"] == str(user_id)
    assert found["identify"]["verification"] == verification_hash(SECRET, str(user_id))
    assert found["identify"]["properties"]["full_name"] == "Ada"
    assert found["account"]["verification"] == verification_hash(SECRET, str(team_id))
    assert found["account"]["properties"] == {"name": "Acme <Corp>", "plan": "pro"}
    assert found["pageview"] == {"accountId": str(team_id), "verification": verification_hash(SECRET, str(team_id))}
    assert SECRET not in html


def test_user_controlled_values_cannot_end_the_script(app: Flask) -> None:
    client, _, team_id = logged_in(app, full_name="</script><script>alert(1)</script>\u2028")
    html = client.get(f"/page?team={team_id}").text
    assert "<script>alert(1)" not in html
    assert html.count("</script>") == 2  # the loader and the inline script, nothing else
    assert "\\u003c/script\\u003e" in html
    assert "Acme \\u003cCorp\\u003e" in html


@pytest.mark.parametrize(("stored", "sent"), [("  ada@acme.test \n", "ada@acme.test"), ("   ", None)])
def test_the_snippet_reads_the_email_as_the_sync_does(stored: str, sent: str | None) -> None:
    app = build_app()
    client, _, _ = logged_in(app, email=stored, full_name="Ada")
    assert calls(client.get("/page").text)["identify"].get("email") == sent


def test_a_page_with_a_nonce_comes_from_the_cache_with_its_own_nonce() -> None:
    nonces = iter(["n-one", "n-two"])
    app = build_app(JOURNY_CSP_NONCE=lambda: next(nonces))
    client, _, team_id = logged_in(app, full_name="Ada")
    first = client.get(f"/page?team={team_id}").text
    second = client.get(f"/page?team={team_id}").text
    assert len(Journy.state(app).snippet_cache) == 1
    assert second.count('nonce="n-two"') == 2
    assert second == first.replace('nonce="n-one"', 'nonce="n-two"')


def test_anonymous_pages_get_init_and_pageview_only(app: Flask) -> None:
    found = calls(app.test_client().get("/page").text)
    assert set(found) == {"init", "pageview"}


def test_disabled_tracking_renders_a_comment_saying_why() -> None:
    off = build_app(JOURNY_ENABLED=False)
    assert "<!-- journy.io tracking disabled: JOURNY_ENABLED is False -->" in off.test_client().get("/page").text
    untracked = build_app(JOURNY_TRACKER_ID=None, JOURNY_TRACKER_DOMAIN=None)
    html = untracked.test_client().get("/page").text
    assert "set JOURNY_TRACKER_ID and JOURNY_TRACKER_DOMAIN" in html
    assert "<script" not in html


def test_the_csp_nonce_comes_from_the_config_or_from_talisman(app: Flask) -> None:
    configured = build_app(JOURNY_CSP_NONCE=lambda: "n0nce")
    assert configured.test_client().get("/page").text.count('nonce="n0nce"') == 2
    # flask-talisman registers csp_nonce() as a Jinja global
    app.jinja_env.globals["csp_nonce"] = lambda: "t4lisman"
    assert app.test_client().get("/page").text.count('nonce="t4lisman"') == 2
    from_context = build_app()
    from_context.context_processor(lambda: {"csp_nonce": "c0ntext"})
    html = from_context.test_client().get("/page").text
    assert html.count('nonce="c0ntext"') == 2
    assert html.count("<script") == 2


def test_views_choose_a_screen_an_account_and_browser_events(app: Flask) -> None:
    journy = Journy()

    @app.get("/billing")
    def billing() -> str:
        journy.set_screen("Billing")
        journy.set_account(77)
        journy.browser_event("opened_billing", {"plan": "pro"})
        return render_template_string("{{ journy_snippet() }}")

    found = calls(app.test_client().get("/billing").text)
    with app.test_request_context("/"), pytest.raises(InvalidArgumentError, match="metadata"):
        journy.browser_event("bad", {"list": ["not", "allowed"]})
    assert "pageview" not in found
    assert found["screen"] == {"name": "Billing", "accountId": "77", "verification": verification_hash(SECRET, "77")}
    assert found["event"]["metadata"] == {"plan": "pro"}
    assert found["event"]["accountId"] == "77"


def test_the_event_tag_renders_its_own_script_anywhere(app: Flask) -> None:
    with app.test_request_context("/"):
        html = render_template_string('{% journy_event "opened_billing", {"seats": 3}, account=5 %}')
    found = calls(html)
    assert found["event"] == {
        "name": "opened_billing",
        "accountId": "5",
        "verification": verification_hash(SECRET, "5"),
        "metadata": {"seats": 3},
    }
    assert "window.journy=window.journy||" in html  # works even before the snippet's stub


@pytest.mark.parametrize(
    ("tag", "metadata"),
    [
        ('{% journy_event "opened_billing" %}', None),
        ('{% journy_event "opened_billing", plan="pro", seats=n %}', {"plan": "pro", "seats": 3}),
        ('{% journy_event "opened_billing", {"plan": "free", "seats": 1}, plan="pro" %}', {"plan": "pro", "seats": 1}),
    ],
)
def test_the_event_tag_takes_metadata_as_a_mapping_keywords_or_both(
    app: Flask, tag: str, metadata: dict[str, object] | None
) -> None:
    with app.test_request_context("/"):
        found = calls(render_template_string(tag, n=3))
    assert found["event"]["name"] == "opened_billing"
    assert found["event"].get("metadata") == metadata


def test_the_event_tag_with_bad_metadata_renders_a_comment_not_an_error(app: Flask) -> None:
    with app.test_request_context("/"):
        html = render_template_string('{% journy_event "opened_billing", ["not", "a", "mapping"] %}')
    assert html.startswith("<!-- journy.io: page event 'opened_billing' left out (metadata is invalid")
    assert "<script" not in html


def test_a_misplaced_event_tag_argument_is_a_template_syntax_error_naming_the_tag(app: Flask) -> None:
    with app.test_request_context("/"), pytest.raises(TemplateSyntaxError, match="journy_event takes a name"):
        render_template_string('{% journy_event "opened_billing", plan="pro", {"seats": 3} %}')


def test_the_extension_registers_one_jinja_global(app: Flask) -> None:
    """Jinja copies each global into every template context it renders: journy adds only journy_snippet."""
    bare = Flask("bare")
    added = set(app.jinja_env.globals) - set(bare.jinja_env.globals)
    assert added == {"journy_snippet"}


def test_a_broken_current_account_callable_never_breaks_the_page(add_user: Callable[..., int]) -> None:
    def broken() -> None:
        raise RuntimeError("no account here")

    app = build_app(JOURNY_CURRENT_ACCOUNT=broken)
    response = app.test_client().get("/page")
    assert response.status_code == 200
    assert "the snippet could not be rendered (see the log)" in response.text


def test_the_snippet_renders_outside_a_request(app: Flask) -> None:
    with app.app_context():
        html = render_template_string("{{ journy_snippet(screen='Email') }}")
    assert calls(html)["screen"] == {"name": "Email"}


def test_the_tracker_can_be_fetched_by_website_domain(emulator: Emulator) -> None:
    from journy_core.emulator import DEFAULT_API_KEY

    app = build_app(
        JOURNY_TRACKER_ID=None,
        JOURNY_TRACKER_DOMAIN=None,
        JOURNY_WEBSITE_DOMAIN="localhost",
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator.url,
    )
    client = app.test_client()
    first = _page_until(client, lambda html: "init" in calls(html))
    second = client.get("/page").text
    assert calls(first)["init"]["trackerId"] == "emulator-tracker"
    assert first == second
    assert len(emulator.calls("/tracking/snippet")) == 1  # fetched once, then cached


def _page_until(client: Any, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
    """The first ``/page`` whose HTML satisfies ``predicate``, asking again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        html: str = client.get("/page").text
        if predicate(html) or time.monotonic() > deadline:
            return html
        time.sleep(0.05)


def test_no_page_waits_for_a_slow_snippet_fetch(emulator: Emulator) -> None:
    from journy_core.emulator import DEFAULT_API_KEY

    emulator.configure(latency=4.0)
    app = build_app(
        JOURNY_TRACKER_ID=None,
        JOURNY_TRACKER_DOMAIN=None,
        JOURNY_WEBSITE_DOMAIN="localhost",
        JOURNY_API_KEY=DEFAULT_API_KEY,
        JOURNY_API_URL=emulator.url,
    )
    client = app.test_client()
    started = time.monotonic()
    first = client.get("/page")
    elapsed = time.monotonic() - started
    assert first.status_code == 200
    assert elapsed < 2.0, f"the first page waited {elapsed:.1f} s for journy.io"  # the API takes 4 s
    assert "<script" not in first.text
    assert "the snippet of 'localhost' is being fetched from journy.io" in first.text
    later = _page_until(client, lambda html: "init" in calls(html))
    assert calls(later)["init"]["trackerId"] == "emulator-tracker"


def test_browser_event_refuses_what_track_refuses_at_the_call_site(app: Flask) -> None:
    journy = Journy()
    cases: list[tuple[Any, Any, str]] = [
        ("opened", {"note": json.loads('"\\ud800"')}, "metadata['note']"),
        ("opened", {"count": 10**400}, "metadata['count']"),
        ("opened", {"tags": ["a", "b"]}, "metadata['tags']"),
        (json.loads('"opened\\udfff"'), None, "name"),
    ]
    with app.test_request_context("/"):
        for name, metadata, argument in cases:
            with pytest.raises(InvalidArgumentError) as info:
                journy.browser_event(name, metadata)
            assert info.value.argument == argument
            with pytest.raises(InvalidArgumentError) as from_track:
                journy.track(name, user=1, metadata=metadata)
            assert from_track.value.argument == argument


def test_a_bad_template_event_is_left_out_and_the_rest_of_the_page_renders(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    journy = Journy()

    @app.get("/events")
    def events() -> str:
        journy.browser_event("opened_billing", {"tab": "invoices"})
        note = json.loads(request.args.get("note", '"fine"'))  # what an API view's JSON input gives
        return render_template_string(
            "<html><head>{{ journy_snippet(events=[{'name': 'from_the_layout', 'metadata': {'note': note}}]) }}"
            '</head><body>{% journy_event "left_a_note", note=note %}</body></html>',
            note=note,
        )

    client, _, _ = logged_in(app)
    for note in ['"\\ud800"', '["a", "b"]', "1e400", "10000000000000000000000"]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="journy"):
            response = client.get("/events", query_string={"note": note})
        assert response.status_code == 200  # not a 500 from a lone surrogate that cannot be encoded
        html = response.text
        found = calls(html)
        assert {"init", "identify", "pageview"} <= set(found)
        assert found["event"]["name"] == "opened_billing"  # the good page event; both bad ones left out
        assert "<!-- journy.io: page event 'from_the_layout' left out (events[1].metadata['note'] is invalid" in html
        assert "<!-- journy.io: page event 'left_a_note' left out (metadata['note'] is invalid" in html
        warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
        assert any("'from_the_layout'" in message for message in warned)
        assert any("'left_a_note'" in message for message in warned)


def test_a_changed_property_or_account_shows_on_the_next_page(app: Flask) -> None:
    client, user_id, team_id = logged_in(app, full_name="Ada")
    first = calls(client.get(f"/page?team={team_id}").text)
    assert first["identify"]["properties"]["full_name"] == "Ada"
    assert calls(client.get(f"/page?team={team_id}").text) == first  # the cached snippet: the same HTML
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        user.full_name = "Ada Lovelace"
        team = db.session.get(Team, team_id)
        assert team is not None
        team.plan = "enterprise"
        db.session.commit()
    found = calls(client.get(f"/page?team={team_id}").text)
    assert found["identify"]["properties"]["full_name"] == "Ada Lovelace"
    assert found["identify"]["verification"] == verification_hash(SECRET, str(user_id))
    assert found["account"]["properties"]["plan"] == "enterprise"
    assert "account" not in calls(client.get("/page").text)  # no current account on this page


def test_a_property_set_committed_or_expired_by_the_view_shows_on_its_own_page(app: Flask) -> None:
    @app.get("/rename/<how>")
    def rename(how: str) -> dict[str, Any]:
        user = flask_login.current_user
        team = db.session.get(Team, int(request.args["team"]))
        user.full_name, user.email, team.plan = f"Ada {how}", f"ada.{how}@acme.test", how
        if how == "committed":
            db.session.commit()  # expires both: the snippet's read loads them again
        elif how == "expired":
            db.session.flush()
            db.session.expire(user)
            db.session.expire(team)
        page = render_template_string(PAGE)
        return {"page": page, "read": [user.full_name, user.email, team.plan]}  # read after the page

    client, _, team_id = logged_in(app, full_name="Ada")
    assert calls(client.get(f"/page?team={team_id}").text)["identify"]["properties"]["full_name"] == "Ada"
    for how in ("set", "committed", "expired"):
        answer = client.get(f"/rename/{how}?team={team_id}").json
        found = calls(answer["page"])
        assert answer["read"] == [f"Ada {how}", f"ada.{how}@acme.test", how]
        identify, account = found["identify"], found["account"]
        assert [identify["properties"]["full_name"], identify["email"], account["properties"]["plan"]] == answer["read"]


@pytest.mark.parametrize(
    ("overrides", "has_one"),
    [
        ({}, True),
        ({"JOURNY_SNIPPET_PROPERTIES": False}, True),
        ({"JOURNY_USER_ID": lambda user: f"u-{user.id}"}, False),
        ({"JOURNY_USER_PROPERTIES": {"teams": "teams.0"}}, False),
        ({"JOURNY_USER_PROPERTIES": lambda user: {"plan": user.plan}}, False),
    ],
    ids=["default", "no-properties", "id-callable", "dotted-property", "property-callable"],
)
def test_a_page_has_a_fingerprint_only_where_its_loaded_attributes_fix_the_identity(
    overrides: dict[str, Any], has_one: bool
) -> None:
    app = build_app(**overrides)
    with app.app_context():
        settings = Journy.state(app).settings
        user, team = User(email="ada@acme.test", full_name="Ada"), Team(name="Acme", plan="pro")
        db.session.add_all([user, team])
        assert page_fingerprint(settings, user, team) is None  # pending: no primary key yet
        db.session.commit()  # expires both
        assert page_fingerprint(settings, user, team) is None  # nothing loaded
        db.session.refresh(user)
        db.session.refresh(team)
        assert (page_fingerprint(settings, user, team) is not None) is has_one
        assert (page_fingerprint(settings, user, None) is not None) is has_one
        assert page_fingerprint(settings, user, str(team.id)) is None  # an account given as an ID
        if has_one:
            before = page_fingerprint(settings, user, team)
            user.full_name = "Ada Lovelace"
            assert (page_fingerprint(settings, user, team) != before) is settings.snippet_properties


def test_a_property_mapped_to_a_deferred_column_is_loaded_for_the_snippet() -> None:
    app = build_app(JOURNY_USER_PROPERTIES={"full_name": "full_name", "plan": "plan"})

    @app.get("/deferred")
    def deferred() -> str:
        # The user this page shows, loaded without its plan: the snippet's read loads it.
        user = db.session.scalars(db.select(User).options(defer(User.plan))).one()
        assert "plan" not in user.__dict__
        return render_template_string(PAGE, current_user=user)

    client, user_id, _ = logged_in(app, full_name="Ada", plan="pro")
    with app.app_context():
        db.session.execute(db.update(User).where(User.id == user_id).values(plan="team"))
        db.session.commit()
    assert calls(client.get("/deferred").text)["identify"]["properties"] == {"full_name": "Ada", "plan": "team"}


@pytest.mark.parametrize("snippet_properties", [True, False])
@pytest.mark.parametrize("with_team", [True, False])
@pytest.mark.parametrize("logged_in_user", [True, False])
def test_the_usual_page_comes_from_the_cache_and_renders_what_an_uncached_render_renders(
    snippet_properties: bool, with_team: bool, logged_in_user: bool
) -> None:
    app = build_app(JOURNY_SNIPPET_PROPERTIES=snippet_properties)

    @app.get("/general")
    def general() -> str:
        Journy.state().snippet_cache.clear()  # rendered anew, not served from the cache
        return f"<html><head>{render_page_snippet(Journy.state())}</head><body></body></html>"

    if logged_in_user:
        client, _, team_id = logged_in(app, full_name="Ada")
    else:
        client = app.test_client()
        with app.app_context():
            team = Team(name="Acme", plan="pro")
            db.session.add(team)
            db.session.commit()
            team_id = team.id
    query = f"?team={team_id}" if with_team else ""
    pages = [client.get(f"/page{query}").text for _ in range(3)]
    state = Journy.state(app)
    assert len(state.snippet_cache) == 1  # the later pages came from the cache
    assert pages[0] == pages[1] == pages[2] == client.get(f"/general{query}").text
    found = calls(pages[2])
    assert ("identify" in found) is logged_in_user
    assert ("account" in found) is with_team
    if logged_in_user:
        assert ("properties" in found["identify"]) is snippet_properties


def test_a_page_the_view_customised_is_not_served_the_usual_pages_snippet(app: Flask) -> None:
    journy = Journy()  # its methods find the app through current_app

    @app.get("/screen")
    def screen() -> str:
        journy.set_screen("Billing")
        return render_template_string("{{ journy_snippet() }}")

    client, _, _ = logged_in(app)
    assert "pageview" in calls(client.get("/page").text)
    found = calls(client.get("/screen").text)
    assert found["screen"]["name"] == "Billing" and "pageview" not in found
    assert "screen" not in calls(client.get("/page").text)


def test_a_page_rendered_with_render_template_string_carries_the_snippet_and_the_event_tag(app: Flask) -> None:
    @app.get("/from-string")
    def from_string() -> str:
        return render_template_string(
            '<html><head>{{ journy_snippet() }}</head><body>{% journy_event "opened_billing", seats=n %}</body></html>',
            n=3,
        )

    client, user_id, _ = logged_in(app)
    for _ in range(2):  # compiled anew on each request: the second page is the same as the first
        html = client.get("/from-string").text
        found = calls(html)
        assert found["identify"]["userId"] == str(user_id)
        assert found["identify"]["verification"] == verification_hash(SECRET, str(user_id))
        assert found["event"]["name"] == "opened_billing" and found["event"]["metadata"] == {"seats": 3}
        assert html.index('journy("identify"') < html.index("</head>") < html.index('journy("event"')


def test_the_snippet_identifies_the_user_the_page_has_as_current_user_however_it_got_there(app: Flask) -> None:
    @app.get("/proxy")
    def proxy() -> str:  # the view passes Flask-Login's proxy itself, as many tutorials do
        return render_template_string("{{ journy_snippet() }}", current_user=flask_login.current_user)

    @app.get("/python")
    def python() -> str:  # no template context at all
        return str(render_page_snippet(Journy.state()))

    client, user_id, _ = logged_in(app)
    for path in ("/page", "/proxy", "/python"):
        found = calls(client.get(path).text)
        assert found["identify"]["userId"] == str(user_id), path
        assert found["identify"]["verification"] == verification_hash(SECRET, str(user_id)), path
    client.post("/logout")
    for path in ("/page", "/proxy", "/python"):
        assert "identify" not in calls(client.get(path).text), path  # Flask-Login's anonymous user: nobody


def test_without_flask_logins_context_processor_the_snippet_asks_flask_login() -> None:
    app = Flask("journy_test_no_processor")
    app.config.update(base_config(SQLALCHEMY_DATABASE_URI="sqlite://"))
    db.init_app(app)
    manager = LoginManager(app, add_context_processor=False)
    manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    Journy(app)

    @app.post("/login")
    def log_in() -> str:
        login_user(db.session.get(User, 1))
        return "in"

    @app.get("/page")
    def page() -> str:
        return render_template_string("{{ journy_snippet() }}")

    with app.app_context():
        db.create_all()
        db.session.add(User(id=1, email="ada@acme.test", full_name="Ada"))
        db.session.commit()
    client = app.test_client()
    client.post("/login")
    assert calls(client.get("/page").text)["identify"]["userId"] == "1"


def test_authentication_is_read_from_flask_login_mixins_and_asked_of_classes_that_override_it() -> None:
    class Plain(UserMixin):  # type: ignore[misc]
        id = 1

    class Deactivatable(UserMixin):  # type: ignore[misc]
        def __init__(self, active: bool) -> None:
            self.id, self.active = 2, active

        @property
        def is_active(self) -> bool:
            return self.active

    class Custom:
        def __init__(self, authenticated: bool) -> None:
            self.is_authenticated = authenticated

    assert is_authenticated(Plain()) is True
    assert is_authenticated(AnonymousUserMixin()) is False
    assert [is_authenticated(Deactivatable(active)) for active in (True, False, True)] == [True, False, True]
    assert [is_authenticated(Custom(flag)) for flag in (False, True)] == [False, True]


def test_a_user_without_an_id_attribute_has_no_user_id() -> None:
    class NoId(UserMixin):  # type: ignore[misc]
        pass

    settings = Journy.state(build_app()).settings
    assert user_id_of(settings, NoId(), authenticated=True) is None
    assert account_id_of(settings, Team(id=9)) == "9"


def test_track_refuses_what_the_api_cannot_take_before_it_reaches_the_queue(app: Flask) -> None:
    from .conftest import outbox_of

    journy = Journy()
    outbox = outbox_of(app)
    with app.test_request_context("/"):
        for metadata in ({"note": json.loads('"\\ud800"')}, {"count": 10**400}, {"count": -(2**60)}):
            with pytest.raises(InvalidArgumentError):
                journy.track("left_a_note", user=1, metadata=metadata)
        with pytest.raises(InvalidArgumentError):
            journy.track(json.loads('"left\\udfff"'), user=1)
    assert outbox.events() == []
