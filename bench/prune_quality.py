"""Pruning quality on real data: D-Score vs D-Step vs D-Step GM vs L1 vs random (vs global
magnitude), at a FLOPs-reduction target, with the SAME recovery budget, on CIFAR-10 (the
JPEG protocol of ../shared/data/README.md), against the dense model fine-tuned with the
same recipe.

Ranking criteria are compared at identical per-layer ratios (those the D-Score
sensitivity analysis picks for the target), so only the choice of filters differs; global
magnitude uses its own global allocation (that is what the method is).

    python bench/prune_quality.py --depth 20 --epochs 3 --seeds 0
Writes bench/results/prune_quality_resnet<depth>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, Subset, materialize, resolve_splits
from edgeprune.model import count_flops, count_params
from edgeprune.prune.importance import get_criterion
from edgeprune.prune.policy import PruneConfig, choose_ratios
from edgeprune.prune.sensitivity import torch_accuracy
from edgeprune.prune.structural import PruneOptions, make_shortcuts_explicit, prune_copy
from edgeprune.report.environment import environment
from edgeprune.train import TrainConfig, train
from edgeprune.zoo import cifar_resnet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
WEIGHTS = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
           56: "resnet56-4bfd9763.th"}


def load_resnet(depth: int) -> torch.nn.Module:
    state = torch.load(SHARED / "weights" / WEIGHTS[depth], map_location="cpu",
                       weights_only=True)["state_dict"]
    model = cifar_resnet(depth)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
    return model.eval()


def extract_cifar(root: Path) -> None:
    """The shared CIFAR-10 JPEG archives as an ImageFolder tree (train/, test/)."""
    for name in ("train", "test"):
        if not (root / name).is_dir():
            with tarfile.open(SHARED / "cifar10" / f"{name}_jpg.tar.gz") as tar:
                tar.extractall(root, filter="data")


def cifar_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    extract_cifar(root)
    splits = resolve_splits(DataOptions(data=str(root), calib_size=1000, seed=0))
    pre = Preprocess(mean=MEAN, std=STD).validate()
    train_all = Subset(splits.train.source, splits.train.indices, "train", "all")
    return {"train": materialize(train_all, pre), "test": materialize(splits.eval, pre),
            "sensitivity": materialize(splits.calibration, pre)}


def finetune(model: torch.nn.Module, data: dict, epochs: float, seed: int) -> dict:
    x, y = data["train"]
    pad = [-m / s for m, s in zip(MEAN, STD, strict=True)]
    stats = train(model, x, y, TrainConfig(epochs=epochs, seed=seed), pad_value=pad)
    return {k: stats[k] for k in ("steps", "seconds", "seconds_per_epoch", "final_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--flops-reduction", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=[
        "dense", "dscore", "dstep", "dstep-gm", "l1", "random", "global-magnitude"])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    parser.add_argument("--resume", action="store_true",
                        help="keep the methods already in the results file, run the rest")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:  # set it to share the CPU with another job
        torch.set_num_threads(2)
    data = cifar_arrays(args.data_dir)
    evaluate = torch_accuracy(*data["test"])
    base = load_resnet(args.depth)
    shape = (1, 3, 32, 32)
    example = torch.zeros(2, 3, 32, 32)
    explicit = load_resnet(args.depth)
    make_shortcuts_explicit(explicit, example)
    options = PruneOptions()
    started = time.perf_counter()
    dscore_choice = choose_ratios(
        explicit, example, PruneConfig(flops_reduction=args.flops_reduction, options=options),
        get_criterion("dscore"), torch_accuracy(*data["sensitivity"]))
    sensitivity_seconds = time.perf_counter() - started
    results = {"unpruned_no_finetune": {"top1": evaluate(base), "flops": count_flops(base, shape),
                                        "params": count_params(base)}}
    print(json.dumps(results))
    previous = REPO / "bench" / "results" / f"prune_quality_resnet{args.depth}.json"
    if args.resume and previous.is_file():
        results.update(json.loads(previous.read_text())["results"])
    for method in args.methods:
        if method in results:
            continue
        runs = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            if method == "dense":
                model, extra = load_resnet(args.depth), {}
            else:
                model = load_resnet(args.depth)
                make_shortcuts_explicit(model, example)
                criterion = get_criterion(method)
                if method == "global-magnitude":
                    choice = choose_ratios(model, example, PruneConfig(
                        criterion=method, flops_reduction=args.flops_reduction, options=options),
                        criterion, None)
                    ratios = choice["ratios"]
                else:
                    ratios = dscore_choice["ratios"]
                model, _ = prune_copy(model, example, ratios, criterion, options)
                extra = {"top1_before_recovery": evaluate(model)}
            prune_seconds = time.perf_counter() - t0
            stats = finetune(model, data, args.epochs, seed)
            runs.append({"seed": seed, "top1": evaluate(model), "flops": count_flops(model, shape),
                         "params": count_params(model), "prune_seconds": prune_seconds,
                         "finetune": stats, **extra})
            print(method, json.dumps(runs[-1]), flush=True)
        top1 = np.asarray([r["top1"] for r in runs])
        results[method] = {"runs": runs, "top1_mean": float(top1.mean()),
                           "top1_spread": float(top1.max() - top1.min()), "n": len(runs)}
        write_results(args, results, dscore_choice, sensitivity_seconds)  # after each method


def write_results(args: argparse.Namespace, results: dict, dscore_choice: dict,
                  sensitivity_seconds: float) -> None:
    """(Re)write the JSON: a long run that is cut short still leaves what it measured."""
    dense = results.get("dense", {}).get("top1_mean")
    for r in results.values():
        if "top1_mean" in r:
            r["flops_reduction"] = 1 - r["runs"][0]["flops"] / results[
                "unpruned_no_finetune"]["flops"]
            if dense is not None:
                r["drop_vs_dense_finetuned"] = dense - r["top1_mean"]
    out = {
        "benchmark": "prune_quality", "model": f"resnet{args.depth}",
        "protocol": "CIFAR-10 JPEG: fine-tune on all 50k train JPEGs, SGD momentum 0.9 "
        f"Nesterov, lr 0.01 cosine per iteration, wd 5e-4, batch 128, crop+flip, "
        f"E={args.epochs}; top-1 on all 10k test JPEGs",
        "flops_reduction_target": args.flops_reduction, "seeds": args.seeds,
        "methods_requested": args.methods,
        "sensitivity": {"samples": 1000, "seconds": sensitivity_seconds,
                        "threshold": dscore_choice.get("threshold"),
                        "achieved_flops_reduction": dscore_choice.get("reduction"),
                        "ratios": dscore_choice["ratios"]},
        "results": results, "environment": environment(),
    }
    target = REPO / "bench" / "results" / f"prune_quality_resnet{args.depth}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
