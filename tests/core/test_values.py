"""What the value serializers accept, what they refuse, and that what they produce is JSON the contract allows."""

from __future__ import annotations

import enum
import json
import logging
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journy_core.emulator import DEFAULT_API_KEY
from journy_core.errors import InvalidArgumentError
from journy_core.values import (
    MAX_SAFE_INTEGER,
    domain_problem,
    email_problem,
    serialize_datetime,
    serialize_domain,
    serialize_email,
    serialize_id,
    serialize_metadata,
    serialize_properties,
    serialize_text,
)


class Plan(enum.Enum):
    PRO = "pro"
    SEATS = 5


keys = st.text(min_size=1).filter(lambda k: k.strip() != "")
safe_integers = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
scalars = st.one_of(
    st.text(),
    st.booleans(),
    safe_integers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=4),
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
#: A string with a lone surrogate somewhere: what json.loads('"\\ud800"') returns, which UTF-8 cannot encode.
surrogate_texts = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=5),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.text(max_size=5),
)
#: Integers journy.io and browsers cannot read exactly (10**400 becomes Infinity), as int or whole Decimal.
unsafe_numbers = st.one_of(
    st.integers(min_value=MAX_SAFE_INTEGER + 1),
    st.integers(max_value=-MAX_SAFE_INTEGER - 1),
    st.just(10**400),
    st.just(Decimal("1e400")),
    st.just(Decimal("1" + "0" * 400 + ".5")),
    st.just(Decimal(2**53)),
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


@given(st.one_of(st.text().filter(lambda s: s.strip() != "" and "\x00" not in s), st.integers(), st.uuids()))
def test_ids_of_str_int_and_uuid_become_strings(value: object) -> None:
    assert serialize_id(value, "user_id") == str(value)


@pytest.mark.parametrize("value", ["", "  ", "\t\n", "\x00", "user-\x001", True, 1.5, b"42", None, object()])
def test_other_ids_are_rejected_naming_the_argument(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_id(value, "account_id")
    assert info.value.argument == "account_id"
    assert str(info.value).startswith("account_id:")


def test_an_iso_string_is_accepted_as_a_datetime_and_garbage_is_not() -> None:
    assert serialize_datetime("2024-01-02T03:04:05Z", "triggered_at") == "2024-01-02T03:04:05+00:00"
    with pytest.raises(InvalidArgumentError, match="not an ISO 8601 datetime"):
        serialize_datetime("yesterday", "triggered_at")


# -- values UTF-8 or JSON numbers cannot carry ------------------------------------------------------------


@given(keys, st.one_of(surrogate_texts, st.lists(surrogate_texts, min_size=1)))
def test_a_property_value_with_a_lone_surrogate_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_properties({key: value})
    assert info.value.argument.startswith(f"properties[{key!r}]")
    assert "lone surrogate" in str(info.value)
    str(info.value).encode("utf-8")  # the message itself can be logged and shown


@given(keys, surrogate_texts)
def test_a_metadata_value_with_a_lone_surrogate_is_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_metadata({key: value})
    assert info.value.argument == f"metadata[{key!r}]"


@given(surrogate_texts)
def test_a_key_with_a_lone_surrogate_is_refused(key: str) -> None:
    with pytest.raises(InvalidArgumentError, match="lone surrogate") as info:
        serialize_metadata({key: "x"})
    assert info.value.argument == f"metadata[{key!r}]"


@given(surrogate_texts.filter(lambda text: text.strip() != ""))
def test_ids_and_names_with_a_lone_surrogate_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="lone surrogate") as info:
        serialize_id(text, "user_id")
    assert info.value.argument == "user_id"
    with pytest.raises(InvalidArgumentError, match="lone surrogate") as info:
        serialize_text(text, "name")
    assert info.value.argument == "name"


def test_only_text_utf8_cannot_encode_is_refused_and_a_list_item_is_named_by_its_index() -> None:
    text = "Zoë 🚀 中文 \u2028"
    assert serialize_properties({"name": text, "tags": [text]}) == {"name": text, "tags": [text]}
    assert serialize_metadata({text: text}) == {text: text}
    assert serialize_id(text, "user_id") == text
    with pytest.raises(InvalidArgumentError) as info:
        serialize_properties({"tags": [text, "b\udc80"]})
    assert info.value.argument == "properties['tags'][1]"


@given(keys, unsafe_numbers)
def test_numbers_beyond_what_journy_io_reads_exactly_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_metadata({key: value})
    assert info.value.argument == f"metadata[{key!r}]"
    with pytest.raises(InvalidArgumentError):
        serialize_properties({key: value})


@pytest.mark.parametrize("limit", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
def test_integers_are_accepted_up_to_2_53_minus_1_and_refused_one_beyond(limit: int) -> None:
    assert serialize_metadata({"n": limit, "d": Decimal(limit), "f": 1e300}) == {"n": limit, "d": limit, "f": 1e300}
    beyond = limit + (1 if limit > 0 else -1)
    for value in (beyond, Decimal(beyond)):
        with pytest.raises(InvalidArgumentError, match="2\\*\\*53") as info:
            serialize_properties({"n": value})
        assert info.value.argument == "properties['n']"


def test_a_huge_integer_id_is_refused_naming_the_argument_not_with_a_python_error() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        serialize_id(10**5000, "account_id")
    assert info.value.argument == "account_id"


# -- delivery: what the API cannot take is refused at the call site, never lost in the delivery thread ------


def test_a_lone_surrogate_or_a_huge_number_never_reaches_the_delivery_thread(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from journy_core import Journy

    journy = Journy(DEFAULT_API_KEY, base_url=emulator.url)
    try:
        with caplog.at_level(logging.WARNING, logger="journy"):
            for metadata in ({"note": json.loads('"\\ud800"')}, {"count": 10**400}):
                with pytest.raises(InvalidArgumentError) as info:
                    journy.track("left_a_note", user_id="1", metadata=metadata)
                assert info.value.argument in ("metadata['note']", "metadata['count']")
            with pytest.raises(InvalidArgumentError):
                journy.upsert_user(user_id=json.loads('"\\udc80"'))
            journy.track("left_a_note", user_id="1", metadata={"note": "Zoë"})  # the next good one goes out
            assert journy.flush(10)
        stats = journy.stats()
    finally:
        journy.close(5)
    assert [call["body"]["metadata"] for call in emulator.calls("/track")] == [{"note": "Zoë"}]
    assert stats["failed"] == 0 and stats["sent"] == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# -- email addresses and domain names (the spec's format: email and format: top-level-domain) -----------------

REAL_EMAILS = [
    "ada@acme.com",
    "Ada.Lovelace+journy@Mail.Acme.co.uk",  # plus-addressing, subdomains, uppercase
    "o'brien_2@acme.io",
    "jörg@münchen.de",  # internationalized, as typed
    "用户@例子.广告",
    "ada@xn--mnchen-3ya.de",  # punycode
    "a@b.c",
]
BAD_EMAILS = [
    ("not-an-email", "no @"),
    ("ada @acme.com", "whitespace"),
    ("ada@acme.com ", "whitespace"),
    ("@acme.com", "nothing before the @"),
    ("ada@", "no dot"),
    ("ada@localhost", "no dot"),
    ("ada..l@acme.com", "two dots"),
    (".ada@acme.com", "two dots"),
    ('"ada"@acme.com', "quoted"),
    ("ada@10.0.0.1", "IP address"),
    ("ada@https://acme.com", "URL"),
    ("a" * 65 + "@acme.com", "64 characters"),
]
REAL_DOMAINS = [
    "acme.com",
    "ACME.COM",
    "app.eu.acme.co.uk",
    "acme-inc.io",
    "münchen.de",
    "xn--mnchen-3ya.de",
    "1password.com",
]
BAD_DOMAINS = [
    ("https://acme.com/", "URL"),
    ("acme.com/pricing", "URL"),
    ("not a domain", "whitespace"),
    ("localhost", "no dot"),
    ("acme.com.", "empty label"),
    ("-acme.com", "label '-acme'"),
    ("acme_inc.com", "label 'acme_inc'"),
    ("a" * 64 + ".com", "63"),
    ("192.168.0.1", "IP address"),
]


@pytest.mark.parametrize("email", REAL_EMAILS)
def test_real_world_email_addresses_are_accepted_unchanged(email: str) -> None:
    assert email_problem(email) is None
    assert serialize_email(email, "email") == email


@pytest.mark.parametrize(("email", "reason"), BAD_EMAILS)
def test_malformed_email_addresses_are_refused_naming_the_argument_and_why(email: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not an email address") as info:
        serialize_email(email, "users[3].email")
    assert info.value.argument == "users[3].email"
    assert reason in str(info.value)


@pytest.mark.parametrize("domain", REAL_DOMAINS)
def test_real_world_domain_names_are_accepted_unchanged(domain: str) -> None:
    assert domain_problem(domain) is None
    assert serialize_domain(domain, "domain") == domain


@pytest.mark.parametrize(("domain", "reason"), BAD_DOMAINS)
def test_malformed_domain_names_are_refused_naming_the_argument_and_why(domain: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a domain name") as info:
        serialize_domain(domain, "domain")
    assert info.value.argument == "domain"
    assert reason in str(info.value)


def test_an_email_or_domain_that_is_not_a_string_is_refused_as_before() -> None:
    with pytest.raises(InvalidArgumentError, match="expected an email address, got int"):
        serialize_email(42, "email")
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        serialize_domain("  ", "domain")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_carry_is_refused_with_a_way_out_that_the_argument_accepts(number: float) -> None:
    with pytest.raises(InvalidArgumentError, match=r"use a finite number or None$"):
        serialize_properties({"score": number})
    assert serialize_properties({"score": None}) == {"score": None}  # what the message offers is accepted
    with pytest.raises(InvalidArgumentError, match=r"use a finite number or leave the key out$"):
        serialize_metadata({"score": number})
    assert serialize_metadata({}) == {}
