"""The deployed form of a ternary/int8 model: integer weights, folded BatchNorm, Q/DQ ops.

``to_deploy(model)`` returns a copy in which every quantized Conv/Linear is a
``QConv2d``/``QLinear`` holding exactly the tensors the Q/DQ ONNX holds:

- ``weight_int8``: int8 codes ({-1, 0, 1} for ternary layers, [-127, 127] for int8 ones),
- ``weight_scale``: float32 per output channel (positive),
- ``bias_int32``: int32 bias at scale ``act_scale * weight_scale`` (ONNX Runtime only fuses
  DQ -> Conv -> Q into QLinearConv when the bias is an int32 DequantizeLinear),
- ``act_scale`` / ``act_zero_point`` / ``act_signed``: the input quantizer (uint8, or
  symmetric int8 for TensorRT).

Its forward uses ``torch.ops.quantized_decomposed`` ops, which the dynamo exporter turns
into QuantizeLinear/DequantizeLinear with int8/int32 initializers, so this module is both
the PyTorch reference for the parity check and the thing that is exported.

BatchNorm folding (this project's choice): BN stays live during QAT (ordinary BN
dynamics, nothing special for the shared loop) and is folded here. A BN right after a
conv is a per-output-channel affine map y = f_c * conv + b_c, and
``f_c * alpha_c * {-1, 0, 1} = |f_c| alpha_c * sign(f_c) {-1, 0, 1}``: folding changes the
per-channel scale (and maybe the code signs), never the ternary structure, so it is exact.
If BN were left unfolded in the graph, the runtimes would fold it themselves; with the
weights behind a DequantizeLinear they keep the int8 codes (see docs/ternary.md for what
each runtime does), but folding here makes the exported graph the one that runs.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.ao.quantization.fx._decomposed  # registers torch.ops.quantized_decomposed
import torch.nn.functional as F
from torch import fx, nn

from edgeprune.quant.activations import qrange
from edgeprune.quant.ternary import QUANT_LAYERS, TERNARY_LAYERS

_qd = torch.ops.quantized_decomposed
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class _Tracer(fx.Tracer):
    """Treat quantized wrappers as leaves (their forward sorts weights: nothing to trace)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QUANT_LAYERS) or super().is_leaf_module(m, qualname)


def find_conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str]:
    """(quantized conv name, BatchNorm2d name) pairs where the BN consumes only the conv's
    output and the conv output feeds only that BN; plus a note ("" or why none)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # untraceable model: export keeps BN as float ops
        return [], f"BN folding skipped: torch.fx could not trace the model ({exc})"
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        mod = model.get_submodule(node.target)
        if not isinstance(mod, QUANT_LAYERS) or not isinstance(mod, nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        bn = model.get_submodule(users[0].target)
        if isinstance(bn, nn.BatchNorm2d) and users[0].args[0] is node and bn.track_running_stats:
            pairs.append((str(node.target), str(users[0].target)))
    return pairs, ""


class _QBase(nn.Module):
    """Integer weights + uint8 (or int8) input Q/DQ; subclasses supply the float op."""

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias_int32: torch.Tensor | None
    act_scale: torch.Tensor
    act_zero_point: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias_int32: torch.Tensor | None,
                 act: tuple[float, int, bool] | None, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale.to(torch.float32).contiguous())
        self.register_buffer("bias_int32", None if bias_int32 is None
                             else bias_int32.to(torch.int32).contiguous())
        self.register_buffer("act_scale", torch.tensor(act[0] if act else 0.0))
        self.register_buffer("act_zero_point", torch.tensor(act[1] if act else 0,
                                                            dtype=torch.int32))
        self.register_buffer("act_signed", torch.tensor(int(act[2]) if act else 0,
                                                        dtype=torch.int8))
        self.register_buffer("_zp", torch.zeros(codes.shape[0], dtype=torch.int64),
                             persistent=False)
        self._sync()

    def _sync(self) -> None:
        """Python copies of the activation qparams: export bakes them in as constants."""
        self._act = (float(self.act_scale), int(self.act_zero_point))
        self._has_act = self._act[0] > 0
        self._signed = bool(int(self.act_signed))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._sync()

    def float_weight(self) -> torch.Tensor:
        return _qd.dequantize_per_channel(self.weight_int8, self.weight_scale, self._zp, 0,
                                          -128, 127, torch.int8)

    def float_bias(self) -> torch.Tensor | None:
        if self.bias_int32 is None:
            return None
        scale = self.weight_scale * self.act_scale if self._has_act else self.weight_scale
        return _qd.dequantize_per_channel(self.bias_int32, scale, self._zp, 0,
                                          INT32_MIN, INT32_MAX, torch.int32)

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self._has_act:
            return x
        s, z = self._act
        lo, hi = qrange(self._signed)
        dtype = torch.int8 if self._signed else torch.uint8
        q = _qd.quantize_per_tensor(x, s, z, lo, hi, dtype)
        return _qd.dequantize_per_tensor(q, s, z, lo, hi, dtype)


class QConv2d(_QBase):
    """Deployed quantized Conv2d (see module docstring)."""

    def __init__(self, conv: nn.Conv2d, codes: torch.Tensor, scale: torch.Tensor,
                 bias_int32: torch.Tensor | None, act: tuple[float, int] | None,
                 kind: str) -> None:
        super().__init__(codes, scale, bias_int32, act, kind)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode {conv.padding_mode!r} is not supported for export")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.quant_input(x), self.float_weight(), self.float_bias(),
                        self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight_int8.shape)}, stride={self.stride}"


class QLinear(_QBase):
    """Deployed quantized Linear (see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quant_input(x), self.float_weight(), self.float_bias())

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight_int8.shape)}"


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = f * x + b (per channel)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    f = gamma / std
    return f.detach(), (beta - bn.running_mean * f).detach()


