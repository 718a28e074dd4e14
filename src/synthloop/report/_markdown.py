"""Markdown report: a PR comment or `$GITHUB_STEP_SUMMARY` — verdict first, then the checks,
the failing segments, power, and every metric in a collapsed table."""

from __future__ import annotations

import re

from synthloop.gate import CheckResult, Verdict, fmt, fmt_p
from synthloop.report._text import show_bidi_controls
from synthloop.stats import Comparison, MetricComparison, PairStats

ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️"}
HEADLINE = {"pass": "passed", "fail": "regression found", "inconclusive": "inconclusive (too few cases)"}


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY_START = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _one_line(text: str) -> str:
    """One line, pipes escaped, bidi controls written out (`<U+202E>`: one left in reverses
    the text after it in a PR comment)."""
    return " ".join(show_bidi_controls(str(text)).split()).replace("|", "\\|")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, pipes escaped) and as Markdown prose:
    a `<` that could open an HTML tag or comment, and an `&` that could start an entity, are
    escaped, so a tag value or rule name holding HTML (GitHub renders raw `<img>`,
    `<details>` in comments) shows as text; `<=` and `p <1e-6` stay as they are."""
    text = _ENTITY_START.sub("&amp;", show_bidi_controls(str(text)))
    return _one_line(_TAG_START.sub("&lt;", text))


def _code(text: str) -> str:
    """An inline code span (its content is literal: no entities)."""
    t = _one_line(text).replace("`", "'")
    return f"`{t}`"


def _ci(s: PairStats) -> str:
    if s.ci is None:
        return "n/a"
    return f"[{fmt(s.ci[0], True)}, {fmt(s.ci[1], True)}]"


def _margins(verdict: Verdict | None) -> dict[str, tuple[float, float, int | None, float | None]]:
    """metric → (margin, confidence, n needed, mde) from the first max_drop check on it."""
    out: dict[str, tuple[float, float, int | None, float | None]] = {}
    if verdict is None:
        return out
    for r in verdict.results:
        if r.kind == "non_inferiority" and r.metric not in out and r.threshold is not None:
            out[r.metric] = (-r.threshold, r.confidence or 0.95, r.n_needed, r.mde)
    return out


def power_lines(cmp: Comparison, verdict: Verdict | None) -> list[str]:
    """One line per metric: the MDE at the current n and the n needed for a given drop."""
    margins = _margins(verdict)
    lines = []
    for name, m in cmp.metrics.items():
        s = m.overall
        if s.n == 0:
            lines.append(f"{name}: no paired cases")
            continue
        if name in margins:
            margin, conf, need, mde = margins[name]
            alpha = 1 - conf
            need_s = f"{need:,}" if need else (
                "n/a (one independent unit)" if s.n_clusters < 2 else "n/a (no case differed)")
            # "enough/too few now" only when there is a number to weigh n against: with no
            # differing case (or one unit) there is none, and "too few" would be wrong
            verdict_s = "" if not need else (" (enough now)" if need <= s.n else " (too few now)")
            lines.append(
                f"{name}: at n={s.n:,} the smallest detectable worsening is {fmt(mde)} "
                f"(one-sided α={fmt(alpha)}, 80 % power); to detect a {fmt(margin)} drop you need "
                f"≈{need_s} paired cases{verdict_s}")
        else:
            need = s.n_needed.get("0.02")
            need_s = f"{need:,}" if need else "n/a"
            lines.append(f"{name}: at n={s.n:,} the smallest detectable worsening is "
                         f"{fmt(s.mde)} (α=0.05 one-sided, 80 % power); ≈{need_s} paired cases "
                         f"to detect a 0.02 drop")
    return lines


def _metric_row(m: MetricComparison) -> str:
    s = m.overall
    arrow = "↑" if m.higher_is_better else "↓"
    cov = m.coverage
    dropped = cov.cases - cov.paired
    return (f"| {_code(m.name)} {arrow} | {fmt(s.mean_base)} | {fmt(s.mean_cand)} | "
            f"{fmt(s.delta, True)} | {_ci(s)} | {fmt_p(s.p_value)} | {_cell(s.test)} | "
            f"{s.n:,}{f' ({dropped:,} dropped)' if dropped else ''} |")


def _change(r: CheckResult) -> float | None:
    """A non-inferiority check's estimate as the metric's change (candidate − baseline): the
    verdict stores the improvement, which is −change for a lower-is-better metric."""
    if r.estimate is None or r.higher_is_better is not False:
        return r.estimate
    return -r.estimate


def _check_row(r: CheckResult) -> str:
    paired = r.kind in ("non_inferiority", "segment")
    est = fmt(_change(r) if paired else r.estimate, paired)
    bound = "n/a"
    if paired and r.lower is not None:
        # the bound on the side of worsening, in the metric's direction
        bound = (f"≤ {fmt(-r.lower, True)}" if r.higher_is_better is False
                 else f"≥ {fmt(r.lower, True)}")
    elif r.lower is not None and r.upper is not None:
        bound = f"[{fmt(r.lower)}, {fmt(r.upper)}]"
    p = fmt_p(r.p_adjusted if r.p_adjusted is not None else r.p_value)
    status = r.status if r.status == r.counts_as else f"{r.status} → {r.counts_as}"
    return (f"| {ICON[r.counts_as]} | {_cell(r.name)} | {status} | {est} | {bound} | {p} | "
            f"{'' if r.n is None else f'{r.n:,}'} |")


def render_markdown(cmp: Comparison, verdict: Verdict | None = None, *,
                    html_path: str | None = None, max_reasons: int = 20) -> str:
    """The Markdown report. With no verdict (compare only), the metrics and power sections."""
    base = cmp.baseline.target_name or cmp.baseline.model or cmp.baseline.path
    cand = cmp.candidate.target_name or cmp.candidate.model or cmp.candidate.path
    lines: list[str] = []
    if verdict is not None:
        lines.append(f"## {ICON[verdict.status]} synthloop gate: {HEADLINE[verdict.status]}")
        lines.append("")
        lines.append(f"**{_cell(verdict.summary)}** — candidate {_code(cand)} vs baseline "
                     f"{_code(base)} on evalset {_code(cmp.evalset.name + '@' + cmp.evalset.version)} "
                     f"({cmp.evalset.cases:,} cases, seed {cmp.seed})")
        failing_segments = verdict.failing_segments
        if failing_segments:
            lines.append("")
            segs = ", ".join(
                f"{_code(str(r.segment))} ({_cell(r.metric)} {fmt(_change(r), True)}, "
                f"adj. p {fmt_p(r.p_adjusted)})" for r in failing_segments)
            lines.append(f"**Failing segments:** {segs}")
        lines.append("")
        lines.append("| | check | result | estimate | bound | p | n |")
        lines.append("|---|---|---|---|---|---|---|")
        lines.extend(_check_row(r) for r in verdict.results)
        lines.append("")
        shown = [r for r in verdict.results if r.counts_as != "pass" or r.status != "pass"]
        if shown:
            lines.append("**Why:**")
            for r in shown[:max_reasons]:
                lines.append(f"- {ICON[r.counts_as]} {_cell(r.name)}: {_cell(r.reason)}")
            if len(shown) > max_reasons:
                lines.append(f"- … and {len(shown) - max_reasons} more (see the JUnit or HTML report)")
            lines.append("")
    else:
        lines.append("## synthloop comparison")
        lines.append("")
        lines.append(f"candidate {_code(cand)} vs baseline {_code(base)} on evalset "
                     f"{_code(cmp.evalset.name + '@' + cmp.evalset.version)} "
                     f"({cmp.evalset.cases:,} cases, seed {cmp.seed})")
        lines.append("")
    lines.append("**Power:**")
    lines.extend(f"- {_cell(p)}" for p in power_lines(cmp, verdict))
    lines.append("")
    metrics_table = [
        f"| metric | baseline | candidate | change | {cmp.confidence:.0%} CI | p | test | paired |",
        "|---|---|---|---|---|---|---|---|",
        *(_metric_row(m) for m in cmp.metrics.values()),
    ]
    if verdict is not None:
        lines.append("<details><summary>All metrics</summary>")
        lines.append("")
        lines.extend(metrics_table)
        lines.append("")
        lines.append("</details>")
    else:
        lines.extend(metrics_table)
    if cmp.latency is not None and cmp.latency.base.n and cmp.latency.cand.n:
        lat = cmp.latency
        parts = []
        for q in ("p50", "p95", "p99"):
            if q in lat.base.quantiles and q in lat.cand.quantiles:
                parts.append(f"{q} {fmt(lat.base.quantiles[q])} → {fmt(lat.cand.quantiles[q])} ms "
                             f"(×{fmt(lat.ratio.get(q))})")
        lines.append("")
        lines.append("**Latency:** " + "; ".join(parts))
    if cmp.notes:
        lines.append("")
        lines.append("<details><summary>Notes</summary>")
        lines.append("")
        lines.extend(f"- {_cell(n)}" for n in cmp.notes)
        lines.append("")
        lines.append("</details>")
    if html_path:
        lines.append("")
        lines.append(f"Full report (plots, worst regressions side by side): {_code(html_path)}")
    lines.append("")
    return "\n".join(lines)
