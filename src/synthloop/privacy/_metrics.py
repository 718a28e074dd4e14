"""Privacy measures of synthetic tables and texts against the real data they came from.

Pure numpy/pandas, vectorised, no I/O. Each function takes plain DataFrames (or lists of
texts) and a column → sdtype mapping (`numerical`, `datetime`, `categorical`, `boolean`; any
other sdtype, e.g. `id` or `text`, is ignored, as SDMetrics does).

Distances follow SDMetrics 0.32 (`sdmetrics.single_table.privacy.dcr_utils`) exactly:

- numerical / datetime column: `min(|a - b| / range, 1)` where `range = max - min` of the
  *reference* table (datetimes in seconds); a zero range gives `0` when equal, else `1`;
  missing on one side only gives `1`, missing on both sides `0`;
- categorical / boolean column: `0` when equal (or both missing), else `1`;
- row distance: the mean over the columns; DCR: the distance to the closest reference row.

SDMetrics builds a cross-joined DataFrame per 1,000 × 1,000 chunk (50–80 s for 5,000 × 5,000
rows here). This module computes the same numbers with float32 matrix operations: each
numerical column adds `|a_i - b_j|` into a small block of the distance matrix (clipped only when
a value lies outside the reference range, where the clip can bite), and all low-cardinality
categorical columns together add `n_categorical - onehot(a) @ onehot(b).T` (one matrix
product). 10,000 × 10,000 rows take about a second per pass on one core.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

DISTANCE_SDTYPES = ("numerical", "datetime", "categorical", "boolean")
_NUMERIC = ("numerical", "datetime")
_ONEHOT_MAX_CARDINALITY = 48
_BLOCK_CELLS = 1 << 15  # distance-matrix block: rows x reference rows (small: stays in cache)


# --------------------------------------------------------------------------- encoding
def distance_columns(sdtypes: Mapping[str, str], *frames: pd.DataFrame) -> list[str]:
    """Columns that count for distances: a distance sdtype and present in every frame."""
    cols = [c for c, t in sdtypes.items() if t in DISTANCE_SDTYPES]
    return [c for c in cols if all(c in f.columns for f in frames)]


def _as_float(s: pd.Series, sdtype: str) -> np.ndarray:
    """A column as float64 (datetimes as seconds since the epoch), NaN for missing."""
    if sdtype == "datetime" or pd.api.types.is_datetime64_any_dtype(s):
        t = pd.to_datetime(s, utc=True, errors="coerce")
        ns = t.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
        ns[t.isna().to_numpy()] = np.nan
        return ns / 1e9
    if s.dtype == bool or pd.api.types.is_bool_dtype(s):
        return s.astype("float64").to_numpy()
    return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()


def _codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of two categorical columns over their joint values (missing = a code)."""
    joint = pd.concat([a.astype(object), b.astype(object)], ignore_index=True)
    codes, uniques = pd.factorize(joint, use_na_sentinel=False)
    n = len(a)
    return codes[:n].astype(np.int32), codes[n:].astype(np.int32), len(uniques)


@dataclass
class _Encoded:
    """Dataset and reference rows encoded for one DCR computation."""

    n_columns: int
    num_a: np.ndarray  # (n_a, k) float32, scaled by the reference range
    num_b: np.ndarray  # (k, n_b) float32
    clip: list[bool]  # per numerical column: can a difference exceed 1?
    oh_a: np.ndarray | None  # (n_a, w) float32 one-hot of low-cardinality categoricals
    oh_b: np.ndarray | None  # (w, n_b)
    n_onehot: int
    eq_a: np.ndarray  # (n_a, m) int32 codes of high-cardinality categoricals
    eq_b: np.ndarray  # (m, n_b)
    columns: list[str] = field(default_factory=list)


