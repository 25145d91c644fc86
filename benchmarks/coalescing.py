"""Coalescing: 1,000 saves spread over 100 users inside one second become how many upserts?

    .venv/bin/python benchmarks/coalescing.py [--saves 1000] [--users 100]

Goal: at most 100 upserts (one per user). The saves are spread evenly over one second, as a busy app would make
them; the emulator (its own process, journy.io's default rate limit) counts the upserts that arrive. Membership
grouping is measured the same way: 1,000 single-user adds to 5 accounts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

from journy_core import Journy
from journy_core.emulator import DEFAULT_API_KEY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args()
    with emulator_process() as url:
        journy = Journy(DEFAULT_API_KEY, base_url=url)
        gap = 1.0 / args.saves
        started = time.monotonic()
        for i in range(args.saves):
            journy.upsert_user(user_id=str(i % args.users), properties={"saves": i})
            time.sleep(max(0.0, started + (i + 1) * gap - time.monotonic()))
        spread = time.monotonic() - started
        for i in range(1000):
            journy.add_users_to_account(account_id=str(i % 5), users=[str(i)])
        journy.flush(timeout=120)
        calls = requests.get(url + "/_emulator/calls", timeout=30).json()
    upserts = [c for c in calls if c["path"] == "/users/upsert" and c["status"] == 201]
    adds = [c for c in calls if c["path"] == "/accounts/users/add" and c["status"] == 201]
    stats = journy.stats()
    print(f"{args.saves} saves of {args.users} users over {spread:.2f} s -> {len(upserts)} upserts "
          f"(goal: <= {args.users}) -> {'met' if len(upserts) <= args.users else 'NOT met'}")  # fmt: skip
    print(f"1000 single-user adds to 5 accounts -> {len(adds)} calls (at most 100 users each)")
    print(f"stats: {stats}")


if __name__ == "__main__":
    main()
