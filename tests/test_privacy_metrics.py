"""Privacy measures: SDMetrics-exact DCR, exact copies, NNDR, near-duplicate text, canaries,
and the privacy gate. SDMetrics itself is the reference on small samples."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from synthloop.privacy import (
    PrivacyInputs,
    PrivacyThresholds,
    canary_hits,
    dcr,
    dcr_baseline_protection,
    dcr_overfitting_protection,
    exact_copy_rate,
    find_pii,
    near_duplicate_rate,
    near_duplicates,
    nearest_records,
    nndr,
    numeric_canary_hits,
    privacy_report,
    random_baseline,
    text_shingles,
)

SDTYPES = {
    "num": "numerical",
    "count": "numerical",
    "cat": "categorical",
    "flag": "boolean",
    "when": "datetime",
    "gappy": "numerical",
    "const": "numerical",
    "ident": "id",
}


def _table(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "num": rng.normal(shift, 1.0, n),
        "count": rng.integers(0, 6, n),
        "cat": rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05]),
        "flag": rng.random(n) < 0.3,
        "when": pd.Timestamp("2025-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
        "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2.0, 3.0, n)),
        "const": np.ones(n),
        "ident": [f"id-{seed}-{i}" for i in range(n)],
    })


def _metadata() -> dict:
    return {"columns": {c: {"sdtype": t} for c, t in SDTYPES.items()}}


def _sdmetrics_dcr(dataset: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calculate_dcr(dataset=dataset, reference_dataset=reference,
                             metadata=_metadata()).to_numpy()


# --------------------------------------------------------------------------- DCR
def test_dcr_matches_sdmetrics_row_by_row() -> None:
    real = _table(260, 1)
    syn = _table(190, 2, shift=0.8)  # shifted: values outside the real range clip at 1
    syn.loc[:4, list(real.columns)] = real.loc[:4, list(real.columns)].to_numpy()  # exact copies
    ours = dcr(syn, real, SDTYPES)
    ref = _sdmetrics_dcr(syn, real)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 1e-6
    assert (ours[:5] == 0).all()


def test_dcr_handles_missing_zero_range_and_high_cardinality() -> None:
    rng = np.random.default_rng(5)
    n = 150
    real = pd.DataFrame({
        "x": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
        "flat": np.full(n, 2.0),
        "city": [f"city-{i}" for i in rng.integers(0, 120, n)],  # beyond the one-hot limit
        "empty": np.full(n, np.nan),
    })
    syn = real.sample(frac=1.0, random_state=3).reset_index(drop=True)
    syn["x"] = np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 1.5)
    syn.loc[::7, "flat"] = 3.0
    types = {"x": "numerical", "flat": "numerical", "city": "categorical", "empty": "numerical"}
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = calculate_dcr(dataset=syn, reference_dataset=real,
                            metadata={"columns": {c: {"sdtype": t} for c, t in types.items()}})
    assert np.max(np.abs(dcr(syn, real, types) - ref.to_numpy())) < 1e-6


def test_dcr_baseline_protection_equals_sdmetrics_with_the_same_seed() -> None:
    from sdmetrics.single_table import DCRBaselineProtection

    real, syn = _table(300, 11), _table(240, 12, shift=0.3)
    old = DCRBaselineProtection._seed
    try:
        DCRBaselineProtection._seed = 7
        np.random.seed(7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = DCRBaselineProtection.compute_breakdown(
                {"t": real}, {"t": syn}, {"tables": {"t": _metadata()}}, "t")
    finally:
        DCRBaselineProtection._seed = old
    ours = dcr_baseline_protection(real, syn, SDTYPES, seed=7)
    assert abs(ours["score"] - ref["score"]) < 0.01
    assert abs(ours["median_dcr_synthetic"] - ref["median_DCR_to_real_data"]["synthetic_data"]) < 1e-6
    assert abs(ours["median_dcr_random"] - ref["median_DCR_to_real_data"]["random_data_baseline"]) < 1e-6


def test_random_baseline_draws_the_same_table_as_sdmetrics() -> None:
    from sdmetrics.single_table import DCRBaselineProtection

    real = _table(120, 4)
    old = DCRBaselineProtection._seed
    try:
        DCRBaselineProtection._seed = 3
        np.random.seed(3)
        theirs = DCRBaselineProtection._generate_random_data(real, 80)
    finally:
        DCRBaselineProtection._seed = old
    ours = random_baseline(real, 80, 3)
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)


def test_dcr_overfitting_protection_equals_sdmetrics() -> None:
    from sdmetrics.single_table import DCROverfittingProtection

    train, hold = _table(250, 21), _table(200, 22)
    # a synthesizer that copies a third of its training rows (with noise elsewhere)
    syn = _table(210, 23)
    syn.iloc[:70] = train.iloc[:70].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DCROverfittingProtection.compute_breakdown(
            {"t": train}, {"t": syn}, hold, {"tables": {"t": _metadata()}}, "t")
    ours = dcr_overfitting_protection(train, syn, hold, SDTYPES)
    assert abs(ours["score"] - ref["score"]) < 0.01
    assert abs(ours["closer_to_training"]
               - ref["synthetic_data_percentages"]["closer_to_training"]) < 0.01
    assert ours["closer_to_training"] > 0.5  # the copies are closer to training rows


def test_nearest_records_second_and_nndr() -> None:
    ref = pd.DataFrame({"x": [0.0, 1.0, 2.0, 10.0]})
    data = pd.DataFrame({"x": [1.0, 1.5, 6.0]})
    near = nearest_records(data, ref, {"x": "numerical"}, second=True)
    assert near.second is not None
    np.testing.assert_allclose(near.nearest, [0.0, 0.05, 0.4], atol=1e-6)
    np.testing.assert_allclose(near.second, [0.1, 0.05, 0.4], atol=1e-6)
    ratio = nndr(near.nearest, near.second)
    np.testing.assert_allclose(ratio, [0.0, 1.0, 1.0], atol=1e-6)


# --------------------------------------------------------------------------- exact copies
def test_exact_copy_rate_ignores_ids_and_dtype_differences() -> None:
    real = _table(100, 31)
    syn = _table(50, 32)
    copied = real.iloc[:10].copy()
    copied["ident"] = "other"  # ids differ: still a copy of the row's content
    copied["count"] = copied["count"].astype("float64")  # 3 and 3.0 are the same value
    syn = pd.concat([copied, syn], ignore_index=True)
    out = exact_copy_rate(syn, real, SDTYPES)
    assert out["count"] == 10
    assert out["rate"] == pytest.approx(10 / 60)
    assert out["columns"] == 7  # the id column does not count


# --------------------------------------------------------------------------- texts
def _jaccard(a: str, b: str, k: int = 5) -> float:
    sa, sb = text_shingles([a], k)[0], text_shingles([b], k)[0]
    inter = len(np.intersect1d(sa, sb))
    return inter / (len(sa) + len(sb) - inter)


def test_near_duplicates_find_every_pair_over_the_threshold() -> None:
    rng = np.random.default_rng(8)
    words = ["refund", "order", "late", "package", "account", "password", "reset", "billing",
             "invoice", "charge", "card", "twice", "help", "please", "urgent", "cancel"]
    base = [" ".join(rng.choice(words, 12)) for _ in range(60)]
    # near copies: one word changed at the end
    texts = [b.rsplit(" ", 1)[0] + " zebra" for b in base[:20]] + [
        " ".join(rng.choice(words, 12)) for _ in range(40)]
    best = near_duplicates(texts, base, threshold=0.8)
    brute = np.array([max(_jaccard(t, b) for b in base) for t in texts])
    over = brute >= 0.8
    assert over.sum() >= 15
    np.testing.assert_array_equal(best >= 0.8, over)
    np.testing.assert_allclose(best[over], brute[over])
    stats = near_duplicate_rate(texts, base, threshold=0.8)
    assert stats["count"] == int(over.sum())


def test_near_duplicates_normalise_case_and_spacing() -> None:
    best = near_duplicates(["Where  is MY order?"], ["where is my order?"], threshold=0.8)
    assert best[0] == 1.0
    assert near_duplicates(["", "x"], ["anything"], threshold=0.8).tolist() == [0.0, 0.0]


def test_canaries_in_texts_and_numbers() -> None:
    hits = canary_hits(["hello Canary-Zebra world", "nothing", "canary-zebra again"],
                       ["canary-zebra", "absent"])
    assert hits == {"canary-zebra": 2, "absent": 0}
    frame = pd.DataFrame({"latency": [1.0, 9876543.0, 3.0], "other": [9876543.0, 0.0, 1.0]})
    assert numeric_canary_hits(frame, ["latency"], [9876543.0]) == {"9876543.0": 1}


# --------------------------------------------------------------------------- the gate
def _inputs(synthetic: pd.DataFrame, train: pd.DataFrame, hold: pd.DataFrame, **kw: object
            ) -> PrivacyInputs:
    return PrivacyInputs(training=train, synthetic=synthetic, holdout=hold, sdtypes=SDTYPES,
                         **kw)  # type: ignore[arg-type]


def test_gate_passes_fresh_data_and_fails_copies() -> None:
    train, hold, fresh = _table(400, 41), _table(150, 42), _table(400, 43)
    ok = privacy_report(_inputs(fresh, train, hold))
    assert ok.passed, ok.failed
    copies = train.sample(n=400, replace=True, random_state=1).reset_index(drop=True)
    bad = privacy_report(_inputs(copies, train, hold))
    assert not bad.passed
    failed = {c.name for c in bad.failed}
    assert {"exact_copy_excess", "dcr_holdout_ratio", "dcr_close_share"} <= failed
    assert bad.metrics["exact_copies"]["rate"] == 1.0
    # the SDMetrics score drops too, though a training sample of the holdout's size only
    # holds some of the copied rows
    assert (bad.metrics["dcr_overfitting_protection"]["score"]
            < ok.metrics["dcr_overfitting_protection"]["score"] - 0.2)
    summary = bad.summary()
    assert summary["gate"] == "failed" and summary["failed_checks"]


def test_gate_catches_partly_copied_and_perturbed_rows() -> None:
    train, hold, fresh = _table(400, 44), _table(150, 45), _table(400, 46)
    leaky = fresh.copy()
    rows = train.sample(n=120, random_state=2).reset_index(drop=True)  # 30 % near copies
    rows["num"] = rows["num"] + 0.01
    rows["gappy"] = rows["gappy"] * 1.01
    leaky.iloc[:120] = rows.to_numpy()
    report = privacy_report(_inputs(leaky, train, hold))
    m = report.metrics
    assert m["exact_copies"]["count"] == 0  # nothing verbatim
    assert m["dcr_close_share"]["share"] > 0.3
    assert [c.name for c in report.failed] == ["dcr_close_share"]


def test_gate_checks_texts_pii_and_canaries() -> None:
    train, hold = _table(200, 51), _table(100, 52)
    syn = _table(200, 53)
    private = ["my parcel 88123 to 4 Elm Street never arrived, please check it today"]
    texts = ["my parcel 88123 to 4 Elm Street never arrived, please check it now",  # near dup
             "how do I reset my password",  # pool prompt: intended reuse, not checked
             "write to jane.doe@example.org",  # PII
             "the secret canary-quartz"]
    report = privacy_report(_inputs(
        syn, train, hold, texts=texts, pool_texts=frozenset({"how do i reset my password"}),
        private_texts=private, canaries=["canary-quartz"], pii_finder=find_pii))
    m = report.metrics
    assert m["near_duplicate_texts"]["count"] == 1
    assert m["near_duplicate_texts"]["pool_reuse"]["count"] == 1
    assert m["pii"]["hits"] == 1 and m["pii"]["by_type"] == {"email": 1}
    assert m["canaries"]["hits"] == 1
    assert {c.name for c in report.failed} == {"near_duplicate_rate", "pii_hits", "canary_hits"}


def test_gate_thresholds_can_be_switched_off_and_small_holdouts_are_not_evaluated() -> None:
    train, fresh = _table(300, 61), _table(300, 62)
    tiny_hold = _table(10, 63)
    th = PrivacyThresholds(max_exact_copy_excess=None, min_dcr_overfitting_protection=None)
    report = privacy_report(_inputs(fresh, train, tiny_hold), th)
    by_name = {c.name: c for c in report.checks}
    assert not by_name["exact_copy_excess"].evaluated
    assert not by_name["dcr_overfitting_protection"].evaluated
    assert not by_name["dcr_holdout_ratio"].evaluated
    assert "min_holdout_rows" in by_name["dcr_holdout_ratio"].detail
    assert report.passed


def test_thresholds_reject_unknown_keys() -> None:
    from synthloop.config import validate_data
    from synthloop.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean `max_exact_copy_rate`"):
        validate_data({"max_exact_copy_rat": 0.1}, PrivacyThresholds, "spec.yaml")


def test_distance_work_is_chunked_and_symmetric_in_blocks() -> None:
    # many more reference rows than one block holds: results must not depend on chunking
    a, b = _table(700, 71), _table(3000, 72)
    full = dcr(a, b, SDTYPES)
    parts = np.concatenate([dcr(a.iloc[i:i + 100], b, SDTYPES) for i in range(0, 700, 100)])
    np.testing.assert_allclose(full, parts, atol=1e-6)
    assert all(x >= 0 for x in itertools.islice(full, 50))
