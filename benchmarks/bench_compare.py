"""Benchmark: `compare` + `gate` on 1,000,000 paired cases, 5 metrics, 20 segments.

    .venv/bin/python benchmarks/bench_compare.py [--cases 1000000] [--repeat 3] [--workdir DIR]

Builds (once, cached in --workdir) an evalset of N cases in sessions of 4 turns, tagged with
persona (5 values), intent (10) and locale (5) = 20 segments, and two scored runs with three
binary metrics, one continuous and one ordinal metric plus latency. Then times, in-process,
`compare_runs` (reading the parquet files, pairing, all statistics, worst cases, latency),
`write_comparison`, `load_policy` + `evaluate` on a policy with every rule kind, and
separately the reports. Prints wall and CPU seconds; the figure to compare with the 5 s goal
is "compare + gate" (best of --repeat runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

POLICY = """\
min_cases: 30
rules:
  - metric: correct
    max_drop: 0.02
    confidence: 0.95
    segments: [persona, intent, locale]
  - metric: json_valid
    max_drop: 0.01
    segments: intent
    correction: bh
  - json_valid >= 0.6
  - metric: format_ok
    max_drop: 0.02
  - metric: similarity
    max_drop: 0.01
    segments: locale
  - metric: rating
    max_drop: 0.05
  - latency: p95
    max_ratio: 1.2
"""


def build(root: Path, n: int, seed: int = 0) -> None:
    from synthloop.stats.fixtures import write_run_pair

    rng = np.random.default_rng(seed)
    base: dict[str, np.ndarray] = {}
    cand: dict[str, np.ndarray] = {}
    for name, p_base, drop in (("correct", 0.72, 0.0), ("json_valid", 0.9, 0.003),
                               ("format_ok", 0.8, 0.01)):
        b = (rng.random(n) < p_base).astype(float)
        flip = rng.random(n) < 0.2
        c = np.where(flip, (rng.random(n) < p_base - drop / 0.2).astype(float), b)
        base[name], cand[name] = b, c
    s = rng.random(n)
    base["similarity"], cand["similarity"] = s, np.clip(s + rng.normal(-0.001, 0.1, n), 0, 1)
    r = rng.integers(1, 6, n).astype(float)
    base["rating"] = r
    cand["rating"] = np.clip(r + rng.choice([-1.0, 0.0, 1.0], n, p=[0.1, 0.8, 0.1]), 1, 5)
    personas = np.array([f"persona-{i}" for i in range(5)])
    intents = np.array([f"intent-{i}" for i in range(10)])
    locales = np.array(["en", "fr", "de", "es", "ja"])
    sess = np.arange(n) // 4
    write_run_pair(
        root, base=base, cand=cand,
        kinds={"correct": "binary", "json_valid": "binary", "format_ok": "binary",
               "similarity": "continuous", "rating": "ordinal"},
        tags={"persona": personas[rng.integers(0, 5, n // 4 + 1)][sess],
              "intent": intents[rng.integers(0, 10, n)],
              "locale": locales[rng.integers(0, 5, n // 4 + 1)][sess]},
        sessions=np.char.add("s", sess.astype(str)),
        latency_base=rng.lognormal(6.0, 0.5, n), latency_cand=rng.lognormal(6.02, 0.5, n),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from synthloop.gate import evaluate, load_policy
    from synthloop.report import write_reports
    from synthloop.stats import compare_runs, write_comparison

    work = args.workdir or Path(tempfile.gettempdir()) / f"synthloop-bench-compare-{args.cases}"
    if args.rebuild:
        shutil.rmtree(work, ignore_errors=True)
    if not (work / "cand" / "scores.parquet").exists():
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        build(work, args.cases)
        print(f"built fixtures in {work} ({time.perf_counter() - t:.1f} s, not timed below)")
    policy_path = work / "policy.yaml"
    policy_path.write_text(POLICY)

    print(f"cases {args.cases:,}  metrics 5 (3 binary, 1 continuous, 1 ordinal)  segments 20 "
          f"(persona 5, intent 10, locale 5)  sessions of 4 cases  cpu cores {os.cpu_count()}")
    best: dict[str, float] = {}
    for i in range(args.repeat):
        timings: dict[str, float] = {}
        w0, c0 = time.perf_counter(), time.process_time()
        cmp = compare_runs(work / "base", work / "cand", seed=0, timings=timings)
        w1, c1 = time.perf_counter(), time.process_time()
        write_comparison(cmp, work / "cmp")
        verdict = evaluate(cmp, load_policy(policy_path))
        w2, c2 = time.perf_counter(), time.process_time()
        write_reports(cmp, verdict, markdown=work / "cmp" / "report.md",
                      junit=work / "cmp" / "junit.xml", html=work / "cmp" / "report.html",
                      step_summary=False)
        w3 = time.perf_counter()
        run = {"compare wall": w1 - w0, "compare cpu": c1 - c0,
               "compare+gate wall": w2 - w0, "compare+gate cpu": c2 - c0,
               "reports wall": w3 - w2}
        print(f"run {i + 1}: compare {run['compare wall']:.2f} s (cpu {run['compare cpu']:.2f}), "
              f"compare+gate {run['compare+gate wall']:.2f} s (cpu {run['compare+gate cpu']:.2f}), "
              f"reports {run['reports wall']:.2f} s   phases: "
              + ", ".join(f"{k} {v:.2f} (cpu {timings[k + ' cpu']:.2f})"
                          for k, v in timings.items() if not k.endswith(" cpu")))
        for k, v in run.items():
            best[k] = min(best.get(k, v), v)
    print(f"verdict: {verdict.status} (exit {verdict.exit_code}); {len(verdict.results)} checks; "
          f"{sum(len(m.segments.get(k, {})) for m in cmp.metrics.values() for k in cmp.segment_keys)} "
          f"metric×segment results")
    print(f"BEST compare+gate: {best['compare+gate wall']:.2f} s wall, "
          f"{best['compare+gate cpu']:.2f} s cpu (goal <= 5 s); reports {best['reports wall']:.2f} s")


if __name__ == "__main__":
    main()
