"""`synthloop simulate`: simulated users (an LLM playing personas with goals) against a target."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from synthloop.simulate import DEFAULT_CACHE, simulate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulated users: an LLM plays personas with goals against a target, turn by turn",
        description="Multi-turn replay with simulated users. For each scenario (a session opener "
        "of --evalset, or a cell of the spec's persona x intent grid) the target answers, then "
        "the spec's endpoint, playing that persona, gives the reply a thumb/rating, decides "
        "whether its goal is reached or to give up, and writes the next message, up to "
        "--max-turns. Writes a run directory (responses, per-scenario simulation scores, "
        "transcripts.jsonl) that `synthloop score` and `synthloop compare` accept.",
    )
    p.add_argument("--spec", type=Path, required=True, metavar="SPEC.yaml",
                   help="kind: llm spec: the user LLM endpoint, personas, intents (goals)")
    p.add_argument("--target", type=Path, required=True, metavar="TARGET.yaml",
                   help="the model version to talk to")
    p.add_argument("--out", type=Path, required=True, metavar="RUNDIR",
                   help="new run directory")
    p.add_argument("--evalset", metavar="REF",
                   help="scenarios: the session openers of this evalset (path or NAME@VERSION); "
                        "default: the spec's grid")
    p.add_argument("-n", "--n", type=int, dest="n", help="number of scenarios")
    p.add_argument("--seed", type=int, help="seed (overrides the spec's)")
    p.add_argument("--max-turns", type=int, help="most user turns per conversation")
    p.add_argument("--concurrency", type=int, help="conversations in flight at once")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="budget of the user LLM; no request starts that could exceed it")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="response cache file (default .synthloop/cache.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = simulate(args.spec, args.target, args.out, evalset=args.evalset, n=args.n,
                      seed=args.seed, max_turns=args.max_turns, concurrency=args.concurrency,
                      cache=None if args.no_cache else args.cache, max_cost=args.max_cost)
    s = result.summary
    m = result.manifest
    outcomes = "  ".join(f"{k} {v:,}" for k, v in s["outcomes"].items())
    print(f"wrote simulation run to {args.out} ({m.target_name or m.target.model})")
    print(f"  scenarios {s['scenarios']:,}  target turns {s['target_turns']:,}  "
          f"mean turns {s['mean_turns']}  goal reached {s['goal_reached_rate']:.1%}")
    print(f"  outcomes: {outcomes}")
    u = s["user_llm"]
    print(f"  user LLM: {u['requests']:,} requests ({u['retries']:,} retries, {u['repairs']:,} "
          f"repairs, {u['cache_hits']:,} cache hits), cost ${u['cost_usd']:.4f}")
    if m.status != "complete":
        print("  INTERRUPTED: the user LLM's cost budget was reached (see simulation.json)")
    return 0
