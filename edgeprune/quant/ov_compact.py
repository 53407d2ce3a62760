"""Compact OpenVINO IR: ternary conv weights stored as u2, still executed as INT8.

OpenVINO has sub-byte element types (u2 among them). Measured with OpenVINO 2026.4 on the
CPU plugin (docs/ternary.md):

- The obvious decompression pattern ``Constant(u2, code+1) -> Convert(f32) ->
  Subtract(zero point 1) -> Multiply(scale)`` loads and gives identical outputs, but the
  plugin then runs those convolutions in **f32** (the low-precision transformations only
  recognize i8/u8 weight constants), several times slower.
- ``Constant(u2, code+1) -> Convert(i8) -> Subtract(i8 1) -> Convert(f32) ->
  Multiply(scale)`` is constant-folded at compile time into the ordinary i8 weight
  pattern, so every convolution still runs u8 x i8, with bit-identical outputs, while the
  ``.bin`` stores the ternary weights at 2 bits. That is what :func:`compact_u2_ir` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _u2_constant(values: np.ndarray) -> Any:
    """An OpenVINO u2 Constant from integers in 0..3 (low bits first, 4 per byte)."""
    import openvino as ov
    from openvino import opset13 as ops

    tensor = ov.Tensor(ov.Type.u2, ov.Shape(list(values.shape)))
    sym = values.reshape(-1).astype(np.uint8)
    sym = np.concatenate([sym, np.zeros((-len(sym)) % 4, np.uint8)]).reshape(-1, 4)
    tensor.data[:] = sym[:, 0] | sym[:, 1] << 2 | sym[:, 2] << 4 | sym[:, 3] << 6
    return ops.constant(tensor)


def compact_u2_ir(onnx_path: Path, out_dir: Path) -> dict[str, Any]:
    """Convert a Q/DQ ONNX (``export_qdq_onnx``) to IR with ternary weights as u2.

    Every Convolution/MatMul weight chain ``Constant(i8) -> Convert -> Subtract ->
    Multiply`` whose codes are all in {-1, 0, 1} gets a u2 constant (code + 1) that is
    shifted back in i8. Returns the files and sizes; load the IR with the openvino
    backend (precision "fp32") and read ``runtime_info()`` to see the executed precisions.
    """
    import openvino as ov
    from openvino import opset13 as ops

    model = ov.Core().read_model(str(onnx_path))
    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "MatMul"):
            continue
        chain = op.input_value(1).get_node()
        nodes = []
        for _ in range(4):  # Multiply <- Subtract <- Convert <- Constant
            nodes.append(chain)
            if chain.get_input_size() == 0:
                break
            chain = chain.input_value(0).get_node()
        types = [n.get_type_name() for n in nodes]
        if types != ["Multiply", "Subtract", "Convert", "Constant"]:
            continue
        weights = nodes[3].get_data()
        if weights.dtype != np.int8 or not np.isin(weights, (-1, 0, 1)).all():
            continue
        codes = _u2_constant((weights.astype(np.int16) + 1).astype(np.uint8))
        one = ops.constant(np.ones([1] * weights.ndim, np.int8))
        shifted = ops.subtract(ops.convert(codes, ov.Type.i8), one)
        nodes[1].output(0).replace(ops.convert(shifted, ov.Type.f32).output(0))
        replaced += 1
    model.validate_nodes_and_infer_types()
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    binf = xml.with_suffix(".bin")
    return {"artifact": "model.xml", "files": ["model.xml", "model.bin"],
            "u2_weight_tensors": replaced, "xml_bytes": xml.stat().st_size,
            "bin_bytes": binf.stat().st_size,
            "total_bytes": xml.stat().st_size + binf.stat().st_size}
