"""`synthloop compare` and `synthloop gate`: paired comparison of two scored runs, and the
release gate applied to it.

    synthloop compare BASE_RUNDIR CAND_RUNDIR --out CMPDIR     # writes CMPDIR/comparison.json
    synthloop gate CMPDIR --policy POLICY.yaml [--junit F] [--markdown F] [--html F] [--json F]

`gate` exits 0 when every check passes, 1 on a regression, 3 when a check cannot be decided
with these cases, 2 on a usage, config or input error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from synthloop.errors import DataError

# synthloop.stats.N_BOOT (not imported here: the CLI loads the statistics only when used)
N_BOOT = 2000


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


def _confidence(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.5 < v < 1:
        raise argparse.ArgumentTypeError("must be between 0.5 and 1, e.g. 0.95")
    return v


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two scored runs case by case (paired statistics) → CMPDIR/comparison.json",
        description="Pair the cases of a baseline and a candidate run of the same evalset and "
        "compute, per metric and per segment: both means, the paired change with a seeded "
        "bootstrap interval, a p-value (McNemar mid-p for binary metrics, paired permutation "
        "otherwise; by session when cases share sessions), effect size, multiplicity-adjusted "
        "segment p-values and power (minimum detectable effect, cases needed).",
    )
    p.add_argument("base", type=Path, metavar="BASE_RUNDIR", help="baseline run directory (scored)")
    p.add_argument("cand", type=Path, metavar="CAND_RUNDIR", help="candidate run directory (scored)")
    p.add_argument("--out", type=Path, required=True, metavar="CMPDIR",
                   help="output directory; comparison.json is written there")
    p.add_argument("--evalset", type=Path, help="evalset version (default: the path in the run manifests)")
    p.add_argument("--metrics", help="comma-separated metrics to compare (default: all in both runs)")
    p.add_argument("--segments", help="comma-separated tag keys to compare by segment "
                   "(default: every tag key with 2 to --max-segment-values values)")
    p.add_argument("--max-segment-values", type=_positive, default=50, metavar="N",
                   help="skip tag keys with more distinct values than this (default 50)")
    p.add_argument("--lower-is-better", action="append", default=[], metavar="METRIC",
                   help="metric where lower is better (repeatable; default: from scores.json)")
    p.add_argument("--higher-is-better", action="append", default=[], metavar="METRIC",
                   help="metric where higher is better (repeatable; overrides scores.json)")
    p.add_argument("--no-cluster", action="store_true",
                   help="treat cases as independent even when they share sessions")
    p.add_argument("--seed", type=int, default=0, help="root random seed (default 0)")
    p.add_argument("--n-boot", type=_positive, default=N_BOOT, metavar="B",
                   help=f"bootstrap resamples (default {N_BOOT})")
    p.add_argument("--confidence", type=_confidence, default=0.95,
                   help="level of the reported two-sided intervals (default 0.95)")
    p.add_argument("--worst", type=_positive, default=10, metavar="K",
                   help="worst regressions kept per metric for the report (default 10)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown summary")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML report")
    p.set_defaults(func=run_compare)

    g = sub.add_parser(
        "gate",
        help="apply a release policy to a comparison; exit 0 pass, 1 regression, 3 inconclusive",
        description="Apply the rules of POLICY.yaml to CMPDIR/comparison.json and write "
        "CMPDIR/verdict.json plus any requested reports. Exit codes: 0 every check passed, "
        "1 regression found, 2 usage/config/input error, 3 inconclusive (too few cases). "
        "With $GITHUB_STEP_SUMMARY set, the Markdown report is appended there.",
    )
    g.add_argument("cmpdir", type=Path, metavar="CMPDIR",
                   help="directory written by `synthloop compare` (or its comparison.json)")
    g.add_argument("--policy", type=Path, required=True, metavar="POLICY.yaml", help="gate rules")
    g.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    g.add_argument("--markdown", type=Path, metavar="FILE", help="write the Markdown report")
    g.add_argument("--html", type=Path, metavar="FILE", help="write the self-contained HTML report")
    g.add_argument("--json", type=Path, metavar="FILE",
                   help="write the verdict JSON here too (always written to CMPDIR/verdict.json)")
    g.add_argument("--no-step-summary", action="store_true",
                   help="do not append to $GITHUB_STEP_SUMMARY")
    g.set_defaults(func=run_gate)


def run_compare(args: argparse.Namespace) -> int:
    from synthloop.gate import fmt, fmt_p
    from synthloop.progress import progress_bar
    from synthloop.report import write_reports
    from synthloop.stats import compare_runs, write_comparison
    from synthloop.stats._compare import VERDICT_FILE

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory", hint="choose another --out")
    with progress_bar(None, "compare") as bar:
        cmp = compare_runs(
            args.base, args.cand, evalset=args.evalset, metrics=_names(args.metrics),
            segments=_names(args.segments), lower_is_better=args.lower_is_better,
            higher_is_better=args.higher_is_better, cluster=not args.no_cluster,
            seed=args.seed, n_boot=args.n_boot, confidence=args.confidence, worst=args.worst,
            max_segment_values=args.max_segment_values,
            on_metric=lambda name: bar.advance(1, metric=name),
        )
    stale = out / VERDICT_FILE
    had_verdict = stale.is_file()
    path = write_comparison(cmp, out)  # removes the old verdict.json
    if had_verdict:
        print(f"note: removed {stale}: it gated the comparison this one replaces; run "
              f"`synthloop gate {out} --policy POLICY.yaml` again (reports an earlier gate "
              "wrote describe the old comparison)", file=sys.stderr)
    write_reports(cmp, None, markdown=args.markdown, html=args.html, step_summary=False)
    base = cmp.baseline.target_name or cmp.baseline.model or cmp.baseline.path
    cand = cmp.candidate.target_name or cmp.candidate.model or cmp.candidate.path
    print(f"compared {cand} (candidate) with {base} (baseline) on "
          f"{cmp.evalset.name}@{cmp.evalset.version}: {cmp.evalset.cases:,} cases"
          + (f", {cmp.n_clusters:,} sessions" if cmp.clustered else ""))
    for m in cmp.metrics.values():
        s = m.overall
        ci = f"[{fmt(s.ci[0], True)}, {fmt(s.ci[1], True)}]" if s.ci else ""
        arrow = "↑" if m.higher_is_better else "↓"
        print(f"  {m.name} {arrow}  {fmt(s.mean_base)} → {fmt(s.mean_cand)}  change "
              f"{fmt(s.delta, True)} {ci}  p={fmt_p(s.p_value)} ({s.test})  n={s.n:,}  "
              f"MDE {fmt(s.mde)}")
    if cmp.segment_keys:
        print(f"  segments: {', '.join(cmp.segment_keys)}")
    for note in cmp.notes:
        print(f"  note: {note}")
    print(f"wrote {path}")
    return 0


def run_gate(args: argparse.Namespace) -> int:
    from synthloop.gate import VERDICT_FILE, evaluate, load_policy, write_verdict
    from synthloop.report import write_reports
    from synthloop.stats import comparison_path, read_comparison

    cmp_file = comparison_path(args.cmpdir)
    cmp = read_comparison(args.cmpdir)
    policy = load_policy(args.policy)
    verdict = evaluate(cmp, policy, comparison_path=cmp_file, policy_path=args.policy)
    write_verdict(verdict, cmp_file.parent / VERDICT_FILE)
    written = write_reports(cmp, verdict, markdown=args.markdown, junit=args.junit,
                            html=args.html, json=args.json,
                            step_summary=not args.no_step_summary)
    icon = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
    print(f"{icon[verdict.status]}: {verdict.summary}")
    for r in verdict.results:
        mark = icon[r.counts_as]
        print(f"  [{mark}] {r.name}: {r.reason}")
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")
    return verdict.exit_code
