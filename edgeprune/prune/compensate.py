"""Retraining-free compensation after structural pruning (this project's reconstruction,
see docs/pruning.md; the sources only give the idea, METHODS.md §3 and §5).

"Pruning On-the-Fly" recovers a pruned network without retraining by replacing pruned
values with their mean. Carried to whole filters: a removed channel ``c`` reaches the
network only through the layers that read it (its *consumers*: every conv or linear
whose input channels the dependency graph prunes with it, across residual adds,
concatenations and flattens). If the channel's activation is replaced by its mean
``m_c`` over training images, consumer ``L`` changes by ``W_L[:, c] · m_c`` (summed over
the kernel), which folds into ``L``'s bias -- or, when ``L`` feeds a BatchNorm directly,
into that BatchNorm's running mean (no new parameter). The only approximation is zero
padding at the borders. The means are measured on the consumer's own input, so they are
post-BatchNorm, post-activation, post-add: whatever the consumer actually read.

Methods (``CompensationConfig.method``):

- ``none``: plain surgery.
- ``bn``: BatchNorm statistics re-estimated on training images (adaptive BN, EagleEye).
- ``mean``: the mean fold, then ``bn``.
- ``refit``: the mean fold, then each consumer's kept weights and its bias refit by ridge
  least squares so its output on training images matches the unpruned model's
  (channel-pruning reconstruction, He et al. 2017 / ThiNet), consumers in execution
  order, each on the inputs of the already-refit network; a refit is kept only where it
  beats the mean fold on held-out rows. BatchNorm statistics are NOT re-estimated after
  a refit (it would undo the fit; see ``compensate``). The default.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import InputError
from edgeprune.options import default

METHODS = ("none", "bn", "mean", "refit")


@dataclass
class CompensationConfig:
    method: str = default("compensate")
    # training images for means, BatchNorm statistics and refits
    samples: int = default("compensate_samples")
    batch: int = 128
    positions: int = 32  # refit: output positions sampled per image and layer
    ridge: float = 1e-3  # refit: relative ridge (times the mean diagonal of XᵀX)

    def validate(self) -> CompensationConfig:
        if self.method not in METHODS:
            raise InputError(f"unknown --compensate {self.method!r}",
                             fix=f"use one of {', '.join(METHODS)}")
        if self.samples < 1 or self.batch < 1 or self.positions < 1 or self.ridge < 0:
            raise InputError("--compensate-samples must be at least 1",
                             fix="e.g. --compensate-samples 1000")
        return self

    @property
    def active(self) -> bool:
        return self.method != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_consumer(module: nn.Module) -> bool:
    """Layers whose input channels can be compensated: dense convs and linears."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d)
                                             and module.groups == 1)


@dataclass
class PruneTrace:
    """What the surgery removed, in the ORIGINAL channel numbering: per layer the input and
    output channels it kept, and the mean correction each consumer needs."""

    kept_in: dict[str, list[int]] = field(default_factory=dict)
    kept_out: dict[str, list[int]] = field(default_factory=dict)
    mean_delta: dict[str, torch.Tensor] = field(default_factory=dict)

    full_in: dict[str, int] = field(default_factory=dict)  # dense convs / linears only

    def consumers(self) -> list[str]:
        """Dense layers that lost input channels (the ones compensation changes)."""
        return [n for n, kept in self.kept_in.items() if n in self.full_in
                and len(kept) < self.full_in[n]]


