"""Explicit Q/DQ ONNX export of a ternary/int8 model, verified in ONNX Runtime and OpenVINO.

The exported graph has, per quantized layer:
``input -> QuantizeLinear(uint8) -> DequantizeLinear -> Conv/Gemm`` with the weight
``DequantizeLinear(int8 initializer, per-channel float scale, axis 0)`` (values in
{-1, 0, 1} for ternary layers) and the bias ``DequantizeLinear(int32, act_scale*w_scale)``.
No runtime has ternary kernels; this is the form in which OpenVINO and ONNX Runtime pick
INT8 kernels (METHODS.md §4). Conventions match ``edgeprune/export.py``: input "input",
output "logits", dynamic batch dimension, one self-contained file.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import StageFailure
from edgeprune.export import INPUT_NAME, OUTPUT_NAME, _quiet_exporter
from edgeprune.quant.deploy import _QBase, to_deploy
from edgeprune.quant.ternary import QUANT_LAYERS


@dataclass
class QDQTolerance:
    """Limits for runtime vs PyTorch (deployed fake-quant) outputs.

    Integer kernels accumulate exactly but requantize with their own rounding, so an
    activation code can differ by one step where a value sits on a rounding boundary and
    the difference propagates; the limit is therefore looser than a float export's 1e-3.
    Measured on ResNet-20 / Fashion CNN (docs/ternary.md): max |diff| / max(|logit|, 1)
    of a few 1e-3 with >= 99.6% top-1 agreement; the default leaves headroom."""

    atol: float = 0.05  # max |diff| <= atol * max(max|logit|, 1)
    min_agreement: float = 0.98


def deployed_form(model: nn.Module) -> nn.Module:
    """The model itself if already deployed, else ``to_deploy(model)``."""
    if any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        return to_deploy(model)
    if not any(isinstance(m, _QBase) for m in model.modules()):
        raise ValueError("model has no quantized layers: call prepare_ternary() first")
    return model.eval()


def export_qdq_onnx(model: nn.Module, example: torch.Tensor, path: Path,
                    opset: int | None = None) -> dict[str, Any]:
    """Export the deployed form of ``model`` as explicit Q/DQ ONNX; return the facts.

    ``model`` is a prepared (and calibrated) model or the output of ``to_deploy``. The facts
    record the opset, node counts, and for every quantized weight its ONNX dtype, value set
    and scale layout, so a report can show that ternary tensors really are int8 {-1,0,1}.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    deployed = deployed_form(model)
    if example.shape[0] < 2:  # torch.export specializes a dimension of size 1
        example = example.expand(2, *example.shape[1:]).contiguous()
    tmp = path.with_suffix(".tmp.onnx")
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME],
                              "dynamic_shapes": ({0: torch.export.Dim("batch")},)}
    if opset is not None:
        kwargs["opset_version"] = opset
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(deployed, (example,), dynamo=True, **kwargs)
        program.save(str(tmp), external_data=False)
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    tmp.replace(path)

    inits = {t.name: t for t in proto.graph.initializer}
    ops = Counter(n.op_type for n in proto.graph.node)
    layers: dict[str, Any] = {}
    problems: list[str] = []
    for name, m in deployed.named_modules():
        if not isinstance(m, _QBase):
            continue
        wname = f"{name}.weight_int8"
        t = inits.get(wname)
        if t is None:
            problems.append(f"{wname}: not an initializer in the ONNX graph")
            continue
        arr = numpy_helper.to_array(t)
        values = sorted(int(v) for v in np.unique(arr))
        entry = {"kind": m.kind, "onnx_dtype": onnx.TensorProto.DataType.Name(t.data_type),
                 "shape": list(arr.shape), "values": values if len(values) <= 3 else
                 [values[0], values[-1]], "zero_fraction": float(np.mean(arr == 0)),
                 "bit_exact": bool(np.array_equal(arr, m.weight_int8.cpu().numpy()))}
        if t.data_type != onnx.TensorProto.INT8 or not entry["bit_exact"]:
            problems.append(f"{wname}: dtype {entry['onnx_dtype']}, bit-exact "
                            f"{entry['bit_exact']}")
        if m.kind == "ternary" and not set(values) <= {-1, 0, 1}:
            problems.append(f"{wname}: ternary layer has values {values}")
        layers[name] = entry
    act_q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    zp_types = Counter(
        onnx.TensorProto.DataType.Name(inits[n.input[2]].data_type)
        for n in act_q if len(n.input) > 2 and n.input[2] in inits)
    if problems:
        raise StageFailure("Q/DQ export is not what the quantized model holds: "
                           + "; ".join(problems),
                           fix="report the model: an op is exported wrongly")
    opsets = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
    return {
        "exporter": "dynamo",
        "opset": opsets.get("ai.onnx"),
        "onnx_bytes": path.stat().st_size,
        "nodes": len(proto.graph.node),
        "op_counts": dict(ops),
        "activation_quantizers": len(act_q),
        "activation_zero_point_types": dict(zp_types),
        "ternary_layers": sum(1 for v in layers.values() if v["kind"] == "ternary"),
        "int8_layers": sum(1 for v in layers.values() if v["kind"] == "int8"),
        "layers": layers,
        "bn": getattr(deployed, "deploy_facts", {}).get("folded_bn"),
        "onnx_version": onnx.__version__,
    }


