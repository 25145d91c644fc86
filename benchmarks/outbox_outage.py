"""The outbox through a journy.io outage: the API failing for ``--minutes`` while the app keeps committing; rows
wait in the table, the app's memory stays flat, the relay probes now and then, and after recovery every committed
operation is delivered within the rate limit.

    .venv/bin/python benchmarks/outbox_outage.py [--minutes 10] [--database postgresql|sqlite] [--rate 20]
                                                 [--users 20] [--latency 0.1] [--faults 5xx timeout]

Each ``--faults`` kind is a run of its own, all at once, side by side: an emulator in its own process (journy.io's
default rate limit, 1800 calls a minute per key, sliding window; ``--latency`` seconds added to every answer) that
answers every call with that fault from the start (``5xx``: 500/502/503, not applied; ``timeout``: applied, but
the answer comes after 30 s, past the client's 10 s read timeout), and an app process
(``benchmarks/_outbox_outage_app.py``: Flask + Flask-SQLAlchemy, ``JOURNY_QUEUE = {"BACKEND": "outbox"}`` with its
defaults, the in-process relay on) committing ``--rate`` transactions a second for ``--minutes``, each a user
renamed (one of ``--users``) and an event tracked for them: two rows. The tables are in a schema of their own in
PostgreSQL's ``test`` database on 127.0.0.1:5432 (dropped at the end), or a SQLite file with ``--database sqlite``.
When the app has finished committing the emulator recovers, and the benchmark waits until the table is empty.

Printed per run: the app process's RSS (VmRSS) sampled every 30 s during the outage (first, max, last, growth);
rows written and rows pending when the outage ended; the calls the relay made during the outage (from the
emulator's call log); when the first call succeeded after recovery (the relay waits out its outage pause, up to a
minute, ``journy_core.outbox.sending.OUTAGE_PAUSE_CAP``); the time to drain; the drain rate (calls accepted per
second between the first and the last delivery) against the limit; calls answered 429; events received more
than once (a timed-out call was applied); and whether every committed operation is at the emulator: each event
(by name and number) and each user's last name.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _databases import scratch_database
from _emulator import emulator_process
from _outbox_outage_app import EVENTS, expected_name

from journy_core.outbox.sqlalchemy import OUTBOX_TABLE

APP = Path(__file__).resolve().parent / "_outbox_outage_app.py"
LIMIT, WINDOW = 1800, 60.0


def database(kind: str, label: str) -> contextlib.AbstractContextManager[tuple[Engine, str, str]]:
    """An engine on the run's database, its URL and the PostgreSQL schema ("" for SQLite); dropped at the end."""
    return scratch_database(kind, f"bench_outage_{label}")


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def count_rows(engine: Engine, status: str | None = None) -> int:
    query = select(func.count()).select_from(OUTBOX_TABLE)
    if status is not None:
        query = query.where(OUTBOX_TABLE.c.status == status)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def lines_of(process: subprocess.Popen[str]) -> queue.SimpleQueue[str]:
    """The process's stdout lines as they come, read by a thread (so the benchmark can sample meanwhile)."""
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())
        lines.put("")  # the app ended

    threading.Thread(target=read, daemon=True).start()
    return lines


def outage(process: subprocess.Popen[str], lines: queue.SimpleQueue[str], seconds: float) -> tuple[int, list[float]]:
    """Sample the app's RSS every 30 s (more often in a short run) until it has committed; the transactions and
    the samples (the last taken as the outage ends)."""
    every = min(30.0, seconds / 6)
    samples: list[float] = []
    while True:
        try:
            line = lines.get(timeout=every)
        except queue.Empty:
            samples.append(rss_mb(process.pid))
            continue
        if line.startswith("committed"):
            samples.append(rss_mb(process.pid))
            return int(line.split()[1]), samples
        raise RuntimeError(f"the app ended during the outage ({line!r}); see its stderr above")


def drain(engine: Engine, deadline: float) -> float:
    """Wait until the table is empty; the time (``time.time()``) it was seen empty."""
    while count_rows(engine):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not drained in time: {count_rows(engine, 'pending')} rows still pending")
        time.sleep(0.5)
    return time.time()


