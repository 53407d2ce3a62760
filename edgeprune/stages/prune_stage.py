"""Stage 3: structural pruning (D-Score by default), ratios from sensitivity analysis,
then retraining-free compensation (mean fold / least-squares refit / BatchNorm
re-estimation on training images: prune/compensate.py).

Writes the pruned model as weights + recipe (``model.pt``), the channel plan
(``plan.json``: per group the channels kept and removed) and the sensitivity curves.
Top-1 right after the surgery and after the compensation is measured on the evaluation
split, so the report can attribute each change to its step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.model import count_flops, count_params
from edgeprune.pipeline import MODEL_ARTIFACT, RunContext, write_json_atomic
from edgeprune.prune.compensate import Tracer, compensate, input_channel_means
from edgeprune.prune.importance import get_criterion
from edgeprune.prune.latency import LatencyProbe, LatencyRequest
from edgeprune.prune.policy import PruneConfig, choose_ratios
from edgeprune.prune.sensitivity import DEFAULT_STEPS, analysis_key, cache_dir, torch_accuracy
from edgeprune.prune.structural import (
    OPTION_A,
    apply_plan,
    find_groups,
    layer_channels,
    make_shortcuts_explicit,
    plan_from_ratios,
)
from edgeprune.prune.verify import notes, with_followable
from edgeprune.stages.common import torch_score
from edgeprune.stages.load import artifact_meta, save_derived_artifact


def table_precision(ctx: RunContext) -> str:
    """The precision latency tables are measured in: the run's, or for INT8 (which would
    need a quantization per table entry) the target's bf16 when it has one (what INT8 is
    measured beside on AMX CPUs), else fp32."""
    precision = ctx.config.precision
    if precision != "int8":
        return precision
    return "bf16" if "bf16" in ctx.config.target.precisions else "fp32"


def latency_request(ctx: RunContext) -> LatencyRequest:
    """Latency tables measured where the model will run: the target's backend, threads
    and batch, on its device when it has one; real calibration images as inputs."""
    from edgeprune.backends import get_backend
    from edgeprune.errors import InputError

    target = ctx.config.target
    if getattr(get_backend(target.backend), "needs_device", False):
        raise InputError(
            f"--latency-reduction measures latency tables with the target's runner, and "
            f"{target.name} builds its engines on the device (not supported for tables yet)",
            fix="use --flops-reduction for this target, or measure the tables on "
            "openvino-cpu / onnxruntime-cpu")
    images, _ = ctx.arrays("calibration")
    return LatencyRequest(
        probe=LatencyProbe(target.backend, table_precision(ctx), target.threads,
                           target.batch, dict(target.options),
                           target.remote if target.remote.host else None),
        inputs=np.asarray(images[: max(target.batch, 1)], dtype=np.float32),
        cache=cache_dir() / "latency", progress=ctx.ui.note)


class PruneStage:
    name = "prune"

    def __init__(self, config: PruneConfig) -> None:
        self.config = config

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"prune": self.config.to_dict()}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        cfg = self.config
        source = ctx.latest_model_path()
        model = ctx.load_model(source)
        shape = ctx.input_shape()
        example = torch.zeros((2, *shape[1:]))
        flops_before, params_before = count_flops(model, shape), count_params(model)
        conversions = make_shortcuts_explicit(model, example)
        channels_before = layer_channels(model)
        # groups Torch-Pruning cannot cut correctly here are left whole, with a note
        checked, unfollowable = with_followable(model, example, cfg.options)
        cfg = dataclasses.replace(cfg, options=checked)
        for text in notes(unfollowable):
            ctx.ui.warn(text)
        criterion = get_criterion(cfg.criterion)
        sens_x, sens_y = ctx.arrays("sensitivity", cfg.sensitivity_samples)
        evaluate = torch_accuracy(sens_x, sens_y, metric=ctx.config.metric)
        key = analysis_key(model, cfg.criterion, cfg.options,
                           ctx.subset("sensitivity", cfg.sensitivity_samples).manifest()[
                               "ids_sha256"], DEFAULT_STEPS, ctx.config.metric.key())
        cache_file = cache_dir() / "sensitivity" / f"{key}.json"
        cached = json.loads(cache_file.read_text()) if cache_file.is_file() else None
        latency = latency_request(ctx) if cfg.latency_reduction is not None else None
        with ctx.ui.task(f"sensitivity analysis ({cfg.criterion})", None) as advance:
            choice = choose_ratios(model, example, cfg, criterion, evaluate, cached,
                                   on_eval=lambda: advance(1), latency=latency)
        if "table" in choice:
            write_json_atomic(workdir / "latency_table.json", choice.pop("table"))
        for text in choice.get("warnings", []):
            ctx.ui.warn(text)
        if "analysis" in choice:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache_file, choice["analysis"])
            write_json_atomic(workdir / "sensitivity.json", choice.pop("analysis"))
        comp = cfg.compensation
        comp_x = None
        if comp.active:  # training images (the sensitivity subset when sizes agree)
            comp_x, _ = ctx.arrays("sensitivity", comp.samples)
        original = copy.deepcopy(model) if comp.active else None
        means = (input_channel_means(model, comp_x, comp.batch)
                 if comp_x is not None and comp.method in ("mean", "refit") else None)
        started = time.perf_counter()
        graph, groups = find_groups(model, example, cfg.options)
        plan = plan_from_ratios(groups, choice["ratios"], criterion, cfg.options)
        tracer = Tracer(model, means)
        apply_plan(graph, groups, plan, tracer)
        surgery_seconds = time.perf_counter() - started
        write_json_atomic(workdir / "plan.json", plan.to_dict())
        images, labels = ctx.arrays("eval")
        accuracy_surgery = torch_score(model, images, labels, ctx, "PyTorch eval (surgery)")
        compensation: dict[str, object] = {"method": comp.method}
        if comp.active:
            assert original is not None and comp_x is not None
            layers = len(tracer.trace.consumers()) if comp.method == "refit" else None
            with ctx.ui.task(f"compensating ({comp.method})", layers) as advance:
                compensation = compensate(model, original, tracer.trace, comp, comp_x,
                                          example, on_step=lambda: advance(1))
            del original
        previous = artifact_meta(source).get("conversions", [])
        save_derived_artifact(
            model, source, workdir / MODEL_ARTIFACT, pruned=True, input_shape=list(example.shape),
            conversions=sorted(set(previous) | ({OPTION_A} if conversions else set())),
        )
        accuracy = (torch_score(model, images, labels, ctx, "PyTorch eval (compensated)")
                    if comp.active else accuracy_surgery)
        flops_after, params_after = count_flops(model, shape), count_params(model)
        channels_after = layer_channels(model)
        return {
            "criterion": cfg.criterion,
            "allocation": choice["allocation"],
            "choice": {k: v for k, v in choice.items() if k not in ("ratios", "warnings")},
            "ratios": choice["ratios"],
            "warnings": choice.get("warnings", []) + notes(unfollowable),
            "unpruned_groups": unfollowable,
            "accuracy_surgery": accuracy_surgery,
            "accuracy": accuracy,
            "compensation": compensation,
            "surgery_seconds": surgery_seconds,
            "accuracy_samples": len(labels),
            "flops_before": flops_before, "flops_after": flops_after,
            "params_before": params_before, "params_after": params_after,
            "flops_reduction": 1 - flops_after / flops_before,
            "params_reduction": 1 - params_after / params_before,
            "channels": {n: [channels_before[n], channels_after.get(n, 0)]
                         for n in channels_before},
            "conversions": conversions,
            "sensitivity_cache": str(cache_file) if cached is None else f"reused {cache_file}",
            "summary": f"{cfg.criterion}: FLOPs -{1 - flops_after / flops_before:.1%}, params "
            f"-{1 - params_after / params_before:.1%}, {ctx.config.metric.label} "
            f"{accuracy_surgery:.2f} after surgery"
            + (f", {accuracy:.2f} after {comp.method} compensation"
                         if comp.active else ""),
        }
