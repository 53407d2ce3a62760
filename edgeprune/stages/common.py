"""Steps more than one stage needs: PyTorch accuracy, compiling for the target, and
profiling an artifact in the separate runner process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune import interrupt
from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest, batches
from edgeprune.data.stream import Images
from edgeprune.errors import DeviceRequired, StageFailure
from edgeprune.pipeline import RunContext


def torch_predictions(model: nn.Module, images: Images, ctx: RunContext,
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
            interrupt.check()
    return np.concatenate(preds)


def top1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (points), the unit of the budget."""
    return float(np.mean(preds == labels) * 100.0)


def torch_forward(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The model's raw outputs on a preprocessed batch, as NumPy (channels_last, as
    ``torch_predictions``)."""
    model = model.eval().to(memory_format=torch.channels_last)

    def forward(chunk: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(chunk).contiguous(memory_format=torch.channels_last)
            return model(x).numpy()
    return forward


def scored_batches(forward: Callable[[np.ndarray], np.ndarray], images: Images,
                   targets: np.ndarray, batch: int,
                   advance: Callable[[int], None] | None = None,
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(outputs, targets) per batch, what a metric's scorer is fed."""
    for start in range(0, len(images), batch):
        outputs = forward(images[start : start + batch])
        if advance is not None:
            advance(len(outputs))
        interrupt.check()
        yield outputs, targets[start : start + batch]


def torch_score(model: nn.Module, images: Images, targets: np.ndarray, ctx: RunContext,
                label: str = "PyTorch eval") -> float:
    """The run's metric (``--metric``, top-1 by default) of a PyTorch model, in points."""
    with ctx.ui.task(label, len(images)) as advance:
        return ctx.config.metric.score(scored_batches(
            torch_forward(model), images, targets, ctx.config.eval_batch, advance))


