"""The human reports (report.html, summary.md) and the report comparison, on one real run:
the shipped Fashion-MNIST CNN pruned, ternary-quantized and compiled for openvino-cpu.

The HTML page must need no network at all: checked in the text, and in Debian's chromium
(rendered DOM, a screenshot, and a net log of everything the browser fetched). The chromium
tests skip when `chromium` is not on PATH (.ci/run installs it)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgeprune.errors import InputError
from edgeprune.report.compare import (
    compare_reports,
    comparison_markdown,
    load_report,
    print_comparison,
)
from edgeprune.report.html import (
    CSP,
    pareto_front,
    render_html,
    render_summary_md,
    write_human_reports,
)
from tests.conftest import FASHION_ARGS, REPO, run_cli

COMPILE_ARGS = [
    "--arch", "fashion_cnn", *FASHION_ARGS, "--eval-limit", "300", "--calib-size", "100",
    "--iterations", "100", "--prune", "l1", "--prune-ratio", "0.3", "--recover-steps", "5",
    "--recover-batch", "32",
    "--sensitivity-samples", "100", "--quant", "ternary", "--quant-steps", "5",
    "--max-drop", "100", "--target", "openvino-cpu",
]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, fashion_ckpt: Path,
            fashion_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("report-html") / "run"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_dir, *COMPILE_ARGS,
                     "--out", out, "--json")
    assert result.code == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture(scope="session")
def written(report: dict[str, Any], run_dir: Path) -> dict[str, str]:
    return write_human_reports(report, run_dir)


def _search(report: dict[str, Any]) -> dict[str, Any]:
    """A search block in the report's shape: made-up trials around the real baseline."""
    pct, base = report["budget"]["percentile"], report["baseline"]["accuracy"]
    trials = []
    for i, (acc, lat, ok) in enumerate([(base - 0.4, 0.20, True), (base - 1.5, 0.10, True),
                                        (base - 6.0, 0.05, False), (base - 0.2, 0.40, False),
                                        (base - 3.0, 0.30, False)]):
        trials.append({"name": f"trial-{i}", "accuracy": acc, "accuracy_drop": base - acc,
                       "latency_ms": {"p50": lat * 0.8, "p90": lat, "p99": lat * 1.5,
                                      pct: lat},
                       "within_budget": ok, "chosen": i == 1, "precision": "int8",
                       "flops_reduction": 0.1 * i or None, "status": "measured"})
    # a failed candidate has no accuracy or latency (edgeprune.search.Trial.row)
    trials.append({"name": "trial-failed", "within_budget": False, "chosen": False,
                   "precision": "ternary", "flops_reduction": 0.5, "status": "failed",
                   "error": "parity <check>", "seconds": 1.0})
    return {"trials": trials, "chosen": "trial-1", "why": "fastest trial within budget",
            "seconds": 42.0, "trials_run": len(trials)}


