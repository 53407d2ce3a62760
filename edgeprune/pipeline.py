"""Stage order, the workspace under ``out/``, caching and resume.

Every stage writes ``out/NN-stage/`` (artifacts + ``metrics.json``) atomically: it works
in a temporary folder that is renamed into place only when the stage succeeded, so an
interrupted run leaves either a complete stage or none. A stage's cache key chains its
own config with the key of the stage before it, so a change anywhere re-runs exactly
the stages downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from edgeprune import __version__, interrupt
from edgeprune.config import Budget, TargetProfile, check_overrides
from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import (
    DataOptions,
    Splits,
    Subset,
    check_output_outside_data,
    materialize,
    resolve_splits,
)
from edgeprune.data.stream import DecodedSplit, Images, default_workers
from edgeprune.errors import DeviceRequired, InputError
from edgeprune.export import ParityTolerance
from edgeprune.metrics import Metric
from edgeprune.model import ArchSpec
from edgeprune.ui import UI

METRICS = "metrics.json"
MODEL_ARTIFACT = "model.pt"
TEACHER_ARTIFACT = "teacher.pt"  # --teacher, saved by the load stage


@dataclass
class PipelineConfig:
    """Everything a run depends on; stages fingerprint the parts they use."""

    model_path: Path
    arch: ArchSpec | None
    data: DataOptions
    preprocess: Preprocess
    target: TargetProfile
    precision: str
    budget: Budget
    out_dir: Path
    trust_pickle: bool = False
    exporter: str = "dynamo"
    opset: int | None = None
    parity: ParityTolerance = field(default_factory=ParityTolerance)
    eval_batch: int = 64
    prune: Any = None  # PruneConfig when pruning was asked for
    recover: Any = None  # RecoverConfig (fine-tuning after pruning)
    quantize: Any = None  # QuantizeConfig when --quant ternary
    teacher: Any = None  # TeacherSpec when --teacher names a distillation teacher
    metric: Metric = field(default_factory=Metric)  # --metric (top-1 by default)
    fresh: bool = False
    command: list[str] = field(default_factory=list)
    wait_lock: bool = False  # another run holds OUT/.lock: wait instead of exiting 2

    def __post_init__(self) -> None:
        # values that passed their own parsers but not together: the command line's
        # --threads/--batch over a profile, an output folder inside the data
        check_overrides(self.target)
        check_output_outside_data(self.out_dir, self.data)


class Stage(Protocol):
    """One pipeline step: a name, what its output depends on, and how to make it.

    A stage may set ``chains = False`` when nothing downstream consumes its output through
    the model chain (the baseline measurement): its key then does not enter the next
    stage's, so e.g. another --target re-measures the baseline but reuses the pruned and
    recovered model instead of training it again."""

    name: str

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]: ...

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]: ...


@dataclass
class StageRecord:
    index: int
    name: str
    status: str  # "ran" | "cached" | "skipped"
    seconds: float
    metrics: dict[str, Any]
    dir: Path


class RunContext:
    """Shared state of one run: config, the stage records so far, and lazily loaded
    data (decoded once per run, whichever stage needs it first)."""

    def __init__(self, config: PipelineConfig, ui: UI) -> None:
        self.config = config
        self.ui = ui
        self.records: dict[str, StageRecord] = {}
        self._splits: Splits | None = None
        self._arrays: dict[str, tuple[Images, np.ndarray]] = {}

    # --- data -------------------------------------------------------------------------
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = resolve_splits(self.config.data)
        return self._splits

    def subset(self, role: str, size: int | None = None) -> Subset:
        """"eval", "calibration", "train", or "sensitivity" (a seeded subset of the
        training split, for pruning sensitivity analysis: never evaluation images)."""
        splits = self.splits()
        if role == "sensitivity":
            train = splits.train
            count = min(size or len(train), len(train))
            rng = np.random.default_rng(self.config.data.seed + 1)
            picked = np.sort(rng.choice(train.indices, count, replace=False))
            return Subset(train.source, picked, "sensitivity",
                          f"uniform subset of the training split, seed {self.config.data.seed + 1}")
        return {"eval": splits.eval, "calibration": splits.calibration, "train": splits.train}[role]

    def arrays(self, role: str, size: int | None = None) -> tuple[Images, np.ndarray]:
        """Preprocessed (images, labels) of a subset: decoded once per run and kept while
        the splits kept fit ``--decoded-cache-mb``, else a ``DecodedSplit`` that decodes
        each batch when it is sliced (the evaluation and calibration splits are still
        decoded once here: that checks every image and hashes the manifest)."""
        key = f"{role}:{size}" if size else role
        if key not in self._arrays:
            subset = self.subset(role, size)
            data = self.config.data
            lazy = DecodedSplit(subset, self.config.preprocess,
                                data.workers or default_workers())
            kept = sum(x.nbytes for x, _ in self._arrays.values()
                       if isinstance(x, np.ndarray))
            # the calibration and sensitivity subsets are as large as their options say
            # (--calib-size, --sensitivity-samples): always kept, they are read many times
            small = role in ("calibration", "sensitivity")
            if small or kept + lazy.nbytes <= data.decoded_cache_mb * 2**20:
                with self.ui.task(f"decoding {role} images", len(subset)) as advance:
                    self._arrays[key] = materialize(  # type: ignore[assignment]
                        subset, self.config.preprocess, advance)
            elif role == "train":  # every image is read (and checked) by training
                self._arrays[key] = (lazy, subset.labels())
            else:
                with self.ui.task(f"checking {role} images (decoded on the fly: "
                                  f"{lazy.nbytes / 2**30:.1f} GB decoded)",
                                  len(subset)) as advance:
                    _, targets = materialize(subset, self.config.preprocess, advance,
                                             keep=False)
                self._arrays[key] = (lazy, targets)
        return self._arrays[key]

    def input_shape(self) -> tuple[int, int, int, int]:
        images, _ = self.arrays("calibration")
        return (self.config.target.batch, *images.shape[1:])  # type: ignore[return-value]

    # --- artifacts --------------------------------------------------------------------
    def metrics(self, stage: str) -> dict[str, Any]:
        return self.records[stage].metrics

    def stage_dir(self, stage: str) -> Path:
        return self.records[stage].dir

    def latest_model_path(self) -> Path:
        """The newest model artifact: what prune/recover/quantize produced, or load's."""
        for record in reversed(list(self.records.values())):
            candidate = record.dir / MODEL_ARTIFACT
            if candidate.is_file():
                return candidate
        raise RuntimeError("no model artifact yet: the load stage must run first")

    def load_model(self, path: Path | None = None) -> torch.nn.Module:
        from edgeprune.stages.load import read_model_artifact

        return read_model_artifact(path or self.latest_model_path(), self.config.trust_pickle,
                                   self.config.arch)


