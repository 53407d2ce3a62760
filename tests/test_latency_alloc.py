"""Latency-aware allocation (prune/latency.py): the grid, the measured steps, the knapsack,
and the measured table on a real OpenVINO run."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.prune.importance import dscore
from edgeprune.prune.latency import (
    LatencyProbe,
    allocate,
    build_table,
    grid,
    paired_ratios,
    predict,
    ratio_for,
    steps,
)
from edgeprune.prune.structural import PruneGroup, PruneOptions, find_groups, prune_copy


def _group(name: str, channels: int, groups: int = 1) -> PruneGroup:
    return PruneGroup(name=name, root=nn.Identity(), channels=channels, producers=[],
                      members=[], residual=False, channel_groups=groups)


def test_paired_ratios_cancel_a_slow_process_and_drift_between_rounds() -> None:
    # dense copies a, b and a variant 20% faster; the machine drifts 1.0 -> 1.3 -> 0.9
    # between rounds, and the whole process runs 1.35x slow
    drift = np.array([1.0, 1.3, 0.9, 1.1, 1.0])[:, None]
    base = np.array([[1.00, 1.01, 0.80]])
    for scale in (1.0, 1.35):
        out = paired_ratios(scale * drift * base, reference=2)
        assert out[2]["ratio"] == pytest.approx(0.80 / 1.005)
        assert out[2]["ratio_noise"] == pytest.approx(0.0, abs=1e-9)  # no noise left
        assert out[2]["noise_ms"] > 0.3  # while the p50s alone spread widely
    # a variant whose ratio is noisy round to round has a noise that covers its spread
    noisy = base * drift
    noisy[1, 2] *= 1.1
    noisy[3, 2] *= 0.93
    out = paired_ratios(noisy, reference=2)
    assert 0 < out[2]["ratio_noise"] < 0.1
    assert out[2]["ratio"] == pytest.approx(0.80 / 1.005, rel=0.02)


def test_grid_is_aligned_and_respects_min_channels_and_channel_groups() -> None:
    opts = PruneOptions(min_channels=4)
    assert grid(_group("a", 64), opts) == [56, 48, 40, 32, 24, 16, 8]
    small = grid(_group("b", 16), opts)
    assert small == [14, 12, 10, 8, 6, 4] and min(small) >= 4
    grouped = grid(_group("c", 96, groups=3), opts)
    assert all(k % 3 == 0 and k % 8 == 0 for k in grouped)
    for k in grid(_group("d", 40), PruneOptions(min_channels=4, round_to=5)):
        assert k % 5 == 0
        assert _group("d", 40).keep(PruneOptions(min_channels=4, round_to=5),
                                    ratio_for(_group("d", 40), k)) == k


def test_steps_drop_sizes_that_are_not_faster_than_a_larger_one() -> None:
    entry = {"points": [
        {"kept": 15, "saved_ms": -0.05, "noise_ms": 0.01},  # misaligned: slower
        {"kept": 12, "saved_ms": 0.10, "noise_ms": 0.01},
        {"kept": 10, "saved_ms": 0.105, "noise_ms": 0.01},  # within noise of 12
        {"kept": 8, "saved_ms": 0.30, "noise_ms": 0.01},
    ]}
    assert [p["kept"] for p in steps(entry)] == [12, 8]


def _brute_force(table, analysis, groups, saving):
    """The cheapest combination by enumeration (the knapsack's reference)."""
    base = analysis["baseline_accuracy"]
    per_group = []
    for g in groups:
        choices = [(None, 0.0, 0.0)]
        for p in steps(table["groups"][g.name]):
            acc = next(a for r, a in analysis["curves"][g.name]
                       if g.keep(PruneOptions(), r) <= p["kept"])
            choices.append((p["kept"], p["saved_ms"], base - acc))
        per_group.append(choices)
    best = None
    for combo in itertools.product(*per_group):
        if sum(c[1] for c in combo) >= saving:
            cost = sum(c[2] for c in combo)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, combo)
    return best