def _encode(dataset: pd.DataFrame, reference: pd.DataFrame, sdtypes: Mapping[str, str]) -> _Encoded:
    cols = distance_columns(sdtypes, dataset, reference)
    if not cols:
        raise ValueError("There are no overlapping statistical columns to measure.")
    num_a: list[np.ndarray] = []
    num_b: list[np.ndarray] = []
    clip: list[bool] = []
    oh_blocks_a: list[np.ndarray] = []
    oh_blocks_b: list[np.ndarray] = []
    eq_a: list[np.ndarray] = []
    eq_b: list[np.ndarray] = []
    for c in cols:
        kind = sdtypes[c]
        if kind in _NUMERIC:
            a = _as_float(dataset[c], kind)
            b = _as_float(reference[c], kind)
            lo, hi = np.nanmin(b) if np.isfinite(b).any() else np.nan, (
                np.nanmax(b) if np.isfinite(b).any() else np.nan)
            rng = hi - lo
            if not np.isfinite(rng) or rng == 0:
                # zero (or undefined) range: SDMetrics scores 0 when equal, else 1 -> a category
                ca, cb, _ = _codes(pd.Series(a), pd.Series(b))
                eq_a.append(ca)
                eq_b.append(cb)
                continue
            sa = (a - lo) / rng
            sb = (b - lo) / rng
            nan_a, nan_b = np.isnan(sa), np.isnan(sb)
            needs_clip = bool(nan_a.any() or nan_b.any() or (sa[~nan_a] < 0).any()
                              or (sa[~nan_a] > 1).any())
            if nan_a.any() or nan_b.any():
                # a missing value sits so far away that any difference with a present value
                # clips to 1, while two missing values differ by 0
                far = float(np.nanmax(np.abs(np.concatenate([sa[~nan_a], sb[~nan_b], [1.0]])))) * 4 + 10
                sa = np.where(nan_a, far, sa)
                sb = np.where(nan_b, far, sb)
            num_a.append(sa.astype(np.float32))
            num_b.append(sb.astype(np.float32))
            clip.append(needs_clip)
        else:
            ca, cb, card = _codes(dataset[c], reference[c])
            if card <= _ONEHOT_MAX_CARDINALITY:
                oa = np.zeros((len(ca), card), np.float32)
                oa[np.arange(len(ca)), ca] = 1.0
                ob = np.zeros((len(cb), card), np.float32)
                ob[np.arange(len(cb)), cb] = 1.0
                oh_blocks_a.append(oa)
                oh_blocks_b.append(ob)
            else:
                eq_a.append(ca)
                eq_b.append(cb)
    n_a, n_b = len(dataset), len(reference)
    return _Encoded(
        n_columns=len(cols),
        num_a=np.stack(num_a, axis=1) if num_a else np.zeros((n_a, 0), np.float32),
        num_b=np.ascontiguousarray(np.stack(num_b, axis=0)) if num_b else np.zeros((0, n_b), np.float32),
        clip=clip,
        oh_a=np.concatenate(oh_blocks_a, axis=1) if oh_blocks_a else None,
        oh_b=np.ascontiguousarray(np.concatenate(oh_blocks_b, axis=1).T) if oh_blocks_b else None,
        n_onehot=len(oh_blocks_a),
        eq_a=np.stack(eq_a, axis=1) if eq_a else np.zeros((n_a, 0), np.int32),
        eq_b=np.ascontiguousarray(np.stack(eq_b, axis=0)) if eq_b else np.zeros((0, n_b), np.int32),
        columns=cols,
    )


# --------------------------------------------------------------------------- DCR
@dataclass
class NearestRecords:
    """Distances from each dataset row to its closest and second-closest reference rows."""

    nearest: np.ndarray
    second: np.ndarray | None
    columns: list[str]


