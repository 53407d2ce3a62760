"""Human reports of a compile run: a self-contained ``report.html`` and a CI ``summary.md``.

The HTML page is one file that needs no network at all: inline CSS, plots drawn here as
inline SVG (no JavaScript, no fonts, images or links to anything outside the file), and a
Content-Security-Policy that forbids every fetch except ``data:`` images. It opens from a
CI artifact, an e-mail attachment or an air-gapped machine the same way.

``summary.md`` is GitHub-flavoured markdown for a CI job summary (``$GITHUB_STEP_SUMMARY``,
a GitLab merge-request artifact): the verdict, baseline vs final, accuracy by stage, the
search trials when there was a search, and where the HTML and JSON reports are.

Both read only ``report.json`` (schema: report.schema.json) and, for the latency
distributions, ``<profile stage dir>/latency_samples.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from edgeprune.metrics import metric_heading, metric_name

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# Colours: baseline blue, final orange; green / red for within / outside the budget.
BLUE, ORANGE, GREEN, RED = "#0969da", "#c4610b", "#1a7f37", "#cf222e"
GREY, INK = "#8c959f", "#1f2328"
PRECISION_COLOURS = {"ternary": "#8250df", "int8": "#0969da", "int4": "#1b7c83",
                     "fp16": "#bf8700", "bf16": "#bf8700", "fp32": "#57606a"}


# --------------------------------------------------------------------------- formatting

def _e(value: Any) -> str:
    """Escape anything for HTML text or an attribute value."""
    return escape(str(value), quote=True)


def _num(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _size(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(n: float | None) -> str:
    return "n/a" if n is None else f"{n:,.0f}"


def _mflops(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} M"


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def _signed(value: float | None, digits: int = 2, unit: str = " pts") -> str:
    if value is None:
        return "—"
    if round(value, digits) == 0:
        value = 0.0   # no "−0.00"
    return f"{value:+.{digits}f}{unit}".replace("-", "−")


def _smaller(base: float | None, final: float | None) -> str:
    """'2.10x smaller' / '1.20x larger' for sizes, FLOPs and params."""
    if not base or not final:
        return ""
    r = base / final
    if round(r, 2) == 1:
        return "same"
    return f"{r:.2f}x smaller" if r >= 1 else f"{1 / r:.2f}x larger"


def _faster(base: float | None, final: float | None) -> str:
    """Latency: baseline / final, in words."""
    if not base or not final:
        return ""
    r = base / final
    return f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower"


def _times(base: float | None, final: float | None) -> str:
    if not base or not final:
        return ""
    return f"{final / base:.2f}x"


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return default if d is None else d


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# --------------------------------------------------------------------------- SVG helpers

def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_label(value: float, step: float) -> str:
    """Enough decimals to tell ticks ``step`` apart (2.5 steps need one more)."""
    mag = math.floor(math.log10(step))
    extra = 1 if round(step / 10 ** mag, 6) == 2.5 else 0
    return f"{value:.{max(0, extra - mag)}f}"


@dataclass
class _Axis:
    lo: float
    hi: float
    p0: float   # pixel of lo
    p1: float   # pixel of hi
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) -
                                                          math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self, n: int = 6) -> list[tuple[float, str]]:
        if self.log:
            ticks = [m * 10 ** k
                     for k in range(math.floor(math.log10(self.lo)) - 1,
                                    math.ceil(math.log10(self.hi)) + 1)
                     for m in (1, 2, 5)
                     if self.lo <= m * 10 ** k <= self.hi]
            if len(ticks) >= 3:
                return [(t, f"{t:g}") for t in ticks]
        step = _nice_step(self.hi - self.lo, n)
        v, out = math.ceil(self.lo / step - 1e-9) * step, []
        while v <= self.hi + step * 1e-9:
            out.append((v, _tick_label(v, step)))
            v += step
        return out


def _range(values: Iterable[float], pad: float = 0.06, floor: float | None = None,
           ceil: float | None = None) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    span = hi - lo or max(abs(hi) * 0.1, 1e-3)
    lo, hi = lo - span * pad, hi + span * pad
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    if hi <= lo:
        hi = lo + span
    return lo, hi


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start",
          fill: str = INK, weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" font-weight="{weight}"{extra}>{_e(s)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = GREY,
          width: float = 1, dash: str | None = None) -> str:
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{d}/>')


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    # No xmlns: the HTML parser puts <svg> in the SVG namespace itself, and the page
    # carries no URL at all (the namespace URI would be one).
    return (f'<svg class="plot" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
            f'height="{height:.0f}" role="img" aria-label="{_e(label)}" '
            f'font-family="system-ui, sans-serif"><title>{_e(label)}</title>'
            + "".join(body) + "</svg>")


def _axes(x: _Axis, y: _Axis, xlabel: str, ylabel: str, grid: bool = True) -> list[str]:
    out = []
    left, right, bottom, top = x.p0, x.p1, y.p0, y.p1
    for v, label in y.ticks(5):
        py = y(v)
        if grid:
            out.append(_line(left, py, right, py, "#d0d7de", 1))
        out.append(_text(left - 6, py + 4, label, 11, "end", "#57606a"))
    for v, label in x.ticks(7):
        px = x(v)
        if grid:
            out.append(_line(px, top, px, bottom, "#eaeef2", 1))
        out.append(_text(px, bottom + 16, label, 11, "middle", "#57606a"))
    out.append(_line(left, bottom, right, bottom, "#57606a"))
    out.append(_line(left, top, left, bottom, "#57606a"))
    out.append(_text((left + right) / 2, bottom + 34, xlabel, 12, "middle"))
    out.append(_text(14, (top + bottom) / 2, ylabel, 12, "middle",
                     extra=f' transform="rotate(-90 14 {(top + bottom) / 2:.1f})"'))
    return out


def _legend(items: list[tuple[str, str]], x: float, y: float, right: float) -> list[str]:
    """Rows of (swatch svg drawn around 0,0, label) from x, y (text baseline), wrapping
    before ``right``."""
    out, cx = [], x
    for swatch, label in items:
        width = 28 + 6.6 * len(label)
        if cx > x and cx + width > right:
            cx, y = x, y + 16
        out.append(f'<g transform="translate({cx + 7:.1f} {y - 4:.1f})">{swatch}</g>')
        out.append(_text(cx + 18, y, label, 11))
        cx += width
    return out


def _place_labels(items: list[tuple[float, float, str, bool]], width: float,
                  height: float) -> list[str]:
    """Labels next to markers (x, y, text, bold), each at the first of four spots that
    overlaps no earlier label and no marker; items come in priority order."""
    boxes: list[tuple[float, float, float, float]] = [(x - 6, y - 6, x + 6, y + 6)
                                                      for x, y, _, _ in items]
    out = []
    for x, y, text, bold in items:
        tw = 6.4 * len(text) * (1.08 if bold else 1.0)
        spots = [(x + 9, y - 7, "start"), (x + 9, y + 14, "start"),
                 (x - 9, y - 7, "end"), (x - 9, y + 14, "end")]
        if x + 9 + tw > width:
            spots = spots[2:] + spots[:2]
        chosen = spots[0]
        for tx, ty, anchor in spots:
            x0 = tx if anchor == "start" else tx - tw
            box = (x0, ty - 11, x0 + tw, ty + 2)
            inside = box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
                                  and b[1] < box[3] for b in boxes):
                chosen = (tx, ty, anchor)
                break
        tx, ty, anchor = chosen
        x0 = tx if anchor == "start" else tx - tw
        boxes.append((x0, ty - 11, x0 + tw, ty + 2))
        out.append(_text(tx, ty, text, 11, anchor, INK, "bold" if bold else "normal"))
    return out


def _marker(kind: str, x: float, y: float, tip: str = "") -> str:
    title = f"<title>{_e(tip)}</title>" if tip else ""
    if kind == "in":
        return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{GREEN}" fill-opacity="0.85" '
                f'stroke="{GREEN}">{title}</circle>')
    if kind == "out":
        return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#ffffff" stroke="{RED}" '
                f'stroke-width="2">{title}</circle>')
    if kind == "chosen":
        return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="{INK}" '
                f'stroke-width="2">{title}</circle>')
    if kind == "baseline":
        return (f'<rect x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12" fill="{BLUE}" '
                f'transform="rotate(45 {x:.1f} {y:.1f})">{title}</rect>')
    if kind == "final":
        return (f'<rect x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12" '
                f'fill="{ORANGE}">{title}</rect>')
    raise ValueError(kind)


# --------------------------------------------------------------------------- plots

def _m(report: dict[str, Any]) -> str:
    """The metric's name: "top-1", or --metric's."""
    return metric_name(report)


def _mh(report: dict[str, Any]) -> str:
    return metric_heading(report)


def _u(report: dict[str, Any]) -> str:
    """The unit after a value: % for top-1, none for a metric's points."""
    return "%" if _m(report) == "top-1" else ""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (lower latency x, higher accuracy y), by latency."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _pareto_svg(report: dict[str, Any]) -> tuple[str, str]:
    """Accuracy vs latency at the budget percentile; returns (svg, caption)."""
    pct = _get(report, "budget", "percentile", default="p50")
    max_drop = _get(report, "budget", "max_drop")
    goal = _get(report, "budget", "latency_ms")
    base = report.get("baseline") or {}
    base_acc, base_lat = base.get("accuracy"), _get(base, "latency_ms", pct)
    floor = base_acc - max_drop if base_acc is not None and max_drop is not None else None
    search = report.get("search")
    # (kind, x, y, label, tooltip)
    pts: list[tuple[str, float, float, str, str]] = []
    skipped: list[str] = []
    if base_lat is not None and base_acc is not None:
        pts.append(("baseline", base_lat, base_acc, "baseline",
                    f"baseline: {_m(report)} {base_acc:.2f}{_u(report)}, {pct} "
                    f"{base_lat:.3f} ms"))
    trials = (search or {}).get("trials") or []
    if search:
        for t in trials:
            lat, acc = _get(t, "latency_ms", pct), t.get("accuracy")
            name = str(t.get("name", "?"))
            if lat is None or acc is None:
                skipped.append(name)
                continue
            kind = "in" if t.get("within_budget") else "out"
            tip = (f"{name}: {_m(report)} {acc:.2f}{_u(report)}, {pct} {lat:.3f} ms, "
                   f"{t.get('precision', '?')}, {t.get('status', '')}")
            pts.append((kind, lat, acc, name, tip))
    else:
        fin = report.get("final") or {}
        lat, acc = _get(fin, "latency_ms", pct), fin.get("accuracy")
        if lat is not None and acc is not None:
            pts.append(("final", lat, acc, "final",
                        f"final: {_m(report)} {acc:.2f}{_u(report)}, {pct} {lat:.3f} ms"))
    if not pts:
        return "", f"nothing to plot: no latency at {pct} was measured"

    w, h, ml, mr, mt, mb = 760, 460, 64, 24, 16, 92
    xs = [p[1] for p in pts] + ([goal] if goal else [])
    ys = [p[2] for p in pts] + ([floor] if floor is not None and floor >= 0 else [])
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 5
    x = (_Axis(min(xs) / 1.15, max(xs) * 1.15, ml, w - mr, log=True) if log_x
         else _Axis(0.0, max(xs) * 1.08 or 1.0, ml, w - mr))
    ylo, yhi = _range(ys, 0.12, floor=0.0, ceil=100.0)
    y = _Axis(ylo, yhi, h - mb, mt)
    batch = _get(report, "target", "batch", default="?")
    body = _axes(x, y, f"latency {pct} (ms, batch {batch}{', log scale' if log_x else ''})",
                 _mh(report))
    notes = []
    if floor is not None and ylo <= floor <= yhi:
        body.append(_line(ml, y(floor), w - mr, y(floor), RED, 1.2, "6 4"))
        body.append(_text(w - mr - 4, y(floor) - 5,
                          f"accuracy floor {floor:.2f}{_u(report)} (baseline − {max_drop:g} "
                          "pts)",
                          11, "end", RED))
    elif floor is not None:
        notes.append(f"accuracy floor {floor:.2f}{_u(report)} (baseline − {max_drop:g} pts) "
                     "is off the "
                     "plot")
    if goal:
        body.append(_line(x(goal), mt, x(goal), h - mb, RED, 1.2, "6 4"))
        body.append(_text(x(goal) + 4, mt + 12, f"budget {pct} ≤ {goal:g} ms", 11, "start",
                          RED))
    trial_xy = [(p[1], p[2]) for p in pts if p[0] in ("in", "out")]
    front = pareto_front(trial_xy)
    if len(front) >= 2:
        d = f"M {x(front[0][0]):.1f} {y(front[0][1]):.1f}"
        for fx, fy in front[1:]:
            d += f" H {x(fx):.1f} V {y(fy):.1f}"
        body.append(f'<path d="{d}" fill="none" stroke="{INK}" stroke-width="1.5" '
                    f'stroke-dasharray="2 3" stroke-opacity="0.7"/>')
    chosen_name = (search or {}).get("chosen")
    label_all = len(pts) <= 14
    labels: list[tuple[int, float, float, str, bool]] = []
    for kind, px, py, label, tip in pts:
        body.append(_marker(kind, x(px), y(py), tip))
        is_chosen = bool(search) and kind in ("in", "out") and label == chosen_name
        if is_chosen:
            body.append(_marker("chosen", x(px), y(py), tip))
        if label_all or is_chosen or kind in ("baseline", "final"):
            text = f"chosen: {label}" if is_chosen else label
            rank = 0 if is_chosen else 1 if kind in ("baseline", "final") else 2
            labels.append((rank, x(px), y(py), text, is_chosen))
    labels.sort(key=lambda item: item[0])
    body += _place_labels([item[1:] for item in labels], w, h - mb)
    legend = [(_marker("baseline", 0, 0),
               f"baseline (PyTorch {_m(report)}, dense FP32 latency)")]
    if search:
        legend += [(_marker("in", 0, 0), "trial within budget"),
                   (_marker("out", 0, 0), "trial outside budget"),
                   (_marker("chosen", 0, 0), "chosen"),
                   (f'<line x1="-8" y1="0" x2="8" y2="0" stroke="{INK}" stroke-width="1.5" '
                    'stroke-dasharray="2 3"/>', "Pareto front")]
    else:
        legend.append((_marker("final", 0, 0), "final (target runtime)"))
    body += _legend(legend, ml - 50, h - mb + 56, w - mr)
    caption = (f"{len(trial_xy)} trials plotted" if search else "baseline and final") + (
        f"; not plotted (no {pct} latency): {', '.join(skipped)}" if skipped else "")
    if notes:
        caption += "; " + "; ".join(notes)
    return _svg(w, h, body, f"{_m(report)} accuracy vs {pct} latency"), caption


