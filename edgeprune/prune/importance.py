"""Filter importance criteria: D-Score, D-Step, D-Step GM, and the baselines (L1, global
magnitude, random). Lower score = pruned first.

One small interface: a criterion maps one layer's filter weights (out, ...) to one score
per filter. Scores of D-Score-style criteria are ranks, so they are only comparable within
a layer; ``GLOBAL_COMPARABLE`` marks the criteria whose scores may be ranked across layers.

D-Score (Park & Kim, arXiv 2308.04470), as the paper and the authors' code state it:
P_j = ||clamp(w_j, min=0)||_1, |N_j| = ||clamp(w_j, max=0)||_1; sort P ascending and |N|
ascending (N closest to 0 first), rank each list 0..n-1; score = rank_P + rank_N.

Where this goes beyond the paper (documented choices, see docs/pruning.md):
- D-Step: "prune filters in the first k of BOTH sorted lists, buffer = the layer's pruning
  count". A filter enters the intersection of the first b of both lists exactly when
  b > max(rank_P, rank_N); growing the buffer until k filters qualify therefore prunes the
  k filters with the smallest max(rank_P, rank_N). We use that as the score, ties broken
  by the D-Score sum.
- D-Step GM: D-Step on distances to the geometric median of the positive and negative
  parts, with FPGM's approximation (a filter's summed distance to all others in the layer;
  close to the median = redundant = pruned first).
- Coupled layers (residual streams, depthwise chains): per-layer scores are summed over
  the layers whose output channels are pruned together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Criterion = Callable[[torch.Tensor], torch.Tensor]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based rank of each value in ascending order (stable for ties)."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(values))
    return ranks.to(torch.float64)


def _flat(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def dscore(weight: torch.Tensor) -> torch.Tensor:
    """rank of positive mass (ascending) + rank of negative mass (closest to 0 first)."""
    w = _flat(weight)
    positive = w.clamp(min=0).sum(1)
    negative = (-w.clamp(max=0)).sum(1)
    return _ranks(positive) + _ranks(negative)


def dstep(weight: torch.Tensor) -> torch.Tensor:
    """In the first b of both sorted lists ⇔ max(rank_P, rank_N) < b."""
    w = _flat(weight)
    rank_p = _ranks(w.clamp(min=0).sum(1))
    rank_n = _ranks((-w.clamp(max=0)).sum(1))
    n = len(rank_p)
    return torch.maximum(rank_p, rank_n) + (rank_p + rank_n) / (2 * n + 1)


def _gm_distance(parts: torch.Tensor) -> torch.Tensor:
    """FPGM's geometric-median proxy: summed L2 distance to every other filter."""
    return torch.cdist(parts, parts).sum(1)


def dstep_gm(weight: torch.Tensor) -> torch.Tensor:
    """D-Step on distances to the geometric median of the positive / negative parts."""
    w = _flat(weight)
    rank_p = _ranks(_gm_distance(w.clamp(min=0)))
    rank_n = _ranks(_gm_distance(w.clamp(max=0)))
    n = len(rank_p)
    return torch.maximum(rank_p, rank_n) + (rank_p + rank_n) / (2 * n + 1)


def l1(weight: torch.Tensor) -> torch.Tensor:
    """Filter L1 norm (Li et al.): the standard magnitude baseline."""
    return _flat(weight).abs().sum(1)


def global_magnitude(weight: torch.Tensor) -> torch.Tensor:
    """Mean |w| of a filter: a structured analogue of global magnitude pruning whose
    scores are comparable across layers of different fan-in."""
    return _flat(weight).abs().mean(1)


def make_random(seed: int = 0) -> Criterion:
    """Random scores: the floor every criterion must beat."""
    generator = torch.Generator().manual_seed(seed)

    def random_scores(weight: torch.Tensor) -> torch.Tensor:
        return torch.rand(weight.shape[0], generator=generator, dtype=torch.float64)

    return random_scores


CRITERIA: dict[str, Callable[[], Criterion]] = {
    "dscore": lambda: dscore,
    "dstep": lambda: dstep,
    "dstep-gm": lambda: dstep_gm,
    "l1": lambda: l1,
    "global-magnitude": lambda: global_magnitude,
    "random": make_random,
}
GLOBAL_COMPARABLE = {"global-magnitude"}


def get_criterion(name: str) -> Criterion:
    """A shipped criterion by name, or your own as ``module:callable`` (weight → scores)."""
    from edgeprune.data.sources import import_callable
    from edgeprune.errors import InputError

    if name in CRITERIA:
        return CRITERIA[name]()
    if ":" in name:
        return import_callable(name, what="criterion")
    raise InputError(f"unknown pruning criterion {name!r}",
                     fix=f"use one of {', '.join(CRITERIA)} or module:callable")
