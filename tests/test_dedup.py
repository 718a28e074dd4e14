"""Exact and near-duplicate removal and diversity measures (synthloop.dedup)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from synthloop.dedup import (
    EXACT,
    NEAR,
    DedupConfig,
    Deduplicator,
    MinHasher,
    dedup,
    distinct_n,
    diversity,
    jaccard,
    normalize,
    report,
    shingles,
)


def test_normalize() -> None:
    assert normalize("  Where IS my   order?!  ") == "where is my order"
    assert normalize("ＷＨＥＲＥ is my order") == "where is my order"      # NFKC full width
    assert normalize("Straße") == normalize("STRASSE")                     # case folding
    assert normalize("ça va, l'ami?") == "ça va l ami"


def test_symbol_only_texts_are_not_all_one_duplicate() -> None:
    # chat logs hold emoji-only messages; stripping every symbol made them all "" (exact dupes)
    texts = ["👍", "👎", " 👍 ", "???", "!!!", "", "   "]
    res = dedup(texts)
    assert res.kept == [0, 1, 3, 4, 5]
    assert [(d.item_id, d.reason, d.duplicate_of) for d in res.dropped] == [
        ("2", EXACT, "0"), ("6", EXACT, "5")]
    assert normalize("Where IS my order?!") == "where is my order"     # words still win


def test_exact_duplicates_keep_the_first_and_name_it() -> None:
    texts = ["Where is my order?", "reset my password", "where is my order", "WHERE IS MY ORDER"]
    res = dedup(texts, ids=["a", "b", "c", "d"])
    assert res.kept == [0, 1]
    assert [(d.item_id, d.reason, d.duplicate_of, d.similarity) for d in res.dropped] == [
        ("c", EXACT, "a", 1.0), ("d", EXACT, "a", 1.0)]
    assert res.counts == {"input": 4, "kept": 2, EXACT: 2, NEAR: 0}


def test_near_duplicates_typos_and_swaps() -> None:
    base = "how do i change the delivery address of my order"
    texts = [base,
             "how do i chnage the delivery address of my order",        # typo
             "how do i change the address delivery of my order",        # swapped words
             "how do i change the delivery address of my order please",  # filler
             "can you recommend a laptop for video editing"]            # different
    res = dedup(texts)
    assert res.kept == [0, 4]
    assert all(d.reason == NEAR and d.duplicate_of == "0" for d in res.dropped)
    sims = [d.similarity for d in res.dropped]
    assert all(s is not None and 0.6 <= s < 1.0 for s in sims)
    # the reported similarity is the exact Jaccard of the shingle sets
    a, b = shingles(texts[0]), shingles(texts[1])
    assert res.dropped[0].similarity == pytest.approx(jaccard(a, b))


def test_compares_only_against_kept_texts() -> None:
    # c is near b, b is near a, c is far from a: b is dropped, so c must stay
    d = Deduplicator(DedupConfig(method="jaccard", near_threshold=0.6))
    a = "alpha beta gamma delta epsilon zeta"
    b = "alpha beta gamma delta epsilon zeta eta theta"
    c = "gamma delta epsilon zeta eta theta iota kappa"
    assert d.add("a", a).kept
    assert not d.add("b", b).kept
    assert jaccard(shingles(b), shingles(c)) > jaccard(shingles(a), shingles(c))
    assert d.add("c", c).kept == (jaccard(shingles(a), shingles(c)) < 0.6)
    assert d.check(a).reason == EXACT and len(d) == 2


def test_threshold_and_method_options() -> None:
    texts = ["where is my order", "where is my ordre", "where is my refund", "track my parcel"]
    strict = dedup(texts, config=DedupConfig(near_threshold=0.9))
    loose = dedup(texts, config=DedupConfig(near_threshold=0.4))
    assert len(strict.kept) == 4
    assert len(loose.kept) < len(dedup(texts).kept) <= 3
    assert len(dedup(texts, config=DedupConfig(method="exact")).kept) == 4
    words = dedup(["the cat sat on the mat", "the cat sat on the mat today"],
                  config=DedupConfig(shingle="word", k=2, near_threshold=0.7))
    assert words.counts[NEAR] == 1
    with pytest.raises(ValidationError, match="multiple of bands"):
        DedupConfig(num_perm=100, bands=32)
    with pytest.raises(ValidationError):
        DedupConfig(near_threshold=0)


def test_minhash_signatures_estimate_jaccard() -> None:
    mh = MinHasher(num_perm=256, seed=3)
    rng = random.Random(0)
    for _ in range(20):
        universe = rng.sample(range(1, 10**9), 300)
        cut = rng.randrange(50, 250)
        a, b = frozenset(universe[:cut + 50]), frozenset(universe[cut - 50:])
        est = float((mh.signature(a) == mh.signature(b)).mean())
        assert abs(est - jaccard(a, b)) < 0.12


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word + "s"
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _planted(bases: list[str], seed: int) -> tuple[list[str], list[bool]]:
    rng = random.Random(seed)
    texts, planted = list(bases), [False] * len(bases)
    origin = list(range(len(bases)))          # which base text each entry comes from
    for _ in range(len(bases) // 2):
        j = rng.randrange(len(bases))
        words = bases[j].split()
        op = rng.choice(["exact", "case", "typo", "swap", "filler"])
        if op == "case":
            t = bases[j].upper() + "!"
        elif op == "typo":
            k = rng.randrange(len(words))
            words[k] = _typo(words[k], rng)
            t = " ".join(words)
        elif op == "swap" and len(words) > 3:
            k = rng.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
            t = " ".join(words)
        elif op == "filler":
            t = "hi, " + bases[j]
        else:
            t = bases[j]
        at = next(i for i, (o, p) in enumerate(zip(origin, planted, strict=True))
                  if o == j and not p)
        pos = rng.randrange(at + 1, len(texts) + 1)       # after its original
        texts.insert(pos, t)
        planted.insert(pos, True)
        origin.insert(pos, j)
    return texts, planted


def _recall_false(texts: list[str], planted: list[bool], cfg: DedupConfig) -> tuple[float, float]:
    res = dedup(texts, config=cfg)
    dropped = {int(d.item_id) for d in res.dropped}
    n_planted = sum(planted)
    caught = sum(1 for i, p in enumerate(planted) if p and i in dropped)
    false = sum(1 for i, p in enumerate(planted) if not p and i in dropped)
    return caught / n_planted, false / (len(planted) - n_planted)


def _generated_bases(n: int) -> list[str]:
    """Distinct sentences: 5-14 words drawn from a 2,000-word syllable vocabulary."""
    rng = random.Random(42)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dre", "fo", "gu"]
    vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randrange(1, 4)))
                    for _ in range(5000)})
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(vocab) for _ in range(rng.randrange(5, 15))))
    return sorted(out)


def test_planted_recall_and_false_removals_on_generated_texts() -> None:
    texts, planted = _planted(_generated_bases(300), seed=1)
    recall, false = _recall_false(texts, planted, DedupConfig())
    assert recall >= 0.95 and false <= 0.01


def test_planted_recall_and_false_removals_on_real_prompts(shared_data: Path) -> None:
    path = shared_data / "oasst" / "prompt_lottery_en_250_text.jsonl"
    bases = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for seed in range(3):
        texts, planted = _planted(bases, seed)
        recall, false = _recall_false(texts, planted, DedupConfig())
        assert recall >= 0.95 and false <= 0.01, (seed, recall, false)
    # hard negatives: 500 distinct arena-hard prompts, none should be removed
    arena = [json.loads(x)["prompt"] for x in
             (shared_data / "arena_hard" / "question_v0.1.jsonl").read_text().splitlines()]
    assert len(dedup(arena).kept) == len(arena)


def test_minhash_finds_what_exhaustive_search_finds() -> None:
    texts, _ = _planted(_generated_bases(200), seed=5)
    fast = dedup(texts, config=DedupConfig(method="minhash"))
    slow = dedup(texts, config=DedupConfig(method="jaccard"))
    fast_drop = {d.item_id for d in fast.dropped}
    slow_drop = {d.item_id for d in slow.dropped}
    assert len(fast_drop ^ slow_drop) <= max(1, len(slow_drop) // 50)


def test_decisions_are_identical_across_processes(tmp_path: Path) -> None:
    texts, _ = _planted(_generated_bases(150), seed=9)
    (tmp_path / "t.json").write_text(json.dumps(texts))
    code = ("import json,sys; from synthloop.dedup import dedup; "
            "t=json.load(open(sys.argv[1])); "
            "print(json.dumps([d.to_dict() for d in dedup(t).decisions]))")
    outs = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.json")],
                              capture_output=True, text=True, env=env, check=True)
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    assert json.loads(outs[0]) == [d.to_dict() for d in dedup(texts).decisions]


def test_report_lists_drops_with_the_kept_text() -> None:
    texts = ["where is my order", "Where is my order?", "refund please", "where is my ordr"]
    cfg = DedupConfig()
    res = dedup(texts, ids=["a", "b", "c", "d"], config=cfg)
    rep = report(res, texts, cfg)
    assert rep["counts"] == {"input": 4, "kept": 2, EXACT: 1, NEAR: 1}
    assert rep["dropped"][0] == {"id": "b", "kept": False, "reason": EXACT, "duplicate_of": "a",
                                 "similarity": 1.0, "text": "Where is my order?",
                                 "duplicate_of_text": "where is my order"}
    assert rep["dropped"][1]["reason"] == NEAR and rep["dropped"][1]["duplicate_of"] == "a"
    assert rep["config"]["near_threshold"] == 0.6


def test_distinct_n_and_diversity() -> None:
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a"], 2) is None
    same = diversity(["where is my order"] * 10)
    assert same["unique_ratio"] == 0.1 and same["mean_pairwise_jaccard"] == 1.0
    assert same["spread"] == 0.0 and same["mean_nearest_jaccard"] == 1.0
    varied = diversity(_generated_bases(50))
    assert varied["unique_ratio"] == 1.0 and varied["spread"] > 0.5
    assert varied["mean_nearest_jaccard"] < 0.9 and varied["distinct_2"] > same["distinct_2"]
    assert varied["mean_words"] > 5
    # sampled estimate (probe subset) is close to the exact value
    texts = _generated_bases(400)
    exact = diversity(texts)
    sampled = diversity(texts, max_probe=100, seed=1)
    assert abs(exact["mean_pairwise_jaccard"] - sampled["mean_pairwise_jaccard"]) < 0.02
    assert diversity([])["texts"] == 0 and diversity(["x"])["spread"] is None
