"""The framework-free pieces both adapters stand on: device IDs, property maps, change buffers, guards."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from journy_core import operations as ops
from journy_core.changes import ChangeBuffer
from journy_core.devices import MAX_DEVICE_ID_LENGTH, clean_device_id
from journy_core.errors import ConfigurationError
from journy_core.guard import error_counts, guarded
from journy_core.importing import import_string
from journy_core.mapping import PropertyMap

# -- device IDs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a1b2-c3", "a1b2-c3"),
        ("  a1b2  ", "a1b2"),
        ('"quoted"', "quoted"),
        ("", None),
        ("   ", None),
        (None, None),
        (42, None),
        ("x" * (MAX_DEVICE_ID_LENGTH + 1), None),
        ("abc\x00def", None),
        ("abc\ndef", None),
        ("a;b", None),
        ("</script>", "</script>"),  # printable: sent as JSON data, never into a page
    ],
)
def test_a_cookie_value_becomes_a_device_id_only_when_plausible(raw: object, expected: str | None) -> None:
    assert clean_device_id(raw) == expected


# -- property maps -------------------------------------------------------------------------------------------


def test_a_list_of_attributes_is_sent_under_the_same_names() -> None:
    user = SimpleNamespace(first_name="Ada", plan="pro")
    mapping = PropertyMap(["first_name", "plan"], "USER_PROPERTIES")
    assert mapping(user) == {"first_name": "Ada", "plan": "pro"}
    assert mapping.fields == {"first_name", "plan"}


def test_a_dict_maps_journy_names_to_dotted_attributes_and_methods() -> None:
    user = SimpleNamespace(profile=SimpleNamespace(plan="pro"), get_full_name=lambda: "Ada Lovelace", team=None)
    mapping = PropertyMap(
        {"plan": "profile.plan", "full_name": "get_full_name", "team_name": "team.name"}, "USER_PROPERTIES"
    )
    assert mapping(user) == {"plan": "pro", "full_name": "Ada Lovelace", "team_name": None}
    assert mapping.fields == {"profile", "get_full_name", "team"}


def properties_of(obj: object) -> dict[str, object]:
    return {"n": 1}


def test_a_callable_or_its_dotted_path_decides_the_properties() -> None:
    assert PropertyMap(properties_of, "X")(object()) == {"n": 1}
    mapping = PropertyMap(f"{__name__}.properties_of", "X")
    assert mapping(object()) == {"n": 1}
    assert mapping.fields is None


@pytest.mark.parametrize("spec", [42, ["ok", ""], {"name": 3}, "no_dot_here", "no.such.module.thing"])
def test_a_bad_property_setting_names_the_setting(spec: object) -> None:
    with pytest.raises(ConfigurationError, match="USER_PROPERTIES"):
        PropertyMap(spec, "USER_PROPERTIES")


def test_import_string_names_the_missing_attribute() -> None:
    with pytest.raises(ConfigurationError, match="'os' has no attribute 'nope'"):
        import_string("os.nope", "CURRENT_ACCOUNT")


# -- change buffers ------------------------------------------------------------------------------------------


def test_many_saves_of_one_object_become_one_upsert_built_at_commit() -> None:
    state = {"plan": "free"}
    buffer = ChangeBuffer()
    for plan in ("free", "pro", "enterprise"):
        state["plan"] = plan
        buffer.upsert(("user", 1), lambda: ops.upsert_user(user_id=1, properties=dict(state)))
    [operation] = buffer.operations()
    assert operation.payload["properties"] == {"plan": "enterprise"}


def test_a_delete_after_saves_leaves_only_the_delete() -> None:
    buffer = ChangeBuffer()
    buffer.upsert(("user", 1), ops.upsert_user(user_id=1))
    buffer.delete(("user", 1), ops.delete_user(user_id=1))
    assert [o.kind for o in buffer.operations()] == ["delete_user"]


def test_a_save_after_a_delete_sends_both_in_order() -> None:
    buffer = ChangeBuffer()
    buffer.delete(("user", 1), ops.delete_user(user_id=1))
    buffer.upsert(("user", 1), ops.upsert_user(user_id=1))
    assert [o.kind for o in buffer.operations()] == ["delete_user", "upsert_user"]


def test_a_membership_of_a_user_or_account_deleted_in_the_same_transaction_is_not_sent() -> None:
    buffer = ChangeBuffer()
    buffer.upsert(("user", 1), ops.upsert_user(user_id=1))
    buffer.upsert(("account", 7), ops.upsert_account(account_id=7))
    buffer.upsert(("account", 8), ops.upsert_account(account_id=8))
    buffer.membership("add", {"account_id": 7}, {"user_id": 1})
    buffer.membership("add", {"account_id": 8}, {"user_id": 2})
    buffer.delete(("user", 1), ops.delete_user(user_id=1))
    buffer.delete(("account", 8), ops.delete_account(account_id=8))
    # Sent after the deletes, these adds would create the deleted user and account again in journy.io.
    assert [o.kind for o in buffer.operations()] == ["delete_user", "upsert_account", "delete_account"]


def test_a_membership_of_a_user_deleted_then_created_again_is_sent() -> None:
    buffer = ChangeBuffer()
    buffer.delete(("user", 1), ops.delete_user(user_id=1))
    buffer.upsert(("user", 1), ops.upsert_user(user_id=1))
    buffer.membership("add", {"account_id": "7"}, {"user_id": "1"})
    assert [o.kind for o in buffer.operations()] == ["delete_user", "upsert_user", "add_users_to_account"]


def test_an_opted_out_builder_sends_nothing() -> None:
    buffer = ChangeBuffer()
    buffer.upsert(("user", 1), lambda: None)
    assert buffer.operations() == []


def test_membership_changes_group_per_account_and_keep_the_last_action_per_user() -> None:
    buffer = ChangeBuffer()
    for user in (1, 2, 3):
        buffer.membership("add", {"account_id": "7"}, {"user_id": str(user)})
    buffer.membership("remove", {"account_id": "7"}, {"user_id": "2"})
    buffer.membership("add", {"account_id": "8"}, {"user_id": "1"})
    result = [
        (o.kind, o.payload["account"], [u["identification"] for u in o.payload["users"]]) for o in buffer.operations()
    ]
    assert result == [
        ("remove_users_from_account", {"accountId": "7"}, [{"userId": "2"}]),
        ("add_users_to_account", {"accountId": "7"}, [{"userId": "1"}, {"userId": "3"}]),
        ("add_users_to_account", {"accountId": "8"}, [{"userId": "1"}]),
    ]


# -- guards --------------------------------------------------------------------------------------------------


def test_guarded_swallows_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    before = error_counts().get("testing", 0)
    with caplog.at_level(logging.WARNING, logger="journy"), guarded("testing the guard"):
        raise RuntimeError("boom")
    assert "error while testing the guard" in caplog.text
    assert "RuntimeError: boom" in caplog.text
    assert error_counts()["testing"] == before + 1


def test_guarded_is_loud_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="journy"), guarded("saving", loud=True):
        raise ValueError("x")
    assert caplog.records[-1].levelno == logging.ERROR


# -- pausing model sync ----------------------------------------------------------------------------------------


def test_pause_sync_nests_covers_only_its_thread_and_decorates() -> None:
    import threading

    from journy_core.pausing import pause_sync, sync_paused

    seen_elsewhere: list[bool] = []
    with pause_sync():
        with pause_sync():
            assert sync_paused()
        assert sync_paused()  # still inside the outer block
        thread = threading.Thread(target=lambda: seen_elsewhere.append(sync_paused()))
        thread.start()
        thread.join()
    assert not sync_paused()
    assert seen_elsewhere == [False]

    @pause_sync()
    def imports() -> bool:
        return sync_paused()

    assert imports() and imports()
    assert not sync_paused()
