"""What the value serializers accept, what they refuse, and that what they produce is JSON the contract allows."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journy_core.errors import InvalidArgumentError
from journy_core.values import serialize_datetime, serialize_id, serialize_metadata, serialize_properties


class Plan(enum.Enum):
    PRO = "pro"
    SEATS = 5


keys = st.text(min_size=1).filter(lambda k: k.strip() != "")
scalars = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.just(ZoneInfo("Europe/Brussels"))),
    st.dates(),
    st.uuids(),
    st.sampled_from(Plan),
)
string_lists = st.one_of(
    st.lists(st.text(min_size=1)),
    st.tuples(st.text(min_size=1), st.text(min_size=1)),
    st.frozensets(st.text(min_size=1)),
)
property_values = st.one_of(scalars, string_lists, st.none())
rejected_values = st.one_of(
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(-math.inf),
    st.just(Decimal("NaN")),
    st.just(Decimal("Infinity")),
    st.dictionaries(st.text(), st.integers(), max_size=2),
    st.binary(),
    st.builds(object),
    st.lists(st.integers(), min_size=1),
    st.lists(st.just(""), min_size=1),
    st.complex_numbers(),
)


def contract_property_value(value: object) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


@given(st.dictionaries(keys, property_values, max_size=8))
def test_every_accepted_property_serializes_to_json_the_contract_allows(props: dict[str, object]) -> None:
    result = serialize_properties(props)
    assert list(result) == list(props)  # keys sent as given, in order
    assert all(contract_property_value(v) for v in result.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@given(st.dictionaries(keys, scalars, max_size=8))
def test_every_accepted_metadata_serializes_to_scalars_only(meta: dict[str, object]) -> None:
    result = serialize_metadata(meta)
    assert all(isinstance(v, (str, bool, int, float)) for v in result.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@given(keys, rejected_values)
def test_unserializable_property_values_are_rejected_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_properties({key: value})
    assert info.value.argument == f"properties[{key!r}]"
    assert repr(key) in str(info.value)


@given(keys, st.one_of(rejected_values, st.none(), string_lists))
def test_metadata_rejects_lists_none_and_unserializable_values(key: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_metadata({key: value})
    assert info.value.argument == f"metadata[{key!r}]"


@given(st.booleans())
def test_booleans_stay_booleans_and_are_never_turned_into_numbers(flag: bool) -> None:
    assert serialize_properties({"b": flag})["b"] is flag
    assert serialize_metadata({"b": flag})["b"] is flag


def test_a_naive_datetime_is_taken_as_utc_and_sent_with_an_offset() -> None:
    assert serialize_properties({"at": datetime(2024, 5, 1, 12, 30)}) == {"at": "2024-05-01T12:30:00+00:00"}


def test_a_naive_datetime_is_read_in_the_configured_timezone() -> None:
    result = serialize_properties({"at": datetime(2024, 5, 1, 12, 30)}, naive_timezone=ZoneInfo("Europe/Brussels"))
    assert result == {"at": "2024-05-01T10:30:00+00:00"}


def test_an_aware_datetime_is_sent_in_utc() -> None:
    moment = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=5)))
    assert serialize_metadata({"at": moment}) == {"at": "2024-05-01T07:30:00+00:00"}


def test_a_date_becomes_its_midnight_in_utc() -> None:
    assert serialize_properties({"registered_at": date(2024, 2, 29)}) == {"registered_at": "2024-02-29T00:00:00+00:00"}


def test_decimals_integers_uuids_and_enums_become_their_json_forms() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    result = serialize_properties(
        {"mrr": Decimal("399.50"), "seats": Decimal("12"), "id": ident, "plan": Plan.PRO, "n": Plan.SEATS}
    )
    assert result == {"mrr": 399.5, "seats": 12, "id": str(ident), "plan": "pro", "n": 5}
    assert isinstance(result["seats"], int)


def test_none_deletes_a_property_and_empty_string_is_kept() -> None:
    assert serialize_properties({"gone": None, "empty": ""}) == {"gone": None, "empty": ""}


def test_a_set_of_strings_is_sent_sorted_so_the_same_value_sends_the_same_json() -> None:
    assert serialize_properties({"tags": {"b", "a", "c"}}) == {"tags": ["a", "b", "c"]}


@pytest.mark.parametrize("key", ["", "   ", 3, None, ("a",)])
def test_keys_must_be_non_empty_strings(key: object) -> None:
    with pytest.raises(InvalidArgumentError, match="keys must be non-empty strings"):
        serialize_properties({key: 1})  # type: ignore[dict-item]


def test_keys_are_sent_as_given_without_lowercasing() -> None:
    assert serialize_properties({"Plan Name": "x"}) == {"Plan Name": "x"}


def test_a_nested_dict_is_rejected_with_the_allowed_types_listed() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_properties({"address": {"city": "Ghent"}})
    assert "dict is not allowed" in str(info.value)
    assert "list/tuple/set of non-empty strings" in str(info.value)


def test_properties_must_be_a_mapping() -> None:
    with pytest.raises(InvalidArgumentError, match="expected a dict"):
        serialize_properties([("a", 1)])  # type: ignore[arg-type]


@given(st.one_of(st.text().filter(lambda s: s.strip() != ""), st.integers(), st.uuids()))
def test_ids_of_str_int_and_uuid_become_strings(value: object) -> None:
    assert serialize_id(value, "user_id") == str(value)


@pytest.mark.parametrize("value", ["", "  ", "\t\n", True, 1.5, b"42", None, object()])
def test_other_ids_are_rejected_naming_the_argument(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_id(value, "account_id")
    assert info.value.argument == "account_id"
    assert str(info.value).startswith("account_id:")


def test_an_iso_string_is_accepted_as_a_datetime_and_garbage_is_not() -> None:
    assert serialize_datetime("2024-01-02T03:04:05Z", "triggered_at") == "2024-01-02T03:04:05+00:00"
    with pytest.raises(InvalidArgumentError, match="not an ISO 8601 datetime"):
        serialize_datetime("yesterday", "triggered_at")
