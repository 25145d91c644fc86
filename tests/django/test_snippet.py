"""{% journy_snippet %} and {% journy_event %}: calls, verification, escaping, CSP nonce, disabled states."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import path

import journy_django
from journy_core import InvalidArgumentError, verification_hash
from journy_core.emulator import DEFAULT_API_KEY, Website
from journy_core.snippet import LOADER_STUB
from tests.django.testapp.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
SECRET = "website-secret"


def calls(html: str) -> list[tuple[str, dict]]:
    """The journy(...) calls of a rendered snippet, decoded."""
    found = []
    for match in re.finditer(r'journy\("(\w+)"(?:, (\{.*?\}))?\);', html):
        found.append((match[1], json.loads(match[2]) if match[2] else {}))
    return found


@pytest.fixture
def member():
    user = User.objects.create_user("ada", "ada@acme.com", password="pw", first_name="Ada", last_name="Lovelace")
    org = Organization.objects.create(name="ACME", domain="acme.com", plan="pro")
    org.members.add(user)
    return user, org


def test_a_logged_in_page_identifies_the_user_and_account_with_verification(client, member):
    user, org = member
    client.force_login(user)
    html = client.get("/page/").content.decode()
    assert '<script async src="https://go.acme.test/tracker.js"></script>' in html
    got = dict(calls(html))
    assert got["init"] == {"trackerId": "tracker-1", "domain": "https://go.acme.test"}
    assert got["identify"]["userId"] == str(user.pk)
    assert got["identify"]["email"] == "ada@acme.com"
    assert got["identify"]["verification"] == verification_hash(SECRET, str(user.pk))
    assert got["identify"]["properties"]["full_name"] == "Ada Lovelace"
    assert got["account"] == {
        "accountId": str(org.pk),
        "verification": verification_hash(SECRET, str(org.pk)),
        "properties": {"name": "ACME", "plan": "pro"},
    }
    assert got["pageview"] == {"accountId": str(org.pk), "verification": verification_hash(SECRET, str(org.pk))}
    assert SECRET not in html


def test_an_anonymous_page_gets_init_and_pageview_only(client):
    html = client.get("/page/").content.decode()
    assert [name for name, _ in calls(html)] == ["init", "pageview"]


def test_a_view_can_name_a_screen_and_add_page_events(client, member):
    user, org = member
    client.force_login(user)
    got = calls(client.get("/screen/").content.decode())
    names = [name for name, _ in got]
    assert "pageview" not in names
    assert dict(got)["screen"]["name"] == "Billing"
    assert dict(got)["event"] == {
        "name": "opened_billing",
        "accountId": str(org.pk),
        "verification": verification_hash(SECRET, str(org.pk)),
        "metadata": {"tab": "invoices"},
    }


def test_the_event_tag_renders_a_verified_event(client, member):
    user, org = member
    client.force_login(user)
    html = client.get("/event/").content.decode()
    assert dict(calls(html))["event"] == {
        "name": "viewed_pricing",
        "accountId": str(org.pk),
        "verification": verification_hash(SECRET, str(org.pk)),
        "metadata": {"plan": "pro"},
    }


def test_user_controlled_values_cannot_break_out_of_the_script(client, member):
    user, _ = member
    user.first_name = "</script><script>alert(1)</script>"
    user.last_name = "\u2028<!--"
    user.save()
    client.force_login(user)
    html = client.get("/page/").content.decode()
    assert "<script>alert(1)" not in html
    assert "\u2028" not in html
    assert html.count("</script>") == 2  # the loader and the inline script, nothing else
    assert dict(calls(html))["identify"]["properties"]["first_name"] == "</script><script>alert(1)</script>"


def test_cached_snippets_tell_equal_but_different_values_apart(member, settings):
    user, _ = member
    request = RequestFactory().get("/")
    request.user = user
    rendered = []
    for value in (True, 1, 1.0, "1"):
        settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": lambda u, v=value: {"paid": v}}
        rendered.append(dict(calls(_render(request)))["identify"]["properties"]["paid"])
    assert [(type(v), v) for v in rendered] == [(bool, True), (int, 1), (float, 1.0), (str, "1")]


def test_a_changed_user_or_account_property_shows_on_the_next_page(client, member):
    user, org = member
    client.force_login(user)
    first = dict(calls(client.get("/page/").content.decode()))
    assert first["identify"]["properties"]["first_name"] == "Ada"
    assert first["account"]["properties"] == {"name": "ACME", "plan": "pro"}
    user.first_name = "Augusta"
    user.save()
    org.plan = "enterprise"
    org.save()
    again = dict(calls(client.get("/page/").content.decode()))
    assert again["identify"]["properties"]["first_name"] == "Augusta"
    assert again["identify"]["properties"]["full_name"] == "Augusta Lovelace"
    assert again["identify"]["verification"] == verification_hash(SECRET, str(user.pk))
    assert again["account"]["properties"] == {"name": "ACME", "plan": "enterprise"}
    assert again["account"]["verification"] == verification_hash(SECRET, str(org.pk))


def test_cached_snippets_follow_the_values_of_attribute_maps(member, settings):
    user, _ = member
    settings.JOURNY = {**settings.JOURNY, "USER_PROPERTIES": {"paid": "is_active", "tag": "last_name.upper"}}
    request = RequestFactory().get("/")
    request.user = user
    rendered = []
    for value in (True, 1, 1.0):
        user.is_active = value
        rendered.append(dict(calls(_render(request)))["identify"]["properties"])
    assert [(type(p["paid"]), p["paid"]) for p in rendered] == [(bool, True), (int, 1), (float, 1.0)]
    assert {p["tag"] for p in rendered} == {"LOVELACE"}
    user.last_name = "Byron"
    user.is_active = ["a", "list"]  # not hashable: rendered without the cache
    got = dict(calls(_render(request)))["identify"]["properties"]
    assert got == {"paid": ["a", "list"], "tag": "BYRON"}


def test_an_impersonated_session_gets_no_identify(client, member):
    user, _ = member
    client.force_login(user)
    assert '"identify"' in client.get("/page/").content.decode()
    session = client.session
    session["hijack_history"] = ["1"]
    session.save()
    html = client.get("/page/").content.decode()
    assert '"identify"' not in html
    assert "impersonated session" in html
    session["hijack_history"] = []  # hijack 3 empties it when the staff member releases the user
    session.save()
    assert '"identify"' in client.get("/page/").content.decode()


def _render(request) -> str:
    return Template("{% load journy %}{% journy_snippet %}").render(Context({"request": request}))


def test_the_csp_nonce_of_django_or_django_csp_is_on_every_script_tag():
    request = RequestFactory().get("/")
    request.user = None
    request.csp_nonce = "csp-nonce-1"  # django-csp
    html = _render(request)
    assert html.count('nonce="csp-nonce-1"') == 2
    del request.csp_nonce
    try:
        from django.middleware.csp import ContentSecurityPolicyMiddleware, get_nonce  # Django 6
    except ImportError:
        pytest.skip("Django < 6 has no built-in CSP nonce")
    ContentSecurityPolicyMiddleware(lambda request: HttpResponse()).process_request(request)
    assert not get_nonce(request)  # falsy until read: the tag must not skip it
    html = _render(request)
    assert html.count(f'nonce="{get_nonce(request)}"') == 2


def test_the_event_tag_carries_the_queue_stub_and_the_nonce_so_it_works_before_the_snippet():
    request = RequestFactory().get("/")
    request.user = None
    request.csp_nonce = "csp-nonce-2"
    html = Template('{% load journy %}{% journy_event "viewed_pricing" %}').render(Context({"request": request}))
    assert html.startswith('<script nonce="csp-nonce-2">\n' + LOADER_STUB)
    assert dict(calls(html))["event"] == {"name": "viewed_pricing"}


def test_the_cached_page_gets_each_requests_own_nonce_and_a_page_with_events_gets_them(client, member):
    user, org = member
    request = RequestFactory().get("/")
    request.user = user
    journy_django.set_account(request, org)
    request.csp_nonce = "n-one"
    first = _render(request)
    request.csp_nonce = "n-two"
    second = _render(request)  # from the cache, with this request's nonce
    assert second.count('nonce="n-two"') == 2
    assert "n-one" not in second
    assert second == first.replace('nonce="n-one"', 'nonce="n-two"')
    journy_django.add_page_event(request, "opened")  # a page with events is rendered anew
    anew = _render(request)
    assert anew.startswith(second.split('journy("pageview"')[0])
    assert [name for name, _ in calls(anew)][-1] == "event"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ENABLED": False}, "ENABLED"),
        ({"TRACKER_ID": None, "TRACKER_DOMAIN": None}, "TRACKER_ID"),
        ({"SKIP_STAFF": True}, "staff"),
    ],
)
def test_disabled_tracking_renders_a_comment_saying_why(client, settings, overrides, reason):
    settings.JOURNY = {**settings.JOURNY, **overrides}
    staff = User.objects.create_user("admin", "admin@acme.com", is_staff=True)
    client.force_login(staff)
    html = client.get("/page/").content.decode()
    assert "<script" not in html
    assert re.search(r"<!-- journy.io tracking disabled: [^>]*" + reason, html)


def test_a_broken_current_account_callable_renders_a_comment_not_an_error(client, member, settings):
    settings.JOURNY = {**settings.JOURNY, "CURRENT_ACCOUNT": lambda request: 1 / 0}
    client.force_login(member[0])
    response = client.get("/page/")
    assert response.status_code == 200
    assert "journy.io tracking disabled: error" in response.content.decode()


def test_without_a_secret_no_verification_is_sent(client, member, settings):
    settings.JOURNY = {**settings.JOURNY, "VERIFICATION_SECRET": None}
    client.force_login(member[0])
    html = client.get("/page/").content.decode()
    assert "verification" not in html


@pytest.fixture
def acme_website(emulator):
    emulator.configure(websites=[Website("acme.test", "fetched-tracker")])
    yield emulator
    emulator.configure(websites=[Website("localhost", "emulator-tracker")])  # the session emulator's default


def _website_settings(settings, emulator, **overrides):
    settings.JOURNY = {
        **settings.JOURNY,
        "API_KEY": DEFAULT_API_KEY,
        "API_URL": emulator.url,
        "TRACKER_ID": None,
        "TRACKER_DOMAIN": None,
        "WEBSITE_DOMAIN": "acme.test",
        **overrides,
    }


def _page_until(client, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
    """The first page whose HTML satisfies ``predicate``, asking again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        html = client.get("/page/").content.decode()
        if predicate(html) or time.monotonic() > deadline:
            return html
        time.sleep(0.05)


