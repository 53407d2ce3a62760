"""Training speed on this CPU, ResNet-20 on CIFAR-10-sized batches: plain FP32 fine-tuning
vs ternary QAT (HQ and TWN, 8-bit activations), through the shared training loop, in
alternating rounds of one run (this machine is noisy). Reports seconds per step and the
seconds per epoch they imply (50,000 images, batch 128 = 390 steps).

    python bench/qat_speed.py --steps 60 --rounds 2
Writes bench/results/qat_speed_resnet20.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.quant import TernaryConfig, calibrate, prepare_ternary
from edgeprune.report.environment import environment
from edgeprune.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_quality import load_resnet  # noqa: E402

STEPS_PER_EPOCH = 50_000 // 128


def one_run(kind: str, images: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """Seconds per optimizer step for ``steps`` steps (after 5 warm-up steps)."""
    model = load_resnet(20)
    hooks = None
    if kind != "fp32":
        hooks = prepare_ternary(model, TernaryConfig(method=kind))
        calibrate(model, [images[:256]])
    config = TrainConfig(epochs=1.0, max_steps=5)
    train(model, images, labels, config, hooks=hooks)  # warm-up (allocator, kernels)
    started = time.perf_counter()
    stats = train(model, images, labels, TrainConfig(epochs=100.0, max_steps=steps), hooks=hooks)
    assert stats["steps"] == steps
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4096, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 4096)
    per_step: dict[str, list[float]] = {"fp32": [], "hq": [], "twn": []}
    for _ in range(args.rounds):
        for kind in per_step:
            per_step[kind].append(one_run(kind, images, labels, args.steps))
            print(kind, f"{per_step[kind][-1]:.3f} s/step", flush=True)
    results = {k: {"seconds_per_step": float(np.median(v)), "rounds": v,
                   "seconds_per_epoch": float(np.median(v)) * STEPS_PER_EPOCH,
                   "vs_fp32": float(np.median(v)) / float(np.median(per_step["fp32"]))}
               for k, v in per_step.items()}
    out = {"benchmark": "qat_speed", "model": "resnet20", "batch": 128,
           "steps_per_round": args.steps, "threads": torch.get_num_threads(),
           "note": "random inputs of CIFAR shape: speed does not depend on pixel values; "
           "augmentation (crop + flip) included as in the real runs",
           "results": results, "environment": environment()}
    path = REPO / "bench" / "results" / "qat_speed_resnet20.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: round(v["seconds_per_epoch"], 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
