"""Ingest + PII scrubbing throughput on a generated log (default 100,000 rows).

    .venv/bin/python benchmarks/bench_ingest.py [--rows 100000] [--format csv|jsonl|parquet]
                                                [--replace placeholder|faker] [--names 500]

The log is generated deterministically (seed 0): users with several sessions, prompts built
from a vocabulary with numbers, prices and dates (non-PII digits the scrubber must look at),
1 % of prompts carrying an e-mail, phone or card number, 5 % of users without consent, one row
in 1,000 with a bad value. Prints rows/s for the whole `ingest` (read, consent, validate,
scrub, write) and for scrubbing alone, plus the counts it found.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from synthloop.ingest import ingest
from synthloop.privacy import Scrubber

WORDS = [
    "how", "do", "i", "reset", "my", "password", "for", "the", "billing", "account", "order",
    "refund", "shipping", "invoice", "python", "error", "install", "version", "api", "key",
    "limit", "upgrade", "plan", "cancel", "trial", "price", "cost", "weather", "recipe",
    "translate", "summarize", "email", "draft", "meeting", "schedule", "tomorrow",
]


def luhn_complete(prefix: str) -> str:
    digits = [int(c) for c in prefix]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix + str((10 - total % 10) % 10)


def make_log(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = max(1, rows // 20)
    uid = rng.integers(0, users, rows)
    sid = uid * 10 + rng.integers(0, 3, rows)
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 90 * 86400, rows)), unit="s")
    words = np.asarray(WORDS)
    prompts = []
    for i in range(rows):
        k = int(rng.integers(6, 30))
        text = " ".join(words[rng.integers(0, len(words), k)])
        r = rng.random()
        if r < 0.2:
            text += f" it costs ${rng.integers(1, 2000)}.{rng.integers(10, 99)} since {rng.integers(1990, 2025)}"
        elif r < 0.25:
            text += f" on 2024-0{rng.integers(1, 9)}-1{rng.integers(0, 9)} at 10:{rng.integers(10, 59)}"
        p = rng.random()
        if p < 0.0033:
            text += f" mail me at user{i}@example.com"
        elif p < 0.0066:
            text += f" call +1 415 555 {rng.integers(1000, 9999)}"
        elif p < 0.01:
            text += " card " + luhn_complete("4" + "".join(str(d) for d in rng.integers(0, 10, 14)))
        prompts.append(text)
    consent = np.where(uid % 20 == 7, "false", "true")
    thumb = rng.choice(np.asarray(["up", "down", "", "", "", ""]), rows)
    read_s = np.round(rng.exponential(20, rows), 2).astype(object)
    bad = rng.random(rows) < 0.001
    read_s[bad] = "n/a!"
    return pd.DataFrame({
        "uid": [f"u{u}" for u in uid], "sid": [f"s{s}" for s in sid],
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "prompt": prompts,
        "topic": rng.choice(np.asarray(["billing", "tech", "chat", "shopping"]), rows),
        "thumb": thumb, "read_s": read_s, "consent_synth": consent,
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--format", choices=["csv", "jsonl", "parquet"], default="csv")
    ap.add_argument("--replace", choices=["placeholder", "faker"], default="placeholder")
    ap.add_argument("--names", type=int, default=0, help="size of the names list to scrub")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = make_log(args.rows)
    gen_s = time.perf_counter() - t0
    names = [f"Name{i} Surname{i}" for i in range(args.names)]
    mapping = {
        "format": args.format,
        "columns": {"user_id": "uid", "session_id": "sid", "timestamp": "ts", "input": "prompt",
                    "intent": "topic", "feedback.thumb": "thumb", "feedback.read_time_s": "read_s",
                    "consent.synthetic_fit": "consent_synth"},
        "pii": {"replace": args.replace, "names": names},
    }
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / f"logs.{args.format}"
        if args.format == "csv":
            df.to_csv(logs, index=False)
        elif args.format == "jsonl":
            df.to_json(logs, orient="records", lines=True)
        else:
            df.astype({"read_s": str}).to_parquet(logs, index=False)
        size = logs.stat().st_size
        t0, c0 = time.perf_counter(), time.process_time()
        report = ingest(logs, mapping, Path(tmp) / "out", progress=False)
        ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0

    scrubber = Scrubber(names, replace=args.replace)
    prompts = df["prompt"].tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    for text in prompts:
        scrubber.scrub(text, user_id="u", session_id="s")
    scrub_s, scrub_cpu = time.perf_counter() - t0, time.process_time() - c0

    print(f"rows {args.rows:,}  format {args.format} ({size / 1e6:.1f} MB)  replace {args.replace}"
          f"  names {args.names}  (log generated in {gen_s:.1f} s)")
    print(f"ingest (read+consent+validate+scrub+write): {ingest_s:.2f} s wall = "
          f"{args.rows / ingest_s:,.0f} rows/s  (CPU {ingest_cpu:.2f} s = "
          f"{args.rows / ingest_cpu:,.0f} rows/s)")
    print(f"Scrubber.scrub alone, one call per prompt: {scrub_s:.2f} s wall = "
          f"{args.rows / scrub_s:,.0f} texts/s  (CPU {scrub_cpu:.2f} s = "
          f"{args.rows / scrub_cpu:,.0f} texts/s)")
    print("counts " + json.dumps(report.counts.model_dump()))
    print("pii    " + json.dumps({k: v for k, v in report.pii.items() if v}))


if __name__ == "__main__":
    main()
