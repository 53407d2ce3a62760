"""``edgeprune compile --search``: find the FASTEST model on the target within the budget.

Every candidate is a full pipeline run in its own folder under ``OUT/search/`` (so it is
compiled, profiled on the target and evaluated in the target runtime like any run: latency
is measured, never inferred from FLOPs), and every folder keeps its stage cache, so
re-running the same command resumes the search where it stopped.

The order keeps the expensive part (recovery training after pruning) for structures
that can still win:

1. dense model at every precision the target offers (cheap: no training); on OpenVINO,
   when plain INT8 misses the accuracy budget, once more with NNCF accuracy control (the
   layers that cost the most agreement with the float model go back to FP32 until it is
   within the budget on the calibration images -- the per-layer FP32 exception), which
   the pruning levels then use for INT8 too;
2. pruning levels in increasing FLOPs reduction (the D-Score sensitivity analysis runs
   once and is cached; with ``--search-levels-in latency`` the levels are measured
   latency reductions, each allocated by ``--latency-reduction`` at the candidate's
   precision), tried at the precisions in order of their measured dense speed,
   first compensated only (no training: seconds), and recovered only when the
   compensated candidate missed the accuracy budget AND its measured latency can still
   win (faster, beyond the tie margin, than the fastest candidate within budget so far:
   recovery does not change the structure, so it cannot make a candidate faster); a level
   stops at its first precision within budget (slower ones cannot win there);
3. when a level misses the accuracy budget at every precision, once, the same level with
   its most damaged layer group (from the sensitivity analysis) kept unpruned and every
   other group at the same ratio (the level's sensitivity threshold, so the FLOPs
   reduction is a little smaller) -- the per-layer exception; deeper pruning is then not
   tried (accuracy only falls with more pruning). A level that is accurate enough but
   misses the latency goal goes on to the next (more pruning may be fast enough);
4. with ``--search-ternary``, ternary QAT of the chosen structure (it runs INT8 kernels,
   so it is smaller, not faster, than INT8; tried when the user wants to see it). When it
   misses the accuracy budget, once, the same with the layer whose ternarization alone
   changed the most predictions (measured by the quantize stage) kept at int8 -- the
   8-bit per-layer exception.

The winner is the lowest measured latency at the budget percentile among candidates that
meet the budget; candidates within ``TIE`` of it count as equally fast and the most
accurate of them wins (a speed-up inside the noise is not worth accuracy). A pruned
candidate slower than the dense model at the same precision is never chosen (its note says
why). Candidates are
measured one after another, minutes apart, on a machine whose speed drifts, so at the end
every candidate within ``RUNOFF`` of the fastest is measured again, side by side in
alternating rounds of one run, and those numbers decide.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeprune.backends.openvino import ACCURACY_CONTROL
from edgeprune.errors import (
    EXIT_BUDGET_MISSED,
    EXIT_INPUT,
    EXIT_NEEDS_DEVICE,
    EXIT_OK,
    EdgepruneError,
)
from edgeprune.options import DEFAULT_CRITERION, default
from edgeprune.pipeline import PipelineConfig, write_json_atomic
from edgeprune.ui import UI

TIE = 0.03  # relative latency difference treated as a tie (run-to-run noise here)
RUNOFF = 0.15  # finalists: within this of the fastest, re-measured side by side
RUNOFF_ROUNDS = 3
RUNTIME_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass
class SearchConfig:
    flops_levels: list[float] = field(default_factory=lambda: default("search_levels"))
    level_metric: str = "flops"  # what a level reduces: "flops" or "latency"
    precisions: list[str] | None = None  # default: the runtime precisions of the target
    ternary: bool = False
    criterion: str = DEFAULT_CRITERION
    max_trials: int = default("max_trials")
    time_budget_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"flops_levels": self.flops_levels, "level_metric": self.level_metric,
                "precisions": self.precisions,
                "ternary": self.ternary, "criterion": self.criterion,
                "max_trials": self.max_trials, "time_budget_s": self.time_budget_s}


@dataclass
class Trial:
    name: str
    precision: str
    flops_reduction: float | None
    keep_unpruned: list[str] = field(default_factory=list)  # the exception's group
    ternary: bool = False
    threshold: float | None = None  # the exception: the level's sensitivity threshold
    int8_layers: list[str] = field(default_factory=list)  # ternary: kept at int8
    accuracy_control: bool = False  # INT8: NNCF returns the worst layers to FP32
    recovered: bool = True  # pruned candidates: False = compensated only, no training
    note: str | None = None  # a decision the search took about this candidate
    status: str = "pending"  # "ran" | "failed" | "skipped"
    report: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    def row(self, percentile: str) -> dict[str, Any]:
        r = self.report
        out: dict[str, Any] = {
            "name": self.name, "precision": "ternary" if self.ternary else self.precision,
            "flops_reduction": self.flops_reduction, "keep_unpruned": self.keep_unpruned,
            "sensitivity_threshold": self.threshold,
            "int8_layers": self.int8_layers, "accuracy_control": self.accuracy_control,
            "recovered": bool(self.flops_reduction) and self.recovered,
            "status": self.status, "seconds": self.seconds, "error": self.error,
            "note": self.note,
            "within_budget": False, "chosen": False,
        }
        if r is not None:
            out.update(
                accuracy=r["final"]["accuracy"], accuracy_drop=r["verdict"]["accuracy_drop"],
                accuracy_ok=r["verdict"]["accuracy_ok"], latency_ok=r["verdict"]["latency_ok"],
                latency_ms={p: r["final"]["latency_ms"].get(p) for p in ("p50", "p90", "p99")},
                latency=r["final"]["latency_ms"].get(percentile),
                ran_as=r["final"]["runtime"].get("effective_precision"),
                flops=r["final"]["flops"], params=r["final"]["params"],
                size_bytes=r["final"]["size_bytes"], within_budget=bool(r["passed"]),
                compute_seconds=sum(float(s["seconds"]) for s in r["stages"]),
                out=str(Path(r["stages"][0]["dir"]).parent),
            )
        return out


class Search:
    """One search: the trials, their order and the choice (see the module docstring)."""

    def __init__(self, base: PipelineConfig, config: SearchConfig, ui: UI) -> None:
        self.base = base
        self.config = config
        self.ui = ui
        self.root = base.out_dir / "search"
        self.trials: list[Trial] = []
        self.started = time.perf_counter()
        self.percentile = base.budget.percentile
        self.int8_control = False  # set when plain dense INT8 missed the accuracy budget
        self.runoff: dict[str, Any] | None = None  # the finalists' side-by-side latencies

    # --- running ----------------------------------------------------------------------
    def _out_of_budget(self) -> str | None:
        ran = sum(1 for t in self.trials if t.status in ("ran", "failed"))
        if ran >= self.config.max_trials:
            return f"--max-trials {self.config.max_trials} reached"
        limit = self.config.time_budget_s
        if limit is not None and time.perf_counter() - self.started > limit:
            return f"--time-budget {limit:.0f} s spent"
        return None

    def _config_for(self, trial: Trial) -> PipelineConfig:
        from edgeprune.prune.policy import PruneConfig
        from edgeprune.prune.structural import PruneOptions

        target = copy.deepcopy(self.base.target)
        target.precision = trial.precision
        if trial.accuracy_control:
            target.options[ACCURACY_CONTROL] = self.base.budget.max_drop
        prune = recover = None
        if trial.flops_reduction:
            template = self.base.prune or PruneConfig(criterion=self.config.criterion,
                                                      options=PruneOptions())
            by_level = trial.flops_reduction if trial.threshold is None else None
            in_latency = self.config.level_metric == "latency"
            prune = PruneConfig(criterion=self.config.criterion,
                                flops_reduction=None if in_latency else by_level,
                                latency_reduction=by_level if in_latency else None,
                                threshold=trial.threshold,
                                sensitivity_samples=template.sensitivity_samples,
                                options=template.options,
                                keep_groups=list(trial.keep_unpruned)).validate()
            recover = self.base.recover if trial.recovered else None
        quantize = self.base.quantize if trial.ternary else None
        if quantize is not None and trial.int8_layers:
            keep = tuple(sorted({*quantize.ternary.int8_layers, *trial.int8_layers}))
            quantize = replace(quantize, ternary=replace(quantize.ternary, int8_layers=keep))
        return replace(self.base, target=target, precision=trial.precision, prune=prune,
                       recover=recover, quantize=quantize, out_dir=self.root / trial.name)

    def run_trial(self, trial: Trial, seed_from: Trial | None = None) -> Trial:
        """Run one candidate (resuming its cached stages); a failure is recorded, not
        fatal: the search goes on with the other candidates."""
        from edgeprune.job import run_compile

        self.trials.append(trial)
        why = self._out_of_budget()
        if why:
            trial.status, trial.error = "skipped", why
            return trial
        config = self._config_for(trial)
        if seed_from is not None and not config.out_dir.exists() and (
                self.root / seed_from.name).is_dir():
            # same structure, other precision: start from its cached load/prune/recover
            shutil.copytree(self.root / seed_from.name, config.out_dir,
                            ignore=shutil.ignore_patterns("0[6-9]-*", "10-*", "report.json"))
        self.ui.note(f"search: trial {len(self.trials)} {trial.name}")
        started = time.perf_counter()
        try:
            trial.report, _ = run_compile(config, self.ui)
            trial.status = "ran"
        except EdgepruneError as exc:
            # a device target without its device (nothing to measure), or bad input (it is
            # bad for every candidate): the search stops
            if exc.exit_code in (EXIT_INPUT, EXIT_NEEDS_DEVICE):
                raise
            trial.status, trial.error = "failed", exc.problem
        trial.seconds = time.perf_counter() - started
        self._save()
        return trial

    def run(self) -> tuple[dict[str, Any], int]:
        from edgeprune.pipeline import check_output_dir

        check_output_dir(self.base.out_dir)
        self._check_level_metric()
        self.root.mkdir(parents=True, exist_ok=True)
        precisions = self.config.precisions or [
            p for p in self.base.target.precisions if p in RUNTIME_PRECISIONS]
        dense = [self.run_trial(Trial(f"dense-{p}", p, None),
                                seed_from=self.trials[0] if self.trials else None)
                 for p in precisions]
        plain = next((t for t in dense if t.precision == "int8"), None)
        if (plain is not None and plain.report is not None
                and not plain.report["verdict"]["accuracy_ok"]
                and self.base.target.backend == "openvino"
                and self.base.metric.is_top1):  # its restorer measures top-1 agreement
            self.int8_control = True  # the FP32 exception, for every INT8 candidate
            controlled = self.run_trial(Trial("dense-int8-keep-fp32", "int8", None,
                                              accuracy_control=True), seed_from=plain)
            dense = [t for t in dense if t is not plain] + [controlled]
        by_speed = [t.precision for t in sorted(
            (t for t in dense if t.report), key=lambda t: self._latency(t) or float("inf"))]
        for level in sorted(self.config.flops_levels):
            outcome = self._try_level(level, [], by_speed)
            if outcome == "stopped":
                break
            if outcome == "accuracy_missed":
                # the per-layer exception, once; deeper pruning only loses more accuracy
                worst = self._most_damaged_group(level)
                if worst is not None:
                    self._try_level(level, [worst[0]], by_speed, threshold=worst[1])
                break
            # met, or accurate enough but too slow: more pruning may be faster
        chosen = self._choose()
        if self.config.ternary and chosen is not None:
            ternary = Trial(f"{chosen.name}-ternary", "int8", chosen.flops_reduction,
                            list(chosen.keep_unpruned), ternary=True,
                            threshold=chosen.threshold)
            self.run_trial(ternary, seed_from=chosen)
            worst = self._most_damaged_ternary_layer(ternary)
            if worst is not None:  # the 8-bit exception, once
                self.run_trial(Trial(f"{chosen.name}-ternary-int8-{worst}", "int8",
                                     chosen.flops_reduction, list(chosen.keep_unpruned),
                                     ternary=True, int8_layers=[worst],
                                     threshold=chosen.threshold), seed_from=chosen)
        return self._finish(self._final_choice())

    def _try_level(self, level: float, keep: list[str], order: list[str],
                   threshold: float | None = None) -> str:
        """Try one pruning level: "met" (some precision met the whole budget; slower
        precisions are not tried), "too_slow" (accurate enough, latency goal missed),
        "accuracy_missed" (every precision lost too much) or "stopped" (trial/time budget
        spent)."""
        tag = self._tag(level) + (f"-keep-{'-'.join(keep)}" if keep else "")
        first: Trial | None = None
        first_recovered: Trial | None = None
        accurate = False
        for precision in order:
            control = precision == "int8" and self.int8_control
            name = f"{tag}-{precision}" + ("-keep-fp32" if control else "")
            compensated = self.run_trial(
                Trial(f"{name}-compensated", precision, level, keep, accuracy_control=control,
                      threshold=threshold, recovered=False), seed_from=first)
            first = first or compensated
            if compensated.status == "skipped":
                return "stopped"
            if compensated.report and compensated.report["passed"]:
                return "met"
            if compensated.report is None or compensated.report["verdict"]["accuracy_ok"]:
                accurate |= compensated.report is not None
                continue  # too slow (training cannot help), or it failed
            if self.base.recover is None or not self._can_win(compensated):
                continue
            trial = self.run_trial(Trial(name, precision, level, keep, accuracy_control=control,
                                         threshold=threshold),
                                   seed_from=first_recovered or compensated)
            first_recovered = first_recovered or trial
            if trial.status == "skipped":
                return "stopped"
            if trial.report and trial.report["passed"]:
                return "met"
            accurate |= bool(trial.report and trial.report["verdict"]["accuracy_ok"])
        return "too_slow" if accurate else "accuracy_missed"

    def _can_win(self, trial: Trial) -> bool:
        """Worth training: measurably faster than every candidate within budget so far
        (a tie goes to the more accurate one, which needs no training)."""
        latency = self._latency(trial)
        passing = [self._latency(t) for t in self._passing()]
        if latency is None or not passing:
            return latency is not None
        if latency < min(passing) * (1 - TIE):  # type: ignore[type-var]
            return True
        trial.note = (f"not recovered: {self.percentile} {latency:.3f} ms cannot beat the "
                       f"fastest candidate within budget ({min(passing):.3f} ms)")  # type: ignore[type-var]
        return False

    def _check_level_metric(self) -> None:
        """Latency levels need latency tables measured by the target's runner: refused
        before any candidate runs where the target builds its engines on the device."""
        from edgeprune.backends import get_backend
        from edgeprune.errors import InputError

        target = self.base.target
        if (self.config.level_metric == "latency" and self.config.flops_levels
                and getattr(get_backend(target.backend), "needs_device", False)):
            raise InputError(f"--search-levels-in latency measures latency tables with the "
                             f"target's runner, and {target.name} builds its engines on the "
                             "device (not supported for tables yet)",
                             fix="use --search-levels-in flops for this target")

    def _tag(self, level: float) -> str:
        """A level's candidate-name prefix: prune30 (FLOPs) or latency30 (latency)."""
        kind = "latency" if self.config.level_metric == "latency" else "prune"
        return f"{kind}{round(level * 100):02d}"

    def _most_damaged_group(self, level: float) -> tuple[str, float | None] | None:
        """The layer group whose pruning alone cost the most accuracy at the ratio the
        level gave it, and the level's sensitivity threshold (read from the level's
        sensitivity analysis and plan)."""
        tag = self._tag(level)
        for trial in self.trials:
            if not trial.name.startswith(tag + "-") or "-keep-" in trial.name:
                continue
            prune_dir = self.root / trial.name / "03-prune"
            try:
                curves = json.loads((prune_dir / "sensitivity.json").read_text())["curves"]
                metrics = json.loads((prune_dir / "metrics.json").read_text())
                ratios, threshold = metrics["ratios"], metrics["choice"].get("threshold")
            except (OSError, KeyError, json.JSONDecodeError):
                continue
            damage = {}
            for group, ratio in ratios.items():
                # the curve's first step at or beyond the group's ratio (a latency level's
                # ratios come from measured channel counts, between the curve's steps)
                at = next((acc for r, acc in curves.get(group, []) if r >= ratio - 1e-4),
                          None)
                if ratio > 0 and at is not None:
                    damage[group] = at
            if damage:
                return min(damage, key=damage.__getitem__), threshold
        return None

    def _most_damaged_ternary_layer(self, trial: Trial) -> str | None:
        """When a ternary candidate missed the accuracy budget: the layer the quantize
        stage found most damaged by ternarization alone (None when it met it)."""
        if trial.report is None or trial.report["verdict"]["accuracy_ok"]:
            return None
        try:
            metrics = json.loads((self.root / trial.name / "05-quantize" /
                                  "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return (metrics.get("layer_sensitivity") or {}).get("most_damaged")

    # --- choosing and reporting ---------------------------------------------------------
    def _latency(self, trial: Trial) -> float | None:
        if trial.report is None:
            return None
        return trial.report["final"]["latency_ms"].get(self.percentile)

    def _passing(self) -> list[Trial]:
        """Within budget, measured, and not slower than the dense model at its precision."""
        return [t for t in self.trials if t.report and t.report["passed"] and self._latency(t)
                and not self._slower_than_dense(t, self._latency)]

    def _dense_twin(self, trial: Trial) -> Trial | None:
        """The dense candidate at a pruned candidate's precision, when it was measured."""
        if not trial.flops_reduction:
            return None
        return next((t for t in self.trials if t.flops_reduction is None and not t.ternary
                     and t.precision == trial.precision and t.report is not None
                     and t.accuracy_control == trial.accuracy_control), None)

    def _slower_than_dense(self, trial: Trial,
                           latency: Callable[[Trial], float | None]) -> bool:
        """A pruned candidate slower than the dense model at the same precision is never
        chosen (pruning that breaks the runtime's fast kernels, e.g. odd channel counts):
        its note says so."""
        twin = self._dense_twin(trial)
        if twin is None:
            return False
        mine, dense = latency(trial), latency(twin)
        if mine is None or dense is None or mine <= dense:
            return False
        why = (f"slower than {twin.name} ({self.percentile} {mine:.3f} ms vs {dense:.3f} ms): "
               "a pruned model slower than the dense one at its precision is never chosen")
        if why not in (trial.note or ""):
            trial.note = f"{trial.note}; {why}" if trial.note else why
        return True

    @staticmethod
    def _fastest(candidates: list[Trial], latency: Callable[[Trial], float]) -> Trial:
        """The fastest; candidates within TIE of it are equally fast, the most accurate
        of them wins."""
        best = min(latency(t) for t in candidates)
        tied = [t for t in candidates if latency(t) <= best * (1 + TIE)]
        return max(tied, key=lambda t: t.report["final"]["accuracy"])  # type: ignore[index]

    def _choose(self) -> Trial | None:
        ok = self._passing()
        return self._fastest(ok, self._latency) if ok else None  # type: ignore[arg-type]

    def _distance(self, trial: Trial) -> tuple[float, float]:
        """How far a measured candidate is from the budget: accuracy points over it
        first, then latency (so when only the latency goal is out of reach, the closest
        is the fastest accurate-enough one)."""
        over = trial.report["verdict"]["accuracy_drop"] - self.base.budget.max_drop  # type: ignore[index]
        return max(0.0, over), self._latency(trial) or float("inf")

    def _final_choice(self) -> Trial | None:
        """The choice, with the finalists re-measured side by side (see the module doc)."""
        from edgeprune.backends import get_backend

        ok = self._passing()
        if not ok:
            return None
        fastest = min(self._latency(t) for t in ok)  # type: ignore[type-var]
        finalists = [t for t in ok if self._latency(t) <= fastest * (1 + RUNOFF)]  # type: ignore[operator]
        if len(finalists) < 2 or getattr(get_backend(self.base.target.backend), "needs_device",
                                         False):
            return self._choose()  # device bundles are built per run on the device
        self.runoff = self._side_by_side(finalists)
        latency = {name: stats[self.percentile] for name, stats in
                   self.runoff["latency_ms"].items()}
        remeasured = [t for t in finalists
                      if not self._slower_than_dense(t, lambda c: latency.get(c.name))]
        return self._fastest(remeasured, lambda t: latency[t.name])  # twins are finalists too

    def _side_by_side(self, finalists: list[Trial]) -> dict[str, Any]:
        """Profile the finalists' compiled artifacts in alternating rounds of one run."""
        from edgeprune.pipeline import RunContext
        from edgeprune.stages.common import (
            loop_settings,
            merge_runs,
            run_profiler,
            save_profile_inputs,
        )

        started = time.perf_counter()
        ctx = RunContext(self._config_for(finalists[0]), self.ui)
        inputs = self.root / "runoff-inputs.npy"
        save_profile_inputs(ctx, inputs)
        loop = loop_settings(ctx, share=1.0 / RUNOFF_ROUNDS)
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in finalists}
        with self.ui.task(f"search: {len(finalists)} finalists side by side",
                          RUNOFF_ROUNDS * len(finalists)) as advance:
            for _ in range(RUNOFF_ROUNDS):
                for t in finalists:
                    compile_dir = self.root / t.name / "07-compile"
                    metrics = json.loads((compile_dir / "metrics.json").read_text())
                    runs[t.name].append(run_profiler(ctx, compile_dir / metrics["artifact"],
                                                     metrics["precision"], inputs, loop))
                    advance(1)
        inputs.unlink(missing_ok=True)
        batch = self.base.target.batch
        return {"rounds": RUNOFF_ROUNDS, "within": RUNOFF,
                "seconds": time.perf_counter() - started, "latency_ms": {
            name: merge_runs(r, batch)["latency_ms"] for name, r in runs.items()}}

    def _why(self, chosen: Trial | None) -> str:
        p = self.percentile
        if chosen is None:
            near = sorted((t for t in self.trials if t.report), key=self._distance)
            if not near:
                return "no candidate could be built and measured"
            best = near[0]
            return (f"no candidate met the budget; the closest, {best.name}, lost "
                    f"{best.report['verdict']['accuracy_drop']:.2f} points (budget "
                    f"{self.base.budget.max_drop}): "
                    + "; ".join(best.report["verdict"]["reasons"]))
        lat = self._latency(chosen)
        if self.runoff and chosen.name in self.runoff["latency_ms"]:
            lat = self.runoff["latency_ms"][chosen.name][p]
        parts = [f"{chosen.name} is the fastest candidate within budget: {p} {lat:.3f} ms, "
                 f"{self.base.metric.label} drop "
                 f"{chosen.report['verdict']['accuracy_drop']:.2f} points"]
        if self.runoff:
            parts.append(
                f"finalists (within {RUNOFF:.0%}) re-measured side by side in "
                f"{self.runoff['rounds']} alternating rounds: " + ", ".join(
                    f"{name} {stats[p]:.3f} ms" for name, stats in
                    sorted(self.runoff["latency_ms"].items(), key=lambda kv: kv[1][p]))
                + f" (within {TIE:.0%} counts as a tie, won by accuracy)")
        dense = {t.name.removeprefix("dense-"): t for t in self.trials
                 if t.name.startswith("dense-") and not t.ternary and t.report}
        measured = ", ".join(f"{name} {self._latency(t):.3f} ms" for name, t in dense.items())
        if measured:
            parts.append(f"dense precisions measured on the target: {measured}")
        faster = [t for t in self.trials if t.report and self._latency(t) is not None
                  and self._latency(t) < lat and not t.report["passed"]]
        if faster:
            parts.append("faster but over budget: " + ", ".join(
                f"{t.name} ({self._latency(t):.3f} ms, drop "
                f"{t.report['verdict']['accuracy_drop']:.2f})" for t in faster))
        return "; ".join(parts)

    def _rows(self, chosen: Trial | None) -> list[dict[str, Any]]:
        rows = []
        for t in self.trials:
            row = t.row(self.percentile)
            row["chosen"] = chosen is not None and t.name == chosen.name
            if t.report is not None:
                b = self.base.budget
                row["distance"] = {
                    "accuracy_points_over": max(0.0, row["accuracy_drop"] - b.max_drop),
                    "latency_ms_over": (max(0.0, (row["latency"] or 0) - b.latency_ms)
                                        if b.latency_ms is not None else None)}
            rows.append(row)
        return rows

    def _compute_seconds(self) -> float:
        """What the search cost: every stage the candidates ran, once (a resumed search
        and stages shared by the precisions of one structure count their original time),
        plus the finalists' re-measurement."""
        seen: dict[tuple[str, str], float] = {}
        for t in self.trials:
            for stage in (t.report or {}).get("stages", []):
                try:
                    key = json.loads((Path(stage["dir"]) / "metrics.json").read_text())["key"]
                except (OSError, KeyError, json.JSONDecodeError):
                    key = stage["dir"]
                seen[(stage["name"], str(key))] = float(stage["seconds"])
        return sum(seen.values()) + (self.runoff or {}).get("seconds", 0.0)

    def _save(self, chosen: Trial | None = None) -> None:
        write_json_atomic(self.root / "trials.json", {
            "search": self.config.to_dict(), "budget": self.base.budget.__dict__,
            "trials": self._rows(chosen), "runoff": self.runoff})

    def _finish(self, chosen: Trial | None) -> tuple[dict[str, Any], int]:
        from edgeprune.report.build import schema

        rows = self._rows(chosen)
        self._save(chosen)
        ran = [t for t in self.trials if t.report]
        if not ran:
            raise EdgepruneError("the search could not build and measure any candidate: "
                                 + "; ".join(f"{t.name}: {t.error}" for t in self.trials),
                                 fix="run one candidate with --debug (e.g. without --search)")
        pick = chosen or min(ran, key=self._distance)
        report = dict(pick.report)  # type: ignore[arg-type]
        report["search"] = {
            "trials": rows, "chosen": chosen.name if chosen else None,
            "why": self._why(chosen), "seconds": time.perf_counter() - self.started,
            "trials_run": sum(1 for t in self.trials if t.status in ("ran", "failed")),
            "config": self.config.to_dict(), "reported_trial": pick.name,
            "runoff": self.runoff, "compute_seconds": self._compute_seconds(),
        }
        report["command"] = self.base.command
        import jsonschema

        jsonschema.validate(report, schema())
        write_json_atomic(self.base.out_dir / "report.json", report)
        from edgeprune.report.html import write_human_reports

        write_human_reports(report, self.base.out_dir)
        return report, EXIT_OK if chosen is not None else EXIT_BUDGET_MISSED
