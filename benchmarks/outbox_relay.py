"""How close the outbox relay comes to the key's rate limit, one relay and two, draining a backlog of rows.

    .venv/bin/python benchmarks/outbox_relay.py [--seconds 50] [--relays 1 2] [--database postgresql|sqlite]
                                                [--rows N]

The emulator runs in its own process with 100 ms of added latency and journy.io's default rate limit (1800 calls a
minute, sliding window). Before each run the table ``journy_outbox`` (in a schema of its own in PostgreSQL's
``test`` database on 127.0.0.1:5432, dropped at the end; or a SQLite file with ``--database sqlite``) is filled
with a backlog of ``track`` rows spread over 200 users, more than the run can deliver (events never merge: one
row, one call). Then ``--relays`` processes each run ``journy_core.outbox.relay.Relay`` on
``journy_core.outbox.sqlalchemy.SQLAlchemyStore`` with its defaults (batches of 100, 4 calls in flight, the
pacer) for ``--seconds`` seconds, and are killed (what was in flight does not count). Two relays share the key and
the table: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one claim at a time on SQLite.

Reported: calls accepted in the last ``min(60, seconds - 10)`` seconds of the run (the first seconds are process
start and the first claim) as a share of what the limit allows in that time (goal: at least 95%), and the share of
all calls answered 429 (goal: under 1%); also rows delivered twice (none expected: no call's outcome was unknown).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests
from sqlalchemy import Engine, delete

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _databases import scratch_database
from _emulator import emulator_process

from journy_core.operations import track
from journy_core.outbox.sqlalchemy import OUTBOX_METADATA, OUTBOX_TABLE, SQLAlchemyStore

LIMIT, WINDOW = 1800, 60.0
USERS = 200

RELAY = textwrap.dedent(
    """
    import os, sys, threading, time
    from sqlalchemy import create_engine
    from journy_core import Client
    from journy_core.emulator import DEFAULT_API_KEY
    from journy_core.outbox.relay import Relay
    from journy_core.outbox.sqlalchemy import SQLAlchemyStore
    url, database, schema, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    options = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
    relay = Relay(SQLAlchemyStore(create_engine(database, **options)), lambda: Client(DEFAULT_API_KEY, base_url=url))
    threading.Thread(target=relay.run, args=(threading.Event(),), daemon=True).start()
    time.sleep(seconds)
    print(relay.delivered_rows, flush=True)
    os._exit(0)  # killed: only what was delivered within the run counts
    """
)


def database(kind: str) -> contextlib.AbstractContextManager[tuple[Engine, str, str]]:
    """The engine of the backlog's table, its URL and the PostgreSQL schema ("" for SQLite)."""
    return scratch_database(kind, "bench_relay")


def fill(engine: Engine, rows: int) -> None:
    """Replace the table's rows with ``rows`` pending ``track`` rows over ``USERS`` users."""
    OUTBOX_METADATA.create_all(engine)
    with engine.begin() as connection:
        connection.execute(delete(OUTBOX_TABLE))
    store = SQLAlchemyStore(engine)
    for start in range(0, rows, 1000):
        store.add(
            [
                track("benchmarked", user_id=f"u{n % USERS}", metadata={"n": n})
                for n in range(start, min(rows, start + 1000))
            ]
        )


def run(url: str, engine: Engine, database_url: str, schema: str, relays: int, args: argparse.Namespace) -> None:
    rows = args.rows or int(LIMIT / WINDOW * args.seconds * 1.5) + 500
    fill(engine, rows)
    requests.post(url + "/_emulator/reset", timeout=5)
    started = time.time()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RELAY, url, database_url, schema, str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(relays)
    ]
    delivered = [int((process.communicate(timeout=args.seconds + 60)[0] or "0").split()[-1]) for process in processes]
    ended = min(time.time(), started + args.seconds)
    calls = [c for c in requests.get(url + "/_emulator/calls", timeout=30).json() if c["path"] == "/track"]
    window = min(WINDOW, args.seconds - 10)
    accepted = [c for c in calls if c["status"] == 201]
    in_window = sum(1 for c in accepted if ended - window <= c["time"] < ended)
    share = in_window / (LIMIT / WINDOW * window)
    rejected = sum(1 for c in calls if c["status"] == 429)
    counts = collections.Counter(c["body"]["metadata"]["n"] for c in accepted)
    twice = sum(1 for count in counts.values() if count > 1)
    verdict = "met" if share >= 0.95 and rejected / max(1, len(calls)) < 0.01 else "NOT met"
    print(
        f"  {relays} relay(s), {args.seconds:.0f} s, {rows} rows: {share:.1%} of the limit in the last {window:.0f} s, "
        f"{rejected} of {len(calls)} calls answered 429 ({rejected / max(1, len(calls)):.2%}); "
        f"rows delivered per relay {delivered}, {twice} delivered twice  (goal: >= 95%, < 1%) -> {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=50.0, help="seconds each run lasts (at least 20)")
    parser.add_argument("--relays", type=int, nargs="+", default=[1, 2], help="relay processes of each run")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rows", type=int, default=0, help="backlog rows (default: 1.5 times what a run can send)")
    args = parser.parse_args()
    if args.seconds < 20:
        parser.error("--seconds must be at least 20")
    print(
        f"outbox relay delivery rate on {args.database}: emulator with 100 ms latency, {LIMIT} calls a minute per key "
        "(sliding window)"
    )
    with emulator_process("--latency", "0.1") as url, database(args.database) as (engine, database_url, schema):
        for relays in args.relays:
            run(url, engine, database_url, schema, relays, args)


if __name__ == "__main__":
    main()
