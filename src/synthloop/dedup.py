"""Exact and near-duplicate removal, and diversity measures, for generated user messages.

Pure and reusable: no I/O, no global state, deterministic (every random draw is seeded).

    from synthloop.dedup import DedupConfig, Deduplicator, dedup, diversity

    d = Deduplicator(DedupConfig(near_threshold=0.7))
    for cid, text in items:
        decision = d.add(cid, text)          # keep the first, drop later duplicates
        if not decision.kept:
            print(decision.reason, decision.similarity, decision.duplicate_of)

Two texts are

- **exact duplicates** when they are equal after normalisation (Unicode NFKC, case folding,
  punctuation removed, whitespace collapsed): "Where is my order?" == "where is my order";
- **near duplicates** when the Jaccard similarity of their character k-gram sets (k=4 by
  default, over the normalised text, so typos and swapped words change only a few shingles)
  is at least `near_threshold`.

`method: minhash` (default) finds candidate pairs with MinHash signatures and LSH banding, then
verifies every candidate with the exact Jaccard similarity, so reported similarities are exact
and the cost stays near-linear; `method: jaccard` compares every pair (quadratic; a reference for
small sets); `method: exact` removes exact duplicates only.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_PUNCT_RE = re.compile(r"[^\w\s]+", re.UNICODE)
_WS_RE = re.compile(r"\s+")

EXACT = "exact_duplicate"
NEAR = "near_duplicate"


class DedupConfig(BaseModel):
    """How duplicates are found (the `dedup:` section of an LLM generator spec)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["minhash", "jaccard", "exact"] = "minhash"
    """`minhash`: LSH candidates verified by exact Jaccard (near-linear); `jaccard`: all pairs
    (quadratic, small sets); `exact`: exact duplicates only."""
    near_threshold: float = Field(default=0.6, gt=0.0, le=1.0)
    """Jaccard similarity of character shingle sets at or above which a text is a near
    duplicate of an earlier one."""
    shingle: Literal["char", "word"] = "char"
    """Shingle unit: character k-grams (robust to typos) or word k-grams."""
    k: int = Field(default=4, ge=1, le=12)
    """Shingle length (characters or words)."""
    num_perm: int = Field(default=128, ge=16, le=1024)
    """MinHash signature length."""
    bands: int = Field(default=32, ge=1)
    """LSH bands (`num_perm` must be a multiple); more bands find lower-similarity pairs."""
    seed: int = 1
    """Seed of the MinHash permutations."""

    @model_validator(mode="after")
    def _bands_divide(self) -> DedupConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


# --------------------------------------------------------------------------- text features
def normalize(text: str) -> str:
    """NFKC, case folding, punctuation removed, whitespace collapsed.

    A text made only of symbols (`👍`, `👎`, `???`) keeps them: removing them would make every
    such text the same empty string, so `👎` would be a duplicate of `👍`."""
    t = unicodedata.normalize("NFKC", text).casefold()
    out = _WS_RE.sub(" ", _PUNCT_RE.sub(" ", t)).strip()
    return out or _WS_RE.sub(" ", t).strip()


def _h32(s: str) -> int:
    # stable across processes (unlike hash()), so LSH candidates and decisions reproduce
    return zlib.crc32(s.encode("utf-8"))


def shingles(text: str, *, unit: Literal["char", "word"] = "char", k: int = 4,
             normalized: bool = False) -> frozenset[int]:
    """32-bit hashes of the k-gram shingles of the normalised text."""
    t = text if normalized else normalize(text)
    if unit == "word":
        words = t.split()
        if len(words) <= k:
            return frozenset({_h32(" ".join(words))}) if words else frozenset()
        return frozenset(_h32(" ".join(words[i:i + k])) for i in range(len(words) - k + 1))
    if len(t) <= k:
        return frozenset({_h32(t)}) if t else frozenset()
    return frozenset(_h32(t[i:i + k]) for i in range(len(t) - k + 1))


def jaccard(a: frozenset[int] | set[int], b: frozenset[int] | set[int]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class MinHasher:
    """MinHash signatures: one seeded splitmix64 mix of each shingle hash per permutation.

    (A linear `(a*x + b) mod p` family with small `a` is nearly order-preserving on 32-bit
    inputs and gives badly correlated minima; the splitmix64 finaliser mixes every bit.)
    """

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.salts = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64,
                                  endpoint=True)

    def signature(self, hashes: Iterable[int]) -> np.ndarray:
        hv = np.fromiter(hashes, dtype=np.uint64)
        if hv.size == 0:
            return np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        z = self.salts[:, None] ^ hv[None, :]
        # uint64 arithmetic wraps modulo 2^64 on arrays, which is what splitmix64 wants
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        z = z ^ (z >> _S31)
        return z.min(axis=1)


