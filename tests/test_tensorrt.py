"""TensorRT and Jetson targets.

Everywhere: the ONNX TensorRT builds from (Q/DQ kept or inserted symmetric, float16), the
Jetson deploy bundle for the real ResNet-20 (manifest, run.sh, exact trtexec commands for
TensorRT 8.5/10/11), engine-manifest checks against facts read from real trtexec logs, and
the headline command `--target jetson` without a device (bundle + exit 4).
Engine build/run tests need `tensorrt` and an NVIDIA GPU; elsewhere they skip, saying why.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.backends.base import CompileRequest
from edgeprune.backends.jetson import JetsonBackend, build_args, device_commands
from edgeprune.backends.tensorrt import EngineMismatch, TensorRTBackend, check_manifest
from edgeprune.backends.trt_prep import onnx_facts
from edgeprune.errors import EXIT_NEEDS_DEVICE, InputError
from edgeprune.parsers import trtexec
from tests.conftest import FASHION_ARGS, SHARED, run_cli

DATA = Path(__file__).parent / "data" / "trtexec"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _trt_skip_reason() -> str | None:
    ok, why = TensorRTBackend().available()
    return None if ok else why


TRT_REASON = _trt_skip_reason()
needs_trt = pytest.mark.skipif(TRT_REASON is not None,
                               reason=f"TensorRT engine tests need TensorRT and a GPU: "
                               f"{TRT_REASON}")


def export_fashion_onnx(tmp: Path) -> Path:
    """The shipped, trained Fashion-MNIST CNN as ONNX (dynamic batch, input 'input')."""
    from edgeprune.examples.paths import checkpoint_path
    from edgeprune.export import export_onnx
    from edgeprune.zoo import fashion_cnn

    model = fashion_cnn()
    model.load_state_dict(torch.load(checkpoint_path(), weights_only=True)["state_dict"])
    path = tmp / "fashion.onnx"
    export_onnx(model, torch.zeros(2, 1, 28, 28), path, "torchscript")
    return path


def cifar_images(n: int) -> np.ndarray:
    """Real CIFAR-10 test images (lossless), normalized as the released ResNets expect."""
    npz = SHARED / "cifar10" / "cifar10_test_lossless_prefix.npz"
    if not npz.is_file():
        pytest.skip(f"CIFAR-10 lossless images not found at {npz}")
    x = np.load(npz)["images"][:n].astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def resnet20_onnx(tmp: Path) -> Path:
    """The real, trained CIFAR-10 ResNet-20 (shared weights), dense, as ONNX."""
    from edgeprune.export import export_onnx
    from edgeprune.zoo import resnet20

    weights = SHARED / "weights" / "resnet20-12fca82f.th"
    if not weights.is_file():
        pytest.skip(f"ResNet-20 weights not found at {weights}")
    state = torch.load(weights, weights_only=True, map_location="cpu")["state_dict"]
    model = resnet20()
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    path = tmp / "resnet20.onnx"
    export_onnx(model, torch.from_numpy(cifar_images(2)), path, "torchscript")
    return path


def make_bundle(tmp: Path, precision: str, onnx_path: Path | None = None,
                calibration: list[np.ndarray] | None = None, **options) -> Path:
    """A Jetson bundle, made exactly as the compile stage makes it."""
    tmp.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_path or export_fashion_onnx(tmp)
    opts = {"batch": 1, "target_name": "jetson-orin-nano", "module": "Jetson Orin Nano",
            "compute_capability": "8.7", "dla_cores": 0,
            "profile": {"min_iterations": 1000, "min_seconds": 2.0}, **options}
    out = tmp / f"compile-{precision}"
    result = JetsonBackend().compile(CompileRequest(onnx_path, out, precision, 0, opts,
                                                    calibration))
    assert result.artifact == "bundle/manifest.json"
    return out / "bundle"


def ort_qdq(src: Path, dst: Path, images: np.ndarray, symmetric: bool = True) -> Path:
    """A Q/DQ ONNX made with onnxruntime.quantization (as a quantize stage would hand it)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{"input": images[i:i + 8]} for i in range(0, len(images), 8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                   "QuantizeBias": False})
    return dst


