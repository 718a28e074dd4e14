"""Benchmark: how often the gate raises a false alarm, and how often it catches a real drop.

    .venv/bin/python benchmarks/bench_gate_calibration.py [--reps 1000] [--seed 0] [--quick]

Simulates paired binary outcomes and runs the real code path on each repetition:
`synthloop.stats.compare_arrays` (the statistics `synthloop compare` computes) then
`synthloop.gate.evaluate` with the rule

    {metric: correct, max_drop: 0.02, confidence: 0.95}

and counts verdicts. "Alarm" = the gate fails (exit 1). Scenarios:

* A/A: both versions equally good (70 % concordance: 15 % of pairs favour each side).
* drop: the candidate is 3 points worse (16.5 % vs 13.5 % discordant pairs, still 70 %
  concordance), n = 2,000 paired cases, and at the smallest n where the gate's exact power
  reaches 0.8 (2,058: no level-0.05 test reaches 0.8 at n = 2,000, where the bound is 0.791).

and the same for the naive gate "candidate mean < baseline mean − 0.02". Extra tables show
how both behave at other n, and what clustering by session does to false alarms when cases
in a session are correlated. Every draw comes from --seed.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import special, stats

MARGIN = 0.02
CONFIDENCE = 0.95


def table(delta: float, concordance: float = 0.70, base_rate: float = 0.70) -> np.ndarray:
    """P(11), P(10), P(01), P(00) for a paired binary metric with the given mean change
    (candidate − baseline), share of concordant pairs and baseline success rate."""
    disc = 1 - concordance
    p10 = (disc - delta) / 2
    p01 = (disc + delta) / 2
    p11 = base_rate - p10
    p00 = 1 - p11 - p10 - p01
    probs = np.array([p11, p10, p01, p00])
    if np.any(probs < 0):
        raise ValueError("impossible table")
    return probs


def draw(rng: np.random.Generator, probs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    cell = rng.choice(4, size=n, p=probs)
    base = np.isin(cell, (0, 1)).astype(float)
    cand = np.isin(cell, (0, 2)).astype(float)
    return base, cand


def draw_sessions(rng: np.random.Generator, n: int, size: int, icc_share: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A/A binary outcomes where cases of a session share a session effect on *which side*
    wins a discordant pair (so differences are correlated within sessions)."""
    sessions = np.arange(n) // size
    g = sessions.max() + 1
    # each session leans towards one side; over sessions the lean averages out (A/A)
    lean = rng.choice([-1.0, 1.0], size=g)
    disc = rng.random(n) < 0.30
    towards_cand = np.where(rng.random(n) < icc_share, lean[sessions] > 0, rng.random(n) < 0.5)
    both = rng.random(n) < 0.55 / 0.70
    base = np.where(disc, ~towards_cand, both).astype(float)
    cand = np.where(disc, towards_cand, both).astype(float)
    return base, cand, np.char.add("s", sessions.astype(str))


def run(label: str, reps: int, n: int, maker, *, seed: int, sessions: bool = False
        ) -> dict[str, float]:
    from synthloop.gate import Policy, Rule, evaluate
    from synthloop.stats import compare_arrays

    policy = Policy(rules=[Rule(metric="correct", max_drop=MARGIN, confidence=CONFIDENCE)])
    rng = np.random.default_rng(seed)
    counts = {"fail": 0, "pass": 0, "inconclusive": 0, "naive_fail": 0}
    t = time.perf_counter()
    for r in range(reps):
        drawn = maker(rng, n)
        base, cand = drawn[0], drawn[1]
        sess = drawn[2] if sessions and len(drawn) > 2 else None
        cmp = compare_arrays({"correct": base}, {"correct": cand}, kinds={"correct": "binary"},
                             sessions=sess, seed=seed * 100_003 + r, n_boot=1000)
        verdict = evaluate(cmp, policy)
        counts[verdict.status] += 1
        if cand.mean() < base.mean() - MARGIN:
            counts["naive_fail"] += 1
    secs = time.perf_counter() - t
    out = {k: v / reps for k, v in counts.items()}
    se = math.sqrt(max(out["fail"] * (1 - out["fail"]), 1e-12) / reps)
    print(f"  {label:<44} gate: alarm {out['fail']:6.1%} ± {se:.1%}  pass {out['pass']:6.1%}  "
          f"inconclusive {out['inconclusive']:6.1%}   naive: alarm {out['naive_fail']:6.1%}"
          f"   ({secs:.1f} s)")
    return out


def theory_power(delta: float, n: int, concordance: float = 0.70, alpha: float = 0.05) -> float:
    var = (1 - concordance) - delta * delta
    se = math.sqrt(var / n)
    return float(special.ndtr(abs(delta) / se - special.ndtri(1 - alpha)))


