"""OpenVINO CPU backend: ONNX -> IR (optionally NNCF INT8), loaded with explicit hints.

The inference precision is always set explicitly at load, because on AMX/AVX512-BF16 CPUs
OpenVINO's default hint is bf16, so an unhinted "fp32" model silently runs in bf16.
``runtime_info`` reads the precisions the CPU plugin actually chose per executed layer.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import CompileRequest, CompileResult
from edgeprune.errors import InputError

if TYPE_CHECKING:
    import openvino as ov

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# INT8 keeps f32 for the layers NNCF left unquantized (a bf16 default would blur accuracy).
_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
# PERFORMANCE = symmetric weights and activations: the fastest CPU kernels, and lossless
# enough for ReLU CNNs; profiles may ask for "mixed" (asymmetric activations) for models
# with negative activations (SiLU/GELU/hardswish) where symmetric ranges waste a bit.
DEFAULT_PRESET = "performance"
# Target option: INT8 with NNCF accuracy control, the value being the max drop in points.
ACCURACY_CONTROL = "int8_accuracy_control"
# NNCF reverts one layer group per iteration and has no limit of its own; each iteration
# recompiles and re-validates, so a model that needs most layers in FP32 (then no faster
# than FP32 anyway) would take tens of minutes. Past this many the candidate is reported
# as over budget instead.
ACCURACY_CONTROL_MAX_REVERTED = 12
# Runtime layer types whose precision decides what the model "really" runs in.
_COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")
_INTEGER = ("i8", "u8")


def _check_precision(precision: str) -> None:
    """Reject precisions this backend does not know, as a user error."""
    if precision not in PRECISIONS:
        raise InputError(
            f"openvino backend does not support precision {precision!r}",
            fix=f"use one of: {', '.join(PRECISIONS)}",
        )


def _samples(calibration: Any) -> list[np.ndarray]:
    """Split calibration batches into single samples: NNCF's subset_size counts items."""
    if calibration is None:
        return []
    out: list[np.ndarray] = []
    for batch in calibration:
        arr = np.asarray(batch, dtype=np.float32)
        out.extend(np.ascontiguousarray(arr[i : i + 1]) for i in range(len(arr)))
    return out


def _preset(options: dict[str, Any]) -> tuple[str, Any]:
    """Return the preset name and the NNCF enum for it (options["ov_preset"])."""
    import nncf

    name = str(options.get("ov_preset", DEFAULT_PRESET)).lower()
    presets = {
        "performance": nncf.QuantizationPreset.PERFORMANCE,
        "mixed": nncf.QuantizationPreset.MIXED,
    }
    if name not in presets:
        raise InputError(
            f"unknown OpenVINO quantization preset {name!r}",
            fix="set ov_preset to 'performance' or 'mixed'",
        )
    return name, presets[name]


def _quantize(model: ov.Model, request: CompileRequest) -> tuple[ov.Model, dict[str, Any]]:
    """Run NNCF post-training INT8 quantization on the OpenVINO model."""
    import nncf

    samples = _samples(request.calibration)
    if not samples:
        raise InputError(
            "int8 compile needs calibration images, but none were given",
            fix="point the profile's calibration set at preprocessed images, or use fp32",
        )
    name, preset = _preset(request.options)
    max_drop = request.options.get(ACCURACY_CONTROL)
    details: dict[str, Any] = {
        "nncf_version": nncf.__version__,
        "calibration_samples": len(samples),
        "quantization_preset": name,
        "fast_bias_correction": True,
    }
    # NNCF draws its own progress bar on stdout; stdout belongs to the CLI (reports, JSON)
    with contextlib.redirect_stdout(sys.stderr):
        if max_drop is None:
            quantized = nncf.quantize(
                model,
                nncf.Dataset(samples),
                subset_size=len(samples),
                preset=preset,
            )
        else:
            quantized, control = _quantize_with_accuracy_control(
                model, samples, preset, float(max_drop))
            details["accuracy_control"] = control
    return quantized, details


