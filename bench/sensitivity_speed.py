"""Sensitivity analysis time, whole network per step (before) vs only the network after
the group's first layer with BatchNorms folded (prune/suffix.py, now the default), in one
run, on the shared CIFAR-10 ResNets; the same curves and the same ratios for a 50% FLOPs
reduction are checked. Also the surgery's time (the prune stage's find_groups + plan +
apply on the model) for those ratios.

    python bench/sensitivity_speed.py [--depths 20 56] [--samples 1000]

D-Score, default steps (5%), 1,000 training JPEGs (every 50th of the 50k train split),
batch 256, as the prune stage uses them. Goals (issue #17): ResNet-20 <= 40 s,
ResNet-56 <= 5 min, surgery on ResNet-20 <= 2 s. Writes bench/results/sensitivity_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.prune_quality import MEAN, STD, load_resnet
from bench.streaming_data import cifar_folder
from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, Subset, materialize, resolve_splits
from edgeprune.prune.importance import get_criterion
from edgeprune.prune.sensitivity import analyze, search_threshold, torch_accuracy
from edgeprune.prune.structural import (
    PruneOptions,
    apply_plan,
    find_groups,
    make_shortcuts_explicit,
    plan_from_ratios,
)
from edgeprune.prune.verify import with_followable
from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]


def surgery_seconds(model: torch.nn.Module, example: torch.Tensor, ratios: dict[str, float],
                    options: PruneOptions, repeats: int = 5) -> float:
    """Median seconds of the prune stage's surgery (graph, plan, cut) on a fresh copy."""
    times = []
    for _ in range(repeats):
        pruned = copy.deepcopy(model)
        started = time.perf_counter()
        graph, groups = find_groups(pruned, example, options)
        apply_plan(graph, groups, plan_from_ratios(groups, ratios, get_criterion("dscore"),
                                                   options))
        times.append(time.perf_counter() - started)
    return median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--output", type=Path,
                        default=REPO / "bench" / "results" / "sensitivity_speed.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    split = resolve_splits(DataOptions(data=str(cifar_folder() / "train"), calib_size=10)).train
    every = max(1, len(split.source.labels) // args.samples)
    subset = Subset(split.source, np.arange(0, every * args.samples, every), "train", "bench")
    images, labels = materialize(subset, Preprocess(mean=MEAN, std=STD))
    evaluate = torch_accuracy(images, labels)
    dscore = get_criterion("dscore")
    results = {}
    for depth in args.depths:
        model = load_resnet(depth)
        example = torch.zeros(2, 3, 32, 32)
        make_shortcuts_explicit(model, example)
        options, _ = with_followable(model, example, PruneOptions())
        row: dict = {}
        for mode, suffix_only in (("after", True), ("before", False)):
            evals = [0]

            def count(evals: list[int] = evals) -> None:
                evals[0] += 1

            started = time.perf_counter()
            analysis = analyze(model, example, dscore, evaluate, options, on_eval=count,
                               suffix_only=suffix_only)
            seconds = time.perf_counter() - started
            found = search_threshold(model, example, analysis, dscore, options, 0.5)
            row[mode] = {"seconds": round(seconds, 1), "curve_points": evals[0],
                         "analysis": analysis, "ratios": found["ratios"],
                         "flops_reduction": found["reduction"]}
            print(f"ResNet-{depth} {mode}: {seconds:.1f} s, {evals[0]} points", flush=True)
        before, after = row["before"], row["after"]
        diffs = [abs(a[1] - b[1]) for name, curve in before["analysis"]["curves"].items()
                 for a, b in zip(curve, after["analysis"]["curves"][name], strict=False)]
        results[f"resnet{depth}"] = {
            "seconds_before": before["seconds"], "seconds_after": after["seconds"],
            "speedup": round(before["seconds"] / after["seconds"], 2),
            "curve_points": [before["curve_points"], after["curve_points"]],
            "same_curve_lengths": all(
                len(c) == len(after["analysis"]["curves"][n])
                for n, c in before["analysis"]["curves"].items()),
            "largest_curve_difference_points": max(diffs),
            "same_ratios_for_50pct_flops": before["ratios"] == after["ratios"],
            "flops_reduction": round(after["flops_reduction"], 4),
            "surgery_seconds": round(surgery_seconds(model, example, after["ratios"], options), 3),
        }
        print(json.dumps(results[f"resnet{depth}"]), flush=True)
    result = {"what": "sensitivity analysis (D-Score, 5% steps, stop 25 points below the "
                      f"unpruned model) on {args.samples} CIFAR-10 training JPEGs, before "
                      "(whole network per step) vs after (prefix once per group, BatchNorms "
                      "folded); surgery = find_groups + plan + apply for the 50% FLOPs ratios",
              "goals": {"resnet20_seconds": 40, "resnet56_seconds": 300,
                        "resnet20_surgery_seconds": 2},
              "environment": environment(), "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
