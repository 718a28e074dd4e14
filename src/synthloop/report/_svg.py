"""Inline SVG plots for the HTML report, generated in Python (no plotting library, no URLs).

Every function returns one `<svg>` element as a string; all text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

BLUE = "#2563eb"
ORANGE = "#ea580c"
RED = "#dc2626"
GREEN = "#16a34a"
GREY = "#6b7280"
LIGHT = "#e5e7eb"


def _n(x: float) -> str:
    """A coordinate with two decimals (short, deterministic output)."""
    return f"{x:.2f}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _tick_label(t: float) -> str:
    s = f"{t:.4g}"
    return s.replace("e-0", "e-").replace("e+0", "e")


@dataclass(frozen=True)
class ForestRow:
    label: str
    estimate: float | None
    low: float | None
    high: float | None
    n: int
    highlight: str | None = None
    """None, `bad` (significant worsening) or `good` (significant improvement)"""
    group: bool = False
    """a group heading row (no interval)"""


def forest_plot(rows: Sequence[ForestRow], *, title: str, margin: float | None = None,
                width: int = 760, row_h: int = 22) -> str:
    """Point estimates with interval whiskers, a zero line and an optional margin line.

    `margin` is drawn at its signed position in delta units (already oriented by the caller).
    """
    label_w = 200
    right_w = 230
    top = 46
    plot_w = width - label_w - right_w
    height = top + row_h * max(len(rows), 1) + 40
    vals = [v for r in rows for v in (r.low, r.high, r.estimate) if v is not None and math.isfinite(v)]
    vals.append(0.0)
    if margin is not None:
        vals.append(margin)
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or 0.01
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    out = [f'<svg class="plot" role="img" aria-label="{escape(title)}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           f'<title>{escape(title)}</title>',
           f'<text x="4" y="16" class="ptitle">{escape(title)}</text>']
    bottom = top + row_h * len(rows)
    for t in nice_ticks(lo, hi):
        out.append(f'<line x1="{_n(x(t))}" y1="{top - 4}" x2="{_n(x(t))}" y2="{bottom}" '
                   f'stroke="{LIGHT}"/>')
        out.append(f'<text x="{_n(x(t))}" y="{bottom + 16}" text-anchor="middle" '
                   f'class="tick">{escape(_tick_label(t))}</text>')
    out.append(f'<line x1="{_n(x(0))}" y1="{top - 6}" x2="{_n(x(0))}" y2="{bottom}" '
               f'stroke="{GREY}" stroke-width="1.5"/>')
    if margin is not None:
        out.append(f'<line x1="{_n(x(margin))}" y1="{top - 6}" x2="{_n(x(margin))}" '
                   f'y2="{bottom}" stroke="{RED}" stroke-dasharray="5 4"/>')
        out.append(f'<text x="{_n(x(margin))}" y="{bottom + 32}" text-anchor="middle" '
                   f'class="tick" fill="{RED}">margin</text>')
    out.append(f'<text x="{label_w + plot_w + 8}" y="{top - 10}" class="tick">change [interval]  n</text>')
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        cls = "glabel" if r.group else "label"
        out.append(f'<text x="{label_w - 8}" y="{_n(y + 4)}" text-anchor="end" '
                   f'class="{cls}">{escape(r.label)}</text>')
        if r.group or r.estimate is None:
            continue
        color = RED if r.highlight == "bad" else GREEN if r.highlight == "good" else BLUE
        if r.low is not None and r.high is not None:
            out.append(f'<line x1="{_n(x(r.low))}" y1="{_n(y)}" x2="{_n(x(r.high))}" '
                       f'y2="{_n(y)}" stroke="{color}" stroke-width="2"/>')
            for v in (r.low, r.high):
                out.append(f'<line x1="{_n(x(v))}" y1="{_n(y - 4)}" x2="{_n(x(v))}" '
                           f'y2="{_n(y + 4)}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<circle cx="{_n(x(r.estimate))}" cy="{_n(y)}" r="4" fill="{color}"/>')
        ci = (f" [{r.low:+.3g}, {r.high:+.3g}]"
              if r.low is not None and r.high is not None else "")
        out.append(f'<text x="{label_w + plot_w + 8}" y="{_n(y + 4)}" class="tick">'
                   f'{escape(f"{r.estimate:+.3g}{ci}  {r.n:,}")}</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(row_labels: Sequence[str], col_labels: Sequence[str],
            cells: Sequence[Sequence[tuple[float | None, float | None, str]]], *, title: str,
            cell_w: int = 110, row_h: int = 24) -> str:
    """A table of coloured cells. Each cell is (value shown, signed strength in [-1, 1], tip);
    positive strength is green (better), negative red (worse)."""
    label_w = 200
    top = 48
    width = max(label_w + cell_w * max(len(col_labels), 1) + 10, 420)
    height = top + row_h * len(row_labels) + 10
    out = [f'<svg class="plot" role="img" aria-label="{escape(title)}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           f'<title>{escape(title)}</title>',
           f'<text x="4" y="16" class="ptitle">{escape(title)}</text>']
    for j, c in enumerate(col_labels):
        out.append(f'<text x="{label_w + cell_w * j + cell_w / 2}" y="{top - 8}" '
                   f'text-anchor="middle" class="label">{escape(c)}</text>')
    for i, rl in enumerate(row_labels):
        y = top + row_h * i
        out.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4}" text-anchor="end" '
                   f'class="label">{escape(rl)}</text>')
        for j in range(len(col_labels)):
            value, strength, tip = cells[i][j]
            if strength is None or value is None:
                fill = "#f9fafb"
            else:
                s = max(-1.0, min(1.0, strength))
                # white → green / red with intensity |s|
                r, g, b = (22, 163, 74) if s > 0 else (220, 38, 38)
                a = abs(s)
                rr, gg, bb = (round(255 + (v - 255) * a) for v in (r, g, b))
                fill = f"#{rr:02x}{gg:02x}{bb:02x}"
            xx = label_w + cell_w * j
            out.append(f'<rect x="{xx + 1}" y="{y + 1}" width="{cell_w - 2}" height="{row_h - 2}" '
                       f'fill="{fill}" stroke="{LIGHT}"><title>{escape(tip)}</title></rect>')
            text = "—" if value is None else f"{value:+.3g}"
            out.append(f'<text x="{xx + cell_w / 2}" y="{y + row_h / 2 + 4}" text-anchor="middle" '
                       f'class="cell">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[int], str]], *,
              title: str, markers: Sequence[tuple[str, float, str]] = (), width: int = 760,
              height: int = 260, log_x: bool = True) -> str:
    """Overlaid step histograms on shared bins (log-scaled x when edges are positive),
    with vertical markers (label, x, colour), e.g. each side's p95."""
    left, right, top, bottom = 50, 20, 30, 40
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg class="plot" role="img" aria-label="{escape(title)}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           f'<title>{escape(title)}</title>',
           f'<text x="4" y="16" class="ptitle">{escape(title)}</text>']
    if len(edges) < 2 or not series:
        out.append(f'<text x="{left}" y="{top + 20}" class="label">no data</text></svg>')
        return "".join(out)
    use_log = log_x and edges[0] > 0
    f = (lambda v: math.log10(max(v, 1e-12))) if use_log else (lambda v: v)
    x0, x1 = f(edges[0]), f(edges[-1])
    span = (x1 - x0) or 1.0

    def x(v: float) -> float:
        return left + (f(v) - x0) / span * pw

    ymax = max((max(c) if len(c) else 0) for _, c, _ in series) or 1

    def y(v: float) -> float:
        return top + ph - v / ymax * ph

    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{GREY}"/>')
    if use_log:
        lo_e, hi_e = math.floor(x0), math.ceil(x1)
        ticks = [10.0 ** e * m for e in range(lo_e, hi_e + 1) for m in (1, 2, 5)
                 if edges[0] <= 10.0 ** e * m <= edges[-1]]
    else:
        ticks = nice_ticks(edges[0], edges[-1])
    for t in ticks:
        out.append(f'<line x1="{_n(x(t))}" y1="{top}" x2="{_n(x(t))}" y2="{top + ph}" stroke="{LIGHT}"/>')
        out.append(f'<text x="{_n(x(t))}" y="{top + ph + 16}" text-anchor="middle" '
                   f'class="tick">{escape(_tick_label(t))}</text>')
    for label, counts, color in series:
        pts = [f"{_n(x(edges[0]))},{_n(y(0))}"]
        for i, c in enumerate(counts):
            pts.append(f"{_n(x(edges[i]))},{_n(y(c))}")
            pts.append(f"{_n(x(edges[i + 1]))},{_n(y(c))}")
        pts.append(f"{_n(x(edges[-1]))},{_n(y(0))}")
        out.append(f'<polyline points="{" ".join(pts)}" fill="{color}" fill-opacity="0.12" '
                   f'stroke="{color}" stroke-width="1.5"><title>{escape(label)}</title></polyline>')
    for k, (label, v, color) in enumerate(markers):
        if not (math.isfinite(v) and edges[0] <= v <= edges[-1]):
            continue
        out.append(f'<line x1="{_n(x(v))}" y1="{top}" x2="{_n(x(v))}" y2="{top + ph}" '
                   f'stroke="{color}" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{_n(x(v) + 4)}" y="{top + 12 + 14 * k}" class="tick" '
                   f'fill="{color}">{escape(label)}</text>')
    lx = left + 10
    for k, (label, _, color) in enumerate(series):
        yy = top + 8 + 16 * k
        out.append(f'<rect x="{lx}" y="{yy - 8}" width="12" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 18}" y="{yy + 1}" class="label">{escape(label)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="tick">'
               f'latency (ms{", log scale" if use_log else ""})</text>')
    out.append("</svg>")
    return "".join(out)