def _quantize_with_accuracy_control(model: ov.Model, samples: list[np.ndarray], preset: Any,
                                    max_drop: float) -> tuple[ov.Model, dict[str, Any]]:
    """NNCF accuracy control: quantize, then return the layers that cost the most top-1
    agreement with the float model to float, one at a time, until the agreement on the
    calibration images is within ``max_drop`` points (the per-layer FP32 exception).

    The metric is agreement with the float model's own predictions, so no labels are
    needed and the held-out evaluation split stays unseen. NNCF compiles both models with
    an f32 inference hint for this (never the CPU's bf16 default).
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    reference_model = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = [int(np.argmax(reference_model(x)[0])) for x in samples]
    items = list(zip(samples, reference, strict=True))

    def agreement(compiled: ov.CompiledModel, data: Any) -> float:
        hits = [int(np.argmax(compiled(x)[0])) == ref for x, ref in data]
        return float(np.mean(hits)) if hits else 0.0

    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=nncf.Dataset(samples),
        validation_dataset=nncf.Dataset(items, lambda item: item[0]),
        validation_fn=agreement,
        max_drop=max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(samples),
        preset=preset,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=ACCURACY_CONTROL_MAX_REVERTED),
    )
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return quantized, {
        "max_drop_points": max_drop, "max_reverted_groups": ACCURACY_CONTROL_MAX_REVERTED,
        "metric": "top-1 agreement with the float model on the calibration images",
        "validation_samples": len(samples),
        "agreement": 100.0 * agreement(compiled, items),
        "fake_quantize_nodes": _count_ops(quantized, "FakeQuantize"),
    }


def _stable_names(model: ov.Model) -> None:
    """Name the operations OpenVINO named itself by their place in the graph. Its names
    come from one counter per process (``Constant_6538``), so the same model compiled after
    other models in the process -- a resumed run compiles without the baseline before it --
    would otherwise get another IR (other names, another size)."""
    for index, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        if AUTO_NAME.fullmatch(name) and name.startswith(op.get_type_name() + "_"):
            op.set_friendly_name(f"{op.get_type_name()}_n{index}")


AUTO_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*_\d+")


def _count_ops(model: ov.Model, type_name: str) -> int:
    """Count graph operations of one type (e.g. FakeQuantize inserted by NNCF)."""
    return sum(1 for op in model.get_ops() if op.get_type_name() == type_name)


def _static_batch(model: ov.Model, batch: int) -> None:
    """Fix the (dynamic) batch dimension of input 0 so the CPU plugin compiles static shapes."""
    import openvino as ov

    shape = model.input(0).get_partial_shape()
    dims = [ov.Dimension(batch)] + [shape[i] for i in range(1, shape.rank.get_length())]
    model.reshape({0: ov.PartialShape(dims)})


def _rt_str(value: Any) -> str:
    """Read an OVAny runtime-info value as text (``str(OVAny)`` gives '<OVAny class>')."""
    return str(value.astype(str)) if hasattr(value, "astype") else str(value)


def layer_precisions(runtime_model: ov.Model) -> dict[str, dict[str, int]]:
    """Count executed layers by runtime layer type and the precision the plugin chose."""
    counts: dict[str, Counter[str]] = {}
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        layer = _rt_str(info["layerType"])
        precision = _rt_str(info["runtimePrecision"])
        counts.setdefault(layer, Counter())[precision] += 1
    return {layer: dict(c) for layer, c in counts.items()}


def effective_precision(layers: dict[str, dict[str, int]]) -> str:
    """Summarize compute-layer precisions: 'i8', 'bf16', 'f32' or 'mixed: i8 18, f32 2'.

    u8 and i8 both mean integer kernels (the activation sign only), so both count as i8.
    """
    total: Counter[str] = Counter()
    for layer in _COMPUTE_LAYERS:
        for precision, n in layers.get(layer, {}).items():
            total["i8" if precision in _INTEGER else precision] += n
    if not total:
        return "unknown"
    if len(total) == 1:
        return next(iter(total))
    return "mixed: " + ", ".join(f"{p} {n}" for p, n in total.most_common())


class OpenVINOSession:
    """One compiled model with a reused synchronous infer request at a static batch."""

    def __init__(self, compiled: ov.CompiledModel, batch: int, core: ov.Core) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._batch = batch
        self._core = core

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run any number of samples; chunks are padded to the compiled batch and sliced."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        outs = [self._run_chunk(x[i : i + self._batch]) for i in range(0, len(x), self._batch)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Infer one chunk of at most the compiled batch size."""
        n = len(chunk)
        if n < self._batch:
            pad = np.zeros((self._batch - n, *chunk.shape[1:]), dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        result = self._request.infer({0: chunk}, share_inputs=True)
        return np.array(result[0][:n], dtype=np.float32, copy=True)

    def runtime_info(self) -> dict[str, Any]:
        """Measured facts: per-layer-type runtime precisions, hints, threads, device."""
        import openvino as ov

        layers = layer_precisions(self._compiled.get_runtime_model())
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return {
            "runtime": "openvino",
            "version": ov.get_version(),
            "device": self._core.get_property("CPU", "FULL_DEVICE_NAME"),
            "inference_precision_hint": hint.get_type_name() if hasattr(hint, "get_type_name")
            else str(hint),
            "performance_hint": str(self._compiled.get_property("PERFORMANCE_HINT")),
            "inference_num_threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": int(self._compiled.get_property("NUM_STREAMS")),
            "batch": self._batch,
            "layer_precisions": layers,
            "effective_precision": effective_precision(layers),
        }


class OpenVINOBackend:
    """OpenVINO on the host CPU (x86 with AVX2/AVX512/AMX, or ARM)."""

    name = "openvino"

    def available(self) -> tuple[bool, str]:
        """Check that the OpenVINO runtime imports here (NNCF is only needed for int8)."""
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            return False, f"openvino is not importable: {exc}"
        return True, ""

    def compile(self, request: CompileRequest) -> CompileResult:
        """Convert the ONNX to IR (quantizing for int8) and save model.xml/model.bin."""
        import openvino as ov

        _check_precision(request.precision)
        model = ov.Core().read_model(str(request.onnx_path))
        details: dict[str, Any] = {"openvino_version": ov.get_version()}
        if request.precision == "int8" and _count_ops(model, "FakeQuantize"):
            # explicit Q/DQ (e.g. ternary export): the model carries its own quantization
            details["quantization"] = "the model's own Q/DQ (kept as is, no NNCF)"
        elif request.precision == "int8":
            model, quant = _quantize(model, request)
            details.update(quant)
        details["fake_quantize_nodes"] = _count_ops(model, "FakeQuantize")
        request.out_dir.mkdir(parents=True, exist_ok=True)
        _stable_names(model)
        ov.save_model(model, str(request.out_dir / "model.xml"), compress_to_fp16=False)
        return CompileResult(
            artifact="model.xml",
            files=["model.xml", "model.bin"],
            precision_requested=request.precision,
            details=details,
        )

    def load(self, artifact: Path, precision: str, threads: int, batch: int,
             options: dict[str, Any]) -> OpenVINOSession:
        """Compile the IR for CPU at a static batch with explicit precision/latency hints."""
        import openvino as ov

        _check_precision(precision)
        core = ov.Core()
        model = core.read_model(str(artifact))
        _static_batch(model, batch)
        compiled = core.compile_model(model, "CPU", _properties(precision, threads, options))
        return OpenVINOSession(compiled, batch, core)


def _properties(precision: str, threads: int, options: dict[str, Any]) -> dict[str, Any]:
    """CPU plugin properties; options may override the precision and performance hints."""
    props: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": options.get("inference_precision", _HINTS[precision]),
        "PERFORMANCE_HINT": options.get("performance_hint", "LATENCY"),
    }
    if threads > 0:
        props["INFERENCE_NUM_THREADS"] = threads
    return props
