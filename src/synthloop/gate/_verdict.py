"""The Verdict noun: a gate policy applied to a comparison (written as verdict.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from synthloop.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION
from synthloop.schema import SCHEMA_VERSION

Status = Literal["pass", "fail", "inconclusive"]
CheckKind = Literal["non_inferiority", "floor", "ceiling", "latency_ratio", "segments", "segment"]

EXIT_CODES: dict[str, int] = {"pass": EXIT_OK, "fail": EXIT_REGRESSION,
                              "inconclusive": EXIT_INCONCLUSIVE}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class CheckResult(_Model):
    """The outcome of one check of one rule (a rule may give several: overall, segments)."""

    name: str
    """e.g. `correct drop <= 0.02`, or `correct drop <= 0.02 [cluster=billing]`"""
    rule: int
    """index of the rule in the policy (0-based)"""
    kind: CheckKind
    metric: str
    """metric name, or `latency_ms` for latency rules"""
    segment: str | None = None
    """`key=value` for a segment check"""
    status: Status
    """what the statistics say"""
    counts_as: Status
    """what the gate counts (differs from `status` only with `when_inconclusive`)"""
    reason: str
    """one line saying why, with the numbers"""
    estimate: float | None = None
    """the improvement (delta oriented so that + is better: −delta for a lower-is-better
    metric) for non-inferiority and segment checks, candidate mean (floor/ceiling) or ratio
    (latency)"""
    lower: float | None = None
    """one-sided lower bound of the estimate at `confidence`"""
    upper: float | None = None
    """one-sided upper bound of the estimate at `confidence`"""
    threshold: float | None = None
    """margin (as a negative delta), floor, ceiling or ratio limit"""
    confidence: float | None = None
    p_value: float | None = None
    """one-sided p-value of "not worse" (non-inferiority and segments)"""
    p_adjusted: float | None = None
    """segment checks: p-value adjusted for multiplicity"""
    n: int | None = None
    """paired cases behind the check"""
    mde: float | None = None
    """minimum detectable worsening at this n (one-sided α = 1 − confidence, power 0.8)"""
    n_needed: int | None = None
    """paired cases needed to detect a worsening the size of the margin (power 0.8)"""
    higher_is_better: bool | None = None


class Verdict(_Model):
    """The gate's decision: every check with its reason, and the exit code."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["synthloop-verdict"] = "synthloop-verdict"
    created_at: datetime
    status: Status
    """fail if any check fails; else inconclusive if any is undecidable; else pass"""
    exit_code: int
    """0 pass, 1 regression, 3 inconclusive"""
    summary: str
    """one line for humans"""
    comparison: str | None = None
    """path of the comparison the policy was applied to"""
    policy: str | None = None
    """path of the policy file"""
    baseline: str
    candidate: str
    evalset: str
    results: list[CheckResult] = Field(default_factory=list)

    @property
    def failing(self) -> list[CheckResult]:
        return [r for r in self.results if r.counts_as == "fail"]

    @property
    def failing_segments(self) -> list[CheckResult]:
        return [r for r in self.results if r.kind == "segment" and r.counts_as == "fail"]
