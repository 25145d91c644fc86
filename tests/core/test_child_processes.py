"""Processes that end without ``atexit``: multiprocessing children deliver what they queued before they leave.

Each test runs a script in a fresh interpreter (so that forking never copies pytest's own threads) that starts
real multiprocessing children; the children track with the default ``thread`` backend over real HTTP to the
emulator, and the test counts what the emulator received.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from journy_core.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]

#: The script's children: each tracks its events and returns normally (no flush, no close).
CHILDREN = """
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from journy_core import Journy

journy = Journy(os.environ["JOURNY_API_KEY"], base_url=os.environ["EMULATOR_URL"],
                queue={"OPTIONS": {"RATE_LIMIT": 100_000}})


def track(name, start, count):
    for number in range(start, start + count):
        journy.track(name, user_id=str(number))


def main(how, name):
    if how in ("fork", "spawn", "forkserver"):
        child = multiprocessing.get_context(how).Process(target=track, args=(name, 0, 200))
        child.start()
        child.join()
        sys.exit(child.exitcode)
    if how == "pool":  # 40 tasks of 10 events; each worker is recycled after 5 tasks, then close() and join()
        pool = multiprocessing.get_context("fork").Pool(4, maxtasksperchild=5)
        pool.starmap(track, [(name, start, 10) for start in range(0, 400, 10)])
        pool.close()
        pool.join()
    if how == "executor":  # 20 tasks of 10 events, then shutdown(wait=True) when the block ends
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            list(executor.map(track, [name] * 20, range(0, 200, 10), [10] * 20))


if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def run_children(tmp_path: Path, emulator: Emulator, api_key: str, how: str, name: str) -> None:
    script = tmp_path / "children.py"
    script.write_text(textwrap.dedent(CHILDREN))
    env = {**os.environ, "JOURNY_API_KEY": api_key, "EMULATOR_URL": emulator.url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script), how, name], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr


def events_named(emulator: Emulator, name: str) -> list[str]:
    return [e["user"]["userId"] for e in emulator.state()["events"] if e["name"] == name]


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_process_that_tracks_and_returns_delivers_everything_it_queued(
    tmp_path: Path, emulator: Emulator, api_key: str, start_method: str
) -> None:
    emulator.configure(rate_limit=100_000)
    run_children(tmp_path, emulator, api_key, start_method, "in_child")
    assert sorted(events_named(emulator, "in_child"), key=int) == [str(n) for n in range(200)]


def test_a_pool_closed_and_joined_delivers_what_every_worker_queued_even_recycled_ones(
    tmp_path: Path, emulator: Emulator, api_key: str
) -> None:
    emulator.configure(rate_limit=100_000)
    run_children(tmp_path, emulator, api_key, "pool", "in_pool")
    assert sorted(events_named(emulator, "in_pool"), key=int) == [str(n) for n in range(400)]


def test_a_process_pool_executor_shut_down_delivers_what_its_workers_queued(
    tmp_path: Path, emulator: Emulator, api_key: str
) -> None:
    emulator.configure(rate_limit=100_000)
    run_children(tmp_path, emulator, api_key, "executor", "in_executor")
    assert sorted(events_named(emulator, "in_executor"), key=int) == [str(n) for n in range(200)]


def test_the_hooks_import_no_engine_the_app_does_not_use(emulator: Emulator, api_key: str) -> None:
    code = f"""
        import sys
        from journy_core import Journy
        j = Journy({api_key!r}, base_url={emulator.url!r})
        j.track("imports", user_id="1")
        assert j.flush(timeout=10)
        print(sorted(m for m in ("billiard", "celery", "multiprocessing", "rq") if m in sys.modules))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- the exit message -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "latency",
    [
        pytest.param(0.4, id="answers-slowly"),
        pytest.param(5.0, id="never-answers"),
    ],
)
def test_the_exit_message_never_counts_as_lost_an_operation_that_reached_the_api(
    emulator: Emulator, api_key: str, latency: float
) -> None:
    # The exit flush has 0.5 s and every answer takes longer than that to come (the emulator applies a call at
    # once, then holds its answer): the flush runs out of time with four calls in flight that the emulator has
    # already received. Each of the N operations is either at the emulator or said not delivered, never both.
    total = 60
    emulator.configure(latency=latency, rate_limit=100_000)
    code = f"""
        from journy_core import Journy
        options = {{"EXIT_TIMEOUT": 0.5, "CONCURRENCY": 4, "RATE_LIMIT": 100_000}}
        j = Journy({api_key!r}, base_url={emulator.url!r}, queue={{"OPTIONS": options}})
        for i in range({total}):
            j.track("exiting", user_id=str(i))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"(\d+) operation\(s\) not delivered", result.stderr)
    assert found, result.stderr
    not_delivered = int(found.group(1))
    received = len(events_named(emulator, "exiting"))
    assert 0 < not_delivered < total, result.stderr
    assert received + not_delivered == total, result.stderr