def _compare(expected: np.ndarray, got: np.ndarray, tol: QDQTolerance) -> dict[str, Any]:
    diff = float(np.max(np.abs(expected - got)))
    scale = float(np.max(np.abs(expected))) or 1.0
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    limit = tol.atol * max(scale, 1.0)
    return {"max_abs_diff": diff, "mean_abs_diff": float(np.mean(np.abs(expected - got))),
            "logit_scale": scale, "limit": limit, "top1_agreement": agreement,
            "passed": diff <= limit and agreement >= tol.min_agreement}


def verify_qdq(model: nn.Module, onnx_path: Path, images: np.ndarray,
               tolerance: QDQTolerance | None = None,
               runtimes: tuple[str, ...] = ("onnxruntime", "openvino"),
               threads: int = 0, fake_quant_model: nn.Module | None = None,
               raise_on_failure: bool = True) -> dict[str, Any]:
    """Load the Q/DQ ONNX in each runtime, compare with PyTorch, read real precisions.

    Reference: the deployed PyTorch model (``to_deploy`` of ``model``), which computes the
    same Q/DQ graph in float. For OpenVINO the ONNX is compiled to IR by the project's
    backend at precision "fp32" (f32 inference hint: anything not quantized stays f32,
    FakeQuantize'd convolutions run integer) and ``runtime_info()`` gives the executed
    precision per layer type. For ONNX Runtime the optimized graph's integer kernels are
    counted. ``fake_quant_model`` (the training-form model, BN not folded) is compared to
    the deployed one as well, to record what folding + int32 bias rounding change.
    """
    from edgeprune.backends import get_backend
    from edgeprune.backends.base import CompileRequest

    tol = tolerance or QDQTolerance()
    deployed = deployed_form(model)
    images = np.ascontiguousarray(images, dtype=np.float32)
    with torch.no_grad():
        expected = deployed(torch.from_numpy(images)).numpy()
    result: dict[str, Any] = {"samples": len(images), "tolerance": {
        "atol": tol.atol, "min_agreement": tol.min_agreement}, "runtimes": {}}
    if fake_quant_model is not None:
        was = fake_quant_model.training
        with torch.no_grad():
            fq = fake_quant_model.eval()(torch.from_numpy(images)).numpy()
        fake_quant_model.train(was)
        result["deployed_vs_fake_quant"] = _compare(fq, expected, tol)
    batch = min(len(images), 64)
    failures: list[str] = []
    for rt in runtimes:
        backend = get_backend(rt)
        with tempfile.TemporaryDirectory(prefix="edgeprune-qdq-") as tmp:
            if rt == "openvino":
                compiled = backend.compile(CompileRequest(Path(onnx_path), Path(tmp), "fp32"))
                session = backend.load(Path(tmp) / compiled.artifact, "fp32", threads, batch, {})
            else:
                session = backend.load(Path(onnx_path), "int8", threads, batch, {})
            got = session.run(images)
            info = session.runtime_info()
        entry = {**_compare(expected, got, tol), "effective_precision":
                 info.get("effective_precision")}
        if rt == "openvino":
            layers = info["layer_precisions"]
            conv = layers.get("Convolution", {})
            entry["layer_precisions"] = layers
            entry["inference_precision_hint"] = info.get("inference_precision_hint")
            entry["convolution_precisions"] = conv
            entry["convolutions_integer"] = bool(conv) and set(conv) <= {"i8", "u8"}
            # every quantized conv must run on integer kernels; a conv the plan left in
            # float (excluded, or a Conv2d subclass with its own forward) may run f32
            integer = sum(n for p, n in conv.items() if p in ("i8", "u8"))
            expected = sum(1 for m in deployed.modules()
                           if isinstance(m, _QBase) and hasattr(m, "groups"))
            entry["integer_convolutions"] = {"ran": integer, "quantized_in_model": expected}
            if integer < expected:
                failures.append(f"OpenVINO runs convolutions as {conv}: only {integer} on "
                                f"integer kernels for {expected} quantized ones")
        else:
            entry["optimized_op_counts"] = info.get("optimized_op_counts")
            entry["integer_ops"] = info.get("integer_ops")
            entry["float_conv_ops"] = info.get("float_conv_ops")
        if not entry["passed"]:
            failures.append(
                f"{rt} output differs from PyTorch: max abs diff {entry['max_abs_diff']:.3g} "
                f"(limit {entry['limit']:.3g}), top-1 agreement {entry['top1_agreement']:.2%}")
        result["runtimes"][rt] = entry
    result["passed"] = not failures
    if failures and raise_on_failure:
        raise StageFailure("Q/DQ model check failed: " + "; ".join(failures),
                           fix="report the model with the recorded numbers")
    return result
