"""Feedback-model calibration on held-out synthetic data with a known true P(thumb up).

The rules generator draws every thumb as up with exactly
`synthloop.generate.rules.true_thumb_up_probability(spec, intent, quality)`, so on data it
generated we know each case's true probability. This script generates a training evalset and
a held-out one (different seeds) from a spec, trains the feedback model on the first, and
prints, on the held-out thumbs:

- ECE against the true probabilities (15 equal-width bins; the goal is <= 0.05),
- ECE against the observed thumbs, Brier score (and the oracle's Brier: the true
  probabilities' own score), AUC, mean absolute error against the true probabilities,
- training time and scoring throughput.

    python benchmarks/bench_feedback_model.py                       # the demo spec
    python benchmarks/bench_feedback_model.py --spec generators/support_assistant.yaml \
        --sessions 40000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

os.environ.setdefault("SYNTHLOOP_PROGRESS", "0")


def main(argv: list[str] | None = None) -> int:
    from synthloop.evalsets import open_evalset
    from synthloop.generate import GenerateOptions, generate
    from synthloop.generate.rules import load_spec, true_thumb_up_probability
    from synthloop.scorers.feedback import (
        ECE_BINS,
        FeedbackTrainConfig,
        brier_score,
        classification_metrics,
        evalset_rows,
        expected_calibration_error,
        train_on_rows,
    )

    demo_spec = Path(str(resources.files("synthloop").joinpath("data/demo/spec.yaml")))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=demo_spec, help="rules spec (default: the demo's)")
    ap.add_argument("--sessions", type=int, default=12000,
                    help="sessions in each of the training and held-out evalsets")
    ap.add_argument("--train-seed", type=int, default=101)
    ap.add_argument("--test-seed", type=int, default=202)
    ap.add_argument("--no-latency", action="store_true", help="train without latency features")
    args = ap.parse_args(argv)

    spec = load_spec(args.spec).spec
    with tempfile.TemporaryDirectory(prefix="synthloop-bench-fb-") as tmp:
        t0 = time.perf_counter()
        for name, seed in (("train", args.train_seed), ("test", args.test_seed)):
            generate(args.spec, Path(tmp) / name, GenerateOptions(seed=seed,
                                                                  sessions=args.sessions))
        t_gen = time.perf_counter() - t0
        train = evalset_rows(open_evalset(Path(tmp) / "train"))
        test_cases = [c for c in open_evalset(Path(tmp) / "test").iter_cases()
                      if c.expected_feedback is not None
                      and c.expected_feedback.thumb.value != "none" and c.reply is not None]
    cfg = FeedbackTrainConfig(use_latency=not args.no_latency)
    t0 = time.perf_counter()
    model = train_on_rows(train, cfg, {"evalset_path": "train"}, progress=False)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    pred = model.predict(test_cases)
    t_pred = time.perf_counter() - t0
    y = np.asarray([1.0 if c.expected_feedback and c.expected_feedback.thumb.value == "up"
                    else 0.0 for c in test_cases])
    p_true = np.asarray([true_thumb_up_probability(spec, c.tags["intent"], c.tags["quality"])
                         for c in test_cases])
    m = classification_metrics(pred, y)
    ece_true = expected_calibration_error(pred, p_true)

    print(f"spec {args.spec} ({args.sessions:,} sessions per evalset, generated in "
          f"{t_gen:.1f} s)")
    print(f"feedback model: trained on {len(train.rows):,} thumbs in {t_train:.1f} s "
          f"({model.metrics['calibration']} calibration, {model.metrics['folds']} folds, "
          f"latency features {'on' if cfg.use_latency else 'off'})")
    print(f"held-out thumbs                 n = {len(test_cases):,}")
    print(f"ECE vs true P(up), {ECE_BINS} bins     {ece_true:.4f}   (goal <= 0.05: "
          f"{'met' if ece_true <= 0.05 else 'NOT met'})")
    print(f"ECE vs observed thumbs          {m['ece']:.4f}")
    print(f"mean |pred - true P(up)|        {float(np.mean(np.abs(pred - p_true))):.4f}")
    print(f"Brier                           {m['brier']:.4f}   (oracle with the true "
          f"probabilities: {brier_score(p_true, y):.4f}; constant base rate: "
          f"{brier_score(np.full_like(y, y.mean()), y):.4f})")
    print(f"AUC                             {m['auc']:.4f}")
    print(f"scoring throughput              {len(test_cases) / t_pred:,.0f} cases/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
