"""Bad target profiles, target overrides, budgets and devices: exit 2 with one error/fix
paragraph, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli_here
from tests.test_bad_input import assert_bad_input

PROFILE = (REPO / "targets" / "onnxruntime-cpu.toml").read_text()


@pytest.fixture
def with_profile(compile_args, tiny_state_dict: Path, tmp_path: Path):
    """``compile`` with --target a copy of the onnxruntime-cpu profile, edited."""
    def make(replace: tuple[str, str] | None = None, append: str = "") -> list:
        text = PROFILE
        if replace is not None:
            assert replace[0] in text, replace
            text = text.replace(*replace)
        path = tmp_path / "mytarget.toml"
        path.write_text(text + append)
        return compile_args(tiny_state_dict, "--target", path)
    return make


# --- target profiles (TOML) ---------------------------------------------------------------

def test_profile_value_of_the_wrong_type(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(("batch = 1", 'batch = "one"')))
    assert_bad_input(result, tmp_path / "out", "mytarget.toml", "batch = 'one'",
                     "not an integer")


def test_profile_list_given_as_a_string(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(('precisions = ["fp32", "int8"]', 'precisions = "int8"')))
    assert_bad_input(result, tmp_path / "out", "precisions", "array of strings")


def test_profile_negative_min_iterations(with_profile, tmp_path: Path) -> None:
    text = PROFILE
    old = next(line for line in text.splitlines() if line.startswith("min_iterations"))
    result = run_cli_here(*with_profile((old, "min_iterations = -5")))
    assert_bad_input(result, tmp_path / "out", "profile.min_iterations = -5", "at least 1")


def test_profile_unknown_key(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(("batch = 1", "batch = 1\nbatchsize = 4")))
    assert_bad_input(result, tmp_path / "out", "unknown key batchsize", "batch")


def test_profile_syntax_error(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(append="\n[profile\n"))
    assert_bad_input(result, tmp_path / "out", "mytarget.toml", "TOML")


def test_profile_unknown_backend(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(('backend = "onnxruntime"', 'backend = "tflite"')))
    assert_bad_input(result, tmp_path / "out", "unknown backend 'tflite'", "openvino")


def test_profile_section_that_is_not_a_table(with_profile, tmp_path: Path) -> None:
    text = "\n".join(line for line in PROFILE.splitlines() if not line.startswith("[latency"))
    path = tmp_path / "flat.toml"
    path.write_text('latency = 5\n' + text.split("[profile]")[0])
    args = with_profile()
    args[args.index("--target") + 1] = path
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "latency must be a [latency] table")


def test_profile_default_precision_not_offered(with_profile, tmp_path: Path) -> None:
    result = run_cli_here(*with_profile(('precision = "fp32"', 'precision = "bf16"')))
    assert_bad_input(result, tmp_path / "out", "'bf16'", "supported list")


def test_profile_file_missing(compile_args, tiny_state_dict: Path, tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--target", tmp_path / "gone.toml"))
    assert_bad_input(result, tmp_path / "out", "gone.toml", "does not exist")


def test_target_runtime_not_installed(compile_args, tiny_state_dict: Path,
                                      tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    result = run_cli_here(*compile_args(tiny_state_dict, "--target", "tensorrt-gpu"))
    assert_bad_input(result, tmp_path / "out", "tensorrt-gpu", "cannot compile on this machine")


# --- overrides and budgets -----------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--threads", "-1", "--threads -1"),
    ("--batch", "0", "--batch 0"),
    ("--iterations", "0", "--iterations 0"),
    ("--seed", "-1", "--seed -1"),
    ("--eval-limit", "0", "--eval-limit 0"),
    ("--calib-size", "0", "--calib-size 0"),
    ("--resize", "-8", "--resize -8"),
])
def test_negative_or_zero_count(compile_args, tiny_state_dict: Path, tmp_path: Path,
                                flag: str, value: str, needle: str) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, flag, value))
    assert_bad_input(result, tmp_path / "out", needle)


def test_precision_the_target_does_not_offer(compile_args, tiny_state_dict: Path,
                                             tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--target", "onnxruntime-cpu",
                                   "--precision", "fp16"))
    assert_bad_input(result, tmp_path / "out", "does not support precision 'fp16'")


@pytest.mark.parametrize(("flag", "value"), [("--max-drop", "nan"), ("--max-drop", "150"),
                                             ("--latency-ms", "inf")])
def test_budget_not_a_finite_bound(compile_args, tiny_state_dict: Path, tmp_path: Path,
                                   flag: str, value: str) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, flag, value))
    assert_bad_input(result, tmp_path / "out", flag)


# --- devices --------------------------------------------------------------------------------

def test_dla_core_on_a_target_without_dla(compile_args, tiny_state_dict: Path,
                                          tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--dla-core", "0"))
    assert_bad_input(result, tmp_path / "out", "--dla-core 0", "no DLA")


def test_dla_strict_without_dla_core(compile_args, tiny_state_dict: Path,
                                     tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--target", "jetson-orin-nx",
                                   "--dla-strict"))
    assert_bad_input(result, tmp_path / "out", "--dla-strict needs --dla-core")


@pytest.mark.parametrize("device", ["user@host;touch /tmp/pwned-edgeprune", "-oProxyCommand=id",
                                    "user@host:99999", "user@"])
def test_device_address_that_is_not_an_address(compile_args, tiny_state_dict: Path,
                                               tmp_path: Path, device: str) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--device", device))
    assert_bad_input(result, tmp_path / "out", "--device")
    assert not Path("/tmp/pwned-edgeprune").exists()


@pytest.mark.parametrize("flag", ["--ssh-key", "--known-hosts"])
def test_ssh_file_that_does_not_exist(compile_args, tiny_state_dict: Path, tmp_path: Path,
                                      flag: str) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--device", "user@edge-box", flag,
                                   tmp_path / "id_missing"))
    assert_bad_input(result, tmp_path / "out", flag, "is not a file")