# --- the Jetson bundle -----------------------------------------------------------------
def test_resnet20_int8_bundle_layout_manifest_and_commands(tmp_path: Path):
    onnx_path = resnet20_onnx(tmp_path)
    bundle = make_bundle(tmp_path, "int8", onnx_path, [cifar_images(64)])
    assert sorted(p.name for p in bundle.iterdir()) == ["README.txt", "manifest.json",
                                                        "model.onnx", "run.sh"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    facts = onnx_facts(bundle / "model.onnx")
    assert manifest["onnx"]["sha256"] == facts["sha256"] and facts["qdq_nodes"] > 0
    assert manifest["precision_details"]["precision_carrier"] == "Q/DQ"
    assert manifest["precision_details"]["calibration_samples"] == 64
    assert manifest["device"]["compute_capability"] == "8.7"
    spec = "input:1x3x32x32"
    assert manifest["trtexec"]["build"]["10"][-1] == "--stronglyTyped"
    assert f"--minShapes={spec}" in manifest["trtexec"]["build"]["11"]
    assert not any(f in manifest["trtexec"]["build"]["11"] for f in ("--int8", "--fp16",
                                                                      "--stronglyTyped"))
    assert manifest["trtexec"]["build"]["8"][-1] == "--int8"
    assert "--exportTimes=times.json" in manifest["trtexec"]["profile"]
    script = (bundle / "run.sh").read_text()
    assert subprocess.run(["sh", "-n", str(bundle / "run.sh")]).returncode == 0
    assert "--timingCacheFile=timing.cache" in script and "tegrastats" in script
    assert device_commands(bundle, "nvidia@orin") == [
        f"scp -r {bundle} nvidia@orin:edgeprune-bundle",
        "ssh nvidia@orin sh edgeprune-bundle/run.sh all 1000 2 500",
    ]
    # Symmetric int8 everywhere: what TensorRT needs from explicit quantization.
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / "model.onnx"))
    zps = [numpy_helper.to_array(t) for t in model.graph.initializer
           if t.name.endswith("_zero_point")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_existing_qdq_onnx_is_kept_as_is(tmp_path: Path):
    images = cifar_images(32)
    qdq = ort_qdq(resnet20_onnx(tmp_path), tmp_path / "qdq.onnx", images)
    before = onnx_facts(qdq)
    bundle = make_bundle(tmp_path, "int8", qdq, calibration=None)
    after = onnx_facts(bundle / "model.onnx")
    assert after["qdq_nodes"] == before["qdq_nodes"] > 0 and after["nodes"] == before["nodes"]
    details = json.loads((bundle / "manifest.json").read_text())["precision_details"]
    assert details["qdq_source"] == "the model's own Q/DQ (kept as is)"


def test_asymmetric_qdq_and_fp32_of_a_quantized_model_are_refused(tmp_path: Path):
    images = cifar_images(16)
    src = resnet20_onnx(tmp_path)
    with pytest.raises(InputError, match="symmetric"):
        make_bundle(tmp_path, "int8", ort_qdq(src, tmp_path / "u8.onnx", images, False))
    with pytest.raises(InputError, match="Q/DQ"):
        make_bundle(tmp_path, "fp32", ort_qdq(src, tmp_path / "s8.onnx", images))


def test_fp16_bundle_carries_float16_tensors_with_fp32_io(tmp_path: Path):
    bundle = make_bundle(tmp_path, "fp16")
    facts = onnx_facts(bundle / "model.onnx")
    assert facts["float16_initializers"] > 0
    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_dla_flags_and_refusals(tmp_path: Path):
    spec = "input:1x1x28x28"
    assert build_args(10, "int8", spec, 512, 1)[-4:] == ["--useDLACore=1", "--allowGPUFallback",
                                                        "--fp16", "--int8"]
    assert "--stronglyTyped" not in build_args(10, "int8", spec, 512, 1)
    bundle = make_bundle(tmp_path, "int8", calibration=[np.zeros((4, 1, 28, 28), "f4")],
                         dla_core=0, dla_cores=2)
    script = (bundle / "run.sh").read_text()
    assert "has no DLA support on JetPack" in script  # TensorRT 11: refused on the device
    with pytest.raises(InputError, match="fp16 or int8 only"):
        make_bundle(tmp_path / "x", "fp32", dla_core=0, dla_cores=2)


def test_dla_fallback_warns_or_fails_when_strict():
    from edgeprune.backends.jetson import DlaFallbackError, dla_report

    log = (DATA / "dla_orin_layers_jetson_dla_tutorial.log").read_text()
    warnings: list[str] = []
    audit = dla_report({"dla_core": 0}, log, warnings.append)
    assert audit["dla_subgraphs"] == 5 and audit["gpu_fallback_count"] == 6
    assert warnings and "6 layer(s) fell back from DLA 0" in warnings[0]
    with pytest.raises(DlaFallbackError, match="PLUGIN_V2: InstanceNormalization_5"):
        dla_report({"dla_core": 0, "dla_strict": True}, log, warnings.append)
    assert dla_report({"dla_core": None}, log, warnings.append) is None


# --- engine manifests: version / GPU mismatch --------------------------------------------
def _facts(log: str) -> dict:
    text = (DATA / log).read_text()
    return {"tensorrt": trtexec.parse_version(text), "device": trtexec.parse_device(text)}


def test_engine_from_another_tensorrt_or_gpu_is_refused():
    built = {"tensorrt": "10.16.0", **_facts("trt10.16_rtx6000ada_onnx.log")}
    check_manifest(built, _facts("trt10.16_rtx6000ada_onnx.log"))  # same machine: fine
    check_manifest({**built, "tensorrt": "10.16.0.72"}, _facts("trt10.16_rtx6000ada_onnx.log"))
    with pytest.raises(EngineMismatch) as err:
        check_manifest(built, _facts("trt11.0_b200_load_engine.log"))
    text = err.value.problem
    assert "TensorRT 10.16.0 (this machine has 11.0.0)" in text
    assert "'NVIDIA RTX 6000 Ada Generation' (this one is 'NVIDIA B200')" in text
    assert "compute capability 8.9 (this GPU: 10.0)" in text
    assert err.value.exit_code == 2 and "rebuild" in err.value.fix


def test_device_engine_manifest_from_a_real_build_log():
    from edgeprune.backends.jetson import engine_manifest

    bundle = {"onnx": {"sha256": "ab" * 32, "input": {"name": "x", "dims": ["batch", 1, 28, 28]}},
              "precision": "fp32", "batch": 1}
    m = engine_manifest(bundle, (DATA / "trt10.16_rtx6000ada_onnx.log").read_text(), {})
    assert m["tensorrt"] == "10.16.0" and m["device"]["compute_capability"] == "8.9"
    assert m["input"]["shape"] == [1, 1, 28, 28] and m["onnx"]["sha256"] == "ab" * 32


# --- the headline command ----------------------------------------------------------------
def test_target_jetson_without_device_builds_bundle_and_exits_4(fashion_ckpt: Path,
                                                                 fashion_small: Path,
                                                                 tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                     "--target", "jetson", "--calib-size", "100", "--eval-limit", "200",
                     "--exporter", "torchscript", "--out", out)
    assert result.code == EXIT_NEEDS_DEVICE == 4, result.stderr
    bundle = out / "07-compile" / "bundle"
    assert (bundle / "run.sh").is_file() and (bundle / "model.onnx").is_file()
    assert "nothing was measured" in result.stderr and "Traceback" not in result.stderr
    assert f"scp -r {bundle} USER@DEVICE:edgeprune-bundle" in result.stderr
    assert "ssh USER@DEVICE sh edgeprune-bundle/run.sh all 1000 2 500" in result.stderr
    assert not (out / "report.json").exists()  # nothing pretends to be measured
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "jetson-orin-nano" and manifest["precision"] == "int8"


def test_dla_core_is_checked_against_the_module():
    from edgeprune.config import resolve_target
    from edgeprune.configure import _device_options
    from edgeprune.options import Resolved

    with pytest.raises(InputError, match="Jetson Orin Nano has no DLA"):
        _device_options(Resolved({"dla_core": 0}), resolve_target("jetson"))
    with pytest.raises(InputError, match="DLA cores 0-1 only"):
        _device_options(Resolved({"dla_core": 2}), resolve_target("jetson-agx-orin"))
    with pytest.raises(InputError, match="--dla-strict needs --dla-core"):
        _device_options(Resolved({"dla_strict": True}), resolve_target("jetson-agx-orin"))
    target = resolve_target("jetson-orin-nx")
    _device_options(Resolved({"dla_core": 1, "dla_strict": True,
                              "device": "nvidia@10.0.0.7:2222"}), target)
    assert target.options["dla_core"] == 1 and target.options["dla_strict"] is True
    assert target.remote.host == "nvidia@10.0.0.7:2222"


# --- TensorRT engines (GPU only) -----------------------------------------------------------
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_build_run_and_manifest(tmp_path: Path, precision: str):
    from edgeprune.runner import profile

    onnx_path = resnet20_onnx(tmp_path)
    images = cifar_images(256)
    backend = TensorRTBackend()
    result = backend.compile(CompileRequest(onnx_path, tmp_path / "c", precision, 0,
                                            {"batch": 8, "timing_cache": str(tmp_path / "tc")},
                                            [images[:128]]))
    engine = tmp_path / "c" / result.artifact
    manifest = json.loads(engine.with_name("model.engine.manifest.json").read_text())
    assert manifest["input"]["shape"] == [8, 3, 32, 32] and manifest["precision"] == precision
    session = backend.load(engine, precision, 0, 64, {})
    import onnxruntime as ort

    ref = ort.InferenceSession(str(onnx_path)).run(None, {"input": images})[0]
    got = session.run(images)
    assert (got.argmax(1) == ref.argmax(1)).mean() > (0.99 if precision != "int8" else 0.95)
    np.save(tmp_path / "x.npy", images[:8])
    measured = profile({"backend": "tensorrt", "artifact": str(engine), "precision": precision,
                        "threads": 0, "batch": 8, "options": {}, "inputs": str(tmp_path / "x.npy"),
                        "loop": {"warmup_iterations": 20, "min_iterations": 200,
                                 "min_seconds": 0.0, "max_seconds": 10.0}})
    assert measured["latency_ms"]["iterations"] >= 200 and measured["latency_ms"]["p99"] > 0
    assert measured["runtime"]["timing"].startswith("CUDA events")


@needs_trt
def test_engine_with_a_foreign_manifest_is_refused(tmp_path: Path):
    backend = TensorRTBackend()
    result = backend.compile(CompileRequest(export_fashion_onnx(tmp_path), tmp_path / "c",
                                            "fp32", 0, {"timing_cache": str(tmp_path / "tc")}))
    engine = tmp_path / "c" / result.artifact
    sidecar = engine.with_name("model.engine.manifest.json")
    manifest = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**manifest, "tensorrt": "9.9.9"}))
    with pytest.raises(EngineMismatch, match=r"TensorRT 9\.9\.9"):
        backend.load(engine, "fp32", 0, 1, {})
