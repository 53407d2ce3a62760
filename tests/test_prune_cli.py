"""Pruning through the real CLI: `edgeprune prune` (with 2-process DDP recovery) and
`edgeprune compile --prune`, on the shipped Fashion-MNIST CNN and real data."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import FASHION_ARGS, run_cli

SMALL = ["--sensitivity-samples", "200", "--recover-steps", "8", "--eval-limit", "300",
         "--calib-size", "100"]


def test_prune_command_with_two_process_ddp(fashion_ckpt: Path, fashion_dir: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    result = run_cli("prune", fashion_ckpt, "--data", fashion_dir, *FASHION_ARGS, *SMALL,
                     "--flops-reduction", "0.4", "--nproc", "2", "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["flops_reduction"] >= 0.4
    assert summary["params_after"] < summary["params_before"]
    assert any(after < before for before, after in summary["channels"].values())
    recover = json.loads((out / "03-recover" / "metrics.json").read_text())
    assert recover["training"]["world_size"] == 2 and recover["nproc"] == 2
    payload = torch.load(out / "pruned.pt", weights_only=True)  # no pickled code
    assert payload["pruned"] is True and payload["arch"] == "edgeprune.zoo:fashion_cnn"
    plan = json.loads((out / "02-prune" / "plan.json").read_text())
    assert all(g["kept"] + len(g["pruned"]) == g["channels"] for g in plan.values())
    # the pruned artifact is a valid MODEL for compile, and is really smaller there
    compiled = run_cli("compile", out / "pruned.pt", "--data", fashion_dir, *FASHION_ARGS,
                       "--eval-limit", "300", "--calib-size", "100", "--iterations", "100",
                       "--target", "onnxruntime-cpu", "--out", tmp_path / "c", "--quiet")
    assert compiled.code == 0, compiled.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["baseline"]["params"] == summary["params_after"]


def test_compile_with_pruning_reports_channels_and_attribution(
        fashion_ckpt: Path, fashion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_dir, *FASHION_ARGS, *SMALL,
                     "--prune", "l1", "--prune-ratio", "0.3", "--round-to", "4",
                     "--target", "openvino-cpu", "--iterations", "100", "--max-drop", "100",
                     "--out", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pruning"]["criterion"] == "l1"
    assert report["final"]["flops"] < report["baseline"]["flops"]
    assert all(after % 4 == 0 for name, (_, after) in report["pruning"]["channels"].items()
               if name != "classifier")
    stages = [row["stage"] for row in report["accuracy_by_stage"]]
    assert stages == ["baseline", "prune", "compensate (refit)", "recover", "compile"]
    pruning = report["pruning"]
    assert pruning["compensation"]["method"] == "refit"
    # the compensation is measured on its own: top-1 right after the surgery, then after it
    assert pruning["accuracy_compensated"] == report["accuracy_by_stage"][2]["accuracy"]
    assert pruning["accuracy_surgery"] == report["accuracy_by_stage"][1]["accuracy"]
    # another target re-measures the baseline but reuses the pruned + recovered model
    other = run_cli("compile", fashion_ckpt, "--data", fashion_dir, *FASHION_ARGS, *SMALL,
                    "--prune", "l1", "--prune-ratio", "0.3", "--round-to", "4",
                    "--target", "onnxruntime-cpu", "--iterations", "100", "--max-drop", "100",
                    "--out", out, "--json")
    assert other.code == 0, other.stderr
    status = {s["name"]: s["status"] for s in json.loads(other.stdout)["stages"]}
    assert status["prune"] == status["recover"] == "cached", status
    assert status["baseline"] == status["compile"] == "ran", status
    bad = run_cli("compile", fashion_ckpt, "--data", fashion_dir, *FASHION_ARGS,
                  "--prune", "dscore", "--out", tmp_path / "bad")
    assert bad.code == 2 and "exactly one amount" in bad.stderr
