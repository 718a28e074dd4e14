"""The fidelity report: SDMetrics quality plus session, feedback-per-intent and time-to-feedback
measures, checked on tables whose differences are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthloop.privacy import fidelity_report
from synthloop.privacy._fidelity import (
    feedback_by_intent,
    quality,
    session_lengths,
    time_to_feedback,
)

SDTYPES = {"x": "numerical", "y": "numerical", "intent": "categorical",
           "feedback.thumb": "categorical", "when": "datetime", "flag": "boolean"}


def _interactions(n_sessions: int, seed: int, *, up: dict[str, float], mean_turns: float,
                  delay_scale: float = 20.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        for t in range(int(rng.geometric(1 / mean_turns))):
            intent = str(rng.choice(list(up)))
            explicit = rng.random() < 0.4
            thumb = ("up" if rng.random() < up[intent] else "down") if explicit else "none"
            x = rng.normal()
            rows.append({
                "session_id": f"s{s}", "turn": t, "intent": intent, "feedback.thumb": thumb,
                "feedback.feedback_delay_s": rng.exponential(delay_scale) if explicit else np.nan,
                "x": x, "y": 2 * x + rng.normal(0, 0.3),
                "when": pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(
                    seconds=int(rng.integers(0, 86400 * 10))),
                "flag": bool(rng.random() < 0.3),
            })
    return pd.DataFrame(rows)


UP = {"billing": 0.8, "refund": 0.1, "howto": 0.6}


def test_quality_is_high_for_the_same_process_and_drops_for_broken_pairs() -> None:
    real = _interactions(300, 1, up=UP, mean_turns=2.5)
    same = _interactions(300, 2, up=UP, mean_turns=2.5)
    broken = same.copy()
    broken["y"] = np.random.default_rng(3).permutation(broken["y"].to_numpy())  # kills x~y
    shifted = same.copy()
    shifted["x"] = shifted["x"] + 1.5
    q_same = quality(real, same, SDTYPES)
    q_broken = quality(real, broken, SDTYPES)
    q_shifted = quality(real, shifted, SDTYPES)
    assert q_same["score"] > 0.9
    assert q_broken["properties"]["Column Pair Trends"] < q_same["properties"][
        "Column Pair Trends"] - 0.05
    x_same = next(c["score"] for c in q_same["column_shapes"] if c["column"] == "x")
    x_shift = next(c["score"] for c in q_shifted["column_shapes"] if c["column"] == "x")
    assert x_shift < x_same - 0.3
    worst = q_broken["column_pair_trends"]["worst"][0]
    assert set(worst["columns"]) == {"x", "y"}


def test_session_lengths_distance() -> None:
    real = pd.DataFrame({"session_id": ["a", "a", "b", "c", "c", "c"]})  # lengths 2, 1, 3
    syn = pd.DataFrame({"session_id": ["x", "y", "z", "z"]})  # lengths 1, 1, 2
    out = session_lengths(real, syn)
    assert out is not None
    # shares: real 1/3,1/3,1/3; synthetic 2/3,1/3,0 -> TV = (1/3 + 0 + 1/3) / 2
    assert out["tv_distance"] == pytest.approx(1 / 3)
    assert out["share_by_length"]["3"] == {"real": pytest.approx(1 / 3), "synthetic": 0.0}
    assert out["real_mean"] == 2.0 and out["synthetic_mean"] == pytest.approx(4 / 3)


def test_feedback_rates_per_intent() -> None:
    real = pd.DataFrame({"intent": ["a", "a", "a", "a", "b", "b"],
                         "feedback.thumb": ["up", "up", "down", "none", "none", "down"]})
    syn = pd.DataFrame({"intent": ["a", "a", "b", "b"],
                        "feedback.thumb": ["up", "none", "up", "none"]})
    out = feedback_by_intent(real, syn)
    assert out is not None
    a = next(r for r in out["intents"] if r["intent"] == "a")
    b = next(r for r in out["intents"] if r["intent"] == "b")
    assert a["real_up_rate"] == 0.5 and a["synthetic_up_rate"] == 0.5
    assert a["real_explicit_rate"] == 0.75 and a["synthetic_explicit_rate"] == 0.5
    assert b["abs_diff_up_rate"] == 0.5 and b["real_down_rate"] == 0.5
    # weighted by real rows: (0 * 4 + 0.5 * 2) / 6
    assert out["weighted_mean_abs_diff_up_rate"] == pytest.approx(1 / 6)


def test_time_to_feedback_quantiles() -> None:
    real = pd.DataFrame({"feedback.feedback_delay_s": [1.0, 2.0, 3.0, 4.0, np.nan]})
    syn = pd.DataFrame({"feedback.feedback_delay_s": [10.0, 20.0, np.nan, np.nan]})
    out = time_to_feedback(real, syn)
    assert out is not None
    assert out["real"]["p50"] == 2.5 and out["synthetic"]["p50"] == 15.0
    assert out["real_share"] == 0.8 and out["synthetic_share"] == 0.5
    assert out["ks_statistic"] == 1.0


def test_full_report_detects_a_wrong_feedback_process() -> None:
    real = _interactions(400, 5, up=UP, mean_turns=2.5)
    good = _interactions(400, 6, up=UP, mean_turns=2.5)
    bad = _interactions(400, 7, up={k: 0.5 for k in UP}, mean_turns=5.0, delay_scale=80.0)
    r_good = fidelity_report(real, good, SDTYPES, reference=_interactions(150, 8, up=UP,
                                                                          mean_turns=2.5))
    r_bad = fidelity_report(real, bad, SDTYPES)
    assert r_good["holdout_quality"]["score"] > 0.85
    fb_good = r_good["feedback_by_intent"]["weighted_mean_abs_diff_up_rate"]
    fb_bad = r_bad["feedback_by_intent"]["weighted_mean_abs_diff_up_rate"]
    assert fb_good < 0.1 < fb_bad
    assert r_good["sessions"]["tv_distance"] < 0.15 < r_bad["sessions"]["tv_distance"]
    assert r_good["time_to_feedback"]["ks_statistic"] < 0.15 < r_bad["time_to_feedback"][
        "ks_statistic"]
    for key in ("quality", "sessions", "feedback_by_intent", "time_to_feedback", "seconds"):
        assert key in r_good


def test_missing_session_or_feedback_columns_give_none() -> None:
    real = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    out = fidelity_report(real, real.copy(), {"x": "numerical"})
    assert out["sessions"] is None and out["feedback_by_intent"] is None
    assert out["time_to_feedback"] is None
    assert out["quality"]["score"] is not None
