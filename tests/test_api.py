"""The Python API (``edgeprune.compile`` / ``edgeprune.prune``) on the shipped
Fashion-MNIST CNN and 600 real images: the same report as the CLI, resume from the stage
cache, typed errors, and the README's "From Python" example run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeprune
from edgeprune.data.preprocess import Preprocess
from edgeprune.errors import InputError, UnknownOptionError
from tests.conftest import FASHION_ARGS, REPO, run_cli

MEAN, STD = [0.2860], [0.3530]
FAST_CLI = ["--calib-size", "50", "--iterations", "20"]
FAST = {"calib_size": 50, "iterations": 20}


class Pixels(torch.utils.data.Dataset):
    """(HxWx1 uint8 array, int label): edgeprune preprocesses it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index][:, :, None], int(self.labels[index])


class Tensors(Pixels):
    """(model-ready float CHW tensor, tensor label): used as it is."""

    preprocess = Preprocess(channels=1, mean=MEAN, std=STD)

    def __getitem__(self, index: int):
        return (torch.from_numpy(self.preprocess(self.images[index])),
                torch.tensor(self.labels[index]))


def fashion_model() -> torch.nn.Module:
    """The shipped CNN as a live module: its zoo architecture, the checkpoint's weights."""
    from edgeprune.examples.paths import checkpoint_path
    from edgeprune.zoo import fashion_cnn

    model = fashion_cnn()
    model.load_state_dict(torch.load(checkpoint_path(), weights_only=True)["state_dict"])
    return model


