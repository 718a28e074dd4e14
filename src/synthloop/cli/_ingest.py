"""`synthloop ingest LOGS --mapping MAPPING.yaml --out DIR`: consented, scrubbed sample of real logs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from synthloop.ingest import QUARANTINE, ingest


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}"
                                         ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ingest",
        help="read real logs into a consented, validated, PII-scrubbed sample",
        description="Read CSV, JSONL or Parquet logs, map their columns to Interaction fields "
        "(MAPPING.yaml), keep only rows consented for the use (default synthetic_fit) at their "
        "timestamp, validate every row (bad rows go to DIR/quarantine.jsonl with their line "
        "numbers), scrub PII from all free text, and write DIR/sample.parquet, DIR/report.json "
        "and DIR/manifest.json. DIR must not exist; bad input writes nothing.",
    )
    p.add_argument("logs", type=Path, metavar="LOGS", help="log file (.csv, .jsonl, .parquet; .gz ok)")
    p.add_argument("--mapping", type=Path, required=True, metavar="MAPPING.yaml",
                   help="column mapping, consent and PII options (see docs/ingest-and-privacy.md)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="new output directory (never overwritten)")
    p.add_argument("--max-invalid", type=_share, metavar="SHARE",
                   help="largest share of consented rows that may be invalid (default: the "
                   "mapping's max_invalid, 0.1); above it the log is refused")
    p.add_argument("--strict", action="store_true",
                   help="refuse the log if any row is invalid (same as --max-invalid 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    limit = 0.0 if args.strict else args.max_invalid
    report = ingest(args.logs, args.mapping, args.out, max_invalid=limit)
    c = report.counts
    print(f"ingested {args.logs} -> {args.out}")
    print(f"  rows read {c.read:,}  used {c.used:,}  invalid {c.invalid:,}"
          f"  excluded for consent {c.excluded_consent:,} ({c.users_excluded_consent:,} users)")
    print(f"  users {c.users_used:,}  sessions {c.sessions_used:,}"
          f"  consent {report.consent.use}: {report.consent.basis}")
    found = {k: v for k, v in report.pii.items() if v}
    if found:
        print("  PII scrubbed: " + ", ".join(f"{k} {v:,}" for k, v in found.items())
              + f" ({report.pii_replace})")
    else:
        print("  PII scrubbed: none found")
    if c.invalid:
        print(f"  invalid rows (line numbers, messages): {args.out / QUARANTINE}")
    return 0
