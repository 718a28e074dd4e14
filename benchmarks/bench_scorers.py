"""Scoring throughput: match / similarity / latency / cost scorers on a large run, and LLM-judge
verdicts against the local fake OpenAI-compatible server.

    .venv/bin/python benchmarks/bench_scorers.py [--cases 100000] [--judge 2000]
                                                 [--judge-latency 0.05] [--judge-concurrency 64]

The evalset and run are generated deterministically (seed 0): replies of about 20 words drawn
from a 2,000-word vocabulary (random letter strings), one or two good references and one bad reference per case, 2 %
of replies failed. Each scorer runs alone on the whole run through `score_run` (reading the
run, scoring, writing scores.parquet + scores.json), then all together. The judge part scores
`--judge` cases with a pointwise `llm_judge` against `FakeOpenAIServer` running in its own
process (fixed reply latency), then again from the cache. Prints seconds and rows per second.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synthloop.evalsets import EvalsetWriter, columns_to_batch
from synthloop.runs import RESPONSES_SCHEMA, RunDir, write_table_atomic
from synthloop.schema import Provenance, RunManifest, TargetFingerprint
from synthloop.scorers import ScorersConfig, score_run

SCORERS: list[dict[str, Any]] = [
    {"name": "exact", "kind": "exact_match"},
    {"name": "normalized", "kind": "normalized_match"},
    {"name": "contains", "kind": "contains", "text": ["refund", "sorry"]},
    {"name": "regex", "kind": "regex", "pattern": r"\b\d{2,}\b"},
    {"name": "json", "kind": "json_valid"},
    {"name": "numeric", "kind": "numeric", "expected": 42, "abs_tol": 0.5},
    {"name": "token_f1", "kind": "token_f1"},
    {"name": "rouge_l", "kind": "rouge_l"},
    {"name": "fuzzy", "kind": "fuzzy_ratio"},
    {"name": "closer_to_bad", "kind": "closer_to_bad"},
    {"name": "latency", "kind": "latency"},
    {"name": "cost", "kind": "cost", "prompt_per_1m": 0.15, "completion_per_1m": 0.6},
]


def make_run(root: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
                    for _ in range(2000)}) + ["refund", "sorry", "order", "42", "the", "a"]

    def sentence(k: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(k))

    ids = [f"case-{i:07d}" for i in range(n)]
    goods, bads, outputs = [], [], []
    for _ in range(n):
        ref = sentence(rng.randint(12, 28))
        goods.append([ref] + ([sentence(20)] if rng.random() < 0.5 else []))
        bads.append([sentence(18)])
        r = rng.random()
        if r < 0.02:
            outputs.append(None)
        elif r < 0.3:
            outputs.append(ref)
        else:
            words = ref.split()
            keep = [w for w in words if rng.random() < 0.7] + sentence(rng.randint(2, 8)).split()
            outputs.append(" ".join(keep))
    ev = root / "evalset"
    with EvalsetWriter(ev, provenance=Provenance(generator="bench", seed=seed)) as w:
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            w.write_batch(columns_to_batch({
                "case_id": ids[s:e], "input": [f"question {i}" for i in range(s, e)],
                "references_good": goods[s:e], "references_bad": bads[s:e]}))
        manifest = w.close()
    import pyarrow as pa

    rd = RunDir(root / "run")
    rd.path.mkdir()
    rd.write_manifest(RunManifest(
        evalset_hash=manifest.content_hash, evalset_path=str(ev),
        target=TargetFingerprint(kind="bench", model="m"), package_version="0",
        started_at=datetime.now(UTC), status="complete"))
    table = pa.table({
        "case_id": ids, "sample": [0] * n, "output": outputs,
        "error": [None if o is not None else "timeout" for o in outputs],
        "error_kind": [None if o is not None else "timeout" for o in outputs],
        "latency_ms": [rng.uniform(100, 3000) for _ in range(n)],
        "prompt_tokens": [rng.randint(20, 400) for _ in range(n)],
        "completion_tokens": [rng.randint(5, 300) for _ in range(n)],
        "attempts": [1] * n, "cached": [False] * n,
    }, schema=RESPONSES_SCHEMA)
    write_table_atomic(rd.responses_path, table)
    return rd.path


def bench_builtin(root: Path, n: int) -> None:
    t0 = time.perf_counter()
    run = make_run(root, n)
    print(f"built evalset + run of {n:,} cases in {time.perf_counter() - t0:.1f} s")
    print(f"{'scorer':<16}{'seconds':>9}{'rows/s':>12}  mean")
    for entry in SCORERS:
        t0 = time.perf_counter()
        summary = score_run(run, ScorersConfig.from_data({"scorers": [entry]}), progress=False)
        dt = time.perf_counter() - t0
        mean = summary["metrics"][entry["name"]]["mean"]
        print(f"{entry['name']:<16}{dt:>9.2f}{n / dt:>12,.0f}  {mean:.4f}")
    t0 = time.perf_counter()
    score_run(run, ScorersConfig.from_data({"scorers": SCORERS}), progress=False)
    dt = time.perf_counter() - t0
    print(f"{'all ' + str(len(SCORERS)):<16}{dt:>9.2f}{n * len(SCORERS) / dt:>12,.0f}  "
          f"(score rows/s; {n * len(SCORERS):,} scores)")


_SERVER = """
import json, sys, time
from synthloop.testing import FakeOpenAIServer