def _has_loader(html: str) -> bool:
    return "init" in dict(calls(html))


def test_the_tracker_is_fetched_from_journy_io_for_a_website_domain(client, settings, acme_website):
    emulator = acme_website
    _website_settings(settings, emulator)
    html = _page_until(client, _has_loader)
    assert dict(calls(html))["init"]["trackerId"] == "fetched-tracker"
    for _ in range(3):
        html = client.get("/page/").content.decode()
        assert dict(calls(html))["init"]["trackerId"] == "fetched-tracker"
    assert len(emulator.calls("/tracking/snippet")) == 1  # cached


def test_no_page_waits_for_a_slow_snippet_fetch_and_a_failed_refresh_keeps_the_last_good_one(
    client, settings, acme_website, caplog
):
    emulator = acme_website
    emulator.configure(latency=4.0)
    _website_settings(settings, emulator, SNIPPET_CACHE_SECONDS=0.5)
    started = time.monotonic()
    first = client.get("/page/")
    elapsed = time.monotonic() - started
    assert first.status_code == 200
    assert elapsed < 2.0, f"the first page waited {elapsed:.1f} s for journy.io"  # the API takes 4 s
    html = first.content.decode()
    assert "<script" not in html
    assert "<!-- journy.io tracking disabled: the snippet of 'acme.test' is being fetched from journy.io" in html
    html = _page_until(client, _has_loader)
    assert dict(calls(html))["init"]["trackerId"] == "fetched-tracker"

    emulator.configure(latency=0.0, websites=[])  # journy.io no longer knows the site: the refresh fails
    with caplog.at_level(logging.WARNING, logger="journy"):
        deadline = time.monotonic() + 15
        while "could not load the tracking snippet" not in caplog.text and time.monotonic() < deadline:
            client.get("/page/")  # past SNIPPET_CACHE_SECONDS: starts the refresh in the background
            time.sleep(0.1)
    assert "could not load the tracking snippet" in caplog.text
    assert dict(calls(client.get("/page/").content.decode()))["init"]["trackerId"] == "fetched-tracker"


