"""Compression that pays: D-Score pruning at 50% FLOPs on the CIFAR-10 JPEG protocol
(../shared/data/README.md), compensation without training, and recovery with labels,
distillation, or both, against the dense model fine-tuned with the same budget and
Torch-Pruning's own L1 pruner with the same budget.

Phases (each cell is one measured run, saved as soon as it finishes; re-running resumes):

- ``sweep`` (ResNet-20 only): chooses the recovery defaults on a VALIDATION split (5,000
  training images held out; training on the other 45,000), never on the test images:
  learning rate, then the distillation weight and temperature, at E=1.
- ``main``: on the 10,000 test JPEGs with all 50,000 training JPEGs: top-1 right after the
  surgery with each compensation method (none / bn / mean / refit); E=1 and E=3 with
  labels, distillation (label-free) and labels + distillation; the dense model fine-tuned
  with the same E; Torch-Pruning L1 (block-internal channels: its graph cannot follow the
  option-A shortcut) with the same E.
- ``seeds``: the default variant and the dense reference at E=3 with more seeds.
- ``goal``: the cells the goals are read on, first (E=3 labels + KD and dense, all seeds).
- ``short`` (ResNet-56): compensation alone, and the default variant + dense at E=3.

    python bench/recovery_quality.py --depth 20 --phase sweep goal main
    python bench/recovery_quality.py --depth 32 --phase main
    python bench/recovery_quality.py --depth 56 --phase short

Writes bench/results/recovery_quality_resnet<depth>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prune_quality import MEAN, STD, cifar_arrays, load_resnet

from edgeprune.model import count_flops, count_params
from edgeprune.prune.compensate import (
    CompensationConfig,
    Tracer,
    compensate,
    input_channel_means,
)
from edgeprune.prune.importance import get_criterion
from edgeprune.prune.policy import PruneConfig, choose_ratios
from edgeprune.prune.sensitivity import torch_accuracy
from edgeprune.prune.structural import (
    PruneOptions,
    apply_plan,
    find_groups,
    make_shortcuts_explicit,
    plan_from_ratios,
)
from edgeprune.report.environment import environment
from edgeprune.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = torch.zeros(2, 3, 32, 32)
SHAPE = (1, 3, 32, 32)
PAD = [-m / s for m, s in zip(MEAN, STD, strict=True)]


class Bench:
    """Data, the pruning plan, and the results file (one JSON, written after each cell)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.path = REPO / "bench" / "results" / f"recovery_quality_resnet{args.depth}.json"
        self.results: dict[str, Any] = (json.loads(self.path.read_text())
                                        if self.path.is_file() else {})
        self.results.setdefault("cells", {})
        data = cifar_arrays(args.data_dir)
        self.train_x, self.train_y = data["train"]
        self.test = data["test"]
        self.sensitivity = data["sensitivity"]  # 1,000 training images (seeded)
        rng = np.random.default_rng(1234)
        held = np.zeros(len(self.train_x), dtype=bool)
        held[rng.choice(len(self.train_x), 5000, replace=False)] = True
        self.val_split = ((self.train_x[~held], self.train_y[~held]),
                          (self.train_x[held], self.train_y[held]))
        self.ratios = self._ratios()

    def _ratios(self) -> dict[str, float]:
        """D-Score per-layer ratios for the FLOPs target (sensitivity analysis, once)."""
        if "sensitivity" in self.results:
            return self.results["sensitivity"]["ratios"]
        model = self.explicit()
        started = time.perf_counter()
        choice = choose_ratios(model, EXAMPLE, PruneConfig(flops_reduction=0.5),
                               get_criterion("dscore"), torch_accuracy(*self.sensitivity))
        self.results["sensitivity"] = {
            "samples": len(self.sensitivity[0]), "seconds": time.perf_counter() - started,
            "threshold": choice.get("threshold"), "reduction": choice.get("reduction"),
            "ratios": choice["ratios"]}
        self.save()
        return choice["ratios"]

    def explicit(self) -> torch.nn.Module:
        model = load_resnet(self.args.depth)
        make_shortcuts_explicit(model, EXAMPLE)
        return model

    def pruned(self, method: str) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The D-Score-pruned model, compensated with ``method``."""
        model = self.explicit()
        original = copy.deepcopy(model)
        config = CompensationConfig(method=method)
        images = self.sensitivity[0][: config.samples]
        means = input_channel_means(model, images) if method in ("mean", "refit") else None
        started = time.perf_counter()
        graph, groups = find_groups(model, EXAMPLE, PruneOptions())
        plan = plan_from_ratios(groups, self.ratios, get_criterion("dscore"), PruneOptions())
        tracer = Tracer(model, means)
        apply_plan(graph, groups, plan, tracer)
        surgery = time.perf_counter() - started
        info = compensate(model, original, tracer.trace, config, images, EXAMPLE)
        return model, {"surgery_seconds": surgery,
                       "compensation_seconds": info.get("seconds", 0.0)}

    def save(self) -> None:
        self.results.update(
            benchmark="recovery_quality", model=f"resnet{self.args.depth}",
            protocol="CIFAR-10 JPEG: train on the 50k train JPEGs (SGD momentum 0.9 Nesterov, "
            "cosine per iteration, wd 5e-4, batch 128, crop+flip), top-1 on the 10k test "
            "JPEGs; the sweep trains on 45k and validates on 5k held-out train JPEGs",
            environment=environment())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2) + "\n")
        tmp.replace(self.path)

    def cell(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in self.results["cells"]:
            return self.results["cells"][name]
        started = time.perf_counter()
        out = run()
        out["wall_seconds"] = time.perf_counter() - started
        self.results["cells"][name] = out
        print(name, json.dumps({k: v for k, v in out.items() if k != "training"}), flush=True)
        self.save()
        return out

    def finetune(self, model: torch.nn.Module, epochs: float, config: dict[str, Any],
                 seed: int = 0, validation: bool = False) -> dict[str, Any]:
        (x, y), held = self.val_split if validation else ((self.train_x, self.train_y),
                                                         self.test)
        train_config = TrainConfig(epochs=epochs, seed=seed, **config)
        teacher = load_resnet(self.args.depth) if train_config.needs_teacher else None
        stats = train(model, x, y, train_config, pad_value=PAD, teacher=teacher)
        return {"top1": torch_accuracy(*held)(model), "flops": count_flops(model, SHAPE),
                "params": count_params(model), "config": config, "seed": seed,
                "epochs": epochs, "split": "validation" if validation else "test",
                "training": {k: stats[k] for k in ("steps", "seconds", "seconds_per_epoch",
                                                   "memory_format",
                                                   "memory_format_ms_per_probe_step")}}


# --------------------------------------------------------------------------- phases


def best(bench: Bench, prefix: str) -> dict[str, Any]:
    cells = {k: v for k, v in bench.results["cells"].items() if k.startswith(prefix)}
    return max(cells.values(), key=lambda c: c["top1"])["config"]


def sweep(bench: Bench) -> None:
    """Defaults by measurement (ResNet-20, E=1, validation split)."""
    for lr in (0.01, 0.02, 0.05):
        for loss, extra in (("labels", {}), ("kd", {"kd_weight": 0.5})):
            config = {"lr": lr, "loss": loss, **extra}
            bench.cell(f"sweep/lr{lr}-{loss}", lambda c=config: bench.finetune(
                bench.pruned("refit")[0], 1.0, c, validation=True))
    lr = best(bench, "sweep/lr")["lr"]
    for weight in (0.25, 0.75, 0.9):
        config = {"lr": lr, "loss": "kd", "kd_weight": weight}
        bench.cell(f"sweep/kd{weight}", lambda c=config: bench.finetune(
            bench.pruned("refit")[0], 1.0, c, validation=True))
    bench.cell("sweep/distill", lambda: bench.finetune(
        bench.pruned("refit")[0], 1.0, {"lr": lr, "loss": "distill"}, validation=True))
    kd = best(bench, "sweep/")
    for temperature in (2.0, 8.0):
        config = {**kd, "temperature": temperature}
        bench.cell(f"sweep/T{temperature}", lambda c=config: bench.finetune(
            bench.pruned("refit")[0], 1.0, c, validation=True))
    chosen = best(bench, "sweep/")
    for method in ("none", "bn", "mean"):  # does compensation still pay after training?
        bench.cell(f"sweep/comp-{method}", lambda m=method: {
            **bench.finetune(bench.pruned(m)[0], 1.0, chosen, validation=True),
            "compensation": m})
    bench.results["chosen"] = chosen
    bench.save()


def chosen_config(bench: Bench) -> dict[str, Any]:
    """The sweep's choice (ResNet-20); other depths read it from that file."""
    if "chosen" in bench.results:
        return bench.results["chosen"]
    r20 = REPO / "bench" / "results" / "recovery_quality_resnet20.json"
    return json.loads(r20.read_text())["chosen"]


