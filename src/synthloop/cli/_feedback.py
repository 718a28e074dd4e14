"""`synthloop feedback train|report`: the feedback model (predicted thumb up) from thumbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from synthloop.errors import DataError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "feedback",
        help="train and check the feedback model (predicted P(thumb up), metric thumb_up_pred)",
        description="The feedback model predicts P(thumb up | input, reply) from the thumbs in "
        "an evalset (synthetic, or consented real logs). Use it in any gate as the metric "
        "thumb_up_pred with a scorer of kind feedback_model.",
    )
    fsub = p.add_subparsers(dest="feedback_command", metavar="ACTION")

    t = fsub.add_parser("train", help="train a calibrated feedback model on an evalset's thumbs",
                        description="Train on the cases with a thumb up/down and the reply the "
                        "user saw; writes MODEL_DIR/model.json (coefficients, hashing parameters, "
                        "calibration map, the evalset's content hash, cross-validated metrics).")
    t.add_argument("evalset", help="evalset directory or NAME@VERSION")
    t.add_argument("--out", type=Path, required=True, help="model directory to write")
    t.add_argument("--config", type=Path, help="training config (YAML; see docs/feedback-model.md)")
    t.add_argument("--seed", type=int, help="seed of the cross-validation split")
    t.add_argument("--no-latency", action="store_true",
                   help="do not use reply latency as a feature")
    t.add_argument("--no-tags", action="store_true",
                   help="do not use segment tags (intent, persona, ...) as features")
    t.add_argument("--force", action="store_true", help="replace an existing model in --out")
    t.set_defaults(func=run_train)

    r = fsub.add_parser("report", help="Brier score, calibration error, AUC and a reliability "
                        "plot of a model on an evalset's thumbs")
    r.add_argument("model", type=Path, help="model directory written by `feedback train`")
    r.add_argument("--evalset", required=True, help="evalset directory or NAME@VERSION "
                   "(use one the model was not trained on)")
    r.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    r.add_argument("--json", type=Path, dest="json_out", help="write the figures as JSON here")
    r.add_argument("--bins", type=int, default=15, help="calibration bins (default 15)")
    r.set_defaults(func=run_report)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from synthloop.evalsets import open_evalset
    from synthloop.scorers.feedback import MODEL_FILE, load_train_config, train_feedback_model

    target = args.out / MODEL_FILE
    if target.exists() and not args.force:
        raise DataError(f"{target}: a feedback model already exists",
                        hint="choose a new --out or pass --force to replace it")
    cfg = load_train_config(args.config)
    updates: dict[str, Any] = {}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.no_latency:
        updates["use_latency"] = False
    if args.no_tags:
        updates["use_tags"] = False
    if updates:
        cfg = cfg.model_copy(update=updates)
    es = open_evalset(args.evalset)
    model = train_feedback_model(es, cfg)
    path = model.save(args.out)
    t = model.training
    cv = model.metrics["cross_validated"]
    auc = "n/a" if cv["auc"] is None else f"{cv['auc']:.3f}"
    print(f"trained feedback model on {es.manifest.name}@{es.manifest.version} "
          f"({t['n']:,} cases with a thumb: {t['n_up']:,} up, {t['n_down']:,} down)")
    print(f"  cross-validated ({model.metrics['folds']} folds, {model.metrics['calibration']} "
          f"calibration): Brier {cv['brier']:.4f}  ECE {cv['ece']:.4f}  AUC {auc}")
    print(f"  wrote {path}")
    print(f"  use it as metric thumb_up_pred: scorers: [{{name: thumb_up_pred, kind: "
          f"feedback_model, model: {args.out}}}]")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from synthloop.runs import write_atomic
    from synthloop.scorers.feedback import feedback_report, write_report_html

    if args.bins < 2:
        raise DataError(f"--bins {args.bins}: need at least 2 bins")
    report = feedback_report(args.model, args.evalset, bins=args.bins)
    for line in report.summary_lines():
        print(line)
    if args.html:
        print(f"  wrote {write_report_html(report, args.html)}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.json_out, json.dumps(report.to_json(), indent=2) + "\n")
        print(f"  wrote {args.json_out}")
    return 0
