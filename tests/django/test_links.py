"""Linking the __journey cookie: at login and through the middleware, once per session, device and user."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model
from django.test import AsyncClient, RequestFactory

from journy_django.links import SESSION_KEY, on_user_logged_in
from journy_django.middleware import JournyMiddleware

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


@pytest.fixture
def ada():
    return User.objects.create_user("ada", "ada@acme.com", password="pw")


def links(outbox):
    return [(op.payload["deviceId"], op.payload["identification"]["userId"]) for op in outbox.of_kind("link")]


def test_logging_in_links_the_cookie_once(client, ada, outbox):
    client.cookies["__journey"] = "device-1"
    client.post("/login/", {"username": "ada", "password": "pw"})
    assert links(outbox) == [("device-1", str(ada.pk))]  # by the user_logged_in receiver, in the login request
    client.get("/page/")
    client.post("/login/", {"username": "ada", "password": "pw"})  # a second login in the same session
    assert links(outbox) == [("device-1", str(ada.pk))]
    assert client.session[SESSION_KEY] == f"{ada.pk}\ndevice-1"  # journy_core.linking's record: who, then devices


def test_a_link_names_the_user_by_id_and_email_as_flasks_does(client, ada, outbox):
    client.cookies["__journey"] = "device-1"
    client.post("/login/", {"username": "ada", "password": "pw"})
    [link] = outbox.of_kind("link")
    assert link.payload["identification"] == {"userId": str(ada.pk), "email": "ada@acme.com"}


def test_a_second_user_logging_in_within_the_session_gets_its_own_link(client, ada, outbox):
    bob = User.objects.create_user("bob", "bob@acme.com", password="pw")
    client.cookies["__journey"] = "shared-device"
    client.post("/login/", {"username": "ada", "password": "pw"})
    client.post("/login/", {"username": "bob", "password": "pw"})  # no logout: login() replaces the user
    client.get("/page/")
    client.post("/login/", {"username": "ada", "password": "pw"})
    assert links(outbox) == [
        ("shared-device", str(ada.pk)),
        ("shared-device", str(bob.pk)),
        ("shared-device", str(ada.pk)),
    ]


def test_a_record_naming_another_user_does_not_stop_the_login_link(ada, outbox):
    # A session that kept its data across users (an app logging users in and out without flushing it): the
    # record names who the devices were linked to, so the new user is linked.
    bob = User.objects.create_user("bob", "bob@acme.com", password="pw")
    request = RequestFactory().get("/page/", HTTP_COOKIE="__journey=shared-device")
    request.session = {SESSION_KEY: f"{ada.pk}\nshared-device"}
    on_user_logged_in(User, request=request, user=bob)
    on_user_logged_in(User, request=request, user=bob)
    assert links(outbox) == [("shared-device", str(bob.pk))]
    assert request.session[SESSION_KEY] == f"{bob.pk}\nshared-device"


@pytest.mark.parametrize(
    "old_record",
    [{"_journy_linked_devices": ["device-1"]}, {"_journy": "1\ndevice-1"}],
    ids=["old-django-key", "old-flask-key"],
)
def test_a_session_from_an_older_version_links_its_device_once_more(client, ada, outbox, old_record):
    client.force_login(ada)
    session = client.session
    session.update(old_record)
    session.save()
    client.cookies["__journey"] = "device-1"
    client.get("/page/")
    client.get("/page/")
    assert links(outbox) == [("device-1", str(ada.pk))]


def test_a_remembered_session_links_a_new_device_once_through_the_middleware(client, ada, outbox):
    client.force_login(ada)  # no user_logged_in signal: like a session from an earlier visit
    assert links(outbox) == []
    client.cookies["__journey"] = "device-2"
    client.get("/page/")
    client.get("/page/")
    client.cookies["__journey"] = "device-3"  # a cookie set later (the marketing site)
    client.get("/page/")
    assert links(outbox) == [("device-2", str(ada.pk)), ("device-3", str(ada.pk))]


@pytest.mark.parametrize(
    "cookie",
    ["", "   ", "x" * 500, "bad\x00value", "two words", 'quote"d', "semi;colon"],
    ids=["empty", "blank", "too-long", "control", "space", "quote", "separator"],
)
def test_an_untrusted_cookie_is_skipped_without_error(client, ada, outbox, cookie):
    client.force_login(ada)
    client.cookies["__journey"] = cookie
    assert client.get("/page/").status_code == 200
    assert links(outbox) == []


def test_anonymous_visitors_are_not_linked(client, outbox):
    client.cookies["__journey"] = "device-1"
    client.get("/page/")
    assert links(outbox) == []


def test_impersonated_sessions_are_not_linked(client, ada, outbox):
    client.force_login(ada)
    session = client.session
    session["hijack_history"] = ["1"]
    session.save()
    client.cookies["__journey"] = "device-1"
    client.get("/page/")
    assert links(outbox) == []


def test_internal_ips_and_a_callable_filter_skip_linking(client, ada, outbox, settings):
    client.force_login(ada)
    client.cookies["__journey"] = "device-1"
    from journy_django import get_journy

    # Each settings change builds another Journy: each request is checked against the one it queued to.
    settings.JOURNY = {**settings.JOURNY, "INTERNAL_IPS": ["127.0.0.0/8"]}
    client.get("/page/")
    assert [op for op in get_journy().backend.operations if op.kind == "link"] == []
    settings.JOURNY = {**settings.JOURNY, "INTERNAL_IPS": [], "SKIP_REQUEST": lambda request: True}
    client.get("/page/")
    assert [op for op in get_journy().backend.operations if op.kind == "link"] == []
    settings.JOURNY = {**settings.JOURNY, "SKIP_REQUEST": None}
    client.get("/page/")  # neither filter: the device is linked, so the two checks above could fail
    assert [op.kind for op in get_journy().backend.operations if op.kind == "link"] == ["link"]


def test_a_request_without_the_cookie_never_touches_the_session_or_the_user(outbox):
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"{name} was read")

    request = RequestFactory().get("/page/")
    request.session = Untouchable()
    request.user = Untouchable()
    middleware = JournyMiddleware(lambda r: "response")
    assert middleware(request) == "response"


def test_the_middleware_links_in_an_async_stack(ada, outbox, settings):
    client = AsyncClient()
    client.force_login(ada)  # not aforce_login(), which Django 4.2 does not have

    async def scenario():
        client.cookies["__journey"] = "device-async"
        first = await client.get("/async/")
        second = await client.get("/async-lazy/")
        return first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == second.status_code == 200
    assert links(outbox) == [("device-async", str(ada.pk))]
    assert client.session[SESSION_KEY] == f"{ada.pk}\ndevice-async"  # the record the sync path keeps


def test_the_middleware_is_async_capable():
    async def get_response(request):
        return "response"

    middleware = JournyMiddleware(get_response)
    assert asyncio.run(middleware(RequestFactory().get("/"))) == "response"


def test_the_middleware_without_the_app_installed_is_an_error_at_start_up(settings):
    from django.core.exceptions import ImproperlyConfigured

    from journy_django.middleware import JournyMiddleware

    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "journy_django"]
    with pytest.raises(ImproperlyConfigured, match="'journy_django' is not in INSTALLED_APPS"):
        JournyMiddleware(lambda request: None)
