"""Structural pruning on every architecture kind: forward, ONNX export, OpenVINO compile,
parity with PyTorch, and how much smaller the model really gets.

    python bench/prune_architectures.py
Writes bench/results/prune_architectures.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest
from edgeprune.export import export_onnx
from edgeprune.model import count_flops, count_params
from edgeprune.prune.importance import dscore
from edgeprune.prune.structural import (
    PruneOptions,
    find_groups,
    make_shortcuts_explicit,
    prune_copy,
)
from edgeprune.report.environment import environment
from edgeprune.zoo import densenet_tiny, mobilenetv2_cifar, vgg16_cifar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_latency import efficientnet_pair  # noqa: E402
from prune_quality import load_resnet  # noqa: E402


def prove(dense: torch.nn.Module, pruned: torch.nn.Module, example: torch.Tensor,
          folder: Path) -> dict:
    shape = (1, *example.shape[1:])
    sizes, diffs = {}, {}
    for side, model in (("dense", dense), ("pruned", pruned)):
        onnx_path = folder / f"{side}.onnx"
        export_onnx(model, example, onnx_path)
        sizes[side] = onnx_path.stat().st_size
    backend = get_backend("openvino")
    compiled = backend.compile(CompileRequest(folder / "pruned.onnx", folder, "fp32"))
    session = backend.load(folder / compiled.artifact, "fp32", 0, example.shape[0], {})
    with torch.no_grad():
        expected = pruned(example).numpy()
    got = session.run(example.numpy())
    diffs = {"max_abs_diff": float(np.abs(got - expected).max()),
             "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1)))}
    return {
        "params": [count_params(dense), count_params(pruned)],
        "flops": [count_flops(dense, shape), count_flops(pruned, shape)],
        "onnx_bytes": [sizes["dense"], sizes["pruned"]],
        "openvino_parity": diffs,
    }


def main() -> None:
    torch.manual_seed(0)
    ex32 = torch.randn(8, 3, 32, 32)
    cases = {}
    for depth in (20, 56):
        model = load_resnet(depth)
        make_shortcuts_explicit(model, ex32)
        cases[f"resnet{depth} (shared weights, residual streams pruned)"] = (model, ex32)
    for name, factory in (("mobilenetv2_cifar", mobilenetv2_cifar),
                          ("vgg16_cifar", vgg16_cifar), ("densenet_tiny", densenet_tiny)):
        cases[f"{name} (random init)"] = (factory().eval(), ex32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (model, example)) in enumerate(cases.items()):
            started = time.perf_counter()
            _, groups = find_groups(model, example, PruneOptions())
            pruned, _ = prune_copy(model, example, {g.name: 0.5 for g in groups}, dscore,
                                   PruneOptions())
            folder = Path(tmp) / str(i)
            folder.mkdir()
            results[name] = {"groups": len(groups), "ratio": 0.5,
                             "prune_seconds": time.perf_counter() - started,
                             **prove(model, pruned, example, folder)}
            print(name, json.dumps(results[name]), flush=True)
        dense, pruned = efficientnet_pair(0.4)
        example = torch.randn(2, 3, 224, 224)
        folder = Path(tmp) / "lite0"
        folder.mkdir()
        results["efficientnet-lite0 (real ImageNet weights, 40%, round to 8)"] = {
            "ratio": 0.4, **prove(dense, pruned, example, folder)}
    out = {"benchmark": "prune_architectures", "criterion": "dscore", "results": results,
           "environment": environment()}
    path = REPO / "bench" / "results" / "prune_architectures.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