class Tracer:
    """Follows a dependency-graph surgery group by group (``before_prune``), so the removed
    channels are known per layer in the original numbering, and computes each consumer's
    mean correction from its weights before they are cut."""

    def __init__(self, model: nn.Module, means: dict[str, torch.Tensor] | None) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.means = means
        self.trace = PruneTrace()
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                cin = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                cout = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                self.trace.kept_in[name] = list(range(cin))
                self.trace.kept_out[name] = list(range(cout))
                if _is_consumer(m):
                    self.trace.full_in[name] = cin

    def before_prune(self, group: Any) -> None:
        for dep, idxs in group:
            module = dep.target.module
            name = self.names.get(module)
            if name is None or name not in self.trace.kept_in:
                continue
            handler = dep.handler.__name__
            drop = sorted(set(int(i) for i in idxs))
            if handler == "prune_in_channels":
                kept = self.trace.kept_in[name]
                if isinstance(module, nn.Conv2d) and module.groups > 1:
                    continue  # depthwise: its input goes with its output (same group)
                original = [kept[i] for i in drop]
                if self.means is not None and name in self.means and _is_consumer(module):
                    w = module.weight.detach()
                    w = w.reshape(w.shape[0], w.shape[1], -1).sum(2)  # (out, in)
                    delta = w[:, drop] @ self.means[name][original].to(w.dtype)
                    self.trace.mean_delta[name] = self.trace.mean_delta.get(name, 0) + delta
                self.trace.kept_in[name] = _without(kept, drop)
            elif handler == "prune_out_channels":
                kept = self.trace.kept_out[name]
                if name in self.trace.mean_delta:  # the correction loses those rows too
                    d = self.trace.mean_delta[name]
                    keep = torch.ones(len(d), dtype=torch.bool)
                    keep[drop] = False
                    self.trace.mean_delta[name] = d[keep]
                self.trace.kept_out[name] = _without(kept, drop)
                if isinstance(module, nn.Conv2d) and module.groups > 1:
                    self.trace.kept_in[name] = _without(self.trace.kept_in[name], drop)


def _without(kept: list[int], drop: list[int]) -> list[int]:
    gone = set(drop)
    return [k for i, k in enumerate(kept) if i not in gone]


# --------------------------------------------------------------------------- statistics


def _chunks(images: np.ndarray, batch: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch):
        yield torch.from_numpy(images[start : start + batch]).contiguous(
            memory_format=torch.channels_last)


def input_channel_means(model: nn.Module, images: np.ndarray,
                        batch: int = 128) -> dict[str, torch.Tensor]:
    """Mean of every input channel of every conv/linear over the images (and positions)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach()
            if isinstance(module, nn.Conv2d):
                total, count = x.sum(dim=(0, 2, 3)), x.shape[0] * x.shape[2] * x.shape[3]
            else:
                total = x.reshape(-1, x.shape[-1]).sum(0)
                count = x.numel() // x.shape[-1]
            sums[name] = sums.get(name, 0) + total.double()
            counts[name] = counts.get(name, 0) + count
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        model.eval().to(memory_format=torch.channels_last)
        with torch.no_grad():
            for x in _chunks(images, batch):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: (s / counts[n]).float() for n, s in sums.items()}


def batchnorm_after(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """conv/linear name → the BatchNorm that reads its output directly (one forward)."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # the tensor is kept alive: ids of
    found: dict[str, str] = {}                         # freed tensors are reused
    names = {m: n for n, m in model.named_modules()}

    def out_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        produced[id(output)] = (names[module], output)

    def bn_hook(module: nn.Module, inputs: tuple) -> None:
        source = produced.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            found[source[0]] = names[module]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            handles.append(m.register_forward_hook(out_hook))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return found


def reestimate_batchnorm(model: nn.Module, images: np.ndarray, batch: int = 128) -> int:
    """Recompute every BatchNorm's running statistics on the images (exact averages over
    the batches, everything else in eval mode); returns how many layers changed."""
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = the exact mean over batches
    model.eval().to(memory_format=torch.channels_last)
    for m in bns:
        m.train()
    try:
        with torch.no_grad():
            for x in _chunks(images, batch):
                model(x)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(bns)


# --------------------------------------------------------------------------- refit


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, D, L): each output position's receptive field (conv) or the features (linear)."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError("refit supports explicit zero padding only")
        return F.unfold(x, module.kernel_size, dilation=module.dilation,
                        padding=module.padding, stride=module.stride)
    return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)  # (N, F, tokens)


def _sample(length: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=g)[: min(count, length)]


