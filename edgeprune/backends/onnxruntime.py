"""ONNX Runtime CPU backend: fp32 ONNX as is, or static QDQ INT8 from calibration images.

``runtime_info`` counts the op types in the graph ORT actually optimized at load, because
a QDQ model only runs integer kernels when ORT fuses Q/DQ pairs into QLinearConv & co.;
an unfused QDQ graph silently runs float Conv between quantize/dequantize steps.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import CompileRequest, CompileResult
from edgeprune.errors import InputError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

PRECISIONS = ("fp32", "int8")
# Kernels that compute in integers (MLAS u8s8/u8u8) after ORT's QDQ fusion.
INTEGER_OPS = frozenset({
    "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
})
# Heavy float kernels (``Conv`` includes the com.microsoft.nchwc blocked Conv).
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul",
})
# MinMax: deterministic, cheap, and the same min/max statistics NNCF uses; Percentile's
# tails are noisy with the few hundred images a calibration set usually has.
DEFAULT_CALIBRATE = "minmax"
_EXTERNAL_DATA_LIMIT = 1_800_000_000  # protobuf's 2 GiB limit, with headroom


def _check_precision(precision: str) -> None:
    """ORT's CPU provider has no fast fp16/bf16 path; say so as a user error."""
    if precision not in PRECISIONS:
        raise InputError(
            f"onnxruntime-cpu supports fp32 and int8, not {precision!r}",
            fix="use precision fp32 or int8, or the openvino-cpu target for bf16/fp16",
        )


class CalibrationReader:
    """CalibrationDataReader over the request's batches that counts the samples it fed."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._name = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)
        self.samples = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next feed dict, or None when the calibration set is exhausted."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        arr = np.ascontiguousarray(batch, dtype=np.float32)
        self.samples += len(arr)
        return {self._name: arr}

    def rewind(self) -> None:
        """Calibration is one pass; nothing to rewind."""


def _input_name(model: onnx.ModelProto) -> str:
    """First graph input that is not an initializer (the image tensor)."""
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if not names:
        raise InputError("the ONNX model has no inputs", fix="re-export the model")
    return names[0]


def _save_onnx(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save one ONNX file (external data only past protobuf's size limit)."""
    import onnx

    if model.ByteSize() < _EXTERNAL_DATA_LIMIT:
        onnx.save_model(model, str(path))
        return [path.name]
    data = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, location=data)
    return [path.name, data]


def _pre_process(src: Path, dst: Path) -> tuple[Path, str]:
    """Shape inference + basic fusions help quantize_static place Q/DQ; optional."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # any failure: pre-processing is an optimization only
        return src, f"skipped: {type(exc).__name__}: {exc}"
    return dst, "done"


def _calibrate_method(options: dict[str, Any]) -> tuple[str, Any]:
    """Calibration method name and enum (options["ort_calibrate_method"])."""
    from onnxruntime.quantization import CalibrationMethod

    name = str(options.get("ort_calibrate_method", DEFAULT_CALIBRATE)).lower()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in methods:
        raise InputError(
            f"unknown ONNX Runtime calibration method {name!r}",
            fix="set ort_calibrate_method to minmax, percentile or entropy",
        )
    return name, methods[name]


def _non_empty(calibration: Iterable[np.ndarray] | None) -> Iterator[np.ndarray]:
    """Fail early (as a user error) on a missing or empty calibration set."""
    it = iter(calibration or [])
    first = next(it, None)
    if first is None:
        raise InputError(
            "int8 compile needs calibration images, but none were given",
            fix="point the profile's calibration set at preprocessed images, or use fp32",
        )
    return itertools.chain([first], it)


def _quantize(request: CompileRequest, dst: Path) -> dict[str, Any]:
    """Static QDQ INT8: uint8 activations, per-channel int8 weights (ORT's fast path)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    method_name, method = _calibrate_method(request.options)
    name = _input_name(onnx.load(str(request.onnx_path), load_external_data=False))
    reader = CalibrationReader(name, _non_empty(request.calibration))
    with tempfile.TemporaryDirectory(prefix="edgeprune-ort-") as tmp:
        src, pre = _pre_process(request.onnx_path, Path(tmp) / "pre.onnx")
        quantize_static(
            str(src), str(dst), reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=bool(request.options.get("ort_reduce_range", False)),
            calibrate_method=method,
            use_external_data_format=src.stat().st_size > _EXTERNAL_DATA_LIMIT,
        )
    return {"calibration_samples": reader.samples, "calibrate_method": method_name,
            "quant_format": "QDQ", "activation_type": "uint8", "weight_type": "int8",
            "per_channel": True, "pre_process": pre}


def _op_counts(path: Path) -> Counter[str]:
    """Count op types in a saved ONNX graph (weights not needed, so not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def _summarize(ops: Counter[str]) -> dict[str, Any]:
    """Integer vs float compute kernels -> 'int8', 'fp32' or 'mixed: int8 n, fp32 m'."""
    integer = sum(n for op, n in ops.items() if op in INTEGER_OPS)
    floating = sum(n for op, n in ops.items() if op in FLOAT_COMPUTE_OPS)
    if integer and floating:
        effective = f"mixed: int8 {integer}, fp32 {floating}"
    else:
        effective = "int8" if integer else "fp32"
    return {"integer_ops": integer, "float_conv_ops": floating, "effective_precision": effective}


def _session_options(threads: int, optimized_path: Path) -> ort.SessionOptions:
    """Latency-style options; the optimized graph is saved so we can see what runs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(optimized_path)
    # Big models: keep the saved optimized graph under protobuf's limit.
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "optimized.onnx.data")
    so.log_severity_level = 3  # the "NCHWc model is hardware specific" warning is expected
    return so


