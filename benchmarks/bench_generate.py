"""Rules-generator throughput and peak memory, written to disk, on one core.

    .venv/bin/python benchmarks/bench_generate.py                 # 100k and 1M interactions
    .venv/bin/python benchmarks/bench_generate.py --sizes 100000  # one size

Each size runs in a fresh subprocess pinned to one CPU core. The subprocess generates about
SIZE interactions from the spec (sessions = SIZE / the spec's mean turns per session) through
the real `EvalsetWriter` into a temporary folder, then reports:

- setup time: spec checks, Faker pools and template rendering
- write time and interactions/s: batches drawn, Arrow built, hashed and written to disk
- end-to-end interactions/s: interactions / (setup + write), the rate a user sees; the
  issue's target (>= 20,000 interactions/s on one core, to disk) is about this figure
- peak RSS: `ru_maxrss`, the process's high-water mark

Memory should be flat: peak RSS at 1M within 10 % of peak RSS at 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "generators" / "support_assistant.yaml"


def child(spec_path: str, interactions: int, out: str, seed: int) -> dict[str, float]:
    """Runs inside the subprocess: one generation, timed."""
    import numpy as np
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    from synthloop.generate._rules._engine import load_spec, prepare, write

    t0 = time.perf_counter()
    loaded = load_spec(spec_path)
    spec = loaded.spec
    w = np.array([p.weight for p in spec.personas], dtype=float)
    mean_turns = float(sum(spec.turns_for(p).mean() * x for p, x in zip(spec.personas, w / w.sum(),
                                                                       strict=True)))
    sessions = max(1, round(interactions / mean_turns))
    run = prepare(loaded, seed, sessions)
    t1 = time.perf_counter()
    rss_after_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = write(run, Path(out), name="bench", progress=False)
    t2 = time.perf_counter()
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    return {
        "sessions": manifest.counts.sessions,
        "interactions": manifest.counts.interactions,
        "setup_s": t1 - t0,
        "write_s": t2 - t1,
        "rss_after_setup_mb": rss_after_setup,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes": size,
    }


def run_size(spec: Path, interactions: int, seed: int, cpu: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    try:
        env = dict(os.environ, SYNTHLOOP_PROGRESS="0", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        code = (f"import os, json, sys; os.sched_setaffinity(0, {{{cpu}}}); "
                f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"from bench_generate import child; "
                f"print(json.dumps(child({str(spec)!r}, {interactions}, "
                f"{str(tmp / 'v1')!r}, {seed})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"size {interactions} failed:\n{proc.stderr}")
        result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                    help="target interactions per run (default: 100000 1000000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=None,
                    help="core to pin each run to (default: the last one available)")
    args = ap.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    print(f"spec {args.spec.relative_to(REPO) if args.spec.is_relative_to(REPO) else args.spec}, "
          f"seed {args.seed}, one core (cpu {cpu}), load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    head = (f"{'interactions':>12} {'sessions':>9} {'setup s':>8} {'write s':>8} "
            f"{'inter/s (write)':>16} {'inter/s (e2e)':>16} {'peak RSS MB':>12} "
            f"{'RSS after setup':>16} {'on disk MB':>11}")
    print(head)
    results = []
    for size in args.sizes:
        r = run_size(args.spec, size, args.seed, cpu)
        results.append(r)
        total = r["setup_s"] + r["write_s"]
        print(f"{r['interactions']:>12,.0f} {r['sessions']:>9,.0f} {r['setup_s']:>8.2f} "
              f"{r['write_s']:>8.2f} {r['interactions'] / r['write_s']:>16,.0f} "
              f"{r['interactions'] / total:>16,.0f} {r['peak_rss_mb']:>12.0f} "
              f"{r['rss_after_setup_mb']:>16.0f} {r['bytes'] / 1e6:>11.0f}", flush=True)
    print("inter/s (write): write phase only; inter/s (e2e): end to end, setup included")
    for r in results:
        total = r["setup_s"] + r["write_s"]
        print(f"end-to-end at {r['interactions']:,.0f} interactions: "
              f"{r['interactions'] / total:,.0f} interactions/s "
              f"({r['setup_s']:.2f} s setup + {r['write_s']:.2f} s write)")
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        growth = hi["peak_rss_mb"] / lo["peak_rss_mb"] - 1
        print(f"peak RSS from {lo['interactions']:,.0f} to {hi['interactions']:,.0f} "
              f"interactions: {growth:+.1%} ({'flat' if abs(growth) <= 0.10 else 'NOT flat'}, "
              f"limit 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
