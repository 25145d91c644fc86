"""Sequential calls per second of journy_core.Client against the emulator, side by side with the official
``journyio-sdk`` making the same calls, in one run. Goal: at least 3x the official SDK.

    .venv/bin/python benchmarks/client_throughput.py [--calls 1000] [--rounds 3]

Both clients send the same upsert_user / track pairs to one emulator process (rate limit lifted), first over https
(a throw-away self-signed certificate: the way both talk to api.journy.io, TLS handshake included), then over plain
http on loopback (the floor: no handshake to save). The official SDK calls ``requests.post`` per call, so every
call opens a new connection; this client keeps one alive. Rounds alternate between the two clients, and the best
round of each is compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

from journy_core import Client
from journy_core.emulator import DEFAULT_API_KEY


def journy_calls(url: str) -> Callable[[int], None]:
    client = Client(DEFAULT_API_KEY, base_url=url)

    def run(n: int) -> None:
        for i in range(n // 2):
            client.upsert_user(user_id=str(i), properties={"plan": "pro", "seats": i})
            client.track("signed_in", user_id=str(i), metadata={"n": i})

    return run


def official_sdk_calls(url: str) -> Callable[[int], None]:
    from journyio.client import Client as SdkClient
    from journyio.client import Config, Properties
    from journyio.events import Event, Metadata
    from journyio.httpclient import HttpClientRequests
    from journyio.results import Success
    from journyio.user_identified import UserIdentified

    client = SdkClient(HttpClientRequests(), Config(DEFAULT_API_KEY, url))

    def run(n: int) -> None:
        for i in range(n // 2):
            properties = Properties()
            properties["plan"] = "pro"
            properties["seats"] = i
            user = UserIdentified.by_user_id(str(i))
            assert isinstance(client.upsert_user(user, properties), Success)
            metadata = Metadata()
            metadata["n"] = i
            event = Event.for_user("signed_in", user).with_metadata(metadata)
            assert isinstance(client.add_event(event), Success)

    return run


def best_rate(run: Callable[[int], None], calls: int, rounds: list[float]) -> None:
    started = time.perf_counter()
    run(calls)
    rounds.append(calls / (time.perf_counter() - started))


def measure(url: str, calls: int, rounds: int) -> tuple[list[float], list[float]]:
    ours, theirs = journy_calls(url), official_sdk_calls(url)
    ours(20)  # warm up both (imports, first connection)
    theirs(20)
    ours_rates: list[float] = []
    theirs_rates: list[float] = []
    for _ in range(rounds):
        best_rate(ours, calls, ours_rates)
        best_rate(theirs, calls, theirs_rates)
    return ours_rates, theirs_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.calls} sequential calls (upsert_user + track), best of {args.rounds} rounds, one emulator process")
    for label, tls in (("https (as with api.journy.io)", True), ("plain http on loopback", False)):
        with emulator_process("--rate-limit", "100000000", tls=tls) as url:
            ours_rates, theirs_rates = measure(url, args.calls, args.rounds)
        best_ours, best_theirs = max(ours_rates), max(theirs_rates)
        ratio = best_ours / best_theirs
        print(f"{label}:")
        print(f"  journy_core.Client : {best_ours:7.0f} calls/s  (rounds: {', '.join(f'{r:.0f}' for r in ours_rates)})")
        print(
            f"  journyio-sdk 2.x   : {best_theirs:7.0f} calls/s  "
            f"(rounds: {', '.join(f'{r:.0f}' for r in theirs_rates)})"
        )
        print(f"  ratio              : {ratio:.2f}x  (goal: at least 3x) -> {'met' if ratio >= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
