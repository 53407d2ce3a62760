"""Stage 5: ternary quantization-aware training (HQ or TWN) with 8-bit activations.

The model from the stage before (pruned + recovered, or the original) gets ternary
weights α·{-1, 0, +1} (first conv and classifier at int8 by default), its activation
ranges are calibrated on the calibration split, it is trained through the shared loop
(labels + distillation, labels, or label-free distillation; the teacher is the model
before quantization, or --teacher; one process or several under torchrun),
and its ranges are re-measured because the weights moved. The artifact records the
ternary config, so it rebuilds from weights + recipe (no pickled code) like a pruned one.

Activations are uint8 for OpenVINO / ONNX Runtime targets and symmetric int8 for
TensorRT / Jetson (TensorRT refuses anything but signed, zero-point-0 Q/DQ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.backends.base import batches
from edgeprune.options import default
from edgeprune.pipeline import MODEL_ARTIFACT, RunContext
from edgeprune.quant.activations import calibrate
from edgeprune.quant.sensitivity import most_damaged_layer, ternary_layer_agreement
from edgeprune.quant.ternary import (
    TernaryConfig,
    plan_precisions,
    precision_table,
    prepare_ternary,
    ternary_summary,
)
from edgeprune.stages.common import scored_batches, torch_forward, torch_score
from edgeprune.stages.load import save_derived_artifact
from edgeprune.stages.recover import (
    black_pixel,
    check_training_split,
    run_training,
    teacher_request,
    validate_training,
)
from edgeprune.train import TrainConfig

QUANT_MODES = ("fp32", "int8", "ternary")
SIGNED_ACTIVATION_BACKENDS = ("tensorrt", "jetson")
CALIBRATION_BATCH = 64


@dataclass
class QuantizeConfig:
    """``--quant ternary``: the quantizer settings and the QAT budget."""

    ternary: TernaryConfig = field(default_factory=TernaryConfig)
    mode: str = default("recover")  # "kd" (labels + distillation) | "labels" | "distill"
    train: TrainConfig = field(default_factory=TrainConfig)
    nproc: int = default("nproc")
    # calibration images for the per-layer ternary sensitivity (0: skip it)
    sensitivity_samples: int = 256

    def validate(self) -> QuantizeConfig:
        validate_training(self.mode, self.train, self.nproc, "quant")
        if self.sensitivity_samples < 0:
            raise ValueError("sensitivity_samples must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"ternary": self.ternary.to_dict(), "mode": self.mode,
                "train": self.train.to_dict(), "nproc": self.nproc,
                "sensitivity_samples": self.sensitivity_samples}


def ternary_for_target(config: TernaryConfig, backend: str) -> TernaryConfig:
    """The config with the activation type the target's runtime can run as integers."""
    dtype = "int8" if backend in SIGNED_ACTIVATION_BACKENDS else "uint8"
    return TernaryConfig.from_dict({**config.to_dict(), "activation_dtype": dtype})


class QuantizeStage:
    name = "quantize"

    def __init__(self, config: QuantizeConfig) -> None:
        self.config = config

    def _ternary(self, ctx: RunContext) -> TernaryConfig:
        return ternary_for_target(self.config.ternary, ctx.config.target.backend)

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"quantize": {**self.config.to_dict(), "ternary": self._ternary(ctx).to_dict()}}

    def _layer_sensitivity(self, ctx: RunContext, model: Any, cfg: TernaryConfig,
                           calib: Any, calib_targets: Any) -> dict[str, Any] | None:
        """Per-layer damage of ternarization alone (what the search's 8-bit exception
        keeps at int8 when the ternary model misses the accuracy budget)."""
        samples = min(self.config.sensitivity_samples, len(calib))
        if samples == 0:
            return None
        layers = sum(kind == "ternary" for kind in plan_precisions(model, cfg).values())
        metric = ctx.config.metric
        score = None if metric.is_top1 else (lambda probe: metric.score(scored_batches(
            torch_forward(probe), calib[:samples], calib_targets[:samples], 128)))
        with ctx.ui.task("ternary sensitivity (one layer at a time)", layers) as advance:
            agreement = ternary_layer_agreement(model, cfg, calib[:samples], advance, score)
        what = ("top-1 agreement (%) with the unquantized model" if metric.is_top1 else
                f"{metric.label} on the calibration targets")
        return {"metric": f"{what} when only this layer is ternary (weights only, before "
                "QAT)", "samples": samples,
                "agreement": agreement, "most_damaged": most_damaged_layer(agreement)}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        cfg = self._ternary(ctx)
        warnings = check_training_split(ctx, self.config.train.batch_size, "ternary QAT")
        for text in warnings:
            ctx.ui.warn(text)
        source = ctx.latest_model_path()
        model = ctx.load_model(source)
        calib, calib_targets = ctx.arrays("calibration")
        sensitivity = self._layer_sensitivity(ctx, model, cfg, calib, calib_targets)
        state = prepare_ternary(model, cfg)
        calibrate(model, batches(calib, CALIBRATION_BATCH))
        images, labels = ctx.arrays("eval")
        before = torch_score(model, images, labels, ctx, "PyTorch eval (ternary, no QAT)")
        prepared = workdir / "prepared.pt"
        save_derived_artifact(model, source, prepared, ternary=cfg.to_dict())
        request = {
            "model": str(prepared), "out": str(workdir / MODEL_ARTIFACT),
            # teacher: the model before quantization (pruned + recovered, or the input)
            **(teacher_request(ctx, source) if self.config.train.needs_teacher
               else {"teacher": None}),
            "trust_pickle": ctx.config.trust_pickle, "train": self.config.train.to_dict(),
            "pad_value": black_pixel(ctx), "quantize": True,
        }
        stats = run_training(ctx, request, self.config.nproc,
                             f"ternary QAT ({cfg.method}, {self.config.mode})")
        prepared.unlink()
        model = ctx.load_model(workdir / MODEL_ARTIFACT)
        recal = calibrate(model, batches(calib, CALIBRATION_BATCH))  # weights moved
        save_derived_artifact(model, workdir / MODEL_ARTIFACT, workdir / MODEL_ARTIFACT)
        accuracy = torch_score(model, images, labels, ctx, "PyTorch eval (ternary QAT)")
        rows = precision_table(model)
        summary = ternary_summary(rows)
        layers = summary["layers_by_precision"]
        return {
            "method": cfg.method, "mode": self.config.mode, "ternary_config": cfg.to_dict(),
            "plan": state.plan, "training": stats, "accuracy_before_qat": before,
            "warnings": warnings,
            "accuracy": accuracy, "accuracy_samples": len(labels),
            "calibration": {k: v for k, v in recal.items() if k != "ranges"},
            "layers": rows, "ternary_summary": summary, "layer_sensitivity": sensitivity,
            "summary": f"{cfg.method} ternary ({layers.get('ternary', 0)} layers ternary, "
            f"{layers.get('int8', 0)} int8, {layers.get('fp32', 0)} fp32; {cfg.activation_dtype} "
            f"activations), {stats['epochs']:.2f} epochs in {stats['seconds']:.0f} s: "
            f"{ctx.config.metric.label} {accuracy:.2f} (before QAT {before:.2f})",
        }
