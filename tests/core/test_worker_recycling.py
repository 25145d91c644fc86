"""gunicorn recycling its workers (``--max-requests``) during a journy.io outage keeps serving.

Measured before: each recycled worker held its slot for the whole 5 s exit flush, and throughput fell from 251 to
33 requests/s. Now a worker's exit flush gives up at once when journy.io refused every attempt of that worker, and
after 1 s without an answer otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

APP = textwrap.dedent(
    """
    import logging, os
    from journy_core import Journy
    logging.basicConfig(level=logging.INFO)
    journy = Journy("test-key", base_url=os.environ["APP_API_URL"])

    def app(environ, start_response):
        journy.track("viewed_page", user_id=environ["PATH_INFO"].strip("/") or "anonymous")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    """
)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def wait_until_serving(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1]
        try:
            requests.get(url + "/warmup", timeout=2)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still booting
            time.sleep(0.1)
    pytest.fail("gunicorn did not start")


def test_workers_recycled_during_an_outage_give_up_their_exit_flush_within_a_second(tmp_path: Path) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    if gunicorn is None:
        pytest.skip("gunicorn is not installed (it is in the dev extra)")
    (tmp_path / "outage_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "APP_API_URL": closed_port_url(), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [gunicorn, "--chdir", str(tmp_path), "-w", "2", "--max-requests", "20", "-b", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "--graceful-timeout", "30", "outage_app:app"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server)
        started = time.monotonic()
        for n in range(200):  # 10 worker recycles
            assert requests.get(f"{url}/{n}", timeout=30).status_code == 200
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    gave_up = stderr.count("because journy.io is not answering")
    assert gave_up >= 8, stderr[-3000:]
    # Ten recycles that each held a worker for the 5 s EXIT_TIMEOUT took over 25 s with two workers; with the exit
    # flush giving up after 1 s without an answer, the whole run takes a fraction of that.
    assert elapsed < 15, f"{elapsed:.1f} s for 200 requests"
