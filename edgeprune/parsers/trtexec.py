"""trtexec's text output as numbers: performance summary, version, device, DLA placement.

TensorRT 8.x to 11.x print the summary from ``samples/common/sampleReporting.cpp`` as
``[I] Latency: min = X ms, max = X ms, mean = X ms, median = X ms, percentile(90%) = X ms``
(the percentiles listed are the ones asked with ``--percentile``; older builds print 99%
only). ``--exportTimes`` writes one JSON record per inference; it is what edgeprune uses
for its own percentile table, so a Jetson is summarized exactly like every other target.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# The metric lines of the summary and the keys they get in the report.
METRICS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_LOG_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")  # "[07/02/2026-03:47:08] [I] " and "[TRT] "
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*"
                   r"([-+0-9.eE]+|inf|nan)\s*ms")
_BANNER = re.compile(r"\[TensorRT v(\d{4,8})\]")
_DOTTED = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)+)")
_DLA_LAYER = re.compile(r"\[DlaLayer\]\s*(.+?)\s*$")
_GPU_LAYER = re.compile(r"\[GpuLayer\]\s*(.+?)\s*$")
_FALLBACK = (
    re.compile(r"Layer '(.+)' \(([A-Z_0-9]+)\): Unsupported on DLA\. Switching this layer's "
               r"device type to GPU"),
    re.compile(r"Default DLA is enabled but layer (\S+) is not running on DLA, falling back "
               r"to GPU"),
)


class TrtexecParseError(ValueError):
    """trtexec output without the part we need (e.g. it failed before the summary)."""


@dataclass
class Summary:
    """The numbers of one ``=== Performance summary ===`` block (times in ms)."""

    throughput_qps: float
    metrics: dict[str, dict[str, float]]
    total_host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    queries: int | None = None
    warnings: list[str] = field(default_factory=list)
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "throughput_qps": self.throughput_qps,
            **self.metrics,
            "total_host_walltime_s": self.total_host_walltime_s,
            "total_gpu_compute_s": self.total_gpu_compute_s,
            "queries": self.queries,
            "warnings": self.warnings,
            "passed": self.passed,
        }


def _strip(line: str) -> str:
    """A log line without its timestamp and severity tags."""
    return _LOG_PREFIX.sub("", line.rstrip())


def _stats(text: str) -> dict[str, float]:
    """``min = .. ms, ..., percentile(99%) = .. ms`` -> {min, max, mean, p50, p99, ...}."""
    out: dict[str, float] = {}
    for key, pct, value in _STAT.findall(text):
        if key == "median":
            name = "p50"
        elif pct:
            name = "p" + (pct[:-2] if pct.endswith(".0") else pct).replace(".", "_")
        else:
            name = key
        out[name] = float(value)
    return out


def decode_banner(code: str) -> str:
    """trtexec's packed version: ``v101600`` -> 10.16.0, ``v8602`` -> 8.6.2."""
    n = int(code)
    if n >= 100000:  # TensorRT >= 10: MMmmpp
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"  # TensorRT <= 9: Mmpp


def parse_version(text: str) -> str | None:
    """TensorRT version from ``TensorRT version: X.Y.Z`` or the ``[TensorRT vN]`` banner."""
    dotted = _DOTTED.search(text)
    if dotted:
        return dotted.group(1)
    banner = _BANNER.search(text)
    return decode_banner(banner.group(1)) if banner else None


def major_version(version: str) -> int:
    """``10.3.0`` -> 10."""
    return int(version.split(".")[0])