@pytest.fixture(scope="module")
def arrays(fashion_small: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(fashion_small) as npz:
        return npz["images"], npz["labels"]


@pytest.fixture(scope="module")
def cli_report(fashion_ckpt: Path, fashion_small: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cli") / "out"
    result = run_cli("compile", fashion_ckpt, "--arch", "fashion_cnn", "--data", fashion_small,
                     *FASHION_ARGS, *FAST_CLI, "--out", out, "--quiet")
    assert result.code == 0, result.stderr
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def api_run(arrays, tmp_path_factory) -> tuple[edgeprune.Report, Path]:
    out = tmp_path_factory.mktemp("api") / "out"
    report = edgeprune.compile(fashion_model(), Pixels(*arrays), target="openvino-cpu",
                               channels=1, mean=MEAN, std=STD, out=out, **FAST)
    return report, out


def comparable(report: dict) -> dict:
    """Everything but timing (latencies, seconds), paths and the command."""
    sides = {side: {k: report[side][k] for k in (
        "accuracy", "accuracy_samples", "accuracy_runtime", "flops", "params", "size_bytes",
        "precision")} for side in ("baseline", "final")}
    return {
        "passed": report["passed"],
        "verdict": {k: v for k, v in report["verdict"].items() if k != "latency_measured_ms"},
        "budget": report["budget"], **sides,
        "input_shape": report["model"]["input_shape"],
        "data": {split: {k: report["data"][split][k] for k in (
            "count", "ids_sha256", "content_sha256")} for split in ("eval", "calibration")},
        "accuracy_by_stage": report["accuracy_by_stage"],
        "stages": [(s["name"], s["status"]) for s in report["stages"]],
        "target": {k: report["target"][k] for k in ("name", "backend", "precision", "batch")},
    }


def test_live_module_and_pixel_dataset_match_the_cli(api_run, cli_report):
    report, out = api_run
    assert isinstance(report, edgeprune.Report)
    assert comparable(report.raw) == comparable(cli_report)
    assert report.raw == json.loads((out / "report.json").read_text())
    assert report.passed is True and report.exit_code == 0 and report.out_dir == out
    assert report.final.accuracy == cli_report["final"]["accuracy"] > 85
    assert report.final.flops == cli_report["final"]["flops"] > 0
    assert report.final.p50 == report.raw["final"]["latency_ms"]["p50"] > 0
    assert report.verdict == report.raw["verdict"]
    assert [s.name for s in report.stages][:2] == ["load", "baseline"]
    assert {s.status for s in report.stages} == {"ran", "skipped"}
    arts = report.artifacts
    assert arts.compiled_model == out / "07-compile" / "model.xml"
    assert arts.compiled_model.is_file() and arts.report_html.is_file()
    assert arts.report_json.is_file() and arts.onnx is not None and arts.onnx.is_file()
    # the live module went to disk as weights + recipe: both files load without pickles
    saved = sorted((out / "input").glob("model-*.pt"))
    assert len(saved) == 1 and report.raw["model"]["path"] == str(saved[0])
    for path in (saved[0], out / "01-load" / "model.pt"):
        payload = torch.load(path, weights_only=True)
        assert "module" not in payload and payload["arch"] == "edgeprune.zoo:FashionCNN"
    assert report.raw["data"]["eval"]["source"] == "Python dataset Pixels (data=)"


def test_preprocessed_tensors_match_the_cli(arrays, cli_report, tmp_path):
    report = edgeprune.compile(fashion_model(), Tensors(*arrays), out=tmp_path / "out", **FAST)
    assert comparable(report.raw) == comparable(cli_report)


def test_rerun_resumes_from_the_cache(api_run, arrays):
    first, out = api_run
    again = edgeprune.compile(fashion_model(), Pixels(*arrays), channels=1, mean=MEAN, std=STD,
                              out=out, **FAST)  # a new module and dataset, the same content
    assert {s.status for s in again.stages} == {"cached", "skipped"}
    assert [s.name for s in again.stages if s.status == "cached"][:2] == ["load", "baseline"]
    assert comparable(again.raw) | {"stages": None} == comparable(first.raw) | {"stages": None}
    assert len(list((out / "input").glob("model-*.pt"))) == 1


def test_load_fingerprint_follows_weights_and_architecture(tmp_path):
    from edgeprune.api import LiveArchitecture, _save_live_model
    from edgeprune.zoo import fashion_cnn

    model = fashion_model()
    same, live = _save_live_model(fashion_model(), {}, tmp_path)
    assert live is not None and live.factory is not None
    rebuilt = live.build()
    assert rebuilt is not live.factory.template and type(rebuilt) is type(model)
    assert _save_live_model(model, {}, tmp_path)[0] == same  # same weights: same file
    with torch.no_grad():
        model.classifier.bias[0] += 1
    changed, _ = _save_live_model(model, {}, tmp_path)
    assert changed != same and sorted(tmp_path.glob("input/model-*.pt")) == [changed]
    assert LiveArchitecture(fashion_cnn()).digest == LiveArchitecture(model).digest
    assert LiveArchitecture(fashion_cnn(num_classes=5)).digest != LiveArchitecture(model).digest


def test_unknown_keyword_says_did_you_mean(tmp_path):
    with pytest.raises(UnknownOptionError) as info:
        edgeprune.compile(fashion_model(), "unused", max_dorp=1.0, out=tmp_path / "out")
    err = info.value
    assert isinstance(err, InputError) and isinstance(err, TypeError) and err.exit_code == 2
    assert "max_dorp" in err.problem and "did you mean max_drop?" in err.problem
    assert err.suggestions[0] == "max_drop" and "error:" in err.paragraph()
    with pytest.raises(UnknownOptionError, match="did you mean flops_reduction"):
        edgeprune.prune(fashion_model(), "unused", flop_reduction=0.5)
    with pytest.raises(InputError, match="calib_size = '50' is a string, not an integer"):
        edgeprune.compile(fashion_model(), "unused", calib_size="50")
    assert not (tmp_path / "out").exists()


class BadItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        return f"image-{index}.png", 0


def test_bad_data_is_an_input_error_before_anything_is_written(arrays, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        edgeprune.compile(fashion_model(), BadItems(), out=out)
    err = info.value
    assert "item 0" in err.problem and "the image is str" in err.problem
    assert "PIL image" in err.fix and err.exit_code == 2
    with pytest.raises(InputError, match=r"preprocessed\), so mean=, std= would not") as info:
        edgeprune.compile(fashion_model(), Tensors(*arrays), mean=MEAN, std=STD, out=out)
    assert "drop mean=, std=" in info.value.fix
    with pytest.raises(InputError, match="data= is int, not a path or a dataset"):
        edgeprune.compile(fashion_model(), 42, out=out)
    with pytest.raises(InputError, match=r"model is dict, not a torch\.nn\.Module"):
        edgeprune.compile({"state_dict": {}}, Pixels(*arrays), out=out)
    # arch= must build the module's architecture (its weights are checked against it)
    with pytest.raises(InputError, match=r"module> does not match --arch edgeprune\.zoo:res"):
        edgeprune.compile(fashion_model(), Pixels(*arrays), arch="resnet20", out=out)
    assert not out.exists()


def test_prune_a_live_module(arrays, tmp_path):
    # importing a pruning module binds the subpackage as edgeprune.prune: it stays callable
    import edgeprune.prune.policy

    assert callable(edgeprune.prune) and edgeprune.prune.policy.PruneConfig
    result = edgeprune.prune(fashion_model(), Pixels(*arrays), channels=1, mean=MEAN, std=STD,
                             prune="l1", prune_ratio=0.3, compensate="none", recover="none",
                             calib_size=50, out=tmp_path / "out")
    assert isinstance(result, edgeprune.PruneResult)
    assert result.model == tmp_path / "out" / "pruned.pt" and result.model.is_file()
    assert result.flops_after < result.flops_before and result.params_after < result.params_before
    assert result.accuracy_recovered is None and 0 < result.accuracy_pruned <= 100
    assert [s.name for s in result.stages] == ["load", "prune", "recover"]
    assert "module" not in torch.load(result.model, weights_only=True)


def test_readme_from_python_block_runs(fashion_dir, tmp_path, capsys):
    text = (REPO / "README.md").read_text()
    found = re.search(r"^## From Python\n.*?```python\n(.*?)```", text, re.S | re.M)
    assert found, "README.md has no ```python block under '## From Python'"
    code = found.group(1)
    assert 'out="out/python"' in code
    namespace: dict = {}
    exec(compile(code.replace('out="out/python"', f'out="{tmp_path / "out"}"'),
                 "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.passed and report.final.precision == "int8"
    assert report.artifacts.compiled_model.is_file()
    assert str(report.final.accuracy) in capsys.readouterr().out
