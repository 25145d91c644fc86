# mypy: disable-error-code="import-untyped"
"""The admin action "Sync to journy.io", for the user admin and the account admin.

Add it where you register those admins::

    from journy_django.admin import sync_to_journy

    @admin.register(Organization)
    class OrganizationAdmin(admin.ModelAdmin):
        actions = [sync_to_journy]

    UserAdmin.actions = [*UserAdmin.actions, sync_to_journy]   # the stock user admin

It queues an upsert of every selected object (accounts with their members), whatever ``pause_sync`` or the
per-object opt-out says: an admin asking for it is explicit. This module registers one admin of its own: the outbox
table's (``journy_django.outbox_admin``: pending and dead rows, "retry" and "purge").
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from journy_core import ConfigurationError
from journy_core.guard import report_exception

from . import outbox_admin  # noqa: F401 - registers the outbox table's admin
from .identity import is_account
from .sync import sync

__all__ = ["sync_to_journy"]


@admin.action(description="Sync to journy.io")  # type: ignore[untyped-decorator]
def sync_to_journy(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]) -> None:
    queued = failed = 0
    for obj in queryset.iterator(chunk_size=500):
        try:
            sync(obj, members=is_account(obj))
        except (ConfigurationError, ValueError) as exc:
            modeladmin.message_user(request, f"Could not sync {obj}: {exc}", messages.ERROR)
            failed += 1
            if isinstance(exc, ConfigurationError):
                return
        except Exception as exc:  # the app's own code (a property callable) raised: that object alone, logged
            report_exception(f"syncing {obj._meta.label} (id {obj.pk}) to journy.io from the admin")
            name = type(exc).__name__
            modeladmin.message_user(request, f"Could not sync {obj}: {name} (see the journy log).", messages.ERROR)
            failed += 1
        else:
            queued += 1
    if queued:
        message = ngettext(
            "%(count)d object queued for journy.io.", "%(count)d objects queued for journy.io.", queued
        ) % {"count": queued}
        modeladmin.message_user(request, message, messages.SUCCESS)
