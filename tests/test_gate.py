"""synthloop.gate: policy files, every decision path, multiplicity, exit-code precedence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthloop.errors import ConfigError
from synthloop.gate import Policy, Rule, check_policy, evaluate, fmt, load_policy
from synthloop.stats import Comparison, compare_arrays, compare_runs
from synthloop.stats.fixtures import write_run_pair


def _binary(rng: np.random.Generator, n: int, p10: float, p01: float
            ) -> tuple[np.ndarray, np.ndarray]:
    cell = rng.choice(4, size=n, p=[0.55, p10, p01, 1 - 0.55 - p10 - p01])
    return np.isin(cell, (0, 1)).astype(float), np.isin(cell, (0, 2)).astype(float)


def _cmp(b: np.ndarray, c: np.ndarray, *, kind: str = "binary", hib: bool = True,
         segments: dict[str, np.ndarray] | None = None, metric: str = "correct") -> Comparison:
    return compare_arrays({metric: b}, {metric: c}, kinds={metric: kind},
                          higher_is_better={metric: hib}, segments=segments, seed=1)


def _rule(**kw: object) -> Policy:
    return Policy(rules=[Rule(**kw)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- policy files


def test_minimal_policy_from_the_issue_loads(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("rules:\n  - metric: correct\n    max_drop: 0.02           # margin\n"
                 "    confidence: 0.95\n    segments: cluster\n")
    policy = load_policy(p)
    rule = policy.rules[0]
    assert (rule.metric, rule.max_drop, rule.confidence, rule.segments) == (
        "correct", 0.02, 0.95, ["cluster"])
    assert policy.min_cases == 30 and policy.correction == "holm"


def test_policy_shorthand_and_all_rule_kinds(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("confidence: 0.9\ncorrection: bh\nrules:\n  - json_valid >= 0.99\n"
                 "  - refusal <= 0.05\n  - latency: p95\n    max_ratio: 1.2\n")
    rules = load_policy(p).rules
    assert (rules[0].metric, rules[0].min) == ("json_valid", 0.99)
    assert (rules[1].metric, rules[1].max) == ("refusal", 0.05)
    assert (rules[2].latency, rules[2].max_ratio) == ("p95", 1.2)


def test_policy_errors_list_every_problem(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("min_case: 10\nrules:\n  - metric: correct\n    max_dorp: 0.02\n"
                 "  - latency: p95\n  - metric: x\n    max_drop: 0.1\n    confidence: 0.97\n"
                 "  - correct => 0.5\n  - metric: y\n    min: 0.5\n    segments: k\n")
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    text = str(e.value)
    assert "5 problems" in text or "6 problems" in text
    assert "min_case: unknown key (did you mean `min_cases`?)" in text
    assert "rules[0].max_dorp: unknown key (did you mean `max_drop`?)" in text
    assert "rules[1]: a latency rule needs `max_ratio`" in text
    assert "rules[2].confidence: confidence must be one of 0.8, 0.9, 0.95" in text
    assert "rules[3]: cannot read rule 'correct => 0.5'" in text
    assert "rules[4]: `segments` applies to `max_drop` rules" in text
    assert all(line.strip().startswith(f"- {p}") for line in text.splitlines()[1:])
    empty = tmp_path / "empty.yaml"
    empty.write_text("rules: []\n")
    with pytest.raises(ConfigError, match="rules"):
        load_policy(empty)


def test_rules_must_refer_to_what_the_comparison_has() -> None:
    rng = np.random.default_rng(0)
    b, c = _binary(rng, 100, 0.1, 0.1)
    cmp = _cmp(b, c, segments={"cluster": np.array(["a", "b"] * 50)})
    policy = Policy(rules=[Rule(metric="corect", max_drop=0.02),
                           Rule(metric="correct", max_drop=0.02, segments=["clustre"]),
                           Rule(latency="p95", max_ratio=1.2)])
    with pytest.raises(ConfigError) as e:
        check_policy(cmp, policy, "p.yaml")
    text = str(e.value)
    assert "did you mean `correct`?" in text and "did you mean `cluster`?" in text
    assert "no latency data" in text


# --------------------------------------------------------------------------- non-inferiority


def test_clear_regression_fails() -> None:
    b, c = _binary(np.random.default_rng(1), 3000, 0.20, 0.10)  # 10-point drop
    v = evaluate(_cmp(b, c), _rule(metric="correct", max_drop=0.02))
    r = v.results[0]
    assert (v.status, v.exit_code, r.status) == ("fail", 1, "fail")
    assert r.p_value is not None and r.p_value < 0.05 and r.lower is not None and r.lower < -0.02
    assert "significant drop" in r.reason


def test_no_change_with_many_cases_passes() -> None:
    b, c = _binary(np.random.default_rng(2), 20_000, 0.05, 0.05)
    v = evaluate(_cmp(b, c), _rule(metric="correct", max_drop=0.02))
    assert (v.status, v.exit_code) == ("pass", 0)
    assert "within the margin" in v.results[0].reason


def test_identical_outputs_pass_even_a_zero_margin() -> None:
    b = (np.random.default_rng(3).random(200) < 0.7).astype(float)
    v = evaluate(_cmp(b, b.copy()), _rule(metric="correct", max_drop=0.0))
    assert v.status == "pass"


def test_too_few_cases_is_inconclusive() -> None:
    b, c = _binary(np.random.default_rng(4), 20, 0.3, 0.0)
    v = evaluate(_cmp(b, c), _rule(metric="correct", max_drop=0.02))
    assert (v.status, v.exit_code) == ("inconclusive", 3)
    assert "fewer than 30" in v.results[0].reason
    # the policy's floor can be lowered
    v2 = evaluate(_cmp(b, c), Policy(min_cases=10, rules=[Rule(metric="correct", max_drop=0.02)]))
    assert v2.status == "fail"


def test_one_session_holding_every_case_is_inconclusive() -> None:
    # 200 cases, all in one session: one independent unit. The candidate looks better, but
    # nothing shows how much the mean would vary: the gate must not pass on it.
    rng = np.random.default_rng(5)
    b, c = _binary(rng, 200, 0.02, 0.1)
    cmp = compare_arrays({"correct": b}, {"correct": c}, kinds={"correct": "binary"},
                         sessions=["s1"] * 200, seed=1)
    assert cmp.metrics["correct"].overall.delta > 0  # type: ignore[operator]
    v = evaluate(cmp, _rule(metric="correct", max_drop=0.02))
    r = v.results[0]
    assert v.status == "inconclusive" and r.status == "inconclusive"
    assert "one session" in r.reason and r.mde is None and r.n_needed is None


def test_underpowered_no_drop_is_inconclusive_with_the_n_needed() -> None:
    b, c = _binary(np.random.default_rng(5), 400, 0.15, 0.15)
    v = evaluate(_cmp(b, c), _rule(metric="correct", max_drop=0.02))
    r = v.results[0]
    assert r.status == "inconclusive" and v.exit_code == 3
    assert r.n_needed is not None and r.n_needed > 400
    assert r.mde is not None and r.mde > 0.02
    assert "too few cases to show non-inferiority" in r.reason and f"{r.n_needed:,}" in r.reason


def test_significant_drop_within_margin_passes() -> None:
    """With enough cases a small, real drop is still within the tolerated margin."""
    b, c = _binary(np.random.default_rng(6), 200_000, 0.06, 0.05)  # 1-point drop
    cmp = _cmp(b, c)
    assert cmp.metrics["correct"].overall.p_worse < 1e-6  # type: ignore[operator]
    v = evaluate(cmp, _rule(metric="correct", max_drop=0.02))
    assert v.status == "pass"


def test_lower_is_better_metric_orientation() -> None:
    rng = np.random.default_rng(7)
    b = rng.normal(1.0, 0.2, 2000)
    c = b + rng.normal(0.05, 0.05, 2000)  # cost rises by 0.05: worse
    cmp = _cmp(b, c, kind="continuous", hib=False, metric="cost")
    v = evaluate(cmp, _rule(metric="cost", max_drop=0.01))
    r = v.results[0]
    assert r.status == "fail" and r.estimate == pytest.approx(-(c - b).mean())
    assert "significant rise" in r.reason
    # the reason speaks the metric's units: the cost rose, so the change is positive and the
    # bound that matters is the upper one, against a margin of +0.01
    assert f"change {fmt((c - b).mean(), True)} " in r.reason
    assert f"upper bound {fmt(-r.lower, True)} is beyond the margin +0.01" in r.reason  # type: ignore[operator]
    # the same change on a higher-is-better metric is an improvement
    up = evaluate(_cmp(b, c, kind="continuous", metric="cost"), _rule(metric="cost", max_drop=0.01))
    assert up.status == "pass"


def test_when_inconclusive_counts_as_pass_or_fail() -> None:
    b, c = _binary(np.random.default_rng(5), 400, 0.15, 0.15)
    cmp = _cmp(b, c)
    as_pass = evaluate(cmp, _rule(metric="correct", max_drop=0.02, when_inconclusive="pass"))
    assert as_pass.results[0].status == "inconclusive" and as_pass.results[0].counts_as == "pass"
    assert as_pass.exit_code == 0
    as_fail = evaluate(cmp, _rule(metric="correct", max_drop=0.02, when_inconclusive="fail"))
    assert as_fail.exit_code == 1


def test_confidence_changes_the_bound_used() -> None:
    b, c = _binary(np.random.default_rng(9), 6000, 0.16, 0.15)
    cmp = _cmp(b, c)
    lo80 = evaluate(cmp, _rule(metric="correct", max_drop=0.02, confidence=0.8)).results[0].lower
    lo99 = evaluate(cmp, _rule(metric="correct", max_drop=0.02, confidence=0.99)).results[0].lower
    assert lo80 is not None and lo99 is not None and lo99 < lo80
    assert lo80 == cmp.metrics["correct"].overall.bounds["0.8"][0]


# --------------------------------------------------------------------------- segments


def _segmented(n: int = 6000, bad_drop: float = 0.25, seed: int = 10) -> Comparison:
    rng = np.random.default_rng(seed)
    b, c = _binary(rng, n, 0.1, 0.1)
    clusters = np.array([f"c{i}" for i in range(10)])[np.arange(n) % 10]
    bad = clusters == "c3"
    flip = bad & (b == 1) & (rng.random(n) < bad_drop)
    c[flip] = 0.0
    return _cmp(b, c, segments={"cluster": clusters,
                                "locale": np.array(["en", "fr"])[np.arange(n) % 2]})


def test_failing_segment_is_named() -> None:
    cmp = _segmented()
    v = evaluate(cmp, _rule(metric="correct", max_drop=0.05, segments=["cluster"]))
    kinds = [r.kind for r in v.results]
    assert kinds[:2] == ["non_inferiority", "segments"]
    assert v.results[0].status == "pass"  # overall drop is within 5 points
    seg = [r for r in v.results if r.kind == "segment"]
    assert [r.segment for r in seg] == ["cluster=c3"]
    assert seg[0].status == "fail" and seg[0].p_adjusted is not None and seg[0].p_adjusted < 0.05
    assert v.status == "fail" and v.exit_code == 1
    assert "cluster=c3" in v.results[1].reason and "cluster=c3" in v.summary
    assert v.failing_segments == seg


def test_segment_family_spans_keys() -> None:
    cmp = _segmented(n=3000, bad_drop=0.12, seed=11)
    v = evaluate(cmp, _rule(metric="correct", max_drop=0.0, segments=["cluster", "locale"]))
    assert v.results[1].kind == "segments" and v.results[1].n == 12  # 10 clusters + 2 locales
    # raw p = 0.011 for the bad cluster, but not after correcting for 12 tests
    raw = cmp.metrics["correct"].segments["cluster"]["c3"].p_worse
    assert raw is not None and 0.005 < raw < 0.05
    assert not [r for r in v.results if r.kind == "segment"]


def test_holm_versus_benjamini_hochberg() -> None:
    rng = np.random.default_rng(25)
    n = 3000
    b, c = _binary(rng, n, 0.1, 0.1)
    clusters = np.array([f"c{i}" for i in range(10)])[np.arange(n) % 10]
    bad = np.isin(clusters, ["c1", "c2", "c3"])
    c[bad & (b == 1) & (rng.random(n) < 0.08)] = 0.0
    cmp = _cmp(b, c, segments={"cluster": clusters})
    found = {}
    for corr in ("holm", "bh"):
        v = evaluate(cmp, _rule(metric="correct", max_drop=0.0, segments=["cluster"],
                                correction=corr))
        found[corr] = {r.segment: r.p_adjusted for r in v.results if r.kind == "segment"}
        assert ("Holm" if corr == "holm" else "Benjamini") in v.results[1].reason
    assert set(found["holm"]) == {"cluster=c3"}
    assert set(found["bh"]) >= {"cluster=c1", "cluster=c3"}  # FDR control finds more
    assert found["bh"]["cluster=c3"] <= found["holm"]["cluster=c3"]  # type: ignore[operator]


def test_small_segments_are_not_tested() -> None:
    n = 400
    rng = np.random.default_rng(12)
    b, c = _binary(rng, n, 0.1, 0.1)
    seg = np.where(np.arange(n) < 5, "tiny", "big")
    c[:5] = 0.0
    b[:5] = 1.0
    v = evaluate(_cmp(b, c, segments={"s": seg}),
                 _rule(metric="correct", max_drop=0.05, segments=["s"]))
    fam = v.results[1]
    assert fam.n == 1 and "1 with fewer than 10 cases not tested" in fam.reason


# --------------------------------------------------------------------------- floors, latency


def test_floors_and_ceilings() -> None:
    rng = np.random.default_rng(13)
    b = (rng.random(1000) < 0.995).astype(float)
    c = (rng.random(1000) < 0.97).astype(float)
    cmp = _cmp(b, c, metric="json_valid")
    v = evaluate(cmp, Policy(rules=[Rule.model_validate("json_valid >= 0.99"),
                                    Rule.model_validate("json_valid <= 0.999")]))
    assert [r.status for r in v.results] == ["fail", "pass"]
    assert v.results[0].kind == "floor" and v.results[0].estimate == pytest.approx(c.mean())
    # statistical floor: clear pass, clear fail and an undecidable middle
    strong = evaluate(cmp, _rule(metric="json_valid", min=0.9, statistical=True))
    assert strong.results[0].status == "pass"
    weak = evaluate(cmp, _rule(metric="json_valid", min=0.99, statistical=True))
    assert weak.results[0].status == "fail"
    middle = evaluate(cmp, _rule(metric="json_valid", min=float(c.mean()) + 0.002, statistical=True))
    assert middle.results[0].status == "inconclusive"


@pytest.fixture(scope="module")
def latency_cmp(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    root = tmp_path_factory.mktemp("lat")
    rng = np.random.default_rng(14)
    n = 2000
    lb = rng.lognormal(6, 0.3, n)
    es, base, cand = write_run_pair(root, base={"m": np.ones(n)}, cand={"m": np.ones(n)},
                                    latency_base=lb, latency_cand=lb * 1.5)
    return compare_runs(base, cand)


def test_latency_ratio_rule(latency_cmp: Comparison) -> None:
    ok = evaluate(latency_cmp, _rule(latency="p95", max_ratio=2.0)).results[0]
    assert ok.status == "pass" and ok.estimate == pytest.approx(1.5, rel=1e-6)
    assert ok.lower is not None and ok.upper is not None and ok.lower < 1.5 < ok.upper < 2.0
    bad = evaluate(latency_cmp, _rule(latency="p95", max_ratio=1.2))
    assert bad.results[0].status == "fail" and bad.exit_code == 1
    # every case is 1.5x slower: significantly slower, so over 1.55 is not shown → fail
    assert evaluate(latency_cmp, _rule(latency="p99", max_ratio=1.45)).results[0].status == "fail"


def test_latency_ratio_with_few_cases_is_inconclusive(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    n = 80
    es, base, cand = write_run_pair(tmp_path, base={"m": np.ones(n)}, cand={"m": np.ones(n)},
                                    latency_base=rng.lognormal(6, 0.3, n),
                                    latency_cand=rng.lognormal(6.05, 0.3, n))
    r = evaluate(compare_runs(base, cand), _rule(latency="p95", max_ratio=1.1)).results[0]
    assert r.status == "inconclusive" and r.lower is not None and r.lower < 1.0
    assert "straddles" in r.reason


def test_fail_beats_inconclusive_beats_pass() -> None:
    rng = np.random.default_rng(15)
    b1, c1 = _binary(rng, 3000, 0.2, 0.1)
    b2, c2 = _binary(np.random.default_rng(5), 400, 0.15, 0.15)  # as in the underpowered test
    pad = np.full(2600, np.nan)  # only 400 cases scored for `unsure`
    u_b, u_c = np.concatenate([b2, pad]), np.concatenate([c2, pad])
    cmp = compare_arrays({"bad": b1, "unsure": u_b, "good": b1},
                         {"bad": c1, "unsure": u_c, "good": b1},
                         kinds={"bad": "binary", "unsure": "binary", "good": "binary"})
    both = Policy(rules=[Rule(metric="unsure", max_drop=0.02), Rule(metric="bad", max_drop=0.02),
                         Rule(metric="good", max_drop=0.02)])
    assert evaluate(cmp, both).exit_code == 1
    no_fail = Policy(rules=[Rule(metric="unsure", max_drop=0.02), Rule(metric="good", max_drop=0.02)])
    assert evaluate(cmp, no_fail).exit_code == 3
    assert evaluate(cmp, Policy(rules=[Rule(metric="good", max_drop=0.02)])).exit_code == 0


def test_example_policies_in_configs_load(repo_root: Path) -> None:
    files = sorted((repo_root / "configs").glob("policy*.yaml"))
    assert {f.name for f in files} >= {"policy.yaml", "policy-release.yaml"}
    for f in files:
        assert load_policy(f).rules


def test_reason_numbers_read_well_at_any_scale() -> None:
    from synthloop.gate._evaluate import fmt

    assert fmt(999.96) == "1,000"  # not "1e3"
    assert fmt(-1234.5, True) == "-1,234"
    assert fmt(1e20) == "1e+20"  # not 21 digits with commas
    assert fmt(0.000123) == "0.000123" and fmt(None) == "n/a"
    assert fmt(-0.0, True) == "+0" and fmt(-0.0) == "0"  # e.g. minus a zero change
