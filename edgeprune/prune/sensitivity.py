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
from edgeprune.prune.suffix import SuffixCurves, mask_hook

DEFAULT_STEPS = tuple(round(0.05 * i, 2) for i in range(1, 20))
Evaluate = Callable[[nn.Module], float]


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def analysis_key(model: nn.Module, criterion: str, options: PruneOptions, data_hash: str,
                 steps: tuple[float, ...], metric: dict[str, Any] | None = None) -> str:
    """The cache key of an analysis; ``metric`` (None for top-1, keeping the keys of
    earlier runs) is what the curves measure."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    key: list[Any] = [criterion, asdict(options), data_hash, steps]
    if metric is not None:
        key.append(metric)
    digest.update(json.dumps(key).encode())
    return digest.hexdigest()[:32]


def analyze(model: nn.Module, example: torch.Tensor, criterion: Criterion, evaluate: Evaluate,
            options: PruneOptions, steps: tuple[float, ...] = DEFAULT_STEPS,
            stop_drop: float = 25.0, on_eval: Callable[[], None] | None = None,
            suffix_only: bool = True) -> dict[str, Any]:
    """Accuracy curves per group. A curve stops once accuracy falls ``stop_drop`` points
    below the unpruned model: no useful threshold lies there. ``suffix_only``: a masked
    step runs only the network after the group's first layer (prune/suffix.py), where the
    model can be traced; False: the whole network per step."""
    base = evaluate(model)
    graph, groups = find_groups(model, example, options)
    suffixes = SuffixCurves(model, evaluate) if suffix_only else None
    curves: dict[str, list[list[float]]] = {}
    for group in groups:
        scores = group_scores(group, criterion)
        curve: list[list[float]] = []
        last_kept, last_acc = group.channels, base
        by_mask = maskable(model, group)
        runner = suffixes.for_group(graph, group) if suffixes and by_mask else None
        for ratio in steps:
            kept = group.keep(options, ratio)
            if kept != last_kept:
                if runner is not None:
                    last_acc = runner.accuracy(group.channels_to_prune(scores, kept))
                elif by_mask:
                    with zeroed_channels(graph, group, group.channels_to_prune(scores, kept)):
                        last_acc = evaluate(model)
                else:
                    last_acc = evaluate(prune_copy(model, example, {group.name: ratio},
                                                   criterion, options)[0])
                last_kept = kept
            curve.append([ratio, last_acc])
            if on_eval:
                on_eval()
            if last_acc < base - stop_drop or kept <= options.min_channels:
                break
        curves[group.name] = curve
        del runner  # its cached prefix outputs
    return {"baseline_accuracy": base, "steps": list(steps), "curves": curves,
            "channels": {g.name: g.channels for g in groups}}


def maskable(model: nn.Module, group: PruneGroup) -> bool:
    """Zeroing equals removing unless a layer normalizes ACROSS the group's channels
    (GroupNorm, LayerNorm: a zero still counts in their statistics); those groups are
    measured on a pruned copy instead."""
    modules = dict(model.named_modules())
    return not any(isinstance(modules.get(name), nn.GroupNorm | nn.LayerNorm)
                   for name in group.members)


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
        handles.append(module.register_forward_hook(
            mask_hook(mask, last_dim=isinstance(module, nn.Linear))))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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


# The achieved reduction is kept within this many points (as a fraction) of the request;
# beyond it the choice carries a warning saying by how much and why.
TOLERANCE = 0.02


def search_threshold(model: nn.Module, example: torch.Tensor, analysis: dict[str, Any],
                     criterion: Criterion, options: PruneOptions, target: float,
                     metric: str = "flops") -> dict[str, Any]:
    """The ratios whose reduction reaches ``target`` while losing the least accuracy.

    First the highest threshold T (least pruning) whose ratios reach the target, by
    bisection. On flat curves one threshold step can jump from pruning nothing to pruning
    every group 95%, so the ratios are then blended between the next higher threshold's
    (which miss the target) and T's: the single 5% steps separating them are ordered by
    the accuracy they cost (the curve's running minimum, so a group's steps stay in
    order) and the shortest prefix that reaches the target is found by bisection. The
    result overshoots by at most one step of one group; anything beyond ``TOLERANCE``,
    or a target that cannot be reached, is reported in ``warnings``."""
    curves = analysis["curves"]
    shape = tuple(example.shape)
    measured: dict[str, float] = {}

    def achieved(ratios: dict[str, float]) -> float:
        key = json.dumps(ratios, sort_keys=True)
        if key not in measured:
            pruned, _ = prune_copy(model, example, ratios, criterion, options)
            measured[key] = reduction(model, pruned, shape, metric)
        return measured[key]

    candidates = sorted({acc for curve in curves.values() for _, acc in curve}, reverse=True)
    lo, hi = 0, len(candidates) - 1  # candidates[0] = highest threshold
    met: int | None = None
    tried: list[dict[str, float]] = []
    while lo <= hi:
        mid = (lo + hi) // 2
        value = achieved(ratios_for_threshold(curves, candidates[mid]))
        tried.append({"threshold": candidates[mid], "reduction": value})
        if value >= target:
            met, hi = mid, mid - 1  # met: try a higher threshold (less pruning)
        else:
            lo = mid + 1
    warnings: list[str] = []
    if met is None:
        threshold = candidates[-1]
        ratios = ratios_for_threshold(curves, threshold)
        best = {"threshold": threshold, "ratios": ratios, "reduction": achieved(ratios),
                "target_met": False}
        warnings.append(
            f"the {metric} reduction reached is {best['reduction']:.1%}, short of the "
            f"{target:.0%} asked for: every group is already cut as far as its sensitivity "
            "curve goes (the curve stops where accuracy falls far below the unpruned model, "
            "or at --min-channels)")
    else:
        threshold = candidates[met]
        upper = ratios_for_threshold(curves, threshold)
        lower = (ratios_for_threshold(curves, candidates[met - 1]) if met > 0
                 else {name: 0.0 for name in curves})
        ratios = blend_to_target(curves, lower, upper,
                                 lambda r: achieved(r) >= target)
        best = {"threshold": threshold, "ratios": ratios, "reduction": achieved(ratios),
                "target_met": True}
        if best["reduction"] > target + TOLERANCE:
            warnings.append(
                f"the {metric} reduction reached is {best['reduction']:.1%} for the "
                f"{target:.0%} asked for (tolerance {TOLERANCE:.0%}): the smallest "
                "pruning step that reaches the target (one group's 5% step, rounded "
                "to its channel multiple) removes that much")
    best.update(metric=metric, target=target, tolerance=TOLERANCE, tried=tried,
                warnings=warnings)
    return best


def blend_to_target(curves: dict[str, list[list[float]]], lower: dict[str, float],
                    upper: dict[str, float],
                    reaches: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """The shortest prefix of the cheapest-first single steps from ``lower`` towards
    ``upper`` whose ratios ``reaches`` the target (``upper`` itself does)."""
    steps: list[tuple[float, float, str]] = []  # (-accuracy cost, ratio, group)
    for name, curve in curves.items():
        floor = float("inf")
        for ratio, acc in curve:
            floor = min(floor, acc)
            if lower.get(name, 0.0) < ratio <= upper.get(name, 0.0):
                steps.append((-floor, ratio, name))
    steps.sort()

    def prefix(k: int) -> dict[str, float]:
        ratios = dict(lower)
        for _, ratio, name in steps[:k]:
            ratios[name] = max(ratios.get(name, 0.0), ratio)
        return ratios

    lo, hi = 1, len(steps)  # prefix(len(steps)) == upper, which reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if reaches(prefix(mid)):
            hi = mid
        else:
            lo = mid + 1
    return prefix(hi) if steps else dict(upper)


class TorchEvaluate:
    """The score of a model on preprocessed arrays (channels_last: much faster on CPU): top-1
    against the labels, or the run's ``metric`` (edgeprune.metrics.Metric) of the model's
    outputs against the targets (no agreement with the unpruned model: a metric's outputs
    need not be class scores). Split into batches, inputs and a score of the outputs, so
    the sensitivity analysis can feed it outputs of a partial network (prune/suffix.py)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, batch: int = 256,
                 metric: Any = None) -> None:
        self.images, self.targets, self.batch = images, targets, batch
        self.metric = metric if metric is not None and not metric.is_top1 else None

    def batches(self) -> list[slice]:
        return [slice(start, start + self.batch)
                for start in range(0, len(self.images), self.batch)]

    def inputs(self, part: slice) -> torch.Tensor:
        return torch.from_numpy(self.images[part]).contiguous(memory_format=torch.channels_last)

    def score(self, outputs: Callable[[slice], torch.Tensor]) -> float:
        """The score of ``outputs(part)`` for every batch ``part`` (under no_grad)."""
        with torch.no_grad():
            if self.metric is not None:
                scorer = self.metric.scorer()
                for part in self.batches():
                    scorer.update(outputs(part).numpy(), self.targets[part])
                return scorer.compute()
            correct = 0
            for part in self.batches():
                labels = torch.from_numpy(np.asarray(self.targets[part]))
                correct += int((outputs(part).argmax(1) == labels).sum())
            return 100.0 * correct / len(self.images)

    def __call__(self, model: nn.Module) -> float:
        model = model.eval().to(memory_format=torch.channels_last)
        return self.score(lambda part: model(self.inputs(part)))


def torch_accuracy(images: np.ndarray, labels: np.ndarray, batch: int = 256,
                   metric: Any = None) -> TorchEvaluate:
    """An evaluate() over preprocessed arrays (see :class:`TorchEvaluate`)."""
    return TorchEvaluate(images, labels, batch, metric)
