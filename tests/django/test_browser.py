"""The example project in real headless Chromium: a hostile user name cannot run script, the page's journy calls
carry the right verification hashes, and the emulator standing in for journy.io's tracker checks them.

The project runs in a subprocess (``manage.py runserver``, its own settings) against this session's emulator, which
also serves ``/tracker.js``: it sends the page's calls to the emulator (``state()["frontend"]``) and lists them in
``window.__journy_emulator__.commands`` for the test to read.
Needs Debian's ``chromium`` at /usr/bin/chromium: skipped when absent, a failure under JOURNY_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journy_core import verification_hash
from journy_core.emulator import Emulator
from tests.conftest import free_port, headless_chromium

PROJECT = Path(__file__).resolve().parents[2] / "example_projects" / "django_app"
SECRET = "browser-test-secret"
HOSTILE = "</script><script>alert(1)</script>"

pytestmark = pytest.mark.browser


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
def example_app(emulator: Emulator, tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "JOURNY_API_URL": emulator.url,
        "DEMO_DATABASE": str(tmp_path / "db.sqlite3"),
        "DEMO_VERIFICATION_SECRET": SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(PROJECT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=60)
    subprocess.run([*manage, "demo_data", "--first-name", HOSTILE], env=env, check=True, timeout=60)
    port = free_port()
    log = (tmp_path / "runserver.log").open("wb")
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the example app did not start:\n{(tmp_path / 'runserver.log').read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
        log.close()


def test_a_hostile_name_runs_no_script_and_the_queue_holds_verified_calls(example_app: str) -> None:
    dialogs: list[str] = []
    with headless_chromium() as browser:
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{example_app}/login/")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", "demo-password")
        page.click("#login")
        page.wait_for_url(f"{example_app}/dashboard/")
        page.wait_for_function("window.__journy_emulator__ !== undefined")  # the tracker script loaded
        queue = page.evaluate("window.__journy_emulator__.commands")
        title_text = page.text_content("body") or ""

    assert dialogs == []
    assert HOSTILE in title_text  # the name is on the page, as text
    commands = {item["command"]: item["args"] for item in queue}
    assert {"init", "pageview", "identify", "account"} <= set(commands)
    identify, account = commands["identify"], commands["account"]
    assert identify["properties"]["first_name"] == HOSTILE
    assert identify["verification"] == verification_hash(SECRET, identify["userId"])
    assert account["verification"] == verification_hash(SECRET, account["accountId"])
    assert commands["pageview"]["verification"] == verification_hash(SECRET, account["accountId"])


def log_in_and_open_the_dashboard(example_app: str) -> None:
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(f"{example_app}/login/")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", "demo-password")
        page.click("#login")
        page.wait_for_url(f"{example_app}/dashboard/")
        page.wait_for_function("window.__journy_emulator__ !== undefined")


@pytest.mark.parametrize(
    ("emulator_secret", "verified"),
    [(SECRET, True), ("not-the-apps-secret", False)],
    ids=["same-secret", "wrong-secret"],
)
def test_the_dashboards_browser_calls_reach_the_emulator_which_checks_their_verification(
    example_app: str, emulator: Emulator, emulator_secret: str, verified: bool
) -> None:
    emulator.configure(verification_secret=emulator_secret)
    dashboard = f"{example_app}/dashboard/"

    log_in_and_open_the_dashboard(example_app)
    calls = wait_for_frontend(
        emulator,
        lambda calls: {"identify", "account", "pageview"} <= {c["command"] for c in calls if c["page"] == dashboard},
    )

    on_dashboard = {call["command"]: call for call in calls if call["page"] == dashboard}
    assert {"init", "identify", "account", "pageview"} <= set(on_dashboard)
    assert on_dashboard["init"]["verified"] is None
    for command in ("identify", "account", "pageview"):
        assert on_dashboard[command]["verified"] is verified, on_dashboard[command]
    login_page = [call for call in calls if call["page"] == f"{example_app}/login/"]
    assert login_page and all(call["verified"] is None for call in login_page)  # anonymous: no ID to verify
    assert SECRET not in str(emulator.state()) and SECRET not in str(emulator.config())