# -- page events: checked where the view adds them; a bad one never breaks the page ------------------------


def _events_view(request: HttpRequest) -> HttpResponse:
    """A page whose template event takes its metadata from JSON, as an API view's input would."""
    journy_django.add_page_event(request, "opened_billing", {"tab": "invoices"})
    note = json.loads(request.GET.get("note", '"fine"'))
    template = Template(
        "{% load journy %}<html><head>{% journy_snippet %}</head><body>"
        '{% journy_event "left_a_note" note=note %}{% journy_event "viewed_pricing" plan="pro" %}</body></html>'
    )
    return HttpResponse(template.render(Context({"request": request, "note": note})))


urlpatterns = [path("events/", _events_view)]


@pytest.fixture
def events_page(settings):
    settings.ROOT_URLCONF = __name__


@pytest.mark.parametrize(
    ("metadata", "argument"),
    [
        ({"tags": ["a", "b"]}, "metadata['tags']"),
        ({"note": json.loads('"\\ud800"')}, "metadata['note']"),
        ({"count": 10**400}, "metadata['count']"),
        ({"gone": None}, "metadata['gone']"),
    ],
)
def test_add_page_event_refuses_what_track_refuses_at_the_call_site(metadata, argument):
    request = RequestFactory().get("/")
    with pytest.raises(InvalidArgumentError) as info:
        journy_django.add_page_event(request, "opened", metadata)
    assert info.value.argument == argument
    with pytest.raises(InvalidArgumentError) as from_track:
        journy_django.track("opened", user=1, metadata=metadata)
    assert from_track.value.argument == argument
    with pytest.raises(InvalidArgumentError) as info:
        journy_django.add_page_event(request, json.loads('"opened\\udfff"'))
    assert info.value.argument == "name"


