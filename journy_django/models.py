# mypy: disable-error-code="import-untyped"
"""The outbox table, ``journy_outbox``: one row per operation waiting for the relay (the ``outbox`` backend).

The same table as the SQLAlchemy one (``docs/outbox.md``): the columns and indexes are the shared design, so a
project may read it from either side. Rows hold personal data (emails, properties) only until they are delivered;
dead rows are kept until retried or purged.
"""

from __future__ import annotations

from django.db import models

from journy_core.outbox.store import DEAD, MAX_ENTITY_LENGTH, PENDING

__all__ = ["DELIVERED", "OutboxRow"]

#: A delivered row the store keeps (``keep_delivered``) until it is purged.
DELIVERED = "delivered"


class OutboxRow(models.Model):  # type: ignore[misc]
    """One operation waiting for the relay, written in the transaction of the change it describes."""

    STATUS_CHOICES = ((PENDING, "pending"), (DEAD, "dead"), (DELIVERED, "delivered"))

    # The id orders an entity's rows: the commit order of its changes (see journy_core.outbox.store).
    id = models.BigAutoField(primary_key=True)
    entity = models.CharField(max_length=MAX_ENTITY_LENGTH, blank=True)
    kind = models.CharField(max_length=40)
    operation = models.TextField(help_text="The operation, as JSON.")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)
    locked_by = models.CharField(max_length=64, blank=True, default="")
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "journy_outbox"
        verbose_name = "outbox row"
        verbose_name_plural = "outbox"
        indexes = [  # noqa: RUF012 - Django reads Meta
            # The claim: due pending rows in id order.
            models.Index(fields=["status", "next_attempt_at", "id"], name="journy_outbox_due"),
            # The per-entity order rule: an entity's earlier pending rows.
            models.Index(fields=["entity", "id"], name="journy_outbox_entity"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.entity or '-'} ({self.status})"
