"""Paired hypothesis tests and multiplicity corrections, vectorised with numpy.

* `mcnemar`: exact and mid-p McNemar test on the discordant counts of a binary metric.
* `sign_flip`: the paired permutation (sign-flip) test on unit sums of differences, exact for
  few non-zero units, Monte Carlo in between, normal approximation for many. With one case per
  unit it is the paired permutation test of the mean difference; with sessions as units it is
  the cluster-level test (its normal form is Durkalski's clustered McNemar statistic).
* `wilcoxon_grouped`: Wilcoxon signed-rank test for many groups at once (one sort), matching
  `scipy.stats.wilcoxon` (zero_method="wilcox", correction=False, method="auto").
* `holm`, `benjamini_hochberg`: adjusted p-values, as `statsmodels.stats.multitest`.

Alternatives follow scipy: `less` means "the candidate is lower than the baseline".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from synthloop.stats._bootstrap import norm_cdf

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: at most this many non-zero units: enumerate all 2^k sign vectors (exact p-value)
EXACT_MAX_UNITS = 16
#: the normal approximation needs at least this many non-zero units, and no unit may carry
#: more than `NORMAL_MAX_SHARE` of Σ D² (a Lindeberg-type condition); else Monte Carlo
NORMAL_MIN_UNITS = 200
NORMAL_MAX_SHARE = 0.01
#: Monte Carlo sign-flip draws
MONTE_CARLO_DRAWS = 10_000
#: groups with at most this many differences (zeros included) go to scipy.stats.wilcoxon,
#: which picks an exact or permutation null there; larger ones use the normal approximation
WILCOXON_SCIPY_MAX = 50

SignFlipMethod = Literal["exact", "monte_carlo", "normal", "none"]


@dataclass(frozen=True)
class TestResult:
    """Two-sided and both one-sided p-values of one test."""

    p_two_sided: float
    p_less: float
    """p-value for "candidate lower than baseline"."""
    p_greater: float
    """p-value for "candidate higher than baseline"."""
    method: str


@dataclass(frozen=True)
class McNemarResult:
    n10: int
    """pairs where only the baseline succeeded"""
    n01: int
    """pairs where only the candidate succeeded"""
    p_exact: float
    """two-sided exact (binomial) p-value, as statsmodels `mcnemar(exact=True)`"""
    p_midp: float
    """two-sided mid-p: the exact p-value minus the probability of the observed table"""
    p_less_midp: float
    """one-sided mid-p for "candidate lower" (many pairs where only the baseline succeeded)"""
    p_greater_midp: float
    """one-sided mid-p for "candidate higher"."""


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p) (scipy.special.bdtr, as scipy.stats.binom.cdf)."""
    from scipy import special

    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(special.bdtr(k, n, p))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X > k) for X ~ Binomial(n, p) (scipy.special.bdtrc, as scipy.stats.binom.sf)."""
    from scipy import special

    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return float(special.bdtrc(k, n, p))


def binom_pmf(k: int, n: int, p: float) -> float:
    """P(X = k) for X ~ Binomial(n, p), through log-gamma (full relative precision)."""
    from scipy import special

    if k < 0 or k > n:
        return 0.0
    if p in (0.0, 1.0):
        return float((k == 0) if p == 0.0 else (k == n))
    logp = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))
    return float(math.exp(logp))


def binom_ppf(q: NDArray[np.float64], n: int, p: float) -> IntArray:
    """Smallest k with P(X ≤ k) ≥ q, vectorised (the algorithm of scipy.stats.binom.ppf)."""
    from scipy import special

    q = np.asarray(q, dtype=np.float64)
    vals = np.ceil(special.bdtrik(q, n, p))
    vals1 = np.maximum(vals - 1, 0)
    temp = special.bdtr(vals1, n, p)
    return np.asarray(np.where(temp >= q, vals1, vals), dtype=np.int64)


def mcnemar(n10: int, n01: int) -> McNemarResult:
    """Exact and mid-p McNemar test from the two discordant counts.

    Under H0 each discordant pair is equally likely to favour either side, so
    n10 | n10 + n01 ~ Binomial(n10 + n01, 1/2).
    """
    n10, n01 = int(n10), int(n01)
    nd = n10 + n01
    if nd == 0:
        return McNemarResult(n10, n01, 1.0, 1.0, 1.0, 1.0)
    k = min(n10, n01)
    cdf_k = binom_cdf(k, nd, 0.5)
    pmf_k = binom_pmf(k, nd, 0.5)
    p_exact = min(1.0, 2.0 * cdf_k)
    p_midp = min(1.0, 2.0 * cdf_k - pmf_k)
    pmf_10 = binom_pmf(n10, nd, 0.5)
    # candidate lower  <=> many n10:  P(X > n10) + P(X = n10)/2
    p_less = binom_sf(n10, nd, 0.5) + 0.5 * pmf_10
    p_greater = binom_cdf(n10 - 1, nd, 0.5) + 0.5 * pmf_10
    return McNemarResult(n10, n01, p_exact, p_midp, min(1.0, p_less), min(1.0, p_greater))


# --------------------------------------------------------------------------- sign flip
def sign_flip(
    sums: FloatArray,
    *,
    seed: int | np.random.SeedSequence = 0,
    method: SignFlipMethod | None = None,
    draws: int = MONTE_CARLO_DRAWS,
) -> TestResult:
    """Paired permutation test of the sum of unit differences S = Σ D_u.

    `sums` holds one value per independent unit (a case, or a session's summed differences).
    Under H0 (baseline and candidate exchangeable within every unit) each D_u is equally
    likely to have either sign. Units with D_u = 0 do not affect the test.

    Method: `exact` (all 2^k sign vectors) for at most `EXACT_MAX_UNITS` non-zero units;
    `normal` (z = S / √Σ D²) for at least `NORMAL_MIN_UNITS` units none of which carries more
    than `NORMAL_MAX_SHARE` of Σ D² (a Lindeberg-type condition); else `monte_carlo` with
    `draws` seeded random sign vectors and p = (hits + 1) / (draws + 1).
    """
    d = np.asarray(sums, dtype=np.float64)
    k = int(np.count_nonzero(d))
    if k == 0:
        return TestResult(1.0, 1.0, 1.0, "none")
    s = float(d.sum())
    ss = float(np.einsum("i,i->", d, d))  # not BLAS (threads spin on large vectors)
    if method is None:
        if k <= EXACT_MAX_UNITS:
            method = "exact"
        else:
            biggest = max(float(d.max()), -float(d.min()))
            normal_ok = k >= NORMAL_MIN_UNITS and biggest * biggest <= NORMAL_MAX_SHARE * ss
            method = "normal" if normal_ok else "monte_carlo"
    if method == "none":
        return TestResult(1.0, 1.0, 1.0, "none")
    if method == "normal":
        # Var(S) under random signs is Σ D_u²
        z = s / math.sqrt(ss)
        return TestResult(min(1.0, 2.0 * norm_cdf(-abs(z))), norm_cdf(z), norm_cdf(-z), "normal")
    d = d[d != 0]
    # a tolerance for float noise when comparing resampled sums with the observed one,
    # relative to the data's scale (an absolute floor would swamp metrics in small units)
    tol = 1e-9 * float(np.abs(d).sum())
    if method == "exact":
        if k > 24:
            raise ValueError("exact sign-flip enumeration is limited to 24 units")
        dist = np.zeros(1)
        for x in np.abs(d):
            dist = np.concatenate([dist + x, dist - x])
        p_less = float(np.mean(dist <= s + tol))
        p_greater = float(np.mean(dist >= s - tol))
        p_two = float(np.mean(np.abs(dist) >= abs(s) - tol))
        return TestResult(min(1.0, p_two), p_less, p_greater, "exact")
    if method == "monte_carlo":
        rng = np.random.default_rng(seed)
        absd = np.abs(d)
        le = ge = two = 0
        total = float(absd.sum())
        # 8 units per random byte: table[j, v] = Σ |d| over the set bits of byte value v in
        # group j, so one draw is a gather of k/8 table entries (Σ_{+}|d|); then
        # Σ ±|d| = 2 Σ_{+} |d| - Σ |d|
        kb = (k + 7) // 8
        pad = np.zeros(kb * 8)
        pad[:k] = absd
        bit_of = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(np.float64)
        table = np.einsum("jb,vb->jv", pad.reshape(kb, 8), bit_of)
        cols = np.arange(kb)[None, :]
        chunk = max(1, min(draws, 2_000_000 // kb))
        done = 0
        while done < draws:
            m = min(chunk, draws - done)
            rb = np.frombuffer(rng.bytes(m * kb), dtype=np.uint8).reshape(m, kb)
            sim = 2.0 * table[cols, rb].sum(axis=1) - total
            le += int(np.count_nonzero(sim <= s + tol))
            ge += int(np.count_nonzero(sim >= s - tol))
            two += int(np.count_nonzero(np.abs(sim) >= abs(s) - tol))
            done += m
        # (count + 1) / (draws + 1): a valid p-value for a Monte Carlo test
        f = 1.0 / (draws + 1)
        return TestResult(min(1.0, (two + 1) * f), min(1.0, (le + 1) * f),
                          min(1.0, (ge + 1) * f), "monte_carlo")
    raise ValueError(f"unknown sign-flip method {method!r}")


# --------------------------------------------------------------------------- wilcoxon
def wilcoxon_grouped(d: FloatArray, groups: IntArray | None = None,
                     n_groups: int | None = None, *, order: IntArray | None = None) -> FloatArray:
    """Two-sided Wilcoxon signed-rank p-values of `d` within each group (NaN for empty groups).

    Zeros are dropped (Wilcoxon's method), ties get average ranks with the tie correction,
    no continuity correction: the defaults of `scipy.stats.wilcoxon`. Groups with at most
    `WILCOXON_SCIPY_MAX` values are handed to scipy (exact or permutation null, as its
    `method="auto"` decides); the rest share one sort: `order` may pass a precomputed stable
    `argsort(|d|)` so that several groupings of the same differences sort only once.
    """
    from scipy import special  # lazy: scipy is slow to import

    d = np.asarray(d, dtype=np.float64)
    if groups is None:
        groups = np.zeros(d.size, dtype=np.int64)
        n_groups = 1
    groups = np.asarray(groups, dtype=np.int64)
    if n_groups is None:
        n_groups = int(groups.max()) + 1 if groups.size else 0
    out = np.full(n_groups, np.nan)
    if d.size == 0 or n_groups == 0:
        return out
    sizes = np.bincount(groups, minlength=n_groups)
    small = (sizes > 0) & (sizes <= WILCOXON_SCIPY_MAX)
    for g in np.flatnonzero(small):
        from scipy import stats  # only for small groups (exact / permutation null)

        dg = d[groups == g]
        if np.all(dg == 0):
            continue  # scipy returns NaN here too
        out[g] = float(stats.wilcoxon(dg).pvalue)
    large = sizes > WILCOXON_SCIPY_MAX
    if not large.any():
        return out
    keep = large[groups] & (d != 0)
    if order is None:
        order = np.argsort(np.abs(d), kind="stable")
    o = order[keep[order]]
    if n_groups > 1:
        g_o = groups[o]
        key = g_o.astype(np.int16) if n_groups < 2**15 else g_o
        o = o[np.argsort(key, kind="stable")]  # radix sort: by group, then |d|
    x = d[o]
    a_s = np.abs(x)
    g_s = groups[o]
    pos_s = x > 0
    m = a_s.size
    if m == 0:
        return out
    # runs of equal (group, |d|): average ranks and tie sizes
    new_run = np.empty(m, dtype=bool)
    new_run[0] = True
    new_run[1:] = (a_s[1:] != a_s[:-1]) | (g_s[1:] != g_s[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, m))
    new_group = np.empty(m, dtype=bool)
    new_group[0] = True
    new_group[1:] = g_s[1:] != g_s[:-1]
    group_start_pos = np.flatnonzero(new_group)
    group_of_start = g_s[group_start_pos]
    first_pos = np.zeros(n_groups, dtype=np.int64)
    first_pos[group_of_start] = group_start_pos
    # rank within group of the run: start position - group start + (len + 1) / 2
    run_group = g_s[run_start]
    run_rank = (run_start - first_pos[run_group]) + (run_len + 1) / 2.0
    ranks = run_rank[run_id]
    r_plus = np.bincount(g_s, weights=ranks * pos_s, minlength=n_groups)
    count = np.bincount(g_s, minlength=n_groups).astype(np.float64)
    tie = np.bincount(run_group, weights=run_len.astype(np.float64) ** 3 - run_len,
                      minlength=n_groups)
    mn = count * (count + 1.0) * 0.25
    var = (count * (count + 1.0) * (2.0 * count + 1.0) - tie / 2.0) / 24.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (r_plus - mn) / np.sqrt(var)
        p = 2.0 * special.ndtr(-np.abs(z))
    sel = large & (count > 0)
    out[sel] = p[sel]
    return out


def wilcoxon(d: FloatArray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of one sample of differences."""
    return float(wilcoxon_grouped(d)[0])


# --------------------------------------------------------------------------- multiplicity
Correction = Literal["holm", "bh"]


def holm(p: FloatArray) -> FloatArray:
    """Holm step-down adjusted p-values (NaNs stay NaN and are not counted)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def benjamini_hochberg(p: FloatArray) -> FloatArray:
    """Benjamini–Hochberg (false discovery rate) adjusted p-values; NaNs stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def adjust(p: FloatArray, method: Correction) -> FloatArray:
    """Adjusted p-values by `method` (`holm` or `bh`)."""
    if method == "holm":
        return holm(p)
    if method == "bh":
        return benjamini_hochberg(p)
    raise ValueError(f"unknown correction {method!r}")