@pytest.mark.parametrize("note", ['"\\ud800"', '["a", "b"]', "1e400", "10000000000000000000000"])
def test_a_bad_template_event_is_left_out_and_the_rest_of_the_page_renders(client, member, events_page, caplog, note):
    client.force_login(member[0])
    with caplog.at_level(logging.WARNING, logger="journy"):
        response = client.get("/events/", {"note": note})
    assert response.status_code == 200  # not a 500 from a lone surrogate that cannot be encoded
    html = response.content.decode()
    got = calls(html)
    assert [name for name, _ in got] == ["init", "identify", "account", "pageview", "event", "event"]
    assert [args["name"] for name, args in got if name == "event"] == ["opened_billing", "viewed_pricing"]
    assert "<!-- journy.io: page event 'left_a_note' left out (metadata['note'] is invalid" in html
    assert any(record.levelname == "WARNING" and "'left_a_note'" in record.getMessage() for record in caplog.records)


def test_an_async_view_that_never_loaded_the_user_renders_without_a_query(member):
    import asyncio

    from django.test import AsyncClient

    client = AsyncClient()
    client.force_login(member[0])  # not aforce_login(), which Django 4.2 does not have

    async def scenario():
        return await client.get("/async-lazy/"), await client.get("/async/")

    lazy, loaded = asyncio.run(scenario())
    assert lazy.status_code == 200 and "identify" not in lazy.content.decode()
    assert "error" not in lazy.content.decode()
    assert '"identify"' in loaded.content.decode()


def _render_in_an_event_loop(request) -> str:
    async def render() -> str:
        return _render(request)  # a template an async view renders: in the event loop, no query allowed

    return asyncio.run(render())


def test_a_lazy_user_loaded_in_a_thread_is_found_without_loading_an_unloaded_one(member):
    # Pins the one private read (a lazy object's _wrapped) on every Django version the venvs run.
    from django.utils.functional import SimpleLazyObject

    from journy_django.snippet import _loaded_lazy_user

    loads = []
    lazy = SimpleLazyObject(lambda: loads.append(1) or member[0])
    assert _loaded_lazy_user(lazy) is None
    assert loads == []
    assert lazy.pk == member[0].pk  # loaded, as sync_to_async(lambda: request.user.is_authenticated) does
    assert _loaded_lazy_user(lazy) is member[0]
    assert _loaded_lazy_user(member[0]) is member[0]


def test_the_values_of_a_lazy_user_are_read_from_the_user_itself(member):
    from django.contrib.auth.models import AnonymousUser
    from django.utils.functional import SimpleLazyObject

    from journy_django.snippet import _user_itself

    assert _user_itself(SimpleLazyObject(lambda: member[0])) is member[0]
    assert _user_itself(member[0]) is member[0]
    anonymous = AnonymousUser()
    assert _user_itself(SimpleLazyObject(lambda: anonymous)) is anonymous
    assert _user_itself("7") == "7"  # a user given as its ID


def test_in_an_event_loop_the_tag_identifies_a_user_loaded_before_and_never_loads_one(member):
    from django.utils.functional import SimpleLazyObject

    loads = []
    request = RequestFactory().get("/")
    request.user = SimpleLazyObject(lambda: loads.append(1) or member[0])
    journy_django.set_account(request, member[1])
    assert "identify" not in _render_in_an_event_loop(request)
    assert loads == []
    assert request.user.is_authenticated
    assert dict(calls(_render_in_an_event_loop(request)))["identify"]["userId"] == str(member[0].pk)


def test_in_an_event_loop_the_tag_identifies_the_user_auser_returned_through_the_middleware(member):
    from django.utils.functional import SimpleLazyObject

    from journy_django.middleware import JournyMiddleware

    async def auser():
        return member[0]

    request = RequestFactory().get("/")
    request.user = SimpleLazyObject(lambda: pytest.fail("the tag loaded request.user in the event loop"))
    request.auser = auser
    journy_django.set_account(request, member[1])
    JournyMiddleware(lambda request: HttpResponse())(request)  # a sync stack: the view may still be async

    async def view() -> str:
        assert (await request.auser()) is member[0]
        return _render(request)

    assert dict(calls(asyncio.run(view())))["identify"]["userId"] == str(member[0].pk)