def _histogram_svg(report: dict[str, Any], samples: dict[str, Any]) -> str:
    """Baseline and final per-iteration latency histograms on one shared x axis."""
    series = [(name, key, colour, [float(v) for v in (samples.get(key) or [])
                                   if isinstance(v, int | float) and math.isfinite(v)])
              for name, key, colour in (("baseline", "baseline_ms", BLUE),
                                        ("final", "final_ms", ORANGE))]
    series = [s for s in series if s[3]]
    if not series:
        return ""
    allv = [v for s in series for v in s[3]]
    goal = _get(report, "budget", "latency_ms")
    pct = _get(report, "budget", "percentile", default="p50")
    lo, hi = min(allv), max(allv + ([goal] if goal else []))
    use_log = lo > 0 and hi / lo >= 4
    if use_log:
        lo, hi = lo / 1.05, hi * 1.05
    else:
        span = (hi - lo) or max(hi * 0.1, 1e-3)
        lo, hi = max(0.0, lo - span * 0.05), hi + span * 0.05
    w, ml, mr, panel, gap, mt = 760, 64, 24, 130, 46, 24
    h = mt + len(series) * (panel + gap) + 24
    x = _Axis(lo, hi, ml, w - mr, use_log)
    nbins = max(12, min(40, int(math.sqrt(len(allv)) * 2)))
    edges = _bin_edges(lo, hi, nbins, use_log)
    hists = []
    for _, _, _, vals in series:
        counts = [0] * nbins
        for v in vals:
            i = min(nbins - 1, max(0, _bin_index(v, edges)))
            counts[i] += 1
        hists.append([c / len(vals) for c in counts])
    top = max(max(hh) for hh in hists) or 1.0
    body: list[str] = []
    for k, ((name, _key, colour, vals), fracs) in enumerate(zip(series, hists, strict=True)):
        y0 = mt + k * (panel + gap)
        y = _Axis(0.0, top * 1.1, y0 + panel, y0)
        side = report.get(name) or {}
        lat = side.get("latency_ms") or {}
        body += _axes(x, y, "" if k < len(series) - 1 else
                      f"latency per batch (ms{', log scale' if use_log else ''})",
                      "share", grid=False)
        body.append(_text(ml + 6, y0 + 2, f"{name}: {len(vals)} iterations "
                          f"({side.get('precision', '?')} on "
                          f"{_get(side, 'runtime', 'runtime', default='?')})",
                          12, "start", colour, "bold"))
        for i, f in enumerate(fracs):
            if not f:
                continue
            x0, x1 = x(edges[i]), x(edges[i + 1])
            bw = max(x1 - x0 - 1, 1)
            body.append(f'<rect x="{x0 + 0.5:.1f}" y="{y(f):.1f}" width="{bw:.1f}" '
                        f'height="{y(0) - y(f):.1f}" fill="{colour}" fill-opacity="0.75">'
                        f'<title>{edges[i]:.3f}–{edges[i + 1]:.3f} ms: {f:.0%}</title></rect>')
        marks = []
        for p, dash in (("p50", None), ("p99", "5 3")):
            v = lat.get(p)
            if v is None:
                v = _percentile(vals, float(p[1:])) if p == "p50" or len(vals) >= 100 else None
            if v is not None:
                marks.append((p, v, dash))
        last_px = -1e9
        for j, (p, v, dash) in enumerate(marks):
            px = x(v)
            body.append(_line(px, y0 + 8, px, y0 + panel, INK, 1.5, dash))
            ly = y0 + 18 + (14 if abs(px - last_px) < 90 and j else 0)
            anchor = "end" if px > w - mr - 90 else "start"
            body.append(_text(px + (-4 if anchor == "end" else 4), ly, f"{p} {v:.3f} ms", 11,
                              anchor, INK))
            last_px = px
        if goal:
            body.append(_line(x(goal), y0, x(goal), y0 + panel, RED, 1.2, "6 4"))
            body.append(_text(x(goal) + 4, y0 + panel * 0.55, f"budget {pct} {goal:g} ms",
                              11, "start", RED))
    return _svg(w, h, body, "latency distributions, baseline and final")


