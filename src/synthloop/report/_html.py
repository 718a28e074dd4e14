"""One self-contained HTML report: no external URLs, scripts or stylesheets (a Content
Security Policy forbids loading any), inline SVG plots, and a small vanilla-JS browser of the
worst regressions (tabs per metric, text filter). Every piece of user or model text is
escaped (bidi override controls shown as `<U+202E>`), and a long unbroken one wraps rather
than widening the page. The script marks `<body data-ready="1">` when it has run, which tests check."""

from __future__ import annotations

import math
from html import escape

from synthloop import __version__
from synthloop.gate import Verdict, fmt, fmt_p
from synthloop.report._markdown import HEADLINE, power_lines
from synthloop.report._svg import BLUE, ORANGE, ForestRow, forest_plot, heatmap, histogram
from synthloop.report._text import show_bidi_controls
from synthloop.stats import CaseDiff, Comparison, MetricComparison, PairStats

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:; base-uri 'none'; form-action 'none'")

STYLE = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f9fafb;--pass:#16a34a;--fail:#dc2626;--inc:#d97706}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:#fff}
header.banner{padding:18px 28px;color:#fff}header.banner h1{margin:0 0 4px;font-size:22px}
.status-pass{background:var(--pass)}.status-fail{background:var(--fail)}.status-inconclusive{background:var(--inc)}.status-none{background:#374151}
.meta{opacity:.92;margin:2px 0}nav{padding:8px 28px;border-bottom:1px solid var(--line);background:var(--bg)}
nav a{margin-right:16px;color:#1d4ed8;text-decoration:none}main{padding:0 28px 40px;max-width:1200px}
h2{margin:28px 0 10px;font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px}h3{margin:20px 0 6px;font-size:15px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg)}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.pill.pass{background:var(--pass)}.pill.fail{background:var(--fail)}.pill.inconclusive{background:var(--inc)}
.plot{display:block;margin:8px 0;max-width:100%;height:auto}.plot .ptitle{font-weight:600;font-size:13px}
.plot .label{font-size:12px}.plot .glabel{font-size:12px;font-weight:600}.plot .tick{font-size:11px;fill:#374151}.plot .cell{font-size:11px}
.muted{color:var(--muted)}ul.power li{margin:2px 0}
.tabs{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0}.tabs button{border:1px solid var(--line);background:#fff;padding:4px 10px;border-radius:6px;cursor:pointer}
.tabs button[aria-selected=true]{background:#1d4ed8;color:#fff;border-color:#1d4ed8}
input#case-filter{padding:5px 8px;width:320px;border:1px solid #d1d5db;border-radius:6px}
article.case{border:1px solid var(--line);border-radius:8px;margin:12px 0;padding:10px 12px;background:#fff}
article.case header{display:flex;flex-wrap:wrap;gap:10px;align-items:baseline;margin-bottom:6px}
.tag{background:var(--bg);border:1px solid var(--line);border-radius:4px;padding:0 5px;font-size:12px}
.scores{margin-left:auto;font-weight:600}.sides{display:grid;grid-template-columns:1fr 1fr;gap:10px}
pre{white-space:pre-wrap;word-break:break-word;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:6px 8px;margin:4px 0;max-height:320px;overflow:auto;font-size:12.5px}
h4{margin:6px 0 2px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.expl{font-size:12px;color:var(--muted);margin:2px 0}.err{color:var(--fail)}footer{padding:16px 28px;color:var(--muted);border-top:1px solid var(--line)}
header.banner,nav,main,footer{overflow-wrap:anywhere}th,td.num,.pill{overflow-wrap:normal;white-space:nowrap}td{min-width:8em}td.num{min-width:0}
"""

SCRIPT = """
(function () {
  var tabs = Array.prototype.slice.call(document.querySelectorAll('[data-tab]'));
  var cases = Array.prototype.slice.call(document.querySelectorAll('article.case'));
  var filter = document.getElementById('case-filter');
  var count = document.getElementById('case-count');
  var current = tabs.length ? tabs[0].getAttribute('data-tab') : null;
  function apply() {
    var q = filter ? filter.value.toLowerCase().trim() : '';
    var shown = 0;
    cases.forEach(function (a) {
      var ok = a.getAttribute('data-metric') === current &&
        (!q || a.getAttribute('data-text').indexOf(q) >= 0);
      a.hidden = !ok;
      if (ok) { shown += 1; }
    });
    tabs.forEach(function (t) {
      t.setAttribute('aria-selected', t.getAttribute('data-tab') === current ? 'true' : 'false');
    });
    if (count) { count.textContent = shown + ' shown'; }
  }
  tabs.forEach(function (t) {
    t.addEventListener('click', function () { current = t.getAttribute('data-tab'); apply(); });
  });
  if (filter) { filter.addEventListener('input', apply); }
  apply();
  document.body.setAttribute('data-ready', '1');
})();
"""


def _e(x: object) -> str:
    """Escaped for HTML text and attributes; bidi controls are shown as `<U+202E>`."""
    return escape(show_bidi_controls(str(x)), quote=True)


def _margin(verdict: Verdict | None, m: MetricComparison) -> float | None:
    """The max_drop margin of the first rule on this metric, in signed delta units."""
    if verdict is None:
        return None
    for r in verdict.results:
        if r.kind == "non_inferiority" and r.metric == m.name and r.threshold is not None:
            return r.threshold if m.higher_is_better else -r.threshold
    return None


def _highlight(s: PairStats, hib: bool, p: float | None) -> str | None:
    if p is None or s.delta is None or p >= 0.05 or s.delta == 0:
        return None
    better = (s.delta > 0) == hib
    return "good" if better else "bad"


def _forest(m: MetricComparison, cmp: Comparison, verdict: Verdict | None) -> str:
    rows = []
    o = m.overall
    rows.append(ForestRow("all cases", o.delta, o.ci[0] if o.ci else None,
                          o.ci[1] if o.ci else None, o.n,
                          _highlight(o, m.higher_is_better, o.p_value)))
    for key in cmp.segment_keys:
        per = m.segments.get(key) or {}
        if not per:
            continue
        rows.append(ForestRow(key, None, None, None, 0, group=True))
        for value, s in per.items():
            rows.append(ForestRow(f"{value}", s.delta, s.ci[0] if s.ci else None,
                                  s.ci[1] if s.ci else None, s.n,
                                  _highlight(s, m.higher_is_better, s.p_adjusted)))
    direction = "higher is better" if m.higher_is_better else "lower is better"
    title = (f"{m.name}: candidate − baseline, {cmp.confidence:.0%} intervals "
             f"({direction}; segments Holm-adjusted)")
    return forest_plot(rows, title=title, margin=_margin(verdict, m))


def _segment_heatmaps(cmp: Comparison) -> str:
    parts = []
    names = list(cmp.metrics)
    for key in cmp.segment_keys:
        values: list[str] = []
        for m in cmp.metrics.values():
            for v in (m.segments.get(key) or {}):
                if v not in values:
                    values.append(v)
        if not values:
            continue
        cells = []
        for v in values:
            row: list[tuple[float | None, float | None, str]] = []
            for name in names:
                m = cmp.metrics[name]
                s = (m.segments.get(key) or {}).get(v)
                if s is None or s.delta is None:
                    row.append((None, None, f"{key}={v} · {name}: no pairs"))
                    continue
                imp = s.delta if m.higher_is_better else -s.delta
                se = s.se or 0.0
                z = imp / se if se > 0 else 0.0
                sig = s.p_adjusted is not None and s.p_adjusted < 0.05
                strength = math.copysign(min(abs(z), 4.0) / 4.0, z) * (1.0 if sig else 0.35)
                ci = f" [{fmt(s.ci[0], True)}, {fmt(s.ci[1], True)}]" if s.ci else ""
                tip = (f"{key}={v} · {name}: change {fmt(s.delta, True)}{ci}, n={s.n:,}, "
                       f"adj. p={fmt_p(s.p_adjusted)}")
                row.append((s.delta, strength, tip))
            cells.append(row)
        parts.append(heatmap([f"{key}={v}" for v in values], names, cells,
                             title=f"change by {key}"))
    if not parts:
        return '<p class="muted">No segments were compared.</p>'
    return ('<p class="muted">Candidate − baseline per segment and metric: green better, red '
            "worse, deeper = more standard errors; pale = not significant after Holm "
            "correction within the tag. Hover a cell for its interval.</p>" + "".join(parts))


def _checks_table(verdict: Verdict) -> str:
    rows = []
    for r in verdict.results:
        status = r.status if r.status == r.counts_as else f"{r.status} → {r.counts_as}"
        rows.append(
            f'<tr id="check-{_e(r.rule)}-{_e(r.kind)}"><td><span class="pill {_e(r.counts_as)}">'
            f"{_e(status)}</span></td><td>{_e(r.name)}</td><td>{_e(r.reason)}</td>"
            f'<td class="num">{_e(fmt_p(r.p_adjusted if r.p_adjusted is not None else r.p_value))}</td>'
            f'<td class="num">{"" if r.n is None else _e(f"{r.n:,}")}</td></tr>')
    return ("<table><thead><tr><th>result</th><th>check</th><th>reason</th><th>p</th>"
            "<th>n</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _metric_section(m: MetricComparison, cmp: Comparison, verdict: Verdict | None) -> str:
    s = m.overall
    cov = m.coverage
    stats = [
        ("baseline mean", fmt(s.mean_base)), ("candidate mean", fmt(s.mean_cand)),
        ("change", fmt(s.delta, True)),
        (f"{cmp.confidence:.0%} CI", f"[{fmt(s.ci[0], True)}, {fmt(s.ci[1], True)}]" if s.ci else "n/a"),
        ("p (two-sided)", fmt_p(s.p_value)), ("p (worse)", fmt_p(s.p_worse)),
        ("test", s.test), ("interval", s.ci_method),
        ("effect size dz", fmt(s.effect_size, True)), ("MDE", fmt(s.mde)),
        ("paired", f"{s.n:,}"), ("units", f"{s.n_clusters:,}"),
        ("design effect", fmt(s.design_effect)),
    ]
    if s.p_exact is not None:
        stats.append(("p exact McNemar", fmt_p(s.p_exact)))
    if s.p_wilcoxon is not None:
        stats.append(("p Wilcoxon", fmt_p(s.p_wilcoxon)))
    if s.counts is not None:
        c = s.counts
        stats.append(("pairs 11/10/01/00", f"{c.n11:,} / {c.n10:,} / {c.n01:,} / {c.n00:,}"))
    head = "".join(f"<th>{_e(k)}</th>" for k, _ in stats)
    body = "".join(f'<td class="num">{_e(v)}</td>' for _, v in stats)
    dropped = (f'<p class="muted">dropped: baseline {cov.not_scored_base:,} not scored, '
               f"{cov.failed_base:,} scorer failures; candidate {cov.not_scored_cand:,} not "
               f"scored, {cov.failed_cand:,} scorer failures. Samples per case: "
               f"{cov.samples_base} / {cov.samples_cand} (averaged before pairing).</p>")
    kind = f"{m.kind}, analysed as {m.analysed_as}; {'higher' if m.higher_is_better else 'lower'} is better"
    return (f'<div class="metric" id="metric-{_e(m.name)}"><h3>{_e(m.name)} '
            f'<span class="muted">({_e(kind)})</span></h3>'
            f'<div style="overflow-x:auto"><table><tr>{head}</tr><tr>{body}</tr></table></div>'
            f"{dropped}{_forest(m, cmp, verdict)}</div>")


def _latency_section(cmp: Comparison) -> str:
    lat = cmp.latency
    if lat is None or not lat.histogram_edges:
        return '<p class="muted">No latency recorded in the runs.</p>'
    markers = []
    if "p95" in lat.base.quantiles:
        markers.append((f"baseline p95 {fmt(lat.base.quantiles['p95'])} ms", lat.base.quantiles["p95"], BLUE))
    if "p95" in lat.cand.quantiles:
        markers.append((f"candidate p95 {fmt(lat.cand.quantiles['p95'])} ms", lat.cand.quantiles["p95"], ORANGE))
    svg = histogram(lat.histogram_edges,
                    [(f"baseline (n={lat.base.n:,})", lat.histogram_base, BLUE),
                     (f"candidate (n={lat.cand.n:,})", lat.histogram_cand, ORANGE)],
                    title="latency per case (ms)", markers=markers)
    rows = []
    for q in ("p50", "p90", "p95", "p99"):
        rows.append(f"<tr><td>{q}</td><td class=num>{_e(fmt(lat.base.quantiles.get(q)))}</td>"
                    f"<td class=num>{_e(fmt(lat.cand.quantiles.get(q)))}</td>"
                    f"<td class=num>×{_e(fmt(lat.ratio.get(q)))}</td></tr>")
    rows.append(f"<tr><td>mean</td><td class=num>{_e(fmt(lat.base.mean))}</td>"
                f"<td class=num>{_e(fmt(lat.cand.mean))}</td><td></td></tr>")
    rows.append(f"<tr><td>max</td><td class=num>{_e(fmt(lat.base.max))}</td>"
                f"<td class=num>{_e(fmt(lat.cand.max))}</td><td></td></tr>")
    table = ("<table><thead><tr><th>ms</th><th>baseline</th><th>candidate</th><th>ratio</th>"
             "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return svg + table


def _pre(text: str | None, cls: str = "") -> str:
    if text is None:
        return '<pre class="muted">(none)</pre>'
    return f'<pre class="{cls}">{_e(text)}</pre>'


def _case_card(metric: str, c: CaseDiff, base_name: str, cand_name: str) -> str:
    tags = "".join(f'<span class="tag">{_e(k)}={_e(v)}</span>' for k, v in c.tags.items())
    searchable = " ".join(x for x in [c.case_id, c.session_id or "", c.input or "",
                                      c.base_output or "", c.cand_output or "",
                                      " ".join(f"{k}={v}" for k, v in c.tags.items()),
                                      c.base_explanation or "", c.cand_explanation or ""] if x)
    hist = ""
    if c.history:
        turns = "".join(f"<h4>{_e(t.get('role', ''))}</h4>{_pre(t.get('content'))}" for t in c.history)
        hist = f"<details><summary>previous turns ({len(c.history)})</summary>{turns}</details>"
    ref = f"<h4>reference</h4>{_pre(c.reference)}" if c.reference is not None else ""

    def side(label: str, name: str, out: str | None, err: str | None, expl: str | None) -> str:
        body = _pre(out)
        if err:
            body += f'<p class="expl err">error: {_e(err)}</p>'
        if expl:
            body += f'<p class="expl">{_e(expl)}</p>'
        return f"<div><h4>{_e(label)} · {_e(name)}</h4>{body}</div>"

    return (f'<article class="case" data-metric="{_e(metric)}" data-text="{_e(searchable.lower())}">'
            f"<header><code>{_e(c.case_id)}</code>{tags}"
            f'<span class="scores">{_e(metric)}: {_e(fmt(c.base_score))} → {_e(fmt(c.cand_score))}'
            f"</span></header>{hist}<h4>input</h4>{_pre(c.input)}{ref}"
            f'<div class="sides">{side("baseline", base_name, c.base_output, c.base_error, c.base_explanation)}'
            f'{side("candidate", cand_name, c.cand_output, c.cand_error, c.cand_explanation)}</div></article>')


def _worst_section(cmp: Comparison) -> str:
    base = cmp.baseline.target_name or cmp.baseline.model or "baseline"
    cand = cmp.candidate.target_name or cmp.candidate.model or "candidate"
    with_cases = [m for m in cmp.metrics.values() if m.worst]
    if not with_cases:
        return '<p class="muted">No case got worse on any metric.</p>'
    tabs = "".join(f'<button type="button" data-tab="{_e(m.name)}" aria-selected="false">'
                   f"{_e(m.name)} ({len(m.worst)})</button>" for m in with_cases)
    cards = "".join(_case_card(m.name, c, base, cand) for m in with_cases for c in m.worst)
    return (f'<div class="tabs" role="tablist">{tabs}</div>'
            f'<p><input id="case-filter" type="search" placeholder="filter: text, case id, tag=value" '
            f'aria-label="filter cases"> <span id="case-count" class="muted"></span></p>{cards}')


def render_html(cmp: Comparison, verdict: Verdict | None = None) -> str:
    """The whole report as one HTML string."""
    base = cmp.baseline.target_name or cmp.baseline.model or cmp.baseline.path
    cand = cmp.candidate.target_name or cmp.candidate.model or cmp.candidate.path
    status = verdict.status if verdict is not None else "none"
    if verdict is not None:
        h1 = f"Gate: {HEADLINE[verdict.status]}"
        sub = verdict.summary
        failing = ""
        if verdict.failing_segments:
            items = "".join(f"<li><b>{_e(r.segment)}</b> ({_e(r.metric)}): {_e(r.reason)}</li>"
                            for r in verdict.failing_segments)
            failing = f"<h3>Failing segments</h3><ul>{items}</ul>"
        checks = (f'<section id="checks"><h2>Checks</h2>{_checks_table(verdict)}{failing}'
                  "</section>")
    else:
        h1, sub, checks = "Comparison", "no gate applied", ""
    power = "".join(f"<li>{_e(p)}</li>" for p in power_lines(cmp, verdict))
    metrics = "".join(_metric_section(m, cmp, verdict) for m in cmp.metrics.values())
    notes = "".join(f"<li>{_e(n)}</li>" for n in cmp.notes) or "<li>none</li>"
    skipped = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in cmp.skipped_segment_keys.items())
    skipped_html = f"<h3>Tags not used as segments</h3><ul>{skipped}</ul>" if skipped else ""
    cluster = (f"clustered by session ({cmp.n_clusters:,} sessions)" if cmp.clustered
               else "cases treated as independent (no session holds two cases)")
    title = f"synthloop: {cand} vs {base} — {status}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{STYLE}</style></head>
<body>
<header class="banner status-{_e(status)}"><h1>{_e(h1)}</h1><p>{_e(sub)}</p>
<p class="meta">candidate <b>{_e(cand)}</b> vs baseline <b>{_e(base)}</b> · evalset
<b>{_e(cmp.evalset.name)}@{_e(cmp.evalset.version)}</b> ({_e(f"{cmp.evalset.cases:,}")} cases,
{_e(cmp.evalset.content_hash[:19])}…) · seed {_e(cmp.seed)} · {_e(cmp.n_boot)} bootstrap resamples</p></header>
<nav><a href="#checks">checks</a><a href="#metrics">metrics</a><a href="#segments">segments</a><a href="#latency">latency</a><a href="#worst">worst regressions</a><a href="#notes">notes</a></nav>
<main>
{checks}
<section id="power"><h2>Power</h2><ul class="power">{power}</ul></section>
<section id="metrics"><h2>Metrics</h2><p class="muted">{_e(cluster)}</p>{metrics}</section>
<section id="segments"><h2>Per-segment changes</h2>{_segment_heatmaps(cmp)}</section>
<section id="latency"><h2>Latency</h2>{_latency_section(cmp)}</section>
<section id="worst"><h2>Worst regressions</h2>{_worst_section(cmp)}</section>
<section id="notes"><h2>Coverage and notes</h2><ul>{notes}</ul>{skipped_html}</section>
</main>
<footer>synthloop {_e(__version__)} · comparison created {_e(cmp.created_at.isoformat(timespec="seconds"))}
· baseline {_e(cmp.baseline.fingerprint[:12])} · candidate {_e(cmp.candidate.fingerprint[:12])}</footer>
<script>{SCRIPT}</script>
</body></html>
"""