# --------------------------------------------------------------------------- deduplication
@dataclass(frozen=True)
class Decision:
    """What happened to one text."""

    item_id: str
    kept: bool
    reason: str | None = None
    """`exact_duplicate` or `near_duplicate` when dropped."""
    duplicate_of: str | None = None
    """Id of the kept text it duplicates."""
    similarity: float | None = None
    """Jaccard similarity to `duplicate_of` (1.0 for exact duplicates)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.item_id, "kept": self.kept, "reason": self.reason,
                "duplicate_of": self.duplicate_of,
                "similarity": None if self.similarity is None else round(self.similarity, 4)}


class Deduplicator:
    """Streaming keep-first deduplication: each text is compared with the texts kept so far."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self._exact: dict[str, str] = {}
        self._sets: dict[str, frozenset[int]] = {}
        self._order: list[str] = []
        self._rank: dict[str, int] = {}
        self._hasher = MinHasher(self.config.num_perm, self.config.seed)
        self._rows = self.config.num_perm // self.config.bands
        self._buckets: list[dict[bytes, list[str]]] = [{} for _ in range(self.config.bands)]
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._order)

    def _candidates(self, sig: np.ndarray) -> list[str]:
        seen: dict[str, None] = {}
        r = self._rows
        for band, buckets in enumerate(self._buckets):
            key = sig[band * r:(band + 1) * r].tobytes()
            for cid in buckets.get(key, ()):
                seen.setdefault(cid, None)
        return list(seen)

    def check(self, text: str) -> Decision:
        """What `add` would decide, without keeping the text."""
        return self._decide("", text, keep=False)

    def add(self, item_id: str, text: str) -> Decision:
        """Keep `text` unless it duplicates a kept one; returns the decision."""
        return self._decide(item_id, text, keep=True)

    def _decide(self, item_id: str, text: str, *, keep: bool) -> Decision:
        cfg = self.config
        norm = normalize(text)
        first = self._exact.get(norm)
        if first is not None:
            if keep:
                self.counts[EXACT] += 1
            return Decision(item_id, False, EXACT, first, 1.0)
        sh = shingles(norm, unit=cfg.shingle, k=cfg.k, normalized=True)
        sig: np.ndarray | None = None
        if cfg.method != "exact" and self._order:
            if cfg.method == "minhash":
                sig = self._hasher.signature(sh)
                cands = self._candidates(sig)
            else:
                cands = self._order
            best_id, best, best_rank = None, -1.0, -1
            for cid in cands:
                s = jaccard(sh, self._sets[cid])
                rank = self._rank[cid]
                # ties between equally similar kept texts go to the earliest kept one
                if s > best or (s == best and rank < best_rank):
                    best_id, best, best_rank = cid, s, rank
            if best_id is not None and best >= cfg.near_threshold:
                if keep:
                    self.counts[NEAR] += 1
                return Decision(item_id, False, NEAR, best_id, best)
        if keep:
            if item_id in self._sets:
                raise ValueError(f"duplicate item id {item_id!r}")
            self._exact[norm] = item_id
            self._sets[item_id] = sh
            self._rank[item_id] = len(self._order)
            self._order.append(item_id)
            if cfg.method == "minhash":
                if sig is None:
                    sig = self._hasher.signature(sh)
                r = self._rows
                for band, buckets in enumerate(self._buckets):
                    buckets.setdefault(sig[band * r:(band + 1) * r].tobytes(), []).append(item_id)
            self.counts["kept"] += 1
        return Decision(item_id, True)


@dataclass
class DedupResult:
    kept: list[int]
    """Indices of kept texts, in input order."""
    decisions: list[Decision]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> list[Decision]:
        return [d for d in self.decisions if not d.kept]


def dedup(texts: Sequence[str], ids: Sequence[str] | None = None,
          config: DedupConfig | None = None) -> DedupResult:
    """Keep-first deduplication of `texts` (ids default to their indices as strings)."""
    if ids is not None and len(ids) != len(texts):
        raise ValueError("ids and texts differ in length")
    d = Deduplicator(config)
    decisions = []
    kept = []
    for i, t in enumerate(texts):
        dec = d.add(ids[i] if ids is not None else str(i), t)
        decisions.append(dec)
        if dec.kept:
            kept.append(i)
    counts = {"input": len(texts), "kept": len(kept), EXACT: d.counts[EXACT], NEAR: d.counts[NEAR]}
    return DedupResult(kept=kept, decisions=decisions, counts=counts)


