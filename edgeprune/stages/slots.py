"""Stages 3-5 when they are not asked for: named slots that pass the model through and
say why, so every run has the same stage numbers (prune with --prune; recovery follows
pruning; weight quantization is not in the pipeline yet). Runtime INT8 (post-training)
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
        PassThroughStage("quantize", "no weight quantization requested (runtime INT8 is done "
                         "by the target at compile)"),
    ]
