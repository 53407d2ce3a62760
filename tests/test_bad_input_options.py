"""Option combinations that cannot work, values out of range, and job files with the wrong
shape: exit 2 with one error/fix paragraph, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli_here
from tests.test_bad_input import assert_bad_input

# --- option combinations --------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "needles"), [
    (["--quant", "ternary", "--precision", "fp32"], ["contradict"]),
    (["--quant-epochs", "2"], ["only applies to --quant ternary"]),
    (["--search", "--precision", "int8"], ["--search chooses", "--precision"]),
    (["--search-levels", "0.5"], ["only applies to --search"]),
    (["--target", "onnxruntime-cpu", "--precision", "int8", "--int8-accuracy-control"],
     ["OpenVINO target"]),
    (["--prune", "l1", "--prune-ratio", "0.3", "--flops-reduction", "0.5"],
     ["exactly one amount"]),
    (["--prune", "l1"], ["exactly one amount"]),
    (["--search", "--search-levels", "0.5,1.5"], ["fractions between 0 and 1"]),
    (["--search", "--search-precisions", "fp32,int4"], ["--search-precisions"]),
], ids=["quant-vs-precision", "quant-option-without-ternary", "search-with-precision",
        "search-option-without-search", "accuracy-control-off-openvino",
        "two-pruning-amounts", "no-pruning-amount", "search-level-out-of-range",
        "unknown-search-precision"])
def test_options_that_contradict(compile_args, tiny_state_dict: Path, tmp_path: Path,
                                 extra: list[str], needles: list[str]) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, *extra))
    assert_bad_input(result, tmp_path / "out", *needles)


@pytest.mark.parametrize(("extra", "needle"), [
    (["--prune", "l1", "--flops-reduction", "1.5"], "--flops-reduction 1.5"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--recover", "finetune"], "finetune"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--nproc", "0"], "--nproc 0"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--recover-epochs", "nan"],
     "--recover-epochs nan"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--min-channels", "0"], "--min-channels 0"),
    (["--quant", "ternary", "--ternary-sparsity", "1.5"], "--ternary-sparsity"),
    (["--quant", "ternary", "--quant-method", "binary"], "--quant-method"),
    (["--quant", "int4"], "--quant 'int4'"),
    (["--exporter", "tflite"], "--exporter"),
    (["--search", "--max-trials", "0"], "--max-trials"),
    (["--workers", "0"], "--workers 0"),
    (["--decoded-cache-mb", "-5"], "--decoded-cache-mb -5"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--augment", "cutmix"], "--augment"),
    (["--prune", "l1", "--prune-ratio", "0.3", "--rrc-min-scale", "0"], "--rrc-min-scale 0"),
], ids=["flops-over-1", "unknown-recover-mode", "zero-processes", "nan-epochs",
        "zero-min-channels", "sparsity-over-1", "unknown-quant-method", "unknown-quant",
        "unknown-exporter", "zero-trials", "zero-workers", "negative-decoded-cache",
        "unknown-augmentation", "zero-rrc-scale"])
def test_option_value_out_of_range(compile_args, tiny_state_dict: Path, tmp_path: Path,
                                   extra: list[str], needle: str) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, *extra))
    assert_bad_input(result, tmp_path / "out", needle)


def test_exclude_naming_no_layer(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    """Checked at load against the model's layers, with the closest names."""
    result = run_cli_here(*compile_args(tiny_state_dict, "--prune", "l1", "--prune-ratio", "0.3",
                                   "--exclude", "features.3", "--exclude", "featurs.7"))
    assert_bad_input(result, tmp_path / "out", "--exclude featurs.7",
                     "did you mean features.7", "classifier")


def test_no_data(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    args = compile_args(tiny_state_dict)
    del args[args.index("--data"):args.index("--data") + 2]
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "no data given", "--data")


# --- job files --------------------------------------------------------------------------------

@pytest.fixture
def with_job(compile_args, tiny_state_dict: Path, tmp_path: Path):
    def make(text: str) -> list:
        job = tmp_path / "job.toml"
        job.write_text(text)
        return compile_args(tiny_state_dict, "--job", job)
    return make


@pytest.mark.parametrize(("text", "needles"), [
    ('calib_size = "many"\n', ["job.toml", "calib_size = 'many'", "not an integer"]),
    ("batch = 1.5\n", ["batch = 1.5", "not an integer"]),
    ('max_drop = "one point"\n', ["max_drop", "not a number"]),
    ('fresh = "yes"\n', ["fresh", "true or false"]),
    ("mean = [0.5, true]\n", ["mean", "array of them"]),
    ('exclude = [1, 2]\n', ["exclude", "array of strings"]),
    ("[target]\nname = 'x'\n", ["target", "is a table, not a string"]),
], ids=["string-for-int", "float-for-int", "string-for-float", "string-for-bool",
        "bool-in-list", "numbers-for-layer-names", "table-for-string"])
def test_job_value_of_the_wrong_type(with_job, tmp_path: Path, text: str,
                                     needles: list[str]) -> None:
    assert_bad_input(run_cli_here(*with_job(text)), tmp_path / "out", *needles)


@pytest.mark.parametrize(("text", "needles"), [
    ("threads = -1\n", ["job.toml", "threads = -1"]), ("seed = -3\n", ["seed = -3"]),
    ("iterations = 0\n", ["iterations = 0"]), ("max_drop = nan\n", ["not a finite number"]),
    ('input_size = [28, "x"]\n', ["--input-size", "not a size"]),
], ids=["negative-threads", "negative-seed", "zero-iterations", "nan-budget",
        "text-in-a-size"])
def test_job_value_out_of_range(with_job, tmp_path: Path, text: str,
                                needles: list[str]) -> None:
    assert_bad_input(run_cli_here(*with_job(text)), tmp_path / "out", *needles)


def test_job_unknown_key(with_job, tmp_path: Path) -> None:
    assert_bad_input(run_cli_here(*with_job("max_dorp = 1\n")), tmp_path / "out",
                     "unknown keys: max_dorp")


def test_job_file_not_toml(with_job, tmp_path: Path) -> None:
    assert_bad_input(run_cli_here(*with_job("max_drop: 1\n")), tmp_path / "out", "not valid TOML")


def test_job_file_missing(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--job", tmp_path / "nojob.toml"))
    assert_bad_input(result, tmp_path / "out", "nojob.toml", "does not exist")