def run(fault: str, args: argparse.Namespace) -> dict[str, Any]:
    """One outage with ``fault``, recovered; its figures."""
    seconds = args.minutes * 60
    emulator = emulator_process("--latency", str(args.latency), "--fault-rate", "1", "--faults", fault)
    with emulator as url, database(args.database, fault) as (engine, database_url, schema):
        command = [sys.executable, str(APP), url, database_url, schema, str(seconds), str(args.rate), str(args.users)]
        app = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            lines = lines_of(app)
            if lines.get(timeout=120) != "ready":
                raise RuntimeError("the app did not start")
            committed, samples = outage(app, lines, seconds)
            pending = count_rows(engine, "pending")
            recovered = time.time()
            requests.post(url + "/_emulator/config", json={"fault_rate": 0.0}, timeout=5).raise_for_status()
            rows = 2 * committed + args.users
            drained = drain(engine, time.monotonic() + 420 + rows / (LIMIT / WINDOW) * 2)
            samples.append(rss_mb(app.pid))
            calls = requests.get(url + "/_emulator/calls", timeout=60).json()
            state = requests.get(url + "/_emulator/state", timeout=60).json()
        finally:
            app.terminate()
            app.wait(30)
    return figures(calls, state, committed, samples, pending, (recovered, drained), args)


def delivered(state: dict[str, Any], committed: int, users: int) -> tuple[bool, int]:
    """Whether every committed event (by name and number) and each user's last name are at the emulator; and how
    many events it received more than once."""
    received = collections.Counter((event["name"], event["metadata"]["n"]) for event in state["events"])
    events_ok = all((EVENTS[n % len(EVENTS)], n) in received for n in range(committed))
    names = {user["userId"]: user["properties"].get("full_name") for user in state["users"]}
    users_ok = all(names.get(str(u)) == expected_name(committed, users, u) for u in range(1, users + 1))
    return events_ok and users_ok, sum(count - 1 for count in received.values())


def figures(
    calls: list[dict[str, Any]],
    state: dict[str, Any],
    committed: int,
    samples: list[float],
    pending: int,
    times: tuple[float, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    recovered, drained = times
    in_outage = [c for c in calls if c["time"] < recovered]
    accepted = [c["time"] for c in calls if c["time"] >= recovered and c["status"] in (200, 201)]
    first, last = (min(accepted), max(accepted)) if accepted else (recovered, recovered)
    during = samples[:-1]  # the last sample is after the drain
    complete, twice = delivered(state, committed, args.users)
    rows = 2 * committed + args.users
    return {
        "app RSS in the outage, MB": f"{during[0]:.1f} / {max(during):.1f} / {during[-1]:.1f} (first/max/last)",
        "RSS growth in the outage": f"{during[-1] - during[0]:+.1f} MB over {len(during)} samples",
        "RSS after the drain": f"{samples[-1]:.1f} MB",
        "rows written": f"{rows} ({committed} transactions)",
        "rows pending at the outage's end": str(pending),
        "calls during the outage": f"{len(in_outage)} (1 per {rows / max(1, len(in_outage)):.0f} rows)",
        "first delivery after recovery": f"+{first - recovered:.0f} s",
        "time to drain after recovery": f"{drained - recovered:.0f} s",
        "drain rate": f"{len(accepted) / max(1e-9, last - first):.1f} calls/s "
        f"({len(accepted) / max(1e-9, last - first) / (LIMIT / WINDOW):.0%} of the limit)",
        "calls answered 429": str(sum(1 for c in calls if c["status"] == 429)),
        "events received twice": str(twice),
        "every committed operation delivered": "yes" if complete else "NO",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the API fails while the app commits")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rate", type=float, default=20.0, help="transactions a second (two rows each)")
    parser.add_argument("--users", type=int, default=20, help="users the transactions rename in turn")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the emulator adds to every answer")
    parser.add_argument("--faults", nargs="+", choices=["5xx", "timeout"], default=["5xx", "timeout"])
    args = parser.parse_args()
    print(
        f"outbox through a {args.minutes:g}-minute outage on {args.database}: {args.rate:g} transactions/s "
        f"(a user renamed, one of {args.users}, and an event), emulator latency {args.latency:g} s, "
        f"{LIMIT} calls/{WINDOW:.0f} s"
    )
    with ThreadPoolExecutor(len(args.faults)) as pool:
        results = list(pool.map(lambda fault: run(fault, args), args.faults))
    print((f"  {'':36}" + "".join(f"{'fault: ' + fault:<46}" for fault in args.faults)).rstrip())
    for name in results[0]:
        print((f"  {name:<36}" + "".join(f"{result[name]:<46}" for result in results)).rstrip())


if __name__ == "__main__":
    main()
