"""Power: the minimum detectable effect at the current n, and the n needed for a given drop.

Both use the normal approximation of the one-sided paired test at level α with power 1 − β:

    MDE      = (z_{1−α} + z_{1−β}) · SE                       SE = sd_d · √(deff / n)
    n_needed = deff · ((z_{1−α} + z_{1−β}) · sd_d / Δ)²

`sd_d` is the per-case standard deviation of the differences (candidate − baseline) and
`deff` the design effect of clustering by session (1 without clusters). They are the same
formulas whether the question is "can a drop of Δ be detected?" or "can the drop be shown to
be under a margin of Δ?" (non-inferiority when the true difference is zero).
"""

from __future__ import annotations

import math

from synthloop.stats._bootstrap import norm_cdf, z_value

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
#: drops for which every comparison reports the n needed (absolute metric units)
PLANNING_DROPS: tuple[float, ...] = (0.01, 0.02, 0.05)


def _z(p: float) -> float:
    return z_value(p)


def mde(se: float, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """Smallest true difference a one-sided level-α test detects with the given power."""
    return (_z(1 - alpha) + _z(power)) * se


def n_needed(sd_diff: float, effect: float, *, design_effect: float = 1.0,
             alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> int | None:
    """Paired cases needed to detect `effect` (> 0) with the given power; None when sd is 0."""
    if effect <= 0:
        raise ValueError("effect must be positive")
    if not (sd_diff > 0) or not math.isfinite(sd_diff):
        return None
    n = max(design_effect, 1e-12) * ((_z(1 - alpha) + _z(power)) * sd_diff / effect) ** 2
    return max(2, math.ceil(n - 1e-9))


def power_at(effect: float, se: float, *, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the one-sided level-α test when the true difference is `effect` (> 0)."""
    if se <= 0:
        return 1.0 if effect > 0 else alpha
    return norm_cdf(effect / se - _z(1 - alpha))
