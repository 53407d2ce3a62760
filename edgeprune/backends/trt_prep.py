"""The ONNX a TensorRT engine is built from, with the precision carried by the graph.

TensorRT 11 removed builder precision flags and implicit INT8 calibration (every network is
strongly typed), and TensorRT 10 builds the same graphs with ``--stronglyTyped``. So the
precision lives in the ONNX for both: INT8 as explicit Q/DQ nodes (kept as they are when
the model already has them, e.g. ternary weights from the quantize stage; otherwise
inserted here from the calibration images, symmetric, as TensorRT requires), FP16 as
float16 tensors (inputs/outputs stay float32). Runs on any machine: no TensorRT needed.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.backends.onnxruntime import CalibrationReader
from edgeprune.errors import InputError

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops that get Q/DQ when edgeprune inserts them: the compute layers TensorRT runs in INT8.
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")  # usable unquoted in trtexec --shapes


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (read in chunks: ONNX files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_facts(path: Path) -> dict[str, Any]:
    """Hash, size, opset, image input and Q/DQ/float16 content of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise InputError(f"{path} has no graph inputs", fix="re-export the model")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]
    ops = [n.op_type for n in model.graph.node]
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                      None),
        "input": {"name": inputs[0].name, "dims": dims},
        "qdq_nodes": sum(1 for op in ops if op in QDQ_OPS),
        "float16_initializers": fp16,
        "nodes": len(ops),
    }


def input_shape(facts: dict[str, Any], batch: int) -> list[int]:
    """The engine's input shape: the profile's batch and the model's static C, H, W."""
    dims = facts["input"]["dims"]
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise InputError(
            f"the model input {facts['input']['name']!r} has shape {dims}; TensorRT targets "
            "need a 4-D NCHW input with static C, H, W",
            fix="export with a fixed image size (the batch dimension may stay dynamic)",
        )
    return [batch, *dims[1:]]


def shape_spec(facts: dict[str, Any], batch: int) -> str:
    """``name:1x3x32x32`` for trtexec's shape options."""
    name = facts["input"]["name"]
    if not _SAFE_NAME.match(name):
        raise InputError(
            f"the model input is named {name!r}, which trtexec cannot take in --shapes",
            fix="export the model with a plain input name such as 'input'",
        )
    return f"{name}:" + "x".join(str(d) for d in input_shape(facts, batch))


def insert_qdq(src: Path, dst: Path, calibration: Iterable[np.ndarray] | None,
               options: dict[str, Any]) -> dict[str, Any]:
    """Static INT8 Q/DQ for TensorRT: symmetric int8 activations and per-channel int8
    weights (zero points 0), on the compute layers only."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(calibration or [])
    if not batches:
        raise InputError(
            "int8 for TensorRT needs Q/DQ in the ONNX: the model has none and no calibration "
            "images were given",
            fix="give training data (--train-data or --data) for calibration, quantize the "
            "model first (Q/DQ export), or use --precision fp16/fp32",
        )
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    method = str(options.get("calibrate_method", "minmax")).lower()
    if method not in methods:
        raise InputError(f"unknown calibrate_method {method!r}",
                         fix="set calibrate_method to minmax, percentile or entropy")
    reader = CalibrationReader(onnx_facts(src)["input"]["name"], batches)
    with tempfile.TemporaryDirectory(prefix="edgeprune-trt-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre))
        except Exception:  # an optimization only: quantize the original graph instead
            pre = src
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            reduce_range=False, calibrate_method=methods[method],
            op_types_to_quantize=QUANTIZED_OPS,
            # Biases stay float: TensorRT fuses them into the INT8 convolution itself.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "QuantizeBias": False},
        )
    return {"qdq_source": "inserted by edgeprune (onnxruntime.quantization, symmetric int8)",
            "calibration_samples": reader.samples, "calibrate_method": method}


def to_float16(src: Path, dst: Path) -> dict[str, Any]:
    """Float16 weights and compute, float32 inputs/outputs (what strong typing builds)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(model, str(dst))
    return {"fp16_source": "float16 tensors (onnxruntime.transformers.float16, fp32 I/O)"}


def prepare_onnx(src: Path, dst: Path, precision: str,
                 calibration: Iterable[np.ndarray] | None,
                 options: dict[str, Any]) -> dict[str, Any]:
    """Write the ONNX TensorRT will build and say how its precision is carried."""
    import onnx

    facts = onnx_facts(src)
    if precision == "int8":
        if facts["qdq_nodes"]:
            model = onnx.load(str(src))
            folded = fold_int32_dequantize(model)
            onnx.save_model(model, str(dst))
            details: dict[str, Any] = {"qdq_source": "the model's own Q/DQ (kept as is)",
                                       "int32_bias_dequantize_folded": folded}
        else:
            details = insert_qdq(src, dst, calibration, options)
    elif precision == "fp16":
        if facts["qdq_nodes"]:
            raise InputError(
                "the model already carries Q/DQ (INT8) nodes, so it cannot be built as fp16",
                fix="use --precision int8 for a quantized model",
            )
        details = to_float16(src, dst)
    elif precision == "fp32":
        if facts["qdq_nodes"]:
            raise InputError(
                "the model carries Q/DQ (INT8) nodes: TensorRT would run those layers in "
                "INT8, not fp32",
                fix="use --precision int8 for a quantized model",
            )
        onnx.save_model(onnx.load(str(src)), str(dst))
        details = {}
    else:
        raise InputError(f"TensorRT targets support fp32, fp16 and int8, not {precision!r}",
                         fix="use --precision fp32, fp16 or int8")
    out = onnx_facts(dst)
    if precision == "int8":
        _check_symmetric(dst)
    details.update(precision_carrier={"int8": "Q/DQ", "fp16": "float16 tensors",
                                      "fp32": "float32"}[precision], onnx=out)
    return details


def fold_int32_dequantize(model: Any) -> int:
    """Replace each DequantizeLinear of a constant int32 tensor (a quantized bias, as ONNX
    Runtime needs it to fuse QLinearConv) by the float32 constant it computes: TensorRT
    only dequantizes activation types ("only activation types allowed as input to this
    layer") and runs the bias in float anyway. Exact: the same (q - zp) * scale. Returns
    how many were folded."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in consts:
            continue
        q = numpy_helper.to_array(consts[node.input[0]])
        if q.dtype != np.int32 or node.input[1] not in consts:
            continue
        scale = numpy_helper.to_array(consts[node.input[1]]).astype(np.float32)
        zp = (numpy_helper.to_array(consts[node.input[2]]).astype(np.int64)
              if len(node.input) > 2 and node.input[2] in consts else np.zeros(1, np.int64))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and q.ndim > 1:  # per-axis: broadcast along ``axis``
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.size > 1 else zp
        value = ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for n in graph.node for name in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    return len(folded)


def _check_symmetric(path: Path) -> None:
    """TensorRT only runs symmetric Q/DQ (signed types, zero point 0); refuse anything else
    here rather than at the engine build on a device."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS and len(node.input) > 2 and node.input[2] in consts:
            zp = consts[node.input[2]]
            if zp.dtype == np.uint8 or np.any(zp != 0):
                raise InputError(
                    f"Q/DQ node {node.name!r} has zero point {zp.ravel()[:4]} ({zp.dtype}); "
                    "TensorRT needs symmetric, signed quantization (zero point 0)",
                    fix="export symmetric int8 Q/DQ (activations and weights)",
                )
