"""Plain-text lines describing a latency allocation (``--latency-reduction``), shared by
the console summary and the HTML report so both say the same thing."""

from __future__ import annotations

from typing import Any


def latency_lines(latency: dict[str, Any], flops_reduction: float) -> list[str]:
    """Predicted vs measured latency, the FLOPs ratio beside the latency ratio, and how
    many allocations were measured."""
    dense, measured = latency["dense_ms"], latency["measured_ms"]
    speedup = dense / measured if measured else float("nan")
    flops_ratio = 1 / (1 - flops_reduction) if flops_reduction < 1 else float("inf")
    return [
        f"latency allocation on {latency['table']['probe']['backend']} "
        f"{latency['precision']}: measured {measured:.3f} ms vs dense {dense:.3f} ms "
        f"(-{latency['reduction']:.1%} for -{latency['target']:.0%} asked), predicted "
        f"{latency['predicted_ms']:.3f} ms (error {latency['prediction_error']:+.1%})",
        f"speed-up {speedup:.2f}x for {flops_ratio:.2f}x fewer FLOPs (latency ratio / FLOPs "
        f"ratio {speedup / flops_ratio:.2f}); {len(latency['attempts'])} allocation(s) "
        f"measured; latency table {latency['table']['seconds']:.0f} s"
        + (" (cached)" if latency["table"].get("cached") else ""),
    ]


def saved_rows(latency: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(group, kept channels, measured single-group saving in ms), largest saving first."""
    rows = [(name, latency["kept"][name], ms) for name, ms in latency["saved_ms"].items()]
    return sorted(rows, key=lambda r: -r[2])
