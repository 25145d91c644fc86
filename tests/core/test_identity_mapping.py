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


@pytest.mark.parametrize(
    "spec",
    [
        ["title", "plan"],
        {"name": "title", "registered_at": "created"},
        {"full_name": "get_full_name"},
        {"owner": "owner.first_name"},
        lambda team: {"name": team.title, "seats": 7},
    ],
    ids=["list", "dict", "method", "dotted", "callable"],
)
def test_values_are_the_maps_properties_in_order_each_with_its_type(spec: object) -> None:
    team = Team()
    team.get_full_name = lambda: "Acme Corp"  # type: ignore[attr-defined]
    team.owner = DjangoLikeUser()  # type: ignore[attr-defined]
    prop_map = property_map(spec, "JOURNY_ACCOUNT_PROPERTIES", None, DEFAULT_ACCOUNT_PROPERTIES)
    assert prop_map is not None
    properties = prop_map(team)
    assert prop_map.values(team) == tuple((name, type(value), value) for name, value in properties.items())
    assert properties and all(not callable(value) for value in properties.values())


class CountingAttribute:
    """A data descriptor that reads the instance dict, as SQLAlchemy's mapped attributes do, counting its calls."""

    def __init__(self, name: str, loaded: str) -> None:
        self.name, self.loaded, self.calls = name, loaded, 0

    def __get__(self, obj: object, owner: type | None = None) -> object:
        self.calls += 1
        if obj is None:
            return self
        return obj.__dict__.setdefault(self.name, self.loaded)  # an expired value is loaded into the dict

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__[self.name] = value


def test_a_map_reading_the_instance_dict_uses_the_attribute_only_for_a_value_not_loaded() -> None:
    class Mapped:
        name = CountingAttribute("name", "from the database")
        plan = CountingAttribute("plan", "pro")

    prop_map = property_map(["name", "plan"], "JOURNY_ACCOUNT_PROPERTIES", Mapped, DEFAULT_ACCOUNT_PROPERTIES)
    assert prop_map is not None
    prop_map.read_instance_dict()
    team = Mapped()
    team.name, team.plan = "Acme", "free"
    Mapped.__dict__["name"].calls = Mapped.__dict__["plan"].calls = 0  # the start-up check looked them up
    assert prop_map.values(team) == (("name", str, "Acme"), ("plan", str, "free"))
    assert Mapped.__dict__["name"].calls == Mapped.__dict__["plan"].calls == 0
    del team.__dict__["plan"]  # expired: the attribute loads it
    assert prop_map(team) == {"name": "Acme", "plan": "pro"}
    assert Mapped.__dict__["plan"].calls == 1
