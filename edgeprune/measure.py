"""Latency statistics people trust: warm-up, enough iterations, full percentile table.

A percentile is printed only when enough samples back it (p99 needs >= 100), otherwise
it is null and the report says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SAMPLES = {"p50": 2, "p90": 10, "p99": 100}


@dataclass
class LoopSettings:
    warmup_iterations: int = 50
    min_iterations: int = 1000
    min_seconds: float = 2.0
    max_seconds: float = 30.0


def time_loop(step: Callable[[], Any], settings: LoopSettings,
              on_tick: Callable[[int], None] | None = None) -> np.ndarray:
    """Run ``step`` after warm-up until both min_iterations and min_seconds are reached
    (or max_seconds runs out); returns per-iteration wall times in ms."""
    for _ in range(settings.warmup_iterations):
        step()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
        if on_tick and len(samples) % 50 == 0:
            on_tick(len(samples))
        enough = len(samples) >= settings.min_iterations and elapsed >= settings.min_seconds
        if enough or elapsed >= settings.max_seconds:
            break
    return np.asarray(samples)


def summarize(samples_ms: np.ndarray, batch: int) -> dict[str, Any]:
    """The percentile table, mean/std/min/max and throughput of one latency run."""
    n = len(samples_ms)
    stats: dict[str, Any] = {"iterations": n, "batch": batch}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        stats[name] = float(np.percentile(samples_ms, q)) if n >= MIN_SAMPLES[name] else None
    stats.update(
        mean=float(np.mean(samples_ms)),
        std=float(np.std(samples_ms)),
        min=float(np.min(samples_ms)),
        max=float(np.max(samples_ms)),
        total_seconds=float(np.sum(samples_ms) / 1000.0),
        throughput_fps=float(batch * 1000.0 / np.mean(samples_ms)),
    )
    return stats


def histogram(samples_ms: np.ndarray, bins: int = 40) -> dict[str, list[float]]:
    """A compact latency distribution for reports (edges in ms, counts)."""
    hi = float(np.percentile(samples_ms, 99.5))
    counts, edges = np.histogram(np.clip(samples_ms, None, hi), bins=bins)
    return {"edges_ms": [float(e) for e in edges], "counts": [int(c) for c in counts]}
