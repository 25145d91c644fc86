"""Per-entity order of the ``thread`` backend, counted at the emulator.

    .venv/bin/python benchmarks/order.py [--users 300] [--accounts 200]

- ``--users`` users each upserted then deleted through ``journy_core.Journy`` (defaults), without faults and with
  30% 5xx and connection resets: how many deleted users journy.io holds again afterwards (goal: 0).
- ``--accounts`` accounts each upserted, then an event tracked for it at once, with no flush (the upsert waits in
  its coalescing window): how many events reached the API before their account's upsert (goal: 0).
"""

from __future__ import annotations

import argparse
import time

from journy_core import Journy
from journy_core.emulator import DEFAULT_API_KEY, Emulator

RETRY = {"base": 0.01, "cap": 0.2, "max_attempts": 30, "max_age": 60}


def recreated_users(users: int, fault_rate: float) -> int:
    emulator = Emulator(rate_limit=1_000_000, fault_rate=fault_rate, faults=("5xx", "reset")).start()
    journy = Journy(DEFAULT_API_KEY, base_url=emulator.url, queue={"OPTIONS": {"RETRY": RETRY}})
    try:
        for n in range(users):
            journy.upsert_user(user_id=str(n), properties={"plan": "pro"})
            journy.delete_user(user_id=str(n))
        journy.flush(120)
        return len(emulator.state()["users"])
    finally:
        journy.close(5)
        emulator.stop()


def events_before_their_account(accounts: int) -> int:
    emulator = Emulator(rate_limit=1_000_000).start()
    journy = Journy(DEFAULT_API_KEY, base_url=emulator.url)
    try:
        for n in range(accounts):
            journy.upsert_account(account_id=f"a{n}")
            journy.track("created_project", account_id=f"a{n}")
        time.sleep(3)  # the coalescing window (1 s) passes by itself: no flush hurries the upserts
        journy.flush(60)
        first: dict[tuple[str, str], int] = {}
        for call in emulator.calls():
            ident = call["body"].get("identification", {})
            account = ident.get("accountId") or ident.get("account", {}).get("accountId")
            first.setdefault((call["path"], account), call["id"])
        return sum(first[("/track", f"a{n}")] < first[("/accounts/upsert", f"a{n}")] for n in range(accounts))
    finally:
        journy.close(5)
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--accounts", type=int, default=200)
    args = parser.parse_args()
    for fault_rate in (0.0, 0.3):
        count = recreated_users(args.users, fault_rate)
        print(f"{args.users} users upserted then deleted, {fault_rate:.0%} faults: {count} recreated (goal: 0)")
    early = events_before_their_account(args.accounts)
    print(f"{args.accounts} events tracked right after their account's upsert: {early} arrived first (goal: 0)")


if __name__ == "__main__":
    main()
