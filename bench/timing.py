"""Interleaved timing: every repetition runs each model in a rotating order, so the load that
other processes put on a shared CPU falls on all models alike. Medians throughout.

Within a repetition a model runs one untimed step and then `burst` timed ones back to back, as
in training: a model that runs right after another one first pays for the other's memory
layout (page faults as the allocator maps its freed buffers again, cold caches), a cost that a
training loop, which runs one model step after step, never pays."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(steps: dict[str, Callable[[], None]], reps: int, warmup: int = 1,
                burst: int = 2) -> dict[str, list[float]]:
    """Per model, one sample per repetition: the mean time of `burst` steps in a row."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            steps[name]()
            start = time.perf_counter()
            for _ in range(burst):
                steps[name]()
            times[name].append((time.perf_counter() - start) / burst)
    return times


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repetitions of a/b, each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(a, b))


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
