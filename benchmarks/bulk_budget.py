"""How much of the rate limit's remaining budget a bulk sync uses when it starts right after another one.

    .venv/bin/python benchmarks/bulk_budget.py [--users 300] [--runs 2]

The emulator runs in its own process with 50 ms of added latency and journy.io's default rate limit (1800 calls a
minute per key, sliding window). Each run is a fresh :class:`journy_core.bulk.BulkSync` (its defaults: 4 calls in
flight, its own pacer, as a new ``flask journy sync`` or ``manage.py journy_sync`` process has) sending one
``upsert_user`` per user, the runs back to back: the first on a quiet key, the next while the window still holds
the calls of the one before. Reported for each run, side by side: elapsed time, calls per second, the budget left
in the window when it started (the limit less the calls accepted in the minute before) and the rate that budget
allows (the budget over the window), the run's rate as a share of it (goal: at least 80%), and calls answered 429
(goal: none).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

from journy_core import Client
from journy_core import operations as ops
from journy_core.bulk import BulkSync
from journy_core.emulator import DEFAULT_API_KEY

LIMIT = 1800
WINDOW = 60.0


@dataclass(frozen=True)
class Run:
    """One sync's figures."""

    seconds: float
    calls: int
    rejected: int
    budget: int  # calls the window had left when the run started

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def budget_rate(self) -> float:
        return self.budget / WINDOW

    @property
    def share(self) -> float:
        return self.rate / self.budget_rate


def users(count: int, run: int) -> Iterator[tuple[str, ops.Operation | None]]:
    for key in range(count):
        yield str(key).zfill(6), ops.upsert_user(user_id=key, properties={"run": run})


def calls_between(url: str, start: float, end: float) -> list[dict[str, object]]:
    logged = requests.get(url + "/_emulator/calls", timeout=30).json()
    return [call for call in logged if start <= call["time"] <= end and call["path"] == "/users/upsert"]


def sync_once(url: str, count: int, run: int) -> Run:
    before = time.time()
    accepted = [c for c in calls_between(url, before - WINDOW, before) if c["status"] != 429]
    sync = BulkSync(Client(DEFAULT_API_KEY, base_url=url))
    started = time.time()
    summary = sync.run("users", users(count, run), total=count)
    calls = calls_between(url, started, time.time())
    assert summary.sent == count, summary
    rejected = sum(1 for c in calls if c["status"] == 429)
    return Run(summary.seconds, len(calls) - rejected, rejected, LIMIT - len(accepted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300, help="users each run sends (one call each)")
    parser.add_argument("--runs", type=int, default=2, help="syncs run back to back (at least 2)")
    args = parser.parse_args()
    print(
        f"bulk sync of {args.users} users, {args.runs} runs back to back, against the emulator: "
        f"50 ms latency, {LIMIT} calls a minute per key (sliding window)"
    )
    with emulator_process("--latency", "0.05") as url:
        requests.post(url + "/_emulator/reset", timeout=5)
        runs = [sync_once(url, args.users, run) for run in range(args.runs)]
    print(f"  {'run':<5}{'elapsed':>9}{'calls/s':>9}{'budget left':>13}{'its rate':>10}{'share':>8}{'429s':>6}")
    for number, run in enumerate(runs, 1):
        print(
            f"  {number:<5}{run.seconds:>8.1f}s{run.rate:>9.1f}{run.budget:>13}{run.budget_rate:>9.1f}/s"
            f"{run.share:>8.0%}{run.rejected:>6}"
        )
    slowest = min(runs[1:], key=lambda run: run.share)
    met = slowest.share >= 0.8 and all(run.rejected == 0 for run in runs)
    print(
        f"  run 2 took {runs[1].seconds / runs[0].seconds:.2f}x as long as run 1; lowest share after run 1: "
        f"{slowest.share:.0%} (goal: >= 80% of the remaining budget's rate, no 429) -> {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