def nearest_records(
    dataset: pd.DataFrame,
    reference: pd.DataFrame,
    sdtypes: Mapping[str, str],
    *,
    second: bool = False,
) -> NearestRecords:
    """Distance to the closest reference record (and the second closest), SDMetrics' metric."""
    n_a, n_b = len(dataset), len(reference)
    if n_b == 0:
        raise ValueError("the reference table is empty")
    enc = _encode(dataset.reset_index(drop=True), reference.reset_index(drop=True), sdtypes)
    nearest = np.empty(n_a, np.float64)
    second_d = np.empty(n_a, np.float64) if second else None
    rows = max(4, min(n_a, _BLOCK_CELLS // max(n_b, 1)))
    block = np.empty((rows, n_b), np.float32)
    tmp = np.empty((rows, n_b), np.float32)
    k_num = enc.num_a.shape[1]
    scale = np.float32(1.0 / enc.n_columns)
    for start in range(0, n_a, rows):
        stop = min(start + rows, n_a)
        r = stop - start
        d = block[:r]
        t = tmp[:r]
        if enc.oh_a is not None and enc.oh_b is not None:
            np.matmul(enc.oh_a[start:stop], enc.oh_b, out=d)
            np.subtract(np.float32(enc.n_onehot), d, out=d)
        else:
            d.fill(0.0)
        for j in range(k_num):
            np.subtract(enc.num_a[start:stop, j, None], enc.num_b[j][None, :], out=t)
            np.abs(t, out=t)
            if enc.clip[j]:
                np.minimum(t, np.float32(1.0), out=t)
            d += t
        for j in range(enc.eq_a.shape[1]):
            d += enc.eq_a[start:stop, j, None] != enc.eq_b[j][None, :]
        d *= scale
        if second_d is None or n_b < 2:
            nearest[start:stop] = d.min(axis=1)
            if second_d is not None:
                second_d[start:stop] = np.inf
        else:
            idx = d.argmin(axis=1)
            ar = np.arange(r)
            nearest[start:stop] = d[ar, idx]
            d[ar, idx] = np.inf
            second_d[start:stop] = d.min(axis=1)
    # float32 accumulation: snap values within rounding error of 0 back to 0 (exact copies)
    nearest[np.abs(nearest) < 1e-6] = 0.0
    if second_d is not None:
        second_d[np.abs(second_d) < 1e-6] = 0.0
    return NearestRecords(nearest=nearest, second=second_d, columns=enc.columns)


def dcr(dataset: pd.DataFrame, reference: pd.DataFrame, sdtypes: Mapping[str, str]) -> np.ndarray:
    """Distance to closest record of every dataset row (SDMetrics' `calculate_dcr`)."""
    return nearest_records(dataset, reference, sdtypes).nearest


def random_baseline(real: pd.DataFrame, n: int, seed: int | None) -> pd.DataFrame:
    """Uniformly random rows within the real columns' ranges, as SDMetrics generates them.

    Integers: uniform integers in [min, max]; floats: uniform in [min, max); datetimes: uniform
    in [min, max]; anything else: uniform over the observed values; each column keeps its share
    of missing values. Values come from `numpy.random.default_rng(seed)` and the missing-value
    masks from `numpy.random.RandomState(seed)`, column by column, so that seeding SDMetrics
    (`DCRBaselineProtection._seed = seed` and `numpy.random.seed(seed)`) draws the same table.
    """
    values_rng = np.random.default_rng(seed)
    mask_rng = np.random.RandomState(seed)
    out: dict[str, pd.Series] = {}
    for col in real.columns:
        s = real[col]
        nan_ratio = float(s.isna().mean()) if len(s) else 0.0
        values: Any
        if pd.api.types.is_integer_dtype(s):
            values = values_rng.integers(low=s.min(), high=s.max() + 1, size=n)
        elif pd.api.types.is_float_dtype(s):
            values = values_rng.uniform(low=s.min(), high=s.max(), size=n)
        elif pd.api.types.is_datetime64_any_dtype(s):
            lo, hi = s.min(), s.max()
            total = (hi - lo).total_seconds()
            values = lo + pd.to_timedelta(values_rng.uniform(low=0, high=total, size=n), unit="s")
        else:
            values = values_rng.choice(s.dropna().unique(), size=n)
        mask = mask_rng.rand(n) < nan_ratio
        series = pd.Series(values)
        if pd.api.types.is_datetime64_any_dtype(s):
            series[mask] = pd.NaT
        else:
            if mask.any() and pd.api.types.is_integer_dtype(series):
                series = series.astype("float64")
            series[mask] = np.nan
        out[col] = series
    return pd.DataFrame(out)


def dcr_baseline_protection(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    sdtypes: Mapping[str, str],
    *,
    seed: int | None = None,
    random_data: pd.DataFrame | None = None,
    synthetic_dcr: np.ndarray | None = None,
) -> dict[str, Any]:
    """SDMetrics' DCRBaselineProtection: median synthetic DCR over median random-data DCR.

    Score `min(median DCR(synthetic → real) / median DCR(random → real), 1)`; 1 means the
    synthetic rows are no closer to real rows than random rows are. `None` when the random
    baseline's median is 0 (every column collides by chance: the measure is undefined).
    """
    if random_data is None:
        random_data = random_baseline(real, len(synthetic), seed)
    syn = dcr(synthetic, real, sdtypes) if synthetic_dcr is None else synthetic_dcr
    rnd = dcr(random_data, real, sdtypes)
    syn_median = float(np.median(syn))
    rnd_median = float(np.median(rnd))
    score = None if rnd_median == 0.0 else min(syn_median / rnd_median, 1.0)
    return {
        "score": score,
        "median_dcr_synthetic": syn_median,
        "median_dcr_random": rnd_median,
    }


def dcr_overfitting_protection(
    training: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    sdtypes: Mapping[str, str],
    *,
    holdout_dcr: np.ndarray | None = None,
) -> dict[str, Any]:
    """SDMetrics' DCROverfittingProtection: share of synthetic rows closer to training rows.

    Score `min(2 × (1 − share closer to training than to holdout), 1)`; 1 means synthetic rows
    are no closer to the rows the model saw than to real rows it never saw. Ties count as
    "not closer", as in SDMetrics. Compare a training table of the holdout's size: a larger
    training table is closer by chance alone.
    """
    d_train = dcr(synthetic, training, sdtypes)
    d_hold = dcr(synthetic, holdout, sdtypes) if holdout_dcr is None else holdout_dcr
    closer = float(np.where(d_train < d_hold, 1.0, 0.0).sum() / max(len(d_train), 1))
    return {
        "score": min((1.0 - closer) * 2, 1.0),
        "closer_to_training": closer,
        "closer_to_holdout": 1.0 - closer,
        "training_rows": len(training),
        "holdout_rows": len(holdout),
    }


def nndr(nearest: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance ratio d1 / d2 per row (0 for an exact copy, 1 = no standout)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(second > 0, nearest / np.where(second > 0, second, 1.0), 0.0)
    ratio[nearest == 0] = 0.0
    return np.clip(ratio, 0.0, 1.0)


def summarize(values: np.ndarray) -> dict[str, float | None]:
    """Mean, median and 5th percentile (None when empty)."""
    if len(values) == 0:
        return {"mean": None, "median": None, "p05": None}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p05": float(np.quantile(values, 0.05)),
    }


# --------------------------------------------------------------------------- exact copies
def _row_hashes(frame: pd.DataFrame, columns: Sequence[str], sdtypes: Mapping[str, str]) -> np.ndarray:
    parts: dict[str, Any] = {}
    for c in columns:
        kind = sdtypes.get(c, "categorical")
        s = frame[c]
        if kind in _NUMERIC:
            v = _as_float(s, kind)
            parts[c] = np.where(np.isnan(v), np.nan, np.round(v, 9))
        else:
            parts[c] = s.astype(object).where(s.notna(), None).map(
                lambda x: None if x is None else str(x)).to_numpy(dtype=object)
    norm = pd.DataFrame(parts, index=range(len(frame)))
    return pd.util.hash_pandas_object(norm, index=False).to_numpy()


def exact_copy_rate(
    dataset: pd.DataFrame, reference: pd.DataFrame, sdtypes: Mapping[str, str]
) -> dict[str, Any]:
    """Share of dataset rows identical to some reference row on every distance column."""
    cols = distance_columns(sdtypes, dataset, reference)
    if not cols or len(dataset) == 0:
        return {"rate": 0.0, "count": 0, "rows": len(dataset), "columns": len(cols)}
    ref = set(_row_hashes(reference, cols, sdtypes).tolist())
    mine = _row_hashes(dataset, cols, sdtypes)
    hits = np.fromiter((h in ref for h in mine.tolist()), dtype=bool, count=len(mine))
    return {"rate": float(hits.mean()), "count": int(hits.sum()), "rows": len(dataset),
            "columns": len(cols)}


# --------------------------------------------------------------------------- near-duplicate text
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, case folded, whitespace collapsed: the form texts are compared in."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_shingles(texts: Sequence[str], k: int = 5) -> list[np.ndarray]:
    """Sorted unique 64-bit hashes of each text's byte k-grams (texts shorter than k: whole text)."""
    out: list[np.ndarray] = []
    powers = (np.uint64(1099511628211) ** np.arange(k - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
    for t in texts:
        b = np.frombuffer(normalize_text(t).encode("utf-8"), dtype=np.uint8).astype(np.uint64)
        if len(b) == 0:
            out.append(np.zeros(0, np.uint64))
            continue
        if len(b) < k:
            b = np.concatenate([b, np.zeros(k - len(b), np.uint64)])
        win = np.lib.stride_tricks.sliding_window_view(b, k)
        with np.errstate(over="ignore"):
            h = (win * powers).sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(29)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(32)
        out.append(np.unique(h))
    return out


def _minhash(shingles: list[np.ndarray], num_perm: int, seed: int) -> np.ndarray:
    """(n, num_perm) MinHash signatures; empty texts get all-max rows (never candidates)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    sig = np.full((len(shingles), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    lengths = np.array([len(s) for s in shingles])
    nonempty = np.flatnonzero(lengths)
    if len(nonempty) == 0:
        return sig
    flat = np.concatenate([shingles[i] for i in nonempty])
    starts = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
    column = np.empty(len(flat), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for p in range(num_perm):  # one permutation at a time bounds memory to one column
            np.multiply(flat, a[p], out=column)
            column += b[p]
            column >>= np.uint64(3)
            sig[nonempty, p] = np.minimum.reduceat(column, starts)
    return sig


def _jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def near_duplicates(
    texts: Sequence[str],
    reference: Sequence[str],
    *,
    threshold: float = 0.8,
    k: int = 5,
    num_perm: int = 64,
    bands: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Highest Jaccard similarity (byte k-gram sets) of each text to any reference text.

    Candidates come from MinHash + LSH banding (`num_perm / bands` rows per band: a pair at the
    threshold 0.8 is a candidate with probability > 0.999); every candidate is verified with the
    exact Jaccard similarity. Values below the threshold are reported as found (a lower bound
    on the true maximum), values at or above it are exact.
    """
    best = np.zeros(len(texts), np.float64)
    if not texts or not reference:
        return best
    if num_perm % bands:
        raise ValueError("num_perm must be a multiple of bands")
    # compare distinct normalised texts only; map the results back at the end
    norm_t = [normalize_text(t) for t in texts]
    uniq_t, inverse = np.unique(np.array(norm_t, dtype=object), return_inverse=True)
    uniq_r = sorted({normalize_text(t) for t in reference})
    sh_t = text_shingles(list(uniq_t), k)
    sh_r = text_shingles(uniq_r, k)
    sig_t = _minhash(sh_t, num_perm, seed)
    sig_r = _minhash(sh_r, num_perm, seed)
    rows = num_perm // bands
    empty_t = np.array([len(s) == 0 for s in sh_t])
    empty_r = np.array([len(s) == 0 for s in sh_r])
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        cols = slice(band * rows, (band + 1) * rows)
        kt = _band_keys(sig_t[:, cols])
        kr = _band_keys(sig_r[:, cols])
        kt[empty_t] = 0
        kr[empty_r] = 1  # never equal to an empty text's key
        order = np.argsort(kr, kind="stable")
        kr_sorted = kr[order]
        lo = np.searchsorted(kr_sorted, kt, side="left")
        hi = np.searchsorted(kr_sorted, kt, side="right")
        for i in np.flatnonzero((hi > lo) & ~empty_t).tolist():
            candidates.update((i, j) for j in order[lo[i]:hi[i]].tolist())
    best_u = np.zeros(len(uniq_t), np.float64)
    for i, j in candidates:
        sim = _jaccard_sorted(sh_t[i], sh_r[j])
        if sim > best_u[i]:
            best_u[i] = sim
    return best_u[inverse]


def _band_keys(block: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = np.full(block.shape[0], np.uint64(1469598103934665603), dtype=np.uint64)
        for c in range(block.shape[1]):
            h ^= block[:, c]
            h *= np.uint64(1099511628211)
        h |= np.uint64(2)  # keys 0 and 1 are reserved for empty texts
    return h


def near_duplicate_rate(
    texts: Sequence[str], reference: Sequence[str], *, threshold: float = 0.8, k: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Share of `texts` with Jaccard similarity ≥ threshold to some reference text."""
    sims = near_duplicates(texts, reference, threshold=threshold, k=k, seed=seed)
    hits = sims >= threshold
    return {
        "rate": float(hits.mean()) if len(sims) else 0.0,
        "count": int(hits.sum()),
        "checked": len(sims),
        "reference_texts": len(reference),
        "threshold": threshold,
        "shingle": f"{k}-byte",
        "max_similarity": float(sims.max()) if len(sims) else 0.0,
        "indices": np.flatnonzero(hits).tolist(),
    }


# --------------------------------------------------------------------------- canaries
def canary_hits(
    texts: Iterable[str],
    canaries: Sequence[str],
) -> dict[str, int]:
    """How many texts contain each canary string (case-insensitive, whitespace-normalised)."""
    needles = [(c, normalize_text(c)) for c in canaries if normalize_text(c)]
    counts = {c: 0 for c, _ in needles}
    if not needles:
        return counts
    for t in texts:
        if not t:
            continue
        nt = normalize_text(t)
        for c, n in needles:
            if n in nt:
                counts[c] += 1
    return counts


def numeric_canary_hits(
    frame: pd.DataFrame, columns: Sequence[str], values: Sequence[float], *, rel_tol: float = 1e-9
) -> dict[str, int]:
    """How many cells of the numerical `columns` equal each canary value."""
    counts: dict[str, int] = {}
    arrays = [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64") for c in columns
              if c in frame.columns]
    for v in values:
        tol = abs(v) * rel_tol + 1e-12
        counts[repr(v)] = int(sum(int(np.sum(np.abs(a - v) <= tol)) for a in arrays))
    return counts
