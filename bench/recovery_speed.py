"""Recovery speed, pruned vs dense: seconds per training epoch (50,000 images, batch 128,
the recovery loop's own step: augmentation, forward, loss, backward, SGD) on this CPU,
for ResNet-20 at 32² (D-Score, 50% FLOPs, the sensitivity ratios of
bench/results/recovery_quality_resnet20.json) and EfficientNet-Lite0 at 224² (D-Score 50%
FLOPs of the Lite0-CIFAR@224 model, 40% of every group rounded to 8 when that model is not
built), in each memory format and with the loop's own choice (it times both and keeps
the faster), measured in alternating rounds of one run.

    python bench/recovery_speed.py
Writes bench/results/recovery_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from lite0_arch import build_cifar  # noqa: E402
from prune_quality import load_resnet  # noqa: E402

from edgeprune.prune.importance import dscore  # noqa: E402
from edgeprune.prune.structural import (  # noqa: E402
    PruneOptions,
    make_shortcuts_explicit,
    prune_copy,
)
from edgeprune.report.environment import environment  # noqa: E402
from edgeprune.train import MEMORY_FORMATS, augment_batch, fastest_memory_format  # noqa: E402

RESULTS = REPO / "bench" / "results" / "recovery_speed.json"
EPOCH = 50_000


def step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fmt: str,
                 steps: int) -> float:
    """Mean seconds of one recovery step (as edgeprune.train runs it) in ``fmt``."""
    memory = MEMORY_FORMATS[fmt]
    model = model.train().to(memory_format=memory)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(0)
    pad = torch.zeros(x.shape[1])
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        batch = augment_batch(x, generator, pad).contiguous(memory_format=memory)
        loss = F.cross_entropy(model(batch), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up the kernels
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def models(size: int) -> dict[str, torch.nn.Module]:
    example = torch.zeros(2, 3, size, size)
    if size == 32:
        ratios = json.loads((REPO / "bench" / "results" / "recovery_quality_resnet20.json")
                            .read_text())["sensitivity"]["ratios"]
        dense = load_resnet(20)
        explicit = load_resnet(20)
        make_shortcuts_explicit(explicit, example)
        pruned, _ = prune_copy(explicit, example, ratios, dscore, PruneOptions())
        return {"resnet20 dense": dense, "resnet20 pruned 50% FLOPs": pruned}
    dense = build_cifar(10)
    from edgeprune.prune.structural import find_groups

    _, groups = find_groups(dense, example, PruneOptions(round_to=8))
    pruned, _ = prune_copy(dense, example, {g.name: 0.4 for g in groups}, dscore,
                           PruneOptions(round_to=8))
    return {"lite0 dense": dense, "lite0 pruned 40% per group (round 8)": pruned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps-32", type=int, default=20)
    parser.add_argument("--steps-224", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    out: dict[str, Any] = {"benchmark": "recovery_speed", "epoch_images": EPOCH,
                           "batch": 128, "results": {}}
    for size, steps in ((32, args.steps_32), (224, args.steps_224)):
        nets = models(size)
        x = torch.randn(128, 3, size, size)
        y = torch.randint(0, 10, (128,))
        samples: dict[str, dict[str, list[float]]] = {n: {f: [] for f in MEMORY_FORMATS}
                                                      for n in nets}
        choice = {n: fastest_memory_format(m, x[:32], torch.device("cpu")) for n, m in
                  nets.items()}
        for _ in range(args.rounds):  # alternate: drift hits every variant alike
            for name, model in nets.items():
                for fmt in MEMORY_FORMATS:
                    samples[name][fmt].append(step_seconds(model, x, y, fmt, steps))
        for name in nets:
            per_step = {fmt: float(np.median(v)) for fmt, v in samples[name].items()}
            chosen = choice[name][0]
            out["results"][name] = {
                "seconds_per_epoch": {fmt: s * EPOCH / 128 for fmt, s in per_step.items()},
                "loop_choice": chosen, "probe_ms": choice[name][1],
                "seconds_per_epoch_as_trained": per_step[chosen] * EPOCH / 128,
                "steps_timed": steps * args.rounds}
            print(name, json.dumps(out["results"][name]), flush=True)
    for dense, pruned in (("resnet20 dense", "resnet20 pruned 50% FLOPs"),
                          ("lite0 dense", "lite0 pruned 40% per group (round 8)")):
        r = out["results"]
        out["results"][pruned]["pruned_vs_dense_as_trained"] = (
            r[dense]["seconds_per_epoch_as_trained"] / r[pruned]["seconds_per_epoch_as_trained"])
    out["environment"] = environment()
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", RESULTS)


if __name__ == "__main__":
    main()
