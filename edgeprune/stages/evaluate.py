"""Stage 9: accuracy measured IN the target runtime, on the evaluation split, plus the
agreement with the PyTorch model it was compiled from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.pipeline import RunContext
from edgeprune.stages.common import target_predictions, top1, torch_predictions


class EvaluateStage:
    name = "evaluate"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"eval_batch": ctx.config.eval_batch, "target": ctx.config.target.to_dict()}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        c = ctx.config
        compiled = ctx.metrics("compile")
        images, labels = ctx.arrays("eval")
        # In the target runtime: on this machine, or on the device for remote targets.
        runtime_preds, runtime = target_predictions(
            ctx, ctx.stage_dir("compile") / compiled["artifact"], compiled["precision"], images,
            workdir / "device-logs")
        torch_preds = torch_predictions(ctx.load_model(), images, ctx, "PyTorch reference")
        np.save(workdir / "predictions.npy", runtime_preds)
        accuracy = top1(runtime_preds, labels)
        torch_acc = top1(torch_preds, labels)
        return {
            "accuracy": accuracy,
            "accuracy_samples": len(labels),
            "accuracy_runtime": c.target.backend,
            "pytorch_accuracy": torch_acc,
            "top1_agreement_with_pytorch": float(np.mean(runtime_preds == torch_preds)),
            "runtime": runtime,
            "summary": f"top-1 {accuracy:.2f}% in {c.target.backend} "
            f"({compiled['precision']}; PyTorch {torch_acc:.2f}%)",
        }
