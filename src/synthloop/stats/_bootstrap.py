"""Seeded, vectorised paired bootstrap of the mean difference (candidate − baseline).

The statistic is δ = Σ_u D_u / Σ_u m_u over units u (a case, or a session when cases are
clustered), where D_u is the unit's summed difference and m_u its number of cases. Resampling
units with replacement is the (cluster) paired bootstrap. Three ways to draw it, all seeded:

* `counts`: when the units take few distinct (m_u, D_u) values (binary and ordinal metrics,
  short sessions), a resample is fully described by how often each *type* is drawn, which is
  one multinomial draw: exact (the same distribution as resampling units) and O(B × types).
* `index`: resample unit indices, `rng.integers(0, G, (chunk, G))` per chunk, exactly as
  `scipy.stats.bootstrap(..., paired=True, batch=chunk)` draws them. O(B × G).
* `normal`: above `BOOT_MAX_UNITS` units of a continuous metric, the normal approximation
  δ ± z·SE with the (cluster-robust) standard error; at that size the two agree to within the
  bootstrap's own Monte Carlo error.

Intervals are percentile intervals (`numpy.quantile`, linear interpolation, as scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: confidence levels at which one-sided bounds are stored (a gate rule picks one of them)
LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)
#: default bootstrap resamples
N_BOOT = 2000
#: index bootstrap up to this many units; above it, `counts` if the types are few, else normal
BOOT_MAX_UNITS = 5_000
#: the `counts` bootstrap is used up to this many distinct unit types
BOOT_MAX_TYPES = 5_000
#: rows of resampled indices drawn at once by the index bootstrap
INDEX_CHUNK = 500

BootMethod = Literal["bootstrap_counts", "bootstrap_index", "normal", "none"]


def level_key(level: float) -> str:
    """The JSON key of a confidence level: `0.95` → `"0.95"`."""
    return f"{level:g}"


_STD_NORMAL = NormalDist()


def z_value(p: float) -> float:
    """Standard normal quantile."""
    return _STD_NORMAL.inv_cdf(p)


def norm_cdf(z: float) -> float:
    """Standard normal CDF, accurate in the tails (erfc, not 1 + erf)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@dataclass(frozen=True)
class Interval:
    """Bounds of δ: one-sided lower/upper bounds at each of `LEVELS`, and a two-sided CI."""

    method: BootMethod
    bounds: dict[str, tuple[float, float]]
    ci: tuple[float, float]
    se: float
    """standard error: of the bootstrap distribution, or the analytic one for `normal`."""


def units_from_cases(d: FloatArray, clusters: NDArray[np.int64] | None) -> tuple[FloatArray, FloatArray]:
    """(D_u, m_u): per-unit sums of differences and case counts (units = clusters or cases)."""
    d = np.asarray(d, dtype=np.float64)
    if clusters is None:
        return d, np.ones(d.size)
    codes, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=d, minlength=codes.size).astype(np.float64)
    counts = np.bincount(inverse, minlength=codes.size).astype(np.float64)
    return sums, counts


def bootstrap_index(sums: FloatArray, sizes: FloatArray, *, n_boot: int, seed: int | np.random.SeedSequence,
                    chunk: int = INDEX_CHUNK) -> FloatArray:
    """Bootstrap distribution of Σ D / Σ m by resampling unit indices (scipy's draws)."""
    rng = np.random.default_rng(seed)
    g = sums.size
    out = np.empty(n_boot)
    unit = bool(np.all(sizes == 1.0))
    for k in range(0, n_boot, chunk):
        m = min(chunk, n_boot - k)
        idx = rng.integers(0, g, (m, g))
        if unit:
            out[k:k + m] = sums[idx].mean(axis=1)
        else:
            out[k:k + m] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return out


