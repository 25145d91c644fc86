"""Start the emulator in its own process for a benchmark, so that the server does not share the GIL with the
client being measured; optionally over https with a throw-away self-signed certificate (made with the
``openssl`` command), which clients are told to trust through ``REQUESTS_CA_BUNDLE``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def emulator_process(*args: str, tls: bool = False) -> Iterator[str]:
    """Run ``python -m journy_core.emulator`` with ``args`` on a free port; yield its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        previous_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
        if tls:
            cert, key = _self_signed(Path(tmp))
            extra = ["--certfile", str(cert), "--keyfile", str(key)]
            os.environ["REQUESTS_CA_BUNDLE"] = str(cert)
        proc = subprocess.Popen(
            [sys.executable, "-m", "journy_core.emulator", "--port", str(port), *extra, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    requests.get(url + "/_emulator/state", timeout=1)
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the emulator did not start") from None
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
            if tls:
                if previous_bundle is None:
                    os.environ.pop("REQUESTS_CA_BUNDLE", None)
                else:
                    os.environ["REQUESTS_CA_BUNDLE"] = previous_bundle
