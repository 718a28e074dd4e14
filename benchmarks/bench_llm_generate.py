"""LLM generator: 1,000 interactions against a local OpenAI-compatible server at concurrency
32 with 10 % injected faults; prints wall time, requests, retries, tokens and cost, then a
warm-cache rerun (same seed: identical hash, zero requests).

    .venv/bin/python benchmarks/bench_llm_generate.py [--n 1000] [--concurrency 32]
        [--fault-rate 0.1] [--latency 0.05] [--in-process]

The server (`synthloop.testing.FakeOpenAIServer` with a responder that writes distinct JSON
user messages) runs in its own process by default, so the figures are the generator's.
Faults are drawn from 429 (Retry-After 0.05 s), 500, 503, timeout, reset, bad_json and
empty_choices; the client timeout is 2 s (a timeout fault stalls 5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

KINDS = ("429", "500", "503", "timeout", "reset", "bad_json", "empty_choices")
VOCAB = [f"{a}{b}{c}" for a in ("bra", "cle", "dro", "fen", "gli", "hor", "jut", "kem", "lav",
                                "mon", "nup", "pes", "qua", "ros", "sty", "tre", "vim", "wex")
         for b in ("a", "e", "i", "o", "u", "y") for c in ("n", "st", "rk", "lm", "p", "x", "dd")]


def responder(body: dict[str, Any], index: int) -> str:
    """Distinct, valid structured replies derived from the request's seed."""
    rng = random.Random(str(body.get("seed")))
    return json.dumps({"message": " ".join(rng.sample(VOCAB, 8))})


def serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from aiohttp import web

    from synthloop.testing import FakeOpenAIServer, FaultPlan

    class Server(FakeOpenAIServer):
        def make_app(self) -> web.Application:
            app = super().make_app()

            async def faults(request: web.Request) -> web.Response:
                return web.json_response({"faults_injected": len(self.faults_injected)})

            app.router.add_get("/faults", faults)
            return app

    plan = FaultPlan(rate=args.fault_rate, kinds=KINDS, seed=args.seed, retry_after_s=0.05,
                     timeout_s=5.0) if args.fault_rate > 0 else None
    server = Server(responder=responder, latency_s=args.latency, faults=plan, record=False)

    async def main() -> None:
        await server.start_async()
        print(server.base_url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop_async()

    asyncio.run(main())
    return 0


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (127.0.0.1 only)
        data: dict[str, Any] = json.loads(r.read())
        return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per request, s")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    ap.add_argument("--in-process", action="store_true", help="run the server in this process")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args)

    os.environ.setdefault("SYNTHLOOP_PROGRESS", "0")
    import synthloop.generate.llm  # noqa: F401  (imported before timing: openai, jinja2)
    from synthloop.evalsets import open_evalset
    from synthloop.generate import GenerateOptions, generate

    proc = None
    server = None
    if args.in_process:
        from synthloop.testing import FakeOpenAIServer, FaultPlan

        plan = FaultPlan(rate=args.fault_rate, kinds=KINDS, seed=args.seed, retry_after_s=0.05,
                         timeout_s=5.0) if args.fault_rate > 0 else None
        server = FakeOpenAIServer(responder=responder, latency_s=args.latency, faults=plan,
                                  record=False).start()
        base_url = server.base_url
    else:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency",
                                 str(args.latency), "--fault-rate", str(args.fault_rate),
                                 "--seed", str(args.seed)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
    root = base_url.rsplit("/v1", 1)[0]

    def stats() -> dict[str, Any]:
        if server is not None:
            return {**server.stats(), "faults_injected": len(server.faults_injected)}
        return {**get_json(root + "/stats"), **get_json(root + "/faults")}

    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            spec = {
                "kind": "llm", "n": args.n, "seed": 1, "concurrency": args.concurrency,
                "endpoint": {"base_url": base_url, "model": "bench", "timeout_s": 2.0,
                             "backoff_s": 0.05, "max_retries": 8, "max_tokens": 64},
                "personas": [{"name": f"p{i}", "description": f"persona {i}"} for i in range(6)],
                "intents": [{"name": f"i{i}", "description": f"intent {i}"} for i in range(8)],
                "pricing": {"prompt_per_1k": 0.00015, "completion_per_1k": 0.0006},
            }
            spec_path = tmp / "spec.yaml"
            spec_path.write_text(yaml.safe_dump(spec))
            opts = GenerateOptions(cache=tmp / "cache.sqlite", progress=False)
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            m = generate(spec_path, tmp / "cold", opts)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            s1 = stats()
            assert m is not None
            d = m.provenance.details
            cases = open_evalset(tmp / "cold").cases()
            t1 = time.perf_counter()
            warm = generate(spec_path, tmp / "warm", opts)
            wall_warm = time.perf_counter() - t1
            s2 = stats()
            assert warm is not None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if server is not None:
            server.stop()

    tok = d["tokens"]
    print(f"bench_llm_generate: n={args.n} concurrency={args.concurrency} "
          f"fault_rate={args.fault_rate} server_latency={args.latency}s "
          f"server={'in-process' if args.in_process else 'subprocess'}")
    print(f"  cold run   wall {wall:.2f} s, client CPU {cpu:.2f} s "
          f"({cpu / max(1, d['requests']) * 1000:.2f} ms per request)")
    print(f"  cases      {len(cases):,} written (requested {args.n:,}); "
          f"all valid: {all(c.input for c in cases)}")
    print(f"  requests   {d['requests']:,} sent, server received {s1['request_count']:,}; "
          f"retries {d['retries']:,} (server injected {s1['faults_injected']:,} faults); "
          f"repairs {d['repairs']:,}")
    print(f"  errors     {d['errors']}")
    print(f"  tokens     prompt {tok['prompt']:,} (server {s1['prompt_tokens']:,}), completion "
          f"{tok['completion']:,} (server {s1['completion_tokens']:,})")
    print(f"  cost       ${d['cost_usd']:.6f} at $0.00015/1k prompt, $0.0006/1k completion")
    print(f"  dropped    {d['dropped'] or 'none'}")
    print(f"  warm rerun wall {wall_warm:.2f} s, new server requests "
          f"{s2['request_count'] - s1['request_count']}, identical hash: "
          f"{warm.content_hash == m.content_hash}")
    ok = (len(cases) == args.n and d["requests"] == s1["request_count"]
          and d["retries"] == s1["faults_injected"] and tok["prompt"] == s1["prompt_tokens"]
          and tok["completion"] == s1["completion_tokens"]
          and s2["request_count"] == s1["request_count"] and warm.content_hash == m.content_hash)
    print(f"  acceptance {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
