"""Stage 4: recover accuracy after pruning by fine-tuning on the training split: labels
and distillation from the original model together (``kd``, the default), labels only, or
label-free distillation. One process, or several under torchrun (``--nproc N``: DDP,
gloo on CPU / NCCL on GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import InputError, StageFailure
from edgeprune.options import default
from edgeprune.pipeline import MODEL_ARTIFACT, TEACHER_ARTIFACT, RunContext
from edgeprune.stages.common import torch_score
from edgeprune.train import LOSSES, TrainConfig


def validate_training(mode: str, train: TrainConfig, nproc: int, prefix: str) -> None:
    """Check a training job's options (named --PREFIX-epochs / --PREFIX-lr on the command
    line) and set the loss from the mode; shared by recovery and ternary QAT."""
    if mode not in LOSSES:
        raise InputError(f"unknown --recover {mode!r}",
                         fix="use kd (labels + distillation), labels, distill or none")
    if train.epochs <= 0 or train.lr <= 0 or nproc < 1:
        raise InputError(f"--{prefix}-epochs, --{prefix}-lr and --nproc must be positive",
                         fix=f"e.g. --{prefix}-epochs 3 --{prefix}-lr 0.01")
    if not 0 <= train.kd_weight <= 1 or not train.temperature > 0:
        raise InputError(f"--kd-weight {train.kd_weight} must be in [0, 1] and "
                         f"--kd-temperature {train.temperature} positive",
                         fix="e.g. --kd-weight 0.5 --kd-temperature 4")
    train.loss = mode


def check_training_split(ctx: RunContext, batch_size: int, what: str,
                         classes: int | None = None) -> list[str]:
    """Refuse a training split too small to train on; warn when it is only the few
    images held out of the evaluation set. Returns the warnings."""
    train = ctx.subset("train")
    if classes is None:
        classes = int(ctx.metrics("load")["outputs"]) if "load" in ctx.records else 0
    floor = max(batch_size, 2 * classes)
    if len(train) < floor:
        raise InputError(
            f"{what} needs a training split, but it has only {len(train)} images (fewer "
            f"than one batch of {batch_size}" + (f" or two per class for {classes} classes"
                                                 if classes else "") + ")",
            fix="pass --train-data with the model's training images (an ImageFolder, IDX, "
            ".npz or module:callable), or a larger --calib-size when only --data is given",
        )
    if train.how.startswith("only the held-out"):
        return [f"{what} uses the {len(train)} calibration images held out of the "
                "evaluation set as its training split (no --train-data was given): expect "
                "little recovery; pass --train-data for a real training split"]
    return []


def teacher_request(ctx: RunContext, default: Path) -> dict[str, Any]:
    """The distillation teacher: ``--teacher`` (saved by the load stage) or ``default``."""
    given = ctx.stage_dir("load") / TEACHER_ARTIFACT
    if given.is_file():
        arch = ctx.config.teacher.arch if ctx.config.teacher else None
        return {"teacher": str(given), "teacher_arch": asdict(arch) if arch else None}
    return {"teacher": str(default), "teacher_arch": None}


@dataclass
class RecoverConfig:
    # "kd" (labels + distillation) | "labels" | "distill" (label-free)
    mode: str = default("recover")
    train: TrainConfig = field(default_factory=TrainConfig)
    nproc: int = default("nproc")

    def validate(self) -> RecoverConfig:
        validate_training(self.mode, self.train, self.nproc, "recover")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def black_pixel(ctx: RunContext) -> list[float]:
    """The normalized value of a black pixel per channel (the crop's padding colour)."""
    p = ctx.config.preprocess
    mean = p.mean * (p.channels // len(p.mean))
    std = p.std * (p.channels // len(p.std))
    return [-m / s for m, s in zip(mean, std, strict=True)]


class RecoverStage:
    name = "recover"

    def __init__(self, config: RecoverConfig | None) -> None:
        self.config = config

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"recover": self.config.to_dict() if self.config else None}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        pruned = ctx.records.get("prune") is not None and (
            ctx.records["prune"].status != "skipped")
        if not pruned or self.config is None:
            why = ("nothing to recover (no pruning)" if not pruned else
                   "recovery skipped: --recover none was asked for")
            return {"skipped": True, "reason": why, "summary": why}
        warnings = check_training_split(ctx, self.config.train.batch_size, "recovery")
        for text in warnings:
            ctx.ui.warn(text)
        source = ctx.latest_model_path()
        request = {
            "model": str(source), "out": str(workdir / MODEL_ARTIFACT),
            "trust_pickle": ctx.config.trust_pickle, "train": self.config.train.to_dict(),
            "pad_value": black_pixel(ctx),
            **(teacher_request(ctx, ctx.stage_dir("load") / MODEL_ARTIFACT)
               if self.config.train.needs_teacher else {"teacher": None}),
        }
        stats = run_training(ctx, request, self.config.nproc,
                             f"recovering ({self.config.mode})")
        images, labels = ctx.arrays("eval")
        model = ctx.load_model(workdir / MODEL_ARTIFACT)
        accuracy = torch_score(model, images, labels, ctx, "PyTorch eval (recovered)")
        return {
            "mode": self.config.mode, "nproc": self.config.nproc, "training": stats,
            "warnings": warnings,
            "train_samples": len(ctx.subset("train")), "accuracy": accuracy,
            "accuracy_samples": len(labels),
            "summary": f"{self.config.mode}, {stats['epochs']:.2f} epochs in "
            f"{stats['seconds']:.0f} s on {stats['world_size']} process(es): "
            f"{ctx.config.metric.label} {accuracy:.2f}",
        }


def run_training(ctx: RunContext, request: dict[str, Any], nproc: int,
                 label: str) -> dict[str, Any]:
    """One training job (the shared loop) on the run's training split: in this process
    with a progress bar, or in ``nproc`` DDP processes under torchrun."""
    arch = ctx.config.arch
    request = {**request, "data": asdict(ctx.config.data),
               "preprocess": ctx.config.preprocess.to_dict(),
               "arch": asdict(arch) if arch is not None else None}
    if nproc > 1:  # no step count from the workers: the task still shows a heartbeat
        with ctx.ui.task(f"{label} ({nproc} processes)", None):
            return _training_process(request, nproc)
    from edgeprune.data.stream import DecodedSplit
    from edgeprune.train_worker import run_request

    x, y = ctx.arrays("train")
    if isinstance(x, DecodedSplit):
        # decoded on the fly: in a fresh process, whose DataLoader workers never share a
        # process with the OpenVINO / ONNX Runtime sessions this one may hold (a worker
        # pool beside an OpenVINO session crashed the parent: SIGSEGV, tests/test_stream.py)
        with ctx.ui.task(label, None) as advance:
            return _training_process(request, 1, lambda s, t: advance(1, total=t))
    with ctx.ui.task(label, None) as advance:
        return run_request(request, arrays=(x, y), on_step=lambda s, t, loss: advance(1, total=t))


def _training_process(request: dict[str, Any], nproc: int,
                      on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fine-tune in a child process (``nproc`` > 1: DDP processes under torchrun); rank 0
    writes the model and the stats, and prints ``step total`` lines for ``on_step``."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "request.json"
        request = {**request, "stats": str(Path(tmp) / "stats.json"),
                   "progress": on_step is not None}
        req.write_text(json.dumps(request))
        worker = ["-m", "edgeprune.train_worker", str(req)]
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", *worker] if nproc > 1 else [sys.executable, *worker])
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
        if nproc == 1:
            env.pop("OMP_NUM_THREADS")  # one process: the machine's threads, as in-process
        with open(Path(tmp) / "stderr.txt", "w+") as errors:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True,
                                  env=env) as proc:
                try:
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        step, _, total = line.strip().partition(" ")
                        if on_step is not None and step.isdigit() and total.isdigit():
                            on_step(int(step), int(total))
                except BaseException:  # Ctrl-C or a failing progress callback: no orphan
                    proc.kill()
                    raise
            errors.seek(0)
            stderr = errors.read()
        stats_file = Path(request["stats"])
        reported = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        if "error" in reported:  # an input / stage error the child met, as it said it
            error = reported["error"]
            kind = {"InputError": InputError}.get(error["kind"], StageFailure)
            raise kind(error["problem"], fix=error["fix"])
        if proc.returncode != 0:
            what = "distributed fine-tuning" if nproc > 1 else "fine-tuning"
            raise StageFailure(f"{what} failed (exit {proc.returncode}): "
                               f"{stderr.strip()[-2000:]}",
                               fix="run with --nproc 1 to debug in one process" if nproc > 1
                               else "run with --debug; --decoded-cache-mb large enough to "
                               "keep the training split trains in this process")
        return reported