def main_phase(bench: Bench) -> None:
    evaluate = torch_accuracy(*bench.test)
    dense = load_resnet(bench.args.depth)
    bench.cell("unpruned", lambda: {"top1": evaluate(dense), "flops": count_flops(dense, SHAPE),
                                    "params": count_params(dense)})
    for method in ("none", "bn", "mean", "refit"):
        def compensated(m: str = method) -> dict[str, Any]:
            model, times = bench.pruned(m)
            return {"top1": evaluate(model), "flops": count_flops(model, SHAPE),
                    "params": count_params(model), **times}
        bench.cell(f"E0/{method}", compensated)
    chosen = chosen_config(bench)
    lr = chosen["lr"]
    losses = {"labels": {"lr": lr, "loss": "labels"},
              "distill": {"lr": lr, "loss": "distill",
                          "temperature": chosen.get("temperature", 4.0)},
              "kd": {k: v for k, v in chosen.items()}}
    for epochs in (1, 3):
        bench.cell(f"E{epochs}/dense", lambda e=epochs: bench.finetune(
            load_resnet(bench.args.depth), e, {"lr": lr, "loss": "labels"}))
        for name, config in losses.items():
            bench.cell(f"E{epochs}/dscore-refit-{name}", lambda e=epochs, c=config:
                       bench.finetune(bench.pruned("refit")[0], e, c))
        bench.cell(f"E{epochs}/tp-l1-labels", lambda e=epochs: bench.finetune(
            torch_pruning_l1(bench.args.depth), e, {"lr": lr, "loss": "labels"}))
    bench.cell("E3/tp-l1-kd", lambda: bench.finetune(torch_pruning_l1(bench.args.depth), 3,
                                                      losses["kd"]))


