"""8-bit activation fake quantization with min/max calibration.

Every quantized Conv/Linear owns an ``ActQuant`` on its *input*: that is where OpenVINO
(FakeQuantize before a Convolution) and ONNX Runtime (DequantizeLinear feeding a Conv)
need an activation quantizer to pick an integer kernel. Activations are **uint8**,
per-tensor: ONNX Runtime's fast MLAS kernels are u8 activations x s8 weights, and
OpenVINO's CPU plugin takes u8 activations natively. A post-ReLU input (observed min >= 0)
gets zero point 0, so the full 0..255 range covers [0, max]; an input that can be negative
(the normalized image, a linear bottleneck) gets an asymmetric range with a zero point.

TensorRT (and so Jetson) only runs symmetric, signed Q/DQ: ``ActQuant(signed=True)`` gives
int8 activations with zero point 0 and scale max|x|/127 (``TernaryConfig.activation_dtype``
= "int8"); that costs a post-ReLU input one bit of resolution, which is what TensorRT's own
INT8 does too.

Ranges come from min/max over the calibration batches (the same statistic NNCF and the
project's ONNX Runtime backend use); they are frozen afterwards, both during QAT (the
straight-through estimator of ``torch.fake_quantize_per_tensor_affine`` passes gradients
inside the range) and at export.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

QMIN, QMAX = 0, 255  # uint8 activations
SQMIN, SQMAX = -128, 127  # int8 (symmetric, zero point 0) activations


def qrange(signed: bool) -> tuple[int, int]:
    """Integer range of an activation quantizer."""
    return (SQMIN, SQMAX) if signed else (QMIN, QMAX)


class ActQuant(nn.Module):
    """Per-tensor uint8 (or symmetric int8) fake quantizer with a min/max observer.

    Modes: ``"off"`` (identity; the state right after ``prepare_ternary``), ``"observe"``
    (identity while recording min/max; used by :func:`calibrate`) and ``"quant"``
    (fake-quantize with the frozen scale / zero point).
    """

    def __init__(self, signed: bool = False) -> None:
        super().__init__()
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("calibrated", torch.tensor(False))
        self.register_buffer("signed", torch.tensor(bool(signed)))
        self.mode = "off"

    def reset(self) -> None:
        """Forget the observed range (before a new calibration pass)."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self.calibrated.fill_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            with torch.no_grad():
                self.min_val.copy_(torch.minimum(self.min_val, x.detach().min()))
                self.max_val.copy_(torch.maximum(self.max_val, x.detach().max()))
            return x
        if self.mode == "quant":
            lo, hi = qrange(bool(self.signed))
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, lo, hi)
        return x

    def compute_qparams(self) -> None:
        """Derive scale / zero point from the observed range (range always includes 0)."""
        lo = min(float(self.min_val), 0.0)
        hi = max(float(self.max_val), 0.0)
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise RuntimeError("activation quantizer saw no data: run calibrate() first")
        if bool(self.signed):  # symmetric int8: zero point 0, range [-max|x|, max|x|]
            scale, zp = max(abs(lo), hi, 1e-8) / SQMAX, 0
        elif lo == 0.0:  # non-negative input (post-ReLU): zero point 0, full range on [0, hi]
            scale, zp = max(hi, 1e-8) / (QMAX - QMIN), 0
        else:
            scale = max(hi - lo, 1e-8) / (QMAX - QMIN)
            zp = int(np.clip(round(-lo / scale), QMIN, QMAX))
        # store the float32 value: export and PyTorch must agree on the exact scale
        self.scale.fill_(float(np.float32(scale)))
        self.zero_point.fill_(zp)
        self.calibrated.fill_(True)

    def qparams(self) -> tuple[float, int, bool]:
        """(scale, zero_point, signed) as Python values (the export bakes them in)."""
        if not bool(self.calibrated):
            raise RuntimeError("activation quantizer is not calibrated: run calibrate() first")
        return float(self.scale), int(self.zero_point), bool(self.signed)

    def extra_repr(self) -> str:
        dtype = "int8" if bool(self.signed) else "uint8"
        if bool(self.calibrated):
            return f"{dtype}, scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}"
        return f"{dtype}, uncalibrated"


def act_quantizers(model: nn.Module) -> list[tuple[str, ActQuant]]:
    """All activation quantizers in the model, by qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuant)]


def set_act_mode(model: nn.Module, mode: str) -> None:
    """Switch every activation quantizer to "off", "observe" or "quant"."""
    if mode not in ("off", "observe", "quant"):
        raise ValueError(f"unknown activation quantizer mode {mode!r}")
    for _, q in act_quantizers(model):
        q.mode = mode


def set_calibrated_modes(model: nn.Module) -> None:
    """After loading a saved state: quantize where a range was calibrated, else pass
    through (the mode is not part of the state_dict)."""
    for _, q in act_quantizers(model):
        q.mode = "quant" if bool(q.calibrated) else "off"


def calibrate(model: nn.Module, batches: Iterable[np.ndarray | torch.Tensor],
              max_batches: int | None = None) -> dict[str, Any]:
    """Set every activation range from min/max over calibration batches, then enable
    fake quantization.

    The model runs in eval mode (BatchNorm uses its running statistics, as at deploy) with
    the weight quantizers active, so the ranges are those of the ternary network. Call it
    after ``prepare_ternary`` (before QAT) and again after training (weights moved).
    """
    quantizers = act_quantizers(model)
    if not quantizers:
        return {"samples": 0, "quantizers": 0}
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for _, q in quantizers:
        q.reset()
    set_act_mode(model, "observe")
    samples = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = torch.as_tensor(np.asarray(batch, dtype=np.float32)) if not isinstance(
                    batch, torch.Tensor) else batch.float()
                model(x.to(device))
                samples += len(x)
        if samples == 0:
            raise ValueError("calibrate() got no calibration batches")
        for _, q in quantizers:
            q.compute_qparams()
    finally:
        set_act_mode(model, "quant" if samples else "off")
        model.train(was_training)
    return {
        "samples": samples,
        "quantizers": len(quantizers),
        "signed_inputs": sum(1 for _, q in quantizers if int(q.zero_point) != 0),
        "ranges": {n: [float(q.min_val), float(q.max_val)] for n, q in quantizers},
    }