def _capture(model: nn.Module, name: str, x: torch.Tensor, want: str) -> torch.Tensor:
    """The named layer's input (``want="input"``) or output on x, stopping right after."""
    module = model.get_submodule(name)
    box: list[torch.Tensor] = []

    def pre(mod: nn.Module, inputs: tuple) -> None:
        if want == "input":
            box.append(inputs[0].detach())
            raise _Stop

    def post(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        box.append(output.detach())
        raise _Stop

    handle = (module.register_forward_pre_hook(pre) if want == "input"
              else module.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box[0]


def refit_consumers(pruned: nn.Module, original: nn.Module, trace: PruneTrace,
                    bn_of: dict[str, str], images: np.ndarray,
                    config: CompensationConfig,
                    on_layer: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Ridge least squares per consumer, in execution order (see the module docstring)."""
    from edgeprune.prune.structural import FIXED

    # frozen layers (the option-A selection convs) keep their exact 0/1 mapping
    order = [n for n, m in original.named_modules()
             if n in set(trace.consumers()) and not getattr(m, FIXED, False)]
    pruned.eval().to(memory_format=torch.channels_last)
    original.eval().to(memory_format=torch.channels_last)
    results = []
    for name in order:
        new = pruned.get_submodule(name)
        kept_out = trace.kept_out[name]
        d_in = new.weight[0].numel()
        # normal equations of two halves of the rows: fit on one, check on the other
        halves = [_Normal(d_in + 1, len(kept_out)) for _ in range(2)]
        unsupported = None
        for b, x in enumerate(_chunks(images, config.batch)):
            y = _capture(original, name, x, "output")
            inp = _capture(pruned, name, x, "input")
            if isinstance(new, nn.Conv2d):
                y = y.flatten(2)  # (N, C, L)
            else:
                y = y.reshape(y.shape[0], -1, y.shape[-1]).transpose(1, 2)
            try:
                patches = _patches(new, inp)  # (N, D, L)
            except ValueError as exc:
                unsupported = str(exc)
                break
            if patches.shape[2] != y.shape[2]:  # padding applied outside the layer
                unsupported = "the layer's input is padded elsewhere"
                break
            pick = _sample(patches.shape[2], config.positions, seed=b)
            a = patches[:, :, pick].permute(0, 2, 1).reshape(-1, d_in).double()
            t = y[:, kept_out][:, :, pick].permute(0, 2, 1).reshape(-1, len(kept_out)).double()
            a = torch.cat([a, torch.ones(len(a), 1, dtype=torch.float64)], 1)
            halves[0].add(a[0::2], t[0::2])
            halves[1].add(a[1::2], t[1::2])
        if unsupported is not None:  # the mean fold stays
            results.append({"layer": name, "refit": False, "reason": unsupported})
            if on_layer:
                on_layer()
            continue
        fit, check = halves
        current = _current(new, bn_of, pruned, name)
        before = check.relative_error(current)
        after = check.relative_error(_ridge(fit.xtx, fit.xty, config.ridge))
        row = {"layer": name, "rows": fit.rows + check.rows, "inputs": d_in,
               "held_out_error_before": before, "held_out_error_refit": after,
               "refit": after < before}
        if after < before:  # only where it generalizes better than the mean fold
            weights = _ridge(fit.xtx + check.xtx, fit.xty + check.xty, config.ridge)
            with torch.no_grad():
                new.weight.copy_(weights[:-1].T.reshape(new.weight.shape))
            _set_bias(pruned, name, bn_of, weights[-1].to(new.weight.dtype),
                      replace_bias=True)
        results.append(row)
        if on_layer:
            on_layer()
    return results


class _Normal:
    """Accumulated normal equations AᵀA, AᵀT and TᵀT of a least-squares problem."""

    def __init__(self, d: int, out: int) -> None:
        self.xtx = torch.zeros(d, d, dtype=torch.float64)
        self.xty = torch.zeros(d, out, dtype=torch.float64)
        self.tty = 0.0
        self.rows = 0

    def add(self, a: torch.Tensor, t: torch.Tensor) -> None:
        self.xtx += a.T @ a
        self.xty += a.T @ t
        self.tty += float((t * t).sum())
        self.rows += len(a)

    def relative_error(self, w: torch.Tensor) -> float:
        """||A w - T||² / ||T||²."""
        error = float((w * (self.xtx @ w)).sum() - 2 * (w * self.xty).sum()) + self.tty
        return max(error, 0.0) / max(self.tty, 1e-30)


def _ridge(xtx: torch.Tensor, xty: torch.Tensor, ridge: float) -> torch.Tensor:
    d = xtx.shape[0]
    scale = float(torch.diagonal(xtx)[:-1].mean()) if d > 1 else 1.0
    reg = torch.eye(d, dtype=xtx.dtype) * ridge * max(scale, 1e-12)
    reg[-1, -1] = 0.0  # the bias is not shrunk
    return torch.linalg.solve(xtx + reg, xty)


def _current(module: nn.Module, bn_of: dict[str, str], model: nn.Module,
             name: str) -> torch.Tensor:
    """The layer's present weights and effective bias in the solver's layout."""
    w = module.weight.detach().reshape(module.weight.shape[0], -1).double().T  # (D, out)
    bias = torch.zeros(w.shape[1], dtype=torch.float64)
    if module.bias is not None:
        bias += module.bias.detach().double()
    bn_name = bn_of.get(name)
    if bn_name is not None:  # a correction folded into the BN's mean acts like a bias
        bn = model.get_submodule(bn_name)
        bias += getattr(bn, "_edgeprune_mean_shift", torch.zeros_like(bias)).double()
    return torch.cat([w, bias[None]], 0)


def _set_bias(model: nn.Module, name: str, bn_of: dict[str, str], value: torch.Tensor,
              replace_bias: bool) -> None:
    """Add ``value`` to the layer's output: into the BatchNorm that reads it directly (as a
    running-mean shift), else its bias (created when missing). ``replace_bias``: value is
    the whole bias, not an increment."""
    module = model.get_submodule(name)
    bn_name = bn_of.get(name)
    with torch.no_grad():
        if bn_name is not None and module.bias is None:
            bn = model.get_submodule(bn_name)
            shift = getattr(bn, "_edgeprune_mean_shift", torch.zeros_like(value))
            new_shift = value if replace_bias else shift + value
            bn.running_mean += shift - new_shift  # undo the old shift, apply the new one
            bn._edgeprune_mean_shift = new_shift.clone()
            return
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(value))
        if replace_bias:
            module.bias.copy_(value)
        else:
            module.bias += value


# --------------------------------------------------------------------------- entry point


def compensate(pruned: nn.Module, original: nn.Module, trace: PruneTrace,
               config: CompensationConfig, images: np.ndarray, example: torch.Tensor,
               on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Apply ``config.method`` to a pruned model in place; returns what was done."""
    started = time.perf_counter()
    info: dict[str, Any] = {"method": config.method, "samples": len(images)}
    if not config.active:
        return {**info, "seconds": 0.0}
    bn_of = batchnorm_after(original, example)
    if config.method in ("mean", "refit"):
        for name, delta in trace.mean_delta.items():
            _set_bias(pruned, name, bn_of, delta.detach(), replace_bias=False)
        info["mean_folded_layers"] = sorted(trace.mean_delta)
    if config.method == "refit":
        reference = copy.deepcopy(original)
        info["refit"] = refit_consumers(pruned, reference, trace, bn_of, images, config,
                                        on_step)
        # Each refit reproduces the unpruned layer's output in the least-squares sense, on
        # the inputs of the network as it is at that point (later layers were fitted after
        # it). Re-estimating BatchNorms afterwards would rescale the (lower-variance)
        # fitted outputs back to unit variance and shift the inputs every later refit was
        # fitted on, so the refit network keeps its statistics (measured: ResNet-20 at 50%
        # FLOPs, 72.0% without re-estimation, 69.9% with it).
    for bn in pruned.modules():
        if hasattr(bn, "_edgeprune_mean_shift"):
            del bn._edgeprune_mean_shift
    info["batchnorm_layers"] = (0 if config.method == "refit" else
                                reestimate_batchnorm(pruned, images, config.batch))
    info["seconds"] = time.perf_counter() - started
    return info
