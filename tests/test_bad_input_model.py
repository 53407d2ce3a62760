"""Bad model files and architectures: exit 2 with one error/fix paragraph, no traceback,
nothing written (see tests/test_bad_input.py for the contract)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch

from edgeprune.errors import InputError
from edgeprune.model import ARTIFACT_FORMAT, read_checkpoint
from edgeprune.zoo import fashion_cnn
from tests.conftest import run_cli, run_cli_here
from tests.test_bad_input import assert_bad_input


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return fashion_cnn().state_dict()


def _cuts(size: int, count: int) -> list[int]:
    rng = random.Random(size)
    return sorted({*range(0, 160, 7), *rng.sample(range(160, size - 1), count), size - 1})


# --- checkpoint files ---------------------------------------------------------------------

def test_legacy_checkpoint_truncated_anywhere(compile_args, tmp_path: Path) -> None:
    """The legacy (non-zip) format cut at any byte: struct.error, IndexError, EOFError, an
    "unsupported global" made of the bytes where it was cut... all one clear error."""
    buffer = io.BytesIO()
    torch.save(_state(), buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    for cut in _cuts(len(data), 60):
        path = tmp_path / "cut.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated or not a PyTorch file"):
            read_checkpoint(path, trust_pickle=False)
    path.write_bytes(data[:300])  # IndexError inside the unpickler
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "cut.pt", "truncated")


def test_zip_checkpoint_truncated_anywhere(compile_args, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(_state(), buffer)
    data = buffer.getvalue()
    for cut in _cuts(len(data), 40):
        path = tmp_path / "cut.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated or not a PyTorch file"):
            read_checkpoint(path, trust_pickle=False)
    path.write_bytes(data[: len(data) - 100])
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "cut.pt", "truncated")


def test_empty_checkpoint_file(compile_args, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_bad_input(run_cli_here(*compile_args(empty)), tmp_path / "out", "empty.pt", "truncated")


def test_model_path_is_a_directory(compile_args, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    assert_bad_input(run_cli_here(*compile_args(folder)), tmp_path / "out", "weights",
                     "not a file")


def test_checkpoint_without_a_state_dict(compile_args, tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "list.pt",
                     "no state_dict")


def test_nan_weights_are_refused_at_load(compile_args, tmp_path: Path) -> None:
    state = _state()
    state["features.7.weight"][0, 0, 0, :2] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "not finite",
                     "2 values", "features.7.weight", "NaN")


def test_infinite_buffer_is_refused_at_load(compile_args, tmp_path: Path) -> None:
    state = _state()
    state["features.1.running_var"][3] = float("inf")
    path = tmp_path / "inf.pt"
    torch.save(state, path)
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "not finite",
                     "features.1.running_var", "inf")


def test_weights_without_architecture(compile_args, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_state(), path)
    args = compile_args(path)
    del args[args.index("--arch"):args.index("--arch") + 2]
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "weights only", "--arch")


def test_artifact_without_weights(compile_args, tmp_path: Path) -> None:
    path = tmp_path / "artifact.pt"
    torch.save({"format": ARTIFACT_FORMAT, "arch": "edgeprune.zoo:fashion_cnn",
                "arch_kwargs": {}}, path)
    assert_bad_input(run_cli_here(*compile_args(path)), tmp_path / "out", "artifact.pt")


# --- architectures ------------------------------------------------------------------------

@pytest.fixture
def arch_module(tmp_path: Path):
    """Write a module ``usernet`` and return the env that makes it importable."""
    def make(source: str) -> dict[str, str]:
        pkg = tmp_path / "pkg"
        pkg.mkdir(exist_ok=True)
        (pkg / "usernet.py").write_text(source)
        return {"PYTHONPATH": str(pkg)}
    return make


def _with_arch(args: list, arch: str, *extra: str) -> list:
    args = list(args)
    args[args.index("--arch") + 1] = arch
    return [*args, *extra]


def test_arch_module_with_a_syntax_error(compile_args, tiny_state_dict, arch_module,
                                         tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = arch_module(f"open({str(marker)!r}, 'w')\ndef build(:\n    pass\n")
    result = run_cli(*_with_arch(compile_args(tiny_state_dict), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "usernet", "SyntaxError", marker=marker)


def test_arch_module_that_raises_on_import(compile_args, tiny_state_dict, arch_module,
                                           tmp_path: Path) -> None:
    env = arch_module("raise RuntimeError('no GPU here')\n")
    result = run_cli(*_with_arch(compile_args(tiny_state_dict), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "usernet", "no GPU here")


def test_arch_callable_that_raises(compile_args, tiny_state_dict, arch_module,
                                   tmp_path: Path) -> None:
    env = arch_module("def build():\n    raise ValueError('depth must be 6n+2')\n")
    result = run_cli(*_with_arch(compile_args(tiny_state_dict), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "usernet:build", "depth must be 6n+2")


def test_arch_that_calls_sys_exit(compile_args, tiny_state_dict, arch_module,
                                  tmp_path: Path) -> None:
    env = arch_module("import sys\ndef build():\n    sys.exit(0)\n")
    result = run_cli(*_with_arch(compile_args(tiny_state_dict), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "sys.exit(0)")


def test_arch_that_returns_no_module(compile_args, tiny_state_dict, arch_module,
                                     tmp_path: Path) -> None:
    env = arch_module("def build():\n    return 42\n")
    result = run_cli(*_with_arch(compile_args(tiny_state_dict), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "returned int", "torch.nn.Module")


def test_arch_spec_without_callable(compile_args, tiny_state_dict, tmp_path: Path) -> None:
    result = run_cli_here(*_with_arch(compile_args(tiny_state_dict), "edgeprune.zoo:"))
    assert_bad_input(result, tmp_path / "out", "module:callable")


def test_arch_kwargs_not_json(compile_args, tiny_state_dict, tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--arch-kwargs", "{num_classes: 10}"))
    assert_bad_input(result, tmp_path / "out", "--arch-kwargs", "JSON")


def test_arch_kwargs_not_an_object(compile_args, tiny_state_dict, tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--arch-kwargs", "[10]"))
    assert_bad_input(result, tmp_path / "out", "--arch-kwargs", "object")


def test_arch_kwargs_the_callable_rejects(compile_args, tiny_state_dict,
                                          tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--arch-kwargs", '{"depth": 3}'))
    assert_bad_input(result, tmp_path / "out", "rejected its arguments", "depth")


def test_model_fails_on_the_input_shape(compile_args, tiny_state_dict, tmp_path: Path) -> None:
    args = compile_args(tiny_state_dict)
    args[args.index("--channels") + 1] = "3"
    args[args.index("--mean") + 1] = "0.5"
    args[args.index("--std") + 1] = "0.25"
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "fails on inputs of shape",
                     "--channels")


def test_model_that_does_not_return_logits(compile_args, arch_module, tmp_path: Path) -> None:
    env = arch_module("import torch\ndef build():\n"
                      "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))\n")
    path = tmp_path / "conv.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3)).state_dict(), path)
    result = run_cli(*_with_arch(compile_args(path), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "(batch, classes)")


def test_model_whose_forward_returns_a_tuple(compile_args, arch_module,
                                             tmp_path: Path) -> None:
    env = arch_module(
        "import torch\nfrom edgeprune.zoo import fashion_cnn\n"
        "class Aux(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.net = fashion_cnn()\n    def forward(self, x):\n"
        "        y = self.net(x)\n        return y, y\n"
        "def build():\n    return Aux()\n")
    path = tmp_path / "aux.pt"
    torch.save({f"net.{k}": v for k, v in _state().items()}, path)
    result = run_cli(*_with_arch(compile_args(path), "usernet:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "returns tuple", "logits")
