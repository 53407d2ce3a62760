"""Latency-allocated vs FLOPs-allocated D-Score pruning on OpenVINO CPU, side by side.

The latency allocation (`--latency-reduction`, prune/latency.py) is run on a model; the
FLOPs allocation (`--flops-reduction`, the sensitivity threshold) is then searched for
the SAME MEASURED LATENCY (secant steps on its FLOPs reduction, each measured beside the
latency-allocated model), and also recorded at the same FLOPs. Dense and pruned models
are then measured in alternating rounds of one runner process at FP32 and BF16
(OpenVINO's default on this AMX CPU). Accuracy after the surgery and after the
training-free refit compensation (no fine-tuning): top-1 on CIFAR-10 test images for the
ResNet-56 (real labels), top-1 agreement with the unpruned model for the 224² nets
(Lite0 with its ImageNet weights; MobileNetV2- and ResNet-18-shaped nets with seeded
random weights: structure only), on CIFAR-10 images upscaled to 224².

    python bench/latency_pruning.py --model resnet56 --reduction 0.3 --precision bf16
    python bench/latency_pruning.py --model lite0 --reduction 0.3 --precision fp32
Writes bench/results/latency_pruning_{model}_{precision}.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.data.preprocess import Preprocess
from edgeprune.data.splits import DataOptions, Subset, materialize, resolve_splits
from edgeprune.model import count_flops
from edgeprune.prune.compensate import (
    CompensationConfig,
    Tracer,
    compensate,
    input_channel_means,
)
from edgeprune.prune.importance import dscore
from edgeprune.prune.latency import LatencyProbe, LatencyRequest, allocate_for_latency
from edgeprune.prune.sensitivity import analyze, search_threshold, torch_accuracy
from edgeprune.prune.structural import (
    PruneOptions,
    apply_plan,
    find_groups,
    make_shortcuts_explicit,
    plan_from_ratios,
    prune_copy,
)
from edgeprune.prune.verify import with_followable
from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from bench.prune_quality import MEAN, STD, load_resnet  # noqa: E402
from bench.streaming_data import cifar224_folder, cifar_folder  # noqa: E402

OV = {"performance_hint": "LATENCY"}


def arrays(root: Path, split: str, count: int, pre: Preprocess
           ) -> tuple[np.ndarray, np.ndarray]:
    source = resolve_splits(DataOptions(data=str(root / split), calib_size=10)).train.source
    every = max(1, len(source.labels) // count)
    subset = Subset(source, np.arange(0, every * count, every), split, "bench")
    return materialize(subset, pre)


def build(name: str) -> tuple[nn.Module, int, Preprocess, bool]:
    """(model, input size, preprocessing, has CIFAR labels)."""
    if name in ("resnet20", "resnet32", "resnet44", "resnet56"):
        return load_resnet(int(name[6:])), 32, Preprocess(mean=MEAN, std=STD), True
    imagenet = Preprocess(input_size=(224, 224), mean=[0.485, 0.456, 0.406],
                          std=[0.229, 0.224, 0.225])
    if name == "lite0":
        from lite0_arch import build as lite0
        from lite0_arch import weights_path

        model = lite0()
        model.load_state_dict(torch.load(weights_path(), map_location="cpu",
                                         weights_only=True))
        return model.eval(), 224, Preprocess(input_size=(224, 224), mean=[0.5] * 3,
                                             std=[0.5] * 3), False
    from shapes224 import MobileNetV2, ResNet18, seeded

    nets = {"mobilenetv2": MobileNetV2, "resnet18": ResNet18}
    return seeded(nets[name]()), 224, imagenet, False


def pruned_and_compensated(model: nn.Module, example: torch.Tensor, ratios: dict,
                           options: PruneOptions, images: np.ndarray
                           ) -> tuple[nn.Module, nn.Module]:
    """(surgery only, surgery + refit compensation), as the prune stage does them."""
    config = CompensationConfig(method="refit", samples=len(images))
    means = input_channel_means(model, images, config.batch)
    pruned = copy.deepcopy(model)
    graph, groups = find_groups(pruned, example, options)
    tracer = Tracer(pruned, means)
    apply_plan(graph, groups, plan_from_ratios(groups, ratios, dscore, options), tracer)
    surgery = copy.deepcopy(pruned)
    compensate(pruned, model, tracer.trace, config, images, example)
    return surgery, pruned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56",
                        help="resnet20..resnet56 (32², labels), lite0, mobilenetv2, resnet18")
    parser.add_argument("--reduction", type=float, default=0.3)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sensitivity-images", type=int, default=0,
                        help="default: 1000 at 32², 128 at 224²")
    parser.add_argument("--eval-images", type=int, default=0,
                        help="default: 2000 at 32², 500 at 224²")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, size, pre, labelled = build(args.model)
    example = torch.zeros(2, 3, size, size)
    make_shortcuts_explicit(model, example)
    options, _ = with_followable(model, example, PruneOptions())
    root = cifar_folder() if size == 32 else cifar224_folder(2000, 1000)
    sens_n = args.sensitivity_images or (1000 if size == 32 else 128)
    eval_n = args.eval_images or (2000 if size == 32 else 500)
    train_x, train_y = arrays(root, "train", max(sens_n, 256), pre)
    test_x, test_y = arrays(root, "test", eval_n, pre)
    if not labelled:  # agreement with the unpruned model
        with torch.no_grad():
            train_y = model(torch.from_numpy(train_x)).argmax(1).numpy()
            test_y = np.concatenate([model(torch.from_numpy(test_x[i:i + 64])).argmax(1)
                                     .numpy() for i in range(0, len(test_x), 64)])
    started = time.perf_counter()
    analysis = analyze(model, example, dscore,
                       torch_accuracy(train_x[:sens_n], train_y[:sens_n]), options)
    sensitivity_s = time.perf_counter() - started
    print(f"sensitivity {sensitivity_s:.0f} s", flush=True)
    probe = LatencyProbe("openvino", args.precision, options=OV)
    request = LatencyRequest(probe, train_x[:1], None, lambda t: print(t, flush=True))
    started = time.perf_counter()
    lat = allocate_for_latency(model, example, analysis, dscore, options, args.reduction,
                               request)
    allocation_s = time.perf_counter() - started
    shape = (1, 3, size, size)
    flops = count_flops(model, shape)
    lat_model = prune_copy(model, example, lat["ratios"], dscore, options)[0]
    lat_flops_red = 1 - count_flops(lat_model, shape) / flops

    # the FLOPs allocation at the same FLOPs, then secant steps to the same latency
    matching, search = LatencyProbe("openvino", args.precision, options=OV), []
    reduction = lat_flops_red
    for _ in range(4):
        fl = search_threshold(model, example, analysis, dscore, options, reduction)
        fl_model = prune_copy(model, example, fl["ratios"], dscore, options)[0]
        _, m_fl = matching.measure([lat_model, fl_model], example, train_x[:1],
                                   reference=1)
        gap = m_fl["ratio"] - 1
        search.append({"requested_flops_reduction": reduction,
                       "flops_reduction": 1 - count_flops(fl_model, shape) / flops,
                       "ratios": fl["ratios"], "latency_vs_latency_allocated": 1 + gap})
        print(json.dumps({k: v for k, v in search[-1].items() if k != "ratios"}), flush=True)
        if abs(gap) <= 0.03 or reduction >= 0.95:
            break
        # a FLOPs-allocated model `gap` slower needs about that share more of its
        # remaining latency removed; move the FLOPs reduction by that share of what is left
        reduction = min(0.95, max(0.0, reduction + gap * (1 - reduction)))
    same_flops = search[0]
    same_latency = min(search, key=lambda s: abs(s["latency_vs_latency_allocated"] - 1))

    comp_x = train_x[:256]
    candidates = {"latency-allocated": lat["ratios"],
                  "flops-allocated, same FLOPs": same_flops["ratios"],
                  "flops-allocated, same latency": same_latency["ratios"]}
    models: dict[str, nn.Module] = {"dense": model}
    accuracy: dict[str, dict] = {"dense": {"surgery": torch_accuracy(test_x, test_y)(model)}}
    evaluate = torch_accuracy(test_x, test_y)
    for name, ratios in candidates.items():
        surgery, compensated = pruned_and_compensated(model, example, ratios, options, comp_x)
        models[name] = compensated
        accuracy[name] = {"surgery": evaluate(surgery), "compensated": evaluate(compensated)}
        print(name, accuracy[name], flush=True)
    rows: dict = {}
    for precision in ("fp32", "bf16"):
        side = LatencyProbe("openvino", precision, rounds=args.rounds, iterations=100,
                            seconds=0.2, options=OV)
        measured = side.measure(list(models.values()), example, train_x[:1], reference=1)
        for name, m in zip(models, measured, strict=True):
            rows.setdefault(name, {})[precision] = m
    dense_bf16 = rows["dense"]["bf16"]["p50_ms"]
    table = []
    for name, net in models.items():
        for precision in ("fp32", "bf16"):
            p50 = rows[name][precision]["p50_ms"]
            speed = 1 / rows[name][precision]["ratio"]  # paired per round with dense
            flops_ratio = flops / count_flops(net, shape)
            table.append({
                "model": name, "precision": precision, "p50_ms": p50,
                "noise_ms": rows[name][precision]["noise_ms"],
                "ratio_noise": rows[name][precision]["ratio_noise"],
                "vs_dense_same_precision": speed, "vs_dense_bf16":
                speed if precision == "bf16" else dense_bf16 / p50,  # fp32: across runs
                "flops_ratio": flops_ratio, "latency_ratio_over_flops_ratio":
                speed / flops_ratio, "accuracy": accuracy[name]})
            print(json.dumps(table[-1]), flush=True)
    out = {"benchmark": "latency_pruning", "model": args.model,
           "input": [3, size, size], "metric": "top-1" if labelled else
           "top-1 agreement with the unpruned model",
           "requested_latency_reduction": args.reduction, "table_precision": args.precision,
           "sensitivity_images": sens_n, "eval_images": eval_n,
           "sensitivity_seconds": sensitivity_s, "allocation_seconds": allocation_s,
           "latency_table_seconds": lat["latency"]["table"]["seconds"],
           "latency_allocation": {k: v for k, v in lat.items() if k != "table"},
           "flops_search": search, "side_by_side": table, "rounds": args.rounds,
           "environment": environment()}
    path = REPO / "bench" / "results" / f"latency_pruning_{args.model}_{args.precision}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
