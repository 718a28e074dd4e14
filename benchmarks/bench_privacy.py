"""Privacy report timing: 10,000 real x 10,000 synthetic rows (plus a 2,000-row holdout), one core.

    .venv/bin/python benchmarks/bench_privacy.py [--rows 10000] [--holdout 2500] [--sdmetrics 1000]

Real rows: `../shared/data/online_shoppers/online_shoppers_intention.csv` (18 columns: 14
numerical, 4 categorical/boolean), resampled to `--rows` when present; otherwise a generated
table of the same shape. Synthetic rows: every column resampled independently from the real
ones with small noise on numbers (the report's cost does not depend on where rows come from).

Prints the wall time of `privacy_report` (all distance passes: synthetic -> real with the
two nearest, random baseline -> real, holdout -> real, overfitting repeats, exact copies, NNDR)
and, on a `--sdmetrics` x `--sdmetrics` sample, SDMetrics' own DCRBaselineProtection and
DCROverfittingProtection time and scores next to ours.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from synthloop.privacy import (  # noqa: E402
    PrivacyInputs,
    PrivacyThresholds,
    dcr_baseline_protection,
    dcr_overfitting_protection,
    privacy_report,
)

SHOPPERS = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_shoppers"
            / "online_shoppers_intention.csv")


def real_table(rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, str], str]:
    if SHOPPERS.exists():
        df = pd.read_csv(SHOPPERS)
        source = str(SHOPPERS)
    else:
        rng = np.random.default_rng(seed)
        n = 12_205
        df = pd.DataFrame({f"num{i}": rng.gamma(1 + i % 3, 10, n) * (rng.random(n) < 0.6)
                           for i in range(14)})
        df["month"] = rng.choice(["Feb", "Mar", "May", "Nov", "Dec"], n)
        df["visitor"] = rng.choice(["new", "returning", "other"], n)
        df["weekend"] = rng.random(n) < 0.25
        df["revenue"] = rng.random(n) < 0.15
        source = "generated (../shared/data absent)"
    sdtypes = {c: ("boolean" if df[c].dtype == bool else
                   "numerical" if pd.api.types.is_numeric_dtype(df[c]) else "categorical")
               for c in df.columns}
    df = df.sample(n=rows, replace=rows > len(df), random_state=seed).reset_index(drop=True)
    return df, sdtypes, source


def synthetic_like(real: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = {}
    for c in real.columns:
        v = real[c].to_numpy()[rng.integers(0, len(real), n)]
        if pd.api.types.is_float_dtype(real[c]):
            v = v * (1 + rng.normal(0, 0.05, n))
        out[c] = v
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--synthetic", type=int, default=10_000)
    ap.add_argument("--holdout", type=int, default=2_000)
    ap.add_argument("--sdmetrics", type=int, default=1_000,
                    help="rows per table for the SDMetrics comparison (0 skips it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    real_all, sdtypes, source = real_table(args.rows + args.holdout, args.seed)
    real, hold = real_all.iloc[: args.rows], real_all.iloc[args.rows:]
    syn = synthetic_like(real, args.synthetic, args.seed + 1)
    print(f"data: {source}")
    print(f"tables: real {len(real):,}  synthetic {len(syn):,}  holdout {len(hold):,}  "
          f"columns {len(sdtypes)} ({sum(t == 'numerical' for t in sdtypes.values())} numerical)")

    th = PrivacyThresholds(sample_rows=max(args.rows, args.synthetic, args.holdout))
    t0 = time.perf_counter()
    report = privacy_report(PrivacyInputs(training=real, synthetic=syn, holdout=hold,
                                          sdtypes=sdtypes, seed=args.seed), th)
    wall = time.perf_counter() - t0
    m = report.metrics
    print(f"\nprivacy_report: {wall:.2f} s wall (target <= 5 s; machine may be shared)")
    print(f"  DCR baseline protection  {m['dcr_baseline_protection']['score']:.4f}")
    print(f"  DCR overfitting protect. {m['dcr_overfitting_protection']['score']:.4f} "
          f"({m['dcr_overfitting_protection']['repeats']} repeats)")
    print(f"  DCR holdout ratio        {m['dcr_holdout_ratio']:.4f}")
    print(f"  exact copies             {m['exact_copies']['rate']:.4f}")
    print(f"  NNDR p05                 {m['nndr']['p05']:.4f}")
    # synthetic->real (two nearest), random->real, holdout->real, synthetic->holdout once,
    # and synthetic->training sample per overfitting repeat
    pairs = (len(syn) * len(real) + min(len(syn), th.random_rows) * len(real)
             + len(hold) * len(real)
             + len(syn) * len(hold) * (1 + th.overfitting_repeats))
    print(f"  distance pairs           {pairs / 1e6:,.0f} M  ({pairs / wall / 1e6:,.0f} M/s)")

    if args.sdmetrics:
        from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

        k = args.sdmetrics
        r, s, h = real.iloc[:k], syn.iloc[:k], hold.iloc[: max(k // 2, 1)]
        md = {"tables": {"t": {"columns": {c: {"sdtype": t} for c, t in sdtypes.items()}}}}
        print(f"\nSDMetrics 0.32 on {k:,} x {k:,} (holdout {len(h):,}):")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DCRBaselineProtection._seed = args.seed
            np.random.seed(args.seed)
            t0 = time.perf_counter()
            base = DCRBaselineProtection.compute_breakdown({"t": r}, {"t": s}, md, "t")
            t_base = time.perf_counter() - t0
            t0 = time.perf_counter()
            over = DCROverfittingProtection.compute_breakdown({"t": r}, {"t": s}, h, md, "t")
            t_over = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_b = dcr_baseline_protection(r, s, sdtypes, seed=args.seed)
        o_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_o = dcr_overfitting_protection(r, s, h, sdtypes)
        o_over = time.perf_counter() - t0
        print(f"  DCRBaselineProtection    SDMetrics {base['score']:.4f} in {t_base:6.2f} s | "
              f"synthloop {ours_b['score']:.4f} in {o_base:5.2f} s  "
              f"(|diff| {abs(base['score'] - ours_b['score']):.2e})")
        print(f"  DCROverfittingProtection SDMetrics {over['score']:.4f} in {t_over:6.2f} s | "
              f"synthloop {ours_o['score']:.4f} in {o_over:5.2f} s  "
              f"(|diff| {abs(over['score'] - ours_o['score']):.2e})")


if __name__ == "__main__":
    main()
