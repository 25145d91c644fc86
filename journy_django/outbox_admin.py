# mypy: disable-error-code="import-untyped"
"""The admin of the outbox table: pending, dead and kept delivered rows, with filters, and the "Retry" and
"Purge" actions. Read-only otherwise: rows are written by the app's transactions and settled by the relay.

Registered by ``journy_django.admin`` (which Django's admin autodiscovery imports).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from journy_core.outbox.store import DEAD

from .models import OutboxRow
from .outbox import DjangoStore

__all__ = ["OutboxRowAdmin"]


@admin.register(OutboxRow)
class OutboxRowAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Lists the rows; "Retry" makes dead rows pending again, "Purge" deletes dead rows."""

    list_display = ("id", "kind", "entity", "status", "attempts", "created_at", "next_attempt_at", "short_error")
    list_filter = ("status", "kind", "created_at")
    search_fields = ("entity",)
    ordering = ("id",)
    actions = ("retry_rows", "purge_rows")
    readonly_fields = tuple(field.name for field in OutboxRow._meta.fields)
    date_hierarchy = "created_at"

    @admin.display(description="last error")  # type: ignore[untyped-decorator]
    def short_error(self, row: OutboxRow) -> str:
        error: str = row.last_error
        return error if len(error) <= 80 else error[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # "Purge" deletes dead rows only: a pending row is a committed change not yet delivered

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The actions need the change permission; a row's own page stays read-only.
        return obj is None and bool(super().has_change_permission(request, obj))

    @admin.action(description="Retry the selected dead rows", permissions=["change"])  # type: ignore[untyped-decorator]
    def retry_rows(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.filter(status=DEAD).values_list("id", flat=True))
        count = DjangoStore(using=queryset.db).retry_dead(ids)
        message = ngettext("%(count)d row is pending again.", "%(count)d rows are pending again.", count)
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    @admin.action(description="Purge the selected dead rows", permissions=["change"])  # type: ignore[untyped-decorator]
    def purge_rows(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        selected = queryset.count()
        count, _ = queryset.filter(status=DEAD).delete()
        message = ngettext("%(count)d dead row purged.", "%(count)d dead rows purged.", count)
        if selected > count:
            message += f" {selected - count} pending or delivered row(s) left as they are."
        self.message_user(request, message % {"count": count}, messages.SUCCESS)
