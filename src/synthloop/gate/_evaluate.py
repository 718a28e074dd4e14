"""Apply a Policy to a Comparison → Verdict.

Decision logic (the same code runs in `benchmarks/bench_gate_calibration.py`):

`max_drop: m` with confidence c (α = 1 − c), "worse" oriented by the metric's direction:
  1. fewer than `min_cases` paired cases                    → inconclusive
  2. one-sided lower bound of the improvement ≥ −m          → pass  (non-inferior)
  3. one-sided p-value of "not worse" < α                   → fail  (a real drop, and it is
                                                              not shown to be within m)
  4. otherwise                                              → inconclusive (too few cases to
                                                              show the drop is under m)
Segments (`segments: KEY`): every value of the listed keys with ≥ `min_segment_cases` pairs
is one test; the family's p-values are adjusted (Holm or BH); a segment fails when its
adjusted p < α and its own lower bound is below −m. Segment checks only ever fail a rule
(a regression somewhere); they never make it inconclusive.

Floors/ceilings compare the candidate mean with the threshold (descriptive), or with
`statistical: true` its one-sided bounds. Latency ratios: pass when the upper bound of
candidate/baseline quantile ≤ max_ratio, fail when the lower bound > 1 (significantly slower)
and that is not shown, else inconclusive; bounds are distribution-free order-statistic bounds
of each quantile at confidence 1 − α/2 (Bonferroni), so the ratio bound holds at c.

Overall: any fail → exit 1; else any inconclusive → exit 3; else exit 0.
"""

from __future__ import annotations

import difflib
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from synthloop.errors import ConfigError
from synthloop.gate._policy import Policy, Rule
from synthloop.gate._verdict import EXIT_CODES, CheckResult, Status, Verdict
from synthloop.stats._bootstrap import level_key, z_value
from synthloop.stats._model import Comparison, MetricComparison, PairStats
from synthloop.stats._power import mde as mde_at
from synthloop.stats._power import n_needed as n_needed_for
from synthloop.stats._pvalues import adjust

POWER = 0.8


