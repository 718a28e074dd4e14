"""POLICY.yaml: release-gate rules as data.

    min_cases: 30
    rules:
      - metric: correct
        max_drop: 0.02           # non-inferiority margin
        confidence: 0.95
        segments: cluster        # also test each value of tag `cluster`, corrected
      - json_valid >= 0.99       # absolute floor on the candidate's mean
      - latency: p95
        max_ratio: 1.2           # candidate p95 at most 1.2 × baseline p95

Loaded with `synthloop.config.load_model`, so every mistake is reported at once with file,
field path and a did-you-mean hint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthloop.config import load_model
from synthloop.stats._bootstrap import LEVELS

Correction = Literal["holm", "bh"]
_LEVELS_TEXT = ", ".join(f"{lv:g}" for lv in LEVELS)
_SHORTHAND = re.compile(r"^\s*([A-Za-z0-9_.\-/:]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def _check_confidence(v: float | None) -> float | None:
    if v is None:
        return v
    for lv in LEVELS:
        if abs(v - lv) < 1e-9:
            return lv
    raise ValueError(f"confidence must be one of {_LEVELS_TEXT} (got {v})")


class Rule(BaseModel):
    """One gate rule. Give `metric` with `max_drop` and/or `min` / `max`, or `latency` with
    `max_ratio`. A string `"METRIC >= X"` / `"METRIC <= X"` is shorthand for a floor/ceiling."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str | None = None
    """Name shown in reports and JUnit (default: derived from the rule)."""
    metric: str | None = None
    """Metric name, as in the comparison (the scorer's `name`)."""
    max_drop: float | None = Field(default=None, ge=0)
    """Non-inferiority margin: the largest tolerated worsening of the metric's mean, in the
    metric's units (0.02 = 2 points of a 0–1 metric). Passes when the one-sided lower
    confidence bound shows the worsening is under the margin; fails when the candidate is
    significantly worse (one-sided p < 1 − confidence) and that is not shown; else
    inconclusive."""
    min: float | None = None
    """Absolute floor on the candidate's mean over the paired cases (e.g. json_valid ≥ 0.99)."""
    max: float | None = None
    """Absolute ceiling on the candidate's mean (e.g. refusal_rate ≤ 0.05)."""
    latency: Literal["p50", "p90", "p95", "p99"] | None = None
    """Latency quantile for a ratio rule (needs `max_ratio`)."""
    max_ratio: float | None = Field(default=None, gt=0)
    """Largest tolerated candidate / baseline ratio of the latency quantile."""
    confidence: float | None = None
    """Confidence of the one-sided bounds and tests (default: the policy's `confidence`).
    One of 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999."""
    statistical: bool = False
    """Floors/ceilings only: decide on the candidate mean's confidence interval (pass when
    the bound clears the threshold, fail when the other bound misses it, else inconclusive)
    instead of on the observed mean."""
    segments: list[str] | None = None
    """Tag keys whose every value is also tested (max_drop rules), corrected for
    multiplicity across all the listed keys' values. A single key may be given as a string."""
    correction: Correction | None = None
    """Multiplicity correction for segment tests: `holm` (family-wise error) or `bh`
    (Benjamini–Hochberg false discovery rate). Default: the policy's `correction`."""
    min_cases: int | None = Field(default=None, ge=1)
    """Fewest paired cases (overall) to decide this rule; fewer → inconclusive."""
    min_segment_cases: int | None = Field(default=None, ge=1)
    """Segments with fewer paired cases are not tested (listed as skipped)."""
    when_inconclusive: Literal["inconclusive", "pass", "fail"] = "inconclusive"
    """How an undecidable result counts: `inconclusive` (exit 3 if nothing failed), or
    treat it as `pass` or `fail`. The report still says it was inconclusive."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            m = _SHORTHAND.match(data)
            if not m:
                raise ValueError(f"cannot read rule {data!r}: write `METRIC >= NUMBER`, "
                                 "`METRIC <= NUMBER` or a mapping with `metric:`")
            metric, op, num = m.groups()
            try:
                value = float(num)
            except ValueError:
                raise ValueError(f"cannot read the number in rule {data!r}") from None
            return {"metric": metric, ("min" if op == ">=" else "max"): value}
        return data

    @field_validator("segments", mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("confidence")
    @classmethod
    def _levels(cls, v: float | None) -> float | None:
        return _check_confidence(v)

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if (self.metric is None) == (self.latency is None):
            raise ValueError("give exactly one of `metric` or `latency`")
        if self.latency is not None:
            if self.max_ratio is None:
                raise ValueError("a latency rule needs `max_ratio` (e.g. 1.2)")
            extra = [k for k in ("max_drop", "min", "max", "segments") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"`{extra[0]}` does not apply to a latency rule")
        else:
            if self.max_ratio is not None:
                raise ValueError("`max_ratio` applies to latency rules (`latency: p95`)")
            if self.max_drop is None and self.min is None and self.max is None:
                raise ValueError("give `max_drop`, `min` or `max` for the metric")
            if self.segments is not None and self.max_drop is None:
                raise ValueError("`segments` applies to `max_drop` rules")
            if self.segments is not None and not self.segments:
                raise ValueError("`segments` is empty")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        if self.latency is not None:
            return f"latency {self.latency} ratio <= {self.max_ratio:g}"
        parts = []
        if self.max_drop is not None:
            parts.append(f"drop <= {self.max_drop:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.metric} " + ", ".join(parts)


class Policy(BaseModel):
    """A release gate: rules plus defaults they share."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rules: list[Rule] = Field(min_length=1)
    """The rules; every one must pass for the gate to pass."""
    confidence: float = 0.95
    """Default confidence of the rules' one-sided bounds and tests."""
    min_cases: int = Field(default=30, ge=1)
    """Default fewest paired cases to decide a rule; fewer → inconclusive (exit 3)."""
    min_segment_cases: int = Field(default=10, ge=1)
    """Default fewest paired cases for a segment to be tested."""
    correction: Correction = "holm"
    """Default multiplicity correction for segment tests (`holm` or `bh`)."""

    @field_validator("confidence")
    @classmethod
    def _levels(cls, v: float) -> float:
        out = _check_confidence(v)
        assert out is not None
        return out


def load_policy(path: str | Path) -> Policy:
    """Read and validate POLICY.yaml (or .toml); raises one ConfigError listing every problem."""
    return load_model(path, Policy)
