"""`synthloop score RUNDIR --scorers SCORERS.yaml`: add per-case scores to a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score a run's responses (match, similarity, LLM judge, latency, cost, custom)",
        description="Score every response of a run with the scorers in SCORERS.yaml and write "
        "RUNDIR/scores.parquet (one row per case, sample and metric) and RUNDIR/scores.json "
        "(scorer configs and a per-metric summary). Re-scoring replaces metrics of the same "
        "name and keeps the others. A scorer that fails on a case is recorded as a failure, "
        "not a crash.",
    )
    p.add_argument("rundir", type=Path, help="run directory written by `synthloop replay`")
    p.add_argument("--scorers", type=Path, required=True, metavar="SCORERS.yaml",
                   help="scorer config (YAML)")
    p.add_argument("--baseline", type=Path, metavar="BASE_RUNDIR",
                   help="baseline run for pairwise scorers (llm_pairwise)")
    p.add_argument("--evalset", metavar="PATH",
                   help="evalset version the run replayed (default: the path in its manifest)")
    p.add_argument("--cache", type=Path, metavar="FILE",
                   help="LLM-judge response cache (default: the config's, else "
                        ".synthloop/cache.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    from synthloop.scorers import score_run

    summary = score_run(args.rundir, args.scorers, baseline=args.baseline, cache=args.cache,
                        no_cache=args.no_cache, evalset=args.evalset)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    metrics: dict[str, dict[str, Any]] = summary["metrics"]
    print(f"scored {summary['responses']:,} responses of {summary['rundir']} "
          f"({summary['no_output']:,} without output) with {len(metrics)} scorer(s)")
    rows = [("metric", "kind", "better", "mean", "n", "failures", "no-output nulls")]
    for name, m in metrics.items():
        rows.append((name, m["kind"], "higher" if m["higher_is_better"] else "lower",
                     _fmt(m["mean"]), f"{m['n']:,}", f"{m['failures']:,}",
                     f"{m['no_output_null']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for name, m in metrics.items():
        if m.get("first_failure"):
            print(f"  {name}: {m['failures']:,} failure(s), e.g. {m['first_failure']}")
    for name, u in summary.get("usage", {}).items():
        if "verdicts" in u:
            print(f"  {name}: {u['verdicts']:,} verdicts ({u['cached']:,} cached), "
                  f"{u['requests']:,} requests, {u['retries']:,} retries, "
                  f"{u['prompt_tokens']:,}+{u['completion_tokens']:,} tokens")
    if summary["kept"]:
        print(f"  kept earlier metrics: {', '.join(summary['kept'])}")
    if summary["dropped_stale"]:
        print(f"  dropped stale metrics (scored on different responses): "
              f"{', '.join(summary['dropped_stale'])}")
    for w in summary["warnings"]:
        print(f"  warning: {w}")
    print(f"  wrote {summary['scores_path']}")
    return 0
