"""What one ``track`` costs the caller: ``Journy.track`` next to ``segment-analytics-python``'s ``track`` and
``posthog``'s ``capture``, each with its background sender running against a local server, in one run.

    .venv/bin/python benchmarks/enqueue_cost.py [--calls 5000] [--rounds 7]

Goal: at most 1/3 of Segment's cost and 1/6 of PostHog's. Each round enqueues ``--calls`` events with each library
(interleaved); the peers' senders drain into a local sink between rounds. Journy's senders talk to the emulator with
journy.io's own rate limit (1800 calls a minute), as they would in production, so they pace themselves and its queue
simply grows (it is sized to hold every round). The median round is reported, in microseconds per call.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process
from _sink import sink_process

from journy_core import Journy
from journy_core.emulator import DEFAULT_API_KEY


def timed(call: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the peers log every batch error; nothing here should

    import posthog
    from segment.analytics import Client as SegmentClient

    with emulator_process() as emulator_url, sink_process() as sink_url:
        capacity = (args.rounds + 1) * args.calls + 1000
        journy = Journy(DEFAULT_API_KEY, base_url=emulator_url, queue={"OPTIONS": {"MAX_QUEUE_SIZE": capacity}})
        segment = SegmentClient("write-key", host=sink_url, max_queue_size=100_000)
        ph = posthog.Posthog("phc_project_key", host=sink_url, max_queue_size=100_000, disable_geoip=True)
        contenders: dict[str, Callable[[int], None]] = {
            "journy Journy.track": lambda i: journy.track(
                "created_invoice", user_id="42", account_id="7", metadata={"amount": i, "currency": "EUR"}
            ),
            "segment track": lambda i: segment.track(
                "42", "created_invoice", {"amount": i, "currency": "EUR"}, context={"groupId": "7"}
            ),
            "posthog capture": lambda i: ph.capture(
                "created_invoice",
                distinct_id="42",
                properties={"amount": i, "currency": "EUR"},
                groups={"company": "7"},
            ),
        }
        drains: dict[str, Callable[[], object]] = {
            "journy Journy.track": lambda: None,  # paced at the API's rate limit: it drains in the background
            "segment track": segment.flush,
            "posthog capture": ph.flush,
        }
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for name, call in contenders.items():  # warm-up
            timed(call, 200)
            drains[name]()
        for _ in range(args.rounds):
            for name, call in contenders.items():
                results[name].append(timed(call, args.calls))
                drains[name]()
        journy.close(0)
        segment.shutdown()
        ph.shutdown()

    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"enqueue cost, {args.calls} calls a round, median of {args.rounds} rounds (microseconds per call)")
    for name, value in medians.items():
        spread = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"  {name:22s}: {value:6.1f} us   (rounds: {spread})")
    ours = medians["journy Journy.track"]
    seg, ph_cost = medians["segment track"], medians["posthog capture"]
    print(
        f"  journy / segment      : {ours / seg:.2f}  (goal: <= 0.33) -> {'met' if ours / seg <= 1 / 3 else 'NOT met'}"
    )
    print(
        f"  journy / posthog      : {ours / ph_cost:.2f}  (goal: <= 0.17) -> "
        f"{'met' if ours / ph_cost <= 1 / 6 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
