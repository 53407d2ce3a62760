"""Latency-allocated vs FLOPs-allocated D-Score pruning on OpenVINO CPU, side by side.

The latency allocation (`--latency-reduction`, prune/latency.py) is run on a model, the
FLOPs allocation (`--flops-reduction`) at the SAME FLOPs reduction, and then dense and
both pruned models are measured in alternating rounds of one runner process, at FP32 and
at BF16 (OpenVINO's default on this AMX CPU). Accuracy: top-1 on a CIFAR-10 test subset
right after the surgery (no compensation, no recovery: the allocations compared alone).
The sensitivity curves: the product's analysis on 1000 training images.

    python bench/latency_pruning.py --depth 56 --reduction 0.3 --precision bf16
Writes bench/results/latency_pruning_resnet{depth}.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, Subset, materialize, resolve_splits
from edgeprune.model import count_flops
from edgeprune.prune.importance import dscore
from edgeprune.prune.latency import LatencyProbe, LatencyRequest, allocate_for_latency
from edgeprune.prune.sensitivity import analyze, search_threshold, torch_accuracy
from edgeprune.prune.structural import PruneOptions, make_shortcuts_explicit, prune_copy
from edgeprune.prune.verify import with_followable
from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.prune_quality import MEAN, STD, load_resnet  # noqa: E402
from bench.streaming_data import cifar_folder  # noqa: E402


def arrays(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    opts = DataOptions(data=str(cifar_folder() / split), calib_size=10)
    source = resolve_splits(opts).train.source
    every = max(1, len(source.labels) // count)
    subset = Subset(source, np.arange(0, every * count, every), split, "bench")
    return materialize(subset, Preprocess(mean=MEAN, std=STD))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--reduction", type=float, default=0.3)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_resnet(args.depth)
    example = torch.zeros(2, 3, 32, 32)
    make_shortcuts_explicit(model, example)
    options, _ = with_followable(model, example, PruneOptions())
    train_x, train_y = arrays("train", 1000)
    test_x, test_y = arrays("test", 2000)
    started = time.perf_counter()
    analysis = analyze(model, example, dscore, torch_accuracy(train_x, train_y), options)
    sensitivity_s = time.perf_counter() - started
    probe = LatencyProbe("openvino", args.precision, options={"performance_hint": "LATENCY"})
    request = LatencyRequest(probe, train_x[:1], None, lambda t: print(t, flush=True))
    started = time.perf_counter()
    lat = allocate_for_latency(model, example, analysis, dscore, options, args.reduction,
                               request)
    allocation_s = time.perf_counter() - started
    shape = (1, 3, 32, 32)
    lat_model = prune_copy(model, example, lat["ratios"], dscore, options)[0]
    flops_red = 1 - count_flops(lat_model, shape) / count_flops(model, shape)
    fl = search_threshold(model, example, analysis, dscore, options, flops_red)
    flops_model = prune_copy(model, example, fl["ratios"], dscore, options)[0]
    models = {"dense": model, "latency-allocated": lat_model, "flops-allocated": flops_model}
    evaluate = torch_accuracy(test_x, test_y)
    rows: dict = {}
    for precision in ("fp32", "bf16"):
        side = LatencyProbe("openvino", precision, rounds=args.rounds, iterations=300,
                            seconds=0.5, options={"performance_hint": "LATENCY"})
        measured = side.measure(list(models.values()), example, train_x[:1])
        for name, m in zip(models, measured, strict=True):
            rows.setdefault(name, {})[precision] = m
    dense_bf16 = rows["dense"]["bf16"]["p50_ms"]
    table = []
    for name, net in models.items():
        for precision in ("fp32", "bf16"):
            p50 = rows[name][precision]["p50_ms"]
            table.append({
                "model": name, "precision": precision, "p50_ms": p50,
                "noise_ms": rows[name][precision]["noise_ms"],
                "vs_dense_same_precision": rows["dense"][precision]["p50_ms"] / p50,
                "vs_dense_bf16": dense_bf16 / p50,
                "flops_ratio": count_flops(model, shape) / count_flops(net, shape),
                "top1_surgery": evaluate(net)})
            print(json.dumps(table[-1]), flush=True)
    out = {"benchmark": "latency_pruning", "model": f"resnet{args.depth}",
           "requested_latency_reduction": args.reduction, "table_precision": args.precision,
           "sensitivity_seconds": sensitivity_s,
           "allocation_seconds": allocation_s, "latency_table_seconds":
           lat["latency"]["table"]["seconds"],
           "latency_allocation": {k: v for k, v in lat.items() if k != "table"},
           "flops_allocation": {"ratios": fl["ratios"], "reduction": fl["reduction"]},
           "side_by_side": table, "rounds": args.rounds, "environment": environment()}
    path = REPO / "bench" / "results" / f"latency_pruning_resnet{args.depth}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
