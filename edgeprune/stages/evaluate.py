"""Stage 9: accuracy (the run's metric: top-1, or ``--metric``) measured IN the target
runtime on the evaluation split, plus the agreement with the PyTorch model it was compiled
from (arg-max over the outputs' channel axis: per sample for a classifier, per pixel for a
segmentation model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import interrupt
from edgeprune.backends import get_backend
from edgeprune.pipeline import RunContext
from edgeprune.stages.common import (
    needs_remote_eval,
    target_predictions,
    torch_forward,
    torch_predictions,
)


class EvaluateStage:
    name = "evaluate"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"eval_batch": ctx.config.eval_batch, "target": ctx.config.target.to_dict()}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        c = ctx.config
        compiled = ctx.metrics("compile")
        images, labels = ctx.arrays("eval")
        artifact = ctx.stage_dir("compile") / compiled["artifact"]
        metric = c.metric
        on_target, reference = metric.scorer(), metric.scorer()
        if needs_remote_eval(ctx):  # top-1 only (configure refuses --metric there)
            # on the device: its runtime returns the predicted classes
            runtime_preds, runtime = target_predictions(
                ctx, artifact, compiled["precision"], images, workdir / "device-logs")
            torch_preds = torch_predictions(ctx.load_model(), images, ctx, "PyTorch reference")
            on_target.update(runtime_preds, labels)
            reference.update(torch_preds, labels)
            agree, total = int(np.sum(runtime_preds == torch_preds)), runtime_preds.size
            predictions = [runtime_preds]
        else:
            session = get_backend(c.target.backend).load(
                artifact, compiled["precision"], c.target.threads, c.eval_batch,
                dict(c.target.options))
            forward = torch_forward(ctx.load_model())
            agree = total = 0
            predictions = []
            with ctx.ui.task(f"evaluating in {c.target.backend} and PyTorch",
                             len(images)) as advance:
                for start in range(0, len(images), c.eval_batch):
                    chunk = images[start : start + c.eval_batch]
                    targets = labels[start : start + c.eval_batch]
                    out, ref = session.run(chunk), forward(chunk)
                    on_target.update(out, targets)
                    reference.update(ref, targets)
                    preds, ref_preds = out.argmax(1), ref.argmax(1)
                    agree += int(np.sum(preds == ref_preds))
                    total += preds.size
                    if metric.is_top1:
                        predictions.append(preds)
                    advance(len(chunk))
                    interrupt.check()
            runtime = session.runtime_info()
        if predictions:
            np.save(workdir / "predictions.npy", np.concatenate(predictions))
        accuracy, torch_acc = on_target.compute(), reference.compute()
        unit = "%" if metric.is_top1 else ""
        return {
            "accuracy": accuracy,
            "accuracy_samples": len(labels),
            "accuracy_runtime": c.target.backend,
            "metric": metric.to_report(),
            "pytorch_accuracy": torch_acc,
            "top1_agreement_with_pytorch": float(np.float64(agree) / total),
            "runtime": runtime,
            "summary": f"{metric.label} {accuracy:.2f}{unit} in {c.target.backend} "
            f"({compiled['precision']}; PyTorch {torch_acc:.2f}{unit})",
        }