def exact_rates(delta: float, n: int, concordance: float = 0.70, alpha: float = 0.05
                ) -> tuple[float, float]:
    """Exact alarm probabilities (no simulation) of (the gate's mid-p McNemar test, the naive
    threshold), summing over the number of discordant pairs and how they split. (The gate
    fails only when the drop is significant *and* not shown within the margin; at this n the
    two conditions do not overlap, so its alarm rate is the test's.)"""
    disc = 1 - concordance
    q = (disc - delta) / 2 / disc  # P(a discordant pair favours the baseline)
    nd = np.arange(n + 1)
    p_nd = stats.binom.pmf(nd, n, disc)
    gate = naive = 0.0
    for d, w in zip(nd, p_nd, strict=True):
        if w < 1e-14:
            continue
        x = np.arange(d + 1)  # pairs where only the baseline succeeded
        px = stats.binom.pmf(x, d, q)
        midp = stats.binom.sf(x, d, 0.5) + 0.5 * stats.binom.pmf(x, d, 0.5)
        gate += w * px[midp < alpha].sum()
        naive += w * px[(d - 2 * x) / n < -MARGIN].sum()
    return float(gate), float(naive)


def n_for_power(delta: float, power: float, concordance: float = 0.70, alpha: float = 0.05) -> int:
    """Smallest n at which the gate's exact power for `delta` reaches `power`: bisection on
    `exact_rates` inside a bracket around the normal-theory n (power rises with n, apart from
    the test's discreteness, well below 0.001)."""
    z = special.ndtri(1 - alpha) + special.ndtri(power)
    guess = z * z * ((1 - concordance) - delta * delta) / (delta * delta)
    lo, hi = int(guess * 0.9), int(guess * 1.1) + 1
    while exact_rates(delta, lo)[0] >= power:
        lo //= 2
    while exact_rates(delta, hi)[0] < power:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if exact_rates(delta, mid)[0] >= power:
            hi = mid
        else:
            lo = mid
    return hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="only the two headline scenarios")
    args = ap.parse_args()
    reps = args.reps
    aa = table(0.0)
    drop = table(-0.03)
    print(f"rule: max_drop {MARGIN}, confidence {CONFIDENCE} (one-sided α = {1 - CONFIDENCE:.2f}); "
          f"naive gate: candidate mean < baseline mean − {MARGIN}; {reps} repetitions each, "
          f"seed {args.seed}")
    print("headline (binary metric, n = 2,000 paired cases, 70 % concordance):")
    a = run("A/A (no change)", reps, 2000, lambda rng, n: draw(rng, aa, n), seed=args.seed)
    d = run("3-point drop", reps, 2000, lambda rng, n: draw(rng, drop, n), seed=args.seed + 1)
    ea, en = exact_rates(0.0, 2000)
    pa, pn = exact_rates(-0.03, 2000)
    print(f"  exact (no simulation): gate alarm {ea:.2%} on A/A, power {pa:.3f}; naive alarm "
          f"{en:.2%}, power {pn:.3f}")
    print(f"  normal theory for the best level-0.05 one-sided test: power "
          f"{theory_power(-0.03, 2000):.3f} (Φ(δ/SE − z_0.95), SE = √((0.30 − δ²)/n))")
    print(f"RESULT gate false-alarm rate (A/A): {a['fail']:.1%} (goal 5 % ± 1.5 %; exact {ea:.2%})")
    print(f"RESULT gate power (3-point drop, n=2,000): {d['fail']:.3f} (goal >= 0.8; exact {pa:.3f})")
    print(f"RESULT naive gate false-alarm rate (A/A): {a['naive_fail']:.1%} (exact {en:.2%})")
    print(f"RESULT naive gate power (3-point drop, n=2,000): {d['naive_fail']:.3f} (exact {pn:.3f})")
    n80 = n_for_power(-0.03, 0.8)
    p80 = run(f"3-point drop, n={n80:,}", reps, n80, lambda rng, n: draw(rng, drop, n),
              seed=args.seed + 2)
    print(f"RESULT gate power at n={n80:,}, the smallest n where it reaches 0.8: "
          f"{p80['fail']:.3f} (exact {exact_rates(-0.03, n80)[0]:.3f})")
    if args.quick:
        return
    print("Monte Carlo spread: the same two scenarios with seeds 1-4 (1,000 repetitions each):")
    alarms, powers = [a["fail"]], [d["fail"]]
    for extra in range(1, 5):
        s = args.seed + 1000 * extra
        alarms.append(run(f"A/A, seed {s}", reps, 2000, lambda rng, n: draw(rng, aa, n), seed=s)["fail"])
        powers.append(run(f"3-point drop, seed {s + 1}", reps, 2000,
                          lambda rng, n: draw(rng, drop, n), seed=s + 1)["fail"])
    print(f"  over {len(alarms) * reps:,} repetitions: gate alarm {np.mean(alarms):.2%}, "
          f"power {np.mean(powers):.3f}")
    print("the naive threshold's error rates depend on n (the gate's false alarms do not):")
    for n in (300, 800, 10_000):
        run(f"A/A, n={n:,}", reps, n, lambda rng, k: draw(rng, aa, k), seed=args.seed + n)
        run(f"3-point drop, n={n:,}", reps, n, lambda rng, k: draw(rng, drop, k),
            seed=args.seed + n + 1)
    print("clustered A/A (sessions of 5 cases; discordant cases in a session lean the same way):")
    run("clustered by session (sign flip per session)", reps, 2000,
        lambda rng, n: draw_sessions(rng, n, 5, 0.6), seed=args.seed + 7, sessions=True)
    run("sessions ignored (McNemar per case)", reps, 2000,
        lambda rng, n: draw_sessions(rng, n, 5, 0.6), seed=args.seed + 7, sessions=False)


if __name__ == "__main__":
    main()
