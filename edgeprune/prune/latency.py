"""Latency-aware pruning: what each group's channels cost on the target, measured there.

FLOPs do not turn into milliseconds one for one: a residual stream cut from 16 to 15
channels saves 6% of its FLOPs and breaks the vector alignment of every convolution on
it. So the allocation reads latencies measured by the target runtime itself:

* **Table** -- for each prunable group, the WHOLE model with only that group pruned to each
  kept count of a grid, compiled by the target's backend and timed by the target's runner
  (``python -m edgeprune.runner table``: here, or on the device over SSH, as the profile
  stage), in rounds that alternate with two separately compiled copies of the dense
  model, many short rounds. An entry is the variant's latency RATIO to the dense copies
  paired per round (median over rounds): a whole runner process can run ~35% slower
  than the next with every model in it alike, and the machine drifts within one, so
  differences of p50s from different processes or moments do not compare; paired ratios
  do (``paired_ratios``). Its noise: the larger of the median's error and the two dense
  copies' ratio to each other (a compiled artifact's own luck). A group whose runner ran
  more than ``SLOW_RUN`` slow is measured again. Savings are read in ms of one reference,
  the median dense latency over the table's runs. Tables are cached per architecture,
  target, precision, threads, batch and input shape.
* **Steps** -- a kept count is offered to the allocation only if it is faster than every
  larger measured count by more than the noise: channel counts snap to where the
  runtime's latency actually steps down, not to a fixed ``--round-to``.
* **Allocation** -- a multiple-choice knapsack: per group one kept count, minimizing the
  summed accuracy loss of the sensitivity curves for the summed measured saving >= the
  requested share of the dense latency.
* **Prediction** -- per-group savings do not simply add: a convolution between two pruned
  groups loses ``cin * cout`` multiplicatively, so each group's single-group saving
  counts part of the same work twice. The summed savings are scaled by the same overlap
  in FLOPs (the joint FLOPs saving over the summed single-group FLOPs savings, both
  counted, not measured). What the runtime does beyond FLOPs (fixed per-layer overhead
  that pruning does not remove) is learnt by measuring: once an allocation has been
  measured, later predictions are scaled by measured / predicted saving so far.
* **Check** -- each allocation is measured beside the dense model (its paired ratio, in
  three times the table's rounds; a slow run is re-run once); when the measured
  latency misses the goal, the requested saving is rescaled by that calibration and the
  allocation solved again (at most ``ROUNDS_TO_GOAL`` times, never measuring the same
  allocation twice). Every prediction is made BEFORE its allocation is measured, so the
  reported prediction error is a real one.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import StageFailure
from edgeprune.model import count_flops
from edgeprune.prune.importance import Criterion
from edgeprune.prune.structural import PruneGroup, PruneOptions, find_groups, prune_copy
from edgeprune.report.environment import cpu_model

GRID_POINTS = 7  # kept counts per group, besides the dense count
TABLE_FORMAT = 4  # bumped when the cached table's contents change
ROUNDS_TO_GOAL = 3
# A table or check run whose dense model is this much slower than typical is re-run once.
SLOW_RUN = 0.15
# The achieved latency reduction is kept within this many points of the request.
TOLERANCE = 0.03
Progress = Callable[[str], None]


@dataclass
class LatencyProbe:
    """Where and how latencies are measured: the target's backend, precision, threads and
    batch, locally or on ``remote`` (a RemoteSettings with a host) over SSH."""

    backend: str
    precision: str
    threads: int = 0
    batch: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    remote: Any = None
    rounds: int = 9
    iterations: int = 20
    seconds: float = 0.1

    def facts(self) -> dict[str, Any]:
        """What a measured latency depends on besides the model (the cache key)."""
        host = getattr(self.remote, "host", "") if self.remote is not None else ""
        return {"backend": self.backend, "precision": self.precision, "threads": self.threads,
                "batch": self.batch, "options": self.options, "host": host,
                "machine": "" if host else f"{platform.machine()} {cpu_model()}",
                "runtime": "" if host else _runtime_version(self.backend)}

    def measure(self, models: Sequence[nn.Module], example: torch.Tensor,
                inputs: np.ndarray, reference: int = 1) -> list[dict[str, Any]]:
        """Each model's p50 (ms, median over rounds) and its latency RATIO to the first
        ``reference`` models (paired per round, see ``paired_ratios``), all timed in the
        same alternating rounds by one runner process."""
        from edgeprune.backends import get_backend
        from edgeprune.backends.base import CompileRequest
        from edgeprune.export import export_onnx

        backend = get_backend(self.backend)
        with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
            root = Path(tmp)
            artifacts = []
            for i, model in enumerate(models):
                folder = root / f"v{i:03d}"
                folder.mkdir()
                export_onnx(model, example, folder / "model.onnx", exporter="torchscript")
                result = backend.compile(CompileRequest(
                    folder / "model.onnx", folder, self.precision, self.threads,
                    dict(self.options)))
                artifacts.append(folder / result.artifact)
            np.save(root / "inputs.npy", inputs[: max(self.batch, 1)])
            rounds = self._run(artifacts, root / "inputs.npy")
        return paired_ratios(np.asarray(rounds, dtype=float), reference)

    def _run(self, artifacts: list[Path], inputs: Path) -> list[list[float]]:
        request = {"backend": self.backend, "artifacts": [str(a) for a in artifacts],
                   "precision": self.precision, "threads": self.threads, "batch": self.batch,
                   "options": dict(self.options), "inputs": str(inputs),
                   "rounds": self.rounds, "round_warmup": 3,
                   "loop": {"warmup_iterations": 20, "min_iterations": self.iterations,
                            "min_seconds": self.seconds, "max_seconds": 10 * self.seconds}}
        if self.remote is not None and getattr(self.remote, "host", ""):
            return _remote_table(self.remote, request, artifacts, inputs)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(request, fh)
        try:
            proc = subprocess.run([sys.executable, "-m", "edgeprune.runner", "table", fh.name],
                                  capture_output=True, text=True, check=False, timeout=3600)
        finally:
            Path(fh.name).unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StageFailure(f"the latency-table runner failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}",
                               fix="run with --debug; check that the target's runtime is "
                               "installed")
        return json.loads(proc.stdout)["p50_ms"]


def paired_ratios(rounds: np.ndarray, reference: int) -> list[dict[str, Any]]:
    """Per model (columns of ``rounds``, one row per round): its p50 and its latency
    ratio to the mean of the first ``reference`` models IN THE SAME ROUND, the median
    over rounds. A machine's speed drifts, and one process runs as much as 35% slower
    than the next with every model in it alike (measured: 1 process in 10 on this
    2-core VM); a ratio paired in time cancels both, a difference of p50s does not.
    ``ratio_noise`` is twice the median's standard error (from the MAD of the rounds)."""
    reference = max(1, min(reference, rounds.shape[1]))
    ref = rounds[:, :reference].mean(axis=1, keepdims=True)
    per_round = rounds / np.maximum(ref, 1e-12)
    out = []
    for ms, ratio in zip(rounds.T, per_round.T, strict=True):
        mad = float(np.median(np.abs(ratio - np.median(ratio))))
        stderr = 1.4826 * mad * 1.2533 / math.sqrt(len(ratio))
        out.append({"p50_ms": float(np.median(ms)), "noise_ms": float(ms.max() - ms.min()),
                    "ratio": float(np.median(ratio)), "ratio_noise": 2 * stderr,
                    "rounds_ms": [round(float(v), 5) for v in ms]})
    return out


