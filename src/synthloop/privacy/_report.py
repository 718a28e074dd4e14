"""The privacy report of a synthetic table, and the gate that decides whether it may be written.

    report = privacy_report(PrivacyInputs(training=..., synthetic=..., holdout=..., sdtypes=...),
                            PrivacyThresholds())
    report.passed            # False -> synthloop refuses to write the result (exit code 4)
    report.model_dump()      # -> privacy_report.json

Measures (see `synthloop.privacy._metrics` for the definitions):

- exact copies: synthetic rows identical to a training row on every compared column, next to
  the share of *held-out real* rows identical to a training row (what distinct real users
  share by chance on these columns);
- DCR baseline protection and DCR overfitting protection, as SDMetrics defines them, plus the
  median synthetic DCR over the median held-out DCR (both to the training rows);
- nearest-neighbour distance ratio (NNDR) of the synthetic rows;
- near-duplicate texts: synthetic texts whose character 5-gram Jaccard similarity with a real
  prompt outside the k-anonymous pool reaches the threshold (pool prompts are reused on
  purpose and are reported separately);
- PII found in synthetic texts and values, and planted canaries found anywhere in the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

from synthloop.privacy._metrics import (
    canary_hits,
    dcr,
    dcr_baseline_protection,
    dcr_overfitting_protection,
    distance_columns,
    exact_copy_rate,
    near_duplicate_rate,
    nearest_records,
    nndr,
    normalize_text,
    numeric_canary_hits,
    random_baseline,
    summarize,
)


class PrivacyThresholds(BaseModel):
    """The `privacy:` block of an sdv spec: what the synthetic output must satisfy to be written.

    A threshold set to `null` is not checked (its measure is still reported).
    """

    model_config = ConfigDict(extra="forbid")

    max_exact_copy_excess: float | None = Field(default=0.01, ge=0, le=1)
    """Largest share of synthetic rows identical to a training row, *above* the share of
    held-out real rows identical to a training row (distinct real users collide by chance when
    there are few columns). Without a holdout the share itself is compared."""
    max_exact_copy_rate: float | None = Field(default=None, ge=0, le=1)
    """Largest share of synthetic rows identical to a training row, whatever real rows do."""
    min_dcr_baseline_protection: float | None = Field(default=None, ge=0, le=1)
    """Smallest SDMetrics DCRBaselineProtection score (median synthetic DCR / median DCR of
    uniformly random rows). Off by default: fresh real rows often score below 0.1 on skewed
    data, so an absolute floor says little; `min_dcr_holdout_ratio` is the calibrated check."""
    min_dcr_holdout_ratio: float | None = Field(default=0.5, ge=0)
    """Smallest ratio of the median synthetic DCR to the median DCR of held-out real rows (both
    to the training rows): below 1, synthetic rows sit closer to training rows than unseen real
    rows do. A copying synthesizer scores near 0; a faithful one near 1, give or take the
    sampling noise of two medians (0.75-1.5 with 200-row holdouts, hence the 0.5 default).
    Not evaluated without a holdout, or when held-out rows are exact copies at the median (a
    zero denominator)."""
    max_dcr_close_share: float | None = Field(default=0.15, ge=0, le=1)
    """Largest share of synthetic rows closer to a training row than 95 % of held-out real rows
    are (their DCR below the holdout's 5th percentile; 5 % expected). Catches a synthesizer
    that copies (or barely perturbs) a part of its training rows, which moves neither the
    median nor, with a training set larger than the holdout, the overfitting score much."""
    min_dcr_overfitting_protection: float | None = Field(default=0.6, ge=0, le=1)
    """Smallest SDMetrics DCROverfittingProtection score: 2 × (1 − share of synthetic rows closer
    to a training row than to a held-out row), capped at 1, on training samples drawn like the
    holdout. 0.6 allows 70 % of synthetic rows to be closer to training rows: with 200-row
    holdouts a synthesizer that never saw the data lands anywhere in 45-60 % by chance, one
    that copies lands near 100 %."""
    overfitting_repeats: int = Field(default=3, ge=1, le=20)
    """Training samples the overfitting check is averaged over (SDMetrics' iterations)."""
    min_nndr_p05: float | None = Field(default=None, ge=0, le=1)
    """Smallest 5th percentile of the nearest-neighbour distance ratio (0 = exact copy)."""
    max_near_duplicate_rate: float | None = Field(default=0.01, ge=0, le=1)
    """Largest share of synthetic texts that are near duplicates of a real prompt outside the
    k-anonymous pool."""
    near_duplicate_threshold: float = Field(default=0.8, gt=0, le=1)
    """Jaccard similarity of character 5-gram sets at or above which two texts are near
    duplicates."""
    max_pii_hits: int | None = Field(default=0, ge=0)
    """Largest number of PII matches (e-mails, phones, cards, IBANs, IPs, secret URLs) in the
    synthetic texts and values."""
    max_canary_hits: int | None = Field(default=0, ge=0)
    """Largest number of planted canaries found in the synthetic output."""
    min_holdout_rows: int = Field(default=30, ge=1)
    """Fewer held-out rows than this: the holdout-based checks are reported as not evaluated."""
    random_rows: int = Field(default=3_000, ge=100)
    """Uniformly random rows of the DCR baseline (SDMetrics draws as many as there are
    synthetic rows; only their median DCR counts, which 3,000 rows pin down to about 0.5 %)."""
    sample_rows: int = Field(default=10_000, ge=100)
    """Distance measures use at most this many rows of each table (a seeded sample)."""


class PrivacyCheck(BaseModel):
    """One rule of the gate applied to one measure."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: float | None
    threshold: float | None
    op: Literal["<=", ">="]
    evaluated: bool
    passed: bool
    detail: str = ""


class PrivacyReport(BaseModel):
    """`privacy_report.json`: every measure, every check, and the gate's outcome."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    checks: list[PrivacyCheck]
    metrics: dict[str, Any]
    thresholds: PrivacyThresholds
    seconds: float = 0.0

    @property
    def failed(self) -> list[PrivacyCheck]:
        return [c for c in self.checks if c.evaluated and not c.passed]

    def summary(self) -> dict[str, Any]:
        """The short form kept in an evalset manifest."""
        m = self.metrics
        return {
            "gate": "passed" if self.passed else "failed",
            "failed_checks": [f"{c.name} {c.value} (needs {c.op} {c.threshold})"
                              for c in self.failed],
            "exact_copy_rate": m.get("exact_copies", {}).get("rate"),
            "dcr_baseline_protection": m.get("dcr_baseline_protection", {}).get("score"),
            "dcr_overfitting_protection": (m.get("dcr_overfitting_protection") or {}).get("score"),
            "dcr_holdout_ratio": m.get("dcr_holdout_ratio"),
            "dcr_close_share": (m.get("dcr_close_share") or {}).get("share"),
            "near_duplicate_rate": m.get("near_duplicate_texts", {}).get("rate"),
            "pii_hits": m.get("pii", {}).get("hits"),
            "canary_hits": m.get("canaries", {}).get("hits"),
        }


@dataclass
class PrivacyInputs:
    """What the privacy report compares.

    `training` are the real rows the synthesizer was fitted on, `holdout` real rows of other
    users it never saw (or None), `synthetic` the output, all with the same columns; `sdtypes`
    maps the compared columns to numerical / datetime / categorical / boolean.
    """

    training: pd.DataFrame
    synthetic: pd.DataFrame
    sdtypes: Mapping[str, str]
    holdout: pd.DataFrame | None = None
    group_column: str | None = None
    """A column of `training` and `holdout` naming who wrote each row (e.g. `user_id`). Rows of
    one user resemble each other, so for the overfitting check the training rows are drawn
    like the holdout: as many users as the holdout has, all their rows. Without it, a row
    sample of the holdout's size."""
    texts: Sequence[str] = ()
    """Synthetic free texts (inputs) to check for near duplicates, PII and canaries."""
    pool_texts: frozenset[str] = frozenset()
    """Normalised texts of the k-anonymous pool: synthetic texts equal to one are intended
    reuse and are not near-duplicate checked."""
    private_texts: Sequence[str] = ()
    """Real prompts outside the pool (written by fewer than k users)."""
    values: Sequence[str] = ()
    """Other synthetic strings (tags, categorical values) to check for PII and canaries."""
    canaries: Sequence[str | float] = ()
    pii_finder: Callable[[str], Sequence[Any]] | None = None
    """Returns the PII matches of one text (each with a `.kind`); None skips the PII check."""
    pii_note: str = ""
    """Why the PII check is not evaluated (when pii_finder is None)."""
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def _finite(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x)


def privacy_report(inputs: PrivacyInputs, thresholds: PrivacyThresholds | None = None
                   ) -> PrivacyReport:
    """Measure everything, apply the thresholds, and return the report (nothing is written)."""
    import time

    t0 = time.perf_counter()
    th = thresholds or PrivacyThresholds()
    seed = inputs.seed
    metrics: dict[str, Any] = {}
    sdtypes = dict(inputs.sdtypes)
    cols = distance_columns(sdtypes, inputs.training, inputs.synthetic)
    sdtypes = {c: sdtypes[c] for c in cols}
    training = _sample(inputs.training[cols], th.sample_rows, seed)
    synthetic = _sample(inputs.synthetic[cols], th.sample_rows, seed + 1)
    holdout = None
    if inputs.holdout is not None and len(inputs.holdout):
        holdout = _sample(inputs.holdout[cols], th.sample_rows, seed + 2)
    metrics["rows"] = {"training": len(inputs.training), "synthetic": len(inputs.synthetic),
                       "holdout": 0 if inputs.holdout is None else len(inputs.holdout),
                       "compared_training": len(training), "compared_synthetic": len(synthetic),
                       "compared_holdout": 0 if holdout is None else len(holdout)}
    metrics["columns"] = cols
    enough_holdout = holdout is not None and len(holdout) >= th.min_holdout_rows

    with threadpool_limits(limits=1, user_api="blas"):
        if cols and len(training) and len(synthetic):
            near = nearest_records(synthetic, training, sdtypes, second=True)
            rnd = random_baseline(training, min(len(synthetic), th.random_rows), seed)
            metrics["dcr_baseline_protection"] = _clean(dcr_baseline_protection(
                training, synthetic, sdtypes, random_data=rnd, synthetic_dcr=near.nearest))
            metrics["dcr_synthetic"] = summarize(near.nearest)
            assert near.second is not None
            metrics["nndr"] = summarize(nndr(near.nearest, near.second))
            metrics["exact_copies"] = exact_copy_rate(synthetic, training, sdtypes)
            if holdout is not None and len(holdout):
                metrics["holdout_exact_copies"] = exact_copy_rate(holdout, training, sdtypes)
                d_hold = dcr(holdout, training, sdtypes)
                metrics["dcr_holdout"] = summarize(d_hold)
                med_h = float(np.median(d_hold))
                med_s = float(np.median(near.nearest))
                metrics["dcr_holdout_ratio"] = None if med_h == 0 else med_s / med_h
                p05 = float(np.quantile(d_hold, 0.05))
                metrics["dcr_close_share"] = {
                    "share": None if p05 == 0 else float(np.mean(near.nearest < p05)),
                    "holdout_p05": p05,
                    "expected": 0.05,
                }
                metrics["dcr_overfitting_protection"] = _overfitting(
                    inputs, training, synthetic, holdout, sdtypes, cols, th, seed)
            else:
                metrics["dcr_holdout_ratio"] = None
                metrics["dcr_close_share"] = None
                metrics["dcr_overfitting_protection"] = None
        else:
            metrics["exact_copies"] = {"rate": 0.0, "count": 0, "rows": len(synthetic),
                                       "columns": 0}
            metrics["dcr_holdout_ratio"] = None
            metrics["dcr_close_share"] = None
            metrics["dcr_overfitting_protection"] = None
            inputs.notes.append("no comparable columns: distance measures were not computed")

    # ---------------------------------------------------------------- texts
    texts = list(inputs.texts)
    pool_hits = np.array([normalize_text(t) in inputs.pool_texts for t in texts], dtype=bool)
    checked = [t for t, p in zip(texts, pool_hits, strict=True) if not p and t]
    nd = near_duplicate_rate(checked, list(inputs.private_texts),
                             threshold=th.near_duplicate_threshold, seed=seed)
    nd.pop("indices", None)
    nd["rate"] = nd["count"] / len(texts) if texts else 0.0
    nd["pool_reuse"] = {"count": int(pool_hits.sum()),
                        "rate": float(pool_hits.mean()) if len(texts) else 0.0}
    metrics["near_duplicate_texts"] = nd

    # ---------------------------------------------------------------- PII and canaries
    everything = [*texts, *inputs.values]
    if inputs.pii_finder is not None:
        kinds: dict[str, int] = {}
        for t in everything:
            if t:
                for m in inputs.pii_finder(t):
                    kinds[m.kind] = kinds.get(m.kind, 0) + 1
        metrics["pii"] = {"hits": sum(kinds.values()), "by_type": kinds,
                          "checked_texts": len(everything)}
    else:
        metrics["pii"] = {"hits": None, "note": inputs.pii_note}
    str_canaries = [c for c in inputs.canaries if isinstance(c, str)]
    num_canaries = [float(c) for c in inputs.canaries if not isinstance(c, str)]
    per = canary_hits(everything, str_canaries)
    numeric_cols = [c for c, t in inputs.sdtypes.items() if t == "numerical"]
    per_num = numeric_canary_hits(inputs.synthetic, numeric_cols, num_canaries)
    metrics["canaries"] = {"hits": sum(per.values()) + sum(per_num.values()),
                           "planted": len(inputs.canaries),
                           "found": sum(1 for v in [*per.values(), *per_num.values()] if v)}

    checks = _checks(metrics, th, enough_holdout, holdout)
    passed = all(c.passed for c in checks if c.evaluated)
    metrics["notes"] = inputs.notes
    return PrivacyReport(passed=passed, checks=checks, metrics=metrics, thresholds=th,
                         seconds=round(time.perf_counter() - t0, 3))


def _overfitting(inputs: PrivacyInputs, training: pd.DataFrame, synthetic: pd.DataFrame,
                 holdout: pd.DataFrame, sdtypes: Mapping[str, str], cols: list[str],
                 th: PrivacyThresholds, seed: int) -> dict[str, Any]:
    """DCROverfittingProtection averaged over `overfitting_repeats` training samples drawn like
    the holdout (user-matched when a group column is given), as SDMetrics averages its
    iterations."""
    group = inputs.group_column
    grouped = (group is not None and inputs.holdout is not None and group in inputs.training
               and group in inputs.holdout)
    if grouped:
        assert group is not None and inputs.holdout is not None
        users = np.array(sorted(inputs.training[group].astype(str).unique()))
        n_users = int(inputs.holdout[group].nunique())
        ids = inputs.training[group].astype(str).to_numpy()
    scores, closer = [], []
    full_holdout_dcr: np.ndarray | None = None
    for r in range(th.overfitting_repeats):
        if grouped:
            rng = np.random.default_rng([seed, 97, r])
            pick = users[rng.permutation(len(users))[:n_users]]
            matched = inputs.training.loc[np.isin(ids, pick), cols]
        else:
            matched = training
        n = min(len(holdout), len(matched))
        if n == len(holdout):  # the whole holdout: its distances are the same every repeat
            if full_holdout_dcr is None:
                full_holdout_dcr = dcr(synthetic, holdout, sdtypes)
            out = dcr_overfitting_protection(_sample(matched, n, seed + 3 + r), synthetic,
                                             holdout, sdtypes, holdout_dcr=full_holdout_dcr)
        else:
            out = dcr_overfitting_protection(matched, synthetic, _sample(holdout, n, seed + 4 + r),
                                             sdtypes)
        scores.append(out["score"])
        closer.append(out["closer_to_training"])
    return {
        "score": float(np.mean(scores)),
        "closer_to_training": float(np.mean(closer)),
        "closer_to_holdout": 1.0 - float(np.mean(closer)),
        "scores": [round(float(x), 6) for x in scores],
        "holdout_rows": len(holdout),
        "training_sample": "user-matched" if grouped else "rows",
        "repeats": th.overfitting_repeats,
    }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in d.items()}


def _check(name: str, value: float | None, threshold: float | None, op: Literal["<=", ">="],
           *, available: bool = True, detail: str = "") -> PrivacyCheck:
    evaluated = threshold is not None and available and value is not None
    if not evaluated:
        why = detail or ("threshold is off" if threshold is None else "not measurable")
        return PrivacyCheck(name=name, value=value, threshold=threshold, op=op, evaluated=False,
                            passed=True, detail=why)
    assert value is not None and threshold is not None
    ok = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
    return PrivacyCheck(name=name, value=value, threshold=threshold, op=op, evaluated=True,
                        passed=ok, detail=detail)


def _checks(m: dict[str, Any], th: PrivacyThresholds, enough_holdout: bool,
            holdout: pd.DataFrame | None) -> list[PrivacyCheck]:
    out: list[PrivacyCheck] = []
    rate = m["exact_copies"]["rate"]
    hold = m.get("holdout_exact_copies")
    if hold is not None and enough_holdout:
        excess = max(0.0, rate - hold["rate"])
        out.append(_check("exact_copy_excess", excess, th.max_exact_copy_excess, "<=",
                          detail=f"synthetic {rate:.4f} vs held-out real {hold['rate']:.4f}"))
    else:
        out.append(_check("exact_copy_excess", rate, th.max_exact_copy_excess, "<=",
                          detail="no holdout: the synthetic exact-copy rate itself"))
    out.append(_check("exact_copy_rate", rate, th.max_exact_copy_rate, "<="))
    base = m.get("dcr_baseline_protection") or {}
    out.append(_check("dcr_baseline_protection", base.get("score"),
                      th.min_dcr_baseline_protection, ">="))
    why_hold = "" if enough_holdout else (
        f"holdout has {0 if holdout is None else len(holdout)} rows "
        f"(< min_holdout_rows {th.min_holdout_rows})")
    out.append(_check("dcr_holdout_ratio", m.get("dcr_holdout_ratio"), th.min_dcr_holdout_ratio,
                      ">=", available=enough_holdout, detail=why_hold))
    close = m.get("dcr_close_share") or {}
    out.append(_check("dcr_close_share", close.get("share"), th.max_dcr_close_share, "<=",
                      available=enough_holdout, detail=why_hold or (
                          "" if close.get("share") is not None
                          else "held-out rows' 5th percentile DCR is 0")))
    over = m.get("dcr_overfitting_protection") or {}
    out.append(_check("dcr_overfitting_protection", over.get("score"),
                      th.min_dcr_overfitting_protection, ">=", available=enough_holdout,
                      detail=why_hold))
    out.append(_check("nndr_p05", (m.get("nndr") or {}).get("p05"), th.min_nndr_p05, ">="))
    out.append(_check("near_duplicate_rate", m["near_duplicate_texts"]["rate"],
                      th.max_near_duplicate_rate, "<="))
    pii = m["pii"]
    out.append(_check("pii_hits", pii.get("hits"), th.max_pii_hits, "<=",
                      available=pii.get("hits") is not None, detail=pii.get("note", "")))
    out.append(_check("canary_hits", m["canaries"]["hits"], th.max_canary_hits, "<="))
    return out


__all__ = [
    "PrivacyCheck",
    "PrivacyInputs",
    "PrivacyReport",
    "PrivacyThresholds",
    "privacy_report",
]