def test_knapsack_finds_the_cheapest_allocation_that_saves_enough() -> None:
    rng = np.random.default_rng(0)
    groups = [_group(f"g{i}", 16) for i in range(4)]
    for trial in range(20):
        table = {"dense_ms": 10.0, "groups": {}}
        analysis = {"baseline_accuracy": 90.0, "curves": {}}
        for g in groups:
            kept = [14, 12, 10, 8, 6, 4]
            saved = np.cumsum(rng.uniform(0.05, 0.6, len(kept)))
            table["groups"][g.name] = {"points": [
                {"kept": k, "saved_ms": float(s), "noise_ms": 0.0}
                for k, s in zip(kept, saved, strict=True)]}
            drops = np.cumsum(rng.uniform(0, 3, 19))
            analysis["curves"][g.name] = [[round(0.05 * (i + 1), 2), 90.0 - float(d)]
                                          for i, d in enumerate(drops)]
        saving = float(rng.uniform(1.0, 4.0))
        kept = allocate(table, analysis, groups, PruneOptions(), saving, resolution=20000)
        achieved = predict(table, kept)
        assert 10.0 - achieved["latency_ms"] >= saving - 1e-3, trial
        cost = 0.0
        for g in groups:
            if g.name in kept:
                acc = next(a for r, a in analysis["curves"][g.name]
                           if g.keep(PruneOptions(), r) <= kept[g.name])
                cost += 90.0 - acc
        reference = _brute_force(table, analysis, groups, saving)
        assert reference is not None
        assert cost <= reference[0] + 0.02, (trial, cost, reference[0])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)))


def test_measured_table_on_openvino_and_its_cache(tmp_path) -> None:
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = _Net().eval()
    example = torch.randn(2, 3, 64, 64)
    probe = LatencyProbe("openvino", "fp32", rounds=2, iterations=20, seconds=0.05)
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    notes: list[str] = []
    table = build_table(model, example, dscore, PruneOptions(), probe, inputs, tmp_path,
                        notes.append)
    _, groups = find_groups(model, example, PruneOptions())
    assert set(table["groups"]) == {g.name for g in groups}
    for g in groups:
        entry = table["groups"][g.name]
        assert [p["kept"] for p in entry["points"]] == grid(g, PruneOptions())
        assert entry["dense_noise_ms"] >= 0  # two dense copies measured
        assert all(p["noise_ms"] >= entry["dense_noise_ms"] for p in entry["points"])
        for p in entry["points"]:
            assert len(p["rounds_ms"]) == 2 and p["p50_ms"] > 0 and p["noise_ms"] >= 0
    # the smallest variant of the wide group really is faster than the dense model
    wide = max(groups, key=lambda g: g.channels)
    assert table["groups"][wide.name]["points"][-1]["saved_ms"] > 0
    # savings are the paired ratios in ms of the table's one reference latency
    for entry in table["groups"].values():
        for p in entry["points"]:
            assert p["saved_ms"] == pytest.approx((1 - p["ratio"]) * table["dense_ms"])
    assert notes and "cached" not in table
    again = build_table(model, example, dscore, PruneOptions(), probe, inputs, tmp_path)
    assert again["cached"] and again["groups"] == table["groups"]
    # a pruned copy at grid sizes has exactly those channel counts
    k = table["groups"][wide.name]["points"][2]["kept"]
    pruned = prune_copy(model, example, {wide.name: ratio_for(wide, k)}, dscore,
                        PruneOptions())[0]
    assert pruned.b[0].out_channels == k