def fmt(x: float | None, signed: bool = False) -> str:
    """A number for a reason line: 3 significant digits, `n/a` for None."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    x = x + 0.0  # -0.0 → 0.0: a zero change reads "+0", not "-0"
    if 999.5 <= abs(x) < 1e9:  # whole numbers with separators (999.96 → 1,000, not 1e3)
        return f"{x:+,.0f}" if signed else f"{x:,.0f}"
    s = f"{x:+.3g}" if signed else f"{x:.3g}"
    return s.replace("e+0", "e").replace("e-0", "e-")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<1e-6" if p < 1e-6 else f"{p:.3g}"


def check_policy(comparison: Comparison, policy: Policy, source: str = "policy") -> None:
    """Every rule refers to something the comparison has; one ConfigError listing all misses."""
    problems: list[str] = []
    metrics = list(comparison.metrics)
    for i, rule in enumerate(policy.rules):
        where = f"{source}: rules[{i}]"
        if rule.metric is not None and rule.metric not in comparison.metrics:
            close = difflib.get_close_matches(rule.metric, metrics, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else (
                f"metrics compared: {', '.join(metrics) or '(none)'}")
            problems.append(f"{where}.metric: metric `{rule.metric}` is not in the comparison ({hint})")
        for key in rule.segments or []:
            if key not in comparison.segment_keys:
                if key in comparison.skipped_segment_keys:
                    why = comparison.skipped_segment_keys[key]
                    hint = f"it was not compared by segment ({why}); re-run compare with --segments {key}"
                else:
                    close = difflib.get_close_matches(key, comparison.segment_keys, n=1, cutoff=0.6)
                    hint = f"did you mean `{close[0]}`?" if close else (
                        f"segment keys: {', '.join(comparison.segment_keys) or '(none)'}")
                problems.append(f"{where}.segments: tag `{key}` is not a segment key of the comparison ({hint})")
        if rule.latency is not None:
            lat = comparison.latency
            if lat is None or lat.base.n == 0 or lat.cand.n == 0:
                problems.append(f"{where}.latency: the comparison has no latency data "
                                f"(the runs' responses carry no latency_ms)")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
        raise ConfigError(head, problems=problems)


def _improvement_bounds(s: PairStats, key: str, hib: bool) -> tuple[float, float] | None:
    """One-sided (lower, upper) bounds of the improvement (delta oriented so + is better)."""
    b = s.bounds.get(key)
    if b is None:
        return None
    lo, hi = b
    return (lo, hi) if hib else (-hi, -lo)


def _in_metric_units(imp: float, lower: float | None, margin: float, hib: bool
                     ) -> tuple[str, str, str]:
    """(change, bound, margin) for a reason line, in the metric's own direction: a rise of a
    lower-is-better metric reads `change +0.05`, `upper bound +0.07`, `margin +0.02`."""
    if hib:
        return fmt(imp, True), f"lower bound {fmt(lower, True)}", f"−{fmt(margin)}"
    return (fmt(-imp, True), f"upper bound {fmt(None if lower is None else -lower, True)}",
            f"+{fmt(margin)}")


def _settle(status: Status, rule: Rule) -> Status:
    if status == "inconclusive" and rule.when_inconclusive != "inconclusive":
        return rule.when_inconclusive
    return status


def _non_inferiority(i: int, rule: Rule, m: MetricComparison, s: PairStats, c: float,
                     min_cases: int) -> CheckResult:
    margin = float(rule.max_drop or 0.0)
    alpha = 1 - c
    hib = m.higher_is_better
    name = rule.label()
    imp = None if s.delta is None else (s.delta if hib else -s.delta)
    mde_v = n_need = None
    if s.sd_diff is not None and s.n > 1 and s.n_clusters > 1:
        se = s.sd_diff * math.sqrt(max(s.design_effect, 1e-12) / s.n)
        mde_v = mde_at(se, alpha=alpha, power=POWER)
        if margin > 0:
            n_need = n_needed_for(s.sd_diff, margin, design_effect=s.design_effect,
                                  alpha=alpha, power=POWER)
    base = dict(name=name, rule=i, kind="non_inferiority", metric=m.name, estimate=imp, threshold=-margin,
                confidence=c, p_value=s.p_worse, n=s.n, mde=mde_v, n_needed=n_need,
                higher_is_better=hib)
    bounds = _improvement_bounds(s, level_key(c), hib)
    if s.n < min_cases or bounds is None or imp is None:
        if s.n < min_cases:
            reason = f"only {s.n:,} paired cases (fewer than {min_cases}): too few to decide"
        elif imp is None:
            reason = "no paired cases"
        elif s.n == 1:
            reason = (f"change {_in_metric_units(imp, None, margin, hib)[0]} on one paired case: "
                      f"no interval; too few to decide")
        else:
            reason = (f"change {_in_metric_units(imp, None, margin, hib)[0]}, but all {s.n:,} "
                      f"paired cases are in one session: one independent unit gives no "
                      f"interval; too few to decide")
        st: Status = "inconclusive"
        return CheckResult(status=st, counts_as=_settle(st, rule), reason=reason,
                           **base)  # type: ignore[arg-type]
    lower, upper = bounds
    worse = "drop" if hib else "rise"
    pct = f"{c:.3g}"
    change, bound, limit = _in_metric_units(imp, lower, margin, hib)
    if lower >= -margin:
        st = "pass"
        reason = f"change {change}; one-sided {pct} {bound} is within the margin {limit}"
    elif s.p_worse is not None and s.p_worse < alpha:
        st = "fail"
        reason = (f"significant {worse}: change {change} (p={fmt_p(s.p_worse)} < "
                  f"{fmt(alpha)}), {bound} is beyond the margin {limit}")
    else:
        st = "inconclusive"
        need = f"; about {n_need:,} paired cases needed for this margin" if n_need else ""
        reason = (f"no significant {worse} (change {change}, p={fmt_p(s.p_worse)}), "
                  f"but the {bound} is beyond the margin {limit}: "
                  f"too few cases to show non-inferiority (MDE {fmt(mde_v)} at n={s.n:,}{need})")
    return CheckResult(status=st, counts_as=_settle(st, rule), reason=reason, lower=lower,
                       upper=upper, **base)  # type: ignore[arg-type]


def _segments(i: int, rule: Rule, m: MetricComparison, c: float, policy: Policy
              ) -> list[CheckResult]:
    keys = rule.segments or []
    min_seg = rule.min_segment_cases or policy.min_segment_cases
    correction = rule.correction or policy.correction
    margin = float(rule.max_drop or 0.0)
    alpha = 1 - c
    hib = m.higher_is_better
    family: list[tuple[str, str, PairStats]] = []
    skipped: list[str] = []
    for key in keys:
        for value, s in m.segments.get(key, {}).items():
            if s.n >= min_seg and s.p_worse is not None:
                family.append((key, value, s))
            else:
                skipped.append(f"{key}={value}")
    p = np.array([s.p_worse for _, _, s in family], dtype=np.float64)
    adj = adjust(p, correction) if p.size else p
    out: list[CheckResult] = []
    failing: list[str] = []
    lvl = level_key(c)
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[correction]
    for (key, value, s), pa in zip(family, adj, strict=True):
        bounds = _improvement_bounds(s, lvl, hib)
        if bounds is None or s.delta is None:
            continue
        lower, upper = bounds
        imp = s.delta if hib else -s.delta
        if pa < alpha and lower < -margin:
            seg = f"{key}={value}"
            failing.append(seg)
            change, bound, limit = _in_metric_units(imp, lower, margin, hib)
            reason = (f"segment {seg}: change {change} on {s.n:,} cases, "
                      f"{method}-adjusted p={fmt_p(float(pa))} < {fmt(alpha)}, {bound} "
                      f"beyond {limit}")
            out.append(CheckResult(
                name=f"{rule.label()} [{seg}]", rule=i, kind="segment", metric=m.name,
                segment=seg, status="fail", counts_as="fail", reason=reason, estimate=imp,
                lower=lower, upper=upper, threshold=-margin, confidence=c, p_value=s.p_worse,
                p_adjusted=float(pa), n=s.n, higher_is_better=hib))
    tested = len(family)
    skip = f"; {len(skipped)} with fewer than {min_seg} cases not tested" if skipped else ""
    if failing:
        st: Status = "fail"
        reason = (f"{len(failing)} of {tested} segments of {', '.join(keys)} regress "
                  f"({method}-corrected): {', '.join(failing)}{skip}")
    else:
        st = "pass"
        reason = (f"no segment of {', '.join(keys)} regresses significantly "
                  f"({tested} tested, {method}-corrected){skip}")
    summary = CheckResult(name=f"{rule.label()} [segments: {', '.join(keys)}]", rule=i,
                          kind="segments", metric=m.name, status=st, counts_as=st,
                          reason=reason, threshold=-margin, confidence=c, n=tested,
                          higher_is_better=hib)
    return [summary, *out]


def _wilson(p: float, n: int, z: float) -> tuple[float, float]:
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return centre - half, centre + half


def _floor(i: int, rule: Rule, m: MetricComparison, c: float, min_cases: int,
           which: str) -> CheckResult:
    s = m.overall
    thr = float(rule.min if which == "min" else rule.max)  # type: ignore[arg-type]
    kind = "floor" if which == "min" else "ceiling"
    op = ">=" if which == "min" else "<="
    name = rule.name or f"{m.name} {op} {thr:g}"
    value = s.mean_cand
    base = dict(name=name, rule=i, kind=kind, metric=m.name, estimate=value, threshold=thr,
                confidence=c if rule.statistical else None, n=s.n,
                higher_is_better=m.higher_is_better)
    if s.n < min_cases or value is None:
        st: Status = "inconclusive"
        return CheckResult(status=st, counts_as=_settle(st, rule),
                           reason=f"only {s.n:,} paired cases (fewer than {min_cases}): too few to decide",
                           **base)  # type: ignore[arg-type]
    ok = value >= thr if which == "min" else value <= thr
    lower = upper = None
    if not rule.statistical:
        st = "pass" if ok else "fail"
        reason = f"candidate mean {fmt(value)} {'meets' if ok else 'misses'} {op} {thr:g} on {s.n:,} cases"
    else:
        z = z_value(c)
        if m.analysed_as == "binary":
            lower, upper = _wilson(value, s.n, z)
        else:
            half = z * (s.sd_cand or 0.0) / math.sqrt(s.n)
            lower, upper = value - half, value + half
        sure_ok = lower >= thr if which == "min" else upper <= thr
        sure_bad = upper < thr if which == "min" else lower > thr
        st = "pass" if sure_ok else "fail" if sure_bad else "inconclusive"
        reason = (f"candidate mean {fmt(value)}, one-sided {c:.3g} bounds "
                  f"[{fmt(lower)}, {fmt(upper)}] vs {op} {thr:g}")
        if st == "inconclusive":
            reason += ": too few cases to decide"
    return CheckResult(status=st, counts_as=_settle(st, rule), reason=reason, lower=lower,
                       upper=upper, **base)  # type: ignore[arg-type]


def _latency(i: int, rule: Rule, cmp: Comparison, c: float, min_cases: int) -> CheckResult:
    lat = cmp.latency
    assert lat is not None and rule.latency is not None and rule.max_ratio is not None
    q = rule.latency
    limit = float(rule.max_ratio)
    ratio = lat.ratio.get(q)
    n = min(lat.base.n, lat.cand.n)
    base = dict(name=rule.label(), rule=i, kind="latency_ratio", metric="latency_ms",
                estimate=ratio, threshold=limit, confidence=c, n=n, higher_is_better=False)
    if n < min_cases or ratio is None:
        st: Status = "inconclusive"
        why = (f"only {n:,} cases with latency (fewer than {min_cases})" if n < min_cases
               else f"baseline {q} latency is 0")
        return CheckResult(status=st, counts_as=_settle(st, rule), reason=why + ": too few to decide",
                           **base)  # type: ignore[arg-type]
    key = level_key(1 - (1 - c) / 2)
    lb, ub = lat.base.bounds[q][key]
    lc, uc = lat.cand.bounds[q][key]
    upper = uc / lb if lb > 0 else math.inf
    lower = lc / ub if ub > 0 else math.inf
    qb, qc = lat.base.quantiles[q], lat.cand.quantiles[q]
    text = (f"{q} {fmt(qc)} ms vs {fmt(qb)} ms: ratio {fmt(ratio)} "
            f"[{fmt(lower)}, {fmt(upper)}]")
    if upper <= limit:
        st = "pass"
        reason = f"{text}, upper bound within {limit:g}"
    elif lower > 1:
        st = "fail"
        reason = f"{text}: significantly slower and not shown within {limit:g}"
    else:
        st = "inconclusive"
        reason = f"{text}: the interval straddles {limit:g}; too few cases to decide"
    return CheckResult(status=st, counts_as=_settle(st, rule), reason=reason, lower=lower,
                       upper=None if math.isinf(upper) else upper, **base)  # type: ignore[arg-type]


def evaluate(comparison: Comparison, policy: Policy, *, comparison_path: str | Path | None = None,
             policy_path: str | Path | None = None) -> Verdict:
    """Apply every rule of `policy` to `comparison`. Raises ConfigError when a rule names a
    metric, segment key or latency the comparison does not have."""
    check_policy(comparison, policy, str(policy_path) if policy_path else "policy")
    results: list[CheckResult] = []
    for i, rule in enumerate(policy.rules):
        c = rule.confidence or policy.confidence
        min_cases = rule.min_cases or policy.min_cases
        if rule.latency is not None:
            results.append(_latency(i, rule, comparison, c, min_cases))
            continue
        assert rule.metric is not None
        m = comparison.metrics[rule.metric]
        if rule.max_drop is not None:
            results.append(_non_inferiority(i, rule, m, m.overall, c, min_cases))
            if rule.segments:
                results.extend(_segments(i, rule, m, c, policy))
        if rule.min is not None:
            results.append(_floor(i, rule, m, c, min_cases, "min"))
        if rule.max is not None:
            results.append(_floor(i, rule, m, c, min_cases, "max"))
    # Per-segment rows are details of their rule's `segments` row: count checks without them.
    checks = [r for r in results if r.kind != "segment"]
    outcome = [r.counts_as for r in checks]
    status: Status = "fail" if "fail" in outcome else (
        "inconclusive" if "inconclusive" in outcome else "pass")
    n_fail = outcome.count("fail")
    n_inc = outcome.count("inconclusive")
    if status == "fail":
        segs = [f"{r.metric} [{r.segment}]" for r in results
                if r.kind == "segment" and r.counts_as == "fail"]
        summary = f"regression: {n_fail} of {len(checks)} checks failed"
        if segs:
            summary += f" (segments: {', '.join(segs)})"
    elif status == "inconclusive":
        summary = f"inconclusive: {n_inc} of {len(checks)} checks cannot be decided with these cases"
    else:
        summary = f"passed: all {len(checks)} checks"
    return Verdict(
        created_at=datetime.now(UTC), status=status, exit_code=EXIT_CODES[status],
        summary=summary,
        comparison=str(comparison_path) if comparison_path else None,
        policy=str(policy_path) if policy_path else None,
        baseline=comparison.baseline.target_name or comparison.baseline.model or comparison.baseline.path,
        candidate=comparison.candidate.target_name or comparison.candidate.model or comparison.candidate.path,
        evalset=f"{comparison.evalset.name}@{comparison.evalset.version}",
        results=results,
    )
