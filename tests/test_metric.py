"""--metric module:callable: top-1 stays the default (the same numbers), a user metric is
what the budget reads, targets of any structure reach it, the segmentation example goes
through prune → compile → gate, and a bad metric is an input error (exit 2, nothing
written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.data.idx import read_idx
from edgeprune.metrics import resolve_metric
from tests.conftest import FASHION_ARGS, run_cli, run_cli_here
from tests.test_bad_input import assert_bad_input, assert_input_error, assert_no_leftovers

SEG_CKPT = Path(__file__).resolve().parents[1] / "edgeprune" / "examples" / "seg_tiny.pt"
SEG_DATA = "edgeprune.examples.segmentation:data"
MIOU = "edgeprune.examples.segmentation:miou"
QUICK = ["--calib-size", "50", "--iterations", "20"]

USER_METRICS = '''
import numpy as np

def top1_plain(outputs, targets):
    return float(np.mean(outputs.argmax(1) == targets) * 100.0)

def per_mille(outputs, targets):  # top-1 in 0.1 %: a scale of the user's own
    return float(np.mean(outputs.argmax(1) == targets) * 1000.0)

def raises(outputs, targets):
    raise ValueError("boom in the metric")

def nan(outputs, targets):
    return float("nan")

def text(outputs, targets):
    return "very good"

class NoCompute:
    def update(self, outputs, targets):
        pass

def three(a, b, c):
    return 1.0
'''


@pytest.fixture
def user_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A module of user metrics, importable here and in subprocesses."""
    folder = tmp_path / "usermetrics"
    folder.mkdir()
    name = f"um_{abs(hash(str(tmp_path))) % 10**8}"
    (folder / f"{name}.py").write_text(USER_METRICS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{Path(__file__).resolve().parents[1]}")
    yield {"module": name, "env": {"PYTHONPATH": f"{folder}:{Path(__file__).resolve().parents[1]}"}}
    sys.modules.pop(name, None)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# --------------------------------------------------------------------------- top-1


def test_top1_default_and_through_the_metric_path_are_the_old_numbers(
        fashion_small: Path, fashion_ckpt: Path, tmp_path: Path, user_metrics) -> None:
    """The default and a user's plain top-1 give the same numbers, bit for bit, and both
    equal top-1 computed here from the eval manifest (PyTorch) and predictions.npy."""
    base = ["compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *QUICK,
            "--precision", "int8", "--quiet"]
    default = run_cli(*base, "--out", tmp_path / "a")
    user = run_cli(*base, "--out", tmp_path / "b", "--metric",
                   f"{user_metrics['module']}:top1_plain", env=user_metrics["env"])
    assert default.code == 0 and user.code == 0, (default.stderr, user.stderr)
    a, b = _report(tmp_path / "a"), _report(tmp_path / "b")
    for side in ("baseline", "final"):
        assert a[side]["accuracy"] == b[side]["accuracy"]
    assert a["metric"]["name"] == "top1" and a["metric"]["spec"] is None
    assert b["metric"] == {"name": f"{user_metrics['module']}:top1_plain",
                           "spec": f"{user_metrics['module']}:top1_plain",
                           "higher_is_better": True}
    # independent: the manifest's images through the checkpoint, the saved predictions
    ids = json.loads((tmp_path / "a" / "01-load" / "calib" / "eval.json").read_text())["ids"]
    npz = np.load(fashion_small)
    idx = np.asarray([int(i) for i in ids])
    from edgeprune.zoo import fashion_cnn

    model = fashion_cnn()
    model.load_state_dict(torch.load(fashion_ckpt, weights_only=True)["state_dict"])
    x = (npz["images"][idx].astype(np.float32) / 255.0 - 0.2860) / 0.3530
    with torch.no_grad():
        preds = model.eval()(torch.from_numpy(x[:, None])).argmax(1).numpy()
    labels = npz["labels"][idx]
    assert a["baseline"]["accuracy"] == float(np.mean(preds == labels) * 100.0)
    runtime = np.load(tmp_path / "a" / "09-evaluate" / "predictions.npy")
    assert a["final"]["accuracy"] == float(np.mean(runtime == labels) * 100.0)


def test_a_user_metric_changes_the_verdict(fashion_small: Path, fashion_ckpt: Path,
                                           tmp_path: Path, user_metrics) -> None:
    """The same pruned model and budget: within it in top-1 points, outside it in the
    user's per-mille points (ten times the drop)."""
    base = ["compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *QUICK,
            "--prune", "l1", "--prune-ratio", "0.1", "--compensate", "none",
            "--recover", "none", "--quiet"]
    probe = run_cli(*base, "--max-drop", "100", "--out", tmp_path / "top1")
    assert probe.code == 0, probe.stderr
    drop = _report(tmp_path / "top1")["verdict"]["accuracy_drop"]
    assert drop > 0.5, f"pruning without compensation or recovery costs top-1 ({drop})"
    budget = f"{min(drop * 2, 100):.3f}"
    top1 = run_cli(*base, "--max-drop", budget, "--out", tmp_path / "top1")  # verdict only
    mille = run_cli(*base, "--max-drop", budget, "--out", tmp_path / "mille", "--metric",
                    f"{user_metrics['module']}:per_mille", env=user_metrics["env"])
    assert top1.code == 0, top1.stderr
    assert _report(tmp_path / "top1")["budget"]["max_drop"] == float(budget)
    assert mille.code == 3, mille.stderr
    report = _report(tmp_path / "mille")
    assert report["verdict"]["accuracy_drop"] == pytest.approx(drop * 10, rel=1e-6)
    assert any("per_mille dropped" in r for r in report["verdict"]["reasons"])


# --------------------------------------------------------------------------- the metric API


def test_streaming_and_plain_forms_agree_with_the_whole_set() -> None:
    """miou (update/compute per batch) equals the IoU of the whole set at once, and the
    plain pixel_accuracy is called on the concatenated arrays."""
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(37, 11, 8, 8)).astype(np.float32)
    targets = rng.integers(0, 11, size=(37, 8, 8))
    batches = [(outputs[i:i + 10], targets[i:i + 10]) for i in range(0, 37, 10)]
    streaming = resolve_metric(MIOU)
    assert streaming.name == "mIoU"
    preds = outputs.argmax(1)
    ious = [np.sum((preds == c) & (targets == c)) / np.sum((preds == c) | (targets == c))
            for c in range(11)]
    assert streaming.score(batches) == pytest.approx(float(np.mean(ious) * 100), abs=1e-9)
    plain = resolve_metric("edgeprune.examples.segmentation:pixel_accuracy")
    assert plain.score(batches) == pytest.approx(float(np.mean(preds == targets) * 100))


