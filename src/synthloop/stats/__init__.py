"""Paired comparison of two model versions on one evalset (`synthloop compare`).

    from synthloop.stats import compare_runs, write_comparison
    cmp = compare_runs("runs/base", "runs/cand", seed=0)   # writes nothing
    write_comparison(cmp, "cmp/")                          # cmp/comparison.json

Per metric and per segment: both means, the paired difference, a seeded bootstrap interval,
a p-value (mid-p McNemar for binary metrics, paired permutation for continuous ones, at
session level when cases share sessions; Wilcoxon reported beside), effect size, multiplicity-
adjusted segment p-values, and power (minimum detectable effect, n needed for a drop).
The building blocks are public for reuse and testing.
"""

from synthloop.stats._bootstrap import (
    LEVELS,
    N_BOOT,
    Interval,
    bootstrap_counts,
    bootstrap_index,
    level_key,
    paired_interval,
    unit_types,
    units_from_cases,
)
from synthloop.stats._compare import (
    COMPARISON_FILE,
    compare_arrays,
    compare_runs,
    comparison_path,
    read_comparison,
    segmentation_from_values,
    write_comparison,
)
from synthloop.stats._model import (
    BinaryCounts,
    CaseDiff,
    Comparison,
    Coverage,
    EvalsetRef,
    LatencyComparison,
    LatencySide,
    MetricComparison,
    PairStats,
    RunRef,
)
from synthloop.stats._paired import Segmentation, compare_metric, pair_stats
from synthloop.stats._power import mde, n_needed, power_at
from synthloop.stats._pvalues import (
    McNemarResult,
    TestResult,
    adjust,
    benjamini_hochberg,
    holm,
    mcnemar,
    sign_flip,
    wilcoxon,
    wilcoxon_grouped,
)

__all__ = [
    "COMPARISON_FILE",
    "LEVELS",
    "N_BOOT",
    "BinaryCounts",
    "CaseDiff",
    "Comparison",
    "Coverage",
    "EvalsetRef",
    "Interval",
    "LatencyComparison",
    "LatencySide",
    "McNemarResult",
    "MetricComparison",
    "PairStats",
    "RunRef",
    "Segmentation",
    "TestResult",
    "adjust",
    "benjamini_hochberg",
    "bootstrap_counts",
    "bootstrap_index",
    "compare_arrays",
    "compare_metric",
    "compare_runs",
    "comparison_path",
    "holm",
    "level_key",
    "mcnemar",
    "mde",
    "n_needed",
    "pair_stats",
    "paired_interval",
    "power_at",
    "read_comparison",
    "segmentation_from_values",
    "sign_flip",
    "unit_types",
    "units_from_cases",
    "wilcoxon",
    "wilcoxon_grouped",
    "write_comparison",
]
