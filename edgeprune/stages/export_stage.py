"""Stage 6: export the (pruned / quantized) model to ONNX and prove it matches PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgeprune.export import check_parity, export_onnx
from edgeprune.model import count_flops, count_params
from edgeprune.pipeline import RunContext

PARITY_SAMPLES = 64


class ExportStage:
    name = "export"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        c = ctx.config
        return {"exporter": c.exporter, "opset": c.opset, "parity": c.parity.__dict__}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        model = ctx.load_model()
        images, _ = ctx.arrays("eval")
        facts = export_onnx(model, torch.from_numpy(images[:2]), workdir / "model.onnx",
                            ctx.config.exporter, ctx.config.opset)
        parity = check_parity(model, workdir / "model.onnx", images[:PARITY_SAMPLES],
                              ctx.config.parity)
        return {
            **facts,
            "parity": parity,
            "model": {"flops": count_flops(model, ctx.input_shape()),
                      "params": count_params(model)},
            "summary": f"opset {facts['opset']}, {facts['onnx_bytes']:,} bytes, max abs diff "
            f"{parity['max_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.0%}",
        }
