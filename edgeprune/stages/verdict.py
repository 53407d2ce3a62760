"""Stage 10: compare the final accuracy (in the target runtime) and measured latency with
the user's budget. The drop is against the baseline's PyTorch FP32 accuracy on the same
evaluation images, in points of the run's metric (top-1 %, or ``--metric``'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.pipeline import RunContext


def judge(baseline_acc: float, final_acc: float, latency: dict[str, Any],
          max_drop: float, latency_goal: float | None, percentile: str,
          metric: str = "top-1") -> dict[str, Any]:
    """The verdict and, when it fails, each reason in words (``metric``: its name; the
    drop is in its points, higher being better)."""
    drop = baseline_acc - final_acc
    reasons = []
    accuracy_ok = drop <= max_drop + 1e-9
    if not accuracy_ok:
        reasons.append(f"{metric} dropped {drop:.2f} points, more than the budget of "
                       f"{max_drop:.2f}")
    latency_ok = True
    measured = latency.get(percentile)
    if latency_goal is not None:
        if measured is None:
            latency_ok = False
            reasons.append(f"{percentile} latency was not measured with enough iterations")
        elif measured > latency_goal:
            latency_ok = False
            reasons.append(f"{percentile} latency {measured:.3f} ms is above the goal of "
                           f"{latency_goal:.3f} ms")
    return {
        "accuracy_drop": drop,
        "accuracy_ok": accuracy_ok,
        "latency_ok": latency_ok,
        "latency_checked": latency_goal is not None,
        "latency_measured_ms": measured,
        "passed": accuracy_ok and latency_ok,
        "reasons": reasons,
    }


def slower_than_dense(baseline: dict[str, Any], final: dict[str, Any], percentile: str
                      ) -> list[str]:
    """A pruned model slower than the dense baseline at the same precision (as the runtime
    ran both: ``runtime.effective_precision``) gained nothing for the accuracy it lost: say
    so. ``baseline``/``final``: the profile stage's sides, with the compiled precision."""
    ran = [(side.get("runtime") or {}).get("effective_precision") for side in (baseline, final)]
    dense, pruned = (side["latency_ms"].get(percentile) for side in (baseline, final))
    if (baseline.get("precision") != final.get("precision") or ran[0] != ran[1]
            or dense is None or pruned is None or pruned <= dense):
        return []
    return [f"the pruned model is slower than the dense one at the same precision "
            f"({percentile} {pruned:.3f} ms vs {dense:.3f} ms, ran as {ran[0]}): its "
            "channel counts may break the runtime's fast kernels -- try --round-to 8 or 16, "
            "or --search, which never chooses such a model"]


def _pruned_vs_dense(ctx: RunContext, percentile: str) -> list[str]:
    """Only a pruned run at the baseline's precision has a dense twin measured (other
    precisions: ``--search`` measures the dense model at each)."""
    record = ctx.records.get("prune")
    if record is None or record.status == "skipped":
        return []
    profile = ctx.metrics("profile")
    baseline = {**profile["baseline"], "precision": ctx.metrics("baseline").get("precision")}
    final = {**profile["final"], "precision": ctx.metrics("compile").get("precision")}
    return slower_than_dense(baseline, final, percentile)


class VerdictStage:
    name = "verdict"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"budget": ctx.config.budget.__dict__}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        b = ctx.config.budget
        verdict = judge(
            ctx.metrics("baseline")["accuracy"], ctx.metrics("evaluate")["accuracy"],
            ctx.metrics("profile")["final"]["latency_ms"], b.max_drop, b.latency_ms,
            b.percentile, ctx.config.metric.label,
        )
        verdict["warnings"] = _pruned_vs_dense(ctx, b.percentile)
        for text in verdict["warnings"]:
            ctx.ui.warn(text)
        word = "PASSED" if verdict["passed"] else "MISSED"
        return {**verdict, "metric": ctx.config.metric.to_report(),
                "summary": f"budget {word}: {ctx.config.metric.label} drop "
                f"{verdict['accuracy_drop']:.2f} points (max {b.max_drop})"}
