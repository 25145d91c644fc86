"""gunicorn throughput while its workers recycle (``--max-requests``), with journy.io up, refusing, or hanging.

    .venv/bin/python benchmarks/recycling_outage.py [--requests 300] [--max-requests 50] [--workers 1]

Each request of a small WSGI app queues one ``track`` (thread backend, defaults). The API is the emulator (up), a
closed port (connections refused) or a port that accepts and never answers (hanging). A recycled worker runs its
exit flush: while journy.io answers it may deliver for ``EXIT_TIMEOUT``; without an answer it gives up after 1 s.
Reported: requests per second for each, and the ratio to the API-up run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

APP = textwrap.dedent(
    """
    import os
    from journy_core import Journy
    from journy_core.emulator import DEFAULT_API_KEY
    journy = Journy(DEFAULT_API_KEY, base_url=os.environ["APP_API_URL"])

    def app(environ, start_response):
        journy.track("viewed_page", user_id=environ["PATH_INFO"].strip("/"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(api_url: str, total: int, max_requests: int, workers: int) -> float:
    """Requests per second through gunicorn recycling its workers, with the app's journy.io at ``api_url``."""
    folder = tempfile.mkdtemp()
    Path(folder, "bench_app.py").write_text(APP)
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [gunicorn, "--chdir", folder, "-w", str(workers), "--max-requests", str(max_requests)]
    server = subprocess.Popen(
        [*command, "-b", f"127.0.0.1:{port}", "bench_app:app"],
        env={**os.environ, "APP_API_URL": api_url},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url + "/warmup", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        started = time.monotonic()
        for n in range(total):
            requests.get(f"{url}/{n % 100}", timeout=60)
        return total / (time.monotonic() - started)
    finally:
        server.terminate()
        server.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-requests", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(1000)
    # Bound but not listening: connections are refused, and no other server can take the port meanwhile.
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{refusing.getsockname()[1]}"
    print(f"gunicorn -w {args.workers} --max-requests {args.max_requests}, {args.requests} requests one at a time")
    with emulator_process("--rate-limit", "1000000") as emulator_url:
        baseline = measure(emulator_url, args.requests, args.max_requests, args.workers)
    print(f"  API up:                 {baseline:7.1f} requests/s")
    for label, api_url in (
        ("refusing connections", closed),
        ("hanging", f"http://127.0.0.1:{hanging.getsockname()[1]}"),
    ):
        rate = measure(api_url, args.requests, args.max_requests, args.workers)
        print(f"  API {label + ':':21s}{rate:7.1f} requests/s  ({rate / baseline:.2f} of the API-up rate)")
    hanging.close()
    refusing.close()


if __name__ == "__main__":
    main()
