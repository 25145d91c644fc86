"""No secret in Django's error reports: the DEBUG page, the admins' error e-mails, the settings' ``repr`` and the
log, with distinctive values of ``JOURNY["API_KEY"]`` and ``JOURNY["VERIFICATION_SECRET"]``."""

from __future__ import annotations

import logging
import pprint
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.test import Client
from django.urls import path
from django.utils.log import AdminEmailHandler

import journy_django
from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY, Emulator
from journy_django.conf import JournyConfigurationError, get_journy, journy_settings, worker_client
from tests.core.test_secrets import KEY, SECRET, UNSENDABLE_KEYS, held, leaked, log_report, raised, report_of

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def _track_without_anyone(request: HttpRequest) -> HttpResponse:
    journy_django.track("exported_report")  # neither a user nor an account: raises InvalidArgumentError
    return HttpResponse("unreachable")


def _track_for_user_one(request: HttpRequest) -> HttpResponse:
    journy_django.track("exported_report", user="1")
    return HttpResponse("ok")


def _page(request: HttpRequest) -> HttpResponse:
    return render(request, "testapp/page.html")


def bad_current_account(request: HttpRequest) -> Any:
    """JOURNY["CURRENT_ACCOUNT"] returning what no account ID can be: the snippet's rendering fails deep inside."""
    return 1.5


urlpatterns = [
    path("track-nobody/", _track_without_anyone),
    path("track/", _track_for_user_one),
    path("page/", _page),
]


@pytest.fixture
def distinctive(settings: Any) -> Any:
    """The test settings with distinctive key and secret, this module's views, and admins to mail."""
    settings.ROOT_URLCONF = __name__
    settings.JOURNY = {**settings.JOURNY, "API_KEY": KEY, "VERIFICATION_SECRET": SECRET}
    settings.ADMINS = ["admin@acme.test"] if django.VERSION >= (6,) else [("Admin", "admin@acme.test")]
    return settings


@pytest.fixture
def admins_mail() -> Iterator[AdminEmailHandler]:
    """Django's AdminEmailHandler with the HTML report, on the request logger (besides Django's default one, which
    mails the text report when DEBUG is off) and on journy's."""
    handler = AdminEmailHandler(include_html=True)
    handler.setLevel(logging.ERROR)
    loggers = [logging.getLogger("django.request"), logging.getLogger("journy")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def mailed(message: Any) -> str:
    """Everything an admin reads in an error e-mail: subject, text body, and the HTML alternative."""
    return "\n".join([message.subject, message.body, *(alternative[0] for alternative in message.alternatives)])


def test_debug_page_of_a_view_whose_track_call_raises_shows_neither_key_nor_secret(distinctive: Any) -> None:
    distinctive.DEBUG = True
    # runserver's request.META carries the process environment: the key may be there too.
    response = Client(raise_request_exception=False).get("/track-nobody/", JOURNY_API_KEY=KEY)
    page = response.content.decode()
    assert response.status_code == 500
    assert "InvalidArgumentError" in page and "journy_django/api.py" in page  # the frames, with their variables
    assert "VERIFICATION_SECRET" in page  # the settings section lists JOURNY, its secrets masked by Django
    assert leaked(page) == []


def test_debug_page_of_a_failure_deep_in_journy_shows_neither_key_nor_secret(distinctive: Any) -> None:
    distinctive.DEBUG = True
    distinctive.JOURNY = {**distinctive.JOURNY, "QUEUE": None, "API_URL": "ftp://journy.example.com"}
    response = Client(raise_request_exception=False).get("/track/")
    page = response.content.decode()
    assert response.status_code == 500
    assert "JournyConfigurationError" in page and "build_journy" in page
    assert leaked(page) == []


def test_admins_error_email_of_a_failing_view_shows_neither_key_nor_secret(
    distinctive: Any, admins_mail: AdminEmailHandler, mailoutbox: list[Any]
) -> None:
    response = Client(raise_request_exception=False).get("/track-nobody/")
    assert response.status_code == 500
    # Django's own mail_admins handler (text) and ours, with the HTML report of every frame's variables.
    [html] = [message.alternatives[0][0] for message in mailoutbox if message.alternatives]
    assert "journy_django/api.py" in html and all("journy_django/api.py" in m.body for m in mailoutbox)
    assert leaked("\n".join(mailed(message) for message in mailoutbox)) == []


def test_a_snippet_error_mailed_to_admins_and_logged_shows_neither_key_nor_secret(
    distinctive: Any, admins_mail: AdminEmailHandler, mailoutbox: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    distinctive.DEBUG = True  # rendering errors are logged at ERROR then
    distinctive.JOURNY = {**distinctive.JOURNY, "CURRENT_ACCOUNT": bad_current_account}
    client = Client()
    client.force_login(User.objects.create_user("ada", "ada@acme.test"))
    with caplog.at_level(logging.DEBUG):
        page = client.get("/page/").content.decode()
    assert "error while rendering the snippet" in page  # the page itself still renders
    [message] = mailoutbox
    assert "render_snippet" in message.body  # the traceback reaches the renderer's frame
    assert leaked(mailed(message)) == []
    assert leaked(log_report(caplog.records)) == []


def test_the_settings_and_what_is_built_from_them_hold_secrets_only_redacted(distinctive: Any) -> None:
    config = journy_settings()
    assert config["API_KEY"] == KEY and config["VERIFICATION_SECRET"] == SECRET  # still the values, as str
    assert leaked(held(config)) == []
    assert leaked(pprint.pformat(config)) == []  # what Django's debug page prints for a variable
    assert leaked(held(get_journy())) == []
    with worker_client() as client:
        assert leaked(held(client)) == []


@pytest.mark.parametrize(("key", "problem"), UNSENDABLE_KEYS[:3])
def test_an_api_key_that_cannot_be_sent_is_refused_naming_the_setting(distinctive: Any, key: str, problem: str) -> None:
    distinctive.JOURNY = {**distinctive.JOURNY, "API_KEY": key, "QUEUE": None}
    error = raised(get_journy)
    assert isinstance(error, JournyConfigurationError)
    assert "JOURNY['API_KEY']" in str(error) and problem in str(error)
    assert leaked(report_of(error)) == []


def test_no_log_record_at_debug_carries_the_key_or_the_secret(
    distinctive: Any, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    distinctive.JOURNY = {**distinctive.JOURNY, "API_URL": emulator.url, "QUEUE": None}
    emulator.configure(api_keys={KEY: ALL_PERMISSIONS})
    caplog.set_level(logging.DEBUG)
    try:
        client = Client(raise_request_exception=False)
        client.force_login(User.objects.create_user("ada", "ada@acme.test"))  # synced to journy.io
        assert "verification" in client.get("/page/").content.decode()
        assert client.get("/track/").status_code == 200
        assert get_journy().flush(timeout=10)
        emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})  # the key is now refused: 401
        assert client.get("/track/").status_code == 200
        assert get_journy().flush(timeout=10)
        distinctive.JOURNY = {**distinctive.JOURNY, "CURRENT_ACCOUNT": bad_current_account}
        client.get("/page/")  # a rendering error, logged with its traceback
        distinctive.JOURNY = {**distinctive.JOURNY, "API_KEY": UNSENDABLE_KEYS[0][0]}
        try:  # refused at once or failing at delivery: either way, no log line may show it
            journy_django.track("never_sent", user="1")
            get_journy().flush(timeout=10)
        except JournyConfigurationError:
            pass
    finally:
        emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})
    assert "exported_report" in [e["name"] for e in emulator.state()["events"]]  # the flow really ran
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert leaked(log_report(caplog.records)) == []
