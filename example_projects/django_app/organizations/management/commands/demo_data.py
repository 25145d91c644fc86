"""``manage.py demo_data``: the demo user (ada / demo-password) and her organization, idempotent."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from organizations.models import Organization

USERNAME, PASSWORD = "ada", "demo-password"


class Command(BaseCommand):
    help = "Create the demo user and organization (synced to journy.io after the commit)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--first-name", default="Ada")
        parser.add_argument("--last-name", default="Lovelace")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            user, _ = get_user_model().objects.update_or_create(
                username=USERNAME,
                defaults={
                    "email": "ada@acme.example",
                    "first_name": options["first_name"],
                    "last_name": options["last_name"],
                },
            )
            user.set_password(PASSWORD)
            user.save()
            organization, _ = Organization.objects.get_or_create(name="ACME, Inc", defaults={"plan": "pro"})
            organization.members.add(user)
        self.stdout.write(f"demo user {USERNAME!r} (id {user.pk}) in {organization.name!r} (id {organization.pk})")
