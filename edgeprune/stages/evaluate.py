"""Stage 9: accuracy measured IN the target runtime, on the evaluation split, plus the
agreement with the PyTorch model it was compiled from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.backends import get_backend
from edgeprune.backends.base import batches
from edgeprune.pipeline import RunContext
from edgeprune.stages.common import top1, torch_predictions


class EvaluateStage:
    name = "evaluate"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"eval_batch": ctx.config.eval_batch, "target": ctx.config.target.to_dict()}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        c = ctx.config
        compiled = ctx.metrics("compile")
        images, labels = ctx.arrays("eval")
        session = get_backend(c.target.backend).load(
            ctx.stage_dir("compile") / compiled["artifact"], compiled["precision"],
            c.target.threads, c.eval_batch, dict(c.target.options),
        )
        preds = []
        with ctx.ui.task(f"evaluating in {c.target.backend}", len(images)) as advance:
            for chunk in batches(images, c.eval_batch):
                preds.append(session.run(chunk).argmax(1))
                advance(len(chunk))
        runtime_preds = np.concatenate(preds)
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
            "runtime": session.runtime_info(),
            "summary": f"top-1 {accuracy:.2f}% in {c.target.backend} "
            f"({compiled['precision']}; PyTorch {torch_acc:.2f}%)",
        }
