"""The emulator standing in for journy.io's tracker: ``/tracker.js`` and ``/analytics.js``, and the browser calls it
receives on ``/_emulator/frontend``, each with its verification hash checked, over real HTTP.

The script itself runs in headless Chromium in ``tests/django/test_browser.py`` and ``tests/flask/test_browser.py``;
here the emulator is fed what that script posts.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from journy_core import Tracker, verification_hash
from journy_core.emulator import Emulator

SECRET = "tracker-test-secret"
PAGE = "http://127.0.0.1:8000/dashboard/"


@pytest.fixture
def checking() -> Iterator[Emulator]:
    """An emulator of its own, checking hashes with SECRET."""
    with Emulator(verification_secret=SECRET) as emulator:
        yield emulator


def post(emulator: Emulator, calls: list[dict[str, Any]], **document: Any) -> requests.Response:
    """What the tracker script sends: a text/plain JSON body, from the app's origin."""
    body = json.dumps({"page": PAGE, "calls": calls, **document})
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://127.0.0.1:8000"}
    return requests.post(f"{emulator.url}/_emulator/frontend", data=body, headers=headers, timeout=5)


def signed(identifier: str) -> str:
    return verification_hash(SECRET, identifier)


@pytest.mark.parametrize("path", ["/tracker.js", "/analytics.js"])
def test_both_tracker_paths_serve_a_script_that_sends_the_queue_and_later_calls_without_eval(
    emulator: Emulator, path: str
) -> None:
    response = requests.get(emulator.url + path, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/javascript")
    script = response.text
    assert "__journy_queue__" in script and "window.journy = function" in script
    assert "/_emulator/frontend" in script
    assert not re.search(r"\beval\(|new Function|setTimeout\(\s*['\"]", script)


def test_the_tracking_domain_of_a_local_emulator_is_accepted_over_plain_http(emulator: Emulator) -> None:
    assert Tracker("emulator-tracker", emulator.url).script_url == f"{emulator.url}/tracker.js"


def test_each_browser_call_is_checked_against_the_hmac_of_its_user_or_account_id(checking: Emulator) -> None:
    calls = [
        {"command": "init", "args": {"trackerId": "t", "domain": "http://127.0.0.1:8000"}},
        {"command": "identify", "args": {"userId": "42", "verification": signed("42")}},
        {"command": "account", "args": {"accountId": "7", "verification": signed("7")}},
        {"command": "pageview", "args": {"accountId": "7", "verification": signed("7")}},
        {"command": "screen", "args": {"name": "Team", "accountId": "7", "verification": signed("42")}},
        {"command": "event", "args": {"name": "opened_team", "accountId": "7"}},
        {"command": "identify", "args": {"email": "ada@acme.test"}},
        {"command": "pageview", "args": None},
        {"command": "event", "args": {"name": "clicked", "accountId": 7, "verification": signed("7").upper()}},
    ]
    response = post(checking, calls)

    assert response.status_code == 200
    assert response.json() == {"recorded": len(calls)}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    frontend = checking.state()["frontend"]
    assert [(call["command"], call["verified"]) for call in frontend] == [
        ("init", None),
        ("identify", True),
        ("account", True),
        ("pageview", True),
        ("screen", False),  # the user's hash where the account's belongs
        ("event", False),  # an accountId with no verification: journy.io refuses it once verification is on
        ("identify", None),  # by email alone: no user ID to verify
        ("pageview", None),  # anonymous
        ("event", True),  # a number ID is hashed as its text; hex is compared case-insensitively
    ]
    assert [call["args"] for call in frontend] == [call["args"] for call in calls]
    first = frontend[0]
    assert set(first) == {"command", "args", "verified", "reason", "time", "page"}
    assert first["page"] == PAGE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "not the HMAC of accountId" in frontend[4]["reason"]


def test_without_a_secret_nothing_is_verified_and_the_reason_says_why(emulator: Emulator) -> None:
    post(emulator, [{"command": "identify", "args": {"userId": "42", "verification": "anything"}}])

    [call] = emulator.state()["frontend"]
    assert call["verified"] is None
    assert "no --verification-secret" in call["reason"]


def test_the_page_falls_back_to_the_referer_and_reset_forgets_the_browser_calls(checking: Emulator) -> None:
    body = json.dumps({"calls": [{"command": "pageview"}]})
    requests.post(
        f"{checking.url}/_emulator/frontend", data=body, headers={"Referer": "http://127.0.0.1:8000/"}, timeout=5
    )
    assert checking.state()["frontend"][0]["page"] == "http://127.0.0.1:8000/"

    checking.reset()
    assert checking.state()["frontend"] == []


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        json.dumps({"calls": {}}),
        json.dumps({"calls": [{"args": {}}]}),
        json.dumps({"calls": [{"command": ""}]}),
        json.dumps({"calls": [{"command": "x" * 65}]}),
        json.dumps({"calls": [{"command": "pageview"}] * 201}),
    ],
    ids=["empty", "not-json", "array", "calls-not-a-list", "no-command", "blank-command", "long-command", "too-many"],
)
def test_a_document_the_tracker_would_not_send_is_refused_and_not_recorded(emulator: Emulator, body: str) -> None:
    response = requests.post(f"{emulator.url}/_emulator/frontend", data=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["message"]
    assert emulator.state()["frontend"] == []


def test_a_cors_preflight_from_any_origin_is_allowed(emulator: Emulator) -> None:
    response = requests.options(
        f"{emulator.url}/_emulator/frontend",
        headers={"Origin": "http://localhost:5000", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_secret_can_be_set_and_cleared_through_the_config_view_which_never_shows_it(emulator: Emulator) -> None:
    config = requests.post(f"{emulator.url}/_emulator/config", json={"verification_secret": SECRET}, timeout=5)
    assert config.status_code == 200
    assert config.json()["verification_secret_set"] is True
    try:
        post(emulator, [{"command": "identify", "args": {"userId": "42", "verification": signed("42")}}])
        assert emulator.state()["frontend"][-1]["verified"] is True
        assert SECRET not in config.text
        assert SECRET not in requests.get(f"{emulator.url}/_emulator/config", timeout=5).text
    finally:
        cleared = requests.post(f"{emulator.url}/_emulator/config", json={"verification_secret": ""}, timeout=5)
    assert cleared.json()["verification_secret_set"] is False
    blank = requests.post(f"{emulator.url}/_emulator/config", json={"verification_secret": "   "}, timeout=5)
    assert blank.status_code == 400
    assert "verification_secret" in blank.json()["message"]


def test_the_secret_appears_in_no_state_page_log_or_call(checking: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    post(checking, [{"command": "identify", "args": {"userId": "42", "verification": "wrong"}}])
    requests.post(f"{checking.url}/_emulator/frontend", data="not json", timeout=5)

    page = requests.get(f"{checking.url}/", timeout=5).text
    assert "Browser calls" in page and "identify" in page
    for text in (json.dumps(checking.state()), json.dumps(checking.config()), page, caplog.text, checking.report()):
        assert SECRET not in text
    assert "NOT VERIFIED" in checking.report()


def test_the_command_line_checks_browser_calls_with_its_verification_secret() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "journy_core.emulator", "--port", "0", "--verification-secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = re.search(r"listening on (\S+)", banner)
        assert url is not None, banner
        assert "verification hashes checked" in banner and SECRET not in banner
        calls = [{"command": "account", "args": {"accountId": "7", "verification": signed("7")}}]
        requests.post(f"{url[1]}/_emulator/frontend", data=json.dumps({"calls": calls}), timeout=5)
        state = requests.get(f"{url[1]}/_emulator/state", timeout=5).json()
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=10)
    assert [call["verified"] for call in state["frontend"]] == [True]
    assert SECRET not in rest
