"""A local stand-in for Segment's and PostHog's ingestion APIs, for benchmarks: answers 200 to every POST and
counts the events in the batches (``GET /count``). Run as a separate process: ``python _sink.py PORT``."""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
_counted = [0]  # events received (a list: no global statement)
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(json.dumps({"count": _counted[0]}).encode())

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = {}
        events = payload.get("batch") if isinstance(payload, dict) else None
        with _lock:
            _counted[0] += len(events) if isinstance(events, list) else 1
        self._answer(b'{"status": 1}')


@contextlib.contextmanager
def sink_process() -> Iterator[str]:
    """Run the sink in its own process on a free port; yield its URL."""
    from _emulator import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "_sink.py"), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url + "/count", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def received(url: str) -> int:
    return int(requests.get(url + "/count", timeout=5).json()["count"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a peer's process exiting mid-request resets its connection: expected here


if __name__ == "__main__":
    _Server(("127.0.0.1", int(sys.argv[1])), _Handler).serve_forever()