def test_page_events_added_twice_are_both_rendered():
    request = _anonymous_request()
    journy_django.add_page_event(request, "first")
    journy_django.add_page_event(request, "second")
    assert [args["name"] for name, args in calls(_render(request)) if name == "event"] == ["first", "second"]


def _anonymous_request():
    request = RequestFactory().get("/")
    request.user = None
    return request


@pytest.mark.parametrize(
    ("tag", "context", "screen"),
    [
        ("{% journy_snippet %}", {}, None),
        ('{% journy_snippet screen="Billing" %}', {}, "Billing"),
        ("{% journy_snippet screen='Billing' %}", {}, "Billing"),
        ("{% journy_snippet screen=name %}", {"name": "Billing"}, "Billing"),
        ("{% journy_snippet screen=name|upper %}", {"name": "Billing"}, "BILLING"),
        ('{% journy_snippet "Billing" %}', {}, "Billing"),  # positional, as the simple_tag took it
        ("{% journy_snippet name %}", {"name": "Billing"}, "Billing"),
    ],
)
def test_the_snippet_tag_takes_a_screen_as_a_literal_variable_or_positional_argument(tag, context, screen):
    html = Template("{% load journy %}" + tag).render(Context({"request": _anonymous_request(), **context}))
    got = calls(html)
    if screen is None:
        assert [name for name, _ in got] == ["init", "pageview"]
    else:
        assert "pageview" not in dict(got)
        assert dict(got)["screen"]["name"] == screen
    assert "&lt;" not in html  # marked safe: not escaped again


@pytest.mark.parametrize(
    "tag",
    [
        "{% journy_snippet as snippet %}",
        '{% journy_snippet screen="Billing" as snippet %}',
        "{% journy_snippet name as snippet %}",
    ],
)
def test_the_snippet_tag_can_store_the_snippet_in_a_variable(tag):
    template = Template("{% load journy %}" + tag + "[{{ snippet }}]")
    html = template.render(Context({"request": _anonymous_request(), "name": "Billing"}))
    assert html.startswith("[<script")  # nothing where the tag is; the snippet, unescaped, where the variable is
    assert html.endswith("</script>]")
    assert dict(calls(html))["init"]["trackerId"] == "tracker-1"


def test_the_snippet_tag_renders_per_request_and_per_context():
    """Compiled once, rendered many times: the screen variable and the request are read on every render."""
    template = Template("{% load journy %}{% journy_snippet screen=name %}")
    for name in ("Billing", "Settings", "Billing"):
        html = template.render(Context({"request": _anonymous_request(), "name": name}))
        assert dict(calls(html))["screen"]["name"] == name
    assert "no request in the template context" in template.render(Context({"name": "Billing"}))


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ('{% journy_snippet name="Billing" %}', "'journy_snippet' received unexpected keyword argument 'name'"),
        ('{% journy_snippet "Billing" "Settings" %}', "'journy_snippet' received too many positional arguments"),
        (
            '{% journy_snippet screen="Billing" screen="Settings" %}',
            "'journy_snippet' received multiple values for keyword argument 'screen'",
        ),
        (
            '{% journy_snippet "Billing" screen="Settings" %}',
            "'journy_snippet' received multiple values for keyword argument 'screen'",
        ),
        (
            '{% journy_snippet screen="Billing" "Settings" %}',
            "'journy_snippet' received some positional argument(s) after some keyword argument(s)",
        ),
        ('{% journy_snippet "Billing" as %}', "'journy_snippet' received too many positional arguments"),
        ('{% journy_snippet screen="Billing %}', "Could not parse the remainder"),
    ],
)
def test_the_snippet_tag_rejects_wrong_arguments_when_the_template_compiles(tag, message):
    from django.template import TemplateSyntaxError

    with pytest.raises(TemplateSyntaxError) as raised:
        Template("{% load journy %}" + tag)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "metadata", [{"note": json.loads('"\\ud800"')}, {"count": 10**400}, {"count": -(2**60)}], ids=str
)
def test_track_refuses_what_the_api_cannot_take_before_it_reaches_the_queue(outbox, member, metadata):
    user, org = member
    outbox.clear()
    with pytest.raises(InvalidArgumentError):
        journy_django.track("left_a_note", user=user, account=org, metadata=metadata)
    assert outbox.events() == []
