"""Stage 1: load the model safely and validate every input before any work is done.

Bad input must fail here, before anything is written: the checkpoint is built and
loaded, every evaluation and calibration image is decoded, and labels are checked
against the model's outputs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.data.splits import Subset
from edgeprune.errors import InputError
from edgeprune.model import (
    ARTIFACT_FORMAT,
    ArchSpec,
    count_params,
    load_model,
    rebuild_from_artifact,
)
from edgeprune.pipeline import MODEL_ARTIFACT, TEACHER_ARTIFACT, RunContext, write_json_atomic


def save_model_artifact(model: nn.Module, arch: ArchSpec | None, path: Path,
                        extra: dict[str, Any] | None = None) -> None:
    """Weights + how to rebuild the architecture: reloads without executing pickled code.
    A trusted full module with no --arch is stored as a module (reloading it needs trust)."""
    payload: dict[str, Any] = {"format": ARTIFACT_FORMAT, **(extra or {}), **_heads(model)}
    if arch is not None:
        payload.update(arch=arch.target, arch_kwargs=arch.kwargs, state_dict=model.state_dict())
    else:
        payload.update(module=model)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _heads(model: nn.Module) -> dict[str, Any]:
    """The attention head counts (a pruned model may have fewer heads than its
    architecture builds), for the recipe."""
    from edgeprune.prune.structural import head_counts

    counts = head_counts(model)
    return {"heads": counts} if counts else {}


def artifact_meta(path: Path) -> dict[str, Any]:
    """An artifact's recipe (arch, conversions, ...) without its weights."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return {}  # a trusted pickled module: no recipe
    return {k: v for k, v in payload.items() if k not in ("state_dict", "module")}


def save_derived_artifact(model: nn.Module, source: Path, dest: Path, **extra: Any) -> None:
    """Save a model made from ``source`` (pruned, recovered, ...) with the same recipe."""
    meta = {**artifact_meta(source), **extra, **_heads(model)}
    weights = {"state_dict": model.state_dict()} if "arch" in meta else {"module": model}
    tmp = dest.with_name(f".{dest.name}.tmp")
    torch.save({**meta, "format": ARTIFACT_FORMAT, **weights}, tmp)
    tmp.replace(dest)


