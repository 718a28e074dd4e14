"""Run the fake OpenAI-compatible server in the foreground, in its own process.

    python -m synthloop.testing.openai_server --latency 0.05 [--port 0] [--fault-rate 0.2]

The first line on stdout is the base URL (`http://127.0.0.1:PORT/v1`); the server runs until
it receives SIGTERM or SIGINT. `GET /stats` returns its counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from synthloop.testing._server import FAULT_KINDS, FakeOpenAIServer, FaultPlan


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m synthloop.testing.openai_server",
                                description="Fake OpenAI-compatible server with fault injection.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--latency", type=float, default=0.0, help="added latency per request, seconds")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty requests")
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS),
                   help="comma-separated fault kinds to draw from")
    p.add_argument("--fault-by", choices=("index", "body"), default="index")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument("--retry-after", type=float, default=0.05, help="Retry-After of 429s, seconds")
    p.add_argument("--timeout-stall", type=float, default=5.0,
                   help="how long a `timeout` fault stalls, seconds")
    p.add_argument("--no-record", action="store_true",
                   help="do not keep request bodies and headers in memory")
    return p.parse_args(argv)


async def _serve(server: FakeOpenAIServer) -> None:
    await server.start_async()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    faults = None
    if args.fault_rate > 0:
        faults = FaultPlan(rate=args.fault_rate, kinds=tuple(k for k in args.fault_kinds.split(",") if k),
                           seed=args.seed, retry_after_s=args.retry_after,
                           timeout_s=args.timeout_stall, by=args.fault_by)
    server = FakeOpenAIServer(latency_s=args.latency, faults=faults, host=args.host,
                              port=args.port, record=not args.no_record)
    asyncio.run(_serve(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
