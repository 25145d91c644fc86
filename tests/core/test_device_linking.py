"""The device-linking rule of journy_core.linking, with a plain dict as the session."""

from __future__ import annotations

from typing import Any

import pytest

from journy_core import InvalidArgumentError
from journy_core.linking import (
    MAX_REMEMBERED,
    SESSION_KEY,
    Identity,
    device_to_link,
    link_device,
    linked_already,
    plan_link,
)
from journy_core.operations import Operation


def link(
    session: dict[str, Any] | None,
    cookie: object,
    identity: Identity | None = ("42", None),
    *,
    enabled: bool = True,
    link_devices: bool = True,
    skip: str | None = None,
) -> list[Operation]:
    """The operations one run of the rule queues."""
    queued: list[Operation] = []
    link_device(
        session,
        cookie,
        enabled=enabled,
        link_devices=link_devices,
        identify=lambda: identity,
        enqueue=queued.append,
        skip_reason=lambda: skip,
    )
    return queued


def payloads(operations: list[Operation]) -> list[dict[str, Any]]:
    return [dict(operation.payload) for operation in operations]


def test_a_device_is_linked_once_per_session() -> None:
    session: dict[str, Any] = {}
    assert payloads(link(session, "device-1")) == [{"deviceId": "device-1", "identification": {"userId": "42"}}]
    assert link(session, "device-1") == []
    assert [op.kind for op in link(session, "device-2")] == ["link"]
    assert session[SESSION_KEY] == "42\ndevice-1\ndevice-2"


def test_a_second_user_of_the_session_gets_its_own_link() -> None:
    session: dict[str, Any] = {}
    link(session, "shared", ("1", None))
    assert payloads(link(session, "shared", ("2", "bob@acme.test"))) == [
        {"deviceId": "shared", "identification": {"userId": "2", "email": "bob@acme.test"}}
    ]
    assert session[SESSION_KEY] == "2\nshared"  # the record names its user: the first one's devices are gone
    assert payloads(link(session, "shared", ("1", None))) != []


def test_a_user_known_by_email_alone_is_recorded_by_email() -> None:
    session: dict[str, Any] = {}
    assert payloads(link(session, "d", (None, "ada@acme.test"))) == [
        {"deviceId": "d", "identification": {"email": "ada@acme.test"}}
    ]
    assert session[SESSION_KEY] == "email:ada@acme.test\nd"
    assert link(session, "d", (None, "ada@acme.test")) == []


@pytest.mark.parametrize(
    ("old_key", "old_value"),
    [("_journy_linked_devices", ["device-1"]), ("_journy", "42\ndevice-1")],
    ids=["django-list", "flask-string"],
)
def test_records_under_the_old_session_keys_count_as_not_linked(old_key: str, old_value: object) -> None:
    session: dict[str, Any] = {old_key: old_value}
    assert len(link(session, "device-1")) == 1
    assert link(session, "device-1") == []


@pytest.mark.parametrize("record", [["device-1"], 42, "", None, "\n"], ids=repr)
def test_a_record_that_is_not_one_counts_as_empty(record: object) -> None:
    session: dict[str, Any] = {SESSION_KEY: record}
    assert len(link(session, "device-1")) == 1
    assert session[SESSION_KEY] == "42\ndevice-1"


def test_the_record_keeps_the_last_devices_only() -> None:
    session: dict[str, Any] = {}
    for n in range(MAX_REMEMBERED + 2):
        link(session, f"device-{n}")
    devices = session[SESSION_KEY].split("\n")[1:]
    assert devices == [f"device-{n}" for n in range(2, MAX_REMEMBERED + 2)]
    assert len(link(session, "device-0")) == 1  # forgotten, so linked again