def _remote_table(remote: Any, request: dict[str, Any], artifacts: list[Path],
                  inputs: Path) -> list[list[float]]:
    """The table request on the device: every variant's files renamed v000.*, v001.*, ...
    into one upload (each variant's artifact folder holds files of the same names)."""
    from edgeprune.remote import host_from_settings, run_table

    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-up-") as tmp:
        files, names = [], []
        for i, artifact in enumerate(artifacts):
            for path in artifact.parent.iterdir():
                if path.is_file() and path.name.startswith(artifact.stem + "."):
                    target = Path(tmp) / f"v{i:03d}{path.name[len(artifact.stem):]}"
                    shutil.copyfile(path, target)
                    files.append(target)
            names.append(f"v{i:03d}{artifact.suffix}")
        out = run_table(host_from_settings(remote), request, names, files, inputs,
                        remote.command_timeout_s)
    return out["p50_ms"]


def _runtime_version(backend: str) -> str:
    """The backend package's version (openvino, onnxruntime); "" when not a package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(backend)
    except PackageNotFoundError:
        return ""


def grid(group: PruneGroup, options: PruneOptions) -> list[int]:
    """Kept counts to measure for a group, largest first: about every eighth of its
    channels, on multiples of the largest power of two (<= 16) that fits an eighth (so
    vector-aligned sizes are among them), of its channel groups and of ``--round-to``."""
    if group.heads:
        per_head = group.channels // group.heads
        return [h * per_head for h in range(group.heads - 1, 0, -1)][:GRID_POINTS]
    step = math.lcm(options.round_to, group.channel_groups)
    eighth = group.channels / 8
    align = max((a for a in (16, 8, 4, 2, 1) if a <= max(eighth, 1)), default=1)
    unit = math.lcm(align, step)
    kept = set()
    for i in range(1, GRID_POINTS + 1):
        k = round(group.channels * (1 - i / 8) / unit) * unit
        k = max(k, math.ceil(options.min_channels / unit) * unit)
        if 0 < k < group.channels:
            kept.add(k)
    return sorted(kept, reverse=True)


def ratio_for(group: PruneGroup, kept: int) -> float:
    """The ratio whose keep() is ``kept`` (the floor in keep_count is guarded by 1e-9)."""
    return (group.channels - kept) / group.channels


def table_key(model: nn.Module, example: torch.Tensor, groups: list[PruneGroup],
              grids: dict[str, list[int]], probe: LatencyProbe) -> str:
    digest = hashlib.sha256()
    digest.update(repr(model).encode())
    digest.update(json.dumps([TABLE_FORMAT, list(example.shape[1:]), grids, probe.facts(),
                              {g.name: g.channels for g in groups}, probe.rounds,
                              probe.iterations], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def build_table(model: nn.Module, example: torch.Tensor, criterion: Criterion,
                options: PruneOptions, probe: LatencyProbe, inputs: np.ndarray,
                cache: Path | None = None, progress: Progress | None = None
                ) -> dict[str, Any]:
    """Per group: the dense latency and each grid point's, measured in the same rounds."""
    _, groups = find_groups(model, example, options)
    grids = {g.name: grid(g, options) for g in groups}
    key = table_key(model, example, groups, grids, probe)
    path = cache / f"{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        table = json.loads(path.read_text())
        table["cached"] = str(path)
        return table
    started = time.perf_counter()
    shape = (1, *example.shape[1:])
    dense_flops = count_flops(model, shape)
    by_name = {g.name: g for g in groups}

    def measure_group(group: PruneGroup) -> dict[str, Any]:
        variants = [model, model] + [
            prune_copy(model, example, {group.name: ratio_for(group, k)}, criterion,
                       options)[0] for k in grids[group.name]]
        measured = probe.measure(variants, example, inputs, reference=2)
        dense_ms, noise = dense_pair(measured[0], measured[1])
        return {
            "channels": group.channels, "dense_ms": dense_ms, "dense_noise": noise,
            "points": [{**m, "kept": k, "noise": max(m["ratio_noise"], noise),
                        "saved_flops": dense_flops - count_flops(v, shape)}
                       for k, m, v in zip(grids[group.name], measured[2:], variants[2:],
                                          strict=True)]}

    entries: dict[str, Any] = {}
    for n, group in enumerate(groups, 1):
        if progress:
            progress(f"latency table: group {n}/{len(groups)} ({group.name}, "
                     f"{len(grids[group.name])} sizes)")
        entries[group.name] = measure_group(group)
    typical = float(np.median([e["dense_ms"] for e in entries.values()])) if entries else 0
    for name in [n for n, e in entries.items() if slow_run(e["dense_ms"], typical)]:
        if progress:
            progress(f"latency table: {name} again (its runner ran "
                     f"{entries[name]['dense_ms'] / typical - 1:+.0%} slow)")
        again = measure_group(by_name[name])
        again["remeasured"] = True
        if again["dense_ms"] < entries[name]["dense_ms"]:  # the less disturbed run
            entries[name] = again
    dense_all = [e["dense_ms"] for e in entries.values()]
    reference = float(np.median(dense_all)) if dense_all else 0.0
    for entry in entries.values():  # ratios -> ms of the table's one reference latency
        entry["dense_noise_ms"] = entry["dense_noise"] * reference
        for point in entry["points"]:
            point["saved_ms"] = (1 - point["ratio"]) * reference
            point["noise_ms"] = point["noise"] * reference
    table = {"key": key, "probe": probe.facts(), "input_shape": list(example.shape[1:]),
             "dense_flops": dense_flops,
             "dense_ms": reference,
             "dense_noise_ms": float(np.ptp(dense_all)) if dense_all else 0.0,
             "groups": entries, "seconds": time.perf_counter() - started}
    if path is not None:
        from edgeprune.pipeline import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, table)
    return table


