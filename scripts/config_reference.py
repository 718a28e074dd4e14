"""Generate docs/config-reference.md from the pydantic models (the single source of truth).

    python scripts/config_reference.py          # rewrite docs/config-reference.md
    python scripts/config_reference.py --check  # exit 1 if the file is out of date (used in tests)
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

OUT = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"

# (title, what file it is, "module:Model") — models that may not exist yet are skipped.
SECTIONS: list[tuple[str, str, str]] = [
    ("Rules generator spec", "`generators/*.yaml` with `kind: rules`", "synthloop.generate.rules:RulesSpec"),
    ("SDV generator spec", "`generators/*.yaml` with `kind: sdv`", "synthloop.generate.sdv:SdvSpec"),
    ("LLM generator spec", "`generators/*.yaml` with `kind: llm`", "synthloop.generate.llm:LLMSpec"),
    ("Ingest mapping", "`MAPPING.yaml` for `synthloop ingest`", "synthloop.ingest:LogMapping"),
    ("OpenAI-compatible target", "`configs/targets/*.yaml` with `kind: openai`", "synthloop.targets:OpenAITargetConfig"),
    ("HTTP JSON target", "`configs/targets/*.yaml` with `kind: http`", "synthloop.targets:HTTPTargetConfig"),
    ("Python target", "`configs/targets/*.yaml` with `kind: python`", "synthloop.targets:PythonTargetConfig"),
    ("Scorers", "`SCORERS.yaml` for `synthloop score`", "synthloop.scorers:ScorersConfig"),
    ("Gate policy", "`POLICY.yaml` for `synthloop gate`", "synthloop.gate:Policy"),
    ("Feedback model training", "`feedback_model.training` in a pipeline, or `synthloop feedback train` options", "synthloop.scorers.feedback:FeedbackTrainConfig"),
    ("Pipeline", "`PIPELINE.yaml` for `synthloop run`", "synthloop.pipeline:PipelineConfig"),
]


def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            src = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        stmts = body.body
        for i, stmt in enumerate(stmts[:-1]):
            nxt = stmts[i + 1]
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(ann: Any) -> str:
    if ann is type(None):
        return "null"
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(ann)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]"
    return getattr(ann, "__name__", str(ann)).replace("typing.", "")


def _nested_models(ann: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    for a in typing.get_args(ann) or ():
        found.extend(_nested_models(a))
    return found


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(see below)"
    text = repr(value.value if hasattr(value, "value") and not isinstance(value, str) else value)
    return f"`{text}`" if len(text) < 60 else "(long default)"


def render_model(model: type[BaseModel], seen: set[type[BaseModel]], level: int = 3) -> str:
    seen.add(model)
    docs = _attribute_docstrings(model)
    lines = [f"{'#' * level} `{model.__name__}`", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        lines += [" ".join(model.__doc__.split()), ""]
    lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[type[BaseModel]] = []
    for name, field in model.model_fields.items():
        desc = (field.description or docs.get(name, "")).replace("|", "\\|")
        key = field.alias or name
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | "
                     f"{desc} |")
        for m in _nested_models(field.annotation):
            if m not in seen and m not in nested:
                nested.append(m)
    lines.append("")
    for m in nested:
        if m not in seen:
            lines.append(render_model(m, seen, level=min(level + 1, 4)))
    return "\n".join(lines)


def render() -> str:
    parts = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python scripts/config_reference.py`; do not edit "
        "by hand. Every config file rejects unknown keys and lists every problem at once, each "
        "with file, field path and a hint. Strings may use `${ENV_VAR}` or "
        "`${ENV_VAR:-default}`.",
        "",
    ]
    for title, what, ref in SECTIONS:
        mod_name, _, attr = ref.partition(":")
        try:
            model = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise SystemExit(f"config reference: cannot import {ref}: {e}") from None
        parts += [f"## {title}", "", f"File: {what}.", "", render_model(model, set())]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
