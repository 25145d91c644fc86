"""The example app in real headless Chromium: a hostile user name cannot run script, the queue is right."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
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


read_queue = "window.__journy_queue__.map(c => ({command: c.command, args: c.args ?? null}))"


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
        commands = page.evaluate("window.__journy_queue__.map(c => c.command)")
    assert commands == ["init", "pageview"]