def unit_types(sums: FloatArray, sizes: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64]] | None:
    """Distinct (m_u, D_u) pairs and their frequencies, or None when there are too many."""
    if sums.size == 0:
        return None
    if not (np.all(sums == np.round(sums)) and np.all(sizes == np.round(sizes))):
        return None
    m_max = int(sizes.max())
    d_min = int(sums.min())
    d_span = int(sums.max()) - d_min + 1
    if d_span * (m_max + 1) > 50_000_000:
        return None
    key = (sums.astype(np.int64) - d_min) * (m_max + 1) + sizes.astype(np.int64)
    freq = np.bincount(key)
    types = np.flatnonzero(freq)
    if types.size > BOOT_MAX_TYPES:
        return None
    t_sums = (types // (m_max + 1) + d_min).astype(np.float64)
    t_sizes = (types % (m_max + 1)).astype(np.float64)
    return t_sums, t_sizes, freq[types].astype(np.int64)


def bootstrap_counts(t_sums: FloatArray, t_sizes: FloatArray, freq: NDArray[np.int64], *,
                     n_boot: int, seed: int | np.random.SeedSequence) -> FloatArray:
    """Bootstrap distribution of Σ D / Σ m by drawing how often each unit type is resampled."""
    rng = np.random.default_rng(seed)
    g = int(freq.sum())
    draws = rng.multinomial(g, freq / g, size=n_boot).astype(np.float64)
    # einsum, not BLAS: BLAS threads spin and contend on small products
    num = np.einsum("bt,t->b", draws, t_sums)
    den = np.einsum("bt,t->b", draws, t_sizes)
    return np.asarray(num / den, dtype=np.float64)


def percentile_interval(dist: FloatArray, confidence: float, method: BootMethod) -> Interval:
    """Percentile bounds of a bootstrap distribution at every level, plus a two-sided CI."""
    probs = [1.0 - lv for lv in LEVELS] + list(LEVELS) + [(1 - confidence) / 2, (1 + confidence) / 2]
    q = np.quantile(dist, probs)
    k = len(LEVELS)
    bounds = {level_key(lv): (float(q[i]), float(q[k + i])) for i, lv in enumerate(LEVELS)}
    se = float(np.std(dist, ddof=1)) if dist.size > 1 else 0.0
    return Interval(method, bounds, (float(q[-2]), float(q[-1])), se)


def normal_interval(estimate: float, se: float, confidence: float) -> Interval:
    """δ ± z·SE bounds at every level, plus a two-sided CI."""
    bounds = {}
    for lv in LEVELS:
        z = z_value(lv)
        bounds[level_key(lv)] = (estimate - z * se, estimate + z * se)
    zc = z_value((1 + confidence) / 2)
    return Interval("normal", bounds, (estimate - zc * se, estimate + zc * se), se)


def cluster_se(sums: FloatArray, sizes: FloatArray, *, single: bool | None = None) -> float:
    """Standard error of Σ D / Σ m: sample sd / √n for single cases, cluster-robust otherwise.

    `single` says whether every unit is one case (checked when None)."""
    g = sums.size
    if g < 2:
        return 0.0
    if single is None:
        single = bool(np.all(sizes == 1.0))
    if single:
        return float(np.std(sums, ddof=1) / np.sqrt(g))
    n = float(sizes.sum())
    resid = sums - sizes * (float(sums.sum()) / n)
    return float(np.sqrt(g / (g - 1) * np.einsum("i,i->", resid, resid)) / n)


Types = tuple[FloatArray, FloatArray, NDArray[np.int64]]


def paired_interval(sums: FloatArray, sizes: FloatArray, *, confidence: float, n_boot: int,
                    seed: int | np.random.SeedSequence,
                    method: BootMethod | None = None, types: Types | None = None) -> Interval:
    """Interval for δ = Σ D / Σ m from unit sums, choosing the cheapest exact method.

    Automatic choice: `index` for at most 64 units; `counts` when the units have fewer than
    a quarter as many distinct (m, D) types as units (`types` may pass them precomputed);
    else `index` up to `BOOT_MAX_UNITS` units; else `normal`. Fewer than two units: no
    interval (`none`), as one unit says nothing about the spread.
    """
    g = sums.size
    if g < 2:
        # one independent unit (one case, or every case in one session): resampling it gives
        # the same value every time, which is no evidence of precision; no interval
        return Interval("none", {}, (float("nan"), float("nan")), float("nan"))
    est = float(sums.sum() / sizes.sum())
    if method is None:
        if g > 64:
            if types is None:
                types = unit_types(sums, sizes)
            if types is not None and types[0].size * 4 < g:
                dist = bootstrap_counts(*types, n_boot=n_boot, seed=seed)
                return percentile_interval(dist, confidence, "bootstrap_counts")
        method = "bootstrap_index" if g <= BOOT_MAX_UNITS else "normal"
    if method == "bootstrap_counts":
        if types is None:
            types = unit_types(sums, sizes)
        if types is None:
            raise ValueError("too many distinct unit types for the counts bootstrap")
        return percentile_interval(bootstrap_counts(*types, n_boot=n_boot, seed=seed),
                                   confidence, "bootstrap_counts")
    if method == "bootstrap_index":
        return percentile_interval(bootstrap_index(sums, sizes, n_boot=n_boot, seed=seed),
                                   confidence, "bootstrap_index")
    return normal_interval(est, cluster_se(sums, sizes), confidence)
