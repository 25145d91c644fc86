from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

import journy_django

from .models import Organization


def current_organization(request: HttpRequest) -> Any:
    """JOURNY["CURRENT_ACCOUNT"]: the organization the page is about (here: the user's first one)."""
    if not request.user.is_authenticated:
        return None
    return Organization.objects.filter(members=request.user).order_by("pk").first()


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", {"organization": current_organization(request)})


@login_required
@require_POST
def export_report(request: HttpRequest) -> HttpResponse:
    organization = current_organization(request)
    # The server-side event: queued now, delivered in the background.
    journy_django.track("exported_report", user=request.user, account=organization, metadata={"format": "csv"})
    return redirect("dashboard")
