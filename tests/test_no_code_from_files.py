"""A file never chooses which code runs: architecture hints in checkpoints and artifacts,
and code names in job files, select only edgeprune's built-ins. Every test proves that
nothing ran (the would-be command creates a marker file) and that the run stopped with a
readable input error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.model import ARTIFACT_FORMAT
from edgeprune.zoo import fashion_cnn
from tests.conftest import FASHION_ARGS, run_cli
from tests.test_bad_input import assert_input_error, assert_nothing_written

HOSTILE_HINTS = [
    # attribute walk from an edgeprune module into os (the reported hole)
    ("edgeprune.pipeline:os.system", "command"),
    ("edgeprune.zoo:torch.os.system", "command"),
    ("os:system", "command"),
    ("subprocess:getoutput", "cmd"),
    ("edgeprune.model:subprocess.getoutput", "cmd"),
]


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return fashion_cnn().state_dict()


def _args(model: Path, data: Path, out: Path, *extra: str) -> list:
    return ["compile", model, "--data", data, *FASHION_ARGS, "--calib-size", "50",
            "--iterations", "20", "--out", out, *extra]


@pytest.mark.parametrize(("hint", "arg"), HOSTILE_HINTS)
@pytest.mark.parametrize("container", ["plain-dict", "edgeprune-artifact"])
def test_checkpoint_hint_never_runs_code(hint: str, arg: str, container: str,
                                         fashion_small: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"state_dict": _state(), "arch": hint,
               "arch_kwargs": {arg: f"touch {marker}"}}
    if container == "edgeprune-artifact":
        payload["format"] = ARTIFACT_FORMAT
    ckpt = tmp_path / "hinted.pt"
    torch.save(payload, ckpt)
    result = run_cli(*_args(ckpt, fashion_small, tmp_path / "out"))
    assert_input_error(result, "hinted.pt", "never chooses", "--arch")
    assert not marker.exists(), f"the hint {hint} executed code"
    assert_nothing_written(tmp_path / "out")


def test_hint_kwargs_must_be_plain_values(fashion_small: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "nested.pt"
    torch.save({"state_dict": _state(), "arch": "edgeprune.zoo:fashion_cnn",
                "arch_kwargs": {"num_classes": {"nested": 1}}}, ckpt)
    assert_input_error(run_cli(*_args(ckpt, fashion_small, tmp_path / "out")), "nested.pt",
                       "arch_kwargs")


def test_builtin_hint_still_loads(fashion_small: Path, fashion_ckpt: Path,
                                  tmp_path: Path) -> None:
    """The shipped checkpoint names its (built-in) architecture: no --arch needed."""
    out = tmp_path / "out"
    result = run_cli(*_args(fashion_ckpt, fashion_small, out), "--quiet")
    assert result.code == 0, result.stderr
    assert (out / "report.json").is_file()


@pytest.mark.parametrize(("key", "value"), [
    ("arch", "os:system"),
    ("data", "os:getcwd"),
    ("train_data", "edgeprune.pipeline:os.listdir"),
    ("prune", "os:system"),
    ("teacher_arch", "os:system"),  # any option naming an architecture
])
def test_job_file_cannot_name_code(key: str, value: str, fashion_small: Path,
                                   fashion_ckpt: Path, tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'{key} = "{value}"\n')
    result = run_cli(*_args(fashion_ckpt, fashion_small, tmp_path / "out"), "--job", job)
    assert_input_error(result, "job.toml", "never chooses", f"--{key.replace('_', '-')}")
    assert_nothing_written(tmp_path / "out")


def test_job_file_may_name_builtins(fashion_small: Path, tiny_state_dict: Path,
                                    tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('arch = "edgeprune.zoo:fashion_cnn"\nmax_drop = 100.0\n')
    result = run_cli(*_args(tiny_state_dict, fashion_small, tmp_path / "out"), "--job", job,
                     "--quiet")
    assert result.code == 0, result.stderr


def test_tampered_stage_artifact_never_runs_code(fashion_small: Path, fashion_ckpt: Path,
                                                 tmp_path: Path) -> None:
    """A cached stage artifact rewritten to name other code is refused when a later stage
    reads it (the run has no --arch: the shipped checkpoint's built-in hint was used)."""
    out = tmp_path / "out"
    assert run_cli(*_args(fashion_ckpt, fashion_small, out), "--quiet").code == 0
    marker = tmp_path / "pwned"
    artifact = out / "01-load" / "model.pt"
    payload = torch.load(artifact, weights_only=True)
    payload.update(arch="edgeprune.pipeline:os.system",
                   arch_kwargs={"command": f"touch {marker}"})
    torch.save(payload, artifact)
    report = (out / "report.json").read_bytes()
    # another precision: the cached load stage is reused, export reads its artifact
    result = run_cli(*_args(fashion_ckpt, fashion_small, out), "--precision", "bf16")
    assert_input_error(result, "never chooses")
    assert not marker.exists()
    assert (out / "report.json").read_bytes() == report  # nothing half-written


def test_user_named_arch_still_works(fashion_small: Path, tiny_state_dict: Path,
                                     tmp_path: Path) -> None:
    """--arch module:callable from the command line is the user's choice: it runs."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mynets.py").write_text("from edgeprune.zoo import fashion_cnn\n\n"
                                   "def build():\n    return fashion_cnn()\n")
    result = run_cli(*_args(tiny_state_dict, fashion_small, tmp_path / "out"),
                     "--arch", "mynets:build", "--max-drop", "100", "--quiet",
                     env={"PYTHONPATH": str(pkg)})
    assert result.code == 0, result.stderr
