"""Per-layer sensitivity analysis (D-Score paper, step 4) and the ratio search.

Each prunable group is pruned ALONE in 5% steps and the accuracy measured after each
step, without retraining. A step is not a surgery on a copy: the dependency graph is built
once, and a step's channels are zeroed at the output of every layer that produces them
(convs, their BatchNorms, depthwise convs) by forward hooks -- a removed channel and a
zeroed one reach every consumer, residual add and concatenation identically, so the
accuracy is the surgery's (tested), at the cost of one forward pass.

A threshold accuracy T then gives every group the largest ratio whose accuracy (and that
of every smaller ratio) stays >= T. A FLOPs or params reduction target is met by
searching T: higher T prunes less, so the search is a bisection over the accuracies
observed.

Accuracy here is measured on a held-out subset of the TRAINING split, never on the
evaluation split, so the final number is not tuned on the test images. Results are cached
per model + data + criterion + options, so the analysis runs once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.model import count_flops, count_params
from edgeprune.prune.importance import Criterion
from edgeprune.prune.structural import (
    PruneGroup,
    PruneOptions,
    find_groups,
    group_scores,
    prune_copy,
    prune_function,
)

DEFAULT_STEPS = tuple(round(0.05 * i, 2) for i in range(1, 20))
Evaluate = Callable[[nn.Module], float]


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def analysis_key(model: nn.Module, criterion: str, options: PruneOptions, data_hash: str,
                 steps: tuple[float, ...]) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(json.dumps([criterion, asdict(options), data_hash, steps]).encode())
    return digest.hexdigest()[:32]


def analyze(model: nn.Module, example: torch.Tensor, criterion: Criterion, evaluate: Evaluate,
            options: PruneOptions, steps: tuple[float, ...] = DEFAULT_STEPS,
            stop_drop: float = 25.0, on_eval: Callable[[], None] | None = None) -> dict[str, Any]:
    """Accuracy curves per group. A curve stops once accuracy falls ``stop_drop`` points
    below the unpruned model: no useful threshold lies there."""
    base = evaluate(model)
    graph, groups = find_groups(model, example, options)
    curves: dict[str, list[list[float]]] = {}
    for group in groups:
        order = torch.argsort(group_scores(group, criterion), stable=True).tolist()
        curve: list[list[float]] = []
        last_kept, last_acc = group.channels, base
        for ratio in steps:
            kept = options.keep_count(group.channels, ratio)
            if kept != last_kept:
                with zeroed_channels(graph, group, sorted(order[: group.channels - kept])):
                    last_acc = evaluate(model)
                last_kept = kept
            curve.append([ratio, last_acc])
            if on_eval:
                on_eval()
            if last_acc < base - stop_drop or kept <= options.min_channels:
                break
        curves[group.name] = curve
    return {"baseline_accuracy": base, "steps": list(steps), "curves": curves,
            "channels": {g.name: g.channels for g in groups}}


@contextlib.contextmanager
def zeroed_channels(graph: Any, group: PruneGroup, channels: list[int]) -> Iterator[None]:
    """While active, the group's ``channels`` are zero at the output of every layer that
    produces them: the forward pass of the model with those channels removed."""
    handles = []
    coupled = graph.get_pruning_group(group.root, prune_function(group.root), channels)
    for dep, idxs in coupled:
        module = dep.target.module
        if dep.handler.__name__ != "prune_out_channels" or not isinstance(
                module, nn.Conv2d | nn.Linear | nn.modules.batchnorm._BatchNorm):
            continue
        mask = torch.ones(module.weight.shape[0])
        mask[list(idxs)] = 0.0
        handles.append(module.register_forward_hook(_mask_hook(mask)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _mask_hook(mask: torch.Tensor) -> Callable:
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (output.dim() - 2)
        return output * mask.to(output.dtype).view(shape)
    return hook


def ratios_for_threshold(curves: dict[str, list[list[float]]],
                         threshold: float) -> dict[str, float]:
    """Each group's largest ratio whose accuracy, and every smaller ratio's, is >= T."""
    ratios = {}
    for name, curve in curves.items():
        best = 0.0
        for ratio, acc in curve:
            if acc < threshold:
                break
            best = ratio
        ratios[name] = best
    return ratios


def reduction(model: nn.Module, pruned: nn.Module, shape: tuple[int, ...], metric: str) -> float:
    if metric == "flops":
        return 1.0 - count_flops(pruned, shape) / count_flops(model, shape)
    return 1.0 - count_params(pruned) / count_params(model)


def search_threshold(model: nn.Module, example: torch.Tensor, analysis: dict[str, Any],
                     criterion: Criterion, options: PruneOptions, target: float,
                     metric: str = "flops") -> dict[str, Any]:
    """The highest threshold (least pruning) whose reduction reaches ``target``; if even
    the lowest threshold cannot reach it, the lowest one (and the report says so)."""
    curves = analysis["curves"]
    shape = tuple(example.shape)
    candidates = sorted({acc for curve in curves.values() for _, acc in curve}, reverse=True)
    lo, hi = 0, len(candidates) - 1  # candidates[0] = highest threshold
    best: dict[str, Any] | None = None
    tried: list[dict[str, float]] = []
    while lo <= hi:
        mid = (lo + hi) // 2
        threshold = candidates[mid]
        ratios = ratios_for_threshold(curves, threshold)
        pruned, _ = prune_copy(model, example, ratios, criterion, options)
        achieved = reduction(model, pruned, shape, metric)
        tried.append({"threshold": threshold, "reduction": achieved})
        if achieved >= target:
            best = {"threshold": threshold, "ratios": ratios, "reduction": achieved}
            hi = mid - 1  # met: try a higher threshold (less pruning)
        else:
            lo = mid + 1
    if best is None:
        threshold = candidates[-1]
        ratios = ratios_for_threshold(curves, threshold)
        pruned, _ = prune_copy(model, example, ratios, criterion, options)
        best = {"threshold": threshold, "ratios": ratios,
                "reduction": reduction(model, pruned, shape, metric), "target_met": False}
    best.setdefault("target_met", True)
    best.update(metric=metric, target=target, tried=tried)
    return best


def torch_accuracy(images: np.ndarray, labels: np.ndarray, batch: int = 256) -> Evaluate:
    """An evaluate() over preprocessed arrays (channels_last: much faster on CPU)."""
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)

    def evaluate(model: nn.Module) -> float:
        model = model.eval().to(memory_format=torch.channels_last)
        correct = 0
        with torch.no_grad():
            for start in range(0, len(x_all), batch):
                x = x_all[start : start + batch].contiguous(memory_format=torch.channels_last)
                correct += int((model(x).argmax(1) == y_all[start : start + batch]).sum())
        return 100.0 * correct / len(x_all)

    return evaluate
