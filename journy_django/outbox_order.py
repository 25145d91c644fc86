# mypy: disable-error-code="import-untyped"
"""The claim's order rule on the Django ORM: the two queries :func:`journy_core.outbox.ordering.claim_order` asks.

The rule itself (entity order, and a user's delete waiting for the earlier memberships naming that user) lives in
:mod:`journy_core.outbox.ordering`; this module only reads the table on the claim's alias.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from django.db.models import Min, Q, QuerySet

from journy_core.outbox.ordering import MEMBERSHIP_KINDS, Picked, claim_order
from journy_core.outbox.store import PENDING

__all__ = ["in_entity_order"]


def in_entity_order(rows: QuerySet[Any], picked: list[Picked]) -> list[int]:
    """The ids of ``picked`` (in id order) that may be delivered now; ``rows`` is the table on the claim's alias."""
    return claim_order(picked, partial(_first_pending, rows), partial(_memberships_before, rows))


def _first_pending(rows: QuerySet[Any], entities: set[str], held: list[int]) -> dict[str, int]:
    """Each entity's first pending row outside the claim (before the last held row)."""
    earlier = (
        rows.filter(status=PENDING, entity__in=entities, id__lt=max(held))
        .exclude(id__in=held)
        .values("entity")
        .annotate(first=Min("id"))
        .order_by()
    )
    return {item["entity"]: item["first"] for item in earlier}


def _memberships_before(
    rows: QuerySet[Any], held: list[int], given_back: list[int], before: int
) -> Iterator[tuple[int, str]]:
    """The pending membership rows before ``before`` that this claim does not deliver (outside it, or given back)."""
    earlier = (
        rows.filter(status=PENDING, kind__in=MEMBERSHIP_KINDS, id__lt=before)
        .filter(~Q(id__in=held) | Q(id__in=given_back))
        .values_list("id", "operation")
    )
    return ((int(row_id), str(text)) for row_id, text in earlier.iterator())
