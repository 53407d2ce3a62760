"""Compare two compile runs: is candidate B a regression against reference A?

``edgeprune report A B [--max-accuracy-drop PTS] [--max-latency-increase FRACTION]
[--percentile p50|p90|p99] [--json]`` where A and B are each a run's output folder (the
``--out`` of ``edgeprune compile``) or its ``report.json``:

- top-1 of B's final model may be at most ``--max-accuracy-drop`` points below A's;
- B's final latency at the percentile may be at most ``--max-latency-increase`` (a
  fraction: 0.10 = 10 %) above A's. The percentile defaults to the reports' budget
  percentile; when A and B were run with different ones, give ``--percentile``.

Size, FLOPs, params, precision and target are reported side by side but never fail the
comparison. Exit codes: **0** no regression, **3** regression (the reasons are printed, and
listed under ``regressions`` with ``--json``), **2** bad input (a missing file, a file that
is not an edgeprune report, percentiles that do not match or latency not measured at the
percentile). A CI job runs it after ``compile`` to fail on a regression against a
reference report kept in the repository.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeprune.errors import InputError

PERCENTILES = ("p50", "p90", "p99")


def _schema_version() -> str:
    schema = json.loads((resources.files("edgeprune.report") / "report.schema.json")
                        .read_text())
    return schema["properties"]["schema_version"]["const"]


def load_report(path: Path) -> dict[str, Any]:
    """Read a report from a run folder (its report.json) or a report.json file; raise
    InputError when there is none or it is not an edgeprune report this version reads.
    The file read is kept under the extra key ``_source`` (shown by print_comparison)."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        where = (f"{path} is a folder without report.json" if path.is_dir()
                 else f"{path} does not exist")
        raise InputError(f"no edgeprune report: {where}",
                         fix="pass the --out folder of an `edgeprune compile` run, or the "
                             "report.json in it")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{file} is not readable JSON: {exc}",
                         fix="pass the report.json written by `edgeprune compile`") from exc
    if not isinstance(report, dict) or "schema_version" not in report:
        raise InputError(f"{file} is not an edgeprune report (it has no schema_version)",
                         fix="pass the report.json written by `edgeprune compile`, not "
                             "another JSON file (e.g. a stage's metrics.json)")
    expected = _schema_version()
    version = str(report["schema_version"])
    if version.split(".")[0] != expected.split(".")[0]:
        raise InputError(f"{file} has report schema_version {version}; this edgeprune reads "
                         f"{expected}",
                         fix="compare reports written by the same major edgeprune version, or "
                             "re-run the reference with this version")
    missing = [k for k in ("budget", "target", "baseline", "final") if
               not isinstance(report.get(k), dict)]
    missing += [f"final.{k}" for k in ("accuracy", "latency_ms")
                if isinstance(report.get("final"), dict) and k not in report["final"]]
    if missing:
        raise InputError(f"{file} is an incomplete edgeprune report (missing "
                         f"{', '.join(missing)})",
                         fix="pass a report.json written by a finished `edgeprune compile`")
    _check_fields(report, file)
    report.setdefault("_source", str(file))
    return report


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


# what the comparison reads, and the type it must have (None is allowed where noted)
_FIELDS: list[tuple[str, str]] = [
    ("final.accuracy", "number?"), ("final.latency_ms", "table?"),
    ("final.accuracy_samples", "integer?"), ("final.size_bytes", "integer?"),
    ("final.flops", "integer?"), ("final.params", "integer?"),
    ("final.precision", "string?"), ("final.accuracy_runtime", "string?"),
    ("final.runtime", "table?"), ("final.runtime.effective_precision", "string?"),
    ("budget.percentile", "string?"), ("target.name", "string?"),
    ("target.backend", "string?"), ("model", "table?"), ("model.arch", "string?"),
    ("environment", "table?"), ("environment.commit", "string?"),
    ("environment.cpu", "string?"), ("data", "table?"), ("data.eval", "table?"),
    ("data.eval.ids_sha256", "string?"), ("passed", "boolean?"),
    ("created_at", "string?"),
] + [(f"final.latency_ms.{p}", "number?") for p in PERCENTILES]


