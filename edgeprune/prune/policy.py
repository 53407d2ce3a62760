"""How much each layer loses: sensitivity-based (the paper), global ranking, or uniform.

This is where a user's request (``--flops-reduction 0.5``, ``--sensitivity-threshold 85``
or ``--prune-ratio 0.3``) becomes per-group ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import InputError
from edgeprune.options import DEFAULT_CRITERION, default
from edgeprune.prune.compensate import CompensationConfig
from edgeprune.prune.importance import GLOBAL_COMPARABLE, Criterion
from edgeprune.prune.latency import LatencyRequest, allocate_for_latency
from edgeprune.prune.sensitivity import (
    Evaluate,
    analyze,
    ratios_for_threshold,
    reduction,
    search_threshold,
)
from edgeprune.prune.structural import PruneOptions, find_groups, group_scores, prune_copy


@dataclass
class PruneConfig:
    """A pruning request. Exactly one of flops_reduction / params_reduction /
    latency_reduction / threshold / ratio says how much; the criterion says which filters."""

    criterion: str = DEFAULT_CRITERION
    flops_reduction: float | None = None
    params_reduction: float | None = None
    threshold: float | None = None  # sensitivity threshold accuracy (top-1 %)
    ratio: float | None = None  # the same ratio for every group
    # measured on the target (prune/latency.py): the latency tables' knapsack allocation
    latency_reduction: float | None = None
    allocation: str = "auto"  # "sensitivity" | "global" | "uniform" | "latency" | "auto"
    sensitivity_samples: int = default("sensitivity_samples")
    options: PruneOptions = field(default_factory=PruneOptions)
    # groups left unpruned after the allocation, every other group keeping its ratio (the
    # search's per-layer exception; unlike options.exclude, which drops every group that
    # touches a module, in- or output side)
    keep_groups: list[str] = field(default_factory=list)
    # retraining-free compensation right after the surgery (prune/compensate.py)
    compensation: CompensationConfig = field(default_factory=CompensationConfig)

    def validate(self) -> PruneConfig:
        self.compensation.validate()
        given = [v for v in (self.flops_reduction, self.params_reduction,
                             self.latency_reduction, self.threshold, self.ratio)
                 if v is not None]
        if len(given) != 1:
            raise InputError(
                "pruning needs exactly one amount: --flops-reduction, --params-reduction, "
                "--latency-reduction, --sensitivity-threshold or --prune-ratio",
                fix="e.g. --prune dscore --flops-reduction 0.5",
            )
        for name in ("flops_reduction", "params_reduction", "latency_reduction", "ratio"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise InputError(f"--{name.replace('_', '-')} {value} must be between 0 and 1",
                                 fix="pass a fraction, e.g. 0.5 for 50%")
        if self.options.min_channels < 1 or self.options.round_to < 1:
            raise InputError("--min-channels and --round-to must be at least 1",
                             fix="e.g. --min-channels 4 --round-to 8")
        return self

    def resolved_allocation(self) -> str:
        if self.allocation != "auto":
            return self.allocation
        if self.ratio is not None:
            return "uniform"
        if self.latency_reduction is not None:
            return "latency"
        return "global" if self.criterion in GLOBAL_COMPARABLE else "sensitivity"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("keep_groups", "latency_reduction"):
            if not d[key]:  # absent unless used: earlier runs' cache keys stay valid
                del d[key]
        return d


def choose_ratios(model: nn.Module, example: torch.Tensor, config: PruneConfig,
                  criterion: Criterion, evaluate: Evaluate | None,
                  cached_analysis: dict[str, Any] | None = None,
                  on_eval: Callable[[], None] | None = None,
                  latency: LatencyRequest | None = None) -> dict[str, Any]:
    """Per-group ratios and how they were chosen (including the sensitivity curves);
    ``config.keep_groups`` end at ratio 0. ``latency``: where a --latency-reduction is
    measured."""
    choice = _allocate(model, example, config, criterion, evaluate, cached_analysis, on_eval,
                       latency)
    unknown = sorted(set(config.keep_groups) - set(choice["ratios"]))
    if unknown:
        raise InputError(f"groups to keep unpruned are not prunable groups: {unknown}",
                         fix="name groups as the plan does (see plan.json / sensitivity.json)")
    for name in config.keep_groups:
        choice["ratios"][name] = 0.0
    return choice


def _allocate(model: nn.Module, example: torch.Tensor, config: PruneConfig,
              criterion: Criterion, evaluate: Evaluate | None,
              cached_analysis: dict[str, Any] | None,
              on_eval: Callable[[], None] | None,
              latency: LatencyRequest | None = None) -> dict[str, Any]:
    options = config.options
    allocation = config.resolved_allocation()
    if allocation == "uniform":
        _, groups = find_groups(model, example, options)
        return {"allocation": "uniform", "ratios": {g.name: config.ratio for g in groups}}
    target, metric = _target(config)
    if allocation == "global":
        if target is None:
            raise InputError("global allocation needs --flops-reduction or --params-reduction",
                             fix="add e.g. --flops-reduction 0.5")
        return {"allocation": "global", **search_global(model, example, criterion, options,
                                                        target, metric)}
    assert evaluate is not None
    analysis = cached_analysis or analyze(model, example, criterion, evaluate, options,
                                          on_eval=on_eval)
    if allocation == "latency":
        if latency is None:
            raise InputError("--latency-reduction needs a target to measure on",
                             fix="run it through `edgeprune prune` or `compile` with --target")
        assert config.latency_reduction is not None
        # groups kept unpruned take no part in the allocation (the measured latency must
        # be the latency of what is built)
        free = {**analysis, "curves": {g: c for g, c in analysis["curves"].items()
                                       if g not in config.keep_groups}}
        found = allocate_for_latency(model, example, free, criterion, options,
                                     config.latency_reduction, latency)
        return {"allocation": "latency", **found, "analysis": analysis}
    if config.threshold is not None:
        ratios = ratios_for_threshold(analysis["curves"], config.threshold)
        return {"allocation": "sensitivity", "threshold": config.threshold, "ratios": ratios,
                "analysis": analysis}
    found = search_threshold(model, example, analysis, criterion, options, target, metric)
    return {"allocation": "sensitivity", **found, "analysis": analysis}


def _target(config: PruneConfig) -> tuple[float | None, str]:
    if config.flops_reduction is not None:
        return config.flops_reduction, "flops"
    if config.params_reduction is not None:
        return config.params_reduction, "params"
    return None, "flops"


def search_global(model: nn.Module, example: torch.Tensor, criterion: Criterion,
                  options: PruneOptions, target: float, metric: str) -> dict[str, Any]:
    """One score cut-off across all groups (criteria comparable across layers), bisected
    until the reduction target is reached."""
    _, groups = find_groups(model, example, options)
    scores = {g.name: group_scores(g, criterion) / len(g.producers) for g in groups}
    pooled = torch.sort(torch.cat(list(scores.values()))).values
    lo, hi = 0, len(pooled) - 1
    best: dict[str, Any] = {}
    while lo <= hi:
        mid = (lo + hi) // 2
        cutoff = float(pooled[mid])
        ratios = {n: float((s <= cutoff).double().mean()) for n, s in scores.items()}
        pruned, _ = prune_copy(model, example, ratios, criterion, options)
        achieved = reduction(model, pruned, tuple(example.shape), metric)
        if achieved >= target:
            best = {"cutoff": cutoff, "ratios": ratios, "reduction": achieved}
            hi = mid - 1
        else:
            lo = mid + 1
    if not best:
        raise InputError(f"no global cut-off reaches a {target:.0%} {metric} reduction with "
                         f"--min-channels {options.min_channels}",
                         fix="lower the target or --min-channels")
    return {**best, "metric": metric, "target": target, "target_met": True}
