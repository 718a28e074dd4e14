"""synthloop's sdv pipeline vs raw SDV GaussianCopula on the online shoppers data, same seed.

    .venv/bin/python benchmarks/bench_sdv.py [--seed 1] [--rows 0]

1. `synthloop ingest` the 12,205-row UCI "Online Shoppers Purchasing Intention" CSV
   (`../shared/data/online_shoppers/online_shoppers_intention.csv`) with
   `consent: {assume: true, basis: ...}` and `extra: all` (tabular: one row per session/user);
2. synthloop's default pipeline (`kind: sdv`, defaults only): 20 % of users held out, the
   rest fitted; `--rows` synthetic rows (default: as many as the training rows);
3. raw SDV on the *same training rows*: `Metadata.detect_from_dataframes` +
   `GaussianCopulaSynthesizer` defaults, fit and sample the same number of rows;
4. both outputs measured with the same yardsticks: SDMetrics QualityReport with SDV's own
   detected metadata (neutral to synthloop's choices) and with synthloop's, and synthloop's
   privacy report + gate (default thresholds) against the same training rows and holdout.

Skips (exit 0) when ../shared/data is absent. Takes about a minute on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SHOPPERS = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_shoppers"
            / "online_shoppers_intention.csv")


def _quality(real: pd.DataFrame, syn: pd.DataFrame, metadata: dict) -> dict[str, float]:
    from sdmetrics.reports import QualityReport

    report = QualityReport()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        report.generate({"t": real}, {"t": syn}, {"tables": {"t": metadata}}, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    return {"score": float(report.get_score()), "shapes": float(props["Column Shapes"]),
            "pairs": float(props["Column Pair Trends"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=0, help="synthetic rows (0: as many as training)")
    args = ap.parse_args()
    if not SHOPPERS.exists():
        print(f"skipped: {SHOPPERS} not found (../shared/data is absent)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HOME", tmp)
        os.environ["SYNTHLOOP_PROGRESS"] = "0"
        return run(Path(tmp), args.seed, args.rows)


def run(tmp: Path, seed: int, rows: int) -> int:
    from synthloop.generate.sdv import load_spec, synthesize
    from synthloop.ingest import ingest
    from synthloop.privacy import PrivacyInputs, privacy_report
    from synthloop.privacy._fidelity import for_sdmetrics

    (tmp / "mapping.yaml").write_text(
        'consent: {assume: true, basis: "public dataset, CC BY 4.0 (UCI)"}\nextra: all\n')
    t0 = time.perf_counter()
    ingest(SHOPPERS, tmp / "mapping.yaml", tmp / "ing", progress=False)
    t_ingest = time.perf_counter() - t0

    # ------------------------------------------------------------------ synthloop
    spec = f"kind: sdv\nsource: ing\nseed: {seed}\n" + (f"rows: {rows}\n" if rows else "")
    (tmp / "spec.yaml").write_text(spec)
    t0 = time.perf_counter()
    import sdv  # noqa: F401 - import once, outside both timings

    t_import = time.perf_counter() - t0
    res = synthesize(load_spec(tmp / "spec.yaml"), progress=False)
    train, hold = res.real_train, res.real_holdout
    n = len(res.synthetic)
    extras = [c for c in train.columns if c.startswith("extra.")]
    names = {c: c[len("extra."):] for c in extras}

    # ------------------------------------------------------------------ raw SDV
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    raw_train = pd.DataFrame({names[c]: _plain(train[c]) for c in extras})
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        md = Metadata.detect_from_dataframes({"t": raw_train})
        t0 = time.perf_counter()
        gc = GaussianCopulaSynthesizer(md)
        gc.fit({"t": raw_train})
        t_fit_raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = gc.sample(n)
        t_sample_raw = time.perf_counter() - t0
    raw_syn = (out["t"] if isinstance(out, dict) else out).reset_index(drop=True)
    md_raw = md.to_dict()["tables"]["t"]

    # ------------------------------------------------------------------ the same yardsticks
    syn_named = pd.DataFrame({names[c]: _plain(res.synthetic[c]) for c in extras})
    q_sdv = {"synthloop": _quality(raw_train, syn_named, md_raw),
             "raw SDV": _quality(raw_train, raw_syn, md_raw)}
    sdtypes = {c: t for c, t in _compared(res).items() if c in train.columns}
    own_md = {"columns": {names.get(c, c): {"sdtype": t} for c, t in sdtypes.items()
                          if c in names}}
    own_real = for_sdmetrics(train, {c: t for c, t in sdtypes.items() if c in names}).rename(
        columns=names)
    q_own = {"synthloop": _quality(own_real, for_sdmetrics(res.synthetic, {
        c: t for c, t in sdtypes.items() if c in names}).rename(columns=names), own_md),
        "raw SDV": _quality(own_real, for_sdmetrics(
            raw_syn.rename(columns={v: k for k, v in names.items()}),
            {c: t for c, t in sdtypes.items() if c in names}).rename(columns=names), own_md)}
    raw_as_syn = raw_syn.rename(columns={v: k for k, v in names.items()})
    for c in sdtypes:
        if c not in raw_as_syn.columns:
            raw_as_syn[c] = res.synthetic[c].iloc[0] if c in res.synthetic else None
    th = res.spec.privacy
    privacy = {}
    for label, frame in (("synthloop", res.synthetic), ("raw SDV", raw_as_syn)):
        t0 = time.perf_counter()
        rep = privacy_report(PrivacyInputs(training=train, synthetic=frame, holdout=hold,
                                           sdtypes=sdtypes, group_column="user_id", seed=seed), th)
        privacy[label] = (rep, time.perf_counter() - t0)

    # ------------------------------------------------------------------ print
    print(f"data: {SHOPPERS}")
    print(f"ingest {t_ingest:.1f} s; training rows {len(train):,}, holdout rows {len(hold):,}, "
          f"synthetic rows {n:,}; seed {seed}; import sdv {t_import:.1f} s (not in timings)")
    print("machine: 2 cores shared with other work; re-measure on a quiet machine\n")
    rows_out = [
        ("fit time (s)", res.timings["fit_s"], t_fit_raw),
        ("sample time (s)", res.timings["sample_s"], t_sample_raw),
        ("quality, SDV metadata", q_sdv["synthloop"]["score"], q_sdv["raw SDV"]["score"]),
        ("  column shapes", q_sdv["synthloop"]["shapes"], q_sdv["raw SDV"]["shapes"]),
        ("  column pair trends", q_sdv["synthloop"]["pairs"], q_sdv["raw SDV"]["pairs"]),
        ("quality, synthloop metadata", q_own["synthloop"]["score"], q_own["raw SDV"]["score"]),
    ]
    for label in ("dcr_baseline_protection", "dcr_overfitting_protection"):
        rows_out.append((label.replace("_", " "),
                         (privacy["synthloop"][0].metrics.get(label) or {}).get("score"),
                         (privacy["raw SDV"][0].metrics.get(label) or {}).get("score")))
    rows_out += [
        ("dcr holdout ratio", privacy["synthloop"][0].metrics["dcr_holdout_ratio"],
         privacy["raw SDV"][0].metrics["dcr_holdout_ratio"]),
        ("dcr close share (5% expected)",
         (privacy["synthloop"][0].metrics.get("dcr_close_share") or {}).get("share"),
         (privacy["raw SDV"][0].metrics.get("dcr_close_share") or {}).get("share")),
        ("exact copy rate", privacy["synthloop"][0].metrics["exact_copies"]["rate"],
         privacy["raw SDV"][0].metrics["exact_copies"]["rate"]),
        ("NNDR p05", privacy["synthloop"][0].metrics["nndr"]["p05"],
         privacy["raw SDV"][0].metrics["nndr"]["p05"]),
        ("privacy report time (s)", privacy["synthloop"][1], privacy["raw SDV"][1]),
    ]
    print(f"{'':32s}{'synthloop':>12s}{'raw SDV GC':>12s}")
    for label, a, b in rows_out:
        print(f"{label:32s}{_f(a):>12s}{_f(b):>12s}")
    gates = {k: v[0].passed for k, v in privacy.items()}
    print(f"{'privacy gate (defaults)':32s}{_gate(gates['synthloop']):>12s}"
          f"{_gate(gates['raw SDV']):>12s}")
    hq = (res.fidelity.get("holdout_quality") or {}).get("score")
    if hq is not None:
        print(f"\nheld-out real rows vs training rows, synthloop metadata: quality {hq:.4f}")
    goal = (q_sdv["synthloop"]["score"] >= q_sdv["raw SDV"]["score"]) and gates["synthloop"]
    print(f"goal (quality >= raw SDV's, privacy gate passing): {'met' if goal else 'NOT met'}")
    return 0


def _plain(s: pd.Series) -> pd.Series:
    """Nullable ingest dtypes as the plain ones a CSV reader gives."""
    s = s.reset_index(drop=True)
    if isinstance(s.dtype, pd.BooleanDtype):
        return s.astype(object).where(s.notna(), None) if s.isna().any() else s.astype(bool)
    if isinstance(s.dtype, pd.Int64Dtype):
        return s.astype("float64") if s.isna().any() else s.astype("int64")
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        return s.astype(object)
    return s


def _compared(res: object) -> dict[str, str]:
    from synthloop.generate.sdv import compared_sdtypes

    return compared_sdtypes(res.model.plan)  # type: ignore[attr-defined]


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def _gate(ok: bool) -> str:
    return "passed" if ok else "FAILED"


if __name__ == "__main__":
    sys.exit(main())