def read_model_artifact(path: Path, trust_pickle: bool, arch: ArchSpec | None = None) -> nn.Module:
    """Rebuild a model artifact; a pickled module (from a --trust-pickle run) needs trust.
    ``arch`` is the user's --arch; without it the recipe may only name a built-in."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise InputError(
                f"{path} holds a pickled module from a --trust-pickle run",
                fix="re-run with --trust-pickle, or with --arch",
            ) from exc
        payload = torch.load(path, map_location="cpu", weights_only=False)
    if "module" in payload:
        return payload["module"].eval()
    return rebuild_from_artifact(payload, arch, path)


def data_signature(spec: Any) -> str:
    """Cheap change detector for a data path: names, sizes and mtimes of its files. An
    in-memory dataset (the Python API's DatasetSource) gives its content hash."""
    if spec is None:
        return ""
    if not isinstance(spec, str | Path):
        return spec.fingerprint() if hasattr(spec, "fingerprint") else repr(spec)
    path = Path(spec)
    if not path.exists():
        return spec
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = os.stat(f)
        digest.update(f"{f.relative_to(path.parent)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class LoadStage:
    name = "load"

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        c = ctx.config
        d = c.data
        return {
            "model": str(c.model_path), "model_stat": data_signature(str(c.model_path)),
            "arch": _arch_key(c.arch), "trust": c.trust_pickle,
            "data": {k: v.description if hasattr(v, "fingerprint") else v
                     for k, v in d.__dict__.items()},  # an in-memory dataset: see signatures
            "signatures": [data_signature(s) for s in (d.data, d.eval_data, d.train_data)],
            "preprocess": c.preprocess.to_dict(), "batch": c.target.batch,
            "teacher": None if c.teacher is None else {
                "path": str(c.teacher.path), "stat": data_signature(str(c.teacher.path)),
                "arch": _arch_key(c.teacher.arch)},
            "training": _training_batches(c),
            **({"metric": c.metric.key()} if not c.metric.is_top1 else {}),
        }

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        c = ctx.config
        loaded = load_model(c.model_path, c.arch, c.trust_pickle)
        splits = ctx.splits()
        eval_x, eval_y = ctx.arrays("eval")
        calib_x, _ = ctx.arrays("calibration")
        if eval_x.shape[1:] != calib_x.shape[1:]:
            raise InputError(
                f"evaluation images preprocess to {eval_x.shape[1:]} but calibration images to "
                f"{calib_x.shape[1:]}",
                fix="pass --input-size so every split is resized to the model's input size",
            )
        outputs = _probe_outputs(loaded.model, eval_x[:2], c.model_path,
                                 classifier=c.metric.is_top1)
        if c.metric.is_top1:
            _check_labels(splits.eval, eval_y, outputs)
            _check_labels(splits.calibration, ctx.arrays("calibration")[1], outputs)
            if c.recover is not None or c.quantize is not None:  # training reads every label
                _check_labels(splits.train, splits.train.labels(), outputs)
        else:  # the metric's targets: its job to read them; it must score them, though
            _probe_metric(ctx, loaded.model, eval_x, eval_y)
            _check_label_training(ctx, outputs)
        _check_exclude(loaded.model, c)
        warnings = _check_training(ctx, outputs)
        if c.teacher is not None:
            teacher = load_model(c.teacher.path, c.teacher.arch, c.trust_pickle)
            teacher_outputs = _probe_outputs(teacher.model, eval_x[:2], c.teacher.path)
            if teacher_outputs != outputs:
                raise InputError(
                    f"the teacher {c.teacher.path} has {teacher_outputs} outputs but the model "
                    f"{c.model_path} has {outputs}: its outputs cannot be distilled",
                    fix="pass a --teacher trained on the same classes (and its --teacher-arch), "
                    "or drop --teacher to distill from the input model",
                )
            save_model_artifact(teacher.model, teacher.arch, workdir / TEACHER_ARTIFACT)
        save_model_artifact(loaded.model, loaded.arch, workdir / MODEL_ARTIFACT, loaded.recipe)
        manifests = workdir / "calib"
        manifests.mkdir()
        for subset in (splits.calibration, splits.eval):
            write_json_atomic(manifests / f"{subset.role}.json", _manifest(subset, ctx))
        return {
            "model_sha256": loaded.sha256,
            "arch": loaded.arch.target if loaded.arch else "trusted pickled module",
            "arch_kwargs": loaded.arch.kwargs if loaded.arch else {},
            "params": count_params(loaded.model),
            "outputs": outputs,
            "input_shape": [c.target.batch, *eval_x.shape[1:]],
            "eval": _summary(splits.eval),
            "calibration": _summary(splits.calibration),
            "manifests": {"calibration": "calib/calibration.json", "eval": "calib/eval.json"},
            "train_samples": len(splits.train),
            "warnings": warnings,
            "summary": f"{count_params(loaded.model):,} params, eval {len(splits.eval)} / "
            f"calibration {len(splits.calibration)} images",
        }


def _arch_key(arch: ArchSpec | None) -> dict[str, Any] | None:
    """An architecture in a fingerprint: its fields; an in-memory one (the Python API's
    live module) enters as its description, which holds a hash of its structure."""
    if arch is None:
        return None
    return {k: str(v) if k == "factory" else v for k, v in arch.__dict__.items()
            if not (k == "factory" and v is None)}


def _training_batches(c: Any) -> dict[str, int]:
    """Batch sizes of the training jobs this run will do (what the split must feed)."""
    jobs = {}
    if c.prune is not None and c.prune.compensation.active:
        jobs["compensation"] = 1
    if c.recover is not None:
        jobs["recovery"] = c.recover.train.batch_size
    if c.quantize is not None:
        jobs["ternary QAT"] = c.quantize.train.batch_size
    return jobs


def _check_training(ctx: RunContext, classes: int) -> list[str]:
    """Before any work: the training split must be large enough for what will train."""
    from edgeprune.stages.recover import check_training_split

    warnings: list[str] = []
    for what, batch in _training_batches(ctx.config).items():
        warnings += check_training_split(ctx, batch, what, classes)
    for text in dict.fromkeys(warnings):
        ctx.ui.warn(text)
    return list(dict.fromkeys(warnings))


def _check_labels(subset: Subset, labels: np.ndarray, outputs: int) -> None:
    """Every label a class index of this model: 0 <= label < outputs."""
    bad = (labels < 0) | (labels >= outputs)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{subset.source.description}: {int(bad.sum())} {subset.role} labels are outside "
            f"the model's classes 0-{outputs - 1} (e.g. {subset.ids()[first]!r} has label "
            f"{int(labels[first])}; labels span {int(labels.min())}..{int(labels.max())})",
            fix="check that the data matches the model's classes (or --arch-kwargs "
            "num_classes); labels must be class indices 0..N-1",
        )


def _check_exclude(model: nn.Module, config: Any) -> None:
    """Every --exclude names a layer (or a block of layers) of the model."""
    exclude = list(getattr(getattr(config.prune, "options", None), "exclude", None) or [])
    if not exclude:
        return
    import difflib

    names = [n for n, _ in model.named_modules() if n]
    for entry in exclude:
        if any(n == entry or n.startswith(entry + ".") for n in names):
            continue
        layers = [n for n, m in model.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d))]
        close = difflib.get_close_matches(entry, names, n=3)
        listing = ", ".join(layers[:12]) + (f" ... ({len(layers)} in all)"
                                            if len(layers) > 12 else "")
        raise InputError(
            f"--exclude {entry}: the model has no layer of that name"
            + (f" (did you mean {' or '.join(close)}?)" if close else ""),
            fix=f"pass module names as in model.named_modules(); its layers: {listing}",
        )


