"""How a model becomes an identity and properties, the same in both adapters (journy_core.mapping)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from journy_core.errors import ConfigurationError
from journy_core.mapping import (
    DEFAULT_ACCOUNT_PROPERTIES,
    DEFAULT_USER_PROPERTIES,
    default_spec,
    identifier,
    property_map,
    read_identity,
    read_text,
)


class DjangoLikeUser:
    first_name = "Ada"
    last_name = "Lovelace"
    date_joined = "2024-01-15"

    def get_full_name(self) -> str:
        return "Ada Lovelace"


class Team:
    title = "Acme"
    plan = "pro"
    created = "2023-02-01"


def test_default_properties_are_those_the_model_has_from_the_first_attribute_found() -> None:
    assert default_spec(DjangoLikeUser, DEFAULT_USER_PROPERTIES) == {
        "full_name": "get_full_name",
        "first_name": "first_name",
        "last_name": "last_name",
        "registered_at": "date_joined",
    }
    assert default_spec(Team, DEFAULT_ACCOUNT_PROPERTIES) == {
        "name": "title",
        "plan": "plan",
        "registered_at": "created",
    }
    mapping = property_map(None, "USER_PROPERTIES", DjangoLikeUser, DEFAULT_USER_PROPERTIES)
    assert mapping is not None
    assert mapping(DjangoLikeUser())["full_name"] == "Ada Lovelace"
    assert property_map(None, "USER_PROPERTIES", None, DEFAULT_USER_PROPERTIES) is None


def test_a_map_naming_an_attribute_the_model_lacks_fails_naming_setting_model_and_attribute() -> None:
    with pytest.raises(ConfigurationError) as caught:
        property_map({"plan": "pricing_plan"}, "JOURNY_ACCOUNT_PROPERTIES", Team, DEFAULT_ACCOUNT_PROPERTIES)
    message = str(caught.value)
    assert "JOURNY_ACCOUNT_PROPERTIES" in message
    assert "'pricing_plan'" in message
    assert "Team" in message
    unchecked = property_map({"plan": "pricing_plan"}, "x", Team, DEFAULT_ACCOUNT_PROPERTIES, check=False)
    assert unchecked is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" ada@acme.test ", "ada@acme.test"), ("", None), ("   ", None), (None, None), (42, None)],
)
def test_an_email_or_domain_is_a_stripped_non_blank_string_or_nothing(value: object, expected: str | None) -> None:
    assert read_text(SimpleNamespace(email=value), "email") == expected
    assert read_text(SimpleNamespace(profile=SimpleNamespace(email=value)), "profile.email") == expected
    assert read_text(SimpleNamespace(email="x@y.z"), None) is None


def test_ids_are_strings_and_booleans_or_none_are_no_id() -> None:
    key = uuid.uuid4()
    assert identifier(7) == "7"
    assert identifier(key) == str(key)
    assert identifier("u-1") == "u-1"
    assert identifier(None) is None
    assert identifier(True) is None
    assert read_identity(SimpleNamespace(public_id="p-9"), "public_id") == "p-9"
    assert read_identity(SimpleNamespace(pk=3), lambda obj: f"team-{obj.pk}") == "team-3"
