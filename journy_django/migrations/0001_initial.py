# mypy: disable-error-code="import-untyped"
# ruff: noqa: RUF012 - Django reads these class attributes
"""The outbox table (``journy_outbox``), made with ``makemigrations`` (Django 5.2).

Checked on SQLite, PostgreSQL and MariaDB."""

from django.db import migrations, models


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="OutboxRow",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("entity", models.CharField(blank=True, max_length=255)),
                ("kind", models.CharField(max_length=40)),
                ("operation", models.TextField(help_text="The operation, as JSON.")),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "pending"), ("dead", "dead"), ("delivered", "delivered")],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("attempts", models.IntegerField(default=0)),
                ("created_at", models.DateTimeField()),
                ("next_attempt_at", models.DateTimeField()),
                ("locked_until", models.DateTimeField(blank=True, null=True)),
                ("locked_by", models.CharField(blank=True, default="", max_length=64)),
                ("last_error", models.TextField(blank=True, default="")),
            ],
            options={
                "verbose_name": "outbox row",
                "verbose_name_plural": "outbox",
                "db_table": "journy_outbox",
                "indexes": [
                    models.Index(fields=["status", "next_attempt_at", "id"], name="journy_outbox_due"),
                    models.Index(fields=["entity", "id"], name="journy_outbox_entity"),
                ],
            },
        ),
    ]
