"""An API outage never holds a process at exit: the exit flush gives up after 1 s without an answer.

Before, a process with 500 operations queued and journy.io refusing connections took the whole EXIT_TIMEOUT (5 s)
to exit, and so did every gunicorn or Celery worker recycled during an outage.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from journy_core.emulator import Emulator


def exit_after_queueing(url: str, api_key: str, count: int = 500) -> tuple[float, str]:
    """Run a process that queues ``count`` events and exits without flushing; (its run time, its stderr)."""
    code = textwrap.dedent(
        f"""
        import logging; logging.basicConfig(level=logging.INFO)
        from journy_core import Journy
        j = Journy({api_key!r}, base_url={url!r}, timeout=(5, 30))
        for i in range(200):
            j.track("before", user_id=str(i))
        import time; time.sleep(0.3)  # the first attempts fail (or hang) before the exit
        for i in range({count} - 200):
            j.track("exiting", user_id=str(i))
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False
    )
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started - 0.3, result.stderr


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (an API that hangs)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(100)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def not_delivered(stderr: str) -> tuple[int, int]:
    """(operations not delivered, operations in flight whose outcome is unknown) from the exit warning."""
    found = re.search(
        r"(\d+) operation\(s\) not delivered at exit because journy.io is not answering .*; "
        r"(\d+) more were in flight",
        stderr,
    )
    assert found, stderr
    lost, in_flight = map(int, found.groups())
    return lost, in_flight


def test_with_connections_refused_the_exit_flush_gives_up_within_a_second_and_counts_all(api_key: str) -> None:
    elapsed, stderr = exit_after_queueing(closed_port_url(), api_key)
    # Interpreter start and imports take a few hundred ms; without patience this took EXIT_TIMEOUT (5 s).
    assert elapsed < 3.0, stderr
    lost, in_flight = not_delivered(stderr)
    assert lost + in_flight == 500
    assert "ConnectionFailed" in stderr or "refused" in stderr.lower()


def test_with_an_api_that_hangs_the_exit_flush_gives_up_within_a_second(silent_server: str, api_key: str) -> None:
    elapsed, stderr = exit_after_queueing(silent_server, api_key)
    assert elapsed < 3.0, stderr
    lost, in_flight = not_delivered(stderr)
    assert lost + in_flight == 500
    assert in_flight >= 1  # the calls waiting for an answer are not claimed lost or delivered


def test_while_the_api_answers_the_exit_flush_uses_its_whole_timeout(emulator: Emulator, api_key: str) -> None:
    # 0.2 s a call, one at a time: 500 calls need far more than EXIT_TIMEOUT, and every answer is a success.
    emulator.configure(latency=0.2, rate_limit=1_000_000)
    code = textwrap.dedent(
        f"""
        import logging; logging.basicConfig(level=logging.INFO)
        from journy_core import Journy
        j = Journy({api_key!r}, base_url={emulator.url!r}, queue={{"OPTIONS": {{"EXIT_TIMEOUT": 2.5}}}})
        for i in range(500):
            j.track("exiting", user_id=str(i))
        """
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert elapsed >= 2.5, result.stderr
    found = re.search(r"(\d+) operation\(s\) not delivered at exit within EXIT_TIMEOUT=2.5 s; 0 more", result.stderr)
    assert found, result.stderr
    assert int(found.group(1)) == 500 - len(emulator.state()["events"])
