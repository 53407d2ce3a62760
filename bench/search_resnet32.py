"""`edgeprune compile --search` on the shared ResNet-32, CIFAR-10 JPEG protocol (recover on
the 50k train JPEGs, evaluate on the 10k test JPEGs in OpenVINO), `--target openvino-cpu
--max-drop 1.0`: the chosen configuration, its drop, how many candidates and how long;
then its latency against the dense FP32, BF16 and NNCF-INT8 models (the search's own
compiled artifacts) side by side in alternating rounds of one run; then the same search
with a latency goal nobody can meet (0.01 ms; exit 3; it reuses every candidate's cached
stages).

    python bench/search_resnet32.py --recover-epochs 3
Writes bench/results/search_resnet32.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_quality import MEAN, SHARED, STD, WEIGHTS, extract_cifar  # noqa: E402
from ternary_resnet20 import latency_side_by_side, test_image  # noqa: E402

RESULTS = REPO / "bench" / "results" / "search_resnet32.json"


def search(out: Path, data: Path, extra: list[str]) -> tuple[int, dict[str, Any], float]:
    cmd = [sys.executable, "-m", "edgeprune", "compile", str(SHARED / "weights" / WEIGHTS[32]),
           "--arch", "resnet32", "--data", str(data), "--mean", ",".join(map(str, MEAN)),
           "--std", ",".join(map(str, STD)), "--calib-size", "1000", "--target",
           "openvino-cpu", "--search", "--out", str(out), "--json", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode, json.loads(proc.stdout), time.perf_counter() - started


def search_artifacts(root: Path, chosen: str | None) -> dict[str, Path]:
    """The OpenVINO IRs a search compiled: the dense precisions and the chosen candidate."""
    names = {"dense fp32": "dense-fp32", "dense bf16": "dense-bf16",
             "dense nncf int8": "dense-int8"}
    if chosen and chosen not in names.values():
        names[f"chosen: {chosen}"] = chosen
    return {label: root / name / "07-compile" / "model.xml" for label, name in names.items()}


def trial_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("name", "precision", "ran_as", "flops_reduction", "keep_unpruned", "int8_layers",
            "accuracy_control", "accuracy",
            "accuracy_drop", "latency_ms", "within_budget", "chosen", "status", "seconds",
            "compute_seconds",
            "distance", "error")
    return [{k: t.get(k) for k in keys} for t in report["search"]["trials"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recover-epochs", type=float, default=3.0)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "search32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    extract_cifar(args.data_dir)
    code, report, seconds = search(args.out, args.data_dir, [
        "--max-drop", "1.0", "--recover-epochs", str(args.recover_epochs)])
    s = report["search"]
    payload: dict[str, Any] = {
        "benchmark": "search_resnet32", "budget": report["budget"],
        "protocol": "CIFAR-10 JPEG: recovery on all 50k train JPEGs (E="
        f"{args.recover_epochs}), calibration 1000 train images, top-1 on all 10k test "
        "JPEGs in OpenVINO; drop against the unmodified model's PyTorch top-1",
        "exit_code": code, "chosen": s["chosen"], "why": s["why"],
        "trials_run": s["trials_run"], "search_seconds": s["seconds"],
        "search_compute_seconds": s["compute_seconds"],
        "wall_seconds": seconds, "baseline_top1": report["baseline"]["accuracy"],
        "chosen_top1": report["final"]["accuracy"],
        "chosen_drop": report["verdict"]["accuracy_drop"], "trials": trial_table(report),
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    artifacts = search_artifacts(args.out / "search", s["chosen"])
    precisions = {k: "bf16" for k in artifacts if k.endswith("bf16")}
    payload["latency_openvino_cpu"] = latency_side_by_side(
        {k: v for k, v in artifacts.items() if v.is_file()}, args.rounds, args.iterations,
        test_image(args.data_dir), precisions)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    impossible = args.out.with_name(args.out.name + "-impossible")
    if not impossible.exists():
        shutil.copytree(args.out, impossible)
    code, report, seconds = search(impossible, args.data_dir, [
        "--max-drop", "1.0", "--latency-ms", "0.01", "--recover-epochs",
        str(args.recover_epochs)])
    payload["impossible_budget"] = {
        "budget": report["budget"], "exit_code": code, "why": report["search"]["why"],
        "reasons": report["verdict"]["reasons"], "trials_run": report["search"]["trials_run"],
        "wall_seconds": seconds, "trials": trial_table(report)}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: payload[k] for k in ("chosen", "chosen_drop", "trials_run",
                                              "search_seconds")}))
    print(json.dumps(payload["latency_openvino_cpu"]["speedup_vs_dense_fp32"]))


if __name__ == "__main__":
    main()