def _deploy_layer(m: nn.Module, bn: nn.BatchNorm2d | None, require_calibrated: bool
                  ) -> tuple[_QBase, dict[str, Any]]:
    codes, scale = m.codes()
    codes = codes.to(torch.int32)
    bias = m.bias.detach().clone() if m.bias is not None else None
    if bn is not None:
        f, b = _bn_affine(bn)
        bias = (bias * f if bias is not None else torch.zeros_like(f)) + b
        scale = scale * f
    # keep scales positive: move the sign into the codes
    neg = scale < 0
    if neg.any():
        view = (-1,) + (1,) * (codes.dim() - 1)
        codes = torch.where(neg.view(view), -codes, codes)
        scale = scale.abs()
    # a channel with no weights left (all codes 0, or gamma 0) has no meaningful scale;
    # give it the layer's median so its bias is quantized at a sensible granularity
    dead = (scale <= 0) | (codes.reshape(codes.shape[0], -1) == 0).all(1)
    if dead.any():
        live = scale[~dead]
        scale = torch.where(dead, live.median() if live.numel() else torch.tensor(1.0), scale)
    scale = scale.to(torch.float32)
    act: tuple[float, int, bool] | None = None
    if m.act is not None:
        if not bool(m.act.calibrated):
            if require_calibrated:
                raise RuntimeError("activation quantizers are not calibrated: run "
                                   "edgeprune.quant.calibrate(model, batches) before export")
        else:
            act = m.act.qparams()
    bias_int32 = None
    clipped = 0
    if bias is not None:
        bscale = scale * torch.tensor(act[0], dtype=torch.float32) if act else scale
        q = torch.round(bias.to(torch.float32) / bscale)
        clipped = int(((q < INT32_MIN) | (q > INT32_MAX)).sum())
        bias_int32 = q.clamp(INT32_MIN, INT32_MAX).to(torch.int32)
    kind = "ternary" if isinstance(m, TERNARY_LAYERS) else "int8"
    if isinstance(m, nn.Conv2d):
        q_mod: _QBase = QConv2d(m, codes.to(torch.int8), scale, bias_int32, act, kind)
    else:
        q_mod = QLinear(codes.to(torch.int8), scale, bias_int32, act, kind)
    q_mod.to(m.weight.device)
    return q_mod, {"bias_clipped": clipped, "dead_channels": int(dead.sum())}


def to_deploy(model: nn.Module, fold_bn: bool = True,
              require_calibrated: bool = True) -> nn.Module:
    """A deep copy in deployed form (eval mode). The input model is not modified.

    ``require_calibrated=False`` only serves to rebuild the structure before loading a
    packed state (the loaded state carries the real activation parameters)."""
    from edgeprune.quant.ternary import _set_submodule

    deployed = copy.deepcopy(model).eval()
    pairs, note = find_conv_bn_pairs(deployed) if fold_bn else ([], "BN folding disabled")
    bn_of = dict(pairs)
    facts: dict[str, Any] = {"folded_bn": len(pairs), "bn_note": note, "layers": {}}
    for name, m in list(deployed.named_modules()):
        if not isinstance(m, QUANT_LAYERS):
            continue
        bn_name = bn_of.get(name)
        bn = deployed.get_submodule(bn_name) if bn_name else None
        q_mod, info = _deploy_layer(m, bn, require_calibrated)
        _set_submodule(deployed, name, q_mod)
        if bn_name:
            _set_submodule(deployed, bn_name, nn.Identity())
        facts["layers"][name] = {"kind": q_mod.kind, "bn": bn_name, **info}
    deployed.deploy_facts = facts  # type: ignore[assignment]
    return deployed


def deploy_state(deployed: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor that defines the deployed (Q/DQ) model, by state_dict name."""
    return {k: v.detach().cpu() for k, v in deployed.state_dict().items()}


def ternary_tensor_names(deployed: nn.Module) -> list[str]:
    """State names of the int8 weight tensors that hold ternary codes."""
    return [f"{n}.weight_int8" for n, m in deployed.named_modules()
            if isinstance(m, _QBase) and m.kind == "ternary"]
