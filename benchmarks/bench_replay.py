"""Replay throughput: synthloop's harness against a plain `openai.AsyncOpenAI` loop.

Starts the fake OpenAI-compatible server (`python -m synthloop.testing.openai_server`) with
50 ms latency in its own process, then replays 2,000 cases at concurrency 64 with:

1. `synthloop.harness.replay` (aiohttp client, retries, run log, response cache: all on;
   a fresh cache, so every case is a real request), and
2. a plain `openai.AsyncOpenAI` + `asyncio.Semaphore` loop (max_retries=0, no log, no cache),
3. for reference, a bare aiohttp + semaphore loop (the floor for any Python client here).

For each it prints wall time, the ratio to the theoretical limit (n × latency / concurrency),
client-process CPU ms per request and requests/s. Goal for the harness: wall ≤ 1.5 × the limit
and ≤ 1.0 ms CPU per request.

    .venv/bin/python benchmarks/bench_replay.py [--cases 2000] [--concurrency 64] [--latency 0.05]
                                                [--rounds 3] [--openai-rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("SYNTHLOOP_PROGRESS", "0")

from synthloop.evalsets import open_evalset, write_evalset  # noqa: E402
from synthloop.harness import ReplayStats, replay  # noqa: E402
from synthloop.schema import EvalCase, Message, Provenance  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthloop.testing.openai_server", "--latency", str(latency),
         "--port", "0", "--no-record"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    base = proc.stdout.readline().strip()
    if not base.startswith("http://"):
        proc.kill()
        raise SystemExit(f"server did not start: {base!r}")
    return proc, base


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of another process (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_requests(base: str) -> int:
    with urllib.request.urlopen(base[: -len("/v1")] + "/stats", timeout=10) as r:
        return int(json.loads(r.read())["request_count"])


def make_cases(n: int) -> list[EvalCase]:
    cases = []
    for i in range(n):
        history = [Message(role="user", content=f"earlier question {i}"),
                   Message(role="assistant", content="an earlier answer")] if i % 4 == 0 else []
        cases.append(EvalCase(case_id=f"case-{i:05d}", input=f"Where is my order number {i}? "
                              "It was due last week and the tracking page shows nothing.",
                              history=history, tags={"intent": "order_status"}))
    return cases


async def openai_loop(base: str, cases: list[EvalCase], concurrency: int) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key="sk-bench", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(case: EvalCase) -> None:
        nonlocal ok
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in case.history]
        messages.append({"role": "user", "content": case.input})
        async with sem:
            r = await client.chat.completions.create(model="support-v2", messages=messages)
        if r.choices:
            ok += 1

    await asyncio.gather(*(one(c) for c in cases))
    await client.close()
    return ok


async def aiohttp_loop(base: str, cases: list[EvalCase], concurrency: int) -> int:
    """The floor: a bare aiohttp + semaphore loop (no retries, log or cache)."""
    import json as _json

    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    ok = 0
    url = base + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(case: EvalCase) -> None:
            nonlocal ok
            messages = [{"role": m.role, "content": m.content} for m in case.history]
            messages.append({"role": "user", "content": case.input})
            body = _json.dumps({"model": "support-v2", "messages": messages}).encode()
            async with sem, session.post(url, data=body, headers=headers) as r:
                reply = _json.loads(await r.read())
            if reply.get("choices"):
                ok += 1

        await asyncio.gather(*(one(c) for c in cases))
    return ok


Measurement = tuple[float, float]  # (wall s, client CPU s)


def row(label: str, runs: list[Measurement], n: int, limit: float) -> str:
    wall, cpu = min(runs)
    median = statistics.median(w for w, _ in runs)
    return (f"{label:<27} wall {wall:6.2f} s (median {median:5.2f})  ratio {wall / limit:5.2f} x "
            f"limit   CPU {cpu / n * 1000:5.2f} ms/req   {n / wall:6.0f} req/s")


def timed(fn: Callable[[], Any]) -> tuple[Any, Measurement]:
    c0, t0 = cpu_s(), time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - t0, cpu_s() - c0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds (harness and bare aiohttp interleaved); the best is reported")
    ap.add_argument("--openai-rounds", type=int, default=1,
                    help="rounds of the (slow) openai.AsyncOpenAI loop")
    args = ap.parse_args()
    n, conc, lat = args.cases, args.concurrency, args.latency
    limit = n * lat / conc
    harness: list[Measurement] = []
    bare: list[Measurement] = []
    plain_openai: list[Measurement] = []
    server_ms: list[float] = []
    proc, base = start_server(lat)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_evalset(root / "evalset", make_cases(n), provenance=Provenance(generator="bench"))
            ev = open_evalset(root / "evalset")
            cases = ev.cases()
            target = {"kind": "openai", "base_url": base, "model": "support-v2", "name": "bench"}
            # warm-up (imports, connection setup), not timed
            replay(ev, target, root / "warm", concurrency=conc, cache=None)

            for r in range(args.rounds):
                before = server_requests(base)
                s0 = proc_cpu_s(proc.pid)
                manifest, m = timed(lambda r=r: replay(  # type: ignore[misc]
                    ev, target, root / f"run{r}", concurrency=conc,
                    cache=root / f"cache{r}.sqlite", stats=ReplayStats()))
                server_ms.append((proc_cpu_s(proc.pid) - s0) / n * 1000)
                sent = server_requests(base) - before
                assert manifest.counts.ok == n and sent == n, (manifest.counts, sent)
                harness.append(m)
                ok, m = timed(lambda: asyncio.run(aiohttp_loop(base, cases, conc)))
                assert ok == n
                bare.append(m)
            for _ in range(args.openai_rounds):
                ok, m = timed(lambda: asyncio.run(openai_loop(base, cases, conc)))
                assert ok == n
                plain_openai.append(m)
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"{n:,} cases, concurrency {conc}, server latency {lat * 1000:.0f} ms "
          f"(own process); theoretical limit {limit:.2f} s; {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds")
    print(row("synthloop replay (aiohttp)", harness, n, limit))
    if plain_openai:
        print(row("openai.AsyncOpenAI loop", plain_openai, n, limit))
    print(row("bare aiohttp loop (floor)", bare, n, limit))
    print(f"(server process CPU: {statistics.median(server_ms):.2f} ms/req; load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    wall, cpu = min(harness)
    goal_wall = wall <= 1.5 * limit
    goal_cpu = cpu / n * 1000 <= 1.0
    print(f"goal wall <= 1.5 x limit: {'met' if goal_wall else 'NOT met'};  "
          f"goal CPU <= 1.0 ms/req: {'met' if goal_cpu else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