def _bin_edges(lo: float, hi: float, n: int, log: bool) -> list[float]:
    if log:
        a, b = math.log10(lo), math.log10(hi)
        return [10 ** (a + (b - a) * i / n) for i in range(n + 1)]
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _bin_index(v: float, edges: list[float]) -> int:
    lo, hi = 0, len(edges) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if v >= edges[mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _waterfall_svg(rows: list[dict[str, Any]], report: dict[str, Any] | None = None) -> str:
    report = report or {}
    """Top-1 after each stage: the first bar from 0, then each change as a floating bar."""
    rows = [r for r in rows if r.get("accuracy") is not None]
    if not rows:
        return ""
    n = len(rows)
    w, h, ml, mr, mt, mb = max(420, 64 + 120 * n), 300, 64, 16, 20, 56
    yhi = min(100.0, max(r["accuracy"] for r in rows) * 1.12) or 1.0
    y = _Axis(0.0, yhi, h - mb, mt)
    slot = (w - ml - mr) / n
    body: list[str] = []
    for v, label in y.ticks(5):
        body.append(_line(ml, y(v), w - mr, y(v), "#d0d7de"))
        body.append(_text(ml - 6, y(v) + 4, label, 11, "end", "#57606a"))
    body.append(_line(ml, h - mb, w - mr, h - mb, "#57606a"))
    body.append(_text(14, (mt + h - mb) / 2, _mh(report), 12, "middle",
                      extra=f' transform="rotate(-90 14 {(mt + h - mb) / 2:.1f})"'))
    prev = None
    for i, r in enumerate(rows):
        acc, change = r["accuracy"], r.get("change")
        cx = ml + slot * (i + 0.5)
        bw = min(56.0, slot * 0.6)
        start = 0.0 if prev is None else prev
        colour = BLUE if prev is None else (GREEN if acc >= prev else RED)
        top_v, bot_v = max(start, acc), min(start, acc)
        height = max(y(bot_v) - y(top_v), 1.5)
        tip = f"{r.get('stage')}: {_m(report)} {acc:.2f}{_u(report)} ({r.get('runtime')})" + (
            f", {_signed(change)}" if change is not None else "")
        body.append(f'<rect x="{cx - bw / 2:.1f}" y="{y(top_v):.1f}" width="{bw:.1f}" '
                    f'height="{height:.1f}" fill="{colour}" fill-opacity="0.85">'
                    f'<title>{_e(tip)}</title></rect>')
        if prev is not None:
            px = ml + slot * (i - 0.5) + bw / 2
            body.append(_line(px, y(prev), cx - bw / 2, y(prev), GREY, 1, "3 3"))
            body.append(_text(cx, y(top_v) - 5, _signed(acc - prev, 2, ""), 11, "middle",
                              colour, "bold"))
        else:
            body.append(_text(cx, y(top_v) - 5, f"{acc:.2f}", 11, "middle", colour, "bold"))
        body.append(_text(cx, h - mb + 16, str(r.get("stage", "?")), 12, "middle"))
        body.append(_text(cx, h - mb + 31, f"{acc:.2f}% ({r.get('runtime', '?')})", 10,
                          "middle", "#57606a"))
        prev = acc
    return _svg(w, h, body, f"{_m(report)} accuracy after each stage")


def _bar(fraction: float, colour: str = BLUE, width: int = 120) -> str:
    f = min(max(fraction, 0.0), 1.0)
    return (f'<svg class="bar" viewBox="0 0 {width} 10" width="{width}" height="10" '
            f'role="img" aria-label="{f:.0%}"><rect width="{width}" height="10" '
            f'fill="#eaeef2"/><rect width="{width * f:.1f}" height="10" fill="{colour}"/></svg>')


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1000px; margin: 0 auto; padding: 20px 24px 48px; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 14px; margin: 18px 0 6px; }
.sub { color: #57606a; margin: 0 0 14px; }
.verdict { border-radius: 8px; padding: 14px 18px; color: #fff; margin: 12px 0 8px; }
.verdict.passed { background: #1a7f37; }
.verdict.missed { background: #cf222e; }
.verdict .word { font-size: 40px; font-weight: 800; letter-spacing: 1px; line-height: 1.1; }
.verdict p { margin: 6px 0 0; font-size: 15px; }
.verdict ul { margin: 6px 0 0; padding-left: 22px; font-size: 15px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eaeef2; text-align: left;
         vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #fff8c5; font-weight: 600; }
.good { color: #1a7f37; } .bad { color: #cf222e; } .muted { color: #57606a; }
.chip { display: inline-block; padding: 0 7px; border-radius: 10px; color: #fff;
        font-size: 12px; }
svg.plot { max-width: 100%; height: auto; display: block; margin: 6px 0; }
svg.bar { vertical-align: middle; }
.caption { color: #57606a; font-size: 12px; margin: 0 0 8px; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
code, pre { font: 12px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; }
pre { white-space: pre-wrap; word-break: break-all; background: #f6f8fa; padding: 8px; }
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None,
           row_class: Callable[[int], str] | None = None) -> str:
    """A table; head and cells are HTML already escaped by the caller."""
    numeric = numeric or set()
    out = ["<table><thead><tr>"]
    out += [f'<th{" class=n" if i in numeric else ""}>{h}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        cls = row_class(k) if row_class else ""
        out.append(f'<tr{f" class={cls}" if cls else ""}>')
        out += [f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _budget_words(report: dict[str, Any]) -> str:
    b = report.get("budget") or {}
    text = f"{_m(report)} drop ≤ {b.get('max_drop', '?'):g} pts" if isinstance(
        b.get("max_drop"), int | float) else f"{_m(report)} drop: n/a"
    if b.get("latency_ms") is not None:
        text += f", {b.get('percentile', 'p50')} latency ≤ {b['latency_ms']:g} ms"
    else:
        text += " (no latency goal)"
    return text


def _verdict_html(report: dict[str, Any]) -> str:
    passed = bool(report.get("passed"))
    v = report.get("verdict") or {}
    pct = _get(report, "budget", "percentile", default="p50")
    measured = [f"{_m(report)} drop {_num(v.get('accuracy_drop'))} pts"]
    if v.get("latency_measured_ms") is not None:
        measured.append(f"{pct} latency {v['latency_measured_ms']:.3f} ms")
    reasons = v.get("reasons") or []
    out = [f'<section class="verdict {"passed" if passed else "missed"}" id="verdict">',
           f'<div class="word">{"PASSED" if passed else "MISSED"}</div>',
           f"<p>budget: {_e(_budget_words(report))}</p>",
           f"<p>measured: {_e(', '.join(measured))}</p>"]
    if reasons:
        out.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
    out.append("</section>")
    return "".join(out)


def _comparison_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, baseline, final, change) as plain text, shared by the HTML and markdown."""
    b, f = report.get("baseline") or {}, report.get("final") or {}
    bl, fl = b.get("latency_ms") or {}, f.get("latency_ms") or {}
    drop = _get(report, "verdict", "accuracy_drop")
    if drop is None and b.get("accuracy") is not None and f.get("accuracy") is not None:
        drop = b["accuracy"] - f["accuracy"]
    rows = [(_mh(report),
             f"{_num(b.get('accuracy'))} ({b.get('accuracy_runtime', '?')})",
             f"{_num(f.get('accuracy'))} ({f.get('accuracy_runtime', '?')})",
             _signed(-drop if drop is not None else None))]
    for p in ("p50", "p90", "p99"):
        rows.append((f"latency {p} (ms)", _num(bl.get(p), 3), _num(fl.get(p), 3),
                     _faster(bl.get(p), fl.get(p))))
    rows.append(("throughput (img/s)", _num(bl.get("throughput_fps"), 0),
                 _num(fl.get("throughput_fps"), 0),
                 _times(bl.get("throughput_fps"), fl.get("throughput_fps"))))
    rows.append(("FLOPs / image", _mflops(b.get("flops")), _mflops(f.get("flops")),
                 _smaller(b.get("flops"), f.get("flops"))))
    rows.append(("params", _count(b.get("params")), _count(f.get("params")),
                 _smaller(b.get("params"), f.get("params"))))
    rows.append(("artifact size", _size(b.get("size_bytes")), _size(f.get("size_bytes")),
                 _smaller(b.get("size_bytes"), f.get("size_bytes"))))
    rows.append(("precision requested", str(b.get("precision", "?")),
                 str(f.get("precision", "?")), ""))
    rows.append(("ran as", str(_get(b, "runtime", "effective_precision", default="?")),
                 str(_get(f, "runtime", "effective_precision", default="?")), ""))
    return rows


def _search_rows(report: dict[str, Any]) -> list[tuple[bool, list[str]]]:
    search = report.get("search") or {}
    pct = _get(report, "budget", "percentile", default="p50")
    rows = []
    for t in search.get("trials") or []:
        lat = t.get("latency_ms") or {}
        rows.append((bool(t.get("chosen")) or t.get("name") == search.get("chosen"), [
            str(t.get("name", "?")), str(t.get("precision", "?")), _num(t.get("accuracy")),
            _num(t.get("accuracy_drop")), _num(lat.get(pct), 3),
            _pct(t.get("flops_reduction")),
            "yes" if t.get("within_budget") else "no",
            str(t.get("status", "")) + (f": {t['error']}" if t.get("error") else ""),
        ]))
    return rows


SEARCH_HEAD = ("trial", "precision", "{metric}", "drop (pts)", "latency {pct} (ms)",
               "FLOPs reduction", "within budget", "status")


def _section_search(report: dict[str, Any]) -> str:
    search = report.get("search")
    svg, caption = _pareto_svg(report)
    out = ["<h2>Accuracy vs latency</h2>"]
    if search:
        chosen = search.get("chosen")
        out.append(f"<p>search: {_e(search.get('trials_run', len(search.get('trials') or [])))}"
                   f" trials in {_num(search.get('seconds'), 1)} s; chosen: "
                   f"<b>{_e(chosen if chosen else 'none')}</b>"
                   + (f" — {_e(search['why'])}" if search.get("why") else "") + "</p>")
    out.append(svg or "")
    out.append(f'<p class="caption">{_e(caption)}</p>')
    if search and search.get("trials"):
        pct = _get(report, "budget", "percentile", default="p50")
        rows = _search_rows(report)
        out.append(_table([_e(h.format(pct=pct, metric=_mh(report))) for h in SEARCH_HEAD],
                          [[_e(c) for c in cells] for _, cells in rows], {2, 3, 4, 5},
                          lambda k: "chosen" if rows[k][0] else ""))
    return "".join(out)


def _section_latency(report: dict[str, Any], samples: dict[str, Any] | None) -> str:
    out = ["<h2>Latency distributions</h2>"]
    svg = _histogram_svg(report, samples) if samples else ""
    if svg:
        out.append(svg)
        out.append('<p class="caption">per-iteration latency of the final artifact and the '
                   "dense FP32 baseline, measured in alternating rounds of the same run; solid "
                   "line p50, dashed p99</p>")
    else:
        out.append('<p class="muted">no per-iteration samples (latency_samples.json of the '
                   "profile stage was not found)</p>")
    return "".join(out)


def _section_pruning(report: dict[str, Any]) -> str:
    pr = report.get("pruning")
    out = ["<h2>Pruning: channels kept per layer</h2>"]
    if not pr:
        out.append('<p class="muted">no pruning in this run</p>')
        return "".join(out)
    out.append(f"<p>{_e(pr.get('criterion', '?'))} ({_e(pr.get('allocation', '?'))}): FLOPs "
               f"{_e(_mflops(pr.get('flops_before')))} → {_e(_mflops(pr.get('flops_after')))} "
               f"(−{_e(_pct(pr.get('flops_reduction')))}), params "
               f"{_e(_count(pr.get('params_before')))} → {_e(_count(pr.get('params_after')))} "
               f"(−{_e(_pct(pr.get('params_reduction')))})</p>")
    channels = pr.get("channels") or {}
    if channels:
        rows = []
        for layer, pair in channels.items():
            before, after = [*list(pair), None, None][:2]
            kept = after / before if before and after is not None else None
            rows.append([_e(layer), _e(before), _e(after), _e(_pct(kept, 0)),
                         _bar(kept if kept is not None else 0.0)])
        out.append(_table(["layer", "before", "after", "kept", ""], rows, {1, 2, 3}))
    latency = (pr.get("choice") or {}).get("latency")
    if latency:
        from edgeprune.report.allocation import latency_lines, saved_rows

        out.append("<h3>Latency allocation</h3>")
        out.extend(f"<p>{_e(line)}</p>" for line in latency_lines(
            latency, pr.get("flops_reduction") or 0.0))
        out.append(_table(["group", "kept", "measured saving alone (ms)"],
                          [[_e(n), _e(k), _e(f"{ms:.3f}")] for n, k, ms in saved_rows(latency)],
                          {1, 2}))
    return "".join(out)


def _section_quant(report: dict[str, Any]) -> str:
    q = report.get("quantization")
    out = ["<h2>Quantization: precision per layer</h2>"]
    if not q:
        out.append('<p class="muted">no per-layer quantization in this run (final precision: '
                   f"{_e(_get(report, 'final', 'precision', default='?'))})</p>")
        return "".join(out)
    out.append(f"<p>method {_e(q.get('method', '?'))}"
               + (f", {_e(_m(report))} {_e(_num(q['accuracy']))}{_u(report)} in PyTorch"
                  if q.get("accuracy")
                  is not None else "")
               + (f" (before QAT {_e(_num(q['accuracy_before_qat']))}%)"
                  if q.get("accuracy_before_qat") is not None else "") + "</p>")
    layers = q.get("layers") or []
    if layers:
        rows = []
        for r in layers:
            prec = str(r.get("precision", "?"))
            chip = (f'<span class="chip" style="background:'
                    f'{PRECISION_COLOURS.get(prec, GREY)}">{_e(prec)}</span>')
            zf = r.get("zero_fraction")
            rows.append([_e(r.get("layer", "?")), chip, _e(_count(r.get("weights"))),
                         _e(_pct(zf, 0)), _bar(zf or 0.0, GREY, 80)])
        out.append(_table(["layer", "precision", "weights", "zeros", ""], rows, {2, 3}))
    packed = q.get("packed")
    if packed:
        line = f"packed artifact: {_size(packed.get('bytes'))}"
        if packed.get("ratio_vs_fp32_onnx") is not None:
            line += f", {packed['ratio_vs_fp32_onnx']:.1f}x smaller than the dense FP32 ONNX"
        if packed.get("fp32_onnx_bytes"):
            line += f" ({_size(packed['fp32_onnx_bytes'])})"
        if packed.get("round_trip_exact"):
            line += "; round trip exact"
        out.append(f"<p>{_e(line)}</p>")
    if q.get("openvino_convolution_precisions"):
        out.append(f"<p>OpenVINO ran convolutions as "
                   f"<code>{_e(json.dumps(q['openvino_convolution_precisions']))}</code></p>")
    return "".join(out)


def _section_stage_accuracy(report: dict[str, Any]) -> str:
    rows = report.get("accuracy_by_stage") or []
    out = ["<h2>Accuracy by stage</h2>"]
    if not rows:
        out.append('<p class="muted">no per-stage accuracy in this report</p>')
        return "".join(out)
    out.append(_waterfall_svg(rows, report))
    cells = []
    for r in rows:
        ch = r.get("change")
        cls = "" if ch is None else ("good" if ch >= 0 else "bad")
        cells.append([_e(r.get("stage", "?")), _e(_num(r.get("accuracy"))),
                      _e(r.get("runtime", "?")),
                      f'<span class="{cls}">{_e(_signed(ch))}</span>'])
    out.append(_table(["stage", _mh(report), "measured in", "change"], cells, {1, 3}))
    out.append('<p class="caption">change = points vs the row before: the accuracy each stage '
               "cost or recovered</p>")
    return "".join(out)


def _section_stages(report: dict[str, Any]) -> str:
    stages = report.get("stages") or []
    rows = [[_e(s.get("index", "")), _e(s.get("name", "?")), _e(s.get("status", "")),
             _e(_num(s.get("seconds"), 1)), _e(s.get("summary", ""))] for s in stages]
    total = sum(s.get("seconds") or 0 for s in stages)
    return ("<h2>Stages</h2>" + _table(["#", "stage", "status", "seconds", "summary"], rows,
                                       {0, 3})
            + f'<p class="caption">{len(stages)} stages, {total:.1f} s in all</p>')


def _kv_rows(d: dict[str, Any]) -> list[list[str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, indent=1, sort_keys=False)
            rows.append([_e(k), f"<pre>{_e(v)}</pre>"])
        else:
            rows.append([_e(k), _e("n/a" if v is None else v)])
    return rows


def _section_environment(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    out = ["<h2>Details</h2>", "<details><summary>environment</summary>",
           _table(["", ""], _kv_rows(env)), "</details>"]
    run = {"created at": report.get("created_at"),
           "command": " ".join(map(str, report.get("command") or [])) or None,
           "model": report.get("model"), "data": report.get("data"),
           "target": report.get("target")}
    out += ["<details><summary>run, model, data and target</summary>",
            _table(["", ""], _kv_rows({k: v for k, v in run.items() if v is not None})),
            "</details>"]
    return "".join(out)


def render_html(report: dict[str, Any], samples: dict[str, Any] | None) -> str:
    """One self-contained HTML page for a report (``samples``: latency_samples.json or
    None to leave the distributions out). Every string from the report is escaped."""
    arch = _get(report, "model", "arch", default="model")
    target = _get(report, "target", "name", default="?")
    title = f"edgeprune: {arch} on {target}"
    passed = bool(report.get("passed"))
    sub = (f"{'PASSED' if passed else 'MISSED'} · {report.get('created_at', '')} · "
           f"model {_get(report, 'model', 'path', default='?')} · "
           f"edgeprune {_get(report, 'environment', 'edgeprune', default='?')}")
    cmp_rows = [[_e(c) for c in row] for row in _comparison_rows(report)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(('PASSED' if passed else 'MISSED') + ' · ' + title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(sub)}</p>',
        _verdict_html(report),
        "<h2>Baseline vs final</h2>",
        _table(["", "baseline", "final", "change"], cmp_rows, {1, 2, 3}),
        f'<p class="caption">baseline: the dense model ({_e(_m(report))} in PyTorch, '
        "latency of its FP32 "
        "build on the target); final: the compiled artifact measured on the target runtime. "
        "“ran as” is the precision the runtime actually executed.</p>",
        _section_search(report),
        _section_latency(report, samples),
        _section_pruning(report),
        _section_quant(report),
        _section_stage_accuracy(report),
        _section_stages(report),
        _section_environment(report),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- markdown

def _md(value: Any) -> str:
    """A markdown table cell: no pipes, newlines or raw HTML."""
    return (str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\r", " ").replace("\n", " "))


def _md_table(head: Sequence[str], rows: Iterable[Sequence[Any]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in head) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_summary_md(report: dict[str, Any], out_dir: Path | str | None = None) -> str:
    """GitHub-flavoured markdown for a CI job summary."""
    passed = bool(report.get("passed"))
    arch = _get(report, "model", "arch", default="model")
    target = _get(report, "target", "name", default="?")
    v = report.get("verdict") or {}
    pct = _get(report, "budget", "percentile", default="p50")
    lines = [f"## {'✅ PASSED' if passed else '❌ MISSED'}: edgeprune, {_md(arch)} on "
             f"{_md(target)}", "",
             f"**Budget:** {_md(_budget_words(report))}. **Measured:** {_md(_m(report))} drop "
             f"{_num(v.get('accuracy_drop'))} pts"
             + (f", {pct} latency {v['latency_measured_ms']:.3f} ms"
                if v.get("latency_measured_ms") is not None else "") + "."]
    lines += [f"- {_md(r)}" for r in v.get("reasons") or []]
    lines += ["", *_md_table(["", "baseline", "final", "change"], _comparison_rows(report),
                             {1, 2, 3})]
    rows = report.get("accuracy_by_stage") or []
    if rows:
        lines += ["", "### Accuracy by stage", "",
                  *_md_table(["stage", _mh(report), "measured in", "change"],
                             [(r.get("stage", "?"), _num(r.get("accuracy")),
                               r.get("runtime", "?"), _signed(r.get("change")))
                              for r in rows], {1, 3})]
    search = report.get("search")
    if search:
        chosen = search.get("chosen")
        lines += ["", "### Search trials", "",
                  f"{search.get('trials_run', len(search.get('trials') or []))} trials in "
                  f"{_num(search.get('seconds'), 1)} s; chosen: **{_md(chosen or 'none')}**"
                  + (f" — {_md(search['why'])}" if search.get("why") else ""), ""]
        trial_rows = [[("**" + cells[0] + "**") if is_chosen else cells[0], *cells[1:]]
                      for is_chosen, cells in _search_rows(report)]
        if trial_rows:
            lines += _md_table([h.format(pct=pct, metric=_mh(report)) for h in SEARCH_HEAD],
                               trial_rows,
                               {2, 3, 4, 5})
    lines.append("")
    where = f"`{_md(out_dir)}`" if out_dir is not None else "the run's output folder"
    lines.append(f"Full report in {where}: `report.html` (self-contained page with plots; it "
                 "loads nothing from the network) and `report.json` (machine-readable, "
                 "schema `report.schema.json`).")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files

def load_latency_samples(report: dict[str, Any],
                         out_dir: Path | None = None) -> dict[str, Any] | None:
    """latency_samples.json of the profile stage, or None. Looks in the stage's recorded
    dir, then (a report copied elsewhere with its stage dirs) under ``out_dir``."""
    for stage in report.get("stages") or []:
        if stage.get("name") != "profile" or not stage.get("dir"):
            continue
        recorded = Path(stage["dir"])
        candidates = [recorded / "latency_samples.json"]
        if out_dir is not None:
            candidates.append(Path(out_dir) / recorded.name / "latency_samples.json")
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data
    return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_human_reports(report: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write ``out_dir/report.html`` and ``out_dir/summary.md`` (each atomically: a temp
    file in the same folder, then a rename). Returns {"html": path, "summary": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = load_latency_samples(report, out_dir)
    html_path, md_path = out_dir / "report.html", out_dir / "summary.md"
    _write_atomic(html_path, render_html(report, samples))
    _write_atomic(md_path, render_summary_md(report, out_dir))
    return {"html": str(html_path), "summary": str(md_path)}