class _Svgs(HTMLParser):
    """Collects the aria-labels of <svg class="plot"> and every attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[str] = []
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(k, v or "") for k, v in attrs]
        d = dict(attrs)
        if tag == "svg" and d.get("class") == "plot":
            self.plots.append(d.get("aria-label") or "")


def _plots(html: str) -> list[str]:
    parser = _Svgs()
    parser.feed(html)
    return parser.plots


# --------------------------------------------------------------------------- HTML (text)

def test_html_is_self_contained(report: dict[str, Any], written: dict[str, str]) -> None:
    html = Path(written["html"]).read_text(encoding="utf-8")
    low = html.lower()
    for needle in ("http://", "https://", "//www.", "<script", "<link", "<iframe", "<img",
                   " src=", " href=", "url(", "@import", "xmlns"):
        assert needle not in low, needle
    csp = CSP.replace("'", "&#x27;")
    assert f'<meta http-equiv="Content-Security-Policy" content="{csp}">' in html
    assert CSP == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    # the verdict comes first, big, in the run's colour, with the budget
    word = "PASSED" if report["passed"] else "MISSED"
    assert re.search(r'<section class="verdict (passed|missed)" id="verdict"><div '
                     rf'class="word">{word}</div>', html)
    assert "top-1 drop ≤ 100 pts" in html
    order = [html.index(s) for s in (
        'id="verdict"', "<h2>Baseline vs final", "<h2>Accuracy vs latency",
        "<h2>Latency distributions", "<h2>Pruning", "<h2>Quantization",
        "<h2>Accuracy by stage", "<h2>Stages", "<details><summary>environment")]
    assert order == sorted(order)
    # plots: Pareto (baseline and final), both latency histograms, accuracy waterfall
    plots = _plots(html)
    assert any(p.startswith("top-1 accuracy vs") for p in plots)
    assert "latency distributions, baseline and final" in plots
    assert "top-1 accuracy after each stage" in plots
    assert "baseline: 100 iterations" in html and "final: 100 iterations" in html
    assert "ran as" in html and report["final"]["runtime"]["effective_precision"] in html
    for layer in report["pruning"]["channels"]:
        assert f"<td>{layer}</td>" in html
    assert ">ternary</span>" in html and "packed artifact" in html


def test_no_leftover_temp_files(run_dir: Path, written: dict[str, str]) -> None:
    assert written == {"html": str(run_dir / "report.html"),
                       "summary": str(run_dir / "summary.md")}
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_html_escapes_everything(report: dict[str, Any]) -> None:
    evil = copy.deepcopy(report)
    evil["passed"] = False
    evil["verdict"]["reasons"] = ['<script>alert("x")</script> & more']
    evil["model"]["arch"] = "<b>arch</b>"
    evil["pruning"]["channels"] = {"<img src=x>": [8, 4]}
    evil["stages"][0]["summary"] = "</td></tr></table><script>"
    html = render_html(evil, None)
    assert "<script" not in html and "<img" not in html and "<b>arch" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in html
    assert '<div class="word">MISSED</div>' in html
    assert "no per-iteration samples" in html   # samples None: no histograms
    assert "latency distributions, baseline and final" not in _plots(html)


def test_html_search_pareto(report: dict[str, Any]) -> None:
    rep = copy.deepcopy(report)
    rep["search"] = _search(rep)
    rep["budget"]["latency_ms"], rep["budget"]["max_drop"] = 0.25, 2.0
    pct = rep["budget"]["percentile"]
    html = render_html(rep, None)
    assert "chosen: trial-1" in html                   # highlighted in the plot
    assert '<tr class=chosen><td>trial-1</td>' in html  # and in the trials table
    assert "Pareto front" in html and "<path d=\"M " in html
    floor = rep["baseline"]["accuracy"] - 2.0
    assert f"accuracy floor {floor:.2f}%" in html and f"budget {pct} ≤ 0.25 ms" in html
    assert f"not plotted (no {pct} latency): trial-failed" in html
    assert "failed: parity &lt;check&gt;" in html
    assert set(re.findall(r"<title>(trial-\w+):", html)) == {f"trial-{i}" for i in range(5)}


def test_pareto_front() -> None:
    pts = [(0.3, 90.0), (0.1, 80.0), (0.2, 85.0), (0.25, 84.0), (0.1, 70.0), (0.4, 89.0)]
    assert pareto_front(pts) == [(0.1, 80.0), (0.2, 85.0), (0.3, 90.0)]


def test_samples_found_when_the_run_folder_moved(report: dict[str, Any], run_dir: Path,
                                                 tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(run_dir / "08-profile", moved / "08-profile")
    rep = copy.deepcopy(report)
    for stage in rep["stages"]:
        stage["dir"] = str(tmp_path / "gone" / Path(stage["dir"]).name)
    paths = write_human_reports(rep, moved)
    assert "latency distributions, baseline and final" in _plots(
        Path(paths["html"]).read_text())


# --------------------------------------------------------------------------- summary.md

def test_summary_md(report: dict[str, Any], run_dir: Path, written: dict[str, str]) -> None:
    md = Path(written["summary"]).read_text(encoding="utf-8")
    first = md.splitlines()[0]
    assert first.startswith("## ✅ PASSED" if report["passed"] else "## ❌ MISSED")
    assert "openvino-cpu" in first
    assert "|  | baseline | final | change |" in md
    assert f"| top-1 (%) | {report['baseline']['accuracy']:.2f} (pytorch) |" in md
    for row in ("| latency p50 (ms) |", "| artifact size |", "| ran as |"):
        assert row in md
    assert "### Accuracy by stage" in md and "| prune |" in md
    assert "### Search trials" not in md
    assert f"`{run_dir}`" in md and "`report.html`" in md and "`report.json`" in md

    rep = copy.deepcopy(report)
    rep["search"] = _search(rep)
    md = render_summary_md(rep)
    assert "### Search trials" in md and "| **trial-1** |" in md
    assert "chosen: **trial-1** — fastest trial within budget" in md


# --------------------------------------------------------------------------- chromium

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not on PATH (apt-get install chromium; .ci/run does)")
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Debian chromium with its own HOME and profile (root needs --no-sandbox)."""
    home, profile = tmp / "home", tmp / "profile"
    home.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--no-default-browser-check", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp,
                          env={**os.environ, "HOME": str(home)}, check=False)