def _check_fields(report: dict[str, Any], file: Path) -> None:
    checks = {"number": _number,
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "string": lambda v: isinstance(v, str), "table": lambda v: isinstance(v, dict),
              "boolean": lambda v: isinstance(v, bool)}
    for dotted, kind in _FIELDS:
        value: Any = report
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and kind.endswith("?"):
            continue
        if not checks[kind.rstrip("?")](value):
            want = {"number": "a finite number", "integer": "a non-negative integer",
                    "string": "a string", "table": "an object",
                    "boolean": "true or false"}[kind.rstrip("?")]
            raise InputError(
                f"{file}: {dotted} is {json.dumps(value)[:60]}, not {want}",
                fix="pass a report.json as `edgeprune compile` wrote it (this one was edited "
                "or damaged); re-run the compile to get a new one")


def _side(report: dict[str, Any], percentile: str) -> dict[str, Any]:
    f = report["final"]
    return {
        "source": report.get("_source"),
        "created_at": report.get("created_at"),
        "commit": (report.get("environment") or {}).get("commit"),
        "arch": (report.get("model") or {}).get("arch"),
        "target": report["target"].get("name"),
        "backend": report["target"].get("backend"),
        "accuracy": f.get("accuracy"),
        "accuracy_runtime": f.get("accuracy_runtime"),
        "eval_images": f.get("accuracy_samples"),
        "latency_ms": (f.get("latency_ms") or {}).get(percentile),
        "size_bytes": f.get("size_bytes"),
        "flops": f.get("flops"),
        "params": f.get("params"),
        "precision": f.get("precision"),
        "effective_precision": (f.get("runtime") or {}).get("effective_precision"),
        "passed": report.get("passed"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def compare_reports(a: dict[str, Any], b: dict[str, Any], max_accuracy_drop: float,
                    max_latency_increase: float, percentile: str | None = None
                    ) -> dict[str, Any]:
    """Candidate ``b`` against reference ``a`` (both report.json dicts). Ratios are B / A;
    ``accuracy_change`` is B − A in top-1 points. ``passed`` is true with no regressions."""
    for flag, value in (("--max-accuracy-drop", max_accuracy_drop),
                        ("--max-latency-increase", max_latency_increase)):
        if not _number(value) or value < 0:
            raise InputError(f"{flag} {value} must be a finite number >= 0 (a NaN or negative "
                             "tolerance would disable or invert the check)",
                             fix="e.g. --max-accuracy-drop 0.5 --max-latency-increase 0.10")
    pa, pb = (r.get("budget", {}).get("percentile") for r in (a, b))
    if percentile is None:
        if pa != pb:
            raise InputError(f"the reports were checked at different latency percentiles "
                             f"(reference {pa}, candidate {pb})",
                             fix="choose the one to compare with --percentile p50|p90|p99")
        percentile = pa or "p50"
    if percentile not in PERCENTILES:
        raise InputError(f"unknown percentile {percentile!r}",
                         fix="use --percentile p50, p90 or p99")
    ref, cand = _side(a, percentile), _side(b, percentile)
    for name, side in (("reference", ref), ("candidate", cand)):
        if side["latency_ms"] is None:
            raise InputError(f"the {name} report has no {percentile} latency (measured with "
                             "too few iterations)",
                             fix="compare at --percentile p50, or profile with --iterations "
                                 "100 or more")
        if side["accuracy"] is None:
            raise InputError(f"the {name} report has no final top-1 accuracy",
                             fix="pass a report.json written by a finished compile run")

    acc_change = cand["accuracy"] - ref["accuracy"]
    lat_ratio = cand["latency_ms"] / ref["latency_ms"] if ref["latency_ms"] else None
    regressions = []
    if -acc_change > max_accuracy_drop + 1e-9:
        regressions.append(
            f"top-1 {cand['accuracy']:.2f}% is {-acc_change:.2f} points below the reference "
            f"{ref['accuracy']:.2f}% (allowed: {max_accuracy_drop:g})")
    if lat_ratio is not None and lat_ratio - 1 > max_latency_increase + 1e-9:
        regressions.append(
            f"{percentile} latency {cand['latency_ms']:.3f} ms is {lat_ratio - 1:.1%} above the "
            f"reference {ref['latency_ms']:.3f} ms (allowed: {max_latency_increase:.1%})")

    notes = []
    if ref["target"] != cand["target"]:
        notes.append(f"different targets: reference {ref['target']}, candidate "
                     f"{cand['target']}")
    if ref["precision"] != cand["precision"]:
        notes.append(f"different precisions: reference {ref['precision']}, candidate "
                     f"{cand['precision']}")
    ea, eb = (((r.get("data") or {}).get("eval") or {}).get("ids_sha256") for r in (a, b))
    if ea and eb and ea != eb:
        notes.append("top-1 was measured on different evaluation images (data.eval differs)")
    ca, cb = ((r.get("environment") or {}).get("cpu") for r in (a, b))
    if ca and cb and ca != cb:
        notes.append(f"latency was measured on different CPUs ({ca} vs {cb})")

    return {
        "passed": not regressions,
        "regressions": regressions,
        "notes": notes,
        "percentile": percentile,
        "thresholds": {"max_accuracy_drop": max_accuracy_drop,
                       "max_latency_increase": max_latency_increase},
        "reference": ref,
        "candidate": cand,
        "accuracy_change": acc_change,
        "latency_ratio": lat_ratio,
        "latency_change": None if lat_ratio is None else lat_ratio - 1,
        "size_ratio": _ratio(ref["size_bytes"], cand["size_bytes"]),
        "flops_ratio": _ratio(ref["flops"], cand["flops"]),
        "params_ratio": _ratio(ref["params"], cand["params"]),
        "same_target": ref["target"] == cand["target"],
        "same_precision": (ref["precision"], ref["effective_precision"]) ==
                          (cand["precision"], cand["effective_precision"]),
    }


def _rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, reference, candidate, change), plain text."""
    r, c, p = result["reference"], result["candidate"], result["percentile"]

    def ratio(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}x"

    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    return [
        ("target", str(r["target"]), str(c["target"]), "" if result["same_target"] else
         "differs"),
        ("top-1 (%)", num(r["accuracy"], ".2f"), num(c["accuracy"], ".2f"),
         f"{result['accuracy_change']:+.2f} pts"),
        (f"latency {p} (ms)", num(r["latency_ms"], ".3f"), num(c["latency_ms"], ".3f"),
         "" if result["latency_change"] is None else f"{result['latency_change']:+.1%}"),
        ("artifact size (bytes)", num(r["size_bytes"], ","), num(c["size_bytes"], ","),
         ratio(result["size_ratio"])),
        ("FLOPs / image", num(r["flops"], ","), num(c["flops"], ","),
         ratio(result["flops_ratio"])),
        ("params", num(r["params"], ","), num(c["params"], ","), ratio(result["params_ratio"])),
        ("precision (ran as)", f"{r['precision']} ({r['effective_precision']})",
         f"{c['precision']} ({c['effective_precision']})",
         "" if result["same_precision"] else "differs"),
    ]


def _verdict(result: dict[str, Any]) -> str:
    t = result["thresholds"]
    return (f"top-1 may drop ≤ {t['max_accuracy_drop']:g} pts, {result['percentile']} latency "
            f"may rise ≤ {t['max_latency_increase'] * 100:g}%")


def print_comparison(result: dict[str, Any], console: Console) -> None:
    """The comparison as a rich table, then OK or REGRESSION with the reasons."""
    table = Table(title="edgeprune report: candidate vs reference", title_justify="left")
    table.add_column("")
    table.add_column("reference", justify="right")
    table.add_column("candidate", justify="right")
    table.add_column("change", justify="right")
    for row in _rows(result):
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    console.print(f"reference: {escape(str(result['reference']['source'] or '?'))}\n"
                  f"candidate: {escape(str(result['candidate']['source'] or '?'))}",
                  highlight=False)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    if result["passed"]:
        console.print(f"[bold green]OK[/bold green] no regression ({_verdict(result)})")
    else:
        console.print(f"[bold red]REGRESSION[/bold red] ({_verdict(result)})")
        for reason in result["regressions"]:
            console.print(f"  - {escape(reason)}", highlight=False)


def _md(value: Any) -> str:
    return (str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\n", " "))


def comparison_markdown(result: dict[str, Any]) -> str:
    """GitHub-flavoured markdown of a comparison, for a CI job summary."""
    head = ("✅ no regression" if result["passed"] else "❌ REGRESSION")
    lines = [f"## {head} against the reference report", "", f"Allowed: {_verdict(result)}.",
             ""]
    lines += [f"- {_md(r)}" for r in result["regressions"]]
    if result["regressions"]:
        lines.append("")
    lines += ["| | reference | candidate | change |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _rows(result)]
    if result["notes"]:
        lines.append("")
        lines += [f"- note: {_md(n)}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