def grader(body, index):
    return json.dumps({"reasoning": "ok", "score": 1 + index % 5})

with FakeOpenAIServer(responder=grader, latency_s=float(sys.argv[1]), record=False) as s:
    print(s.base_url, flush=True)
    sys.stdin.read()
"""


def bench_judge(root: Path, n: int, latency: float, concurrency: int) -> None:
    """The judge server runs in its own process, as a remote judge would."""
    import subprocess
    import sys
    import urllib.request

    run = make_run(root / "judge", n, seed=1)
    t0 = time.perf_counter()
    import openai  # noqa: F401  (imported once per process; timed apart from the scoring)

    print(f"import openai: {time.perf_counter() - t0:.2f} s")
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(latency)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        cfg = ScorersConfig.from_data({"scorers": [{
            "name": "judge", "kind": "llm_judge", "model": "j", "base_url": base_url,
            "rubric": "Is it right?", "concurrency": concurrency}], "concurrency": concurrency})
        cache = root / "cache.sqlite"
        t0 = time.perf_counter()
        s1 = score_run(run, cfg, cache=cache, progress=False)
        dt1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        s2 = score_run(run, cfg, cache=cache, progress=False)
        dt2 = time.perf_counter() - t0
        stats_url = base_url.removesuffix("/v1") + "/stats"
        with urllib.request.urlopen(stats_url) as r:
            calls = json.loads(r.read())["request_count"]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(30)
    u1, u2 = s1["usage"]["judge"], s2["usage"]["judge"]
    floor = u1["requests"] * latency / concurrency
    print(f"llm_judge: {u1['verdicts']:,} verdicts, {calls:,} requests, latency {latency * 1000:.0f}"
          f" ms, concurrency {concurrency}: {dt1:.2f} s ({u1['verdicts'] / dt1:,.0f}/s; "
          f"latency floor {floor:.2f} s)")
    print(f"llm_judge from cache: {u2['cached']:,} cached verdicts in {dt2:.2f} s "
          f"({u2['cached'] / dt2:,.0f}/s), new requests: {u2['requests']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--judge", type=int, default=2000, help="judge verdicts (0 skips)")
    ap.add_argument("--judge-latency", type=float, default=0.05)
    ap.add_argument("--judge-concurrency", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if args.cases:
            bench_builtin(root, args.cases)
        if args.judge:
            bench_judge(root, args.judge, args.judge_latency, args.judge_concurrency)


if __name__ == "__main__":
    main()