def _netlog(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:   # a log whose writer was cut off: close the events list
        return json.loads(text.rstrip().rstrip(",") + "]}")


def page_requests(netlog: dict[str, Any]) -> list[str]:
    """Network URLs in a chromium net log that chromium did not fetch for itself.

    Chromium fetches things of its own even headless and with background networking off
    (network time, component updates, account checks): those are URL_REQUESTs whose
    ``initiator`` is "not an origin", with no file:// network isolation key. A request
    made by a page carries the page's origin as initiator ("null" for a file:// page) and a
    file:// isolation key. Every http(s)/ws(s)/ftp URL the log mentions anywhere (any event,
    any ``*url`` parameter) must belong to one of chromium's own requests."""
    types = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    own, seen, page = set(), set(), set()

    def urls(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if (isinstance(value, str) and key.lower().endswith("url")
                        and value.split(":", 1)[0].lower() in NETWORK_SCHEMES):
                    seen.add(value)
                urls(value)
        elif isinstance(obj, list):
            for value in obj:
                urls(value)

    for event in netlog["events"]:
        params = event.get("params") or {}
        urls(params)
        if types.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params:
            internal = (params.get("initiator") == "not an origin"
                        and "file://" not in str(params.get("network_isolation_key", "")))
            (own if internal else page).add(params["url"])
    return sorted((seen - own) | {u for u in page
                                  if u.split(":", 1)[0].lower() in NETWORK_SCHEMES})


@needs_chromium
def test_chromium_renders_without_network(report: dict[str, Any], written: dict[str, str],
                                          tmp_path: Path) -> None:
    netlog = tmp_path / "netlog.json"
    proc = _chromium(tmp_path, f"--log-net-log={netlog}", "--net-log-capture-mode=Everything",
                     "--dump-dom", Path(written["html"]).as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    word = "PASSED" if report["passed"] else "MISSED"
    assert f'<div class="word">{word}</div>' in dom
    plots = _plots(dom)
    assert len(plots) == 3, plots
    assert dom.count("<svg") >= 3 + len(report["pruning"]["channels"])  # + inline bars
    log = _netlog(netlog)
    assert log["events"], "empty net log"
    assert page_requests(log) == []


@needs_chromium
def test_netlog_check_sees_a_page_request(tmp_path: Path) -> None:
    """The check above is not vacuous: a page that loads an http image is caught."""
    page = tmp_path / "control.html"
    probe = "http://127.0.0.1:9/edgeprune-probe.png"
    page.write_text(f'<!DOCTYPE html><html><body><img src="{probe}"><p>control</p>'
                    "</body></html>")
    netlog = tmp_path / "netlog.json"
    proc = _chromium(tmp_path, f"--log-net-log={netlog}", "--net-log-capture-mode=Everything",
                     "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert page_requests(_netlog(netlog)) == [probe]


@needs_chromium
def test_chromium_screenshot(report: dict[str, Any], written: dict[str, str],
                             tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                     "--hide-scrollbars", Path(written["html"]).as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
        top = rgb.crop((0, 0, 1280, 400))
        want = (0x1A, 0x7F, 0x37) if report["passed"] else (0xCF, 0x22, 0x2E)
        verdict_px = sum(n for n, c in top.getcolors(1 << 20)
                         if all(abs(a - b) <= 12 for a, b in zip(c, want, strict=True)))
        assert verdict_px > 20_000          # the big verdict box is painted
        assert len(rgb.getcolors(1 << 20)) > 200   # text, tables and plots, not a blank page


# --------------------------------------------------------------------------- compare

def _worse(report: dict[str, Any], drop: float = 2.0, slower: float = 1.5) -> dict[str, Any]:
    b = copy.deepcopy(report)
    b["final"]["accuracy"] -= drop
    for p in ("p50", "p90", "p99"):
        if b["final"]["latency_ms"][p] is not None:
            b["final"]["latency_ms"][p] *= slower
    return b


def test_compare_against_itself_passes(report: dict[str, Any]) -> None:
    result = compare_reports(report, report, 0.5, 0.10, None)
    assert result["passed"] and result["regressions"] == []
    assert result["accuracy_change"] == 0 and result["latency_ratio"] == pytest.approx(1)
    assert result["size_ratio"] == 1 and result["same_target"] and result["same_precision"]
    assert result["percentile"] == report["budget"]["percentile"]
    json.dumps(result)   # --json prints it


def test_compare_reports_both_regressions(report: dict[str, Any]) -> None:
    result = compare_reports(report, _worse(report), 0.5, 0.10, None)
    assert not result["passed"]
    assert len(result["regressions"]) == 2
    acc, lat = result["regressions"]
    assert "2.00 points below the reference" in acc and "allowed: 0.5" in acc
    pct = report["budget"]["percentile"]
    assert f"{pct} latency" in lat and "50.0% above the reference" in lat
    assert result["accuracy_change"] == pytest.approx(-2.0)
    assert result["latency_change"] == pytest.approx(0.5)

    console = Console(record=True, width=140)
    print_comparison(result, console)
    text = console.export_text()
    assert "REGRESSION" in text and "50.0% above" in text and "top-1 (%)" in text
    md = comparison_markdown(result)
    assert md.startswith("## ❌ REGRESSION") and "| top-1 (%) |" in md and acc in md

    # within the thresholds: passes; p99 chosen explicitly
    assert compare_reports(report, _worse(report, 0.4, 1.05), 0.5, 0.10, None)["passed"]
    assert compare_reports(report, _worse(report, 0.0, 1.5), 0.5, 0.10, "p99")[
        "regressions"][0].startswith("p99 latency")
    # a faster, more accurate candidate is not a regression
    better = compare_reports(report, _worse(report, -1.0, 0.5), 0.5, 0.10, None)
    assert better["passed"]
    assert comparison_markdown(better).startswith("## ✅ no regression")


def test_compare_percentile_mismatch(report: dict[str, Any]) -> None:
    other = copy.deepcopy(report)
    other["budget"]["percentile"] = "p99" if report["budget"]["percentile"] != "p99" else "p50"
    with pytest.raises(InputError, match="different latency percentiles"):
        compare_reports(report, other, 0.5, 0.1, None)
    assert compare_reports(report, other, 0.5, 0.1, "p90")["percentile"] == "p90"
    unmeasured = copy.deepcopy(report)
    unmeasured["final"]["latency_ms"]["p99"] = None
    with pytest.raises(InputError, match="no p99 latency"):
        compare_reports(report, unmeasured, 0.5, 0.1, "p99")


def test_load_report(run_dir: Path, tmp_path: Path) -> None:
    assert load_report(run_dir)["final"] == load_report(run_dir / "report.json")["final"]
    with pytest.raises(InputError, match="does not exist") as missing:
        load_report(tmp_path / "nowhere")
    assert missing.value.fix and missing.value.exit_code == 2
    with pytest.raises(InputError, match=r"folder without report\.json"):
        load_report(tmp_path)
    with pytest.raises(InputError, match="not an edgeprune report"):
        load_report(run_dir / "10-verdict" / "metrics.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_report(bad)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"schema_version": "2.0"}))
    with pytest.raises(InputError, match=r"schema_version 2\.0"):
        load_report(future)


def test_schema_accepts_search(report: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads((REPO / "edgeprune" / "report" / "report.schema.json").read_text())
    rep = copy.deepcopy(report)
    jsonschema.validate(rep, schema)          # no "search": still valid
    rep["search"] = None
    jsonschema.validate(rep, schema)
    rep["search"] = _search(report)
    jsonschema.validate(rep, schema)
    rep["search"]["trials"][0]["within_budget"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rep, schema)


def test_html_sparse_report(report: dict[str, Any]) -> None:
    """A run without pruning, quantization or p90/p99 (fewer than 100 iterations) and with
    fields an older report lacks still renders."""
    rep = copy.deepcopy(report)
    rep["pruning"] = rep["quantization"] = None
    for side in ("baseline", "final"):
        rep[side]["latency_ms"]["p90"] = rep[side]["latency_ms"]["p99"] = None
    rep["budget"].update(percentile="p99", latency_ms=1.0)
    rep["verdict"]["latency_measured_ms"] = None
    for key in ("accuracy_by_stage", "stages", "environment", "speedup"):
        rep.pop(key)
    samples = {"final_ms": [0.1, 0.12, 0.11], "baseline_ms": []}
    html = render_html(rep, samples)
    assert "no pruning in this run" in html and "no per-layer quantization" in html
    assert "nothing to plot: no latency at p99 was measured" in html
    assert "latency distributions, baseline and final" in _plots(html)
    assert "final: 3 iterations" in html and "baseline: 0 iterations" not in html
    md = render_summary_md(rep)
    assert "| latency p99 (ms) | n/a | n/a |" in md


def test_compile_writes_the_human_reports(run_dir: Path) -> None:
    """`compile` itself leaves report.html and summary.md next to report.json."""
    html = (run_dir / "report.html").read_text()
    assert "<svg" in html and "http://" not in html and "https://" not in html
    assert "PASSED" in (run_dir / "summary.md").read_text()


def test_report_command_gates_regressions(run_dir: Path, report: dict[str, Any],
                                          tmp_path: Path) -> None:
    """`edgeprune report A B`: 0 against itself, 3 on a regression (with the reasons and
    a markdown summary), 2 on a file that is not a report."""
    same = run_cli("report", run_dir, run_dir / "report.json", "--json")
    assert same.code == 0, same.stderr
    assert json.loads(same.stdout)["passed"] is True
    worse = copy.deepcopy(report)
    worse["final"]["accuracy"] -= 2.0
    worse["final"]["latency_ms"] = {k: (v * 1.5 if isinstance(v, float) and k != "throughput_fps"
                                        else v) for k, v in worse["final"]["latency_ms"].items()}
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    md = tmp_path / "summary.md"
    regressed = run_cli("report", run_dir, tmp_path / "worse.json", "--max-accuracy-drop",
                        "0.5", "--max-latency-increase", "0.1", "--markdown", md)
    assert regressed.code == 3, regressed.stderr
    assert "REGRESSION" in regressed.stdout and md.read_text().strip()
    (tmp_path / "not-a-report.json").write_text("{}")
    bad = run_cli("report", run_dir, tmp_path / "not-a-report.json")
    assert bad.code == 2 and "Traceback" not in bad.stderr
