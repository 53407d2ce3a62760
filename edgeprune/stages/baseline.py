"""Stage 2: the unmodified model's accuracy, FLOPs, params, size and target latency.

Baseline latency is the dense model at FP32 on the target's own runtime, so "final vs
baseline" compares like with like (never PyTorch eager vs a compiled runtime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.export import export_onnx
from edgeprune.model import count_flops, count_params, state_dict_bytes
from edgeprune.pipeline import RunContext
from edgeprune.stages.common import (
    compile_for_target,
    loop_settings,
    profile_or_pending,
    save_profile_inputs,
    torch_score,
)

BASELINE_PRECISION = "fp32"


class BaselineStage:
    name = "baseline"
    chains = False  # a measurement: pruning/training downstream do not depend on it

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        c = ctx.config
        target = c.target.to_dict()
        target.pop("precision")  # the baseline is always FP32: another precision reuses it
        return {"target": target, "exporter": c.exporter, "opset": c.opset}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        model = ctx.load_model()
        images, labels = ctx.arrays("eval")
        accuracy = torch_score(model, images, labels, ctx)
        shape = ctx.input_shape()
        import torch

        with ctx.ui.task("exporting dense baseline ONNX", None):
            export = export_onnx(model, torch.from_numpy(images[:2]), workdir / "model.onnx",
                                 ctx.config.exporter, ctx.config.opset)
        compiled_dir = workdir / "compiled"
        compiled_dir.mkdir()
        with ctx.ui.task(f"compiling dense baseline for {ctx.config.target.name} "
                         f"({BASELINE_PRECISION})", None):
            compiled = compile_for_target(ctx, workdir / "model.onnx", compiled_dir,
                                          BASELINE_PRECISION)
        save_profile_inputs(ctx, workdir / "inputs.npy")
        with ctx.ui.task("profiling dense FP32 baseline on the target", None):
            # None for a bundle target without its device: the profile stage measures it
            # on the device, or stops with exit 4 once the final bundle exists.
            profile = profile_or_pending(ctx, compiled_dir / compiled["artifact"],
                                         BASELINE_PRECISION, workdir / "inputs.npy",
                                         loop_settings(ctx))
        lat = profile["latency_ms"]
        return {
            "accuracy": accuracy,
            "accuracy_samples": len(labels),
            "accuracy_runtime": "pytorch",
            "flops": count_flops(model, shape),
            "params": count_params(model),
            "size_bytes": state_dict_bytes(model),
            "onnx": export,
            "compiled": compiled,
            "precision": BASELINE_PRECISION,
            "latency_ms": lat,
            "runtime": profile["runtime"],
            "memory": profile["memory"],
            "summary": f"{ctx.config.metric.label} {accuracy:.2f}"
            + ("%" if ctx.config.metric.is_top1 else "") + ", " + (
                f"p50 {lat['p50']:.3f} ms on {ctx.config.target.name} ({BASELINE_PRECISION})"
                if lat else f"latency pending: {ctx.config.target.name} is measured on its "
                "device"),
        }