def test_overlap_correction_counts_a_conv_between_two_pruned_groups_once() -> None:
    """Pruning both groups of _Net: the conv b loses cin*cout multiplicatively, so the
    joint FLOPs saving is less than the two single-group savings added."""
    from edgeprune.model import count_flops

    model = _Net().eval()
    example = torch.randn(2, 3, 32, 32)
    shape = (1, 3, 32, 32)
    _, groups = find_groups(model, example, PruneOptions())
    dense = count_flops(model, shape)
    kept = {g.name: g.channels // 2 for g in groups}
    table = {"dense_ms": 1.0, "dense_flops": dense, "groups": {}}
    for g in groups:
        alone = prune_copy(model, example, {g.name: ratio_for(g, kept[g.name])}, dscore,
                           PruneOptions())[0]
        table["groups"][g.name] = {"points": [{
            "kept": kept[g.name], "saved_ms": 0.2,
            "saved_flops": dense - count_flops(alone, shape)}]}
    joint = prune_copy(model, example, {g.name: ratio_for(g, kept[g.name]) for g in groups},
                       dscore, PruneOptions())[0]
    raw = predict(table, kept)
    corrected = predict(table, kept, count_flops(joint, shape))
    assert raw["ratio"] == pytest.approx(0.6) and raw["overlap"] == 1.0
    assert 0.5 < corrected["overlap"] < 1.0
    assert corrected["ratio"] == pytest.approx(1 - 0.4 * corrected["overlap"])
    assert predict(table, kept, count_flops(joint, shape), 0.5)["ratio"] == pytest.approx(
        1 - 0.2 * corrected["overlap"])


def test_allocation_is_measured_predicted_first_and_never_measured_twice(tmp_path) -> None:
    """The whole loop on real OpenVINO runs: each attempt's prediction is recorded before
    its measurement (the first uncalibrated), no allocation is measured twice, and the
    reported reduction is the measured one."""
    pytest.importorskip("openvino")
    from edgeprune.prune.latency import LatencyRequest, allocate_for_latency

    torch.manual_seed(0)
    model = _Net().eval()
    example = torch.randn(2, 3, 64, 64)
    _, groups = find_groups(model, example, PruneOptions())
    # flat sensitivity curves: the knapsack is free to take whatever saves latency
    analysis = {"baseline_accuracy": 90.0,
                "curves": {g.name: [[round(0.05 * i, 2), 90.0 - 0.1 * i] for i in range(1, 19)]
                           for g in groups}}
    probe = LatencyProbe("openvino", "fp32", rounds=2, iterations=20, seconds=0.05)
    inputs = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    out = allocate_for_latency(model, example, analysis, dscore, PruneOptions(), 0.3,
                               LatencyRequest(probe, inputs, tmp_path))
    summary = out["latency"]
    attempts = summary["attempts"]
    assert 1 <= len(attempts) <= 3
    assert len({json.dumps(a["kept"], sort_keys=True) for a in attempts}) == len(attempts)
    assert attempts[0]["calibration"] == 1.0
    assert all(0 < a["overlap"] <= 1.0 + 1e-9 for a in attempts)
    assert out["reduction"] == pytest.approx(1 - summary["measured_ms"] / summary["dense_ms"])
    assert summary["prediction_error"] == pytest.approx(
        summary["predicted_ms"] / summary["measured_ms"] - 1)
    assert out["target_met"] == (out["reduction"] >= 0.3 - 0.03)
    assert bool(out["warnings"]) == (abs(out["reduction"] - 0.3) > 0.03)


class _ScriptedProbe(LatencyProbe):
    """Latencies from a formula instead of a runtime (the real runs are tested above): a
    model's latency is its parameter count, and the runner of the second call is slow."""

    calls = 0

    def measure(self, models, example, inputs, reference=1):  # type: ignore[override]
        type(self).calls += 1
        scale = 1.5 if type(self).calls == 2 else 1.0
        row = np.array([[scale * sum(p.numel() for p in m.parameters()) for m in models]])
        return paired_ratios(np.repeat(row, 3, axis=0), reference)


def test_a_table_group_whose_runner_ran_slow_is_measured_again() -> None:
    model = _Net().eval()
    example = torch.randn(2, 3, 64, 64)
    inputs = np.zeros((1, 3, 64, 64), np.float32)
    _ScriptedProbe.calls = 0
    table = build_table(model, example, dscore, PruneOptions(), _ScriptedProbe("x", "fp32"),
                        inputs)
    entries = list(table["groups"].values())
    assert len(entries) >= 2
    assert [bool(e.get("remeasured")) for e in entries] == [False, True] + [False] * (
        len(entries) - 2)
    assert len({round(e["dense_ms"]) for e in entries}) == 1  # the slow run was replaced
    assert _ScriptedProbe.calls == len(entries) + 1
