"""The example project's demo (what ``make demo`` runs) works end to end against its own emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "example_projects" / "django_app" / "run_demo.py"


def test_the_demo_shows_the_user_account_membership_device_and_event_arriving() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "JOURNY_API_URL")}
    env["CI"] = "1"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--port", "0", "--exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "user     1 <ada@acme.example>" in out
    assert "account  1 (None) {'name': 'ACME, Inc', 'plan': 'pro'}" in out
    assert "member   user 1 in account 1 (active)" in out
    assert "device   demo-device-1 -> user 1" in out
    assert (
        "event    exported_report user={'userId': '1', 'email': 'ada@acme.example'} account={'accountId': '1'} " in out
    )
    assert "{'format': 'csv'}" in out
    assert 'journy("identify", {"userId":"1"' in out
