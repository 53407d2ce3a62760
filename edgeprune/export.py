"""ONNX export with a parity check against PyTorch on real inputs.

The exported graph is what every target compiles, so it is checked before anything is
built from it: max abs difference of the logits and top-1 agreement, on real images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune import interrupt
from edgeprune.errors import StageFailure

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class ParityTolerance:
    """Limits for a float export: logits within atol (scaled by the logits' range) and
    top-1 agreement of at least ``min_agreement``."""

    atol: float = 1e-3
    min_agreement: float = 0.99


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str = "dynamo",
                opset: int | None = None) -> dict[str, Any]:
    """Export with a dynamic batch dimension; returns the facts recorded in metrics.json.

    The example needs batch >= 2: torch.export specializes a dimension of size 1."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    if example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    tmp = path.with_suffix(".tmp.onnx")
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = opset
    # held: the exporter falls back to other capture strategies when one fails, and an
    # interrupt inside one can come out as such a failure (see edgeprune.interrupt)
    with interrupt.held(), _quiet_exporter(), torch.no_grad():
        if exporter == "dynamo":
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
            program = torch.onnx.export(model, (example,), dynamo=True, **kwargs)
            program.save(str(tmp), external_data=False)  # one self-contained file
        else:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, **kwargs)
    import onnx

    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    tmp.replace(path)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
    return {
        "exporter": exporter,
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "onnx_bytes": path.stat().st_size,
        "nodes": len(proto.graph.node),
        "onnx_version": onnx.__version__,
    }


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress and torchvision warnings; keep the CLI clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def check_parity(model: nn.Module, onnx_path: Path, images: np.ndarray,
                 tolerance: ParityTolerance) -> dict[str, Any]:
    """Run PyTorch and ONNX Runtime on the same real images and compare."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    diff = float(np.max(np.abs(expected - got)))
    scale = float(np.max(np.abs(expected))) or 1.0
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    result = {
        "samples": len(images),
        "max_abs_diff": diff,
        "logit_scale": scale,
        "top1_agreement": agreement,
        "atol": tolerance.atol,
        "min_agreement": tolerance.min_agreement,
    }
    result["passed"] = diff <= tolerance.atol * max(scale, 1.0) and (
        agreement >= tolerance.min_agreement
    )
    if not result["passed"]:
        raise StageFailure(
            f"ONNX export does not match PyTorch on {len(images)} real inputs: max abs diff "
            f"{diff:.3g} (limit {tolerance.atol * max(scale, 1.0):.3g}), top-1 agreement "
            f"{agreement:.2%} (limit {tolerance.min_agreement:.0%})",
            fix="try --exporter torchscript, or report the model: an op is exported wrongly",
        )
    return result
