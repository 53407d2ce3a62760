"""Ternary weight quantization for Conv/Linear: HQ (hyperspherical) and TWN.

Weights become ``alpha_c * {-1, 0, +1}`` with a per-output-channel scale ``alpha_c`` and
threshold ``delta_c``; training keeps latent full-precision weights and uses a
straight-through estimator (STE). Two methods share everything except the parts below:

``twn`` (Ternary Weight Networks, Li et al. 2016), per output channel:
    delta = 0.7 * mean|w|,  mask = |w| > delta,  alpha = mean_{mask} |w|.

``hq`` -- this project's reconstruction of Hyperspherical Quantization (Liu et al., WACV
2023, arXiv 2212.12653). Only the abstract/introduction were available, so every formula
below is **our choice**, not the paper's (see docs/ternary.md and /work/shared/METHODS.md §3):

1. Threshold by cosine: for filter w with mask m and t = sign(w) * m,
   ``cos(w, t) = sum_m |w_i| / (||w||_2 * sqrt(|m|))``. For a given |m| the best mask keeps
   the largest |w|, so sorting |w| descending (a_1 >= ... >= a_n) and taking
   ``k* = argmax_k S_k / sqrt(k)`` (S_k the prefix sum) is an exact O(n log n) search;
   ``delta = a_{k*+1}`` (the largest dropped magnitude, 0 when all are kept). Within a run
   of tied magnitudes S_k/sqrt(k) is quasi-convex, so restricting k to the ends of tie runs
   (the cuts a threshold can realize) loses nothing.
2. alpha = mean_{mask}|w| -- the least-squares scale for the mask (argmin ||w - alpha t||).
3. Regularizer ``R = sum_layers mean_filters (1 - cos(w, t))`` (mask held fixed), added to
   the task loss with ``reg_weight``: it pulls dropped weights toward 0 and kept ones toward
   a common magnitude, i.e. toward their ternary direction, which is what makes the STE's
   forward/backward mismatch small.
4. Hypersphere: after every optimizer step each ternary filter is projected back onto a
   sphere of fixed radius (its norm when ``prepare_ternary`` ran). Cosine, the mask and the
   alpha/||w|| ratio are scale-free, so this only fixes the effective learning rate
   (lr/r^2) instead of letting it decay as weight norms grow; a fixed radius (not 1) keeps
   layers without a following BatchNorm at their original output scale.
5. Pruning + reinitialization, at ``prune_events`` steps spread over
   [prune_start, prune_end] x total steps: (a) pruning: if ``prune_target`` > 0, the
   smallest weights *on the unit sphere* (|w| / ||w_filter||) are zeroed permanently, by
   one global threshold over all ternary layers (each capped at ``max_layer_sparsity``),
   until a cubic ramp towards ``prune_target`` is reached; at least one weight per filter
   survives. On the unit sphere the entries of wide filters are individually smaller, so
   the global cut prunes wide (redundant) layers harder. Optionally
   (``freeze_ternary_zeros``) the current ternary zeros are made permanent too.
   (b) reinitialization, once, after the last pruning event (earlier, it would erase the
   magnitude ranking the next pruning event needs): the surviving weights are reset
   towards their ternary value,
   ``w <- (1 - rho) w + rho * alpha * sign(w)`` (``reinit`` = rho), then projected back
   onto the filter's sphere, so right after the event cos(w, t) = 1 (for rho = 1) and the
   STE starts unbiased. The ternary codes do not change at the event; alpha grows by
   1/cos(w, t) (a per-channel gain that a following BatchNorm absorbs). If an optimizer is
   attached (``QuantState.optimizer``), its state (momentum) for the layer is cleared.
6. Re-scaled gradient (option ``rescaled_grad``): the STE gradient is multiplied by the
   derivative of a temperature sigmoid around +-delta, i.e. of the soft ternarizer
   ``T(w) = sigmoid((w - delta)/tau) + sigmoid((w + delta)/tau) - 1``:
   ``r(w) = sigmoid'((|w| - delta)/tau) + sigmoid'((|w| + delta)/tau)`` with
   ``tau = temperature * delta``, normalized to mean 1 over each filter's unpruned weights
   (so the total gradient budget equals the plain STE's; it is redistributed towards the
   weights that can still flip).

TWN gets the same STE, activation quantization, 8-bit first/last layers and, when
``prune_target`` > 0, plain magnitude pruning (|w|, same scope and schedule; no sphere,
no regularizer, no reinitialization), so an ablation compares like with like.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.quant.activations import ActQuant

Method = Literal["hq", "twn"]
# set by pruning on frozen structural convs (edgeprune.prune.structural.FIXED); other Conv2d
# subclasses (custom padding etc.) are left in float: swapping them would drop their forward
FIXED_MARKER = "_edgeprune_fixed"
INT8_QMAX = 127  # symmetric int8 weights in [-127, 127] (no -128: VNNI-safe, symmetric)


# --------------------------------------------------------------------------- config


@dataclass
class TernaryConfig:
    """What to quantize and how; every default is this project's choice (docs/ternary.md).

    method: "hq" (hyperspherical reconstruction) or "twn" (0.7 * mean|w| baseline).
    keep_first_last_8bit: the first Conv (registration order) and the last Conv/Linear
        (the classifier) stay at int8 per-channel instead of ternary (common practice: they
        hold few weights and are the most sensitive).
    exclude: module names left in fp32 (not quantized, activations included).
    int8_layers: module names forced to int8 (in addition to first/last).
    depthwise_8bit: depthwise convs (groups == in_channels, 9 weights per filter) stay int8:
        a 3x3 ternary filter has only 3^9 shapes and loses too much.
    quantize_activations: 8-bit activations at every quantized layer's input (needed
        for integer kernels on the targets); off gives weight-only fake quantization.
    activation_dtype: "uint8" (asymmetric; ONNX Runtime's and OpenVINO's fast path) or
        "int8" (symmetric, zero point 0: what TensorRT / Jetson require).
    twn_factor: TWN's threshold factor (delta = twn_factor * mean|w|).
    reg_weight: HQ cosine-distance regularizer weight (0 disables it).
    hyperspherical: HQ projection of each ternary filter back to its fixed-radius sphere.
    rescaled_grad / temperature: HQ re-scaled STE gradient, tau = temperature * delta.
    prune_target: fraction of the ternary weights forced to zero by pruning (0 = only the
        zeros the ternarizer chooses). ~0.8 is what a >= 30x packed ResNet-20 needs.
    prune_scope / max_layer_sparsity: "global" (one threshold over all ternary layers,
        each layer capped at max_layer_sparsity) or "layer" (same sparsity everywhere).
    prune_score: HQ ranks weights by "sphere" magnitude |w| / ||w_filter|| (default) or
        plain "magnitude" |w| (what TWN always uses).
    prune_start / prune_end / prune_events: pruning events, evenly spaced between these
        fractions of the total steps; the sparsity follows a cubic ramp
        s_k = target * (1 - (1 - k/K)^3) (Zhu & Gupta 2017). With prune_target 0 and
        freeze_ternary_zeros off there are no events.
    freeze_ternary_zeros: HQ prune events also make the current ternary zeros permanent
        (off by default: in the ablation, freezing the zero pattern early cost accuracy).
    reinit: HQ reinitialization strength rho in [0, 1], applied once after the last
        pruning event (0 disables it).
    """

    method: Method = "hq"
    keep_first_last_8bit: bool = True
    exclude: tuple[str, ...] = ()
    int8_layers: tuple[str, ...] = ()
    depthwise_8bit: bool = True
    quantize_activations: bool = True
    activation_dtype: Literal["uint8", "int8"] = "uint8"
    twn_factor: float = 0.7
    reg_weight: float = 1e-3
    hyperspherical: bool = True
    rescaled_grad: bool = False
    temperature: float = 0.5
    prune_target: float = 0.0
    prune_scope: Literal["global", "layer"] = "global"
    prune_score: Literal["magnitude", "sphere"] = "sphere"
    max_layer_sparsity: float = 0.95
    prune_start: float = 0.25
    prune_end: float = 0.75
    prune_events: int = 3
    freeze_ternary_zeros: bool = False
    reinit: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in ("hq", "twn"):
            raise ValueError(f"TernaryConfig.method must be 'hq' or 'twn', got {self.method!r}")
        if not 0.0 <= self.prune_target < 1.0:
            raise ValueError(f"prune_target must be in [0, 1), got {self.prune_target}")
        if self.activation_dtype not in ("uint8", "int8"):
            raise ValueError(f"activation_dtype must be 'uint8' or 'int8', "
                             f"got {self.activation_dtype!r}")
        if self.prune_score not in ("magnitude", "sphere"):
            raise ValueError(f"prune_score must be 'magnitude' or 'sphere', "
                             f"got {self.prune_score!r}")
        if self.prune_scope not in ("global", "layer"):
            raise ValueError(f"prune_scope must be 'global' or 'layer', got {self.prune_scope!r}")
        if not 0.0 <= self.prune_start <= self.prune_end <= 1.0:
            raise ValueError("need 0 <= prune_start <= prune_end <= 1")
        if not 0.0 <= self.reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {self.reinit}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.exclude = tuple(self.exclude)
        self.int8_layers = tuple(self.int8_layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for reports and the packed artifact's metadata)."""
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        d["int8_layers"] = list(self.int8_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TernaryConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error, so typos surface)."""
        return cls(**{**d, "exclude": tuple(d.get("exclude", ())),
                      "int8_layers": tuple(d.get("int8_layers", ()))})


# --------------------------------------------------------------------------- thresholds


def hq_threshold(w2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the threshold maximizing cos(w, sign(w) * (|w| > delta)); exact.

    Returns (delta [C], mask [C, n] bool). An all-zero row gets delta 0 and an empty mask.
    """
    a = w2d.detach().abs()
    n = a.shape[1]
    srt, _ = torch.sort(a, dim=1, descending=True)
    nxt = torch.cat([srt[:, 1:], torch.zeros_like(srt[:, :1])], dim=1)
    k = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    score = srt.cumsum(1) / k.sqrt()
    valid = srt > nxt  # a threshold can only cut between distinct magnitudes
    score = torch.where(valid, score, torch.full_like(score, -math.inf))
    best = score.argmax(1, keepdim=True)
    delta = nxt.gather(1, best).squeeze(1)
    return delta, a > delta[:, None]


