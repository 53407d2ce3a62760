"""Ternary quantization on real data, through the product's own pipeline: shared ResNet-20
on CIFAR-10 (JPEG protocol of ../shared/data/README.md: train on the 50k train JPEGs,
evaluate on all 10k test JPEGs in the target runtime), FP32 vs NNCF INT8 PTQ vs TWN
ternary vs hyperspherical (HQ) ternary with the same QAT budget; then the same after 50%
FLOPs D-Score pruning (+ recovery). Each variant is one `edgeprune compile` run.

Afterwards the OpenVINO artifacts those runs compiled (dense FP32, NNCF INT8, HQ ternary
as INT8, the same with u2-compressed weights, pruned HQ ternary) are profiled side by
side in alternating rounds of one run (this machine is noisy).

    python bench/ternary_resnet20.py --epochs 3
Writes bench/results/ternary_resnet20.json (rewritten after every variant).
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

import numpy as np

from edgeprune.measure import summarize
from edgeprune.report.environment import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prune_quality import MEAN, SHARED, STD, WEIGHTS, extract_cifar  # noqa: E402

RESULTS = REPO / "bench" / "results" / "ternary_resnet20.json"
VARIANTS = {  # name -> extra compile options
    "fp32": ["--quant", "fp32"],
    "nncf-int8": ["--quant", "int8"],
    "twn": ["--quant", "ternary", "--quant-method", "twn"],
    "hq": ["--quant", "ternary", "--quant-method", "hq"],
}


def compile_run(out: Path, extra: list[str], data: Path, epochs: float) -> dict[str, Any]:
    """One `edgeprune compile` run with --json; its report."""
    cmd = [sys.executable, "-m", "edgeprune", "compile", str(SHARED / "weights" / WEIGHTS[20]),
           "--arch", "resnet20", "--data", str(data), "--mean", ",".join(map(str, MEAN)),
           "--std", ",".join(map(str, STD)), "--calib-size", "1000", "--iterations", "300",
           "--max-drop", "100", "--out", str(out), "--json", *extra]
    if "ternary" in extra:
        cmd += ["--quant-epochs", str(epochs)]
    if "--prune" in extra:
        cmd += ["--recover-epochs", str(epochs)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    report["_seconds"] = time.perf_counter() - started
    return report


def summarize_run(report: dict[str, Any], out: Path) -> dict[str, Any]:
    final, quant = report["final"], report.get("quantization")
    row: dict[str, Any] = {
        "top1_runtime": final["accuracy"], "runtime": final["accuracy_runtime"],
        "samples": final["accuracy_samples"], "precision": final["precision"],
        "effective_precision": final["runtime"].get("effective_precision"),
        "flops": final["flops"], "params": final["params"],
        "accuracy_by_stage": report["accuracy_by_stage"],
        "pipeline_seconds": report["_seconds"],
        "stage_seconds": {s["name"]: s["seconds"] for s in report["stages"]},
        "compiled_bytes": final["size_bytes"], "onnx_bytes": final["onnx_bytes"],
        "out": str(out),
    }
    if report.get("pruning"):
        row["flops_reduction"] = report["pruning"]["flops_reduction"]
    if quant:
        row.update(
            top1_pytorch_fake_quant=quant["accuracy"],
            top1_before_qat=quant["accuracy_before_qat"], qat=quant["training"],
            ternary_summary=quant["summary"],
            openvino_convolutions=quant["openvino_convolution_precisions"],
            packed_bytes=quant["packed"]["bytes"],
            packed_ratio_vs_fp32_onnx=quant["packed"]["ratio_vs_fp32_onnx"],
            packed_variants=quant["packed"]["sizes"]["variants"],
            fp32_onnx_bytes=quant["packed"]["fp32_onnx_bytes"],
            compact_u2_ir_bytes=quant["compact_u2_ir_bytes"],
            parity=report["export"]["parity"]["runtimes"],
        )
    return row


def profile(artifact: Path, inputs: Path, iterations: int, precision: str = "fp32"
            ) -> np.ndarray:
    """One round in `python -m edgeprune.runner` (as the pipeline's profile stage); the
    precision sets OpenVINO's inference hint (f32 for fp32 and int8 IRs, bf16 for bf16)."""
    request = {"backend": "openvino", "artifact": str(artifact), "precision": precision,
               "threads": 0, "batch": 1, "options": {"performance_hint": "LATENCY"},
               "inputs": str(inputs), "loop": {"warmup_iterations": 50,
                                              "min_iterations": iterations,
                                              "min_seconds": 2.0, "max_seconds": 60}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(request, fh)
    out = subprocess.run([sys.executable, "-m", "edgeprune.runner", "profile", fh.name],
                         capture_output=True, text=True, check=True)
    return np.asarray(json.loads(out.stdout)["samples_ms"])


def latency_side_by_side(artifacts: dict[str, Path], rounds: int, iterations: int,
                         images: np.ndarray, precisions: dict[str, str] | None = None
                         ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, images[:1])
        samples: dict[str, list[np.ndarray]] = {k: [] for k in artifacts}
        for _ in range(rounds):  # alternate: drift hits every variant alike
            for name, path in artifacts.items():
                samples[name].append(profile(path, inputs, iterations,
                                             (precisions or {}).get(name, "fp32")))
    stats = {k: summarize(np.concatenate(v), 1) for k, v in samples.items()}
    ref = stats["dense fp32"]
    return {"rounds": rounds, "iterations_per_round": iterations, "latency_ms": stats,
            "speedup_vs_dense_fp32": {k: {p: ref[p] / s[p] for p in ("p50", "p99")}
                                      for k, s in stats.items()}}


def test_image(root: Path) -> np.ndarray:
    """One preprocessed test JPEG as the profiler's input."""
    from edgeprune.data.preprocess import Preprocess
    from edgeprune.data.splits import DataOptions, materialize, resolve_splits

    splits = resolve_splits(DataOptions(data=str(root), calib_size=1, eval_limit=1, seed=0))
    return materialize(splits.eval, Preprocess(mean=MEAN, std=STD).validate())[0]


def write(payload: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3.0,
                        help="QAT epochs (both ternary methods) and recovery epochs")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ternary-bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the side-by-side latency (run it later, on a quiet "
                        "machine, with --resume)")
    parser.add_argument("--only", nargs="+", help="run only these variants (e.g. hq pruned-hq)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the variants already in the results file")
    args = parser.parse_args()
    extract_cifar(args.data_dir)  # the JPEG folders, once (shared with prune_quality)
    payload: dict[str, Any] = {
        "benchmark": "ternary_resnet20", "model": "resnet20 (shared CIFAR-10 weights)",
        "protocol": "CIFAR-10 JPEG: QAT / recovery on all 50k train JPEGs (SGD momentum 0.9 "
        f"Nesterov, lr 0.01 cosine, wd 5e-4, batch 128, crop+flip, E={args.epochs}); "
        "calibration: 1000 train images; top-1 on all 10k test JPEGs in OpenVINO CPU",
        "epochs": args.epochs, "results": {}, "environment": environment(),
    }
    if args.resume and RESULTS.is_file():
        payload["results"] = json.loads(RESULTS.read_text())["results"]
    plan = [(name, extra) for name, extra in VARIANTS.items()]
    plan += [(f"pruned-{name}", ["--prune", "dscore", "--flops-reduction", "0.5", *extra])
             for name, extra in VARIANTS.items()]
    artifacts: dict[str, Path] = {}
    keep = args.work / "artifacts"
    for name, extra in plan:
        if (args.only and name not in args.only) or name in payload["results"]:
            continue
        out = args.work / ("pruned" if name.startswith("pruned") else "dense")
        report = compile_run(out, extra, args.data_dir, args.epochs)
        payload["results"][name] = summarize_run(report, out)
        shutil.rmtree(keep / name, ignore_errors=True)
        shutil.copytree(out / "07-compile", keep / name)
        print(name, json.dumps({k: payload["results"][name].get(k) for k in (
            "top1_runtime", "top1_pytorch_fake_quant", "packed_ratio_vs_fp32_onnx")}),
            flush=True)
        write(payload)
    for label, name, sub in (("dense fp32", "fp32", ""), ("nncf int8", "nncf-int8", ""),
                             ("hq ternary (int8 kernels)", "hq", ""),
                             ("hq ternary, u2 IR", "hq", "compact-u2"),
                             ("pruned hq ternary", "pruned-hq", ""),
                             ("pruned fp32", "pruned-fp32", "")):
        path = keep / name / sub / "model.xml"
        if path.is_file():
            artifacts[label] = path
    if "dense fp32" in artifacts and not args.no_latency:
        payload["latency_openvino_cpu"] = latency_side_by_side(
            artifacts, args.rounds, args.iterations, test_image(args.data_dir))
        print(json.dumps(payload["latency_openvino_cpu"]["speedup_vs_dense_fp32"]), flush=True)
        write(payload)
    print("wrote", RESULTS)


if __name__ == "__main__":
    main()
