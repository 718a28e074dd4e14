"""The built-in demo: Lumen Notes, a fictional notes app, and its support assistant.

`synthloop demo` runs the pipeline shipped as package data (`synthloop/data/demo/`): a
knowledge base (`kb.jsonl`), a rules spec whose users paraphrase its articles (`spec.yaml`),
two reference model versions (`synthloop.demo.models:v1` / `:v2`, as python targets), scorers
and a gate policy. Everything runs offline without API keys.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from synthloop.demo.models import FALLBACK, Article, knowledge_base, v1, v2


def data_dir() -> Path:
    """The demo's package-data folder (pipeline.yaml, spec.yaml, kb.jsonl, targets, ...)."""
    return Path(str(resources.files("synthloop").joinpath("data/demo")))


__all__ = ["FALLBACK", "Article", "data_dir", "knowledge_base", "v1", "v2"]
