"""Structural families x {prune, reload, ONNX, OpenVINO parity} on the repo's test models.

Each zoo model (random weights, non-trivial BatchNorm statistics) goes through what
`edgeprune prune` does to it: the check for groups Torch-Pruning cannot cut correctly
(left whole, with the reason), 40% of every remaining group (whole heads for attention),
then ONNX export run by ONNX Runtime and by OpenVINO (FP32) against PyTorch, and the saved
artifact reloaded with ``torch.load(weights_only=True)`` on the original architecture.
A model Torch-Pruning cannot trace gives its exact error text. Sizes, shared weights and
latency are bench/prune_architectures.py's job; this one is about coverage.

    python bench/prune_families.py
Writes bench/results/prune_families.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest
from edgeprune.errors import InputError
from edgeprune.export import export_onnx
from edgeprune.model import ArchSpec, count_flops, count_params
from edgeprune.prune.compensate import reestimate_batchnorm
from edgeprune.prune.importance import dscore
from edgeprune.prune.structural import (
    OPTION_A,
    PruneOptions,
    find_groups,
    layer_channels,
    make_shortcuts_explicit,
    prune_copy,
)
from edgeprune.prune.verify import with_followable
from edgeprune.report.environment import environment
from edgeprune.stages.load import read_model_artifact, save_model_artifact
from edgeprune.zoo import ZOO

REPO = Path(__file__).resolve().parents[1]
RATIO = 0.4

FAMILIES = [  # (family, zoo model, its structural features)
    ("ResNet (CIFAR)", "resnet20", "residual adds, parameter-free option-A shortcut"),
    ("VGG", "vgg16_cifar", "plain conv/BN/ReLU chain, max pooling"),
    ("MobileNetV2", "mobilenetv2_cifar", "depthwise convs, inverted residuals, ReLU6"),
    ("DenseNet", "densenet_tiny", "channel concatenation"),
    ("ResNeXt / RegNet", "resnext_tiny", "grouped convs (4, 8 groups), GroupNorm"),
    ("ConvNeXt", "convnext_tiny", "LayerNorm channels-last, layer scale, permutes, GELU"),
    ("ViT", "vit_tiny", "patch-embedding conv, class token, position embedding, "
                        "qkv attention with reshape to heads, MLP, LayerNorm"),
    ("ShuffleNetV2", "shufflenet_tiny", "channel split (chunk), concat, channel shuffle "
                                        "(view/transpose/view)"),
]


class GatedConv(nn.Module):
    """A GLU-style gate written with chunk + cat, which Torch-Pruning cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.c1(x)).chunk(2, 1)
        x = torch.cat([a * b, a], 1)
        return self.fc(torch.relu(self.c2(x)).mean((2, 3)))


def _parity(backend_name: str, onnx_path: Path, folder: Path, example: torch.Tensor,
            expected: np.ndarray) -> float:
    backend = get_backend(backend_name)
    out = folder / backend_name
    out.mkdir()
    compiled = backend.compile(CompileRequest(onnx_path, out, "fp32"))
    session = backend.load(out / compiled.artifact, "fp32", 0, example.shape[0], {})
    return float(np.abs(session.run(example.numpy()) - expected).max())


def run_family(name: str, folder: Path) -> dict:
    torch.manual_seed(0)
    model = ZOO[name]()
    example = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reestimate_batchnorm(model, torch.randn(64, 3, 32, 32).numpy())
    model.eval()
    conversions = [OPTION_A] if make_shortcuts_explicit(model, example) else []
    started = time.perf_counter()
    options, unpruned = with_followable(model, example, PruneOptions())
    _, groups = find_groups(model, example, options)
    pruned, plan = prune_copy(model, example, {g.name: RATIO for g in groups}, dscore,
                              options)
    seconds = time.perf_counter() - started
    shape = (1, *example.shape[1:])
    before, after = layer_channels(model), layer_channels(pruned)
    with torch.no_grad():
        expected = pruned(example).numpy()
    onnx_path = folder / "pruned.onnx"
    export_onnx(pruned, example, onnx_path)
    artifact = folder / "model.pt"
    save_model_artifact(pruned, ArchSpec(f"edgeprune.zoo:{name}"), artifact, {
        "pruned": True, "input_shape": list(example.shape), "conversions": conversions})
    torch.load(artifact, weights_only=True)
    reloaded = read_model_artifact(artifact, trust_pickle=False)
    with torch.no_grad():
        reload_diff = float((reloaded(example) - pruned(example)).abs().max())
    heads = {g: e["heads"] for g, e in plan.groups.items() if "heads" in e}
    return {
        "groups": len(groups), "groups_unpruned": unpruned, "heads": heads,
        "channels": [sum(before.values()), sum(after.values())],
        "flops": [count_flops(model, shape), count_flops(pruned, shape)],
        "params": [count_params(model), count_params(pruned)],
        "prune_seconds": seconds,
        "reload_weights_only_max_abs_diff": reload_diff,
        "onnxruntime_max_abs_diff": _parity("onnxruntime", onnx_path, folder, example,
                                            expected),
        "openvino_max_abs_diff": _parity("openvino", onnx_path, folder, example, expected),
        "output_max_abs": float(np.abs(expected).max()),
    }


def main() -> None:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, name, features) in enumerate(FAMILIES):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            try:
                row = run_family(name, folder)
            except InputError as exc:
                row = {"refused": exc.paragraph()}
            results[name] = {"family": family, "features": features, **row}
            print(name, json.dumps(results[name]), flush=True)
        try:
            find_groups(GatedConv().eval(), torch.zeros(2, 3, 32, 32), PruneOptions())
            refused = None
        except InputError as exc:
            refused = exc.paragraph()
        results["gated_conv (bench-local)"] = {
            "family": "untraceable op", "features": "GLU-style chunk + cat gate",
            "refused": refused}
    out = {"benchmark": "prune_families", "criterion": "dscore", "ratio": RATIO,
           "note": "2-core machine shared with other jobs: times are indicative only",
           "results": results, "environment": environment()}
    path = REPO / "bench" / "results" / "prune_families.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
