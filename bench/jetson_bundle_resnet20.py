"""The headline command for a pruned + ternary ResNet-20, without a device:
`edgeprune compile resnet20 ... --prune dscore --flops-reduction 0.5 --quant ternary
--target jetson` must build the deploy bundle, print how to build and profile it on the
Jetson, and exit 4 (nothing measured: no TensorRT or Jetson here).

    python bench/jetson_bundle_resnet20.py [--reuse /tmp/ternary-bench/pruned]
`--reuse` copies a finished openvino-cpu run with the same pruning first, so its pruned and
recovered model is reused (the quantize stage re-runs: TensorRT needs symmetric int8
activations). Writes bench/results/jetson_bundle_resnet20.json.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_quality import MEAN, SHARED, STD, WEIGHTS, extract_cifar  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "jetson20")
    parser.add_argument("--reuse", type=Path, help="a finished run folder to start from")
    parser.add_argument("--epochs", type=float, default=3.0)
    args = parser.parse_args()
    extract_cifar(args.data_dir)
    if args.reuse and not args.out.exists():
        shutil.copytree(args.reuse, args.out, ignore=shutil.ignore_patterns(
            "05-*", "06-*", "07-*", "08-*", "09-*", "10-*", "report.*", "summary.md"))
    cmd = [sys.executable, "-m", "edgeprune", "compile", str(SHARED / "weights" / WEIGHTS[20]),
           "--arch", "resnet20", "--data", str(args.data_dir),
           "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
           "--calib-size", "1000", "--prune", "dscore", "--flops-reduction", "0.5",
           "--recover-epochs", str(args.epochs), "--quant", "ternary",
           "--quant-epochs", str(args.epochs), "--target", "jetson", "--out", str(args.out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    bundle = args.out / "07-compile" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text()) if bundle.is_dir() else None
    stages = {}
    for d in sorted(args.out.glob("[0-9][0-9]-*")):
        metrics = json.loads((d / "metrics.json").read_text())
        stages[d.name] = {"status": metrics.get("status"), "summary": metrics.get("summary")}
    start = proc.stderr.find("nothing was measured")
    error = proc.stderr[proc.stderr.rfind("\n", 0, start) + 1:] if start >= 0 else \
        proc.stderr[-3000:]
    out = {
        "benchmark": "jetson_bundle_resnet20", "command": cmd[1:], "exit_code": proc.returncode,
        "seconds": time.perf_counter() - started, "stages": stages,
        "bundle_files": sorted(p.name for p in bundle.iterdir()) if bundle.is_dir() else [],
        "manifest": manifest, "message": error.strip(),
    }
    path = REPO / "bench" / "results" / "jetson_bundle_resnet20.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("exit_code", "bundle_files")}), "\n", out["message"])


if __name__ == "__main__":
    main()