def parse_device(text: str) -> dict[str, str]:
    """The GPU trtexec ran on: ``Selected Device`` and ``Compute Capability`` lines."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = _strip(raw)
        if line.startswith("Selected Device:"):
            out["name"] = line.split(":", 1)[1].strip()
        elif line.startswith("Compute Capability:"):
            out["compute_capability"] = line.split(":", 1)[1].strip()
    return out


def parse_summary(text: str) -> Summary:
    """The performance summary of a trtexec run; raises when there is none."""
    lines = [_strip(raw) for raw in text.splitlines()]
    try:
        start = next(i for i, line in enumerate(lines) if line == "=== Performance summary ===")
    except StopIteration:
        raise TrtexecParseError("no '=== Performance summary ===' in trtexec output") from None
    throughput: float | None = None
    metrics: dict[str, dict[str, float]] = {}
    summary = Summary(throughput_qps=0.0, metrics=metrics)
    for line in lines[start + 1:]:
        if line.startswith("Throughput:"):
            throughput = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("Total Host Walltime:"):
            summary.total_host_walltime_s = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("Total GPU Compute Time:"):
            summary.total_gpu_compute_s = float(line.split(":", 1)[1].split()[0])
        elif line.startswith("* "):
            summary.warnings.append(line[2:])
        elif ":" in line and line.split(":", 1)[0] in METRICS:
            name, rest = line.split(":", 1)
            metrics[METRICS[name]] = _stats(rest)
        elif line.startswith("&&&& "):
            break
    if throughput is None or "latency" not in metrics:
        raise TrtexecParseError("trtexec performance summary has no Throughput/Latency lines")
    summary.throughput_qps = throughput
    queries = re.search(r"Timing trace has (\d+) queries", text)
    summary.queries = int(queries.group(1)) if queries else None
    if "&&&& PASSED" in text:
        summary.passed = True
    elif "&&&& FAILED" in text:
        summary.passed = False
    return summary


def parse_layer_placement(text: str) -> dict[str, list[str]]:
    """Layers TensorRT put on the DLA and on the GPU (the build log's INFO lists), plus the
    layers it explicitly moved from DLA to GPU (warnings)."""
    dla, gpu, moved = [], [], []
    for line in text.splitlines():  # not stripped: the [DlaLayer] tag is a bracket too
        if m := _DLA_LAYER.search(line):
            dla.append(m.group(1))
        elif m := _GPU_LAYER.search(line):
            gpu.append(m.group(1))
        else:
            for pattern in _FALLBACK:
                if m := pattern.search(line):
                    moved.append(m.group(1))
    return {"dla": dla, "gpu": gpu, "moved_to_gpu": moved}


def dla_audit(placement: dict[str, list[str]]) -> dict[str, Any]:
    """What a DLA build really did: DLA subgraphs, and every layer that fell back to the GPU
    (in a DLA build, anything listed on the GPU is a fallback)."""
    fallback = list(dict.fromkeys(placement["gpu"] + placement["moved_to_gpu"]))
    return {
        "dla_subgraphs": len(placement["dla"]),
        "gpu_fallback_layers": fallback,
        "gpu_fallback_count": len(fallback),
        "fully_on_dla": bool(placement["dla"]) and not fallback,
    }


def parse_export_times(payload: str) -> dict[str, list[float]]:
    """``--exportTimes`` JSON (one record per inference, keys as printed by
    sampleReporting.cpp: latencyMs, computeMs, h2dMs, d2hMs, startEnqMs/endEnqMs)."""
    try:
        records = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise TrtexecParseError(f"--exportTimes file is not JSON: {exc}") from exc
    if not isinstance(records, list) or not records:
        raise TrtexecParseError("--exportTimes file holds no inference records")
    out: dict[str, list[float]] = {"latency": [], "gpu_compute": [], "h2d": [], "d2h": [],
                                   "enqueue": []}
    for rec in records:
        try:
            out["latency"].append(float(rec["latencyMs"]))
            out["gpu_compute"].append(float(rec["computeMs"]))
            out["h2d"].append(float(rec.get("h2dMs", 0.0)))
            out["d2h"].append(float(rec.get("d2hMs", 0.0)))
            out["enqueue"].append(float(rec["endEnqMs"]) - float(rec["startEnqMs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TrtexecParseError(f"--exportTimes record without {exc}: {rec}") from exc
    return out
