"""The readable summary printed at the end of ``edgeprune compile``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from edgeprune.metrics import metric_heading, metric_name


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ratio(base: float, final: float, invert: bool = False) -> str:
    if not base or not final:
        return ""
    r = base / final if not invert else final / base
    return f"{r:.2f}x"


def print_summary(report: dict[str, Any], console: Console) -> None:
    b, f = report["baseline"], report["final"]
    table = Table(title=f"edgeprune: {report['model']['arch']} on {report['target']['name']}",
                  title_justify="left")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("final", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(metric_heading(report), f"{b['accuracy']:.2f} ({b['accuracy_runtime']})",
                  f"{f['accuracy']:.2f} ({f['accuracy_runtime']})",
                  f"{-report['verdict']['accuracy_drop']:+.2f} pts")
    for p in ("p50", "p90", "p99"):
        table.add_row(f"latency {p} (ms)", _ms(b["latency_ms"][p]), _ms(f["latency_ms"][p]),
                      _ratio(b["latency_ms"][p] or 0, f["latency_ms"][p] or 0))
    table.add_row("throughput (img/s)", f"{b['latency_ms']['throughput_fps']:.0f}",
                  f"{f['latency_ms']['throughput_fps']:.0f}", "")
    table.add_row("FLOPs", f"{b['flops'] / 1e6:.2f} M", f"{f['flops'] / 1e6:.2f} M",
                  _ratio(b["flops"], f["flops"]))
    table.add_row("params", f"{b['params']:,}", f"{f['params']:,}",
                  _ratio(b["params"], f["params"]))
    table.add_row("artifact size", _size(b["size_bytes"]), _size(f["size_bytes"]),
                  _ratio(b["size_bytes"], f["size_bytes"]))
    table.add_row("precision (ran as)",
                  f"{b['precision']} ({b['runtime'].get('effective_precision', '?')})",
                  f"{f['precision']} ({f['runtime'].get('effective_precision', '?')})", "")
    console.print(table)
    quant = report.get("quantization")
    if quant:
        _print_quantization(quant, console)
    if report.get("search"):
        _print_search(report["search"], report["budget"]["percentile"], console,
                      metric_heading(report))
    budget = report["budget"]
    goal = (f", {budget['percentile']} <= {budget['latency_ms']} ms"
            if budget["latency_ms"] is not None else "")
    if report["passed"]:
        console.print(f"[bold green]PASSED[/bold green] budget: drop <= {budget['max_drop']} "
                      f"pts{goal}")
    else:
        console.print(f"[bold red]MISSED[/bold red] budget: drop <= {budget['max_drop']} "
                      f"pts{goal}")
        for reason in report["verdict"]["reasons"]:
            console.print(f"  - {reason}")


def _print_search(search: dict[str, Any], percentile: str, console: Console,
                  heading: str = "top-1 (%)") -> None:
    """Every candidate the search measured, the chosen one marked."""
    table = Table(title=f"search: {search['trials_run']} candidates in "
                  f"{search['seconds']:.0f} s", title_justify="left")
    for col in ("", "candidate", heading, "drop", f"{percentile} (ms)", "ran as",
                "budget"):
        table.add_column(col, justify="left" if col in ("", "candidate", "ran as") else "right")
    for t in search["trials"]:
        if t.get("accuracy") is None:
            table.add_row("", t["name"], "", "", "", "", t["status"] + (
                f": {t['error']}" if t.get("error") else ""))
            continue
        table.add_row("→" if t["chosen"] else "", t["name"], f"{t['accuracy']:.2f}",
                      f"{t['accuracy_drop']:.2f}", _ms(t["latency"]), str(t.get("ran_as")),
                      "met" if t["within_budget"] else "missed")
    console.print(table)
    console.print(search["why"])


def _print_quantization(quant: dict[str, Any], console: Console) -> None:
    """Per-layer precision and the packed artifact of a ternary run."""
    table = Table(title=f"weights: {quant['method']} ternary, per layer", title_justify="left")
    for col in ("layer", "precision", "weights", "zeros"):
        table.add_column(col, justify="left" if col in ("layer", "precision") else "right")
    for row in quant["layers"]:
        table.add_row(row["layer"], row["precision"], f"{row['weights']:,}",
                      f"{row['zero_fraction']:.0%}")
    console.print(table)
    packed = quant["packed"]
    console.print(
        f"packed artifact: {_size(packed['bytes'])} ({packed['ratio_vs_fp32_onnx']:.1f}x "
        f"smaller than the dense FP32 ONNX, round trip exact); OpenVINO ran convolutions as "
        f"{quant.get('openvino_convolution_precisions')}")


def print_prune_summary(summary: dict[str, Any], console: Console) -> None:
    """Per-layer channels before/after and what pruning cost, for `edgeprune prune`."""
    table = Table(title=f"pruned with {summary['criterion']} ({summary['allocation']})",
                  title_justify="left")
    table.add_column("layer")
    table.add_column("channels", justify="right")
    for name, (before, after) in summary["channels"].items():
        mark = "" if before == after else f" (-{1 - after / before:.0%})"
        table.add_row(name, f"{before} → {after}{mark}")
    console.print(table)
    recovered = summary["accuracy_recovered"]
    unit = "%" if metric_name(summary) == "top-1" else ""
    console.print(
        f"FLOPs {summary['flops_before'] / 1e6:.2f} M → {summary['flops_after'] / 1e6:.2f} M "
        f"(-{summary['flops_reduction']:.1%}), params {summary['params_before']:,} → "
        f"{summary['params_after']:,} (-{summary['params_reduction']:.1%})\n"
        f"{metric_name(summary)} after pruning {summary['accuracy_pruned']:.2f}{unit}"
        + (f", after recovery {recovered:.2f}{unit}" if recovered is not None else "")
        + f" on {summary['accuracy_samples']} evaluation images\nsaved {summary['model']}"
    )
    if summary.get("latency"):
        from edgeprune.report.allocation import latency_lines, saved_rows

        for line in latency_lines(summary["latency"], summary["flops_reduction"]):
            console.print(line)
        console.print("measured saving per group: " + ", ".join(
            f"{name} → {kept} ({ms:+.3f} ms)" for name, kept, ms in saved_rows(
                summary["latency"])))
