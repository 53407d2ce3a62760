"""Stage 7: compile the ONNX model for the target at the requested precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.pipeline import RunContext
from edgeprune.stages.common import compile_for_target


class CompileStage:
    name = "compile"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        c = ctx.config
        return {"target": c.target.to_dict(), "precision": c.precision}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        onnx_path = ctx.stage_dir("export") / "model.onnx"
        with ctx.ui.task(f"compiling for {ctx.config.target.name} ({ctx.config.precision})",
                         None):
            compiled = compile_for_target(ctx, onnx_path, workdir, ctx.config.precision)
        if ctx.metrics("export").get("format") == "qdq" and compiled["backend"] == "openvino":
            from edgeprune.quant.ov_compact import compact_u2_ir

            # the same network with ternary weights stored as u2 (4 per byte): a smaller
            # IR that OpenVINO decompresses at load and still runs as INT8
            compiled["compact_u2_ir"] = compact_u2_ir(onnx_path, workdir / "compact-u2")
        return {
            **compiled,
            "summary": f"{compiled['backend']} {compiled['precision']}, "
            f"{compiled['size_bytes']:,} bytes",
        }
