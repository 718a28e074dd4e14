"""The Comparison noun: baseline vs candidate, paired on case id (written as comparison.json).

Kept beside the code that computes it (not in `synthloop.schema`) and re-exported from
`synthloop.stats`. Every number a gate or a report needs is here, so `synthloop gate` and the
reports never re-read the runs.

Conventions: `delta` is candidate − baseline in the metric's own units; `higher_is_better`
says which sign is a regression. `bounds[level]` holds the one-sided lower and upper bounds
of delta, each at confidence `level`; `ci` is the two-sided interval at `confidence`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from synthloop.schema import SCHEMA_VERSION


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class BinaryCounts(_Model):
    """Paired outcome table of a binary metric (1 = success)."""

    n11: int
    """both succeeded"""
    n10: int
    """only the baseline succeeded"""
    n01: int
    """only the candidate succeeded"""
    n00: int
    """both failed"""


class PairStats(_Model):
    """Paired statistics of one metric on one set of cases (all of them, or one segment)."""

    n: int
    """paired cases (both sides scored)"""
    n_clusters: int
    """independent units: sessions when clustered, else cases"""
    mean_base: float | None = None
    """baseline mean over the paired cases"""
    mean_cand: float | None = None
    """candidate mean over the paired cases"""
    sd_base: float | None = None
    """baseline standard deviation (ddof=1)"""
    sd_cand: float | None = None
    """candidate standard deviation (ddof=1)"""
    delta: float | None = None
    """candidate − baseline"""
    sd_diff: float | None = None
    """per-case standard deviation of the differences (ddof=1)"""
    se: float | None = None
    """standard error of delta (bootstrap, or cluster-robust for the normal method)"""
    design_effect: float = 1.0
    """variance inflation from clustering by session (1 = none)"""
    ci: tuple[float, float] | None = None
    """two-sided interval for delta at the comparison's `confidence`"""
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """one-sided (lower, upper) bounds of delta, each at confidence `level` (the key)"""
    ci_method: Literal["bootstrap_counts", "bootstrap_index", "normal", "none"] = "none"
    """how the interval was computed (see docs/compare-and-gate.md)"""
    test: str = "none"
    """the test behind `p_value` / `p_worse`: `mcnemar_midp`, `sign_flip_exact`,
    `sign_flip_monte_carlo`, `sign_flip_normal` (clustered: `cluster_` prefix) or `none`"""
    p_value: float | None = None
    """two-sided p-value of "no difference\""""
    p_worse: float | None = None
    """one-sided p-value of "the candidate is not worse" (small = significantly worse)"""
    p_exact: float | None = None
    """binary, unclustered: two-sided exact McNemar p-value"""
    p_wilcoxon: float | None = None
    """continuous, unclustered: two-sided Wilcoxon signed-rank p-value"""
    p_adjusted: float | None = None
    """segments: two-sided p-value adjusted within the segment key (Holm)"""
    counts: BinaryCounts | None = None
    """binary metrics: the paired outcome table"""
    effect_size: float | None = None
    """Cohen's d_z: delta / sd_diff"""
    odds_ratio: float | None = None
    """binary: discordant odds ratio n01 / n10 (candidate-only over baseline-only successes)"""
    mde: float | None = None
    """minimum detectable worsening at this n (one-sided α = 0.05, power 0.8)"""
    n_needed: dict[str, int | None] = Field(default_factory=dict)
    """paired cases needed to detect a worsening of the key's size (α = 0.05, power 0.8)"""


class Coverage(_Model):
    """Which cases could be paired for a metric, and why the others were dropped."""

    cases: int
    """cases in the evalset"""
    paired: int
    """cases with a value on both sides"""
    not_scored_base: int = 0
    """cases with no baseline score row (not replayed or not scored)"""
    not_scored_cand: int = 0
    """cases with no candidate score row"""
    failed_base: int = 0
    """cases whose baseline scorer failed on every sample (value null)"""
    failed_cand: int = 0
    """cases whose candidate scorer failed on every sample (value null)"""
    samples_base: int = 1
    """most samples per case on the baseline side (averaged per case before pairing)"""
    samples_cand: int = 1
    """most samples per case on the candidate side"""


