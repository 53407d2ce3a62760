"""Every kind of bad input: one readable paragraph, exit code 2, no traceback, and no
half-written output."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from tests.conftest import CliResult, run_cli

LEFTOVERS = (".partial", ".tmp", ".trash", ".lock")


def assert_input_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert "error:" in result.stderr and "fix:" in result.stderr, result.stderr
    for needle in needles:
        assert needle.lower() in result.stderr.lower(), (needle, result.stderr)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def assert_no_leftovers(out: Path) -> None:
    """Nothing half-written: no stage's .partial folder, temporary file or lock file."""
    left = [p for p in out.rglob("*") if p.name.endswith(LEFTOVERS) or ".trash" in p.name] \
        if out.exists() else []
    assert not left, left


def assert_bad_input(result: CliResult, out: Path, *needles: str,
                     marker: Path | None = None) -> None:
    """The whole contract of a bad input: exit 2, one error/fix paragraph, no traceback,
    nothing written (so no half-written stage, no lock file left), and -- for inputs that
    name code -- no marker file (the code never ran)."""
    assert_input_error(result, *needles)
    assert_nothing_written(out)
    if marker is not None:
        assert not marker.exists(), f"{marker} exists: code ran"



def test_missing_model_file(compile_args, tmp_path: Path) -> None:
    result = run_cli(*compile_args(tmp_path / "nope.pt"))
    assert_input_error(result, "nope.pt", "does not exist")
    assert_nothing_written(tmp_path / "out")


def test_truncated_checkpoint(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_state_dict.read_bytes()[:2000])
    result = run_cli(*compile_args(cut))
    assert_input_error(result, "cut.pt", "truncated")
    assert_nothing_written(tmp_path / "out")


class _Payload:
    """Pickles to a call that creates a marker file: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_executes_code_is_refused(compile_args, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    result = run_cli(*compile_args(evil))
    assert_input_error(result, "evil.pt", "--trust-pickle")
    assert not marker.exists(), "loading the checkpoint executed code"
    assert_nothing_written(tmp_path / "out")


def test_arch_that_does_not_import(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    args = compile_args(tiny_state_dict)
    args[args.index("fashion_cnn")] = "no_such_pkg.nets:build"
    result = run_cli(*args)
    assert_input_error(result, "no_such_pkg", "PYTHONPATH")
    args[args.index("no_such_pkg.nets:build")] = "edgeprune.zoo:no_such_net"
    assert_input_error(run_cli(*args), "no_such_net")
    assert_nothing_written(tmp_path / "out")


def test_state_dict_does_not_match_arch(compile_args, tiny_state_dict: Path,
                                        tmp_path: Path) -> None:
    args = compile_args(tiny_state_dict)
    args[args.index("fashion_cnn")] = "resnet20"
    result = run_cli(*args)
    assert_input_error(result, "does not match", "resnet20")
    assert_nothing_written(tmp_path / "out")


def test_empty_data_directory(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "class_a").mkdir(parents=True)
    args = compile_args(tiny_state_dict)
    args[args.index("--data") + 1] = empty
    assert_input_error(run_cli(*args), "no images", str(empty))
    assert_nothing_written(tmp_path / "out")


def test_corrupt_idx_files(compile_args, tiny_state_dict: Path, fashion_dir: Path,
                           tmp_path: Path) -> None:
    broken = tmp_path / "idx"
    broken.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        data = (fashion_dir / name).read_bytes()
        (broken / name).write_bytes(data if "labels" in name else data[: len(data) // 2])
    args = compile_args(tiny_state_dict)
    args[args.index("--data") + 1] = broken
    assert_input_error(run_cli(*args), "t10k-images-idx3-ubyte.gz")
    assert_nothing_written(tmp_path / "out")


def test_unreadable_image(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "folder"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(40):
            Image.new("L", (28, 28), color=i * 3).save(root / cls / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    args = compile_args(tiny_state_dict)
    args[args.index("--data") + 1] = root
    args[args.index("--calib-size") + 1] = "10"
    assert_input_error(run_cli(*args), "broken.png")
    assert_nothing_written(tmp_path / "out")


def test_unknown_target(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    result = run_cli(*compile_args(tiny_state_dict, "--target", "tpu-v9"))
    assert_input_error(result, "tpu-v9", "openvino-cpu")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("budget", [["--max-drop", "-1"], ["--latency-ms", "0"],
                                    ["--percentile", "p75"]])
def test_invalid_budget(compile_args, tiny_state_dict: Path, tmp_path: Path,
                        budget: list[str]) -> None:
    result = run_cli(*compile_args(tiny_state_dict, *budget))
    assert_input_error(result, "budget", budget[0])
    assert_nothing_written(tmp_path / "out")


def test_unwritable_output_dir(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_cli(*compile_args(tiny_state_dict, out=blocker / "out"))
    assert_input_error(result, "not writable", "--out")
    assert blocker.read_text() == "not a directory"


def test_debug_shows_traceback(compile_args, tmp_path: Path) -> None:
    result = run_cli(*compile_args(tmp_path / "nope.pt"), "--debug")
    assert result.code == 2
    assert "Traceback" in result.stderr
