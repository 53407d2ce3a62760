"""Real compile/load/run tests for the CPU backends on a tiny exported conv net.

No mocks: the point of the backends is what the runtimes really do (precision included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.backends import BACKENDS, get_backend, register_backend
from edgeprune.backends.base import CompileRequest, batches
from edgeprune.errors import InputError

BACKEND_NAMES = ["openvino", "onnxruntime"]


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2 -> GAP -> Linear: enough structure to exercise fusion and INT8."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so BN folding is actually tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """The eval-mode PyTorch model and its dynamic-batch ONNX export (done once: ~3 s)."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        _randomize_bn(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(
        model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=True,
        input_names=["input"], output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return model, path


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _compile(name: str, onnx_path: Path, out: Path, precision: str, **kw: Any) -> Path:
    """Compile and return the artifact path, checking the listed files exist."""
    result = get_backend(name).compile(CompileRequest(onnx_path, out, precision, **kw))
    assert result.precision_requested == precision
    assert all((out / f).is_file() for f in result.files)
    return out / result.artifact


@pytest.fixture(scope="module")
def int8_artifacts(tiny: tuple[nn.Module, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """INT8 compile per backend with 64 random-normal calibration images (batches of 16)."""
    _, onnx_path = tiny
    calib = _images(64, seed=1)
    return {
        name: _compile(name, onnx_path, tmp_path_factory.mktemp(f"int8-{name}"), "int8",
                       calibration=list(batches(calib, 16)))
        for name in BACKEND_NAMES
    }


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_available(name: str) -> None:
    ok, reason = get_backend(name).available()
    assert ok, reason


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_fp32_matches_pytorch(name: str, tiny: tuple[nn.Module, Path], tmp_path: Path) -> None:
    model, onnx_path = tiny
    artifact = _compile(name, onnx_path, tmp_path, "fp32")
    backend = get_backend(name)
    x = _images(13, seed=2)
    expected = _torch(model, x)

    one = backend.load(artifact, "fp32", threads=1, batch=1, options={})
    np.testing.assert_allclose(one.run(x[:1]), expected[:1], atol=1e-4, rtol=0)

    eight = backend.load(artifact, "fp32", threads=2, batch=8, options={})
    got = [eight.run(b) for b in batches(x, 8)]  # 8, then a partial 5
    assert [g.shape for g in got] == [(8, 10), (5, 10)]
    assert all(g.dtype == np.float32 for g in got)
    np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_int8_agrees_and_runs_integer(name: str, tiny: tuple[nn.Module, Path],
                                      int8_artifacts: dict[str, Path]) -> None:
    model, _ = tiny
    x = _images(64, seed=3)
    session = get_backend(name).load(int8_artifacts[name], "int8", threads=2, batch=8,
                                     options={})
    got = np.concatenate([session.run(b) for b in batches(x, 8)])
    agreement = float(np.mean(got.argmax(1) == _torch(model, x).argmax(1)))
    assert agreement >= 0.8, agreement

    info = session.runtime_info()
    if name == "openvino":
        conv = info["layer_precisions"]["Convolution"]
        assert set(conv) & {"i8", "u8"}, conv
        assert info["inference_precision_hint"] == "f32"
        assert info["effective_precision"] == "i8"
    else:
        assert info["integer_ops"] > 0, info
        assert info["effective_precision"] == "int8", info


def _ov_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@pytest.mark.parametrize(("precision", "hint"), [("fp32", "f32"), ("bf16", "bf16")])
def test_openvino_precision_hint_is_measured(precision: str, hint: str,
                                             tiny: tuple[nn.Module, Path],
                                             tmp_path: Path) -> None:
    _, onnx_path = tiny
    artifact = _compile("openvino", onnx_path, tmp_path, precision)
    session = get_backend("openvino").load(artifact, precision, threads=1, batch=1,
                                           options={})
    info = session.runtime_info()
    # A CPU without bf16 falls back; the report must then say what really ran.
    if precision == "fp32" or "BF16" in _ov_capabilities():
        assert info["inference_precision_hint"] == hint
    conv = info["layer_precisions"]["Convolution"]
    assert set(conv) == {info["inference_precision_hint"]}, conv  # what ran, not what was asked
    assert info["effective_precision"] == info["inference_precision_hint"]
    assert info["inference_num_threads"] == 1
    assert info["device"] and info["version"]


def test_openvino_compile_details(tiny: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, onnx_path = tiny
    calib = _images(20, seed=4)
    result = get_backend("openvino").compile(
        CompileRequest(onnx_path, tmp_path, "int8", calibration=iter(batches(calib, 7))))
    assert result.files == ["model.xml", "model.bin"]
    assert result.details["calibration_samples"] == 20
    assert result.details["quantization_preset"] == "performance"
    assert result.details["fake_quantize_nodes"] > 0
    assert result.details["nncf_version"]


def test_onnxruntime_rejects_half_precision(tiny: tuple[nn.Module, Path],
                                            tmp_path: Path) -> None:
    _, onnx_path = tiny
    with pytest.raises(InputError, match="fp32 and int8") as err:
        get_backend("onnxruntime").compile(CompileRequest(onnx_path, tmp_path, "fp16"))
    assert "openvino" in err.value.fix


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_int8_without_calibration_is_input_error(name: str, tiny: tuple[nn.Module, Path],
                                                 tmp_path: Path) -> None:
    _, onnx_path = tiny
    with pytest.raises(InputError, match="calibration"):
        get_backend(name).compile(CompileRequest(onnx_path, tmp_path, "int8", calibration=[]))


def test_unknown_backend_is_input_error() -> None:
    with pytest.raises(InputError, match="nosuch") as err:
        get_backend("nosuch")
    assert "openvino" in err.value.problem and "onnxruntime" in err.value.problem
    assert err.value.fix


def test_register_backend_plugs_in() -> None:
    sentinel = get_backend("onnxruntime")
    register_backend("test-fake", lambda: sentinel)
    try:
        assert get_backend("test-fake") is sentinel
    finally:
        BACKENDS.pop("test-fake")
