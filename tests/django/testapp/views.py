from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

import journy_django

from .models import Organization


def current_account(request: HttpRequest) -> Any:
    """JOURNY["CURRENT_ACCOUNT"]: the user's first organization."""
    user = request.user
    if not user.is_authenticated:
        return None
    return Organization.objects.filter(members=user).order_by("pk").first()


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username=request.POST["username"], password=request.POST["password"])
    if user is None:
        return HttpResponse("no", status=403)
    login(request, user)
    return HttpResponse("ok")


def page(request: HttpRequest) -> HttpResponse:
    return render(request, "testapp/page.html")


def screen_page(request: HttpRequest) -> HttpResponse:
    journy_django.set_screen(request, "Billing")
    journy_django.add_page_event(request, "opened_billing", {"tab": "invoices"})
    return render(request, "testapp/page.html")


def event_page(request: HttpRequest) -> HttpResponse:
    return render(request, "testapp/event.html", {"plan": "pro"})


def track_view(request: HttpRequest) -> HttpResponse:
    journy_django.track("exported_report", user=request.user, metadata={"rows": 3})
    return HttpResponse("ok")


async def async_page(request: HttpRequest) -> HttpResponse:
    if hasattr(request, "auser"):  # Django >= 5.0
        seen = (await request.auser()).is_authenticated
    else:  # Django 4.2 has no auser(): async views loaded the lazy request.user in a thread
        seen = await sync_to_async(lambda: request.user.is_authenticated)()
    return render(request, "testapp/page.html", {"seen": seen})


async def async_lazy_page(request: HttpRequest) -> HttpResponse:
    # Never loads the user: the tag must not force it (a sync query in the event loop would fail).
    return render(request, "testapp/page.html")