def stage_key(stage: Stage, ctx: RunContext, upstream: str) -> str:
    payload = {"stage": stage.name, "version": __version__, "upstream": upstream,
               "config": stage.fingerprint(ctx)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work if the output directory cannot be written."""
    probe_dir = out_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        read_only = probe_dir.is_dir() and bool(os.statvfs(probe_dir).f_flag & os.ST_RDONLY)
        why = ("is not a directory" if not probe_dir.is_dir() else
               "is on a read-only file system" if read_only else "denies write access")
        raise InputError(
            f"output directory {out_dir} is not writable ({probe_dir} {why})",
            fix="pass --out with a directory you can write to",
        )


def run_stages(stages: Sequence[Stage], ctx: RunContext) -> list[StageRecord]:
    """Run (or reuse) each stage in order. A problem of the machine (full disk, permission
    denied, ...) comes out as an ``OSError`` the CLI reports with the path and the fix,
    whatever library met it."""
    out = ctx.config.out_dir
    created = not out.exists()
    try:
        return _run_all(stages, ctx)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before any stage finished leaves nothing behind
        raise


def _run_all(stages: Sequence[Stage], ctx: RunContext) -> list[StageRecord]:
    out = ctx.config.out_dir
    upstream = ""
    for index, stage in enumerate(stages, start=1):
        interrupt.check()  # an interrupt a library swallowed stops the run here
        key = stage_key(stage, ctx, upstream)
        final_dir = out / f"{index:02d}-{stage.name}"
        cached = _cached_metrics(final_dir, key) if not ctx.config.fresh else None
        if cached is not None:
            status = "skipped" if cached.get("skipped") else "cached"
            record = StageRecord(index, stage.name, status, cached.get("seconds", 0.0),
                                 cached, final_dir)
        else:
            record = _run_one(stage, ctx, index, key, final_dir)
        ctx.records[stage.name] = record
        ctx.ui.stage(index, stage.name, record.status, record.metrics.get("summary", ""))
        if getattr(stage, "chains", True):
            upstream = key
    return list(ctx.records.values())


def _cached_metrics(stage_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        metrics = json.loads((stage_dir / METRICS).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if metrics.get("key") == key else None


def _run_one(stage: Stage, ctx: RunContext, index: int, key: str, final_dir: Path) -> StageRecord:
    out = ctx.config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / f".{final_dir.name}.partial"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(out / f".{final_dir.name}.trash", ignore_errors=True)
    workdir.mkdir()
    # Later stages look artifacts up through the record: point it at the work folder
    # while the stage runs, then at the final folder.
    ctx.records[stage.name] = StageRecord(index, stage.name, "running", 0.0, {}, workdir)
    started = time.perf_counter()
    try:
        metrics = stage.run(ctx, workdir)
        seconds = time.perf_counter() - started
        status = "skipped" if metrics.get("skipped") else "ran"
        metrics = {"stage": stage.name, "key": key, "status": status, "seconds": seconds,
                   **metrics}
        write_json_atomic(workdir / METRICS, metrics)
        # a stage that saw an interrupt is not committed, even when it finished: a library
        # may have taken another path after losing the KeyboardInterrupt
        interrupt.check()
        _replace_dir(workdir, final_dir)
    except BaseException as exc:
        cause = None
        if not isinstance(exc, (KeyboardInterrupt, InputError, DeviceRequired)) and \
                not interrupt.interrupted():
            from edgeprune.oserrors import environment_error

            cause = environment_error(exc, out)  # before the clean-up frees the space
        if interrupt.interrupted():
            interrupt.stopping()  # let the clean-up finish
        shutil.rmtree(workdir, ignore_errors=True)
        del ctx.records[stage.name]
        if cause is not None:
            raise cause from exc
        raise
    return StageRecord(index, stage.name, status, seconds, metrics, final_dir)


def _replace_dir(new: Path, final: Path) -> None:
    """Put a finished stage folder in place. An older one is first renamed away (one
    atomic step) and deleted after, so an interruption never leaves a stage folder that
    has its metrics.json but lost some of its artifacts."""
    if final.exists():
        trash = final.with_name(f".{final.name}.trash")
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        new.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        new.rename(final)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
