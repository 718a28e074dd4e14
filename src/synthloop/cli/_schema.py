"""`synthloop schema`: print or write the JSON Schema of the data models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synthloop import schema

MODELS: dict[str, type[BaseModel]] = {
    "interaction": schema.Interaction,
    "session": schema.Session,
    "evalcase": schema.EvalCase,
    "feedback": schema.Feedback,
    "consent": schema.Consent,
    "evalset-manifest": schema.EvalsetManifest,
    "run-manifest": schema.RunManifest,
    "response": schema.Response,
    "score": schema.Score,
}


def _model_name(text: str) -> str:
    """`EvalCase`, `evalcase`, `EvalsetManifest`, `evalset_manifest` -> the MODELS key."""
    key = text.lower().replace("-", "").replace("_", "")
    return next((name for name in MODELS if name.replace("-", "") == key), text)


def register(sub: Any) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of a data model")
    p.add_argument("model", nargs="?", choices=sorted(MODELS), default="evalcase",
                   type=_model_name,
                   help="data model, any case (EvalCase = evalcase); default evalcase")
    p.add_argument("--out", type=Path, help="write every model's schema into this directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, model in MODELS.items():
            (args.out / f"{name}.schema.json").write_text(
                json.dumps(model.model_json_schema(), indent=2) + "\n")
        print(f"wrote {len(MODELS)} schemas to {args.out}")
        return 0
    print(json.dumps(MODELS[args.model].model_json_schema(), indent=2))
    return 0
