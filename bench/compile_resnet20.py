"""`edgeprune compile` of the shared ResNet-20 on CIFAR-10 with the openvino-cpu target,
through the real CLI: the 932 lossless test images (published top-1 91.78) and the full
JPEG test set, FP32 and INT8 (NNCF PTQ, 300 calibration images from the JPEG train set).

    python bench/compile_resnet20.py
Writes bench/results/compile_resnet20.json (the reports' key numbers and wall times).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    cifar = Path(tempfile.gettempdir()) / "cifar"
    for name in ("train", "test"):
        if not (cifar / name).is_dir():
            with tarfile.open(SHARED / "cifar10" / f"{name}_jpg.tar.gz") as tar:
                tar.extractall(cifar, filter="data")
    common = ["--arch", "resnet20", "--train-data", str(cifar / "train"),
              "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
              "--target", "openvino-cpu", "--json"]
    sets = {"lossless932": str(SHARED / "cifar10" / "cifar10_test_lossless_prefix.npz"),
            "jpeg_test10k": str(cifar / "test")}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, data in sets.items():
            for precision in ("fp32", "int8"):
                out = Path(tmp) / f"{set_name}-{precision}"
                cmd = [sys.executable, "-m", "edgeprune", "compile",
                       str(SHARED / "weights" / "resnet20-12fca82f.th"), "--eval-data", data,
                       *common, "--precision", precision, "--out", str(out)]
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - started
                report = json.loads(proc.stdout)
                runs[f"{set_name}/{precision}"] = {
                    "exit_code": proc.returncode, "wall_seconds": wall,
                    "baseline_top1_pytorch": report["baseline"]["accuracy"],
                    "final_top1_in_runtime": report["final"]["accuracy"],
                    "samples": report["final"]["accuracy_samples"],
                    "effective_precision": report["final"]["runtime"].get(
                        "effective_precision"),
                    "latency_ms_final": report["final"]["latency_ms"],
                    "latency_ms_baseline_fp32": report["baseline"]["latency_ms"],
                    "speedup_vs_fp32": report["speedup"],
                    "size_bytes": [report["baseline"]["size_bytes"],
                                   report["final"]["size_bytes"]],
                    "command": cmd[1:],
                }
                print(set_name, precision, json.dumps(runs[f"{set_name}/{precision}"]
                                                      ["final_top1_in_runtime"]), flush=True)
    out = {"benchmark": "compile_resnet20", "published_top1": 91.78, "runs": runs,
           "environment": environment()}
    path = REPO / "bench" / "results" / "compile_resnet20.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
