"""The journy.io API emulator, exercised over real HTTP the way the client and the benchmarks use it."""

from __future__ import annotations

import contextlib
import hashlib
import html
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY, Emulator, Website

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTILE_SCRIPT = "</script><script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator) -> Iterator[Api]:
    with Api(emu) as client:
        yield client


class Api:
    """A keep-alive session against one emulator, sending the default key unless told otherwise."""

    def __init__(self, emu: Emulator, key: str | None = DEFAULT_API_KEY) -> None:
        self.emu = emu
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-Api-Key"] = key

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.emu.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, json=body, **kwargs)


def assert_meta(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["meta"]["status"] == response.status_code
    assert isinstance(body["meta"]["requestId"], str)
    assert body["meta"]["requestId"]
    return body


def user(user_id: str) -> dict[str, Any]:
    return {"identification": {"userId": user_id}}


# --- every endpoint answers as the contract says ---


def test_validate_answers_200_with_the_keys_permissions(api: Api) -> None:
    response = api.get("/validate")
    assert response.status_code == 200
    assert assert_meta(response)["data"] == {"permissions": list(ALL_PERMISSIONS)}


def test_upsert_user_answers_201_with_a_message_and_no_rejected(api: Api) -> None:
    response = api.post("/users/upsert", {"identification": {"userId": "42", "email": "ada@acme.com"}})
    body = assert_meta(response)
    assert response.status_code == 201
    assert isinstance(body["message"], str)
    assert "rejected" not in body


def test_upsert_account_answers_201_with_a_message(api: Api) -> None:
    response = api.post("/accounts/upsert", {"identification": {"accountId": "7"}, "properties": {"mrr": 99}})
    assert response.status_code == 201
    assert isinstance(assert_meta(response)["message"], str)


def test_delete_user_takes_a_json_body_answers_202_and_forgets_the_user(api: Api) -> None:
    api.post("/users/upsert", user("42"))
    api.post("/users/upsert", user("43"))
    response = api.delete("/users", user("42"))
    assert response.status_code == 202
    assert_meta(response)
    assert [u["userId"] for u in api.emu.state()["users"]] == ["43"]


def test_delete_account_answers_202_and_forgets_the_account_and_its_members(api: Api) -> None:
    api.post("/accounts/users/add", {"account": {"accountId": "7"}, "users": [user("42")]})
    response = api.delete("/accounts", {"identification": {"accountId": "7"}})
    assert response.status_code == 202
    assert_meta(response)
    state = api.emu.state()
    assert state["accounts"] == []
    assert state["memberships"] == []


def test_add_users_answers_201_and_remove_answers_the_specs_json_body_with_meta_and_message(api: Api) -> None:
    body = {"account": {"accountId": "7"}, "users": [user("42")]}
    added = api.post("/accounts/users/add", body)
    assert added.status_code == 201
    assert_meta(added)
    removed = api.post("/accounts/users/remove", body)
    # The spec's 204 cannot carry its own body over HTTP (clients drop a 204's content): 200 carries it.
    assert removed.status_code == 200
    assert isinstance(assert_meta(removed)["message"], str)
    assert api.emu.state()["memberships"][0]["status"] == "removed"


def test_track_answers_201(api: Api) -> None:
    response = api.post("/track", {"identification": {"user": {"userId": "42"}}, "name": "signed_in"})
    assert response.status_code == 201
    assert isinstance(assert_meta(response)["message"], str)


def test_link_answers_201(api: Api) -> None:
    response = api.post("/link", {"deviceId": "device-1", "identification": {"userId": "42"}})
    assert response.status_code == 201
    assert_meta(response)


def test_snippet_looks_like_a_journy_snippet_pointing_at_the_emulator(api: Api) -> None:
    response = api.get("/tracking/snippet", params={"domain": "localhost"})
    assert response.status_code == 200
    data = assert_meta(response)["data"]
    assert data["domain"] == "localhost"
    snippet = data["snippet"]
    stub = (
        "window.journy = window.journy || function(command, args, callback) "
        "{ (window.__journy_queue__ ||= []).push({command, args, date: Date.now(), callback}) }"
    )
    assert stub in snippet
    assert f'<script async src="{api.emu.url}/tracker.js"></script>' in snippet
    assert 'journy("init", {"trackerId": "emulator-tracker", "domain": "localhost"});' in snippet
    assert snippet.index('journy("init"') < snippet.index('journy("pageview");')


def test_snippet_uses_a_configured_websites_tracking_domain() -> None:
    site = Website("acme.com", "tracker-acme", "https://go.acme.com")
    with Emulator(websites=[site]) as emu, Api(emu) as api:
        snippet = api.get("/tracking/snippet", params={"domain": "ACME.com"}).json()["data"]["snippet"]
        assert '<script async src="https://go.acme.com/tracker.js"></script>' in snippet
        assert '"trackerId": "tracker-acme"' in snippet
        assert api.get("/tracking/snippet", params={"domain": "localhost"}).status_code == 404


def test_snippet_of_an_unknown_website_answers_404_with_meta_and_message(api: Api) -> None:
    response = api.get("/tracking/snippet", params={"domain": "unknown.example"})
    assert response.status_code == 404
    assert "unknown.example" in assert_meta(response)["message"]


def test_snippet_without_a_domain_answers_400_naming_the_query_parameter(api: Api) -> None:
    response = api.get("/tracking/snippet")
    assert response.status_code == 400
    assert assert_meta(response)["errors"]["parameters"]["query"] == {"domain": "is required"}


def test_the_tracker_stand_in_is_served_as_javascript(api: Api) -> None:
    response = api.get("/tracker.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert "__journy_queue__" in response.text  # it drains the page's queue (tests/core/test_emulator_tracker.py)


def test_events_endpoint_lists_the_tracked_event_names_with_ids(api: Api) -> None:
    for name in ("signed_in", "created_invoice", "signed_in"):
        api.post("/track", {"identification": {"account": {"accountId": "7"}}, "name": name})
    response = api.get("/events")
    assert response.status_code == 200
    data = assert_meta(response)["data"]
    assert [event["name"] for event in data] == ["signed_in", "created_invoice"]
    assert len({event["id"] for event in data}) == 2


@pytest.mark.parametrize(("kind", "builtin"), [("users", "full_name"), ("accounts", "mrr")])
def test_property_endpoints_list_crm_and_stored_properties(api: Api, kind: str, builtin: str) -> None:
    ident = {"userId": "1"} if kind == "users" else {"accountId": "1"}
    api.post(f"/{kind}/upsert", {"identification": ident, "properties": {"favourite_colour": "teal"}})
    response = api.get(f"/properties/{kind}")
    assert response.status_code == 200
    data = assert_meta(response)["data"]
    names = [prop["name"] for prop in data]
    assert builtin in names
    assert "favourite_colour" in names
    assert all(isinstance(p["label"], str) and p["isComputed"] is False for p in data)


@pytest.mark.parametrize("kind", ["users", "accounts"])
def test_segment_endpoints_list_segments_with_id_and_name(api: Api, kind: str) -> None:
    response = api.get(f"/segments/{kind}")
    assert response.status_code == 200
    data = assert_meta(response)["data"]
    assert data
    assert all(set(segment) == {"id", "name"} for segment in data)


def test_deprecated_post_events_tracks_but_is_flagged_in_the_log_and_state(api: Api) -> None:
    body = {"identification": {"user": {"userId": "42"}}, "name": "old_style"}
    assert api.post("/events", body).status_code == 201
    assert api.post("/track", body).status_code == 201
    assert [call["deprecated"] for call in api.emu.calls()] == [True, False]
    assert [event["deprecated"] for event in api.emu.state()["events"]] == [True, False]


def test_unknown_path_answers_404_json_and_wrong_method_405(api: Api) -> None:
    missing = api.get("/nope")
    assert missing.status_code == 404
    assert "message" in assert_meta(missing)
    wrong = api.request("PUT", "/track")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"


def test_request_ids_are_unique_and_match_the_log(api: Api) -> None:
    ids = [api.get("/validate").json()["meta"]["requestId"] for _ in range(20)]
    assert len(set(ids)) == 20
    assert [call["request_id"] for call in api.emu.calls()] == ids


def test_connection_stays_alive_across_calls_including_a_membership_removal() -> None:
    with Emulator() as emu:
        connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
        headers = {"X-Api-Key": DEFAULT_API_KEY, "Content-Type": "application/json"}
        body = json.dumps({"account": {"accountId": "7"}, "users": [user("42")]}).encode()
        statuses = []
        for method, path, payload in [
            ("POST", "/accounts/users/remove", body),
            ("GET", "/validate", None),
            ("POST", "/accounts/users/add", body),
        ]:
            connection.request(method, path, payload, headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            assert response.getheader("Connection") != "close"
        sock = connection.sock
        connection.request("GET", "/validate", headers=headers)
        connection.getresponse().read()
        assert connection.sock is sock  # the same socket served every call
        connection.close()
        assert statuses == [200, 200, 201]


# --- validation ---

USER_ERRORS = [
    ({}, "identification"),
    ({"identification": "42"}, "identification"),
    ({"identification": {}}, "identification"),
    ({"identification": {"userId": "", "email": "a@b.c"}}, "identification.userId"),
    ({"identification": {"userId": 42}}, "identification.userId"),
    ({"identification": {"email": ""}}, "identification.email"),
    ({**user("1"), "properties": {"x": {"nested": 1}}}, "properties.x"),
    ({**user("1"), "properties": {"tags": ["a", ""]}}, "properties.tags"),
    ({**user("1"), "properties": {"tags": ["a", 1]}}, "properties.tags"),
    ({**user("1"), "properties": "plan=pro"}, "properties"),
]
TRACK_OK = {"identification": {"user": {"userId": "1"}}, "name": "signed_in"}
VALIDATION_CASES = [
    *[("POST", "/users/upsert", body, field) for body, field in USER_ERRORS],
    ("POST", "/accounts/upsert", {"identification": {"accountId": ""}}, "identification.accountId"),
    ("POST", "/accounts/upsert", {"identification": {"domain": 5}}, "identification.domain"),
    ("POST", "/accounts/upsert", {"identification": {"userId": "1"}}, "identification"),
    ("DELETE", "/users", {}, "identification"),
    ("DELETE", "/users", {"identification": {"userId": ""}}, "identification.userId"),
    ("DELETE", "/accounts", {"identification": {}}, "identification"),
    ("POST", "/track", {"name": "x"}, "identification"),
    ("POST", "/track", {"identification": {}, "name": "x"}, "identification"),
    ("POST", "/track", {"identification": {"user": {"userId": ""}}, "name": "x"}, "identification.user.userId"),
    ("POST", "/track", {"identification": {"account": {"domain": ""}}, "name": "x"}, "identification.account.domain"),
    ("POST", "/track", {"identification": {"user": {"userId": "1"}}}, "name"),
    ("POST", "/track", {**TRACK_OK, "name": ""}, "name"),
    ("POST", "/track", {**TRACK_OK, "name": 3}, "name"),
    ("POST", "/track", {**TRACK_OK, "triggeredAt": "yesterday"}, "triggeredAt"),
    ("POST", "/track", {**TRACK_OK, "triggeredAt": "2024-13-01T00:00:00Z"}, "triggeredAt"),
    ("POST", "/track", {**TRACK_OK, "triggeredAt": 1700000000}, "triggeredAt"),
    ("POST", "/track", {**TRACK_OK, "metadata": {"amount": None}}, "metadata.amount"),
    ("POST", "/track", {**TRACK_OK, "metadata": {"tags": ["a"]}}, "metadata.tags"),
    ("POST", "/track", {**TRACK_OK, "metadata": {"nested": {"a": 1}}}, "metadata.nested"),
    ("POST", "/link", {"identification": {"userId": "1"}}, "deviceId"),
    ("POST", "/link", {"deviceId": "", "identification": {"userId": "1"}}, "deviceId"),
    ("POST", "/link", {"deviceId": "d1"}, "identification"),
    ("POST", "/accounts/users/add", {"users": [user("1")]}, "account"),
    ("POST", "/accounts/users/add", {"account": {"accountId": "7"}}, "users"),
    ("POST", "/accounts/users/add", {"account": {"accountId": "7"}, "users": []}, "users"),
    ("POST", "/accounts/users/add", {"account": {"accountId": "7"}, "users": [{}]}, "users[0].identification"),
    (
        "POST",
        "/accounts/users/remove",
        {"account": {"accountId": "7"}, "users": [user("1"), {"identification": {"userId": ""}}]},
        "users[1].identification.userId",
    ),
    ("POST", "/users/upsert", [user("1")], "body"),
    # the spec's format: email and format: top-level-domain
    ("POST", "/users/upsert", {"identification": {"email": "not-an-email"}}, "identification.email"),
    ("POST", "/users/upsert", {"identification": {"userId": "1", "email": "ada @acme.com"}}, "identification.email"),
    ("DELETE", "/users", {"identification": {"email": "ada@localhost"}}, "identification.email"),
    ("POST", "/accounts/upsert", {"identification": {"domain": "https://acme.com/"}}, "identification.domain"),
    ("POST", "/accounts/upsert", {"identification": {"domain": "not a domain"}}, "identification.domain"),
    ("DELETE", "/accounts", {"identification": {"domain": "acme"}}, "identification.domain"),
    ("POST", "/link", {"deviceId": "d1", "identification": {"email": "x"}}, "identification.email"),
    (
        "POST",
        "/track",
        {**TRACK_OK, "identification": {"account": {"domain": "a b.com"}}},
        "identification.account.domain",
    ),
    (
        "POST",
        "/accounts/users/add",
        {"account": {"accountId": "7"}, "users": [{"identification": {"email": "@acme.com"}}]},
        "users[0].identification.email",
    ),
    # nothing is nullable but a property's value
    ("POST", "/track", {**TRACK_OK, "identification": {"user": {"userId": None}}}, "identification.user.userId"),
    ("POST", "/track", {**TRACK_OK, "identification": {"account": None}}, "identification.account"),
    (
        "POST",
        "/track",
        {**TRACK_OK, "identification": {"user": {"userId": "1"}, "account": None}},
        "identification.account",
    ),
    ("POST", "/track", {**TRACK_OK, "identification": {"user": None}}, "identification.user"),
    ("POST", "/track", {**TRACK_OK, "triggeredAt": None}, "triggeredAt"),
    ("POST", "/track", {**TRACK_OK, "metadata": None}, "metadata"),
    ("POST", "/users/upsert", {"identification": {"userId": "1", "email": None}}, "identification.email"),
    ("POST", "/users/upsert", {**user("1"), "properties": None}, "properties"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), VALIDATION_CASES)
def test_invalid_requests_answer_400_naming_the_field(api: Api, method: str, path: str, body: Any, field: str) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == 400
    payload = assert_meta(response)
    assert field in payload["errors"]["fields"], payload
    assert payload["errors"]["parameters"] == {"header": {}, "query": {}, "path": {}}
    assert isinstance(payload["message"], str)
    empty = {"users": [], "accounts": [], "memberships": [], "events": [], "links": [], "frontend": []}
    assert api.emu.state() == empty
    assert api.emu.calls()[-1]["applied"] is False


@pytest.mark.parametrize("path", ["/accounts/users/add", "/accounts/users/remove"])
def test_more_than_100_users_answers_400_naming_users(api: Api, path: str) -> None:
    users = [user(str(i)) for i in range(101)]
    response = api.post(path, {"account": {"accountId": "7"}, "users": users})
    assert response.status_code == 400
    assert "users" in response.json()["errors"]["fields"]
    assert api.post(path, {"account": {"accountId": "7"}, "users": users[:100]}).status_code in (200, 201)


@pytest.mark.parametrize("raw", [b"{not json", b'{"identification": {"userId": NaN}}', b""])
def test_a_body_that_is_not_json_answers_400_naming_body(api: Api, raw: bytes) -> None:
    response = api.request("POST", "/users/upsert", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "body" in assert_meta(response)["errors"]["fields"]


@pytest.mark.parametrize(
    ("kind", "ident"),
    [
        ("users", {"email": "Ada.Lovelace+journy@Mail.Acme.co.uk"}),
        ("users", {"email": "jörg@münchen.de"}),
        ("users", {"email": "ada@xn--mnchen-3ya.de"}),
        ("accounts", {"domain": "APP.eu.acme.co.uk"}),
        ("accounts", {"domain": "münchen.de"}),
    ],
)
def test_real_world_emails_and_domains_are_accepted(api: Api, kind: str, ident: dict[str, str]) -> None:
    assert api.post(f"/{kind}/upsert", {"identification": ident}).status_code == 201


def test_a_property_named_empty_is_stored_as_the_spec_puts_no_rule_on_names(api: Api) -> None:
    assert api.post("/users/upsert", {**user("1"), "properties": {"": "x"}}).status_code == 201
    assert api.post("/track", {**TRACK_OK, "metadata": {"": 1}}).status_code == 201
    assert api.emu.state()["users"][0]["properties"] == {"": "x"}


def test_the_old_members_field_of_an_account_upsert_is_ignored_and_logged_as_ignored(api: Api) -> None:
    body = {"identification": {"accountId": "7"}, "members": [{"userId": "1"}], "properties": {"plan": "pro"}}
    assert api.post("/accounts/upsert", body).status_code == 201
    (call,) = api.emu.calls("/accounts/upsert")
    assert call["ignored"] == ["members"]
    assert api.emu.state()["memberships"] == []
    api.post("/users/upsert", user("1"))
    assert api.emu.calls("/users/upsert")[0]["ignored"] == []


def test_a_disabled_key_answers_403_on_every_endpoint_and_applies_nothing() -> None:
    with Emulator(disabled_keys=["old-key"]) as emu, Api(emu, key="old-key") as api:
        responses = [api.get("/validate"), api.post("/users/upsert", user("1")), api.get("/events")]
        assert [r.status_code for r in responses] == [403, 403, 403]
        assert all("disabled" in assert_meta(r)["message"] for r in responses)
        assert emu.state()["users"] == []
        emu.configure(disabled_keys=[])
        assert api.get("/validate").status_code == 401  # known no longer: it was never an accepted key
        assert emu.config()["disabled_keys"] == []


def test_websites_are_configurable_by_domain_and_through_the_config_view(api: Api) -> None:
    api.emu.configure(websites=["acme.com", {"domain": "shop.acme.io", "tracking_domain": "https://go.acme.io"}])
    assert api.get("/tracking/snippet", params={"domain": "localhost"}).status_code == 404
    assert api.get("/tracking/snippet", params={"domain": "ACME.com"}).json()["data"]["domain"] == "acme.com"
    shop = api.get("/tracking/snippet", params={"domain": "shop.acme.io"}).json()["data"]["snippet"]
    assert 'src="https://go.acme.io/tracker.js"' in shop
    changed = api.post("/_emulator/config", {"websites": ["blog.acme.com"]})
    assert changed.status_code == 200
    assert [site["domain"] for site in changed.json()["websites"]] == ["blog.acme.com"]
    snippet = api.get("/tracking/snippet", params={"domain": "blog.acme.com"}).json()["data"]["snippet"]
    assert f'src="{api.emu.url}/tracker.js"' in snippet
    assert api.post("/_emulator/config", {"websites": ["https://acme.com/"]}).status_code == 400
    assert api.post("/_emulator/config", {"websites": "acme.com"}).status_code == 400


def test_valid_values_of_every_kind_and_unknown_fields_are_accepted(api: Api) -> None:
    properties = {"s": "x", "empty": "", "n": 1.5, "i": 3, "b": False, "none": None, "tags": ["a", "b"], "l": []}
    upsert = {"identification": {"userId": "1", "unknown": True}, "properties": properties, "extra": 1}
    assert api.post("/users/upsert", upsert).status_code == 201
    for triggered_at in ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123+02:00", "2024-05-01T10:00:00"):
        track = {**TRACK_OK, "triggeredAt": triggered_at, "metadata": {"s": "x", "n": 2, "b": True}, "x": 1}
        assert api.post("/track", track).status_code == 201


# --- authentication and permissions ---


def test_missing_api_key_answers_401_with_meta_and_message(emu: Emulator) -> None:
    with Api(emu, key=None) as anonymous:
        response = anonymous.get("/validate")
    assert response.status_code == 401
    assert "X-Api-Key" in assert_meta(response)["message"]
    assert emu.calls()[-1]["api_key_sent"] is False


def test_unknown_api_key_answers_401_and_applies_nothing(emu: Emulator) -> None:
    with Api(emu, key="not-a-key") as stranger:
        response = stranger.post("/users/upsert", user("1"))
    assert response.status_code == 401
    assert isinstance(assert_meta(response)["message"], str)
    assert emu.state()["users"] == []


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("POST", "/users/upsert", "TrackData"),
        ("POST", "/track", "TrackData"),
        ("DELETE", "/accounts", "TrackData"),
        ("GET", "/tracking/snippet?domain=localhost", "GetTrackingSnippet"),
        ("GET", "/events", "ReadEvents"),
        ("GET", "/properties/accounts", "ReadProperties"),
        ("GET", "/segments/users", "ReadSegments"),
    ],
)
def test_a_key_without_the_permission_gets_401_naming_it(method: str, path: str, permission: str) -> None:
    others = [name for name in ALL_PERMISSIONS if name != permission]
    with Emulator(api_keys={"limited": others}) as emu, Api(emu, key="limited") as api:
        response = api.request(method, path, json=user("1") if method != "GET" else None)
        assert response.status_code == 401
        assert assert_meta(response)["message"] == f"The API key does not have the permission {permission}"
        assert emu.state()["users"] == []


def test_validate_needs_no_permission_and_lists_none_for_a_bare_key() -> None:
    with Emulator(api_keys={"bare": []}) as emu, Api(emu, key="bare") as api:
        response = api.get("/validate")
        assert response.status_code == 200
        assert response.json()["data"]["permissions"] == []


def test_unknown_permission_names_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="TrackDta"):
        Emulator(api_keys={"k": ["TrackDta"]})
    with pytest.raises(ValueError, match="explode"):
        Emulator(faults=["explode"])


def test_the_api_key_is_never_recorded_in_clear(emu: Emulator) -> None:
    secret = "sk-live-0123456789abcdef-do-not-log"
    emu.configure(api_keys={secret: ALL_PERMISSIONS})
    with Api(emu, key=secret) as api:
        api.post("/users/upsert", user("1"))
        api.get("/validate", headers={"X-Api-Key": "another-secret-key-xyz"})
        views = [api.get(path).text for path in ("/_emulator/calls", "/_emulator/state", "/_emulator/config", "/")]
    for text in [*views, repr(emu.calls()), repr(emu.config())]:
        assert secret not in text
        assert "another-secret-key-xyz" not in text
    first = emu.calls()[0]
    assert first["api_key_sent"] is True
    assert first["api_key_fingerprint"] == hashlib.sha256(secret.encode()).hexdigest()[:8]


# --- rate limiting and headers ---


def test_rate_limit_answers_429_after_n_calls_and_recovers_when_the_window_slides() -> None:
    with Emulator(rate_limit=5, rate_window=1.0) as emu, Api(emu) as api:
        started = time.monotonic()
        remaining = [int(api.get("/validate").headers["X-RateLimit-Remaining"]) for _ in range(5)]
        assert remaining == [4, 3, 2, 1, 0]
        time.sleep(0.2)
        refused = [api.get("/validate") for _ in range(3)]
        assert [r.status_code for r in refused] == [429, 429, 429]
        assert all(r.headers["X-RateLimit-Remaining"] == "0" for r in refused)
        assert all(r.headers["X-RateLimit-Limit"] == "5" for r in refused)
        assert "message" in assert_meta(refused[0])
        # The 429s above did not count: once the first five leave the window, five more calls fit.
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        assert [api.get("/validate").status_code for _ in range(5)] == [200] * 5
        assert api.get("/validate").status_code == 429


def test_rate_limit_is_per_key() -> None:
    keys = {"a": ALL_PERMISSIONS, "b": ALL_PERMISSIONS}
    with Emulator(api_keys=keys, rate_limit=2, rate_window=30) as emu, Api(emu, "a") as a, Api(emu, "b") as b:
        assert [a.get("/validate").status_code for _ in range(3)] == [200, 200, 429]
        assert b.get("/validate").status_code == 200


def test_every_response_carries_the_rate_limit_headers() -> None:
    with (
        Emulator(rate_limit=20, disabled_keys=["off"]) as emu,
        Api(emu) as api,
        Api(emu, key=None) as anonymous,
        Api(emu, key="off") as disabled,
    ):
        responses = [
            disabled.get("/validate"),
            api.get("/validate"),
            api.post("/users/upsert", user("1")),
            api.post("/accounts/users/remove", {"account": {"accountId": "7"}, "users": [user("1")]}),
            api.post("/users/upsert", {}),
            anonymous.get("/validate"),
            api.get("/nope"),
            api.get("/tracking/snippet", params={"domain": "nowhere.example"}),
            api.get("/_emulator/state"),
            api.get("/_emulator/calls"),
            api.get("/"),
            api.get("/tracker.js"),
        ]
        emu.configure(rate_limit=1)
        responses.append(api.get("/validate"))
    assert {r.status_code for r in responses} >= {200, 201, 400, 401, 403, 404, 429}
    for response in responses:
        assert int(response.headers["X-RateLimit-Limit"]) >= 1
        assert int(response.headers["X-RateLimit-Remaining"]) >= 0


def test_control_paths_need_no_key_and_are_not_rate_limited() -> None:
    with Emulator(rate_limit=1, rate_window=30) as emu, Api(emu, key=None) as anonymous, Api(emu) as api:
        assert [anonymous.get("/_emulator/state").status_code for _ in range(5)] == [200] * 5
        assert anonymous.get("/").status_code == 200
        assert [api.get("/validate").status_code for _ in range(2)] == [200, 429]


# --- faults ---


def test_5xx_fault_answers_a_server_error_in_various_shapes_without_applying() -> None:
    with Emulator(fault_rate=1.0, faults=["5xx"], seed=3) as emu, Api(emu) as api:
        responses = [api.post("/users/upsert", user(str(i))) for i in range(16)]
        assert {r.status_code for r in responses} <= {500, 502, 503}
        assert any(
            not r.content or not r.headers.get("Content-Type", "").startswith("application/json") for r in responses
        )
        assert any(r.headers.get("Content-Type") == "application/json" for r in responses)
        assert emu.state()["users"] == []
        assert all(c["fault"] == "5xx" and c["applied"] is False for c in emu.calls())


def test_500_fault_answers_journy_ios_own_json_500_every_time_without_applying() -> None:
    with Emulator(fault_rate=1.0, faults=["500"], seed=3) as emu, Api(emu) as api:
        responses = [api.post("/users/upsert", user(str(i))) for i in range(16)]
        assert {r.status_code for r in responses} == {500}
        for response in responses:
            assert response.headers["Content-Type"] == "application/json"
            assert_meta(response)
        assert emu.state()["users"] == []
        assert all(c["fault"] == "500" and c["applied"] is False for c in emu.calls())
    with pytest.raises(ValueError, match="unknown fault"):
        Emulator(faults=["501"])


def test_429_fault_answers_429_without_applying_or_using_the_window() -> None:
    with Emulator(fault_rate=1.0, faults=["429"], rate_limit=10) as emu, Api(emu) as api:
        response = api.post("/users/upsert", user("1"))
        assert response.status_code == 429
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert_meta(response)
        assert emu.state()["users"] == []
        assert emu.calls()[-1]["fault"] == "429"
        emu.configure(fault_rate=0.0)
        assert api.post("/users/upsert", user("1")).headers["X-RateLimit-Remaining"] == "9"


def test_timeout_fault_applies_the_call_then_answers_late() -> None:
    with Emulator(fault_rate=1.0, faults=["timeout"], timeout_delay=0.5) as emu, Api(emu) as api:
        with pytest.raises(requests.exceptions.ReadTimeout):
            api.post("/users/upsert", user("1"), timeout=0.2)
        assert [u["userId"] for u in emu.state()["users"]] == ["1"]
        call = emu.calls()[-1]
        assert (call["fault"], call["applied"], call["status"]) == ("timeout", True, 201)
        started = time.monotonic()
        late = api.post("/users/upsert", user("2"), timeout=5)
        assert late.status_code == 201
        assert time.monotonic() - started >= 0.5


def test_reset_fault_breaks_the_connection_without_applying() -> None:
    with Emulator(fault_rate=1.0, faults=["reset"]) as emu, Api(emu) as api:
        with pytest.raises(requests.exceptions.ConnectionError):
            api.post("/users/upsert", user("1"))
        assert emu.state()["users"] == []
        call = emu.calls()[-1]
        assert (call["fault"], call["applied"], call["status"]) == ("reset", False, None)


def test_faults_are_reproducible_with_a_seed() -> None:
    sequences = []
    for _ in range(2):
        with Emulator(fault_rate=0.5, faults=["5xx", "429"], seed=11) as emu, Api(emu) as api:
            for i in range(30):
                api.post("/users/upsert", user(str(i)))
            sequences.append([call["fault"] for call in emu.calls()])
    assert sequences[0] == sequences[1]
    assert {None, "5xx", "429"} == set(sequences[0])


def test_applied_calls_match_the_stored_data_under_random_faults() -> None:
    with Emulator(fault_rate=0.5, faults=["5xx", "429", "reset"], seed=5) as emu, Api(emu) as api:
        for i in range(30):
            with contextlib.suppress(requests.exceptions.ConnectionError):
                api.post("/users/upsert", user(str(i)))
        applied = {c["body"]["identification"]["userId"] for c in emu.calls() if c["applied"]}
        assert applied == {u["userId"] for u in emu.state()["users"]}
        assert 0 < len(applied) < 30


def test_latency_delays_api_answers_but_not_the_views() -> None:
    with Emulator(latency=0.3) as emu, Api(emu) as api:
        started = time.monotonic()
        assert api.get("/validate").status_code == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        assert api.get("/_emulator/state").status_code == 200
        assert time.monotonic() - started < 0.3


def test_stop_does_not_wait_for_a_sleeping_timeout_fault() -> None:
    emu = Emulator(fault_rate=1.0, faults=["timeout"], timeout_delay=30).start()
    outcome: list[object] = []

    def slow_call() -> None:
        try:
            outcome.append(requests.get(emu.url + "/validate", headers={"X-Api-Key": DEFAULT_API_KEY}, timeout=20))
        except requests.RequestException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 5
    while not emu.calls() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    caller.join(5)
    assert not caller.is_alive()
    assert isinstance(outcome[0], requests.RequestException)


# --- the state view ---


def test_upserts_merge_properties_and_null_deletes_one(api: Api) -> None:
    api.post("/users/upsert", {**user("42"), "properties": {"plan": "free", "seats": 3, "beta": True}})
    api.post(
        "/users/upsert",
        {
            "identification": {"userId": "42", "email": "ada@acme.com"},
            "properties": {"plan": "pro", "seats": None, "tags": ["a", "b"]},
        },
    )
    api.post("/users/upsert", {"identification": {"email": "ada@acme.com"}, "properties": {"phone": ""}})
    users = api.get("/_emulator/state").json()["users"]
    assert len(users) == 1
    assert users[0]["userId"] == "42"
    assert users[0]["email"] == "ada@acme.com"
    assert users[0]["properties"] == {"plan": "pro", "beta": True, "tags": ["a", "b"], "phone": ""}


def test_accounts_are_found_by_account_id_or_domain(api: Api) -> None:
    api.post("/accounts/upsert", {"identification": {"domain": "acme.com"}, "properties": {"plan": "pro"}})
    api.post("/accounts/upsert", {"identification": {"accountId": "7", "domain": "acme.com"}, "properties": {"mrr": 5}})
    accounts = api.emu.state()["accounts"]
    assert [(a["accountId"], a["domain"], a["properties"]) for a in accounts] == [
        ("7", "acme.com", {"plan": "pro", "mrr": 5})
    ]


def test_removed_members_stay_marked_removed(api: Api) -> None:
    account = {"accountId": "7"}
    api.post("/accounts/users/add", {"account": account, "users": [user("1"), user("2")]})
    api.post("/accounts/users/remove", {"account": account, "users": [user("1")]})
    members = {m["user"]["userId"]: m["status"] for m in api.get("/_emulator/state").json()["memberships"]}
    assert members == {"1": "removed", "2": "active"}
    api.post("/accounts/users/add", {"account": account, "users": [user("1")]})
    members = {m["user"]["userId"]: m["status"] for m in api.emu.state()["memberships"]}
    assert members == {"1": "active", "2": "active"}


def test_events_are_stored_with_their_identification_time_and_metadata(api: Api) -> None:
    api.post(
        "/track",
        {
            "identification": {"user": {"userId": "42"}, "account": {"domain": "acme.com"}},
            "name": "created_invoice",
            "triggeredAt": "2024-05-01T10:00:00Z",
            "metadata": {"amount": 100, "currency": "EUR"},
        },
    )
    (event,) = api.emu.state()["events"]
    assert event["name"] == "created_invoice"
    assert event["user"] == {"userId": "42"}
    assert event["account"] == {"domain": "acme.com"}
    assert event["triggeredAt"] == "2024-05-01T10:00:00Z"
    assert event["metadata"] == {"amount": 100, "currency": "EUR"}
    assert event["receivedAt"].endswith("Z")


def test_links_map_a_device_to_its_latest_user(api: Api) -> None:
    api.post("/link", {"deviceId": "dev-1", "identification": {"userId": "1"}})
    api.post("/link", {"deviceId": "dev-2", "identification": {"email": "b@acme.com"}})
    api.post("/link", {"deviceId": "dev-1", "identification": {"userId": "3"}})
    links = {link["deviceId"]: link["user"] for link in api.get("/_emulator/state").json()["links"]}
    assert links == {"dev-1": {"userId": "3"}, "dev-2": {"email": "b@acme.com"}}


def test_rejected_properties_are_dropped_and_reported() -> None:
    with Emulator(rejected_properties={"ssn": "not allowed"}) as emu, Api(emu) as api:
        response = api.post("/users/upsert", {**user("1"), "properties": {"ssn": "123", "plan": "pro"}})
        assert response.status_code == 201
        assert response.json()["rejected"] == {"ssn": "not allowed"}
        assert emu.state()["users"][0]["properties"] == {"plan": "pro"}


def test_the_call_log_records_each_call_and_filters_by_path(api: Api) -> None:
    api.post("/users/upsert", user("1"))
    api.get("/tracking/snippet", params={"domain": "localhost"})
    (call,) = api.emu.calls("/users/upsert")
    assert call["method"] == "POST"
    assert call["body"] == user("1")
    assert call["status"] == 201
    assert call["applied"] is True
    assert call["fault"] is None
    over_http = api.get("/_emulator/calls", params={"path": "/tracking/snippet"}).json()
    assert [(c["path"], c["query"]) for c in over_http] == [("/tracking/snippet", {"domain": "localhost"})]
    call["body"] = None
    assert api.emu.calls("/users/upsert")[0]["body"] == user("1")  # calls() hands out copies


def test_reset_forgets_data_calls_and_rate_windows() -> None:
    with Emulator(rate_limit=2, rate_window=30) as emu, Api(emu) as api:
        api.post("/users/upsert", user("1"))
        api.post("/users/upsert", user("2"))
        assert api.post("/_emulator/reset").status_code == 200
        assert emu.state()["users"] == []
        assert emu.calls() == []
        assert api.get("/validate").status_code == 200


def test_config_view_changes_options_at_runtime_and_refuses_bad_ones(api: Api) -> None:
    changed = api.post("/_emulator/config", {"fault_rate": 1.0, "faults": ["429"], "latency": 0.0})
    assert changed.status_code == 200
    assert changed.json()["faults"] == ["429"]
    assert api.post("/users/upsert", user("1")).status_code == 429
    assert api.post("/_emulator/config", {"fault_rate": 2}).status_code == 400
    assert api.post("/_emulator/config", {"api_keys": {"x": []}}).status_code == 400
    api.post("/_emulator/config", {"fault_rate": 0})
    assert api.post("/users/upsert", user("1")).status_code == 201


# --- the page ---


def test_the_page_shows_arrivals_with_every_hostile_value_escaped(api: Api) -> None:
    api.post(
        "/users/upsert",
        {
            "identification": {"userId": HOSTILE_SCRIPT, "email": HOSTILE_IMG},
            "properties": {"full_name": HOSTILE_SCRIPT, HOSTILE_IMG: HOSTILE_IMG},
        },
    )
    api.post("/accounts/users/add", {"account": {"domain": HOSTILE_IMG}, "users": [user(HOSTILE_SCRIPT)]})
    api.post(
        "/track",
        {"identification": {"user": {"userId": "1"}}, "name": HOSTILE_IMG, "metadata": {HOSTILE_SCRIPT: HOSTILE_IMG}},
    )
    api.post("/link", {"deviceId": HOSTILE_SCRIPT, "identification": {"email": HOSTILE_IMG}})
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' forbids scripts
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    text = page.text
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert html.escape(HOSTILE_SCRIPT) in text
    assert html.escape(HOSTILE_IMG) in text
    assert "http-equiv='refresh'" in text
    for heading in ("Users", "Accounts", "Members", "Events", "Linked devices"):
        assert f"<h2>{heading} (" in text


# --- lifecycle and CLI ---


def test_context_manager_stops_serving_on_exit() -> None:
    with Emulator() as emu:
        url = emu.url
        assert requests.get(url + "/validate", headers={"X-Api-Key": DEFAULT_API_KEY}, timeout=5).ok
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/validate", timeout=2)


def test_a_foreign_host_header_is_refused(api: Api) -> None:
    response = api.get("/_emulator/state", headers={"Host": "attacker.example"})
    assert response.status_code == 421
    assert api.get("/_emulator/state", headers={"Host": f"localhost:{api.emu.port}"}).status_code == 200


def test_the_constructor_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        Emulator(host="0.0.0.0")


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def test_the_cli_serves_on_a_free_port_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "journy_core.emulator", "--port", "0", "--rate-limit", "50"]
    command += ["--website", "acme.com", "--website", "shop.acme.io", "--disabled-key", "old-key"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env())
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the emulator printed nothing"
        line = process.stdout.readline()
        url = next(word for word in line.split() if word.startswith("http://127.0.0.1:"))
        assert DEFAULT_API_KEY in line
        response = requests.get(url + "/validate", headers={"X-Api-Key": DEFAULT_API_KEY}, timeout=5)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "50"
        for domain, status in (("acme.com", 200), ("shop.acme.io", 200), ("localhost", 404)):
            snippet = requests.get(
                url + "/tracking/snippet", params={"domain": domain}, headers={"X-Api-Key": DEFAULT_API_KEY}, timeout=5
            )
            assert snippet.status_code == status, domain
        assert requests.get(url + "/validate", headers={"X-Api-Key": "old-key"}, timeout=5).status_code == 403
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_the_cli_refuses_a_non_loopback_host_and_says_why() -> None:
    command = [sys.executable, "-m", "journy_core.emulator", "--host", "0.0.0.0", "--port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, env=_cli_env(), timeout=30, check=False)
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
    assert result.stdout == ""


def test_importing_the_emulator_loads_neither_requests_nor_a_framework() -> None:
    # A fresh interpreter: this test process has long imported requests, Django and Flask.
    code = (
        "import sys, journy_core.emulator\n"
        "loaded = sorted(m for m in ('requests', 'urllib3', 'django', 'flask') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "from journy_core import Client, Journy\n"  # the package's lazy names still resolve, and bring requests
        "assert Client.__module__ == 'journy_core.client' and Journy.__module__ == 'journy_core.journy'\n"
        "assert 'requests' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_cli_env(), timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_concurrent_calls_are_counted_exactly_against_the_rate_limit() -> None:
    with Emulator(rate_limit=100, rate_window=30) as emu:
        statuses: list[int] = []
        lock = threading.Lock()

        def burst(worker: int) -> None:
            with Api(emu) as api:
                for i in range(10):
                    status = api.post("/users/upsert", user(f"{worker}-{i}")).status_code
                    with lock:
                        statuses.append(status)

        workers = [threading.Thread(target=burst, args=(n,)) for n in range(15)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert sorted(statuses) == [201] * 100 + [429] * 50
        assert len(emu.state()["users"]) == 100
        assert len(emu.calls()) == 150


def test_the_log_records_request_headers_without_credentials(api: Api) -> None:
    api.get("/validate", headers={"User-Agent": "journy-python/test", "Authorization": "Bearer hidden-token"})
    headers = api.emu.calls()[-1]["headers"]
    assert headers["User-Agent"] == "journy-python/test"
    assert {name.lower() for name in headers}.isdisjoint({"x-api-key", "authorization"})
    assert "hidden-token" not in repr(api.emu.calls())


# --- scripted answers ---


def test_a_scripted_json_answer_replaces_the_next_call_with_meta_added_and_is_not_applied(api: Api) -> None:
    api.emu.script_answer(422, {"message": "unprocessable"})
    scripted = api.post("/users/upsert", user("1"))
    assert scripted.status_code == 422
    assert assert_meta(scripted)["message"] == "unprocessable"
    assert "X-RateLimit-Remaining" in scripted.headers
    assert api.emu.state()["users"] == []
    call = api.emu.calls()[-1]
    assert (call["scripted"], call["applied"], call["status"]) == (True, False, 422)
    assert api.post("/users/upsert", user("1")).status_code == 201  # only the next call was scripted


def test_scripted_text_and_empty_answers_are_sent_as_is_in_order(api: Api) -> None:
    api.emu.script_answer(502, "<html>Bad gateway</html>")
    api.emu.script_answer(204, None)
    first = api.post("/track", TRACK_OK)
    second = api.post("/track", TRACK_OK)
    assert (first.status_code, first.text) == (502, "<html>Bad gateway</html>")
    assert (second.status_code, second.content) == (204, b"")


def test_a_scripted_answer_can_target_one_path_and_be_scripted_over_http(api: Api) -> None:
    response = api.post(
        "/_emulator/script", {"status": 201, "body": {"rejected": {"plan": "no"}}, "path": "/users/upsert"}
    )
    assert response.status_code == 200
    assert api.post("/track", TRACK_OK).status_code == 201
    assert api.post("/users/upsert", user("1")).json()["rejected"] == {"plan": "no"}
    assert api.post("/_emulator/script", {"status": "soon"}).status_code == 400
    api.emu.script_answer(500)
    api.post("/_emulator/reset")
    assert api.get("/validate").status_code == 200  # reset drops scripted answers


def test_start_on_takes_a_free_port_when_the_wanted_one_is_busy() -> None:
    with Emulator() as first:
        second = Emulator.start_on(first.port)
        try:
            assert second.port != first.port
            assert requests.get(second.url + "/_emulator/state", timeout=5).status_code == 200
        finally:
            second.stop()


def test_the_report_lists_what_arrived_for_a_terminal() -> None:
    with Emulator() as emu:
        headers = {"X-Api-Key": DEFAULT_API_KEY}
        requests.post(emu.url + "/users/upsert", json={"identification": {"userId": "42"}}, headers=headers, timeout=5)
        requests.post(
            emu.url + "/track",
            json={"identification": {"user": {"userId": "42"}}, "name": "signed_in"},
            headers=headers,
            timeout=5,
        )
        report = emu.report()
    assert report.splitlines()[0] == "What the emulator received:"
    assert "  user     42 <None>" in report
    assert "  event    signed_in user={'userId': '42'}" in report
    assert "(2 API calls in all" in report
