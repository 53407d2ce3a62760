"""Stages 3-5 when they are not asked for: named slots that pass the model through and
say why, so every run has the same stage numbers (prune with --prune; recovery follows
pruning; ternary QAT with --quant ternary). Runtime INT8 (post-training, --quant int8)
happens at compile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.pipeline import RunContext


class PassThroughStage:
    """A slot that records why it did nothing; its output is its input."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def fingerprint(self, ctx: RunContext) -> dict[str, Any]:
        return {"reason": self.reason}

    def run(self, ctx: RunContext, workdir: Path) -> dict[str, Any]:
        return {"skipped": True, "reason": self.reason, "summary": self.reason}


def default_slots() -> list[PassThroughStage]:
    return [
        PassThroughStage("prune", "no pruning requested (--prune dscore --flops-reduction "
                         "0.5 prunes)"),
        PassThroughStage("recover", "nothing to recover (no pruning or quantization training)"),
        PassThroughStage("quantize", "no quantization-aware training requested (--quant "
                         "ternary trains ternary weights; --quant int8 is post-training INT8 "
                         "done by the target at compile)"),
    ]
