"""What arrives when a process queues events and exits without flushing: journy next to Segment and PostHog.

    .venv/bin/python benchmarks/exit_delivery.py [--counts 2000 20000]

For each count, a fresh process per library queues that many ``track`` events and exits normally, without calling
flush. Segment and PostHog send to a local sink that counts the events in their batches; journy sends to the
emulator (in its own process) with the rate limit lifted, since the peers' sink has none, and with every option at
its default (queue of 10,000, 5 s exit flush). What journy could not deliver it says in its exit log line, shown.
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
from _sink import received, sink_process

PROGRAMS = {
    "journy": """
        from journy_core import Journy
        from journy_core.emulator import DEFAULT_API_KEY
        client = Journy(DEFAULT_API_KEY, base_url=URL)
        for i in range(COUNT):
            client.track("exited", user_id=str(i), metadata={"n": i})
    """,
    "segment": """
        from segment.analytics import Client
        client = Client("write-key", host=URL)
        for i in range(COUNT):
            client.track(str(i), "exited", {"n": i})
    """,
    "posthog": """
        import posthog
        client = posthog.Posthog("phc_key", host=URL, disable_geoip=True)
        for i in range(COUNT):
            client.capture("exited", distinct_id=str(i), properties={"n": i})
    """,
}


def run(name: str, url: str, count: int) -> tuple[float, str]:
    code = f"URL = {url!r}\nCOUNT = {count}\n" + textwrap.dedent(PROGRAMS[name])
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("journy:")]
    return time.monotonic() - started, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    print("events queued, then the process exits without flush: how many arrive")
    with emulator_process("--rate-limit", "100000000") as emulator_url, sink_process() as sink_url:
        for count in args.counts:
            for name in PROGRAMS:
                if name == "journy":
                    requests.post(emulator_url + "/_emulator/reset", timeout=5)
                    seconds, said = run(name, emulator_url, count)
                    state = requests.get(emulator_url + "/_emulator/state", timeout=30).json()
                    arrived = len(state["events"])
                else:
                    before = received(sink_url)
                    seconds, said = run(name, sink_url, count)
                    time.sleep(0.5)
                    arrived = received(sink_url) - before
                share = arrived / count
                print(
                    f"  {count:6d} queued  {name:8s}: {arrived:6d} arrived ({share:6.1%}), exit took {seconds:4.1f} s"
                )
                if said:
                    print(f"{'':26s}{said}")


if __name__ == "__main__":
    main()
