"""`synthloop generate SPEC.yaml --out DIR`: write a new evalset version from a spec."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from synthloop.generate import GenerateOptions, generate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a new evalset version from a spec (kind: rules, sdv or llm)",
        description="Generate a new evalset version from a generator spec. The spec's `kind` "
        "picks the generator: rules (personas/intents/templates, no data needed), sdv (fit on "
        "an ingested, consented sample) or llm (OpenAI-compatible prompting).",
    )
    p.add_argument("spec", type=Path, help="generator spec (YAML)")
    p.add_argument("--out", type=Path, required=True, help="new evalset version directory")
    p.add_argument("--seed", type=int, help="random seed (overrides the spec's)")
    p.add_argument("--sessions", type=int, help="number of sessions (overrides the spec's)")
    p.add_argument("-n", "--n", type=int, dest="n",
                   help="llm: number of sessions (same as --sessions); sdv: number of "
                   "interactions (instead of sessions); not for rules specs")
    p.add_argument("--name", help="evalset name recorded in the manifest (default: the spec's "
                   "`name`, else --out's parent folder)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the spec (and an sdv spec's source) and print the plan; "
                   "call nothing, write nothing")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="llm: budget in USD (overrides max_cost; needs pricing); "
                   "no request starts that could exceed it")
    p.add_argument("--cache", type=Path, help="response cache file (llm; default .synthloop/cache.sqlite)")
    p.add_argument("--allow-privacy-failure", action="store_true",
                   help="write the result even if the privacy gate fails (sdv); the manifest says so")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = GenerateOptions(
        seed=args.seed, sessions=args.sessions, n=args.n, dry_run=args.dry_run,
        max_cost=args.max_cost, allow_privacy_failure=args.allow_privacy_failure,
        cache=args.cache, name=args.name,
    )
    manifest = generate(args.spec, args.out, options)
    if manifest is None:
        return 0
    fb = manifest.feedback_summary
    print(f"wrote evalset {manifest.name}@{manifest.version} to {args.out}")
    print(f"  sessions {manifest.counts.sessions:,}  cases {manifest.counts.cases:,}"
          f"  interactions {manifest.counts.interactions:,}")
    if fb.get("cases_with_feedback"):
        share = fb.get("explicit_share")
        rate = fb.get("thumb_up_rate")
        print(f"  explicit feedback {share:.1%}" if share is not None else "  explicit feedback n/a",
              f"  thumb-up rate {rate:.1%}" if rate is not None else "")
    if manifest.partial:
        print("  PARTIAL: generation stopped early (see manifest notes)")
    print(f"  content_hash {manifest.content_hash}")
    return 0
