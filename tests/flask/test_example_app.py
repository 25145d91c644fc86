"""The example app's demo runner, as a new user runs it: emulator, app, login, page, event, report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runner_shows_every_kind_of_data_arriving_at_the_emulator() -> None:
    result = subprocess.run(
        [sys.executable, "example_projects/flask_app/run_demo.py", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "user     1 <ada@acme.test>" in out
    assert "account  1 (acme.test) {'name': 'Acme, Inc', 'plan': 'pro'" in out
    assert "member   user 1 in account 1 (active)" in out
    assert "device   demo-device-1 -> user 1" in out  # the __journey cookie, linked at login
    assert "event    created_invoice" in out
    assert 'journy("identify", {"userId":"1"' in out
    assert out.rstrip().endswith("OK")
