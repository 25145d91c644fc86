from django.conf import settings
from django.db import models


class Organization(models.Model):
    """The account model: journy.io receives it as an account, its members as memberships."""

    name = models.CharField(max_length=100)
    plan = models.CharField(max_length=20, default="free")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="organizations", blank=True)

    def __str__(self) -> str:
        return self.name
