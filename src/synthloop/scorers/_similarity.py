"""Reference similarity: token F1, ROUGE-L, a fuzzy ratio, and "closer to a bad reference".

Similarity scorers record the best similarity over the case's good references (continuous,
0..1, higher is better), or pass/fail against a `threshold` (binary). `closer_to_bad` records 1
when the output is more similar to some bad reference (e.g. a thumbed-down reply) than to the
closest good one (binary, lower is better). Tokens are computed once per batch and shared by
every similarity scorer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from synthloop.scorers._base import BatchScores, BuiltinScorer, ScorerOptions, ScoringBatch
from synthloop.scorers._match import NO_GOOD_REFERENCE
from synthloop.scorers._text import best_token_f1, fuzzy_ratio, rouge_l

Method = Literal["token_f1", "rouge_l", "fuzzy"]

# best(batch, row, which) -> max similarity of the row's output to its good / bad references
Best = Callable[[ScoringBatch, int, str], float]


def _best_f1(batch: ScoringBatch, i: int, which: str) -> float:
    refs = batch.good_tokens()[i] if which == "good" else batch.bad_tokens()[i]
    return best_token_f1(batch.output_tokens()[i], refs)


def _best_rouge(batch: ScoringBatch, i: int, which: str) -> float:
    refs = batch.good_tokens()[i] if which == "good" else batch.bad_tokens()[i]
    out = batch.output_tokens()[i]
    best = 0.0
    for r in refs:
        s = rouge_l(out, r)
        if s > best:
            best = s
    return best


def _best_fuzzy(batch: ScoringBatch, i: int, which: str) -> float:
    refs = batch.good[i] if which == "good" else batch.bad[i]
    out = batch.outputs[i] or ""
    return max((fuzzy_ratio(out, r) for r in refs), default=0.0)


BEST: dict[str, Best] = {"token_f1": _best_f1, "rouge_l": _best_rouge, "fuzzy": _best_fuzzy}


class SimilarityOptions(ScorerOptions):
    """`kind: token_f1 | rouge_l | fuzzy_ratio`: similarity to the closest good reference."""

    threshold: float | None = Field(default=None, ge=0, le=1)
    """When set, record pass/fail (binary): 1 when the similarity is at least this."""


class Similarity(BuiltinScorer):
    """Best similarity of the output to the case's good references."""

    method: Method = "token_f1"
    options_model = SimilarityOptions

    def __init__(self, options: SimilarityOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        self.kind = "continuous" if options.threshold is None else "binary"
        self._best = BEST[self.method]

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        best = self._best
        threshold = self.options.threshold
        good = batch.good
        for i in rows:
            if not good[i]:
                out.errors[i] = NO_GOOD_REFERENCE
                continue
            s = best(batch, i, "good")
            if threshold is None:
                out.values[i] = s
            else:
                out.values[i] = 1.0 if s >= threshold else 0.0
                out.explanations[i] = f"{self.method} {s:.3f}"


class TokenF1(Similarity):
    method = "token_f1"


class RougeL(Similarity):
    method = "rouge_l"


class FuzzyRatio(Similarity):
    method = "fuzzy"


class CloserToBadOptions(ScorerOptions):
    """`kind: closer_to_bad`: flag outputs more similar to a bad reference than to a good one."""

    method: Method = "token_f1"
    """Similarity used for both sides: token_f1, rouge_l or fuzzy."""
    margin: float = Field(default=0.0, ge=0, le=1)
    """Flag only when the bad similarity exceeds the good one by more than this."""


class CloserToBad(BuiltinScorer):
    """1 when the output is closer to any bad reference than to the closest good one."""

    kind = "binary"
    higher_is_better = False
    no_output_value = 1.0
    options_model = CloserToBadOptions

    def __init__(self, options: CloserToBadOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        self._best = BEST[options.method]

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        best = self._best
        margin = self.options.margin
        bad_refs = batch.bad
        for i in rows:
            if not bad_refs[i]:
                out.values[i] = 0.0
                out.explanations[i] = "no bad references"
                continue
            g = best(batch, i, "good")
            b = best(batch, i, "bad")
            out.values[i] = 1.0 if b > g + margin else 0.0
            out.explanations[i] = f"good {g:.3f} vs bad {b:.3f}"