def twn_threshold(w2d: torch.Tensor, factor: float = 0.7,
                  valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: delta = factor * mean|w| per row (mean over ``valid`` = unpruned entries)."""
    a = w2d.detach().abs()
    mean = a.mean(1) if valid is None else (a * valid).sum(1) / valid.sum(1).clamp(min=1)
    delta = factor * mean
    return delta, a > delta[:, None]


def ternary_alpha(w2d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Least-squares scale for a fixed mask: alpha = mean_{mask}|w| (0 for empty masks)."""
    a = w2d.detach().abs()
    return (a * mask).sum(1) / mask.sum(1).clamp(min=1)


def cosine_to_ternary(w2d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """cos(w, sign(w) * mask) per row, differentiable in w (mask treated as constant)."""
    kept = (w2d.abs() * mask).sum(1)
    norm = w2d.norm(dim=1).clamp(min=1e-12)
    return kept / (norm * mask.sum(1).clamp(min=1).to(w2d.dtype).sqrt())


def rescale_factor(w2d: torch.Tensor, delta: torch.Tensor, temperature: float,
                   valid: torch.Tensor) -> torch.Tensor:
    """HQ re-scaled gradient factor: derivative of the temperature-sigmoid ternarizer,
    normalized to mean 1 over each row's valid (unpruned) entries."""
    a = w2d.detach().abs()
    mean_abs = (a * valid).sum(1) / valid.sum(1).clamp(min=1)
    tau = (temperature * torch.where(delta > 0, delta, mean_abs)).clamp(min=1e-12)[:, None]

    def dsig(z: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)

    r = (dsig((a - delta[:, None]) / tau) + dsig((a + delta[:, None]) / tau)) * valid
    mean_r = r.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
    return r / mean_r.clamp(min=1e-12)


# --------------------------------------------------------------------------- modules


class _QuantLayer:
    """Shared behaviour of the quantized Conv2d/Linear wrappers (mixin)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    act: ActQuant | None
    kind: str  # "ternary" | "int8"

    def _init_quant(self, config: TernaryConfig) -> None:
        signed = config.activation_dtype == "int8"
        self.act = (ActQuant(signed).to(self.weight.device) if config.quantize_activations
                    else None)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) if self.act is not None else x


class _TernaryMixin(_QuantLayer):
    """Latent FP weights + per-filter ternarization with an STE."""

    kind = "ternary"
    prune_mask: torch.Tensor
    radius: torch.Tensor

    def _init_ternary(self, config: TernaryConfig) -> None:
        self.method: Method = config.method
        self.twn_factor = config.twn_factor
        self.rescaled_grad = config.rescaled_grad and config.method == "hq"
        self.temperature = config.temperature
        w = self.weight.detach()
        self.register_buffer("prune_mask", torch.ones_like(w, dtype=torch.bool))
        self.register_buffer("radius", w.reshape(w.shape[0], -1).norm(dim=1).clone())
        self._last_mask: torch.Tensor | None = None

    def ternary_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(delta [C], mask [C, n] bool, alpha [C]) for the current latent weights."""
        w2d = (self.weight * self.prune_mask).reshape(self.weight.shape[0], -1)
        valid = self.prune_mask.reshape(w2d.shape)
        if self.method == "hq":
            delta, mask = hq_threshold(w2d)
        else:
            delta, mask = twn_threshold(w2d, self.twn_factor, valid)
        mask = mask & valid
        return delta, mask, ternary_alpha(w2d, mask)

    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer ternary codes (int8 in {-1, 0, 1}, weight shape) and alpha [C]."""
        with torch.no_grad():
            _, mask, alpha = self.ternary_params()
            w2d = self.weight.reshape(mask.shape)
            q = (torch.sign(w2d) * mask).to(torch.int8).reshape(self.weight.shape)
        return q, alpha.detach().clone()

    def quantized_weight(self) -> torch.Tensor:
        """alpha * {-1, 0, 1} in the forward; STE (optionally re-scaled) in the backward."""
        shape = self.weight.shape
        valid = self.prune_mask.reshape(shape[0], -1)
        w2d = self.weight.reshape(shape[0], -1)
        delta, mask, alpha = self.ternary_params()
        self._last_mask = mask
        t = alpha[:, None] * torch.sign(w2d.detach()) * mask
        g = valid.to(w2d.dtype)
        if self.rescaled_grad and self.training:
            g = rescale_factor(w2d, delta, self.temperature, valid)
        return (t + g * (w2d - w2d.detach())).reshape(shape)

    def cosine(self) -> torch.Tensor:
        """Per-filter cos(w, t) with the mask of the last forward (differentiable)."""
        w2d = self.weight.reshape(self.weight.shape[0], -1)
        mask = self._last_mask
        if mask is None or mask.shape != w2d.shape:
            _, mask, _ = self.ternary_params()
        return cosine_to_ternary(w2d, mask)


class _Int8Mixin(_QuantLayer):
    """Symmetric per-output-channel int8 weights (first/last layers by default)."""

    kind = "int8"

    def weight_scale(self) -> torch.Tensor:
        w2d = self.weight.detach().reshape(self.weight.shape[0], -1)
        return (w2d.abs().amax(1) / INT8_QMAX).clamp(min=1e-12)

    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes (int8 in [-127, 127]) and per-channel scale [C]."""
        with torch.no_grad():
            s = self.weight_scale()
            view = (-1,) + (1,) * (self.weight.dim() - 1)
            q = torch.clamp(torch.round(self.weight / s.view(view)), -INT8_QMAX, INT8_QMAX)
        return q.to(torch.int8), s.clone()

    def quantized_weight(self) -> torch.Tensor:
        s = self.weight_scale()
        view = (-1,) + (1,) * (self.weight.dim() - 1)
        q = torch.clamp(torch.round(self.weight / s.view(view)), -INT8_QMAX, INT8_QMAX)
        wq = (q * s.view(view)).detach()
        return wq + (self.weight - self.weight.detach())


def _conv_args(conv: nn.Conv2d) -> dict[str, Any]:
    return {
        "in_channels": conv.in_channels, "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
        "dilation": conv.dilation, "groups": conv.groups, "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }


def _adopt(dst: nn.Module, src: nn.Module) -> None:
    """Reuse the source's Parameter objects (an optimizer built before the swap still
    updates them, and the wrapper is built on the meta device: no wasted init) and keep
    its device and train/eval mode; new buffers (activation quantizer) follow the device."""
    dst.weight = src.weight
    dst.bias = src.bias
    dst.train(src.training)
    if getattr(src, FIXED_MARKER, False):  # stays frozen and never ranked
        setattr(dst, FIXED_MARKER, True)


class TernaryConv2d(_TernaryMixin, nn.Conv2d):
    """Conv2d with ternary weights (latent FP weights, STE) and a uint8 input quantizer.

    BatchNorm stays a separate module during training (it is folded into alpha at export:
    per-channel scaling keeps the ternary structure exactly)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: TernaryConfig) -> TernaryConv2d:
        m = cls(**_conv_args(conv), device="meta", dtype=conv.weight.dtype)
        _adopt(m, conv)
        m._init_quant(config)
        m._init_ternary(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._input(x), self.quantized_weight(), self.bias)


class TernaryLinear(_TernaryMixin, nn.Linear):
    """Linear with ternary weights (rows = output channels) and a uint8 input quantizer."""

    @classmethod
    def from_float(cls, lin: nn.Linear, config: TernaryConfig) -> TernaryLinear:
        m = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta",
                dtype=lin.weight.dtype)
        _adopt(m, lin)
        m._init_quant(config)
        m._init_ternary(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.quantized_weight(), self.bias)


class Int8Conv2d(_Int8Mixin, nn.Conv2d):
    """Conv2d with per-channel symmetric int8 weights and a uint8 input quantizer."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: TernaryConfig) -> Int8Conv2d:
        m = cls(**_conv_args(conv), device="meta", dtype=conv.weight.dtype)
        _adopt(m, conv)
        m._init_quant(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._input(x), self.quantized_weight(), self.bias)


class Int8Linear(_Int8Mixin, nn.Linear):
    """Linear with per-channel symmetric int8 weights and a uint8 input quantizer."""

    @classmethod
    def from_float(cls, lin: nn.Linear, config: TernaryConfig) -> Int8Linear:
        m = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta",
                dtype=lin.weight.dtype)
        _adopt(m, lin)
        m._init_quant(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.quantized_weight(), self.bias)


QUANT_LAYERS = (TernaryConv2d, TernaryLinear, Int8Conv2d, Int8Linear)
TERNARY_LAYERS = (TernaryConv2d, TernaryLinear)


# --------------------------------------------------------------------------- prepare


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def plan_precisions(model: nn.Module, config: TernaryConfig) -> dict[str, str]:
    """Layer name -> "ternary" | "int8" | "fp32" for every Conv2d/Linear, before swapping.

    First/last are by registration order (for the zoo models and most hand-written nets
    this is execution order: stem first, classifier last); name them in ``int8_layers`` or
    ``exclude`` when a model registers modules in another order."""
    names = [n for n, m in model.named_modules()
             if type(m) in (nn.Conv2d, nn.Linear) or isinstance(m, QUANT_LAYERS)
             or (isinstance(m, nn.Conv2d) and getattr(m, FIXED_MARKER, False))]
    unknown = [n for n in (*config.exclude, *config.int8_layers) if n not in names]
    if unknown:
        raise ValueError(f"TernaryConfig names unknown Conv/Linear modules: {unknown}; "
                         f"known: {names}")
    first_conv = next((n for n in names if isinstance(model.get_submodule(n), nn.Conv2d)), None)
    last = names[-1] if names else None
    plan: dict[str, str] = {}
    for n in names:
        m = model.get_submodule(n)
        if n in config.exclude:
            plan[n] = "fp32"
        elif getattr(m, FIXED_MARKER, False) and not isinstance(m, TERNARY_LAYERS):
            # a frozen structural conv (pruning's option-A shortcut selection, weights 0/1):
            # exact at int8, and keeps the whole graph on integer kernels
            plan[n] = "int8"
        elif (n in config.int8_layers
              or (config.keep_first_last_8bit and n in (first_conv, last))
              or (config.depthwise_8bit and isinstance(m, nn.Conv2d) and m.groups > 1
                  and m.groups == m.in_channels)):
            plan[n] = "int8"
        else:
            plan[n] = "ternary"
    return plan


def prepare_ternary(model: nn.Module, config: TernaryConfig | None = None) -> QuantState:
    """Swap Conv2d/Linear modules for quantized wrappers in place; return the hooks object.

    Parameters are reused (not copied). Activation quantizers start "off": call
    ``calibrate(model, batches)`` before QAT so the forward quantizes activations too.
    """
    config = config or TernaryConfig()
    plan = plan_precisions(model, config)
    for name, kind in plan.items():
        m = model.get_submodule(name)
        if isinstance(m, QUANT_LAYERS) or kind == "fp32":
            continue
        conv = isinstance(m, nn.Conv2d)
        if kind == "ternary":
            new: nn.Module = (TernaryConv2d if conv else TernaryLinear).from_float(m, config)
        else:
            new = (Int8Conv2d if conv else Int8Linear).from_float(m, config)
        _set_submodule(model, name, new)
    return QuantState(config, plan)


# --------------------------------------------------------------------------- hooks


@dataclass
class QuantState:
    """Hooks the shared training loop calls, plus the layer plan.

    loss = task_loss + state.extra_loss(model); after optimizer.step():
    state.after_step(model, step, total_steps) with step = optimizer steps done so far
    (1-based) -- events are triggered when ``step`` passes them, so any monotone counter
    works and a last call with step >= total_steps runs whatever is left.
    """

    config: TernaryConfig
    plan: dict[str, str]
    optimizer: torch.optim.Optimizer | None = None  # optional: reinit clears its momentum
    events_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    # -- loss hook
    def extra_loss(self, model: nn.Module) -> torch.Tensor:
        """HQ: reg_weight * sum over ternary layers of mean_filters (1 - cos(w, t)).
        TWN (or reg_weight 0): a zero scalar on the model's device."""
        layers = _ternary_layers(model)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if self.config.method != "hq" or self.config.reg_weight == 0 or not layers:
            return torch.zeros((), device=device)
        total = sum((1 - m.cosine()).mean() for _, m in layers)
        return self.config.reg_weight * total

    # -- step hook
    def event_steps(self, total_steps: int) -> list[int]:
        """Optimizer steps at which prune (+ reinit) events fire."""
        c = self.config
        active = c.prune_target > 0 or (c.method == "hq" and c.freeze_ternary_zeros)
        if not active or c.prune_events <= 0 or total_steps <= 0:
            return []
        if c.prune_events == 1:
            fracs = [c.prune_start]
        else:
            fracs = [c.prune_start + (c.prune_end - c.prune_start) * i / (c.prune_events - 1)
                     for i in range(c.prune_events)]
        return [max(1, round(f * total_steps)) for f in fracs]

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Keep pruned weights at 0, run due prune/reinit events, project HQ filters back
        onto their spheres."""
        layers = _ternary_layers(model)
        for _, m in layers:
            m.weight.mul_(m.prune_mask)
        events = self.event_steps(total_steps)
        while self.events_done < len(events) and step >= events[self.events_done]:
            self.events_done += 1
            k, n_events = self.events_done, len(events)
            sparsity = self.config.prune_target * (1 - (1 - k / n_events) ** 3)
            self.history.append(self._prune_event(layers, step, sparsity, k == n_events))
        if self.config.method == "hq" and self.config.hyperspherical:
            for _, m in layers:
                _project(m)

    def _prune_event(self, layers: list[tuple[str, _TernaryMixin]], step: int,
                     sparsity: float, final: bool) -> dict[str, Any]:
        hq = self.config.method == "hq"
        keeps = _prune_masks(layers, sparsity, hq, self.config) if sparsity > 0 else {}
        for name, m in layers:
            w2d = m.weight.reshape(m.weight.shape[0], -1)
            keep = m.prune_mask.reshape(w2d.shape).clone()
            if name in keeps:
                keep &= keeps[name]
            if hq and self.config.freeze_ternary_zeros:
                _, tmask, _ = m.ternary_params()
                keep &= tmask
            # never kill a filter by pruning: keep its largest surviving weight
            empty = ~keep.any(1)
            if empty.any():
                cand = torch.where(m.prune_mask.reshape(w2d.shape), w2d.abs(),
                                   torch.full_like(w2d, -1.0))
                idx = cand.argmax(1)
                keep[empty, idx[empty]] = True
            m.prune_mask.copy_(keep.reshape(m.weight.shape))
            m.weight.mul_(m.prune_mask)
            if hq and self.config.reinit > 0 and final:
                _, tmask, alpha = m.ternary_params()
                w2d = m.weight.reshape(tmask.shape)
                target = alpha[:, None] * torch.sign(w2d)
                rho = self.config.reinit
                w2d.copy_(torch.where(tmask, (1 - rho) * w2d + rho * target, w2d))
                if self.config.hyperspherical:
                    _project(m)  # back onto the (fixed) sphere: same direction, same radius
                self._reset_optimizer_state(m.weight)
        zeros = sum(int((m.codes()[0] == 0).sum()) for _, m in layers)
        total = sum(m.weight.numel() for _, m in layers)
        return {"step": step, "target_sparsity": sparsity,
                "ternary_zero_fraction": zeros / max(total, 1)}

    def _reset_optimizer_state(self, param: torch.Tensor) -> None:
        if self.optimizer is not None and param in self.optimizer.state:
            self.optimizer.state[param] = {}

    # -- report
    def precision_table(self, model: nn.Module) -> list[dict[str, Any]]:
        """Per-layer precision and statistics (see :func:`precision_table`)."""
        return precision_table(model)


def _ternary_layers(model: nn.Module) -> list[tuple[str, _TernaryMixin]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TERNARY_LAYERS)]


def _prune_masks(layers: list[tuple[str, _TernaryMixin]], sparsity: float, hq: bool,
                 config: TernaryConfig) -> dict[str, torch.Tensor]:
    """Keep masks [C, n] reaching ``sparsity`` zeros over the ternary layers.

    Scores are |w| (TWN) or |w| / ||w_filter|| -- magnitudes on the unit sphere (HQ). With
    ``prune_scope="global"`` one threshold is shared by all layers (so wide filters, whose
    unit-sphere entries are individually smaller, and redundant layers lose more), then any
    layer above ``max_layer_sparsity`` keeps its best (1 - max_layer_sparsity); with
    "layer" every layer gets the same sparsity. Already-pruned weights score 0."""
    scores: dict[str, torch.Tensor] = {}
    for name, m in layers:
        w2d = m.weight.detach().reshape(m.weight.shape[0], -1)
        mag = w2d.abs()
        if hq and config.prune_score == "sphere":
            mag = mag / w2d.norm(dim=1, keepdim=True).clamp(min=1e-12)
        scores[name] = mag * m.prune_mask.reshape(mag.shape)
    if config.prune_scope == "layer":
        return {n: _topk_keep(sc, sparsity) for n, sc in scores.items()}
    flat = torch.cat([sc.flatten() for sc in scores.values()])
    n_prune = round(sparsity * flat.numel())
    if n_prune <= 0:
        return {}
    thr = torch.kthvalue(flat, min(n_prune, flat.numel())).values
    keeps = {}
    for n, sc in scores.items():
        keep = sc > thr
        if 1 - float(keep.float().mean()) > config.max_layer_sparsity:
            keep = _topk_keep(sc, config.max_layer_sparsity)
        keeps[n] = keep
    return keeps


def _topk_keep(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest (1 - sparsity) fraction of one layer's scores (ties kept)."""
    n_prune = round(sparsity * score.numel())
    if n_prune <= 0:
        return torch.ones_like(score, dtype=torch.bool)
    thr = torch.kthvalue(score.flatten(), min(n_prune, score.numel())).values
    return score > thr


def _project(m: _TernaryMixin) -> None:
    """Scale each filter back to its sphere radius (the norm at prepare time)."""
    w2d = m.weight.reshape(m.weight.shape[0], -1)
    norm = w2d.norm(dim=1)
    ok = norm > 0
    factor = torch.where(ok, m.radius / norm.clamp(min=1e-12), torch.ones_like(norm))
    w2d.mul_(factor[:, None])


# --------------------------------------------------------------------------- report


def precision_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per Conv/Linear: name, precision ("ternary" | "int8" | "fp32"), weights,
    kept/zero fractions, alpha (scale) stats and, for ternary layers, the mean cos(w, t)
    and the fraction pruned permanently."""
    rows: list[dict[str, Any]] = []
    for name, m in model.named_modules():
        if isinstance(m, TERNARY_LAYERS):
            with torch.no_grad():
                q, alpha = m.codes()
                w2d = m.weight.reshape(m.weight.shape[0], -1)
                cos = cosine_to_ternary(w2d, (q != 0).reshape(w2d.shape))
            zero = float((q == 0).float().mean())
            rows.append({
                "layer": name, "precision": "ternary", "type": type(m).__name__,
                "shape": list(m.weight.shape), "weights": m.weight.numel(),
                "zero_fraction": zero, "kept_fraction": 1 - zero,
                "pruned_fraction": float((~m.prune_mask).float().mean()),
                "alpha": _stats(alpha), "cos_mean": float(cos.mean()),
                "act_quant": m.act is not None,
            })
        elif isinstance(m, QUANT_LAYERS):
            q, scale = m.codes()
            zero = float((q == 0).float().mean())
            rows.append({
                "layer": name, "precision": "int8", "type": type(m).__name__,
                "shape": list(m.weight.shape), "weights": m.weight.numel(),
                "zero_fraction": zero, "kept_fraction": 1 - zero, "alpha": _stats(scale),
                "act_quant": m.act is not None,
            })
        elif type(m) in (nn.Conv2d, nn.Linear):
            rows.append({
                "layer": name, "precision": "fp32", "type": type(m).__name__,
                "shape": list(m.weight.shape), "weights": m.weight.numel(),
                "zero_fraction": float((m.weight == 0).float().mean()),
                "kept_fraction": float((m.weight != 0).float().mean()), "act_quant": False,
            })
    return rows


def _stats(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().float()
    return {"mean": float(x.mean()), "min": float(x.min()), "max": float(x.max())}


def ternary_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over a precision table: weights per precision and the ternary zero fraction."""
    rows = list(rows)
    by: dict[str, int] = {}
    for r in rows:
        by[r["precision"]] = by.get(r["precision"], 0) + r["weights"]
    tern = [r for r in rows if r["precision"] == "ternary"]
    tw = sum(r["weights"] for r in tern)
    return {
        "layers_by_precision": {p: sum(1 for r in rows if r["precision"] == p)
                                for p in sorted({r["precision"] for r in rows})},
        "weights_by_precision": by,
        "ternary_zero_fraction": (sum(r["zero_fraction"] * r["weights"] for r in tern) / tw
                                  if tw else 0.0),
        "ternary_cos_mean": (sum(r["cos_mean"] * r["weights"] for r in tern) / tw
                             if tw else 0.0),
    }
