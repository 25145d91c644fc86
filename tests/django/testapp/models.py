from __future__ import annotations

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=100)
    domain = models.CharField(max_length=100, blank=True)
    plan = models.CharField(max_length=20, default="free")
    internal_note = models.TextField(blank=True)  # not synced: saving only it sends nothing
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="organizations", blank=True)
    opted_out = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)  # soft deletion (ACCOUNT_DELETED in its tests)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.name

    def journy_should_sync(self) -> bool:
        return not self.opted_out
