"""``edgeprune compile``: the stage list, the run, the report and the exit code."""

from __future__ import annotations

from typing import Any

import jsonschema

from edgeprune import interrupt
from edgeprune.errors import EXIT_BUDGET_MISSED, EXIT_OK
from edgeprune.pipeline import PipelineConfig, RunContext, Stage, run_stages, write_json_atomic
from edgeprune.report.build import build_report, schema
from edgeprune.report.html import write_human_reports
from edgeprune.stages.baseline import BaselineStage
from edgeprune.stages.compile_stage import CompileStage
from edgeprune.stages.evaluate import EvaluateStage
from edgeprune.stages.export_stage import ExportStage
from edgeprune.stages.load import LoadStage
from edgeprune.stages.profile_stage import ProfileStage
from edgeprune.stages.prune_stage import PruneStage
from edgeprune.stages.quantize import QuantizeStage
from edgeprune.stages.recover import RecoverStage
from edgeprune.stages.slots import default_slots
from edgeprune.stages.verdict import VerdictStage
from edgeprune.ui import UI


def build_stages(config: PipelineConfig) -> list[Stage]:
    """load → baseline → prune → recover → quantize → export → compile → profile →
    evaluate → verdict."""
    prune, recover, quantize = default_slots()
    return [
        LoadStage(), BaselineStage(),
        PruneStage(config.prune) if config.prune else prune,
        RecoverStage(config.recover) if config.prune else recover,
        QuantizeStage(config.quantize) if config.quantize else quantize,
        ExportStage(), CompileStage(), ProfileStage(), EvaluateStage(),
        VerdictStage(),
    ]


def run_compile(config: PipelineConfig, ui: UI) -> tuple[dict[str, Any], int]:
    """Run every stage, write out/report.json (validated against its schema)."""
    ctx = RunContext(config, ui)
    records = run_stages(build_stages(config), ctx)
    report = build_report(ctx, records)
    jsonschema.validate(report, schema())
    interrupt.check()
    write_json_atomic(config.out_dir / "report.json", report)
    write_human_reports(report, config.out_dir)  # report.html + summary.md
    return report, EXIT_OK if report["passed"] else EXIT_BUDGET_MISSED


def run_prune(config: PipelineConfig, ui: UI) -> dict[str, Any]:
    """``edgeprune prune``: load → prune → recover, then OUT/pruned.pt and a summary."""
    import shutil

    ctx = RunContext(config, ui)
    stages: list[Stage] = [LoadStage(), PruneStage(config.prune),
                           RecoverStage(config.recover)]
    records = run_stages(stages, ctx)
    final = ctx.latest_model_path()
    tmp = config.out_dir / ".pruned.pt.tmp"
    try:
        shutil.copyfile(final, tmp)
        interrupt.check()
        tmp.replace(config.out_dir / "pruned.pt")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    prune = ctx.metrics("prune")
    recover = ctx.metrics("recover")
    summary = {
        "model": str(config.out_dir / "pruned.pt"),
        **{k: prune[k] for k in ("criterion", "allocation", "flops_before", "flops_after",
                                 "params_before", "params_after", "flops_reduction",
                                 "params_reduction", "channels", "ratios")},
        "accuracy_pruned": prune["accuracy"],
        "accuracy_recovered": recover.get("accuracy"),
        "accuracy_samples": prune["accuracy_samples"],
        "metric": config.metric.to_report(),
        "warnings": prune.get("warnings", []),
        "latency": prune.get("choice", {}).get("latency"),
        "unpruned_groups": prune.get("unpruned_groups", {}),
        "stages": [{"name": r.name, "status": r.status, "seconds": r.seconds} for r in records],
    }
    write_json_atomic(config.out_dir / "prune.json", summary)
    return summary
