"""The main job for now: the local journy.io emulator, and a user, an account and an event sent to it.

    make demo                 # or: .venv/bin/python scripts/demo.py [--port 8484] [--exit]

Starts the emulator on 127.0.0.1 (port 8484, or a free one if that is taken), sends a user, an account, a
membership, a linked device and two events through journy_core (directly with Client, and through the queued
Journy), then prints what the emulator received. In a terminal it keeps serving the emulator's page until Ctrl-C;
without one (CI, a pipe) or with --exit it stops right away.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone

from journy_core import Client, Journy
from journy_core.emulator import DEFAULT_API_KEY, Emulator


def send_sample_data(url: str) -> None:
    with Client(DEFAULT_API_KEY, base_url=url) as client:
        details = client.get_api_key_details()
        print(f"API key permissions: {', '.join(details.permissions)} ({details.calls_remaining} calls left)")
        client.upsert_user(
            user_id="42",
            email="ada@acme.com",
            properties={"full_name": "Ada Lovelace", "registered_at": datetime(2024, 1, 15, tzinfo=timezone.utc)},
        )
        client.upsert_account(account_id="7", domain="acme.com", properties={"name": "ACME, Inc", "mrr": 399})
        client.add_users_to_account(account_id="7", users=["42"])
        client.link(device_id="demo-device-1", user_id="42")
        client.track("signed_in", user_id="42", account_id="7")

    # The same through the queue: track() returns at once, delivery happens in the background.
    journy = Journy(DEFAULT_API_KEY, base_url=url)
    journy.track("created_invoice", user_id="42", account_id="7", metadata={"amount": 100, "currency": "EUR"})
    journy.flush(timeout=10)
    print(f"queued Journy: {journy.stats()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8484)
    parser.add_argument("--exit", action="store_true", help="stop after printing, even in a terminal")
    args = parser.parse_args()
    os.environ.pop("JOURNY_API_URL", None)  # this demo talks to the emulator it starts
    emulator = Emulator.start_on(args.port)
    if args.port and emulator.port != args.port:
        print(f"port {args.port} is taken; the emulator uses {emulator.port}")
    try:
        print(f"journy.io emulator running at {emulator.url} (API key {DEFAULT_API_KEY})")
        send_sample_data(emulator.url)
        print("\n" + emulator.report())
        if args.exit or os.environ.get("CI") or not sys.stdout.isatty():
            return 0
        print(f"\nOpen {emulator.url}/ to see the data; Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
