"""The pacer, alone and in a simulated crowd of processes sharing one key against a sliding-window limit."""

from __future__ import annotations

import heapq
import itertools
from collections import deque

import pytest

from journy_core.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(processes: int, *, concurrency: int = 4, latency: float = 0.1, limit: int = 1800, window: float = 60.0,
             duration: float = 300.0, start_gaps: float = 0.0) -> tuple[float, float, int]:  # fmt: skip
    """Run ``processes`` pacers (each with ``concurrency`` senders and an endless backlog) against a server that
    accepts ``limit`` calls per sliding ``window``. Returns (accepted calls per second over the last two windows
    as a share of the limit, share of calls answered 429, number of calls)."""
    clock = Clock()
    pacers = [Pacer(limit=limit, window=window, clock=clock) for _ in range(processes)]
    accepted: deque[float] = deque()
    accepted_times: list[float] = []
    events: list[tuple[float, int, str, int, int]] = []
    sequence = itertools.count()
    rejected = calls = 0
    for p in range(processes):
        for _ in range(concurrency):
            heapq.heappush(events, (p * start_gaps, next(sequence), "reserve", p, 0))
    while events:
        clock.now, _, action, p, remaining = heapq.heappop(events)
        if clock.now > duration:
            break
        if action == "reserve":
            wait = pacers[p].reserve()
            heapq.heappush(events, (clock.now + wait + latency / 2, next(sequence), "arrive", p, 0))
        elif action == "arrive":
            calls += 1
            while accepted and accepted[0] <= clock.now - window:
                accepted.popleft()
            ok = len(accepted) < limit
            if ok:
                accepted.append(clock.now)
                accepted_times.append(clock.now)
            else:
                rejected += 1
            answer = (clock.now + latency / 2, next(sequence), "ok" if ok else "429", p, limit - len(accepted))
            heapq.heappush(events, answer)
        elif action == "ok":
            pacers[p].observe(limit, remaining)
            heapq.heappush(events, (clock.now, next(sequence), "reserve", p, 0))
        else:
            pacers[p].rate_limited(limit)
            heapq.heappush(events, (clock.now, next(sequence), "reserve", p, 0))
    steady = [t for t in accepted_times if t > duration - 2 * window]
    rate_share = len(steady) / (2 * window) / (limit / window)
    return rate_share, rejected / max(calls, 1), calls


def test_one_process_alone_sends_at_97_percent_of_the_limit() -> None:
    clock = Clock()
    pacer = Pacer(limit=1800, window=60.0, clock=clock)
    waits = []
    for _ in range(10):
        waits.append(pacer.reserve())
    assert waits[0] == 0
    assert waits[1] == pytest.approx(60 / (1800 * 0.97))


def test_a_process_sends_its_share_of_the_window_at_the_target_rate() -> None:
    clock = Clock()
    pacer = Pacer(limit=1800, window=60.0, clock=clock)
    pacer.reserve()
    pacer.observe(1800, 1800 - 4)  # 4 calls in the window, 1 of them ours: a quarter
    assert pacer.interval == pytest.approx(60 / (0.97 * 1800 * 0.25))


def test_a_process_with_no_share_of_a_full_window_still_sends_at_the_floor() -> None:
    pacer = Pacer(limit=1800, window=60.0, clock=Clock())
    pacer.observe(1800, 0)
    assert pacer.interval == pytest.approx(60 / (0.97 * 1800 * 0.02))


def test_calls_older_than_the_window_no_longer_count_as_this_processs() -> None:
    clock = Clock()
    pacer = Pacer(limit=1800, window=60.0, clock=clock)
    pacer.reserve()
    clock.now = 61.0
    pacer.observe(1800, 1800 - 10)  # ten calls in the window, none of them ours any more
    assert pacer.interval == pytest.approx(60 / (0.97 * 1800 * 0.02))


def test_a_429_pauses_sending_and_repeated_429s_pause_longer() -> None:
    clock = Clock()
    pacer = Pacer(limit=1800, window=60.0, clock=clock)
    first = pacer.rate_limited()
    second = pacer.rate_limited()
    assert second == 2 * first
    assert pacer.reserve() == pytest.approx(second)
    assert pacer.rate_limited() <= 60.0


def test_the_limit_from_the_headers_replaces_the_configured_one() -> None:
    pacer = Pacer(limit=1800, window=60.0, clock=Clock())
    pacer.observe(600, 600)
    assert pacer.limit == 600
    assert pacer.interval == pytest.approx(60 / (0.97 * 600))


@pytest.mark.parametrize("processes", [1, 2, 4, 8])
def test_processes_sharing_a_key_reach_95_percent_of_the_limit_with_under_1_percent_429s(processes: int) -> None:
    rate_share, rejected_share, calls = simulate(processes, start_gaps=3.0)
    assert rate_share >= 0.95, f"{processes} process(es) reached {rate_share:.1%} of the limit"
    assert rejected_share < 0.01, f"{rejected_share:.2%} of {calls} calls were answered 429"


def test_a_process_starting_on_a_key_that_others_already_saturate_does_not_cause_429s() -> None:
    rate_share, rejected_share, _ = simulate(4, start_gaps=45.0, duration=400.0)
    assert rate_share >= 0.95
    assert rejected_share < 0.01