@pytest.mark.parametrize(
    "facts",
    [
        {"enabled": False},
        {"link_devices": False},
        {"identity": None},
        {"identity": (None, None)},
        {"skip": "staff user"},
        {"cookie": None},
        {"cookie": "two words"},
        {"cookie": "x" * 500},
        {"cookie": 42},
    ],
    ids=lambda facts: next(iter(facts)) + "=" + repr(next(iter(facts.values())))[:12],
)
def test_nothing_is_linked_or_recorded_when_a_fact_says_no(facts: dict[str, Any]) -> None:
    session: dict[str, Any] = {}
    cookie = facts.pop("cookie", "device-1")
    assert link(session, cookie, **facts) == []
    assert session == {}


def test_the_user_and_the_filters_are_asked_only_when_there_is_a_device_to_link() -> None:
    asked: list[str] = []

    def identify() -> Identity:
        asked.append("identify")
        return ("42", None)

    def skip() -> None:
        asked.append("skip")

    def run(session: dict[str, Any], cookie: object, **switches: bool) -> bool:
        options = {"enabled": True, "link_devices": True, **switches}
        return link_device(session, cookie, identify=identify, enqueue=lambda op: None, skip_reason=skip, **options)

    session: dict[str, Any] = {}
    assert not run(session, "bad;value")
    assert not run(session, "device-1", link_devices=False)
    assert asked == []
    assert run(session, "device-1")
    assert asked == ["identify", "skip"]
    assert not run(session, "device-1")  # linked already: the filters are not asked again
    assert asked == ["identify", "skip", "identify"]


def test_without_a_session_the_device_is_linked_every_time() -> None:
    assert len(link(None, "device-1")) == 1
    assert len(link(None, "device-1")) == 1


def test_an_invalid_user_id_raises_before_anything_is_recorded() -> None:
    session: dict[str, Any] = {}
    with pytest.raises(InvalidArgumentError):
        link(session, "device-1", ("", None))
    assert session == {}


def test_the_record_is_stored_only_once_the_link_is_queued() -> None:
    session: dict[str, Any] = {}

    def failing(operation: Operation) -> None:
        raise RuntimeError("queue full")

    with pytest.raises(RuntimeError):
        link_device(
            session, "device-1", enabled=True, link_devices=True, identify=lambda: ("42", None), enqueue=failing
        )
    assert session == {}


def test_a_newline_in_a_user_id_cannot_forge_a_device_line() -> None:
    session: dict[str, Any] = {}
    link(session, "device-1", ("evil\ndevice-2", None))
    assert not linked_already(session[SESSION_KEY], "device-2")
    assert linked_already(session[SESSION_KEY], "device-1")


def test_linked_already_is_the_fast_path_on_the_raw_cookie_value() -> None:
    record = "42\ndevice-1\ndevice-2"
    assert linked_already(record, "device-1")
    assert linked_already(record, "device-2")
    assert not linked_already(record, "device")  # a prefix of a device ID is not that device
    assert not linked_already(record, "42")  # the user's line is not a device
    assert not linked_already(None, "device-1")
    assert not linked_already(["device-1"], "device-1")  # an old list record


def test_plan_link_is_the_rule_for_sessions_read_by_awaiting() -> None:
    # What Django's async middleware does: await the record, plan, queue, await storing the new record.
    planned = plan_link(None, "device-1", ("42", None))
    assert planned is not None
    assert planned.operation.kind == "link"
    assert planned.record == "42\ndevice-1"
    assert plan_link(planned.record, "device-1", ("42", None)) is None
    assert plan_link(planned.record, "device-1", ("43", None)) is not None
    assert plan_link(None, "device-1", ("42", None), lambda: "internal IP") is None


def test_device_to_link_applies_the_switches_and_cleans_the_cookie() -> None:
    assert device_to_link(' "device-1" ', enabled=True, link_devices=True) == "device-1"
    assert device_to_link("device-1", enabled=False, link_devices=True) is None
    assert device_to_link("device-1", enabled=True, link_devices=False) is None
    assert device_to_link(None, enabled=True, link_devices=True) is None