def compile_for_target(ctx: RunContext, onnx_path: Path, out_dir: Path,
                       precision: str) -> dict[str, Any]:
    """Run the target backend's compile step; calibration data only when it needs it."""
    target = ctx.config.target
    calibration = None
    if precision == "int8":
        images, _ = ctx.arrays("calibration")
        calibration = list(batches(images, 32))
    # Backends that build for a fixed input (TensorRT, Jetson bundles) need the batch and
    # the measurement loop; the others ignore these keys.
    options = {**target.options, "batch": target.batch, "target_name": target.name,
               "profile": asdict(target.profile)}
    result = get_backend(target.backend).compile(
        CompileRequest(onnx_path, out_dir, precision, target.threads, options, calibration)
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


def artifact_files(artifact: Path) -> list[Path]:
    """The files that make up an artifact (``model.xml`` + ``model.bin``, ``model.onnx`` +
    ``model.onnx.data``, ``model.engine`` + its manifest): what a device needs."""
    return sorted(p for p in artifact.parent.iterdir()
                  if p.is_file() and p.name.startswith(artifact.stem + "."))


def _needs_device(ctx: RunContext) -> bool:
    return bool(getattr(get_backend(ctx.config.target.backend), "needs_device", False))


def _device_logs(stage_dir: Path, artifact: Path) -> Path:
    """A fresh folder under the stage's output for what a device sent back."""
    root = stage_dir / "device-logs"
    root.mkdir(exist_ok=True)
    label = "baseline" if "baseline" in artifact.as_posix() else "final"
    path = root / f"{len(list(root.iterdir())) + 1:02d}-{label}"
    path.mkdir()
    return path


def _not_measured(ctx: RunContext, artifact: Path, reason: str) -> DeviceRequired:
    """The exit-4 error for a bundle target without a (reachable) device: it says where the
    bundle is and the exact commands that build and profile it on the device."""
    target = ctx.config.target
    backend = get_backend(target.backend)
    host = target.remote.host or "USER@DEVICE"
    commands = backend.device_commands(artifact.parent, host)  # type: ignore[attr-defined]
    return DeviceRequired(
        f"nothing was measured: {target.name} builds and runs its engine on the device, and "
        f"{reason}. The deploy bundle is ready: {artifact.parent}",
        fix="re-run the same command with --device USER@HOST (edgeprune copies the bundle, "
        "builds it with the device's trtexec, profiles and evaluates there), or build and "
        "profile it by hand:\n      " + "\n      ".join(commands),
    )


def _device_profile(ctx: RunContext, artifact: Path, inputs: Path,
                    loop: dict[str, Any]) -> dict[str, Any]:
    """Profile a bundle target on its device (build there, trtexec, tegrastats)."""
    from edgeprune.errors import DeviceUnreachable
    from edgeprune.remote import host_from_settings

    target = ctx.config.target
    if not target.remote.host:
        raise _not_measured(ctx, artifact, "no device was given")
    backend = get_backend(target.backend)
    try:
        return backend.profile_on_device(  # type: ignore[attr-defined]
            host_from_settings(target.remote), artifact, loop,
            _device_logs(inputs.parent, artifact), target.remote.command_timeout_s,
            ctx.ui.warn)
    except DeviceUnreachable as exc:
        raise _not_measured(ctx, artifact, exc.problem) from exc


def profile_or_pending(ctx: RunContext, artifact: Path, precision: str, inputs: Path,
                       loop: dict[str, Any]) -> dict[str, Any]:
    """``run_profiler``, except that a bundle target without a reachable device returns
    ``latency_ms: None`` (the baseline then waits for the profile stage, which measures it
    on the device or stops with exit 4) instead of stopping before the bundle exists."""
    try:
        return run_profiler(ctx, artifact, precision, inputs, loop)
    except DeviceRequired as exc:
        if not _needs_device(ctx):
            raise
        return {"latency_ms": None, "runtime": {"pending": exc.problem}, "memory": {}}


def run_profiler(ctx: RunContext, artifact: Path, precision: str, inputs: Path,
                 loop: dict[str, Any]) -> dict[str, Any]:
    """Profile in ``python -m edgeprune.runner`` (a fresh process: clean peak memory), here or
    on the profile's device over SSH (the same runner and statistics there). Bundle targets
    (Jetson) are built and profiled on their device."""
    target = ctx.config.target
    if _needs_device(ctx):
        return _device_profile(ctx, artifact, inputs, loop)
    request = {
        "backend": target.backend, "artifact": str(artifact), "precision": precision,
        "threads": target.threads, "batch": target.batch, "options": dict(target.options),
        "inputs": str(inputs), "loop": loop,
    }
    if target.remote.host:
        from edgeprune.remote import host_from_settings, remote_profile

        timeout = max(loop["max_seconds"] * 2 + 300, target.remote.command_timeout_s)
        return remote_profile(host_from_settings(target.remote), request,
                              artifact_files(artifact), inputs, timeout)
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


def needs_remote_eval(ctx: RunContext) -> bool:
    """Accuracy is measured on the device (a bundle target, or --device)."""
    return _needs_device(ctx) or bool(ctx.config.target.remote.host)


def target_predictions(ctx: RunContext, artifact: Path, precision: str, images: Images,
                       log_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-1 predictions in the target runtime, here or on the device (so accuracy is
    measured where the model will run), and the runtime's facts."""
    c = ctx.config
    target = c.target
    backend = get_backend(target.backend)
    if needs_remote_eval(ctx):
        return _device_predictions(ctx, artifact, precision, images, log_dir)
    session = backend.load(artifact, precision, target.threads, c.eval_batch,
                           dict(target.options))
    preds = []
    with ctx.ui.task(f"evaluating in {target.backend}", len(images)) as advance:
        for chunk in batches(images, c.eval_batch):
            preds.append(session.run(chunk).argmax(1))
            advance(len(chunk))
            interrupt.check()
    return np.concatenate(preds), session.runtime_info()


def write_npy(path: Path, images: Images, batch: int) -> None:
    """Save images as one .npy, a batch at a time (a split decoded on the fly is never
    whole in memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=images.shape)
    for start in range(0, len(images), batch):
        out[start : start + batch] = images[start : start + batch]
        interrupt.check()
    out.flush()
    del out


def _device_predictions(ctx: RunContext, artifact: Path, precision: str, images: Images,
                        log_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from edgeprune.errors import DeviceUnreachable
    from edgeprune.remote import host_from_settings, remote_predict

    c = ctx.config
    target = c.target
    if not target.remote.host:
        raise _not_measured(ctx, artifact, "no device was given")
    host = host_from_settings(target.remote)
    log_dir.mkdir(parents=True, exist_ok=True)
    timeout = target.remote.command_timeout_s
    with tempfile.TemporaryDirectory(prefix="edgeprune-eval-") as tmp, \
            ctx.ui.task(f"evaluating on {host.address}", None):
        npy = Path(tmp) / "images.npy"
        write_npy(npy, images, c.eval_batch)
        try:
            if _needs_device(ctx):
                return get_backend(target.backend).predict_on_device(  # type: ignore[attr-defined]
                    host, artifact, npy, log_dir, timeout)
        except DeviceUnreachable as exc:
            raise _not_measured(ctx, artifact, exc.problem) from exc
        request = {"backend": target.backend, "artifact": str(artifact), "precision": precision,
                   "threads": target.threads, "batch": c.eval_batch,
                   "options": dict(target.options)}
        return remote_predict(host, request, artifact_files(artifact), npy, timeout)
