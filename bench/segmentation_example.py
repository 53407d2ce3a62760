"""The non-classification example through the real CLI: ``seg_tiny`` (Fashion-MNIST
per-pixel masks, 11 classes) gated on mIoU with ``--metric``.

1. dense compile, FP32 and INT8 on OpenVINO (the metric in the runtime vs PyTorch);
2. ``edgeprune prune`` (D-Score, 40% of the FLOPs, label-free distillation recovery on
   the per-pixel outputs) → ``edgeprune compile pruned.pt --precision int8``;
3. the same pruning in one ``compile`` run, so the drop is against the dense model:
   within a 5-point budget (exit 0), and heavy pruning (70% of the FLOPs, the same
   recovery) with ``--max-drop 0.1`` (exit 3).

Every run gets the same ``--train-data`` (calibration, sensitivity, recovery) and so the
same evaluation images (``--eval-limit`` of the 10k test images, seed 0).

    python bench/segmentation_example.py [--eval-limit 2000]
Writes bench/results/segmentation_example.json (every command, its exit code, wall
time, and the report's figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "edgeprune" / "examples" / "seg_tiny.pt"
DATA = "edgeprune.examples.segmentation:data"
MIOU = "edgeprune.examples.segmentation:miou"


def run(args: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True,
                          text=True, cwd=REPO, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        raise SystemExit(f"edgeprune {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return {"command": "edgeprune " + " ".join(args), "exit_code": proc.returncode,
            "seconds": round(seconds, 1)}


def figures(out: Path) -> dict:
    r = json.loads((out / "report.json").read_text())
    return {
        "metric": r["metric"], "passed": r["passed"], "budget_max_drop": r["budget"]["max_drop"],
        "baseline_miou_pytorch": r["baseline"]["accuracy"],
        "final_miou_on_target": r["final"]["accuracy"], "final_precision": r["final"]["precision"],
        "ran_as": r["final"]["runtime"].get("effective_precision"),
        "drop_points": r["verdict"]["accuracy_drop"], "reasons": r["verdict"]["reasons"],
        "eval_samples": r["final"]["accuracy_samples"],
        "flops": [r["baseline"]["flops"], r["final"]["flops"]],
        "p50_ms": [r["baseline"]["latency_ms"]["p50"], r["final"]["latency_ms"]["p50"]],
        "accuracy_by_stage": [(s["stage"], round(s["accuracy"], 2))
                              for s in r["accuracy_by_stage"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--recover-epochs", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        "segmentation_example.json")
    args = parser.parse_args()
    common = ["--data", DATA, "--metric", MIOU, "--channels", "1", "--mean", "0.2860",
              "--std", "0.3530", "--eval-limit", str(args.eval_limit)]
    train = ["--train-data", DATA, "--train-limit", str(args.train_limit)]
    compile_ = ["--target", "openvino-cpu", "--iterations", "500", "--quiet"]
    prune = ["--prune", "dscore", "--flops-reduction", "0.4", "--recover-epochs",
             str(args.recover_epochs)]
    results: dict = {"checkpoint": str(CKPT.relative_to(REPO)), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="seg-bench-") as tmp:
        root = Path(tmp)

        def step(name: str, cli: list[str], out: Path, report: bool = True) -> None:
            entry = run([*cli, "--out", str(out)])
            if report:
                entry.update(figures(out))
            else:
                entry["summary"] = json.loads((out / "prune.json").read_text())
                entry["summary"] = {k: entry["summary"][k] for k in (
                    "flops_before", "flops_after", "params_before", "params_after",
                    "accuracy_pruned", "accuracy_recovered", "accuracy_samples", "metric")}
            results["runs"][name] = entry
            print(name, json.dumps({k: v for k, v in entry.items() if k != "command"})[:400],
                  flush=True)

        for precision in ("fp32", "int8"):
            step(f"dense_{precision}", ["compile", str(CKPT), "--arch", "seg_tiny", *common,
                                        *train, *compile_, "--precision", precision,
                                        "--max-drop", "1"], root / f"dense-{precision}")
        step("prune", ["prune", str(CKPT), "--arch", "seg_tiny", *common, *train, *prune],
             root / "pruned", report=False)
        step("compile_pruned_int8", ["compile", str(root / "pruned" / "pruned.pt"), *common,
                                     *train, *compile_, "--precision", "int8", "--max-drop", "1"],
             root / "compiled")
        step("one_run_prune_within_budget", ["compile", str(CKPT), "--arch", "seg_tiny",
                                             *common, *train, *prune, *compile_,
                                             "--precision", "int8", "--max-drop", "5"],
             root / "one-run")
        step("heavy_prune_missed", ["compile", str(CKPT), "--arch", "seg_tiny", *common,
                                    *train, *compile_, "--prune", "dscore",
                                    "--flops-reduction", "0.7", "--recover-epochs",
                                    str(args.recover_epochs), "--precision", "int8",
                                    "--max-drop", "0.1"], root / "heavy")
    from edgeprune.report.environment import environment

    results["environment"] = environment()
    results["note"] = ("2-core CPU shared with other jobs: wall times and latencies are "
                       "inflated; mIoU figures are deterministic for the seed")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
