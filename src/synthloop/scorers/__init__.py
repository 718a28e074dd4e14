"""Scorers: per-case metrics on a run, configured in SCORERS.yaml.

    from synthloop.scorers import score_run
    summary = score_run("runs/candidate", "configs/scorers.yaml")

Built-in kinds (all registered lazily in `synthloop.registry.scorers`):

| kind | metric | direction |
| --- | --- | --- |
| `exact_match`, `normalized_match` | binary: output equals a good reference | higher |
| `contains`, `regex` | binary: text / pattern present (or absent with `negate`) | higher |
| `json_valid`, `json_schema` | binary: output is JSON (valid for a schema) | higher |
| `numeric` | binary: number within tolerance | higher |
| `token_f1`, `rouge_l`, `fuzzy_ratio` | continuous 0..1 similarity to good references | higher |
| `closer_to_bad` | binary: closer to a bad reference than to a good one | lower |
| `latency` | continuous ms (binary with `threshold_ms`) | lower (higher) |
| `cost` | continuous USD from tokens × prices | lower |
| `llm_judge`, `llm_pairwise` | LLM verdicts via an OpenAI-compatible endpoint | higher |
| `python` | any function `module:func` | configurable |
| `feedback_model` | predicted thumb-up (see `synthloop.scorers.feedback`) | higher |

Custom scorers: `@scorer(name=..., kind=...)` on a function `(case, response) -> value`, or a
factory registered under the entry-point group `synthloop.scorers`. The plugin contract is in
`synthloop.scorers._base` (and docs/scorers.md).
"""

from __future__ import annotations

from synthloop.registry import scorers as _registry
from synthloop.scorers._base import (
    NO_OUTPUT,
    BaselineRun,
    BatchScores,
    BuiltinScorer,
    MetricKind,
    RunContext,
    Scorer,
    ScorerFactory,
    ScorerOptions,
    ScoringBatch,
    parse_options,
)
from synthloop.scorers._custom import FunctionScorer, ScorerFunction, scorer
from synthloop.scorers._runner import (
    DEFAULT_CACHE,
    ScorerEntry,
    ScorersConfig,
    build_scorers,
    load_scorers_config,
    redact,
    score_run,
)

BUILTIN_KINDS: dict[str, str] = {
    "exact_match": "synthloop.scorers._match:ExactMatch.from_config",
    "normalized_match": "synthloop.scorers._match:NormalizedMatch.from_config",
    "contains": "synthloop.scorers._match:Contains.from_config",
    "regex": "synthloop.scorers._match:Regex.from_config",
    "json_valid": "synthloop.scorers._match:JsonValid.from_config",
    "json_schema": "synthloop.scorers._match:JsonSchema.from_config",
    "numeric": "synthloop.scorers._match:Numeric.from_config",
    "token_f1": "synthloop.scorers._similarity:TokenF1.from_config",
    "rouge_l": "synthloop.scorers._similarity:RougeL.from_config",
    "fuzzy_ratio": "synthloop.scorers._similarity:FuzzyRatio.from_config",
    "closer_to_bad": "synthloop.scorers._similarity:CloserToBad.from_config",
    "latency": "synthloop.scorers._latency:Latency.from_config",
    "cost": "synthloop.scorers._latency:Cost.from_config",
    "llm_judge": "synthloop.scorers._judge:pointwise_factory",
    "llm_pairwise": "synthloop.scorers._judge:pairwise_factory",
    "python": "synthloop.scorers._custom:python_factory",
    "feedback_model": "synthloop.scorers.feedback:factory",
}
for _kind, _ref in BUILTIN_KINDS.items():
    _registry.register(_kind, _ref)

__all__ = [
    "BUILTIN_KINDS",
    "DEFAULT_CACHE",
    "NO_OUTPUT",
    "BaselineRun",
    "BatchScores",
    "BuiltinScorer",
    "FunctionScorer",
    "MetricKind",
    "RunContext",
    "Scorer",
    "ScorerEntry",
    "ScorerFactory",
    "ScorerFunction",
    "ScorerOptions",
    "ScorersConfig",
    "ScoringBatch",
    "build_scorers",
    "load_scorers_config",
    "parse_options",
    "redact",
    "score_run",
    "scorer",
]