# --------------------------------------------------------------------------- bad metrics


@pytest.mark.parametrize(("name", "needles"), [
    ("raises", ("raises", "ValueError", "boom")),
    ("nan", ("nan", "not a finite number")),
    ("text", ("text", "not a number")),
    ("NoCompute", ("NoCompute", "compute()")),
    ("three", ("three", "3 required arguments")),
    ("missing", ("has no attribute",)),
])
def test_bad_metric_is_an_input_error(name: str, needles: tuple[str, ...],
                                      fashion_small: Path, fashion_ckpt: Path,
                                      tmp_path: Path, user_metrics) -> None:
    out = tmp_path / "out"
    result = run_cli_here("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                          *QUICK, "--metric", f"{user_metrics['module']}:{name}",
                          "--out", out)
    assert_bad_input(result, out, "metric", *needles)


def test_metric_module_that_does_not_import(fashion_small: Path, fashion_ckpt: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli_here("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                          "--metric", "no_such_metrics_pkg:miou", "--out", out)
    assert_bad_input(result, out, "cannot import", "no_such_metrics_pkg", "PYTHONPATH")


def test_job_file_cannot_name_a_metric(fashion_small: Path, fashion_ckpt: Path,
                                       tmp_path: Path) -> None:
    """A file never chooses code: metric = "module:callable" in a job file is refused
    (and the code never runs); "top1", the built-in, is fine."""
    marker = tmp_path / "pwned"
    job = tmp_path / "job.toml"
    job.write_text('metric = "edgeprune.pipeline:os.system"\n')
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                     "--job", job, "--out", out)
    assert_bad_input(result, out, "job.toml", "never chooses", "--metric", marker=marker)
    job.write_text('metric = "top1"\nmax_drop = 100.0\n')
    ok = run_cli_here("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                      *QUICK, "--job", job, "--out", out, "--quiet")
    assert ok.code == 0, ok.stderr


def test_target_profile_cannot_name_a_metric(fashion_small: Path, fashion_ckpt: Path,
                                             tmp_path: Path) -> None:
    profile = (Path(__file__).resolve().parents[1] / "targets" / "openvino-cpu.toml")
    lines = profile.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("["))
    bad = tmp_path / "mine.toml"
    bad.write_text("\n".join([*lines[:at], 'metric = "os:system"', *lines[at:]]) + "\n")
    out = tmp_path / "out"
    result = run_cli_here("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                          "--target", bad, "--out", out)
    assert_bad_input(result, out, "mine.toml", "metric")


# --------------------------------------------------------------------------- targets


@pytest.fixture(scope="module")
def mask_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 real Fashion-MNIST images with their segmentation masks as `labels` (N×28×28)."""
    from edgeprune.examples.segmentation import DATA_DIR, masks

    if not (DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    images = read_idx(DATA_DIR / "t10k-images-idx3-ubyte.gz")[:600]
    labels = read_idx(DATA_DIR / "t10k-labels-idx1-ubyte.gz")[:600]
    path = tmp_path_factory.mktemp("masks") / "masks600.npz"
    np.savez(path, images=images, labels=masks(images, labels))
    return path


def test_mask_targets_need_the_metric(mask_npz: Path, tmp_path: Path) -> None:
    """N×H×W labels are refused as class ids, read as targets with --metric; a target
    count that differs from the images' is still an error; labels-reading recovery of
    such targets is refused in favour of distillation."""
    args = ["compile", SEG_CKPT, "--data", mask_npz, *FASHION_ARGS, *QUICK]
    out = tmp_path / "out"
    assert_bad_input(run_cli_here(*args, "--out", out), out, "labels have shape")
    bad = tmp_path / "short.npz"
    with np.load(mask_npz) as npz:
        np.savez(bad, images=npz["images"], labels=npz["labels"][:599])
    assert_bad_input(run_cli_here("compile", SEG_CKPT, "--data", bad, *FASHION_ARGS,
                                  "--metric", MIOU, "--out", out), out, "600 images but 599")
    assert_bad_input(run_cli_here(*args, "--metric", MIOU, "--prune", "l1", "--prune-ratio",
                                  "0.3", "--recover", "labels", "--out", out), out,
                     "--recover labels", "--recover distill")
    ok = run_cli_here(*args, "--metric", MIOU, "--out", out, "--quiet")
    assert ok.code == 0, ok.stderr
    report = _report(out)
    assert report["metric"]["name"] == "mIoU" and report["final"]["accuracy"] > 50


# --------------------------------------------------------------------------- the example


def test_segmentation_example_prune_compile_gate(tmp_path: Path) -> None:
    """The shipped segmentation model through the real CLI: prune (label-free recovery by
    distillation on the per-pixel outputs) → compile at INT8, mIoU in the report: exit 0
    within the budget; heavy pruning with a 0.1-point budget: exit 3."""
    if not SEG_CKPT.is_file():
        pytest.skip("seg_tiny.pt missing: python -m edgeprune.examples.train_segmentation")
    common = ["--data", SEG_DATA, "--metric", MIOU, *FASHION_ARGS, "--eval-limit", "300"]
    pruned = tmp_path / "pruned"
    result = run_cli("prune", SEG_CKPT, "--arch", "seg_tiny", *common,
                     "--train-data", SEG_DATA, "--train-limit", "600", "--prune", "l1",
                     "--prune-ratio", "0.3", "--recover-steps", "8", "--recover-batch", "64",
                     "--compensate-samples", "200", "--out", pruned, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["metric"]["name"] == "mIoU"
    assert (pruned / "03-recover" / "metrics.json").is_file()
    assert json.loads((pruned / "03-recover" / "metrics.json").read_text())["mode"] == "distill"
    assert summary["flops_after"] < summary["flops_before"]
    out = tmp_path / "compiled"
    gate = run_cli("compile", pruned / "pruned.pt", *common, *QUICK, "--precision", "int8",
                   "--max-drop", "3", "--out", out, "--quiet")
    assert gate.code == 0, gate.stderr
    report = _report(out)
    assert report["passed"] and report["metric"]["name"] == "mIoU"
    assert report["final"]["accuracy"] > 40 and report["final"]["precision"] == "int8"
    assert "mIoU (points)" in (out / "report.html").read_text()
    assert "mIoU drop" in (out / "summary.md").read_text()
    missed = tmp_path / "missed"
    heavy = run_cli("compile", SEG_CKPT, "--arch", "seg_tiny", *common, *QUICK, "--prune",
                    "l1", "--prune-ratio", "0.7", "--compensate", "none", "--recover", "none",
                    "--max-drop", "0.1", "--out", missed, "--quiet")
    assert heavy.code == 3, heavy.stderr
    report = _report(missed)
    assert not report["passed"] and report["verdict"]["accuracy_drop"] > 0.1
    assert any(r.startswith("mIoU dropped") for r in report["verdict"]["reasons"])
    assert_no_leftovers(missed)


def test_remote_evaluation_refuses_a_metric(fashion_small: Path, fashion_ckpt: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli_here("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                          "--metric", MIOU, "--device", "user@192.0.2.1", "--out", out)
    assert_input_error(result, "raw outputs", "drop --device")


def test_python_api_takes_the_metric_callable(tmp_path: Path) -> None:
    """edgeprune.compile(..., metric=<the callable>) on an in-memory dataset of (image,
    mask) pairs: the report names the metric, its number is the metric's."""
    import edgeprune
    from edgeprune.examples.segmentation import data, miou
    from edgeprune.zoo import seg_tiny

    if not SEG_CKPT.is_file():
        pytest.skip("seg_tiny.pt missing")
    model = seg_tiny()
    model.load_state_dict(torch.load(SEG_CKPT, weights_only=True)["state_dict"])
    full = data("eval")
    items = [full[i] for i in range(400)]
    report = edgeprune.compile(model, items, metric=miou, channels=1, mean=[0.2860],
                               std=[0.3530], calib_size=50, iterations=20, max_drop=1.0,
                               out=tmp_path / "out")
    assert report.passed and report.raw["metric"]["name"] == "mIoU"
    assert report.raw["metric"]["spec"] == "edgeprune.examples.segmentation:miou"
    assert 40 < report.final.accuracy <= 100
