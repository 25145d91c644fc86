"""Who is left out of tracking: the one rule both adapters apply (journy_core.filters)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from journy_core.config import DJANGO_SOURCE, FLASK_SOURCE, read_config
from journy_core.filters import is_internal, parse_networks, skip_reason

STAFF = SimpleNamespace(is_staff=True)
CUSTOMER = SimpleNamespace(is_staff=False)
REQUEST = object()


def test_staff_are_left_out_only_with_skip_staff_and_the_reason_names_the_option_as_spelt() -> None:
    assert skip_reason(read_config({}, DJANGO_SOURCE), user=STAFF) is None
    assert skip_reason(read_config({"SKIP_STAFF": True}, DJANGO_SOURCE), user=STAFF) == (
        "staff user (JOURNY['SKIP_STAFF'])"
    )
    assert skip_reason(read_config({"SKIP_STAFF": True}, FLASK_SOURCE), user=CUSTOMER) is None
    assert skip_reason(read_config({"SKIP_STAFF": True}, FLASK_SOURCE), user=STAFF) == "staff user (JOURNY_SKIP_STAFF)"


def test_internal_addresses_are_left_out_and_an_unparsable_address_is_not_internal() -> None:
    config = read_config({"INTERNAL_IPS": ["10.0.0.0/8", "::1"]}, FLASK_SOURCE)
    assert skip_reason(config, address="10.1.2.3", request=REQUEST) == "internal IP (JOURNY_INTERNAL_IPS)"
    assert skip_reason(config, address="::1", request=REQUEST) is not None
    assert skip_reason(config, address="192.0.2.1", request=REQUEST) is None
    assert skip_reason(config, address="unknown", request=REQUEST) is None
    assert not is_internal(None, parse_networks(["10.0.0.0/8"], "x"))


def test_skip_request_is_asked_with_the_request_and_impersonation_only_when_configured() -> None:
    seen: list[Any] = []
    config = read_config({"SKIP_REQUEST": lambda request: seen.append(request) or True}, DJANGO_SOURCE)
    assert skip_reason(config, request=REQUEST) == "JOURNY['SKIP_REQUEST'] said so"
    assert seen == [REQUEST]
    assert skip_reason(config, user=CUSTOMER) is None  # outside a request only the user is judged
    asked: list[bool] = []
    default = read_config({}, DJANGO_SOURCE)
    assert skip_reason(default, request=REQUEST, impersonated=lambda: asked.append(True) or True) == (
        "impersonated session (JOURNY['SKIP_IMPERSONATED'])"
    )
    off = read_config({"SKIP_IMPERSONATED": False}, DJANGO_SOURCE)
    assert skip_reason(off, request=REQUEST, impersonated=lambda: asked.append(False) or True) is None
    assert asked == [True]


def test_nothing_is_tracked_when_disabled() -> None:
    assert skip_reason(read_config({"ENABLED": False}, FLASK_SOURCE)) == "JOURNY_ENABLED is False"