class OnnxRuntimeSession:
    """An InferenceSession on the CPU provider plus the facts measured at load."""

    def __init__(self, session: ort.InferenceSession, threads: int, batch: int,
                 ops: Counter[str]) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._threads = threads
        self._batch = batch
        self._ops = ops

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch of any size (the exported batch dimension is dynamic)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self._session.run(None, {self._input: x})[0]
        return np.asarray(out, dtype=np.float32)

    def runtime_info(self) -> dict[str, Any]:
        """Measured facts: optimized-graph kernels, providers, threads."""
        import onnxruntime as ort

        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "providers": self._session.get_providers(),
            "intra_op_num_threads": self._threads if self._threads > 0 else "default",
            "batch": self._batch,
            "optimized_op_counts": dict(self._ops),
            **_summarize(self._ops),
        }


class OnnxRuntimeBackend:
    """ONNX Runtime with the CPU execution provider."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        """Check that onnxruntime imports and offers the CPU provider."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnxruntime is not importable: {exc}"
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, ""

    def compile(self, request: CompileRequest) -> CompileResult:
        """Write model.onnx: a self-contained copy (fp32) or a static QDQ INT8 model."""
        import onnx
        import onnxruntime as ort

        _check_precision(request.precision)
        request.out_dir.mkdir(parents=True, exist_ok=True)
        dst = request.out_dir / "model.onnx"
        details: dict[str, Any] = {"onnxruntime_version": ort.__version__}
        if request.precision == "int8" and _op_counts(request.onnx_path)["QuantizeLinear"]:
            # explicit Q/DQ (e.g. ternary export): keep the model's own quantization
            files = _save_onnx(onnx.load(str(request.onnx_path)), dst)
            details["quantization"] = "the model's own Q/DQ (kept as is)"
        elif request.precision == "int8":
            details.update(_quantize(request, dst))
            files = [p.name for p in sorted(request.out_dir.glob("model.onnx*"))]
        else:
            files = _save_onnx(onnx.load(str(request.onnx_path)), dst)
        details["op_counts"] = dict(_op_counts(dst))
        return CompileResult(artifact="model.onnx", files=files,
                             precision_requested=request.precision, details=details)

    def load(self, artifact: Path, precision: str, threads: int, batch: int,
             options: dict[str, Any]) -> OnnxRuntimeSession:
        """Open the model on CPUExecutionProvider and record the optimized graph's ops."""
        import onnxruntime as ort

        _check_precision(precision)
        with tempfile.TemporaryDirectory(prefix="edgeprune-ort-opt-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            session = ort.InferenceSession(str(artifact), _session_options(threads, optimized),
                                           providers=["CPUExecutionProvider"])
            ops = _op_counts(optimized)
        return OnnxRuntimeSession(session, threads, batch, ops)
