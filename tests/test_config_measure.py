"""Target profiles, the budget, latency statistics and the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeprune.config import Budget, list_targets, resolve_target
from edgeprune.errors import InputError
from edgeprune.measure import LoopSettings, summarize, time_loop
from edgeprune.stages.verdict import judge, slower_than_dense


def test_shipped_profiles_load() -> None:
    names = {t.name for t in list_targets()}
    assert {"openvino-cpu", "onnxruntime-cpu"} <= names
    ov = resolve_target("openvino-cpu")
    assert ov.backend == "openvino" and "int8" in ov.precisions


def test_profile_from_path_and_bad_profiles(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\nbackend = "onnxruntime"\nthreads = 2\n')
    assert resolve_target(str(good)).threads == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "onnxruntime"\nprecision = "int4"\n')
    with pytest.raises(InputError, match="int4"):
        resolve_target(str(bad))
    with pytest.raises(InputError, match="unknown key colour"):
        (tmp_path / "x.toml").write_text('name = "x"\nbackend = "a"\ncolour = 1\n')
        resolve_target(str(tmp_path / "x.toml"))


@pytest.mark.parametrize("budget", [Budget(max_drop=-0.1), Budget(max_drop=float("nan")),
                                    Budget(latency_ms=-1), Budget(percentile="p95")])
def test_invalid_budgets(budget: Budget) -> None:
    with pytest.raises(InputError, match="budget"):
        budget.validate()


def test_summary_percentiles_need_enough_samples() -> None:
    samples = np.arange(1, 51, dtype=float)
    stats = summarize(samples, batch=2)
    assert stats["p50"] == pytest.approx(25.5) and stats["p90"] is not None
    assert stats["p99"] is None  # 50 samples cannot support a 99th percentile
    assert stats["throughput_fps"] == pytest.approx(2 * 1000 / 25.5)
    full = summarize(np.arange(1, 1001, dtype=float), batch=1)
    assert full["p99"] == pytest.approx(np.percentile(np.arange(1, 1001), 99))


def test_time_loop_honours_iterations_and_time_cap() -> None:
    samples = time_loop(lambda: None, LoopSettings(warmup_iterations=5, min_iterations=300,
                                                   min_seconds=0.0, max_seconds=5))
    assert len(samples) == 300
    import time

    capped = time_loop(lambda: time.sleep(0.01), LoopSettings(0, 10_000, 0.0, 0.2))
    assert 5 <= len(capped) < 100


def test_verdict() -> None:
    ok = judge(90.0, 89.5, {"p50": 1.0, "p99": 2.0}, 1.0, 2.5, "p99")
    assert ok["passed"] and ok["reasons"] == []
    slow = judge(90.0, 89.5, {"p50": 1.0, "p99": 3.0}, 1.0, 2.5, "p99")
    assert not slow["passed"] and "p99" in slow["reasons"][0]
    drop = judge(90.0, 88.0, {"p50": 1.0, "p99": 2.0}, 1.0, None, "p50")
    assert not drop["passed"] and not drop["latency_checked"]


def test_a_pruned_model_slower_than_the_dense_one_gets_a_warning() -> None:
    def side(p50: float, precision: str = "fp32", ran: str = "f32") -> dict:
        return {"latency_ms": {"p50": p50}, "precision": precision,
                "runtime": {"effective_precision": ran}}

    (warning,) = slower_than_dense(side(1.0), side(1.2), "p50")
    assert "slower than the dense one" in warning and "1.200 ms vs 1.000 ms" in warning
    assert slower_than_dense(side(1.0), side(0.8), "p50") == []  # faster: nothing to say
    # no dense twin measured: another precision, or the runtime ran them differently
    assert slower_than_dense(side(1.0), side(1.2, "int8", "i8"), "p50") == []
    assert slower_than_dense(side(1.0), side(1.2, ran="bf16"), "p50") == []
