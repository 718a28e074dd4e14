"""synthloop.stats: tests checked against scipy / statsmodels, the bootstrap, power, and
compare_runs on real run directories written to tmp_path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from synthloop.errors import DataError
from synthloop.runs import RunDir
from synthloop.stats import (
    benjamini_hochberg,
    bootstrap_counts,
    bootstrap_index,
    compare_arrays,
    compare_metric,
    compare_runs,
    holm,
    mcnemar,
    mde,
    n_needed,
    pair_stats,
    paired_interval,
    read_comparison,
    segmentation_from_values,
    sign_flip,
    unit_types,
    units_from_cases,
    wilcoxon,
    wilcoxon_grouped,
    write_comparison,
)
from synthloop.stats.fixtures import write_evalset_arrays, write_run, write_run_pair

# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize("n10,n01", [(30, 18), (0, 7), (7, 0), (1, 1), (0, 0), (250, 310),
                                     (3, 12), (1200, 1333)])
def test_mcnemar_exact_matches_statsmodels(n10: int, n01: int) -> None:
    r = mcnemar(n10, n01)
    table = [[40, n10], [n01, 25]]
    ref = sm_mcnemar(table, exact=True).pvalue
    assert r.p_exact == pytest.approx(ref, abs=1e-6, rel=1e-6)
    # mid-p: the exact p-value minus the probability of the observed (less likely) count
    nd = n10 + n01
    if nd:
        k = min(n10, n01)
        midp = min(1.0, 2 * stats.binom.cdf(k, nd, 0.5) - stats.binom.pmf(k, nd, 0.5))
        assert r.p_midp == pytest.approx(midp, abs=1e-12)
        assert r.p_midp <= r.p_exact + 1e-15
        # one-sided mid-p values add up to one
        assert r.p_less_midp + r.p_greater_midp == pytest.approx(1.0, abs=1e-12)
        # "candidate lower" is driven by pairs where only the baseline succeeded
        one_sided = stats.binom.sf(n10, nd, 0.5) + 0.5 * stats.binom.pmf(n10, nd, 0.5)
        assert r.p_less_midp == pytest.approx(one_sided, abs=1e-12)
    else:
        assert (r.p_exact, r.p_midp, r.p_less_midp) == (1.0, 1.0, 1.0)


def test_mcnemar_direction() -> None:
    worse = mcnemar(60, 30)  # baseline-only successes dominate: candidate lower
    assert worse.p_less_midp < 0.01 < worse.p_greater_midp


# --------------------------------------------------------------------------- Wilcoxon


@pytest.mark.parametrize("n,decimals,zeros", [(8, 3, 0), (20, 3, 0), (30, 1, 3), (50, 1, 0),
                                              (51, 3, 2), (400, 1, 30), (5000, 2, 100)])
def test_wilcoxon_matches_scipy(n: int, decimals: int, zeros: int) -> None:
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.15, 1, n), decimals)  # rounding makes ties
    d[:zeros] = 0.0
    rng.shuffle(d)
    assert wilcoxon(d) == pytest.approx(stats.wilcoxon(d).pvalue, abs=1e-6, rel=1e-6)


def test_wilcoxon_grouped_matches_scipy_per_group() -> None:
    rng = np.random.default_rng(3)
    sizes = [5, 40, 60, 700, 3000]
    d = np.concatenate([np.round(rng.normal(0.1 * i, 1, s), 1) for i, s in enumerate(sizes)])
    g = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(d.size)
    d, g = d[perm], g[perm]
    order = np.argsort(np.abs(d), kind="stable")
    got = wilcoxon_grouped(d, g, len(sizes) + 1, order=order)
    for k in range(len(sizes)):
        assert got[k] == pytest.approx(stats.wilcoxon(d[g == k]).pvalue, abs=1e-6, rel=1e-6)
    assert np.isnan(got[len(sizes)])  # an empty group


# --------------------------------------------------------------------------- sign flip


def _permutation_ref(d: np.ndarray, alternative: str) -> float:
    return float(stats.permutation_test((d,), np.sum, permutation_type="samples",
                                        n_resamples=np.inf, alternative=alternative).pvalue)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_exact_matches_scipy_permutation_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.4, 1, 11)
    r = sign_flip(d, method="exact")
    assert r.method == "exact"
    assert r.p_two_sided == pytest.approx(_permutation_ref(d, "two-sided"), abs=1e-9)
    assert r.p_less == pytest.approx(_permutation_ref(d, "less"), abs=1e-9)
    assert r.p_greater == pytest.approx(_permutation_ref(d, "greater"), abs=1e-9)


def test_sign_flip_exact_with_ties_and_zeros() -> None:
    d = np.array([1, -1, 1, 1, 0, 2, -2, 1, 1, 0, 1, 3, 1], dtype=float)
    r = sign_flip(d)
    assert r.method == "exact"
    assert r.p_greater == pytest.approx(_permutation_ref(d[d != 0], "greater"), abs=1e-9)
    assert r.p_two_sided == pytest.approx(_permutation_ref(d[d != 0], "two-sided"), abs=1e-9)


def test_sign_flip_monte_carlo_and_normal_agree_with_exact() -> None:
    rng = np.random.default_rng(5)
    d = np.round(rng.normal(0.5, 1, 20), 1)
    exact = sign_flip(d, method="exact")
    mc = sign_flip(d, method="monte_carlo", draws=100_000, seed=1)
    assert mc.p_two_sided == pytest.approx(exact.p_two_sided, abs=0.004)
    assert mc.p_greater == pytest.approx(exact.p_greater, abs=0.003)
    # the same seed gives the same Monte Carlo p-value
    assert sign_flip(d, method="monte_carlo", draws=100_000, seed=1) == mc
    big = rng.normal(0.05, 1, 3000)
    normal = sign_flip(big)
    assert normal.method == "normal"
    assert sign_flip(big, method="monte_carlo", draws=50_000).p_two_sided == pytest.approx(
        normal.p_two_sided, abs=0.01)


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e6])
def test_sign_flip_does_not_depend_on_the_metric_units(scale: float) -> None:
    # a cost in dollars or a latency in hours: the same data in other units, the same p-values
    rng = np.random.default_rng(4)
    for d in (rng.normal(0.5, 1, 12), rng.normal(0.5, 1, 40)):
        ref = sign_flip(d, seed=3)
        scaled = sign_flip(d * scale, seed=3)
        assert scaled.method == ref.method
        assert scaled.p_two_sided == pytest.approx(ref.p_two_sided, rel=1e-12)
        assert scaled.p_greater == pytest.approx(ref.p_greater, rel=1e-12)
        assert scaled.p_less == pytest.approx(ref.p_less, rel=1e-12)


def test_sign_flip_method_choice() -> None:
    assert sign_flip(np.zeros(50)).method == "none"
    assert sign_flip(np.ones(10)).method == "exact"
    assert sign_flip(np.ones(150)).method == "monte_carlo"  # too few units for the CLT rule
    heavy = np.ones(500)
    heavy[0] = 100.0  # one unit carries most of Σ D²: no normal approximation
    assert sign_flip(heavy).method == "monte_carlo"
    assert sign_flip(np.ones(500)).method == "normal"


def test_binary_sign_flip_is_mcnemar() -> None:
    """With one case per unit, the exact sign-flip test on binary differences is the exact
    McNemar test (conditional on the discordant pairs)."""
    d = np.array([-1.0] * 9 + [1.0] * 3 + [0.0] * 30)
    flip = sign_flip(d, method="exact")
    assert flip.p_two_sided == pytest.approx(mcnemar(9, 3).p_exact, abs=1e-12)


# --------------------------------------------------------------------------- corrections


def test_holm_and_bh_match_statsmodels() -> None:
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(0, 0.05, 5), rng.uniform(0, 1, 30), [0.04, 0.04]])
    assert np.allclose(holm(p), multipletests(p, method="holm")[1], atol=1e-12)
    assert np.allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)
    with_nan = np.array([0.01, np.nan, 0.03, 0.2])
    h = holm(with_nan)
    assert np.isnan(h[1])
    assert np.allclose(h[[0, 2, 3]], multipletests(with_nan[[0, 2, 3]], method="holm")[1])


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("n,chunk", [(40, 500), (300, 250), (1000, 1000)])
def test_index_bootstrap_matches_scipy(n: int, chunk: int) -> None:
    """The same resamples (scipy draws rng.integers(0, n, (batch, n)) per batch) give the
    same percentile intervals."""
    rng = np.random.default_rng(n)
    b = rng.normal(0, 1, n)
    c = b + rng.normal(0.1, 0.8, n)
    n_boot = 2000
    dist = bootstrap_index(c - b, np.ones(n), n_boot=n_boot, seed=42, chunk=chunk)

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(y.mean(axis=axis) - x.mean(axis=axis))

    for level in (0.9, 0.95, 0.99):
        res = stats.bootstrap((b, c), stat, paired=True, vectorized=True, n_resamples=n_boot,
                              batch=chunk, method="percentile", confidence_level=level,
                              rng=np.random.default_rng(42))
        lo, hi = np.quantile(dist, [(1 - level) / 2, (1 + level) / 2])
        assert lo == pytest.approx(res.confidence_interval.low, abs=1e-6)
        assert hi == pytest.approx(res.confidence_interval.high, abs=1e-6)
    iv = paired_interval(c - b, np.ones(n), confidence=0.95, n_boot=n_boot, seed=42,
                         method="bootstrap_index")
    ref = stats.bootstrap((b, c), stat, paired=True, vectorized=True, n_resamples=n_boot,
                          batch=500, method="percentile", rng=np.random.default_rng(42))
    assert iv.ci[0] == pytest.approx(ref.confidence_interval.low, abs=1e-6)
    assert iv.ci[1] == pytest.approx(ref.confidence_interval.high, abs=1e-6)
    assert iv.se == pytest.approx(ref.standard_error, abs=1e-9)


def test_cluster_index_bootstrap_resamples_whole_sessions() -> None:
    rng = np.random.default_rng(0)
    sessions = np.repeat(np.arange(60), rng.integers(1, 6, 60))
    d = rng.normal(0, 1, sessions.size)
    sums, sizes = units_from_cases(d, sessions)
    dist = bootstrap_index(sums, sizes, n_boot=300, seed=9, chunk=100)
    # reference: draw the same session indices and recompute the case-level mean directly
    ref_rng = np.random.default_rng(9)
    ref = []
    groups = [d[sessions == g] for g in range(60)]
    for _ in range(3):
        idx = ref_rng.integers(0, 60, (100, 60))
        for row in idx:
            cases = np.concatenate([groups[g] for g in row])
            ref.append(cases.mean())
    assert np.allclose(dist, ref, atol=1e-12)


def test_counts_bootstrap_is_the_same_distribution_as_index_resampling() -> None:
    """A resample is fully described by how often each (size, sum) type is drawn."""
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 0.0, 1.0], size=800, p=[0.17, 0.7, 0.13])
    sums, sizes = units_from_cases(d, None)
    types = unit_types(sums, sizes)
    assert types is not None
    t_sums, t_sizes, freq = types
    assert freq.sum() == 800 and set(t_sums.tolist()) == {-1.0, 0.0, 1.0}
    # identity: counts of each type in index resamples reproduce the statistic exactly
    idx = np.random.default_rng(3).integers(0, 800, (50, 800))
    type_of = np.searchsorted(t_sums, sums)
    counts = np.stack([np.bincount(type_of[row], minlength=t_sums.size) for row in idx])
    assert np.allclose(counts @ t_sums / (counts @ t_sizes), sums[idx].mean(axis=1), atol=1e-12)
    # distribution: multinomial draws vs index draws, with many resamples
    a = bootstrap_counts(t_sums, t_sizes, freq, n_boot=20_000, seed=5)
    b = bootstrap_index(sums, sizes, n_boot=20_000, seed=6)
    assert abs(a.mean() - d.mean()) < 0.0006
    assert a.std() == pytest.approx(b.std(), rel=0.03)
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(a, q) == pytest.approx(np.quantile(b, q), abs=0.0026)


def test_bootstrap_is_seeded() -> None:
    d = np.random.default_rng(0).normal(size=500)
    one = paired_interval(d, np.ones(500), confidence=0.95, n_boot=500, seed=7)
    two = paired_interval(d, np.ones(500), confidence=0.95, n_boot=500, seed=7)
    other = paired_interval(d, np.ones(500), confidence=0.95, n_boot=500, seed=8)
    assert one == two and one != other


def test_normal_interval_for_many_continuous_units() -> None:
    rng = np.random.default_rng(4)
    d = rng.normal(0.01, 1, 20_000)
    iv = paired_interval(d, np.ones(d.size), confidence=0.95, n_boot=1000, seed=0)
    assert iv.method == "normal"
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert iv.ci[0] == pytest.approx(d.mean() - 1.959963985 * se, abs=1e-9)
    assert iv.bounds["0.95"][0] == pytest.approx(d.mean() - 1.644853627 * se, abs=1e-9)


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize("sd,effect", [(0.5, 0.02), (1.0, 0.1), (0.3, 0.05)])
def test_power_matches_statsmodels(sd: float, effect: float) -> None:
    n = n_needed(sd, effect, alpha=0.05, power=0.8)
    ref = NormalIndPower().solve_power(effect_size=effect / sd, alpha=0.05, power=0.8, ratio=0,
                                       alternative="larger")
    assert n == math.ceil(ref - 1e-9)
    # the MDE at that n is (just under) the effect
    assert mde(sd / math.sqrt(n)) <= effect + 1e-12
    assert mde(sd / math.sqrt(n - 1)) > effect * 0.999
    # clustering inflates the n needed by the design effect
    assert n_needed(sd, effect, design_effect=2.0) == math.ceil(2 * ref - 1e-9)
    assert n_needed(0.0, effect) is None


# --------------------------------------------------------------------------- pair stats


def _binary_pairs(rng: np.random.Generator, n: int, p10: float, p01: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    cell = rng.choice(4, size=n, p=[0.55, p10, p01, 1 - 0.55 - p10 - p01])
    return np.isin(cell, (0, 1)).astype(float), np.isin(cell, (0, 2)).astype(float)


def test_pair_stats_binary_uses_mcnemar_and_count_bootstrap() -> None:
    b, c = _binary_pairs(np.random.default_rng(0), 2000, 0.17, 0.13)
    s = pair_stats(b, c, binary=True, seed=1)
    n10 = int(((b == 1) & (c == 0)).sum())
    n01 = int(((b == 0) & (c == 1)).sum())
    assert s.counts is not None and (s.counts.n10, s.counts.n01) == (n10, n01)
    assert s.test == "mcnemar_midp" and s.ci_method == "bootstrap_counts"
    assert s.p_exact == pytest.approx(sm_mcnemar([[0, n10], [n01, 0]], exact=True).pvalue)
    assert s.mean_base == pytest.approx(b.mean()) and s.mean_cand == pytest.approx(c.mean())
    assert s.sd_base == pytest.approx(b.std(ddof=1)) and s.sd_diff == pytest.approx((c - b).std(ddof=1))
    assert s.delta == pytest.approx(c.mean() - b.mean())
    assert s.ci is not None and s.ci[0] < s.delta < s.ci[1]
    lo95, hi95 = s.bounds["0.95"]
    assert s.ci[0] < lo95 < s.delta < hi95 < s.ci[1]  # one-sided 95 % inside two-sided 95 %
    assert s.p_worse == pytest.approx(mcnemar(n10, n01).p_less_midp)
    assert s.odds_ratio == pytest.approx(n01 / n10)
    assert s.n_needed["0.02"] == n_needed(s.sd_diff or 0, 0.02)


def test_pair_stats_lower_is_better_flips_the_one_sided_p() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(100, 10, 300)
    c = b + rng.normal(3, 5, 300)  # candidate higher = worse when lower is better
    worse = pair_stats(b, c, higher_is_better=False)
    better = pair_stats(b, c, higher_is_better=True)
    assert worse.p_worse is not None and worse.p_worse < 0.001
    assert better.p_worse is not None and better.p_worse > 0.999


def test_clustered_stats_use_sessions_as_units() -> None:
    rng = np.random.default_rng(2)
    sessions = np.repeat(np.arange(400), 5)
    effect = rng.normal(0, 1, 400)[sessions]  # differences correlated within a session
    b = rng.normal(0, 1, 2000)
    c = b + 0.3 * effect + rng.normal(0, 0.3, 2000)
    flat = pair_stats(b, c)
    cl = pair_stats(b, c, clusters=sessions)
    assert cl.n_clusters == 400 and flat.n_clusters == 2000
    assert cl.test.startswith("cluster_sign_flip")
    d = c - b
    sums = np.bincount(sessions, weights=d)
    resid = sums - 5 * d.mean()
    se = math.sqrt(400 / 399 * (resid @ resid)) / 2000
    assert cl.design_effect == pytest.approx((se / (d.std(ddof=1) / math.sqrt(2000))) ** 2)
    assert cl.design_effect > 2  # correlated sessions: a wider interval than pretending not
    assert (cl.ci[1] - cl.ci[0]) > 1.4 * (flat.ci[1] - flat.ci[0])  # type: ignore[index]
    # order of cases does not matter (sessions need not be contiguous)
    perm = rng.permutation(2000)
    again = pair_stats(b[perm], c[perm], clusters=sessions[perm])
    assert again.delta == pytest.approx(cl.delta) and again.se == pytest.approx(cl.se)


def test_one_session_or_one_case_gives_no_interval() -> None:
    # Every case in one session is one independent unit: resampling it always gives the same
    # mean, which is no evidence of precision; no interval, MDE or n needed is reported.
    rng = np.random.default_rng(3)
    b = (rng.random(200) < 0.7).astype(float)
    c = np.where(rng.random(200) < 0.15, 1 - b, b)
    one = pair_stats(b, c, clusters=np.zeros(200, dtype=np.int64), binary=True)
    assert one.n == 200 and one.n_clusters == 1
    assert one.ci is None and one.bounds == {} and one.ci_method == "none" and one.se is None
    assert one.mde is None and set(one.n_needed.values()) == {None}
    assert one.design_effect == 1.0
    single = pair_stats(np.array([0.2]), np.array([0.7]))
    assert single.ci is None and single.bounds == {} and single.mde is None
    two = pair_stats(b, c, clusters=np.repeat([0, 1], 100), binary=True)
    assert two.ci is not None and two.bounds and two.mde is not None


def test_compare_metric_segments_equal_direct_subset_stats() -> None:
    rng = np.random.default_rng(3)
    b, c = _binary_pairs(rng, 1500, 0.15, 0.15)
    c[:300] = np.where(rng.random(300) < 0.3, 0.0, c[:300])  # a worse segment
    seg_values = np.array(["billing"] * 300 + ["refunds"] * 700 + ["login"] * 500)
    b[5] = np.nan  # an unpaired case
    seg = segmentation_from_values("cluster", seg_values)
    m = compare_metric("correct", "binary", b, c, segmentations=[seg], seed=3)
    assert m.analysed_as == "binary" and m.overall.n == 1499
    per = m.segments["cluster"]
    assert list(per) == ["billing", "login", "refunds"]
    ok = ~np.isnan(b)
    for value, s in per.items():
        mask = ok & (seg_values == value)
        direct = pair_stats(b[mask], c[mask], binary=True, seed=3, name=("correct", "cluster", value))
        assert s.model_dump(exclude={"p_adjusted"}) == direct.model_dump(exclude={"p_adjusted"})
    p = np.array([s.p_value for s in per.values()])
    assert np.allclose([s.p_adjusted for s in per.values()], multipletests(p, method="holm")[1])
    assert per["billing"].p_worse is not None and per["billing"].p_worse < 0.001


def test_continuous_metric_reports_wilcoxon_and_permutation_test() -> None:
    rng = np.random.default_rng(4)
    b = rng.random(600)
    c = np.clip(b + rng.normal(-0.02, 0.1, 600), 0, 1)
    m = compare_metric("similarity", "continuous", b, c)
    s = m.overall
    assert m.analysed_as == "continuous" and s.test.startswith("sign_flip_")
    assert s.p_wilcoxon == pytest.approx(stats.wilcoxon(c - b).pvalue, abs=1e-6)
    assert s.ci_method == "bootstrap_index"
    # a binary-kind metric whose per-case values are not 0/1 (averaged samples) is continuous
    assert compare_metric("x", "binary", np.array([0.5, 1.0] * 20), np.ones(40)).analysed_as == "continuous"


# --------------------------------------------------------------------------- compare_runs


def _pair(tmp: Path, n: int = 400, seed: int = 0, **kw: object) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    b, c = _binary_pairs(rng, n, 0.15, 0.15)
    sim_b = rng.random(n)
    sim_c = np.clip(sim_b + rng.normal(0, 0.05, n), 0, 1)
    args: dict[str, object] = dict(
        base={"correct": b, "similarity": sim_b}, cand={"correct": c, "similarity": sim_c},
        kinds={"correct": "binary"},
        tags={"cluster": np.array(["a", "b", "c", "d"])[np.arange(n) % 4],
              "persona": np.array(["p1", "p2"])[np.arange(n) % 2]},
        latency_base=rng.lognormal(5, 0.4, n), latency_cand=rng.lognormal(5.2, 0.4, n),
        outputs_base=[f"base answer {i}" for i in range(n)],
        outputs_cand=[f"cand answer {i}" for i in range(n)],
        inputs=[f"question <{i}>" for i in range(n)])
    args.update(kw)
    return write_run_pair(tmp, **args)  # type: ignore[arg-type]


def test_compare_runs_end_to_end(tmp_path: Path) -> None:
    es, base, cand = _pair(tmp_path)
    cmp = compare_runs(base, cand, seed=11)
    assert set(cmp.metrics) == {"correct", "similarity"}
    assert cmp.segment_keys == ["cluster", "persona"] and not cmp.clustered
    m = cmp.metrics["correct"]
    assert m.analysed_as == "binary" and m.coverage.paired == 400
    assert set(m.segments["cluster"]) == {"a", "b", "c", "d"}
    # worst regressions: only cases where the candidate got worse, with texts from the runs
    assert m.worst and all(w.base_score == 1.0 and w.cand_score == 0.0 for w in m.worst)
    w = m.worst[0]
    i = int(w.case_id.split("-")[1])
    assert (w.input, w.base_output, w.cand_output) == (f"question <{i}>", f"base answer {i}",
                                                      f"cand answer {i}")
    assert w.tags == {"cluster": "abcd"[i % 4], "persona": f"p{i % 2 + 1}"}
    # latency quantiles are the runs' quantiles
    lat = cmp.latency
    assert lat is not None
    resp = RunDir(base).responses_table().column("latency_ms").to_numpy()
    assert lat.base.quantiles["p95"] == pytest.approx(np.quantile(resp, 0.95))
    lo, hi = lat.base.bounds["p95"]["0.975"]
    assert lo <= lat.base.quantiles["p95"] <= hi
    assert lat.ratio["p50"] == pytest.approx(lat.cand.quantiles["p50"] / lat.base.quantiles["p50"])
    assert sum(lat.histogram_base) == 400
    # deterministic: the same seed gives the same numbers
    again = compare_runs(base, cand, seed=11)
    assert again.model_dump(exclude={"created_at"}) == cmp.model_dump(exclude={"created_at"})
    # round trip through comparison.json
    path = write_comparison(cmp, tmp_path / "cmp")
    assert read_comparison(tmp_path / "cmp") == cmp
    assert read_comparison(path) == cmp


def test_compare_runs_averages_samples_and_drops_scorer_failures(tmp_path: Path) -> None:
    n = 60
    ids = [f"case-{i:07d}" for i in range(n)]
    es, h = write_evalset_arrays(tmp_path / "es", n=n, sessions=[f"s{i // 3}" for i in range(n)])
    # baseline: 2 samples per case; sample 1 of case 0 failed, case 1 failed on both
    base_vals = np.concatenate([np.full(n, 1.0), np.full(n, 0.0)])
    base_vals[n + 0] = np.nan
    base_vals[1] = base_vals[n + 1] = np.nan
    base = write_run(tmp_path / "base", evalset=es, evalset_hash=h, case_ids=ids,
                     scores={"m": base_vals}, samples=2)
    cand_vals = np.full(n, 0.75)
    cand_vals[2] = np.nan
    cand = write_run(tmp_path / "cand", evalset=es, evalset_hash=h, case_ids=ids,
                     scores={"m": cand_vals})
    cmp = compare_runs(base, cand, worst=0)
    m = cmp.metrics["m"]
    cov = m.coverage
    assert (cov.paired, cov.failed_base, cov.failed_cand, cov.samples_base) == (58, 1, 1, 2)
    # case 0 keeps its one good sample (1.0); the other 57 paired cases average 1 and 0
    assert m.overall.mean_base == pytest.approx((1.0 + 0.5 * 57) / 58)
    assert cmp.clustered and cmp.n_clusters == 20
    assert any("not paired" in note for note in cmp.notes)


def test_compare_runs_respects_direction_and_reordered_scores(tmp_path: Path) -> None:
    n = 200
    rng = np.random.default_rng(5)
    lat_b = rng.normal(100, 10, n)
    es, base, cand = write_run_pair(
        tmp_path, base={"latency": lat_b}, cand={"latency": lat_b + 5},
        higher_is_better={"latency": False})
    cmp = compare_runs(base, cand)
    m = cmp.metrics["latency"]
    assert not m.higher_is_better
    assert m.overall.p_worse is not None and m.overall.p_worse < 1e-6
    assert m.worst and m.worst[0].cand_score > m.worst[0].base_score  # type: ignore[operator]
    assert compare_runs(base, cand, higher_is_better=["latency"]).metrics["latency"].higher_is_better
    # scores stored in another order pair the same way
    run = RunDir(cand)
    table = run.scores_table()
    run.write_scores(table.take(pa.array(rng.permutation(table.num_rows))))
    again = compare_runs(base, cand)
    assert again.metrics["latency"].overall.delta == pytest.approx(m.overall.delta)


def test_compare_runs_refuses_different_evalsets(tmp_path: Path) -> None:
    _, base, _ = _pair(tmp_path / "one", n=50)
    _, _, cand = _pair(tmp_path / "two", n=60)
    with pytest.raises(DataError, match="different evalsets"):
        compare_runs(base, cand)


def test_compare_runs_missing_evalset_and_bad_inputs(tmp_path: Path) -> None:
    es, base, cand = _pair(tmp_path, n=50)
    moved = tmp_path / "moved"
    es.rename(moved)
    with pytest.raises(DataError, match="cannot be opened.*--evalset|--evalset"):
        compare_runs(base, cand)
    assert compare_runs(base, cand, evalset=moved).evalset.cases == 50
    with pytest.raises(DataError, match="not in the baseline"):
        compare_runs(base, cand, evalset=moved, metrics=["nope"])
    with pytest.raises(DataError, match="not a tag"):
        compare_runs(base, cand, evalset=moved, segments=["nope"])
    with pytest.raises(DataError, match="not a run directory"):
        compare_runs(tmp_path, cand, evalset=moved)
    (cand / "scores.parquet").unlink()
    with pytest.raises(DataError, match="synthloop score"):
        compare_runs(base, cand, evalset=moved)


def test_compare_runs_unknown_case_ids(tmp_path: Path) -> None:
    es, h = write_evalset_arrays(tmp_path / "es", n=10)
    ids = [f"case-{i:07d}" for i in range(10)]
    base = write_run(tmp_path / "b", evalset=es, evalset_hash=h, case_ids=ids, scores={"m": np.ones(10)})
    cand = write_run(tmp_path / "c", evalset=es, evalset_hash=h, case_ids=ids[:9] + ["other"],
                     scores={"m": np.ones(10)})
    with pytest.raises(DataError, match="not in the evalset.*'other'"):
        compare_runs(base, cand)


def test_infinite_scores_are_refused_not_written_unreadable(tmp_path: Path) -> None:
    # an inf score made the bounds NaN, and the comparison.json written from them could not
    # be read back (`gate` then failed on a file `compare` had just written)
    vals = np.r_[np.ones(9), np.inf]
    with pytest.raises(DataError, match=r"metric 'm': baseline value inf at position 9"):
        compare_arrays({"m": vals}, {"m": np.ones(10)})
    es, base, cand = write_run_pair(tmp_path, base={"m": np.ones(10)}, cand={"m": np.ones(10)})
    run = RunDir(cand)
    table = run.scores_table()
    value = pa.array(np.r_[np.ones(9), -np.inf])
    run.write_scores(table.set_column(table.schema.get_field_index("value"), "value", value))
    with pytest.raises(DataError, match=r"scores.parquet: 1 scores are infinite.*'case-0000009'"):
        compare_runs(base, cand)


def test_compare_arrays_checks_sessions_and_segments_are_one_per_case() -> None:
    # sessions of the wrong length were used as they came (two "sessions" for ten cases,
    # silently wrong statistics); segments of the wrong length raised an IndexError
    b = np.arange(10.0)
    c = b + np.linspace(-1, 1, 10)
    with pytest.raises(DataError, match=r"sessions: 3 values for 10 cases"):
        compare_arrays({"m": b}, {"m": c}, sessions=["a", "a", "b"])
    with pytest.raises(DataError, match=r"segments\['k'\]: 14 values for 10 cases"):
        compare_arrays({"m": b}, {"m": c}, segments={"k": ["x", "y"] * 7})


def test_segment_keys_with_many_values_are_skipped(tmp_path: Path) -> None:
    n = 120
    es, base, cand = write_run_pair(
        tmp_path, base={"m": np.ones(n)}, cand={"m": np.ones(n)},
        tags={"user": [f"u{i}" for i in range(n)], "one": ["x"] * n,
              "locale": ["en", "fr", "de"] * 40})
    cmp = compare_runs(base, cand, max_segment_values=50)
    assert cmp.segment_keys == ["locale"]
    assert set(cmp.skipped_segment_keys) == {"user", "one"}
    assert compare_runs(base, cand, segments=["user"]).segment_keys == ["user"]


def test_compare_arrays_matches_compare_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    b, c = _binary_pairs(rng, 300, 0.15, 0.12)
    tags = np.array(["x", "y", "z"])[np.arange(300) % 3]
    es, base, cand = write_run_pair(tmp_path, base={"correct": b}, cand={"correct": c},
                                    kinds={"correct": "binary"}, tags={"k": tags})
    from_files = compare_runs(base, cand, seed=3).metrics["correct"]
    in_memory = compare_arrays({"correct": b}, {"correct": c}, kinds={"correct": "binary"},
                               segments={"k": tags}, seed=3).metrics["correct"]
    assert from_files.overall == in_memory.overall
    assert from_files.segments == in_memory.segments


def test_comparison_json_has_no_nan(tmp_path: Path) -> None:
    es, base, cand = write_run_pair(tmp_path, base={"m": [1.0, 1.0, 1.0]},
                                    cand={"m": [1.0, 1.0, 1.0]}, kinds={"m": "binary"})
    path = write_comparison(compare_runs(base, cand), tmp_path / "cmp")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    assert doc["metrics"]["m"]["overall"]["delta"] == 0.0
