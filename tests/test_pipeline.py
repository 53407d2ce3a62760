"""The whole pipeline through the real CLI, on real data and real runtimes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import jsonschema
import pytest

from edgeprune.report.build import schema
from tests.conftest import FASHION_ARGS, REPO, run_cli

FAST = ["--iterations", "120", "--calib-size", "100"]


def compile_fashion(ckpt: Path, data: Path, out: Path, *extra: str):
    return run_cli("compile", ckpt, "--data", data, *FASHION_ARGS, *FAST, "--out", out, *extra)


def read_report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, schema())
    return report


def test_openvino_int8_end_to_end(fashion_ckpt: Path, fashion_small: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = compile_fashion(fashion_ckpt, fashion_small, out, "--target", "openvino-cpu",
                             "--precision", "int8", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == read_report(out)
    assert report["passed"] is True
    base, final = report["baseline"], report["final"]
    assert base["accuracy"] > 80 and final["accuracy_runtime"] == "openvino"
    assert abs(report["verdict"]["accuracy_drop"]) < 3
    # INT8 really executed as integer kernels, as read back from the runtime model
    assert final["runtime"]["effective_precision"] == "i8"
    assert base["runtime"]["inference_precision_hint"] == "f32"
    assert final["size_bytes"] < base["size_bytes"]
    assert final["flops"] == base["flops"] > 0 and final["params"] == base["params"]
    for side in (base, final):
        lat = side["latency_ms"]
        assert lat["iterations"] >= 120 and lat["p99"] is not None
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    names = [s["name"] for s in report["stages"]]
    assert names == ["load", "baseline", "prune", "recover", "quantize", "export", "compile",
                     "profile", "evaluate", "verdict"]
    for i, name in enumerate(names, start=1):
        metrics = json.loads((out / f"{i:02d}-{name}" / "metrics.json").read_text())
        assert metrics["stage"] == name
    manifest = json.loads((out / "01-load" / "calib" / "calibration.json").read_text())
    assert manifest["count"] == 100 and len(manifest["ids"]) == 100
    assert len(manifest["content_sha256"]) == 64
    assert report["export"]["parity"]["top1_agreement"] >= 0.99


def test_onnxruntime_fp32_matches_pytorch(fashion_ckpt: Path, fashion_small: Path,
                                          tmp_path: Path):
    out = tmp_path / "out"
    result = compile_fashion(fashion_ckpt, fashion_small, out, "--target", "onnxruntime-cpu",
                             "--quiet")
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    report = read_report(out)
    assert report["final"]["accuracy_runtime"] == "onnxruntime"
    assert report["final"]["accuracy"] == pytest.approx(report["baseline"]["accuracy"], abs=0.2)
    assert report["final"]["runtime"]["effective_precision"] == "fp32"


def test_budget_missed_exits_3_and_says_why(fashion_ckpt: Path, fashion_small: Path,
                                            tmp_path: Path):
    out = tmp_path / "out"
    result = compile_fashion(fashion_ckpt, fashion_small, out, "--target", "onnxruntime-cpu",
                             "--latency-ms", "0.0001", "--percentile", "p99")
    assert result.code == 3, result.stderr
    report = read_report(out)
    assert report["passed"] is False and report["verdict"]["latency_ok"] is False
    assert any("p99 latency" in r for r in report["verdict"]["reasons"])
    assert "MISSED" in result.stdout


def test_rerun_reuses_unchanged_stages(fashion_ckpt: Path, fashion_small: Path,
                                       tmp_path: Path):
    out = tmp_path / "out"
    args = ("--target", "onnxruntime-cpu", "--quiet")
    assert compile_fashion(fashion_ckpt, fashion_small, out, *args).code == 0
    started = time.perf_counter()
    assert compile_fashion(fashion_ckpt, fashion_small, out, *args).code == 0
    assert time.perf_counter() - started < 15
    assert {s["status"] for s in read_report(out)["stages"]} <= {"cached", "skipped"}
    # a new precision re-runs compile and everything after it, not the baseline
    assert compile_fashion(fashion_ckpt, fashion_small, out, *args, "--precision",
                           "int8").code == 0
    status = {s["name"]: s["status"] for s in read_report(out)["stages"]}
    assert status["load"] == status["baseline"] == status["export"] == "cached"
    assert status["compile"] == status["evaluate"] == "ran"


def test_ctrl_c_keeps_finished_stages_and_resumes(fashion_ckpt: Path, fashion_small: Path,
                                                  tmp_path: Path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeprune", "compile", str(fashion_ckpt), "--data",
           str(fashion_small), *FASHION_ARGS, *FAST, "--out", str(out), "--target",
           "onnxruntime-cpu", "--quiet"]
    # a shell that starts a job in the background makes it ignore SIGINT, and children
    # inherit that: give the CLI the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "02-baseline").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".*partial")), "a half-written stage was left behind"
    assert not (out / "report.json").exists()
    assert compile_fashion(fashion_ckpt, fashion_small, out, "--target", "onnxruntime-cpu",
                           "--quiet").code == 0
    status = {s["name"]: s["status"] for s in read_report(out)["stages"]}
    assert status["load"] == status["baseline"] == "cached"


def test_job_file_supplies_options(fashion_ckpt: Path, fashion_small: Path, tmp_path: Path):
    job = tmp_path / "job.toml"
    job.write_text(
        f'data = "{fashion_small}"\nchannels = 1\nmean = [0.2860]\nstd = [0.3530]\n'
        f'target = "onnxruntime-cpu"\ncalib_size = 100\niterations = 120\nmax_drop = 0.5\n'
        f'out = "{tmp_path / "out"}"\n'
    )
    result = run_cli("compile", fashion_ckpt, "--job", job, "--max-drop", "2", "--quiet")
    assert result.code == 0, result.stderr
    report = read_report(tmp_path / "out")
    assert report["budget"]["max_drop"] == 2.0  # the command line wins over the job file
    assert report["target"]["name"] == "onnxruntime-cpu"
    job.write_text(job.read_text() + "bogus_key = 1\n")
    bad = run_cli("compile", fashion_ckpt, "--job", job)
    assert bad.code == 2 and "bogus_key" in bad.stderr


def test_targets_command_lists_profiles():
    result = run_cli("targets", "--json")
    assert result.code == 0
    names = {t["name"] for t in json.loads(result.stdout)}
    assert {"openvino-cpu", "onnxruntime-cpu"} <= names
    assert run_cli("--version").stdout.startswith("edgeprune ")


@pytest.fixture(scope="module")
def cifar_test_jpg(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(shared_data / "cifar10" / "test_jpg.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root / "test"


def test_resnet20_shared_weights_reach_published_accuracy(shared_data: Path,
                                                          cifar_test_jpg: Path,
                                                          tmp_path: Path):
    """Loading, preprocessing and evaluation are right: the published 91.78 top-1 on the
    932 lossless test images, within sampling noise, measured IN OpenVINO."""
    out = tmp_path / "out"
    result = run_cli(
        "compile", shared_data / "weights" / "resnet20-12fca82f.th", "--arch", "resnet20",
        "--data", shared_data / "cifar10" / "cifar10_test_lossless_prefix.npz",
        "--train-data", cifar_test_jpg, "--mean", "0.485,0.456,0.406",
        "--std", "0.229,0.224,0.225", "--target", "openvino-cpu", *FAST, "--out", out,
        "--quiet",
    )
    assert result.code == 0, result.stderr
    report = read_report(out)
    assert report["final"]["accuracy_samples"] == 932
    assert abs(report["final"]["accuracy"] - 91.78) <= 1.5
    assert report["baseline"]["params"] == 269_722
    assert report["baseline"]["flops"] == pytest.approx(81.1e6, rel=0.01)
