"""Timing a native module against its Python twin in one run: the same case built for each, rounds
alternating between the two so that a noisy neighbour or a frequency change hits both alike, each
keeping its best round."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

Case = Callable[[ModuleType], tuple[Callable[[], None], int]]  # module -> (run once, items per run)


def calls_for(run: Callable[[], None], seconds: float) -> int:
    """How many run() calls take about `seconds`."""
    run()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            return max(1, int(calls * seconds / elapsed))
        calls *= 2


def timed(run: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return time.perf_counter() - start


def measure(case: Case, twin: ModuleType, native: ModuleType, budget: float, rounds: int) -> tuple[float, float]:
    """Items per second of the twin and of the native module."""
    twin_run, per_call = case(twin)
    native_run, native_per_call = case(native)
    assert per_call == native_per_call
    round_seconds = budget / rounds
    twin_calls = calls_for(twin_run, round_seconds)
    native_calls = calls_for(native_run, round_seconds)
    twin_best = native_best = float("inf")
    for _ in range(rounds):
        twin_best = min(twin_best, timed(twin_run, twin_calls))
        native_best = min(native_best, timed(native_run, native_calls))
    return twin_calls * per_call / twin_best, native_calls * per_call / native_best
