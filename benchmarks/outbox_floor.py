"""The floor under ``outbox_commit.py``'s PostgreSQL ratio: what one more INSERT costs a transaction at the driver
level, with no ORM and no journy code at all.

    .venv/bin/python benchmarks/outbox_floor.py [--rounds 30] [--block 100]

Plain psycopg on one connection to 127.0.0.1:5432 (database ``test``; the two tables are made and dropped here),
each transaction updating one of 100 rows, as ``outbox_commit.py``'s app does:

- ``update, commit``: what a model save and commit sends (psycopg sends ``BEGIN`` before the first statement);
- ``+ insert``: the same with one INSERT of an outbox-like row (entity key, JSON, created time) before the commit,
  which is what the ``outbox`` backend adds;
- ``+ insert, pipelined with the commit``: that INSERT and the ``COMMIT`` sent together in psycopg's pipeline mode,
  one round trip for both, the best any outbox writer could do on this connection.

The configurations take turns in blocks of ``--block`` transactions (the order reversed every round); the ratio is
the median of each round's ratio to the first. If even the pipelined INSERT costs more than 1.2x of the bare
transaction here, no outbox written in the transaction can meet ``outbox_commit.py``'s goal on this machine, what
ever the code around it does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import psycopg

DSN = "postgresql://postgres@127.0.0.1:5432/test"
OPERATION = json.dumps({"kind": "upsert_user", "user_id": "1", "properties": {"full_name": "User 1"}})


def configurations(connection: psycopg.Connection) -> dict[str, Callable[[int], None]]:
    """name -> one transaction numbered ``n``."""

    def update(n: int) -> None:
        connection.execute("UPDATE floor_user SET full_name = %s WHERE id = %s", (f"User {n}", n % 100 + 1))

    def insert() -> None:
        connection.execute("INSERT INTO floor_outbox (entity, operation) VALUES (%s, %s)", ("user:1", OPERATION))

    def bare(n: int) -> None:
        update(n)
        connection.commit()

    def with_insert(n: int) -> None:
        update(n)
        insert()
        connection.commit()

    def pipelined(n: int) -> None:
        update(n)
        with connection.pipeline():  # sent together on leaving the block: one round trip
            insert()
            connection.execute("COMMIT")
        connection.commit()  # nothing left to commit: psycopg sends nothing

    return {"update, commit": bare, "+ insert": with_insert, "+ insert, pipelined with the commit": pipelined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=100, help="transactions per configuration and round")
    args = parser.parse_args()
    with psycopg.connect(DSN) as connection:
        connection.execute("DROP TABLE IF EXISTS floor_user, floor_outbox")
        connection.execute("CREATE TABLE floor_user (id int PRIMARY KEY, full_name text)")
        connection.execute(
            "CREATE TABLE floor_outbox (id bigserial PRIMARY KEY, entity text, operation jsonb,"
            " created_at timestamptz DEFAULT now())"
        )
        connection.execute("INSERT INTO floor_user SELECT g, 'User' FROM generate_series(1, 100) AS g")
        connection.commit()
        try:
            times = measure(configurations(connection), args.rounds, args.block)
        finally:
            connection.rollback()
            connection.execute("DROP TABLE IF EXISTS floor_user, floor_outbox")
            connection.commit()
    base = times["update, commit"]
    print(f"PostgreSQL {DSN.rsplit('@', 1)[1]}, plain psycopg, {args.rounds} rounds x {args.block} transactions:")
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"  {name:38s} median {statistics.median(values) * 1e6:6.0f} us   x{ratio:.3f}")


def measure(runs: dict[str, Callable[[int], None]], rounds: int, block: int) -> dict[str, list[float]]:
    """Each configuration's seconds per transaction, one entry per round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    n = 0
    order = list(runs.items())
    for _ in range(rounds):
        order.reverse()
        for name, run in order:
            started = time.perf_counter()
            for _ in range(block):
                run(n)
                n += 1
            times[name].append((time.perf_counter() - started) / block)
    return times


if __name__ == "__main__":
    main()
