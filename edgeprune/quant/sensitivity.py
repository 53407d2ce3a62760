"""Which layer's ternarization hurts most: the input of the search's 8-bit exception.

Each candidate layer is ternarized ALONE (weights only, no activation quantization, no
QAT) and the model's top-1 agreement with the unquantized model is measured on a few
calibration images. Agreement needs no labels, so it works in distillation mode too
(with ``--metric``, the metric of each probe on the calibration targets instead). It
is a proxy (QAT repairs much of the damage) but it ranks the layers that QAT cannot:
the ones where alpha * {-1, 0, +1} loses the most of the filter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgeprune.quant.ternary import TernaryConfig, plan_precisions, prepare_ternary

BATCH = 128


def _predictions(model: nn.Module, images: np.ndarray) -> np.ndarray:
    model = model.eval().to(memory_format=torch.channels_last)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            x = torch.from_numpy(images[i:i + BATCH]).contiguous(
                memory_format=torch.channels_last)
            out.append(model(x).argmax(1).numpy())
    return np.concatenate(out)


def ternary_layer_agreement(model: nn.Module, config: TernaryConfig, images: np.ndarray,
                            advance: Callable[[int], None] | None = None,
                            score: Callable[[nn.Module], float] | None = None,
                            ) -> dict[str, float]:
    """{layer: top-1 agreement in % with ``model``} for every layer ``config`` would make
    ternary, each ternarized alone (``score``: the run's metric of each probe instead).
    ``model`` (float) is not modified."""
    plan = plan_precisions(model, config)
    candidates = [name for name, kind in plan.items() if kind == "ternary"]
    reference = _predictions(model, images) if score is None else None
    agreement: dict[str, float] = {}
    for name in candidates:
        probe = copy.deepcopy(model)
        alone = TernaryConfig.from_dict({
            **config.to_dict(), "exclude": [n for n in plan if n != name], "int8_layers": [],
            "keep_first_last_8bit": False, "quantize_activations": False,
            "prune_target": 0.0})
        prepare_ternary(probe, alone)
        agreement[name] = (score(probe) if score is not None else
                           float(np.mean(_predictions(probe, images) == reference) * 100.0))
        if advance is not None:
            advance(1)
    return agreement


def most_damaged_layer(agreement: dict[str, float]) -> str | None:
    """The layer whose ternarization alone changed the most predictions (ties: first)."""
    return min(agreement, key=agreement.__getitem__) if agreement else None
