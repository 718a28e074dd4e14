"""`evalset export` throughput: rows/s per format, and the sha256 of each exported file.

    .venv/bin/python benchmarks/bench_export.py                        # ~100k cases, generated
    .venv/bin/python benchmarks/bench_export.py --cases 20000 --formats jsonl
    .venv/bin/python benchmarks/bench_export.py --evalset evalsets/support/v1

Without `--evalset`, it generates about `--cases` cases from the shipped support spec (seed 3)
into a temporary folder (not timed). Then it times `export_evalset` (the library call behind
`synthloop evalset export`) for each format, best of `--repeat` runs, and prints rows/s and
the file's sha256 (an optimisation must not change the bytes: compare the hashes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "generators" / "support_assistant.yaml"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evalset", type=Path, help="an existing version (default: generate one)")
    ap.add_argument("--cases", type=int, default=100_000, help="cases to generate (about)")
    ap.add_argument("--formats", default="jsonl,csv,parquet")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("SYNTHLOOP_PROGRESS", "0")

    from synthloop.evalsets import export_evalset, open_evalset

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        if args.evalset is None:
            from synthloop.generate import GenerateOptions, generate

            # the spec averages about 1.88 turns per session
            sessions = max(1, round(args.cases / 1.88))
            generate(SPEC, Path(tmp) / "bench" / "v1", GenerateOptions(sessions=sessions, seed=3))
            ev = open_evalset(Path(tmp) / "bench" / "v1")
        else:
            ev = open_evalset(args.evalset)
        print(f"evalset {ev.path}: {len(ev):,} cases, {ev.content_hash[:19]}…")
        for fmt in args.formats.split(","):
            best = float("inf")
            out = Path(tmp) / f"out.{fmt}"
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                rows = export_evalset(ev, out, fmt, overwrite=True)
                best = min(best, time.perf_counter() - t0)
            print(f"{fmt:8s} {rows:>9,} rows  {best:7.3f} s  {rows / best:>10,.0f} rows/s  "
                  f"{out.stat().st_size / 1e6:8.1f} MB  sha256 {sha256(out)}")


if __name__ == "__main__":
    main()
