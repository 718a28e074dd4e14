"""The fidelity report: how closely synthetic interactions follow the real ones.

    report = fidelity_report(real, synthetic, sdtypes)        # -> fidelity_report.json

- `quality`: SDMetrics' QualityReport (Column Shapes: KS / TV complement per column; Column
  Pair Trends: correlation / contingency similarity per pair of columns), overall score and
  per-column details, on the compared columns (ids and free text excluded);
- `sessions`: the session-length distribution, real vs synthetic (shares per length, total
  variation distance, KS statistic);
- `feedback_by_intent`: per intent, the share of thumbs up, thumbs down and explicit feedback
  in real and synthetic interactions, and their absolute differences;
- `time_to_feedback`: quantiles of the feedback delay, real vs synthetic, with the KS statistic.

When a `reference` table is given (held-out real rows), the same QualityReport is computed for
it against the real rows too: the score a fresh real sample gets, the ceiling to compare with.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

SESSION = "session_id"
TURN = "turn"
INTENT = "intent"
THUMB = "feedback.thumb"
RATING = "feedback.rating"
COMMENT = "feedback.comment"
DELAY = "feedback.feedback_delay_s"
_TABLE = "interactions"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def for_sdmetrics(frame: pd.DataFrame, sdtypes: Mapping[str, str]) -> pd.DataFrame:
    """A copy SDMetrics accepts: nullable dtypes made plain, datetimes tz-naive UTC."""
    out = {}
    for c, t in sdtypes.items():
        s = frame[c]
        if t == "datetime":
            s = pd.to_datetime(s, utc=True).dt.tz_convert(None)
        elif t == "numerical":
            s = pd.to_numeric(s, errors="coerce").astype("float64")
        elif t == "boolean":
            s = s.astype(object).where(s.notna(), None)
        else:
            s = s.astype(object).where(s.notna(), None)
        out[c] = s.reset_index(drop=True)
    return pd.DataFrame(out)


def quality(real: pd.DataFrame, synthetic: pd.DataFrame, sdtypes: Mapping[str, str]
            ) -> dict[str, Any]:
    """SDMetrics QualityReport score, property scores and per-column shape scores."""
    from sdmetrics.reports import QualityReport

    cols = {c: t for c, t in sdtypes.items() if c in real.columns and c in synthetic.columns}
    if not cols or real.empty or synthetic.empty:
        return {"score": None, "properties": {}, "column_shapes": [], "column_pair_trends": {}}
    metadata = {"tables": {_TABLE: {"columns": {c: {"sdtype": t} for c, t in cols.items()}}}}
    report = QualityReport()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        report.generate({_TABLE: for_sdmetrics(real, cols)},
                        {_TABLE: for_sdmetrics(synthetic, cols)}, metadata, verbose=False)
    props = report.get_properties()
    shapes = report.get_details("Column Shapes")
    pairs = report.get_details("Column Pair Trends")
    pair_scores = pd.to_numeric(pairs.get("Score", pd.Series(dtype=float)), errors="coerce")
    worst = []
    if len(pairs):
        ranked = pairs.assign(_s=pair_scores).dropna(subset=["_s"]).sort_values("_s").head(10)
        for _, row in ranked.iterrows():
            worst.append({"columns": [row["Column 1"], row["Column 2"]],
                          "metric": row.get("Metric"), "score": _num(row["_s"])})
    return {
        "score": _num(report.get_score()),
        "properties": {str(r["Property"]): _num(r["Score"]) for _, r in props.iterrows()},
        "column_shapes": [{"column": r["Column"], "metric": r["Metric"], "score": _num(r["Score"])}
                          for _, r in shapes.iterrows()],
        "column_pair_trends": {
            "pairs": len(pairs),
            "scored_pairs": int(pair_scores.notna().sum()),
            "mean": _num(pair_scores.mean()) if pair_scores.notna().any() else None,
            "worst": worst,
        },
    }


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    return float(stats.ks_2samp(a, b).statistic)


def _lengths(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby(SESSION, sort=False).size()


def session_lengths(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, Any] | None:
    """Session-length distribution, real vs synthetic."""
    if SESSION not in real.columns or SESSION not in synthetic.columns:
        return None
    lr, ls = _lengths(real), _lengths(synthetic)
    if lr.empty or ls.empty:
        return None
    top = int(max(lr.max(), ls.max()))
    bins = np.arange(1, top + 1)
    pr = lr.value_counts(normalize=True).reindex(bins, fill_value=0.0)
    ps = ls.value_counts(normalize=True).reindex(bins, fill_value=0.0)
    shown = bins[: min(len(bins), 30)]
    return {
        "real_sessions": len(lr),
        "synthetic_sessions": len(ls),
        "real_mean": float(lr.mean()),
        "synthetic_mean": float(ls.mean()),
        "tv_distance": float(0.5 * np.abs(pr.to_numpy() - ps.to_numpy()).sum()),
        "ks_statistic": _ks(lr.to_numpy(), ls.to_numpy()),
        "share_by_length": {str(int(b)): {"real": float(pr[b]), "synthetic": float(ps[b])}
                            for b in shown},
    }


def _explicit(frame: pd.DataFrame) -> pd.Series:
    exp = pd.Series(False, index=frame.index)
    if THUMB in frame.columns:
        exp |= frame[THUMB].fillna("none").astype(str) != "none"
    if RATING in frame.columns:
        exp |= frame[RATING].notna()
    if COMMENT in frame.columns:
        exp |= frame[COMMENT].fillna("").astype(str).str.len() > 0
    return exp


def feedback_by_intent(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, Any] | None:
    """Thumb-up, thumb-down and explicit-feedback rates per intent, real vs synthetic."""
    if INTENT not in real.columns or INTENT not in synthetic.columns:
        return None
    if THUMB not in real.columns and RATING not in real.columns:
        return None

    def rates(frame: pd.DataFrame) -> pd.DataFrame:
        thumb = frame[THUMB].fillna("none").astype(str) if THUMB in frame.columns else pd.Series(
            "none", index=frame.index)
        t = pd.DataFrame({
            "intent": frame[INTENT].fillna("(none)").astype(str),
            "up": (thumb == "up").astype(float),
            "down": (thumb == "down").astype(float),
            "explicit": _explicit(frame).astype(float),
        })
        g = t.groupby("intent")
        out = g[["up", "down", "explicit"]].mean()
        out["rows"] = g.size()
        return out

    r, s = rates(real), rates(synthetic)
    rows: list[dict[str, Any]] = []
    diffs: list[tuple[float, float]] = []
    for intent in sorted(set(r.index) | set(s.index)):
        rr = r.loc[intent] if intent in r.index else None
        ss = s.loc[intent] if intent in s.index else None
        entry: dict[str, Any] = {
            "intent": intent,
            "real_rows": int(rr["rows"]) if rr is not None else 0,
            "synthetic_rows": int(ss["rows"]) if ss is not None else 0,
        }
        for k in ("up", "down", "explicit"):
            entry[f"real_{k}_rate"] = _num(rr[k]) if rr is not None else None
            entry[f"synthetic_{k}_rate"] = _num(ss[k]) if ss is not None else None
        if rr is not None and ss is not None:
            entry["abs_diff_up_rate"] = abs(float(rr["up"]) - float(ss["up"]))
            diffs.append((entry["abs_diff_up_rate"], float(rr["rows"])))
        rows.append(entry)
    weight = sum(w for _, w in diffs)
    return {
        "intents": rows,
        "weighted_mean_abs_diff_up_rate": (sum(d * w for d, w in diffs) / weight) if weight else None,
        "real_up_rate": float((real[THUMB] == "up").mean()) if THUMB in real.columns else None,
        "synthetic_up_rate": (float((synthetic[THUMB] == "up").mean())
                              if THUMB in synthetic.columns else None),
    }


def time_to_feedback(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, Any] | None:
    """Feedback delay quantiles, real vs synthetic."""
    if DELAY not in real.columns or DELAY not in synthetic.columns:
        return None
    a = pd.to_numeric(real[DELAY], errors="coerce").dropna().to_numpy()
    b = pd.to_numeric(synthetic[DELAY], errors="coerce").dropna().to_numpy()
    if len(a) == 0:
        return None
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]

    def q(x: np.ndarray) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in qs:
            out[f"p{int(p * 100):02d}"] = float(np.quantile(x, p)) if len(x) else None
        out["mean"] = float(np.mean(x)) if len(x) else None
        return out

    return {
        "real_with_feedback": len(a),
        "synthetic_with_feedback": len(b),
        "real_share": float(len(a) / len(real)) if len(real) else None,
        "synthetic_share": float(len(b) / len(synthetic)) if len(synthetic) else None,
        "real": q(a),
        "synthetic": q(b),
        "ks_statistic": _ks(a, b) if len(b) else None,
    }


def fidelity_report(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    sdtypes: Mapping[str, str],
    *,
    reference: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Quality of `synthetic` against `real` (the rows the synthesizer saw), as a JSON-able dict.

    `sdtypes` names the compared columns (numerical / datetime / categorical / boolean);
    session measures use `session_id`, `intent`, `feedback.*` when both tables have them.
    """
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "rows": {"real": len(real), "synthetic": len(synthetic)},
        "quality": quality(real, synthetic, sdtypes),
    }
    if reference is not None and len(reference):
        ref_q = quality(real, reference, sdtypes)
        report["holdout_quality"] = {"score": ref_q["score"], "properties": ref_q["properties"],
                                     "rows": len(reference)}
    report["sessions"] = session_lengths(real, synthetic)
    report["feedback_by_intent"] = feedback_by_intent(real, synthetic)
    report["time_to_feedback"] = time_to_feedback(real, synthetic)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


__all__ = [
    "feedback_by_intent",
    "fidelity_report",
    "for_sdmetrics",
    "quality",
    "session_lengths",
    "time_to_feedback",
]
