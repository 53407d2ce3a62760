"""Stage 6: export the (pruned / quantized) model to ONNX and prove it matches PyTorch.

A float model is exported as is and checked against PyTorch (``check_parity``). A ternary
model is exported as explicit Q/DQ (int8 weights with values in {-1, 0, 1}, per-channel
scales, 8-bit activations), loaded in ONNX Runtime and OpenVINO, checked against the
PyTorch fake-quantized model, and OpenVINO's executed convolution precisions are read
back; the stage also writes the packed 2-bit artifact (``model.packed``), checks that it
round-trips bit-exactly, and records its size against the dense FP32 ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import StageFailure
from edgeprune.export import check_parity, export_onnx
from edgeprune.model import count_flops, count_params
from edgeprune.pipeline import RunContext

PARITY_SAMPLES = 64
PACKED_ARTIFACT = "model.packed"


def is_quantized(model: nn.Module) -> bool:
    from edgeprune.quant.ternary import QUANT_LAYERS

    return any(isinstance(m, QUANT_LAYERS) for m in model.modules())


class ExportStage:
    name = "export"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        c = ctx.config
        return {"exporter": c.exporter, "opset": c.opset, "parity": c.parity.__dict__}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        model = ctx.load_model()
        images, _ = ctx.arrays("eval")
        stats = {"model": {"flops": count_flops(model, ctx.input_shape()),
                           "params": count_params(model)}}
        if is_quantized(model):
            return {**stats, **export_quantized(ctx, model, images, workdir)}
        with ctx.ui.task(f"exporting ONNX ({ctx.config.exporter})", None):
            facts = export_onnx(model, torch.from_numpy(images[:2]), workdir / "model.onnx",
                                ctx.config.exporter, ctx.config.opset)
        with ctx.ui.task("checking ONNX parity", None):
            parity = check_parity(model, workdir / "model.onnx", images[:PARITY_SAMPLES],
                                  ctx.config.parity)
        return {
            **facts,
            "parity": parity,
            **stats,
            "summary": f"opset {facts['opset']}, {facts['onnx_bytes']:,} bytes, max abs diff "
            f"{parity['max_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.0%}",
        }


def export_quantized(ctx: RunContext, model: nn.Module, images: np.ndarray,
                     workdir: Path) -> dict[str, Any]:
    """Q/DQ ONNX + runtime checks + the packed artifact (see the module docstring)."""
    from edgeprune.quant.qdq import export_qdq_onnx, verify_qdq

    onnx_path = workdir / "model.onnx"
    with ctx.ui.task("exporting Q/DQ ONNX", None):
        facts = export_qdq_onnx(model, torch.from_numpy(images[:2]), onnx_path,
                                ctx.config.opset)
    with ctx.ui.task("checking Q/DQ ONNX in ONNX Runtime and OpenVINO", None):
        check = verify_qdq(model, onnx_path, images[:PARITY_SAMPLES],
                           threads=ctx.config.target.threads, fake_quant_model=model)
    packed = write_packed(ctx, model, workdir / PACKED_ARTIFACT)
    ov = check["runtimes"]["openvino"]
    ort = check["runtimes"]["onnxruntime"]
    return {
        **facts,
        "format": "qdq",
        "parity": {"max_abs_diff": max(ov["max_abs_diff"], ort["max_abs_diff"]),
                   "top1_agreement": min(ov["top1_agreement"], ort["top1_agreement"]),
                   "passed": check["passed"], "runtimes": check["runtimes"],
                   "deployed_vs_fake_quant": check.get("deployed_vs_fake_quant"),
                   "samples": check["samples"], "tolerance": check["tolerance"]},
        "packed": packed,
        "summary": f"Q/DQ opset {facts['opset']}: {facts['ternary_layers']} ternary + "
        f"{facts['int8_layers']} int8 layers, OpenVINO convolutions "
        f"{ov['convolution_precisions']}, top-1 agreement ORT {ort['top1_agreement']:.0%} / "
        f"OV {ov['top1_agreement']:.0%}; packed {packed['bytes']:,} bytes "
        f"({packed['ratio_vs_fp32_onnx']:.1f}x smaller than the FP32 ONNX)",
    }


def write_packed(ctx: RunContext, model: nn.Module, path: Path) -> dict[str, Any]:
    """The smallest packed variant, checked to round-trip bit-exactly, and its ratio to
    the dense FP32 ONNX of the baseline stage."""
    from edgeprune.quant.deploy import deploy_state, to_deploy
    from edgeprune.quant.pack import pack_deployed, size_report, unpack
    from edgeprune.stages.load import artifact_meta

    deployed = to_deploy(model)
    recipe = artifact_meta(ctx.latest_model_path())
    meta = {k: recipe[k] for k in ("arch", "arch_kwargs", "pruned", "conversions",
                                   "input_shape") if k in recipe}
    meta["ternary_config"] = recipe.get("ternary", {})
    blob = pack_deployed(deployed, meta)
    original = deploy_state(deployed)
    restored = unpack(blob).state_dict()
    exact = set(original) == set(restored) and all(
        torch.equal(original[k], restored[k]) for k in original)
    if not exact:
        raise StageFailure(f"the packed artifact {path.name} does not round-trip exactly",
                           fix="report the model: a tensor type is packed lossily")
    path.write_bytes(blob)
    fp32_onnx = (ctx.stage_dir("baseline") / "model.onnx").stat().st_size
    sizes = size_report(deployed, meta, fp32_onnx)
    return {"file": path.name, "bytes": len(blob), "round_trip_exact": exact,
            "fp32_onnx_bytes": fp32_onnx, "ratio_vs_fp32_onnx": fp32_onnx / len(blob),
            "sizes": sizes}
