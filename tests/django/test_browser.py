"""The example project in real headless Chromium: a hostile user name cannot run script, and the page's journy
queue holds init, pageview, identify and account with the right verification hashes.

The project runs in a subprocess (``manage.py runserver``, its own settings) against this session's emulator, which
also serves the do-nothing ``/tracker.js`` that leaves ``window.__journy_queue__`` for the test to read.
Needs Debian's ``chromium`` at /usr/bin/chromium: skipped when absent, a failure under JOURNY_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from journy_core import verification_hash
from journy_core.emulator import Emulator
from tests.conftest import free_port, headless_chromium

PROJECT = Path(__file__).resolve().parents[2] / "example_projects" / "django_app"
SECRET = "browser-test-secret"
HOSTILE = "</script><script>alert(1)</script>"

pytestmark = pytest.mark.browser


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
        queue = page.evaluate("window.__journy_queue__.map(item => ({command: item.command, args: item.args}))")
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
