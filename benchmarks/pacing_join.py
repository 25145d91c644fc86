"""How fast a process that joins busy siblings on one key sends, when they leave most of the rate limit free.

    .venv/bin/python benchmarks/pacing_join.py [--siblings 3] [--sibling-rate 200] [--warm-up 20] [--measure 10]

What a Celery prefork child or an RQ work-horse started (or recycled) next to others meets: the others keep the
key's count rising at a modest pace, so a pacer that only sends its share of the window's calls starts from a
share of a few calls. The emulator runs in its own process with 100 ms of latency and journy.io's default limit
(1800 calls a minute). ``--siblings`` processes send ``--sibling-rate`` calls a minute between them, one call at a
time, for the whole run; after ``--warm-up`` seconds a new process starts with a backlog (thread backend, defaults,
50 users). Reported: the newcomer's rate from 2 s after its first call for ``--measure`` seconds, as calls a minute
and as a share of the room the siblings leave (97% of the limit less their rate), and the calls answered 429.
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

SIBLING = textwrap.dedent(
    """
    import os, sys, time
    from journy_core import Journy
    from journy_core.emulator import DEFAULT_API_KEY
    url, seconds, spacing, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    journy = Journy(DEFAULT_API_KEY, base_url=url)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        journy.track("sibling", user_id=f"{name}-{n % 50}")
        n += 1
        time.sleep(spacing)
    os._exit(0)
    """
)

NEWCOMER = textwrap.dedent(
    """
    import os, sys, time
    from journy_core import Journy
    from journy_core.emulator import DEFAULT_API_KEY
    url, seconds = sys.argv[1], float(sys.argv[2])
    journy = Journy(DEFAULT_API_KEY, base_url=url)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        while journy.backend.pending_count() < 200:
            journy.track("newcomer", user_id=f"new-{n % 50}")
            n += 1
        time.sleep(0.2)
    os._exit(0)  # no exit flush: only what was delivered within the time counts
    """
)


def run(url: str, siblings: int, sibling_rate: float, warm_up: float, measure: float) -> dict[str, float]:
    requests.post(url + "/_emulator/reset", timeout=5)
    spacing = 60.0 * siblings / sibling_rate
    total = warm_up + measure + 10
    running = [
        subprocess.Popen([sys.executable, "-c", SIBLING, url, str(total), str(spacing), f"sibling-{i}"])
        for i in range(siblings)
    ]
    time.sleep(warm_up)
    newcomer = subprocess.Popen([sys.executable, "-c", NEWCOMER, url, str(measure + 5)])
    for process in [newcomer, *running]:
        process.wait(total + 60)
    calls = requests.get(url + "/_emulator/calls", timeout=30).json()
    mine = sorted(c["time"] for c in calls if c["path"] == "/track" and c["body"]["name"] == "newcomer")
    start = mine[0] + 2.0 if mine else 0.0
    sent = sum(1 for t in mine if start <= t < start + measure)
    rate = sent * 60.0 / measure
    room = 0.97 * 1800 - sibling_rate
    rejected = sum(1 for c in calls if c["status"] == 429)
    return {"rate": rate, "share_of_room": rate / room, "rejected": rejected, "calls": len(calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--siblings", type=int, default=3)
    parser.add_argument("--sibling-rate", type=float, default=200.0, help="calls a minute, all siblings together")
    parser.add_argument("--warm-up", type=float, default=20.0)
    parser.add_argument("--measure", type=float, default=10.0)
    args = parser.parse_args()
    with emulator_process("--latency", "0.1") as url:
        result = run(url, args.siblings, args.sibling_rate, args.warm_up, args.measure)
    print(
        f"newcomer beside {args.siblings} siblings at {args.sibling_rate:.0f} calls/min: "
        f"{result['rate']:.0f} calls/min from 2 s after its first call for {args.measure:.0f} s "
        f"({result['share_of_room']:.0%} of the {0.97 * 1800 - args.sibling_rate:.0f} left); "
        f"{result['rejected']:.0f} of {result['calls']:.0f} calls answered 429"
    )


if __name__ == "__main__":
    main()
