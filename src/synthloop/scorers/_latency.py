"""Latency and cost per case, from the recorded responses (no network).

* `latency`: the response's `latency_ms` (continuous, LOWER is better), or with
  `threshold_ms` pass/fail against a latency budget (binary, higher is better).
* `cost`: prompt and completion tokens times a price table, in USD (continuous, lower is better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthloop.errors import ConfigError
from synthloop.scorers._base import (
    BatchScores,
    BuiltinScorer,
    RunContext,
    ScorerOptions,
    ScoringBatch,
)


class LatencyOptions(ScorerOptions):
    """`kind: latency`: per-case latency of the target's reply."""

    unit: Literal["ms", "s"] = "ms"
    """Unit of the recorded value (milliseconds or seconds)."""
    threshold_ms: float | None = Field(default=None, gt=0)
    """When set, record pass/fail (binary, higher is better): 1 when the reply came within this
    many milliseconds. Errored replies fail."""
    include_errors: bool = True
    """Count errored replies with the time they took (what the user waited). When false they
    are recorded as null with the error `no output: <kind>` and left out of the mean."""


class Latency(BuiltinScorer):
    options_model = LatencyOptions

    def __init__(self, options: LatencyOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        if options.threshold_ms is None:
            self.kind = "continuous"
            self.higher_is_better = False
        else:
            self.kind = "binary"
            self.higher_is_better = True

    def score_batch(self, batch: ScoringBatch) -> BatchScores:
        o = self.options
        out = BatchScores.empty(len(batch))
        scale = 1.0 if o.unit == "ms" else 0.001
        thr = o.threshold_ms
        for i, lat in enumerate(batch.latency_ms):
            failed = batch.outputs[i] is None
            if failed:
                out.explanations[i] = batch.no_output_text(i)
                if thr is not None:
                    out.values[i] = 0.0
                    continue
                if not o.include_errors:
                    out.errors[i] = out.explanations[i]
                    continue
            if lat is None:
                out.errors[i] = "no latency recorded for this reply"
                continue
            if thr is None:
                out.values[i] = lat * scale
            else:
                out.values[i] = 1.0 if lat <= thr else 0.0
                out.explanations[i] = f"{lat:.0f} ms"
        return out


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_1m: float = Field(ge=0)
    """USD per million prompt (input) tokens."""
    completion_per_1m: float = Field(ge=0)
    """USD per million completion (output) tokens."""


class CostOptions(ScorerOptions):
    """`kind: cost`: USD per reply from its token usage and a price table."""

    prompt_per_1m: float | None = Field(default=None, ge=0)
    """USD per million prompt tokens (with `completion_per_1m`, instead of `prices`)."""
    completion_per_1m: float | None = Field(default=None, ge=0)
    """USD per million completion tokens."""
    prices: dict[str, Price] | None = None
    """Price table by model name; the run's target model (or `model`) picks the row."""
    model: str | None = None
    """Model name to price with `prices` (default: the model in the run's target fingerprint)."""

    @model_validator(mode="after")
    def _one_price(self) -> CostOptions:
        flat = self.prompt_per_1m is not None or self.completion_per_1m is not None
        if flat and self.prices is not None:
            raise ValueError("give either prompt_per_1m/completion_per_1m or prices, not both")
        if not flat and self.prices is None:
            raise ValueError("give prompt_per_1m and completion_per_1m, or a prices table")
        if flat and (self.prompt_per_1m is None or self.completion_per_1m is None):
            raise ValueError("give both prompt_per_1m and completion_per_1m")
        return self


class Cost(BuiltinScorer):
    kind = "continuous"
    higher_is_better = False
    options_model = CostOptions

    def __init__(self, options: CostOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        self.price: Price | None = None
        if options.prices is None:
            assert options.prompt_per_1m is not None and options.completion_per_1m is not None
            self.price = Price(prompt_per_1m=options.prompt_per_1m,
                               completion_per_1m=options.completion_per_1m)
        elif options.model is not None:
            self.price = self._lookup(options.model)
        self.priced_model: str | None = options.model

    def _lookup(self, model: str) -> Price:
        prices = self.options.prices or {}
        if model not in prices:
            raise ConfigError(f"scorer '{self.name}': prices: no price for model '{model}'",
                              hint=f"add it to prices (known: {', '.join(sorted(prices))})")
        return prices[model]  # type: ignore[no-any-return]

    def prepare(self, context: RunContext) -> None:
        if self.price is None:
            model = context.manifest.target.model
            if not model:
                raise ConfigError(f"scorer '{self.name}': the run's target has no model name",
                                  hint="set `model:` on the cost scorer to pick a prices row")
            self.price = self._lookup(model)
            self.priced_model = model

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.priced_model:
            d["priced_model"] = self.priced_model
        return d

    def score_batch(self, batch: ScoringBatch) -> BatchScores:
        if self.price is None:  # used without a run context: the table must be flat
            raise ConfigError(f"scorer '{self.name}': set `model:` to pick a prices row")
        p = self.price.prompt_per_1m / 1e6
        c = self.price.completion_per_1m / 1e6
        out = BatchScores.empty(len(batch))
        values: list[float | None] = [a * p + b * c for a, b in zip(
            batch.prompt_tokens, batch.completion_tokens, strict=True)]
        out.values = values
        for i, o in enumerate(batch.outputs):
            if o is None:
                out.explanations[i] = batch.no_output_text(i) + " (cost of the recorded usage)"
        return out
