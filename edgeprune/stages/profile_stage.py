"""Stage 8: on-target latency of the final artifact, with the dense baseline re-measured
in alternating rounds of the same run, so the speed-up ratio is not skewed by drift on
a noisy machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.pipeline import RunContext, write_json_atomic
from edgeprune.stages.baseline import BASELINE_PRECISION
from edgeprune.stages.common import loop_settings, merge_runs, run_profiler, save_profile_inputs

ROUNDS = 2


class ProfileStage:
    name = "profile"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"target": ctx.config.target.to_dict(), "rounds": ROUNDS}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        compiled = ctx.metrics("compile")
        final_artifact = ctx.stage_dir("compile") / compiled["artifact"]
        base = ctx.metrics("baseline")["compiled"]
        base_artifact = ctx.stage_dir("baseline") / "compiled" / base["artifact"]
        inputs = workdir / "inputs.npy"
        save_profile_inputs(ctx, inputs)
        loop = loop_settings(ctx, share=1.0 / ROUNDS)
        final_runs, base_runs = [], []
        with ctx.ui.task("profiling final vs baseline (alternating rounds)",
                         2 * ROUNDS) as advance:
            for _ in range(ROUNDS):
                final_runs.append(run_profiler(ctx, final_artifact, compiled["precision"],
                                               inputs, loop))
                advance(1)
                base_runs.append(run_profiler(ctx, base_artifact, BASELINE_PRECISION,
                                              inputs, loop))
                advance(1)
        batch = ctx.config.target.batch
        final, baseline = merge_runs(final_runs, batch), merge_runs(base_runs, batch)
        write_json_atomic(workdir / "latency_samples.json", {
            "final_ms": final.pop("samples_ms"), "baseline_ms": baseline.pop("samples_ms"),
        })
        speedup = {
            p: baseline["latency_ms"][p] / final["latency_ms"][p]
            for p in ("p50", "p90", "p99")
            if final["latency_ms"][p] and baseline["latency_ms"][p]
        }
        lat = final["latency_ms"]
        return {
            "final": final,
            "baseline": baseline,
            "speedup_vs_baseline": speedup,
            "threads": ctx.config.target.threads,
            "batch": batch,
            "summary": f"p50 {lat['p50']:.3f} ms, p99 "
            f"{lat['p99']:.3f} ms ({lat['iterations']} iterations), "
            f"{speedup.get('p50', float('nan')):.2f}x vs dense FP32" if lat["p99"] else
            f"p50 {lat['p50']:.3f} ms ({lat['iterations']} iterations)",
        }