PROBE_SAMPLES = 64


def _probe_metric(ctx: RunContext, model: nn.Module, images: np.ndarray,
                  targets: np.ndarray) -> None:
    """--metric on the model's outputs for a few evaluation samples: a metric that
    raises, or returns no finite number, stops the run here, before anything is written."""
    from edgeprune.stages.common import scored_batches, torch_forward

    n = min(PROBE_SAMPLES, len(images))
    ctx.config.metric.score(scored_batches(torch_forward(model), images[:n], targets[:n],
                                           ctx.config.eval_batch))


def _check_label_training(ctx: RunContext, outputs: int) -> None:
    """With --metric, a training loss that reads labels (kd, labels) needs class ids
    0..outputs-1, one per image; anything else trains by distillation only."""
    c = ctx.config
    modes = {f"--recover {job.mode}" for job in (c.recover, c.quantize)
             if job is not None and job.mode in ("kd", "labels")}
    if not modes:
        return
    labels = ctx.subset("train").labels()
    if labels.dtype.kind in "iu" and labels.ndim == 1 and (
            len(labels) == 0 or (labels.min() >= 0 and labels.max() < outputs)):
        return
    raise InputError(
        f"{' and '.join(sorted(modes))} trains on the labels with cross-entropy, but the "
        f"training targets ({labels.dtype} {labels.shape}) are not one class index "
        f"0-{outputs - 1} per image (the --metric {c.metric.spec} reads them)",
        fix="use --recover distill (label-free: the pruned model learns the input "
        "model's outputs; the default with --metric)")


def _probe_outputs(model: nn.Module, sample: np.ndarray, path: Path,
                   classifier: bool = True) -> int:
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(sample))
    except (InputError, KeyboardInterrupt):
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(
            f"the model from {path} fails on inputs of shape {tuple(sample.shape)}: "
            f"{type(exc).__name__}: {first[:300]}",
            fix="set --input-size/--channels to what the model was trained on (or debug the "
            "architecture's forward)",
        ) from exc
    except SystemExit as exc:
        raise InputError(f"the model from {path} called sys.exit({exc.code}) in forward",
                         fix="fix the architecture's forward") from exc
    if not isinstance(out, torch.Tensor):
        raise InputError(
            f"the model returns {type(out).__name__}, not a tensor of logits (batch, classes)",
            fix="edgeprune compiles classifiers: wrap the model so forward returns the logits")
    if not classifier:  # a --metric reads any output (N×C×H×W, ...): batch first
        if out.ndim < 2 or out.shape[0] != len(sample):
            raise InputError(
                f"the model returns shape {tuple(out.shape)}, not batch-first outputs "
                f"(N={len(sample)}, channels, ...)",
                fix="make forward return one tensor with the batch as its first axis")
        return int(out.shape[1])
    if out.ndim != 2:
        raise InputError(
            f"the model returns shape {tuple(out.shape)}, not (batch, classes)",
            fix="edgeprune compiles classifiers: the model must return logits (N, classes)",
        )
    return int(out.shape[1])


def _manifest(subset: Subset, ctx: RunContext) -> dict[str, Any]:
    return {
        "format": "edgeprune-calib-manifest/1",
        "seed": ctx.config.data.seed,
        "preprocess": ctx.config.preprocess.to_dict(),
        **subset.manifest(),
    }


def _summary(subset: Subset) -> dict[str, Any]:
    m = subset.manifest()
    return {k: m[k] for k in ("source", "count", "selection", "ids_sha256", "content_sha256")}