def seeds_phase(bench: Bench) -> None:
    chosen = chosen_config(bench)
    for seed in bench.args.seeds:
        bench.cell(f"seeds/E3/dscore-refit-kd/seed{seed}", lambda s=seed: bench.finetune(
            bench.pruned("refit")[0], 3, chosen, seed=s))
        bench.cell(f"seeds/E3/dense/seed{seed}", lambda s=seed: bench.finetune(
            load_resnet(bench.args.depth), 3, {"lr": chosen["lr"], "loss": "labels"}, seed=s))


def goal_phase(bench: Bench) -> None:
    """The cells the goals are read on, first: E=3 labels+KD vs the dense model at E=3,
    seed 0 and the extra seeds (the same cells as ``main`` and ``seeds``)."""
    chosen = chosen_config(bench)
    dense_config = {"lr": chosen["lr"], "loss": "labels"}
    bench.cell("E3/dense", lambda: bench.finetune(load_resnet(bench.args.depth), 3,
                                                  dense_config))
    bench.cell("E3/dscore-refit-kd", lambda: bench.finetune(bench.pruned("refit")[0], 3,
                                                            chosen))
    seeds_phase(bench)


def short_phase(bench: Bench) -> None:
    evaluate = torch_accuracy(*bench.test)
    dense = load_resnet(bench.args.depth)
    bench.cell("unpruned", lambda: {"top1": evaluate(dense), "flops": count_flops(dense, SHAPE),
                                    "params": count_params(dense)})
    for method in ("none", "refit"):
        def compensated(m: str = method) -> dict[str, Any]:
            model, times = bench.pruned(m)
            return {"top1": evaluate(model), "flops": count_flops(model, SHAPE),
                    "params": count_params(model), **times}
        bench.cell(f"E0/{method}", compensated)
    chosen = chosen_config(bench)
    bench.cell("E3/dense", lambda: bench.finetune(load_resnet(bench.args.depth), 3,
                                                  {"lr": chosen["lr"], "loss": "labels"}))
    bench.cell("E3/dscore-refit-kd", lambda: bench.finetune(bench.pruned("refit")[0], 3,
                                                            chosen))


def torch_pruning_l1(depth: int) -> torch.nn.Module:
    """Torch-Pruning's MetaPruner with L1 filter importance, as a Torch-Pruning user runs
    it on this model: the option-A shortcut hides a channel mapping from its graph, so
    only block-internal channels (each block's conv1) can be pruned; the ratio is
    bisected to the same 50% FLOPs reduction."""
    import torch_pruning as tp

    base = count_flops(load_resnet(depth), SHAPE)
    lo, hi, best_model = 0.3, 0.95, None
    for _ in range(12):
        ratio = (lo + hi) / 2
        model = load_resnet(depth)
        ignored = [m for n, m in model.named_modules()
                   if n == "conv1" or n == "linear" or n.endswith(".conv2")]
        pruner = tp.pruner.MetaPruner(model, EXAMPLE, importance=tp.importance.MagnitudeImportance(
            p=1), pruning_ratio=ratio, ignored_layers=ignored)
        pruner.step()
        reduction = 1 - count_flops(model, SHAPE) / base
        if reduction >= 0.5:
            best_model, hi = model, ratio
        else:
            lo = ratio
    assert best_model is not None
    return best_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--phase", nargs="+", default=["main"],
                        choices=["sweep", "goal", "main", "seeds", "short"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                        help="seeds beyond 0 (seed 0 is the main phase's E=3 cell)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(2)
    bench = Bench(args)
    phases = {"sweep": sweep, "goal": goal_phase, "main": main_phase, "seeds": seeds_phase,
              "short": short_phase}
    for phase in args.phase:
        phases[phase](bench)


if __name__ == "__main__":
    main()
