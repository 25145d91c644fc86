"""``JOURNY["INJECT_SNIPPET"]``: pages whose templates do not use ``{% journy_snippet %}`` get the snippet all the
same, from the middleware, in sync and async stacks."""

from __future__ import annotations

import asyncio
import re

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import Context, Template
from django.test import AsyncClient
from django.urls import path

from journy_core import verification_hash

User = get_user_model()
SECRET = "website-secret"  # tests/django/settings.py

BARE = "<!doctype html><html><head><title>{{ title }}</title></head><body>hi</body></html>"


def _bare(request):
    return HttpResponse(Template(BARE).render(Context({"title": "Home"})))


async def _bare_async(request):
    return HttpResponse(Template(BARE).render(Context({"title": "Home"})))


def _tagged(request):
    template = Template("{% load journy %}<html><head>{% journy_snippet %}</head><body></body></html>")
    return HttpResponse(template.render(Context({"request": request})))


urlpatterns = [
    path("bare/", _bare),
    path("bare-async/", _bare_async),
    path("tagged/", _tagged),
    path("json/", lambda request: JsonResponse({"html": "<html><head></head></html>"})),
    path("stream/", lambda request: StreamingHttpResponse(iter(["<html><head>", "</head></html>"]))),
]


@pytest.fixture
def injecting(settings):
    settings.ROOT_URLCONF = __name__
    settings.JOURNY = {**settings.JOURNY, "INJECT_SNIPPET": True}


@pytest.fixture
def ada(db):
    return User.objects.create_user("ada", "ada@acme.com", password="pw")


def identify_hash(html: str) -> str:
    return re.search(r'journy\("identify", \{[^}]*"verification":"(\w+)"', html).group(1)


def test_a_page_without_the_tag_gets_the_verified_snippet_in_its_head(client, ada, injecting):
    client.force_login(ada)
    response = client.get("/bare/")
    html = response.content.decode()
    assert html.index("window.journy=") < html.index("</head>")
    assert identify_hash(html) == verification_hash(SECRET, str(ada.pk))


@pytest.mark.django_db(transaction=True)  # the async stack reads the session from another thread
def test_an_async_view_in_an_async_stack_gets_it_too(ada, injecting):
    client = AsyncClient()
    client.force_login(ada)  # not aforce_login(), which Django 4.2 does not have
    response = asyncio.run(client.get("/bare-async/"))
    html = response.content.decode()
    assert html.index("window.journy=") < html.index("</head>")
    assert identify_hash(html) == verification_hash(SECRET, str(ada.pk))


def test_a_page_whose_template_has_the_tag_gets_it_once(client, ada, injecting):
    client.force_login(ada)
    assert client.get("/tagged/").content.decode().count("window.journy=") == 1


def test_json_and_streamed_responses_are_left_as_they_are(client, ada, injecting):
    client.force_login(ada)
    assert b"window.journy" not in client.get("/json/").content
    assert b"".join(client.get("/stream/").streaming_content) == b"<html><head></head></html>"


def test_without_the_option_a_page_without_the_tag_has_no_snippet(client, ada, settings):
    settings.ROOT_URLCONF = __name__
    client.force_login(ada)
    assert b"window.journy" not in client.get("/bare/").content
