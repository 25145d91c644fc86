"""How close delivery gets to the key's rate limit, alone and with four processes sharing one key.

    .venv/bin/python benchmarks/delivery_rate.py [--duration 150] [--processes 1 4]

The emulator runs in its own process with 100 ms of added latency and journy.io's default rate limit (1800 calls a
minute, sliding window). Each sender process keeps a backlog of ``track`` operations in its ``Journy`` (thread
backend, defaults) for ``--duration`` seconds, spread over 50 users: one user's operations go out one at a time,
in the order they were made (at most one call per round trip), while different users go in parallel. Reported:
calls accepted during the last full window as a share of the limit (goal: at least 95%), and the share of all
calls answered 429 (goal: under 1%).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

SENDER = textwrap.dedent(
    """
    import os, sys, time
    from journy_core import Journy
    from journy_core.emulator import DEFAULT_API_KEY
    url, duration, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    journy = Journy(DEFAULT_API_KEY, base_url=url)
    deadline = time.monotonic() + duration
    n = 0
    while time.monotonic() < deadline:
        while journy.backend.pending_count() < 200:
            journy.track("benchmarked", user_id=f"{name}-{n % 50}", metadata={"n": n})
            n += 1
        time.sleep(0.2)
    os._exit(0)  # no exit flush: only what was delivered within the duration counts
    """
)


def run(url: str, processes: int, duration: float) -> tuple[float, float, int]:
    requests.post(url + "/_emulator/reset", timeout=5)
    started = time.time()
    senders = [
        subprocess.Popen([sys.executable, "-c", SENDER, url, str(duration), f"sender-{i}"]) for i in range(processes)
    ]
    for sender in senders:
        sender.wait(duration + 60)
    ended = time.time()
    calls = [c for c in requests.get(url + "/_emulator/calls", timeout=30).json() if c["path"] == "/track"]
    window_start = min(ended, started + duration) - 60
    accepted_last_window = sum(1 for c in calls if c["status"] == 201 and c["time"] >= window_start)
    rejected = sum(1 for c in calls if c["status"] == 429)
    return accepted_last_window / 1800, rejected / max(1, len(calls)), len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds each run lasts (at least 61)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print("delivery rate against the emulator: 100 ms latency, 1800 calls a minute per key (sliding window)")
    with emulator_process("--latency", "0.1") as url:
        for processes in args.processes:
            share, rejected, calls = run(url, processes, args.duration)
            verdict = "met" if share >= 0.95 and rejected < 0.01 else "NOT met"
            print(
                f"  {processes} process(es), {args.duration:.0f} s: {share:.1%} of the limit in the last window, "
                f"{rejected:.2%} of {calls} calls answered 429  (goal: >= 95%, < 1%) -> {verdict}"
            )


if __name__ == "__main__":
    main()
