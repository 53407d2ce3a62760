"""Assemble ``out/report.json`` from the stages' metrics (schema: report.schema.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from edgeprune.pipeline import RunContext, StageRecord
from edgeprune.report.environment import environment

SCHEMA_VERSION = "1.0"


def schema() -> dict[str, Any]:
    return json.loads((resources.files("edgeprune.report") / "report.schema.json").read_text())


def _side(accuracy: float, samples: int, runtime: str, latency: dict[str, Any], flops: int,
          params: int, size: int, precision: str, runtime_info: dict[str, Any]) -> dict:
    return {
        "accuracy": accuracy,
        "accuracy_samples": samples,
        "accuracy_runtime": runtime,
        "latency_ms": latency,
        "flops": flops,
        "params": params,
        "size_bytes": size,
        "precision": precision,
        "runtime": runtime_info,
    }


def accuracy_by_stage(ctx: RunContext) -> list[dict[str, Any]]:
    """Top-1 after each stage that changes the model, and the change it caused, so a drop
    is attributed to the stage (prune, recover, quantize, compile) that caused it."""
    rows, previous = [], None
    for stage, runtime in (("baseline", "pytorch"), ("prune", "pytorch"),
                           ("recover", "pytorch"), ("quantize", "pytorch"),
                           ("evaluate", ctx.config.target.backend)):
        record = ctx.records.get(stage)
        if record is None or "accuracy" not in record.metrics:
            continue
        steps = [("compile" if stage == "evaluate" else stage, record.metrics["accuracy"])]
        compensation = record.metrics.get("compensation", {}).get("method", "none")
        if "accuracy_surgery" in record.metrics and compensation != "none":
            # the surgery's own drop, then what the retraining-free compensation gave back
            steps = [("prune", record.metrics["accuracy_surgery"]),
                     (f"compensate ({compensation})", record.metrics["accuracy"])]
        for name, acc in steps:
            rows.append({"stage": name, "accuracy": acc, "runtime": runtime,
                         "change": None if previous is None else acc - previous})
            previous = acc
    return rows


def _pruning(ctx: RunContext) -> dict[str, Any] | None:
    record = ctx.records.get("prune")
    if record is None or record.status == "skipped":
        return None
    keys = ("criterion", "allocation", "flops_before", "flops_after", "params_before",
            "params_after", "flops_reduction", "params_reduction", "channels", "ratios")
    m = record.metrics
    compensation = {k: v for k, v in m.get("compensation", {}).items() if k != "refit"}
    return {k: m[k] for k in keys} | {
        "choice": m.get("choice", {}), "accuracy_surgery": m.get("accuracy_surgery"),
        "accuracy_compensated": m.get("accuracy"), "compensation": compensation,
        "warnings": m.get("warnings", []),
        "unpruned_groups": m.get("unpruned_groups", {})}


def _quantization(ctx: RunContext) -> dict[str, Any] | None:
    """Ternary QAT: method, per-layer precision, what the runtimes ran, packed size."""
    record = ctx.records.get("quantize")
    if record is None or record.status == "skipped":
        return None
    q, export = record.metrics, ctx.metrics("export")
    compiled = ctx.metrics("compile")
    ov = export.get("parity", {}).get("runtimes", {}).get("openvino", {})
    alone = (q.get("layer_sensitivity") or {}).get("agreement", {})
    layers = [{k: r[k] for k in ("layer", "precision", "shape", "weights", "zero_fraction")
               if k in r} for r in q["layers"]]
    for row in layers:
        if row["layer"] in alone:  # top-1 agreement when only this layer is ternary
            row["ternary_alone_agreement"] = alone[row["layer"]]
    return {
        "method": q["method"], "mode": q["mode"], "config": q["ternary_config"],
        "accuracy_before_qat": q["accuracy_before_qat"], "accuracy": q["accuracy"],
        "training": {k: q["training"].get(k) for k in ("epochs", "steps", "seconds",
                                                        "seconds_per_epoch", "world_size")},
        "layers": layers, "summary": q["ternary_summary"],
        "layer_sensitivity": {k: v for k, v in (q.get("layer_sensitivity") or {}).items()
                              if k != "agreement"} or None,
        "openvino_convolution_precisions": ov.get("convolution_precisions"),
        "packed": export.get("packed"),
        "compact_u2_ir_bytes": (compiled.get("compact_u2_ir") or {}).get("total_bytes"),
    }


def build_report(ctx: RunContext, records: list[StageRecord]) -> dict[str, Any]:
    c = ctx.config
    load, base = ctx.metrics("load"), ctx.metrics("baseline")
    export, compiled = ctx.metrics("export"), ctx.metrics("compile")
    profile, evaluate, verdict = (ctx.metrics(s) for s in ("profile", "evaluate", "verdict"))
    baseline = _side(
        base["accuracy"], base["accuracy_samples"], "pytorch",
        profile["baseline"]["latency_ms"], base["flops"], base["params"],
        base["compiled"]["size_bytes"], base["precision"], profile["baseline"]["runtime"],
    )
    final = _side(
        evaluate["accuracy"], evaluate["accuracy_samples"], evaluate["accuracy_runtime"],
        profile["final"]["latency_ms"], export["model"]["flops"], export["model"]["params"],
        compiled["size_bytes"], compiled["precision"], evaluate["runtime"],
    )
    baseline["memory"], final["memory"] = profile["baseline"]["memory"], profile["final"]["memory"]
    baseline["state_dict_bytes"] = base["size_bytes"]
    final["onnx_bytes"] = export["onnx_bytes"]
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": c.command,
        "passed": verdict["passed"],
        "verdict": {k: verdict[k] for k in (
            "accuracy_drop", "accuracy_ok", "latency_ok", "latency_checked",
            "latency_measured_ms", "reasons")} | {"warnings": verdict.get("warnings", [])},
        "budget": {"max_drop": c.budget.max_drop, "latency_ms": c.budget.latency_ms,
                   "percentile": c.budget.percentile},
        "metric": c.metric.to_report(),
        "model": {"path": str(c.model_path), "sha256": load["model_sha256"],
                  "arch": load["arch"], "arch_kwargs": load["arch_kwargs"],
                  "input_shape": load["input_shape"]},
        "data": {"eval": load["eval"], "calibration": load["calibration"],
                 "manifests": {k: str(ctx.stage_dir("load") / v)
                               for k, v in load["manifests"].items()}},
        "target": c.target.to_dict(),
        "baseline": baseline,
        "final": final,
        "speedup": profile["speedup_vs_baseline"],
        "export": {k: export[k] for k in ("exporter", "opset", "onnx_bytes", "parity")},
        "accuracy_by_stage": accuracy_by_stage(ctx),
        "pruning": _pruning(ctx),
        "quantization": _quantization(ctx),
        "stages": [
            {"index": r.index, "name": r.name, "status": r.status, "seconds": r.seconds,
             "dir": str(r.dir), "summary": r.metrics.get("summary", "")}
            for r in records
        ],
        "environment": environment(),
    }