class CaseDiff(_Model):
    """One case where the candidate did worse, for the regression browser."""

    case_id: str
    session_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    input: str | None = None
    history: list[dict[str, str]] = Field(default_factory=list)
    """last prior turns (role, content)"""
    reference: str | None = None
    """the case's first good reference, if any"""
    base_output: str | None = None
    cand_output: str | None = None
    base_error: str | None = None
    cand_error: str | None = None
    base_score: float | None = None
    cand_score: float | None = None
    base_explanation: str | None = None
    cand_explanation: str | None = None


class MetricComparison(_Model):
    """One metric: overall and per-segment paired statistics, coverage and worst cases."""

    name: str
    kind: Literal["binary", "continuous", "ordinal"]
    """the kind recorded by the scorer"""
    analysed_as: Literal["binary", "continuous"]
    """binary when every per-case value is 0 or 1 (McNemar); else continuous"""
    higher_is_better: bool = True
    overall: PairStats
    segments: dict[str, dict[str, PairStats]] = Field(default_factory=dict)
    """tag key → tag value → statistics on the cases with that tag value"""
    coverage: Coverage
    worst: list[CaseDiff] = Field(default_factory=list)
    """the cases with the largest worsening, worst first"""


class LatencySide(_Model):
    """Latency distribution of one run (per case, averaged over samples)."""

    n: int
    mean: float | None = None
    max: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict)
    """`p50`, `p90`, `p95`, `p99` in milliseconds"""
    bounds: dict[str, dict[str, tuple[float, float]]] = Field(default_factory=dict)
    """quantile → confidence level → distribution-free (order statistic) one-sided bounds"""


class LatencyComparison(_Model):
    """Latency of both runs, for ratio rules and the report's distribution plot."""

    base: LatencySide
    cand: LatencySide
    ratio: dict[str, float | None] = Field(default_factory=dict)
    """quantile → candidate / baseline"""
    histogram_edges: list[float] = Field(default_factory=list)
    """shared log-spaced bin edges (ms)"""
    histogram_base: list[int] = Field(default_factory=list)
    histogram_cand: list[int] = Field(default_factory=list)


class RunRef(_Model):
    """Which run a side of the comparison is."""

    path: str
    target_name: str | None = None
    target_kind: str
    model: str | None = None
    fingerprint: str
    """sha256 of the target fingerprint (never holds an API key)"""
    responses: int
    errors: int
    """responses that failed after their retries"""
    repeats: int = 1


class EvalsetRef(_Model):
    path: str
    name: str
    version: str
    content_hash: str
    cases: int


class Comparison(_Model):
    """`comparison.json`: baseline vs candidate on one evalset, paired case by case."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["synthloop-comparison"] = "synthloop-comparison"
    created_at: datetime
    package_version: str
    seed: int
    """root seed; each metric and segment derives its own from it and its name"""
    n_boot: int
    """bootstrap resamples"""
    confidence: float = 0.95
    """level of the two-sided `ci` intervals"""
    levels: list[float]
    """confidence levels at which one-sided bounds are stored"""
    baseline: RunRef
    candidate: RunRef
    evalset: EvalsetRef
    clustered: bool
    """True when cases were clustered by session (some session holds several cases)"""
    n_clusters: int
    segment_keys: list[str] = Field(default_factory=list)
    """tag keys compared segment by segment"""
    skipped_segment_keys: dict[str, str] = Field(default_factory=dict)
    """tag keys not used as segments, with the reason"""
    metrics: dict[str, MetricComparison] = Field(default_factory=dict)
    latency: LatencyComparison | None = None
    notes: list[str] = Field(default_factory=list)
