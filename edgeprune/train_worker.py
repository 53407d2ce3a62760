"""One training job from a JSON request: ``python -m edgeprune.train_worker REQ.json``,
alone or under torchrun (every rank runs it; rank 0 saves). Used by the recover stage
(fine-tuning) and the quantize stage (ternary QAT: ``"quantize": true``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, materialize, resolve_splits
from edgeprune.data.stream import DecodedSplit, Images, default_workers
from edgeprune.errors import EdgepruneError
from edgeprune.train import TrainConfig, dist_info, train


def training_split(data: DataOptions, preprocess: dict[str, Any]) -> tuple[Images, np.ndarray]:
    """The training split of a request: in memory when it fits ``--decoded-cache-mb``,
    else decoded on the fly."""
    pre = dict(preprocess)
    pre["input_size"] = tuple(pre["input_size"]) if pre.get("input_size") else None
    train = resolve_splits(data).train
    lazy = DecodedSplit(train, Preprocess(**pre), data.workers or default_workers())
    if lazy.nbytes <= data.decoded_cache_mb * 2**20:
        images, labels = materialize(train, Preprocess(**pre))
        return images, labels  # type: ignore[return-value]
    return lazy, train.labels()


def run_request(request: dict[str, Any], arrays: tuple[Images, np.ndarray] | None = None,
                on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Load the student (and teacher), train, and (on rank 0) save the result."""
    from edgeprune.stages.load import read_model_artifact, save_derived_artifact

    info = dist_info()
    if info.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world))
    data = DataOptions(**request["data"])
    if arrays is None:  # a torchrun rank: the same choice as RunContext.arrays
        arrays = training_split(data, request["preprocess"])
    from edgeprune.model import ArchSpec

    # the user's --arch (the request is written by the stage, never by a user)
    arch = ArchSpec(**request["arch"]) if request.get("arch") else None
    source = Path(request["model"])
    model = read_model_artifact(source, request["trust_pickle"], arch)
    teacher_arch = (ArchSpec(**request["teacher_arch"]) if request.get("teacher_arch")
                    else arch)
    teacher = (read_model_artifact(Path(request["teacher"]), request["trust_pickle"],
                                   teacher_arch) if request.get("teacher") else None)
    hooks = None
    if request.get("quantize"):  # ternary QAT: the rebuilt model is already prepared
        from edgeprune.quant.ternary import TernaryConfig, prepare_ternary
        from edgeprune.stages.load import artifact_meta

        hooks = prepare_ternary(model, TernaryConfig.from_dict(artifact_meta(source)["ternary"]))
    stats = train(model, arrays[0], arrays[1], TrainConfig(**request["train"]),
                  pad_value=request.get("pad_value"), teacher=teacher, hooks=hooks,
                  on_step=on_step, workers=data.workers or default_workers())
    if hooks is not None:
        stats["quant_events"] = hooks.history
    if info.is_main:
        save_derived_artifact(model, source, Path(request["out"]))
        if request.get("stats"):
            Path(request["stats"]).write_text(json.dumps(stats))
    if info.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return stats


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgeprune.train_worker REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    progress = None
    if request.get("progress") and dist_info().is_main:
        def progress(step: int, total: int, loss: float) -> None:
            print(step, total, flush=True)  # read by stages/recover.py
    try:
        run_request(request, on_step=progress)
    except EdgepruneError as exc:  # e.g. a corrupt image met while streaming: the parent
        if request.get("stats"):   # re-raises it as the same readable error
            Path(request["stats"]).write_text(json.dumps({"error": {
                "kind": type(exc).__name__, "problem": exc.problem, "fix": exc.fix}}))
        print(exc.paragraph(), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
