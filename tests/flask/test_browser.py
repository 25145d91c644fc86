"""The example app in real headless Chromium: a hostile user name cannot run script, the page's journy calls are
right, and the emulator standing in for journy.io's tracker receives them and checks their verification hashes.

The emulator's ``/tracker.js`` drains ``window.__journy_queue__``, sends every call to the emulator
(``state()["frontend"]``) and keeps them in ``window.__journy_emulator__.commands``, which these tests read.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from journy_core import verification_hash
from journy_core.emulator import Emulator
from tests.conftest import headless_chromium

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parents[2] / "example_projects" / "flask_app"
HOSTILE = "</script><script>alert(1)</script>"
SECRET = "browser-test-secret"


@pytest.fixture(autouse=True)
def _no_verification_secret_left_behind(emulator: Emulator) -> Iterator[None]:
    # The emulator is shared by the session: a secret set by one test must not check the next test's pages.
    yield
    emulator.configure(verification_secret="")


def wait_for_frontend(emulator: Emulator, ready: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The emulator's browser calls once ``ready`` holds for them (the tracker sends them asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        calls: list[dict[str, Any]] = emulator.state()["frontend"]
        if ready(calls) or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


@pytest.fixture
def example_server(emulator: Emulator, tmp_path: Path) -> Iterator[str]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import teams
    finally:
        sys.path.remove(str(EXAMPLE))
    app = teams.create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'browser.db'}",
            "JOURNY_API_URL": emulator.url,
            "JOURNY_TRACKER_DOMAIN": emulator.url,
            "JOURNY_VERIFICATION_SECRET": SECRET,
            "JOURNY_QUEUE": {"BACKEND": "memory"},
        }
    )
    with app.app_context():
        user = teams.User(email="mallory@acme.test", full_name=HOSTILE)
        user.set_password("password")
        teams.db.session.add(teams.Team(name=HOSTILE, members=[user]))
        teams.db.session.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        with app.app_context():
            teams.db.engine.dispose()


# What the page handed to journy: the tracker script keeps every command it sent (the queue it drained included).
read_queue = "window.__journy_emulator__.commands.map(c => ({command: c.command, args: c.args ?? null}))"
tracker_loaded = "window.__journy_emulator__ !== undefined"


def example_server_tracking(queue: list[dict[str, Any]]) -> str:
    domain: str = queue[0]["args"]["domain"]
    assert domain.startswith("http://127.0.0.1:")  # the emulator, which serves the do-nothing tracker.js
    return domain


def test_a_hostile_user_name_runs_no_script_and_the_queue_carries_the_right_hashes(example_server: str) -> None:
    dialogs: list[str] = []
    with headless_chromium() as browser:
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{example_server}/login")
        page.fill("input[name=email]", "mallory@acme.test")
        page.fill("input[name=password]", "password")
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{example_server}/")  # the home page, with the user's team as the account
        page.wait_for_function("window.__journy_emulator__ !== undefined")  # the tracker script loaded
        home: list[dict[str, Any]] = page.evaluate(read_queue)
        page.goto(f"{example_server}/teams/1")
        page.wait_for_function(tracker_loaded)
        team_page: list[dict[str, Any]] = page.evaluate(read_queue)
        title = page.title()

    assert dialogs == []
    assert HOSTILE in title  # the name reached the page, as text
    assert [call["command"] for call in home] == ["init", "identify", "account", "pageview"]
    by_command = {call["command"]: call["args"] for call in home}
    assert by_command["init"] == {"trackerId": "emulator-tracker", "domain": example_server_tracking(home)}
    assert by_command["identify"]["userId"] == "1"
    assert by_command["identify"]["verification"] == verification_hash(SECRET, "1")
    assert by_command["identify"]["properties"]["full_name"] == HOSTILE
    assert by_command["account"]["accountId"] == "1"
    assert by_command["account"]["verification"] == verification_hash(SECRET, "1")
    assert by_command["account"]["properties"]["name"] == HOSTILE
    assert by_command["pageview"] == {"accountId": "1", "verification": verification_hash(SECRET, "1")}
    team_commands = {call["command"]: call["args"] for call in team_page}
    assert team_commands["screen"]["name"] == "Team"
    assert team_commands["event"]["name"] == "opened_team"
    assert team_commands["event"]["verification"] == verification_hash(SECRET, "1")


def test_an_anonymous_page_queues_init_and_pageview(example_server: str) -> None:
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(f"{example_server}/")
        page.wait_for_function(tracker_loaded)
        commands = page.evaluate("window.__journy_emulator__.commands.map(c => c.command)")
    assert commands == ["init", "pageview"]


def log_in(page: Any, example_server: str) -> None:
    page.goto(f"{example_server}/login")
    page.fill("input[name=email]", "mallory@acme.test")
    page.fill("input[name=password]", "password")
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{example_server}/")
    page.wait_for_function(tracker_loaded)


@pytest.mark.parametrize(
    ("emulator_secret", "verified"),
    [(SECRET, True), ("not-the-apps-secret", False)],
    ids=["same-secret", "wrong-secret"],
)
def test_the_pages_browser_calls_and_later_ones_reach_the_emulator_which_checks_their_verification(
    example_server: str, emulator: Emulator, emulator_secret: str, verified: bool
) -> None:
    emulator.configure(verification_secret=emulator_secret)
    home = f"{example_server}/"
    later = {"name": "clicked_export", "accountId": "1", "verification": verification_hash(SECRET, "1")}

    with headless_chromium() as browser:
        page = browser.new_page()
        log_in(page, example_server)
        page.evaluate("args => journy('event', args)", later)  # a call made after the tracker loaded
        calls = wait_for_frontend(emulator, lambda calls: any(c["args"] == later for c in calls))

    on_home = {call["command"]: call for call in calls if call["page"] == home and call["command"] != "event"}
    assert list(on_home) == ["init", "identify", "account", "pageview"]
    assert on_home["init"]["verified"] is None
    for command in ("identify", "account", "pageview"):
        assert on_home[command]["verified"] is verified, on_home[command]
    assert [call["verified"] for call in calls if call["args"] == later] == [verified]
    assert SECRET not in str(emulator.state()) and SECRET not in str(emulator.config())


def test_without_a_secret_the_emulator_records_browser_calls_unchecked(example_server: str, emulator: Emulator) -> None:
    with headless_chromium() as browser:
        page = browser.new_page()
        log_in(page, example_server)
        calls = wait_for_frontend(emulator, lambda calls: any(c["command"] == "identify" for c in calls))

    identify = next(call for call in calls if call["command"] == "identify")
    assert identify["verified"] is None
    assert "no --verification-secret" in identify["reason"]