def slow_run(dense_ms: float, typical_ms: float) -> bool:
    """A runner process whose dense copies ran more than ``SLOW_RUN`` over the typical
    dense latency: its ratios are less trustworthy (such a process is not uniformly slow
    for every model), so it is measured again."""
    return typical_ms > 0 and dense_ms > (1 + SLOW_RUN) * typical_ms


def dense_pair(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """The dense latency (ms) from two separately compiled copies of the dense model, and
    the noise of a ratio measured against them: the copies' ratio to each other (each
    compiled artifact has its own luck -- memory placement, thread start-up -- that
    rounds of one artifact never show) or a copy's own ratio noise, whichever is larger."""
    return ((a["p50_ms"] + b["p50_ms"]) / 2,
            max(abs(a["ratio"] - b["ratio"]), a["ratio_noise"], b["ratio_noise"]))


def steps(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid points where latency steps down: each faster than the dense group and
    than every larger kept count by more than the noise of both."""
    chosen: list[dict[str, Any]] = []
    best_saved, best_noise = 0.0, 0.0
    for point in entry["points"]:  # largest kept first
        if point["saved_ms"] > best_saved + max(point["noise_ms"], best_noise):
            chosen.append(point)
            best_saved, best_noise = point["saved_ms"], point["noise_ms"]
    return chosen


def accuracy_cost(curve: list[list[float]], group: PruneGroup, options: PruneOptions,
                  kept: int, base: float) -> float | None:
    """Accuracy lost at ``kept`` channels, read off the group's sensitivity curve: the
    first step keeping at most ``kept`` (pessimistic), over the curve's running minimum
    (so a group's cost never falls as it loses more); None beyond the curve's end."""
    floor = float("inf")
    for ratio, acc in curve:
        floor = min(floor, acc)
        if group.keep(options, ratio) <= kept:
            return max(base - floor, 0.0)
    return None


def allocate(table: dict[str, Any], analysis: dict[str, Any], groups: list[PruneGroup],
             options: PruneOptions, saving_ms: float, resolution: int = 2000
             ) -> dict[str, int]:
    """Kept channels per group (groups absent stay whole) whose summed measured saving
    reaches ``saving_ms`` at the least summed accuracy loss: a multiple-choice knapsack,
    solved exactly by dynamic programming over the saving in ``resolution`` units of the
    dense latency. Ties go to removing fewer channels."""
    base = analysis["baseline_accuracy"]
    unit = max(table["dense_ms"], 1e-9) / resolution
    need = max(math.ceil(saving_ms / unit), 0)
    options_per_group: list[tuple[str, list[tuple[int, int, float]]]] = []
    for group in groups:
        entry = table["groups"].get(group.name)
        curve = analysis["curves"].get(group.name)
        if entry is None or curve is None:
            continue
        choices = []
        for point in steps(entry):
            cost = accuracy_cost(curve, group, options, point["kept"], base)
            if cost is None:
                continue
            removed = 1 - point["kept"] / group.channels
            choices.append((point["kept"], int(point["saved_ms"] / unit),
                            cost + 1e-3 * removed))
        if choices:
            options_per_group.append((group.name, choices))
    inf = float("inf")
    best = [0.0] + [inf] * need  # best[s]: least cost of a saving of s units (s capped)
    back: list[list[tuple[int, int]]] = []  # per group, per state: (choice, previous state)
    for _, choices in options_per_group:
        new = list(best)
        came = [(-1, s) for s in range(need + 1)]  # -1: the group stays whole
        for s, cost in enumerate(best):
            if cost == inf:
                continue
            for i, (_, gain, extra) in enumerate(choices):
                t = min(need, s + gain)
                if cost + extra < new[t]:
                    new[t], came[t] = cost + extra, (i, s)
        back.append(came)
        best = new
    reachable = [s for s, cost in enumerate(best) if cost < inf]
    state = need if best[need] < inf else max(reachable)
    kept: dict[str, int] = {}
    for (name, choices), came in zip(reversed(options_per_group), reversed(back),
                                     strict=True):
        choice, state = came[state]
        if choice >= 0:
            kept[name] = choices[choice][0]
    return kept


def predict(table: dict[str, Any], kept: dict[str, int], joint_flops: int | None = None,
            calibration: float = 1.0) -> dict[str, Any]:
    """Dense latency minus the groups' measured single-group savings at their kept counts,
    scaled by the FLOPs overlap (``joint_flops``: the FLOPs of the model pruned by all of
    ``kept`` at once; None: no overlap correction) and by ``calibration`` (measured /
    predicted saving of earlier allocations; 1.0 before any was measured)."""
    saved, saved_flops = {}, 0
    for name, k in kept.items():
        point = next(p for p in table["groups"][name]["points"] if p["kept"] == k)
        saved[name] = point["saved_ms"]
        saved_flops += point.get("saved_flops", 0)
    additive = sum(saved.values())
    overlap = 1.0
    if joint_flops is not None and saved_flops > 0 and "dense_flops" in table:
        overlap = (table["dense_flops"] - joint_flops) / saved_flops
    total = additive * overlap * calibration
    dense = table["dense_ms"]
    return {"latency_ms": dense - total, "saved_ms": saved, "ratio": (dense - total) / dense,
            "additive_ratio": (dense - additive) / dense, "overlap": overlap,
            "calibration": calibration}


@dataclass
class LatencyRequest:
    """What a latency allocation measures with: the probe, real input images, the table
    cache folder, and a progress callback."""

    probe: LatencyProbe
    inputs: np.ndarray
    cache: Path | None = None
    progress: Progress | None = None


def _solve(model: nn.Module, example: torch.Tensor, table: dict[str, Any],
           analysis: dict[str, Any], groups: list[PruneGroup], criterion: Criterion,
           options: PruneOptions, goal_ms: float, calibration: float
           ) -> tuple[dict[str, int], dict[str, Any], nn.Module]:
    """The allocation whose PREDICTED saving (overlap- and calibration-scaled) is
    ``goal_ms``: the knapsack runs on summed single-group savings, so the saving it is
    asked for is corrected by the prediction's scale until they agree (a few passes;
    FLOPs are counted, nothing is measured here)."""
    by_name = {g.name: g for g in groups}
    shape = (1, *example.shape[1:])
    wanted = goal_ms / max(calibration, 1e-6)
    solved: list[tuple[dict[str, int], dict[str, Any], nn.Module]] = []
    for _ in range(4):
        kept = allocate(table, analysis, groups, options, wanted)
        if solved and kept == solved[-1][0]:
            break
        ratios = {name: ratio_for(by_name[name], k) for name, k in kept.items()}
        pruned = prune_copy(model, example, ratios, criterion, options)[0]
        predicted = predict(table, kept, count_flops(pruned, shape), calibration)
        solved.append((kept, predicted, pruned))
        saving = table["dense_ms"] - predicted["latency_ms"]
        additive = table["dense_ms"] * (1 - predicted["additive_ratio"])
        if saving <= 0 or abs(saving - goal_ms) <= 0.25 * TOLERANCE * table["dense_ms"]:
            break
        wanted = goal_ms * additive / saving
    # the pass whose predicted saving is closest to the goal, preferring ones reaching it
    return min(solved, key=lambda r: (table["dense_ms"] - r[1]["latency_ms"] < goal_ms
                                      - 0.25 * TOLERANCE * table["dense_ms"],
                                      abs(table["dense_ms"] - r[1]["latency_ms"] - goal_ms)))


def allocate_for_latency(model: nn.Module, example: torch.Tensor, analysis: dict[str, Any],
                         criterion: Criterion, options: PruneOptions, target: float,
                         request: LatencyRequest) -> dict[str, Any]:
    """Ratios whose MEASURED latency is ``target`` (a fraction) below the dense model's,
    losing the least accuracy by the sensitivity curves; each allocation's latency is
    predicted, then measured beside the dense model, and the prediction recalibrated
    (module docstring)."""
    probe = request.probe
    table = build_table(model, example, criterion, options, probe, request.inputs,
                        request.cache, request.progress)
    _, groups = find_groups(model, example, options)
    by_name = {g.name: g for g in groups}
    goal_ms = target * table["dense_ms"]
    # three models only: many more rounds for the same time, the check decides the result
    check_probe = replace(probe, rounds=3 * probe.rounds)
    attempts: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    calibration, measured_sum, predicted_sum = 1.0, 0.0, 0.0
    stopped = ""
    for attempt in range(ROUNDS_TO_GOAL):
        kept, predicted, pruned = _solve(model, example, table, analysis, groups, criterion,
                                         options, goal_ms, calibration)
        if any(a["kept"] == kept for a in attempts):
            stopped = "the recalibrated allocation is one already measured"
            break
        ratios = {name: ratio_for(by_name[name], k) for name, k in kept.items()}
        if request.progress:
            request.progress(f"latency check {attempt + 1}: predicted "
                             f"{predicted['ratio']:.3f} of dense; measuring it beside the "
                             "dense model")
        dense_a, dense_b, pruned_m = check_probe.measure([model, model, pruned], example,
                                                         request.inputs, reference=2)
        dense_ms, dense_noise = dense_pair(dense_a, dense_b)
        if slow_run(dense_ms, table["dense_ms"]):
            again = check_probe.measure([model, model, pruned], example, request.inputs,
                                        reference=2)
            if dense_pair(again[0], again[1])[0] < dense_ms:
                dense_a, dense_b, pruned_m = again
                dense_ms, dense_noise = dense_pair(dense_a, dense_b)
        measured_ratio = pruned_m["ratio"]
        record = {"kept": kept, "ratios": ratios,
                  "predicted_ms": predicted["ratio"] * dense_ms,
                  "predicted_ratio": predicted["ratio"],
                  "additive_ratio": predicted["additive_ratio"],
                  "overlap": predicted["overlap"], "calibration": calibration,
                  "measured_dense_ms": dense_ms, "measured_ms": measured_ratio * dense_ms,
                  "measured_ratio": measured_ratio,
                  "noise_ratio": max(pruned_m["ratio_noise"], dense_noise),
                  "saved_ms": predicted["saved_ms"]}
        attempts.append(record)
        reached = 1 - measured_ratio >= target - TOLERANCE
        if best is None or (reached and not best["reached"]) or (
                reached == best["reached"] and abs(1 - measured_ratio - target)
                < abs(1 - best["measured_ratio"] - target)):
            best = {**record, "reached": reached}
        if abs(1 - measured_ratio - target) <= TOLERANCE:
            break
        # what the runtime saves per predicted (overlap-corrected) saving, so far
        measured_sum += 1 - measured_ratio
        predicted_sum += (1 - predicted["ratio"]) / calibration
        if measured_sum <= 0 or predicted_sum <= 0:
            stopped = "pruning did not make the model measurably faster"
            break
        calibration = measured_sum / predicted_sum
    assert best is not None
    achieved = 1 - best["measured_ratio"]
    warnings = []
    if abs(achieved - target) > TOLERANCE:
        warnings.append(
            f"the measured latency reduction is {achieved:.1%} for the {target:.0%} asked "
            f"for (tolerance {TOLERANCE:.0%}) after {len(attempts)} measured "
            f"allocation(s){'; ' + stopped if stopped else ''}: "
            + ("the groups' measured steps cannot save that much within the sensitivity "
               "curves" if achieved < target else "the smallest measured step that reaches "
               "the target saves that much"))
    error = best["predicted_ratio"] / best["measured_ratio"] - 1
    summary = {
        "target": target, "tolerance": TOLERANCE, "precision": probe.precision,
        "dense_ms": best["measured_dense_ms"], "measured_ms": best["measured_ms"],
        "predicted_ms": best["predicted_ms"], "prediction_error": error,
        "first_prediction_error": attempts[0]["predicted_ratio"]
        / attempts[0]["measured_ratio"] - 1, "reduction": achieved,
        "table": {"seconds": table["seconds"], "cached": table.get("cached"),
                  "dense_ms": table["dense_ms"], "dense_noise_ms": table["dense_noise_ms"],
                  "key": table["key"], "probe": table["probe"]},
        "saved_ms": best["saved_ms"], "kept": best["kept"], "attempts": attempts}
    return {"ratios": best["ratios"], "reduction": achieved, "metric": "latency",
            "target": target, "target_met": best["reached"], "warnings": warnings,
            "latency": summary, "table": table}
