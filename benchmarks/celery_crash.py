"""What happens to journy's Celery messages when a worker is killed (``kill -9``) in the middle of a stream.

    .venv/bin/python benchmarks/celery_crash.py [--broker redis://127.0.0.1:6379/3] [--acks-late true]
        [--visibility-timeout 20 --restore-interval 2] [--count 600] [--together 1] [--watch 40]
    .venv/bin/python benchmarks/celery_crash.py --broker amqp://guest:guest@127.0.0.1:5672// --acks-late true

A web process queues ``--count`` events (one message each, or ``--together`` per message) through the ``celery``
backend with ``ACKS_LATE`` as given; a real ``celery worker`` (prefork, 4 processes, Celery's default prefetch)
delivers them to the emulator, which answers after 50 ms (no rate limit), so the stream lasts several seconds. Once
a third has arrived (and half a message more), the worker's whole process group gets SIGKILL (an OOM kill, a lost
machine). The worker is started again at once, and the script reports every 5 s, until everything arrived or
``--watch`` seconds passed, what has arrived, what arrived twice, and (with Redis) what waits in the transport's
``unacked`` hash. Then: how many events never arrived and how many arrived twice. The figures in
docs/backends-celery-rq.md come from it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emulator import emulator_process

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace, url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        JOURNY_BENCH_BROKER=args.broker,
        JOURNY_API_KEY="journy-emulator-key",
        JOURNY_API_URL=url,
        PYTHONPATH=os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)]),
    )
    if args.visibility_timeout is not None:
        env["JOURNY_BENCH_VISIBILITY_TIMEOUT"] = str(args.visibility_timeout)
    if args.restore_interval is not None:
        env["JOURNY_BENCH_RESTORE_INTERVAL"] = str(args.restore_interval)
    command = [
        *(sys.executable, "-m", "celery", "-A", "_celery_crash_app", "worker", "--pool=prefork", "--concurrency=4"),
        *("--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel=INFO", "-Q", queue),
        *("-n", f"{queue}-{uuid.uuid4().hex[:6]}@%h"),
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while " ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return process


def _arrived(url: str) -> Counter[str]:
    calls = requests.get(url + "/_emulator/calls", params={"path": "/track"}, timeout=30).json()
    calls = calls["calls"] if isinstance(calls, dict) else calls
    return Counter(call["body"]["name"] for call in calls if call.get("applied"))


def _unacked(broker: str) -> int | None:
    if not broker.startswith("redis"):
        return None
    import redis

    client = redis.Redis.from_url(broker)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def _line(started: float, url: str, broker: str, count: int) -> str:
    arrived = _arrived(url)
    twice = sum(n - 1 for n in arrived.values() if n > 1)
    unacked = _unacked(broker)
    waiting = "" if unacked is None else f", {unacked:3d} in Redis's unacked hash"
    return f"  t={time.monotonic() - started:5.1f} s: {len(arrived):4d}/{count} arrived, {twice} twice{waiting}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import celery

    from journy_core import Journy
    from journy_core import operations as ops

    queue = f"journy-crash-{uuid.uuid4().hex[:8]}"
    log = Path(f"/tmp/{queue}.log")
    acks_late: bool | str = {"true": True, "false": False}.get(args.acks_late, args.acks_late)
    with emulator_process("--latency", "0.05", "--rate-limit", "1000000") as url:
        worker = _worker(args, url, queue, log)
        producer = celery.Celery("journy_crash_producer", broker=args.broker)
        journy = Journy(
            queue={"BACKEND": "celery", "OPTIONS": {"APP": producer, "QUEUE": queue, "ACKS_LATE": acks_late}}
        )
        started = time.monotonic()
        events = [ops.track(f"crash_{index}", user_id=str(index)) for index in range(args.count)]
        for start in range(0, args.count, args.together):
            journy.enqueue_many(events[start : start + args.together])
        while len(_arrived(url)) < args.count // 3 + args.together // 2:  # in the middle of messages
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        print(f"kill -9 of the worker's process group after {time.monotonic() - started:.1f} s:")
        print(_line(started, url, args.broker, args.count))
        worker = _worker(args, url, queue, log)
        print(f"  worker started again at t={time.monotonic() - started:.1f} s")
        watch_until = time.monotonic() + args.watch
        while time.monotonic() < watch_until and len(_arrived(url)) < args.count:
            time.sleep(min(5.0, max(0.0, watch_until - time.monotonic())))
            print(_line(started, url, args.broker, args.count))
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        arrived = _arrived(url)
        if args.broker.startswith("amqp"):
            with producer.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)
    result = {
        "lost": args.count - len(arrived),
        "twice": sum(n - 1 for n in arrived.values() if n > 1),
        "events": args.count,
    }
    print(
        f"result: {result['lost']} never arrived, {result['twice']} arrived twice, of {args.count} (worker log: {log})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--acks-late", default="true", choices=["true", "false", "idempotent"])
    parser.add_argument("--visibility-timeout", type=float, default=None, help="Redis transport option (s)")
    parser.add_argument(
        "--restore-interval", type=float, default=None, help="Redis transport: seconds between unacked sweeps"
    )
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--together", type=int, default=1, help="events per message (made together)")
    parser.add_argument("--watch", type=float, default=40.0, help="seconds to watch after the restart")
    args = parser.parse_args()
    print(
        f"{args.count} events, {args.together} per message, ACKS_LATE={args.acks_late}, "
        f"broker {args.broker.split('@')[-1]}, "
        f"visibility_timeout={args.visibility_timeout or 'default (3600 s)'}, "
        f"unacked_restore_interval={args.restore_interval or 'default'}"
    )
    if not args.broker.startswith("redis"):
        run(args)
        return
    import redis

    client = redis.Redis.from_url(args.broker)
    if client.dbsize():  # Redis's unacked hash is one per database: another app's messages would mix in
        sys.exit(f"{args.broker} is not empty: give --broker a Redis database of its own")
    try:
        run(args)
    finally:
        client.flushdb()  # empty when we started: what is left is this run's
        client.close()


if __name__ == "__main__":
    main()
