"""`synthloop run PIPELINE.yaml` and `synthloop demo`: the whole flywheel in one command."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_CANDIDATES = ("v1", "v2")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a whole pipeline: generate, replay, score, compare, gate, report",
        description="Run PIPELINE.yaml end to end: generate (or reuse) an evalset, optionally "
        "train the feedback model, replay it against the baseline and every candidate, score, "
        "compare each candidate with the baseline and gate it. Each stage is cached by the "
        "hash of its inputs under the work directory, so an unchanged stage is not redone. "
        "Exit code: the gate's (0 pass, 1 regression, 3 inconclusive), 2 for bad input.",
    )
    p.add_argument("pipeline", type=Path, help="pipeline config (YAML)")
    p.add_argument("--workdir", type=Path,
                   help="where stage outputs go (default: the config's `workdir`, else "
                   "./synthloop-runs/<name>)")
    p.add_argument("--force", action="store_true", help="redo every stage, even cached ones")
    p.add_argument("--check", action="store_true",
                   help="validate the config, policy, targets and scorers; do no work")
    p.set_defaults(func=run)

    d = sub.add_parser(
        "demo",
        help="run the built-in demo (offline, no keys): support assistant v2 vs v1",
        description="Run the pipeline shipped with synthloop: 400 synthetic sessions of users of "
        "Lumen Notes (a fictional notes app) asking its support assistant; a feedback model "
        "trained on earlier synthetic thumbs; two reference model versions replayed, scored and "
        "compared per intent. v2 is better on average but regresses on refund questions, so "
        "the gate fails (exit 1) and the HTML report shows where.",
    )
    d.add_argument("--workdir", type=Path, default=Path("synthloop-demo"),
                   help="where the demo writes (default ./synthloop-demo)")
    d.add_argument("--candidate", choices=DEMO_CANDIDATES, default="v2",
                   help="model version to gate against v1 (default v2; v1 = the baseline "
                   "itself, which passes)")
    d.add_argument("--force", action="store_true", help="redo every stage, even cached ones")
    d.set_defaults(func=run_demo)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _print_summary(result: Any) -> None:
    for line in result.summary_lines():
        print(line)


def run(args: argparse.Namespace) -> int:
    from synthloop.pipeline import check_pipeline, run_pipeline

    if args.check:
        for line in check_pipeline(args.pipeline, workdir=args.workdir):
            print(line)
        return 0
    result = run_pipeline(args.pipeline, workdir=args.workdir, force=args.force, log=_log)
    _print_summary(result)
    return int(result.exit_code)


def run_demo(args: argparse.Namespace) -> int:
    from synthloop.pipeline import run_pipeline

    with ExitStack() as stack:
        data = stack.enter_context(resources.as_file(
            resources.files("synthloop").joinpath("data/demo")))
        pipeline = Path(data) / "pipeline.yaml"
        candidates: list[str | dict[str, Any]] = [str(Path(data) / "targets" /
                                                      f"{args.candidate}.yaml")]
        print(f"synthloop demo: Lumen Notes support assistant {args.candidate} vs v1 "
              "(offline, no API keys)", file=sys.stderr)
        result = run_pipeline(pipeline, workdir=args.workdir, force=args.force,
                              candidates=candidates, log=_log)
    _print_summary(result)
    for c in result.candidates:
        html = c.reports.get("html")
        if html is not None:
            print(f"open the HTML report: {html}")
    return int(result.exit_code)
