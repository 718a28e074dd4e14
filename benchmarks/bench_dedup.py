"""Dedup recall and false removals on a planted set; prints the figures.

    .venv/bin/python benchmarks/bench_dedup.py [--copies 2] [--threshold 0.6] [--method minhash]

Base texts: the 250 real user prompts of `../shared/data/oasst/prompt_lottery_en_250_text.jsonl`
when present, else generated sentences. Planted among them (seeded), each pointing at a base
text: exact duplicates (verbatim, case, whitespace or punctuation changes) and near duplicates
(1-2 typos, a swapped word pair, an added/dropped filler word, or a typo plus punctuation).
Planted copies are placed *after* their base text, so keep-first dedup must drop the copy.

Recall = planted copies dropped / planted copies; false removals = base texts dropped / base
texts (a base text that truly near-duplicates another base text still counts as a false
removal here, so the figure is an upper bound).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from synthloop.dedup import EXACT, NEAR, DedupConfig, dedup, diversity

OASST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oasst" / \
    "prompt_lottery_en_250_text.jsonl"
FILLERS = ["please", "hi", "hey", "quick question", "thanks", "so", "ok"]


def base_texts(seed: int) -> tuple[list[str], str]:
    if OASST.exists():
        texts = [json.loads(line) for line in OASST.read_text().splitlines() if line.strip()]
        return [t for t in texts if isinstance(t, str) and t.strip()], str(OASST)
    rng = random.Random(seed)
    subjects = ["my order", "the invoice", "a refund", "the app", "my password", "the router",
                "a recipe", "python lists", "the weather", "my account", "the printer", "a poem"]
    verbs = ["fix", "cancel", "explain", "reset", "find", "change", "update", "compare", "write"]
    extras = ["today", "for my mother", "before friday", "in spanish", "step by step",
              "without losing data", "on android", "for a beginner", "as fast as possible"]
    out: set[str] = set()
    while len(out) < 250:
        out.add(f"How do I {rng.choice(verbs)} {rng.choice(subjects)} {rng.choice(extras)} "
                f"{rng.choice(extras)}? Reference {rng.randrange(10**6)}")
    return sorted(out), "generated"


def typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word + rng.choice("aeiou")
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(["swap", "drop", "insert", "sub"])
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "insert":
        return word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i:]
    return word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i + 1:]


def exact_variant(text: str, rng: random.Random) -> str:
    op = rng.choice(["verbatim", "case", "space", "punct"])
    if op == "case":
        return text.lower() if rng.random() < 0.5 else text.upper()
    if op == "space":
        return "  " + text.replace(" ", "  ") + " "
    if op == "punct":
        return text.rstrip("?.!") + rng.choice(["?!", "...", "!!", ""])
    return text


def near_variant(text: str, rng: random.Random) -> tuple[str, str]:
    words = text.split()
    op = rng.choice(["typo", "typo2", "swap", "filler", "typo_punct"])
    if len(words) < 3 and op == "swap":
        op = "typo"
    if op in ("typo", "typo2", "typo_punct"):
        for _ in range(2 if op == "typo2" else 1):
            i = rng.randrange(len(words))
            words[i] = typo(words[i], rng)
        out = " ".join(words)
        if op == "typo_punct":
            out = out.rstrip("?.!") + rng.choice([" ?", "!", "."])
        return out, op
    if op == "swap":
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words), op
    if rng.random() < 0.5:
        return rng.choice(FILLERS) + " " + text, op
    return text + " " + rng.choice(FILLERS), op


def planted_set(copies_per_100: int, seed: int) -> tuple[list[str], list[dict[str, object]], str]:
    bases, source = base_texts(seed)
    rng = random.Random(seed)
    rows: list[dict[str, object]] = [{"text": t, "kind": "base", "op": None, "of": i}
                                     for i, t in enumerate(bases)]
    n_plant = len(bases) * copies_per_100 // 100
    for _ in range(n_plant):
        of = rng.randrange(len(bases))
        if rng.random() < 0.4:
            text, kind, op = exact_variant(bases[of], rng), "exact", "exact"
        else:
            text, op = near_variant(bases[of], rng)
            kind = "near"
        # insert somewhere after its base text
        base_pos = next(i for i, r in enumerate(rows) if r["kind"] == "base" and r["of"] == of)
        pos = rng.randrange(base_pos + 1, len(rows) + 1)
        rows.insert(pos, {"text": text, "kind": kind, "op": op, "of": of})
    return [str(r["text"]) for r in rows], rows, source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=80, help="planted copies per 100 base texts")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--method", default="minhash", choices=["minhash", "jaccard", "exact"])
    ap.add_argument("--seeds", type=int, default=5, help="number of planted sets (seeds 0..N-1)")
    args = ap.parse_args(argv)
    cfg = DedupConfig(method=args.method) if args.threshold is None else DedupConfig(
        method=args.method, near_threshold=args.threshold)
    tot = {"planted": 0, "caught": 0, "base": 0, "false": 0, "exact_as_exact": 0, "exact": 0,
           "near_as_near_or_exact": 0, "near": 0, "texts": 0}
    per_op: dict[str, list[int]] = {}
    wall = 0.0
    source = ""
    for seed in range(args.seeds):
        texts, rows, source = planted_set(args.copies, seed)
        t0 = time.perf_counter()
        res = dedup(texts, config=cfg)
        wall += time.perf_counter() - t0
        tot["texts"] += len(texts)
        for r, d in zip(rows, res.decisions, strict=True):
            if r["kind"] == "base":
                tot["base"] += 1
                tot["false"] += (not d.kept)
                continue
            tot["planted"] += 1
            tot["caught"] += (not d.kept)
            op = str(r["op"])
            per_op.setdefault(op, [0, 0])
            per_op[op][0] += 1
            per_op[op][1] += (not d.kept)
            if r["kind"] == "exact":
                tot["exact"] += 1
                tot["exact_as_exact"] += d.reason == EXACT
            else:
                tot["near"] += 1
                tot["near_as_near_or_exact"] += d.reason in (NEAR, EXACT)
    print(f"bench_dedup: method={cfg.method} threshold={cfg.near_threshold} shingle={cfg.shingle}"
          f"/{cfg.k} num_perm={cfg.num_perm} bands={cfg.bands}")
    print(f"  base texts: {source}; {args.seeds} planted sets, {tot['texts']:,} texts in all")
    print(f"  planted copies {tot['planted']:,} (exact {tot['exact']:,}, near {tot['near']:,})")
    print(f"  recall           {tot['caught'] / tot['planted']:.2%}  "
          f"({tot['caught']:,}/{tot['planted']:,})")
    print(f"  false removals   {tot['false'] / tot['base']:.2%}  ({tot['false']:,}/{tot['base']:,})")
    print(f"  exact copies reported as exact_duplicate  {tot['exact_as_exact'] / tot['exact']:.2%}")
    for op, (n, c) in sorted(per_op.items()):
        print(f"    {op:<11} recall {c / n:.2%}  ({c}/{n})")
    print(f"  dedup wall {wall:.3f} s total, {wall / tot['texts'] * 1e6:.0f} us per text")
    arena = OASST.parents[1] / "arena_hard" / "question_v0.1.jsonl"
    if arena.exists():
        prompts = [json.loads(x)["prompt"] for x in arena.read_text().splitlines() if x.strip()]
        res = dedup(prompts, config=cfg)
        print(f"  hard negatives: {len(prompts)} distinct arena-hard prompts, "
              f"{len(prompts) - len(res.kept)} removed "
              f"({(len(prompts) - len(res.kept)) / len(prompts):.2%})")
    print("  threshold sweep (all planted sets):")
    for thr in (0.4, 0.5, 0.6, 0.7, 0.8):
        c2 = cfg.model_copy(update={"near_threshold": thr})
        caught = planted = false = base = 0
        for seed in range(args.seeds):
            texts, rows, _ = planted_set(args.copies, seed)
            res = dedup(texts, config=c2)
            for r, d in zip(rows, res.decisions, strict=True):
                if r["kind"] == "base":
                    base += 1
                    false += not d.kept
                else:
                    planted += 1
                    caught += not d.kept
        print(f"    {thr:.1f}: recall {caught / planted:.2%}, false removals {false / base:.2%}")
    texts, _, _ = planted_set(args.copies, 0)
    res = dedup(texts, config=cfg)
    before = diversity(texts)
    after = diversity([texts[i] for i in res.kept])
    print(f"  diversity (seed 0) before: unique {before['unique_ratio']:.3f} distinct-2 "
          f"{before['distinct_2']:.3f} nearest-jaccard {before['mean_nearest_jaccard']:.3f}")
    print(f"  diversity (seed 0) after:  unique {after['unique_ratio']:.3f} distinct-2 "
          f"{after['distinct_2']:.3f} nearest-jaccard {after['mean_nearest_jaccard']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
