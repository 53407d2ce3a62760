"""Steps more than one stage needs: PyTorch accuracy, compiling for the target, and
profiling an artifact in the separate runner process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest, batches
from edgeprune.errors import StageFailure
from edgeprune.pipeline import RunContext


def torch_predictions(model: nn.Module, images: np.ndarray, ctx: RunContext,
                      label: str = "PyTorch eval") -> np.ndarray:
    """Top-1 predictions of a PyTorch model on preprocessed images (channels_last: ~4x
    faster convolutions on CPU than NCHW here)."""
    preds = []
    model = model.eval().to(memory_format=torch.channels_last)
    with torch.no_grad(), ctx.ui.task(label, len(images)) as advance:
        for chunk in batches(images, ctx.config.eval_batch):
            x = torch.from_numpy(chunk).contiguous(memory_format=torch.channels_last)
            preds.append(model(x).argmax(1).numpy())
            advance(len(chunk))
    return np.concatenate(preds)


def top1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (points), the unit of the budget."""
    return float(np.mean(preds == labels) * 100.0)


def compile_for_target(ctx: RunContext, onnx_path: Path, out_dir: Path,
                       precision: str) -> dict[str, Any]:
    """Run the target backend's compile step; calibration data only when it needs it."""
    target = ctx.config.target
    calibration = None
    if precision == "int8":
        images, _ = ctx.arrays("calibration")
        calibration = list(batches(images, 32))
    result = get_backend(target.backend).compile(
        CompileRequest(onnx_path, out_dir, precision, target.threads, dict(target.options),
                       calibration)
    )
    return {
        "backend": target.backend, "artifact": result.artifact, "files": result.files,
        "precision": precision, "details": result.details,
        "size_bytes": sum((out_dir / f).stat().st_size for f in result.files),
    }


def save_profile_inputs(ctx: RunContext, path: Path) -> None:
    """Real preprocessed images for the profiler (values can matter, e.g. for sparsity)."""
    images, _ = ctx.arrays("calibration")
    np.save(path, images[: max(ctx.config.target.batch, 1)])


def run_profiler(ctx: RunContext, artifact: Path, precision: str, inputs: Path,
                 loop: dict[str, Any]) -> dict[str, Any]:
    """Profile in ``python -m edgeprune.runner`` (a fresh process: clean peak memory)."""
    target = ctx.config.target
    request = {
        "backend": target.backend, "artifact": str(artifact), "precision": precision,
        "threads": target.threads, "batch": target.batch, "options": dict(target.options),
        "inputs": str(inputs), "loop": loop,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(request, fh)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeprune.runner", "profile", fh.name],
            capture_output=True, text=True, check=False,
            timeout=loop["max_seconds"] * 2 + 300,
        )
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise StageFailure(
            f"the profiler failed on {artifact} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}",
            fix="run with --debug; check that the target's runtime is installed",
        )
    return json.loads(proc.stdout)


def loop_settings(ctx: RunContext, share: float = 1.0) -> dict[str, Any]:
    """The target profile's measurement loop, optionally split into rounds."""
    p = ctx.config.target.profile
    return {
        "warmup_iterations": p.warmup_iterations,
        "min_iterations": max(int(p.min_iterations * share), 1),
        "min_seconds": p.min_seconds * share,
        "max_seconds": p.max_seconds * share,
    }


def merge_runs(runs: Sequence[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Pool the samples of several profiler rounds into one result."""
    from edgeprune.measure import histogram, summarize

    samples = np.concatenate([np.asarray(r["samples_ms"]) for r in runs])
    merged = dict(runs[-1])
    merged["latency_ms"] = summarize(samples, batch)
    merged["histogram"] = histogram(samples)
    merged["samples_ms"] = [round(float(s), 5) for s in samples]
    merged["rounds"] = len(runs)
    merged["memory"] = {
        k: max(r["memory"][k] for r in runs) for k in runs[-1]["memory"]
    }
    return merged
