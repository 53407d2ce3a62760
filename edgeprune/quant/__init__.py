"""Ternary (HQ / TWN) and int8 weight quantization with 8-bit activations, exported as
explicit Q/DQ ONNX that targets run with INT8 kernels, plus a packed 2-bit artifact.

See docs/ternary.md for the method (what the papers say and what this project chose).
"""

from edgeprune.quant.activations import ActQuant, calibrate
from edgeprune.quant.deploy import QConv2d, QLinear, deploy_state, to_deploy
from edgeprune.quant.ternary import (
    Int8Conv2d,
    Int8Linear,
    QuantState,
    TernaryConfig,
    TernaryConv2d,
    TernaryLinear,
    hq_threshold,
    precision_table,
    prepare_ternary,
    twn_threshold,
)

__all__ = [
    "ActQuant",
    "Int8Conv2d",
    "Int8Linear",
    "QConv2d",
    "QLinear",
    "QuantState",
    "TernaryConfig",
    "TernaryConv2d",
    "TernaryLinear",
    "calibrate",
    "deploy_state",
    "hq_threshold",
    "precision_table",
    "prepare_ternary",
    "to_deploy",
    "twn_threshold",
]