# --------------------------------------------------------------------------- diversity
def _words(text: str) -> list[str]:
    return normalize(text).split()


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique word n-grams / total word n-grams over all texts (None when there are none)."""
    total = 0
    uniq: set[tuple[str, ...]] = set()
    for t in texts:
        w = _words(t)
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        uniq.update(grams)
    return len(uniq) / total if total else None


def _shingle_matrix(sets: Sequence[frozenset[int]]) -> Any:
    """Binary CSR matrix texts x shingles."""
    from scipy import sparse

    vocab: dict[int, int] = {}
    indptr = [0]
    indices: list[int] = []
    for st in sets:
        for h in st:
            indices.append(vocab.setdefault(h, len(vocab)))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix((data, np.array(indices, dtype=np.int64), np.array(indptr)),
                             shape=(len(sets), max(1, len(vocab))))


def diversity(texts: Sequence[str], *, max_probe: int = 1000, seed: int = 0,
              unit: Literal["char", "word"] = "char", k: int = 4) -> dict[str, Any]:
    """Diversity measures of a set of texts.

    - `distinct_1`, `distinct_2`: unique word uni-/bigrams over all uni-/bigrams;
    - `unique_ratio`: share of texts that are unique after normalisation;
    - `mean_pairwise_jaccard`: mean shingle Jaccard between texts, and `spread` = 1 - that
      mean (higher is more varied);
    - `mean_nearest_jaccard`: mean similarity of a text to its most similar other text (high
      values mean near-duplicate pressure);
    - `mean_words`, `std_words`: message length in words.

    The Jaccard measures are exact over all pairs up to `max_probe` texts; above that they use
    `max_probe` seeded texts against all others.
    """
    n = len(texts)
    norms = [normalize(t) for t in texts]
    lengths = np.array([len(t.split()) for t in norms], dtype=float) if n else np.zeros(0)
    mean_pair: float | None = None
    mean_nn: float | None = None
    if n >= 2:
        sets = [shingles(t, unit=unit, k=k, normalized=True) for t in norms]
        x = _shingle_matrix(sets)
        sizes = np.asarray(x.sum(axis=1)).ravel()
        probe = np.arange(n) if n <= max_probe else np.sort(
            np.random.default_rng(seed).choice(n, size=max_probe, replace=False))
        pair_sum = 0.0
        pair_count = 0
        nn: list[np.ndarray] = []
        for start in range(0, len(probe), 256):
            rows = probe[start:start + 256]
            inter = (x[rows] @ x.T).toarray()
            union = sizes[rows][:, None] + sizes[None, :] - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                jac = np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)
            jac[np.arange(len(rows)), rows] = np.nan     # not compared with itself
            pair_sum += float(np.nansum(jac))
            pair_count += jac.size - len(rows)
            nn.append(np.nanmax(jac, axis=1))
        mean_pair = pair_sum / pair_count
        mean_nn = float(np.concatenate(nn).mean())
    d1 = distinct_n(texts, 1)
    d2 = distinct_n(texts, 2)
    return {
        "texts": n,
        "unique_ratio": round(len(set(norms)) / n, 6) if n else None,
        "distinct_1": None if d1 is None else round(d1, 6),
        "distinct_2": None if d2 is None else round(d2, 6),
        "mean_pairwise_jaccard": None if mean_pair is None else round(mean_pair, 6),
        "spread": None if mean_pair is None else round(1.0 - mean_pair, 6),
        "mean_nearest_jaccard": None if mean_nn is None else round(mean_nn, 6),
        "mean_words": round(float(lengths.mean()), 3) if n else None,
        "std_words": round(float(lengths.std()), 3) if n else None,
    }


def report(result: DedupResult, texts: Sequence[str], config: DedupConfig,
           *, max_examples: int | None = None) -> dict[str, Any]:
    """A JSON-able report of what was dropped and why (with the kept text it duplicates)."""
    by_id = {d.item_id: i for i, d in enumerate(result.decisions)}
    dropped = []
    for i, d in enumerate(result.decisions):
        if d.kept:
            continue
        j = by_id.get(d.duplicate_of or "")
        dropped.append({**d.to_dict(), "text": texts[i],
                        "duplicate_of_text": texts[j] if j is not None else None})
    if max_examples is not None:
        dropped = dropped[:max_examples]
    return {"config": config.model_dump(), "counts": result.counts, "dropped": dropped}
