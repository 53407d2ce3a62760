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
        return {
            **compiled,
            "summary": f"{compiled['backend']} {compiled['precision']}, "
            f"{compiled['size_bytes']:,} bytes",
        }
