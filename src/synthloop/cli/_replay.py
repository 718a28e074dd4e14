"""`synthloop replay --evalset DIR --target TARGET.yaml --out RUNDIR`: replay an evalset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CACHE = ".synthloop/cache.sqlite"  # synthloop.harness.DEFAULT_CACHE_PATH


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="replay an evalset against a target (model version) into a run directory",
        description="Replay every case of an evalset against a target and write RUNDIR "
        "(manifest.json, log.jsonl, responses.parquet, responses.jsonl). Replies are cached by "
        "content (target fingerprint + request + sample), so none is paid for twice. Run the "
        "same command again to resume an interrupted run.",
    )
    p.add_argument("--evalset", required=True, help="evalset directory or NAME@VERSION")
    p.add_argument("--target", type=Path, required=True, help="target file (YAML)")
    p.add_argument("--out", type=Path, required=True, help="run directory (new, or one to resume)")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="requests in flight (default: the target's `concurrency`, else 16)")
    p.add_argument("--cache", type=Path, metavar="PATH",
                   help=f"response cache file (default {DEFAULT_CACHE} under the current directory)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--repeats", type=int, default=1, metavar="K",
                   help="independent samples per case (default 1)")
    p.add_argument("--rpm", type=float, help="requests-per-minute limit (default: the target's)")
    p.add_argument("--tpm", type=float, help="tokens-per-minute limit (default: the target's)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="per-attempt timeout (default: the target's `timeout_s`, else 60)")
    p.add_argument("--max-retries", type=int, metavar="N",
                   help="retries per case (default: the target's `max_retries`, else 4)")
    p.add_argument("--retry-errors", action="store_true",
                   help="when resuming, send failed cases again too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from synthloop.harness import DEFAULT_CACHE_PATH, ReplayStats, replay  # imported when used

    cache = None if args.no_cache else (args.cache or DEFAULT_CACHE_PATH)
    stats = ReplayStats()
    manifest = replay(
        args.evalset, args.target, args.out, concurrency=args.concurrency, cache=cache,
        repeats=args.repeats, rpm=args.rpm, tpm=args.tpm, timeout_s=args.timeout,
        max_retries=args.max_retries, retry_errors=args.retry_errors, stats=stats,
    )
    c = manifest.counts
    name = manifest.target_name or manifest.target.model or manifest.target.kind
    if stats.completed == 0 and stats.resumed == c.total:
        print(f"run {args.out} is already complete ({c.total:,} responses); nothing sent")
    else:
        rate = stats.completed / stats.wall_s if stats.wall_s > 0 else 0.0
        resumed = f", {stats.resumed:,} resumed from the run log" if stats.resumed else ""
        print(f"replayed {c.total:,} responses against {name} in {stats.wall_s:.1f} s "
              f"({rate:,.0f}/s){resumed}")
    print(f"  ok {c.ok:,}  error {c.error:,}  cached {c.cached:,}  "
          f"requests sent {stats.requests:,}")
    print(f"  tokens prompt {manifest.tokens.prompt_tokens:,}  "
          f"completion {manifest.tokens.completion_tokens:,}")
    print(f"  wrote {args.out}/responses.parquet")
    return 0
