"""Generators: turn a spec into a new evalset version.

A spec file names its `kind` (`rules`, `sdv`, `llm`, or a plugin's name). Each kind registers a
`run_spec(spec_path, data, out, options) -> EvalsetManifest` function in
`synthloop.registry.generators`; built-ins are registered lazily here, plugins through the
entry-point group `synthloop.generators`. `generate()` reads the spec's kind and dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from synthloop.config import WRONG_KIND_HINT, parse_document, wrong_kind
from synthloop.errors import ConfigError
from synthloop.registry import generators
from synthloop.schema import EvalsetManifest

generators.register("rules", "synthloop.generate.rules:run_spec")
generators.register("sdv", "synthloop.generate.sdv:run_spec")
generators.register("llm", "synthloop.generate.llm:run_spec")


@dataclass
class GenerateOptions:
    """Command-line overrides shared by every generator kind (None = use the spec's value)."""

    seed: int | None = None
    sessions: int | None = None
    n: int | None = None
    dry_run: bool = False
    max_cost: float | None = None
    allow_privacy_failure: bool = False
    cache: Path | None = None
    name: str | None = None
    progress: bool | None = None


class SpecRunner(Protocol):
    def __call__(
        self, spec_path: Path, data: dict[str, Any], out: Path, options: GenerateOptions
    ) -> EvalsetManifest | None: ...


def spec_kind(spec_path: Path, data: Any) -> str:
    if not isinstance(data, dict):
        raise ConfigError(f"{spec_path}: expected a mapping at the top level of the spec")
    kind = data.get("kind", "rules")
    if not isinstance(kind, str) or kind not in generators.names():
        diagnosis = wrong_kind(data, expected="a generator spec")  # e.g. a target file
        if diagnosis is not None:
            raise ConfigError(f"{spec_path}: {diagnosis}", hint=WRONG_KIND_HINT)
    if not isinstance(kind, str):
        raise ConfigError(f"{spec_path}: kind: must be a string such as rules, sdv or llm")
    return kind


def generate(spec_path: str | Path, out: str | Path, options: GenerateOptions | None = None
             ) -> EvalsetManifest | None:
    """Run the generator the spec names; returns the new version's manifest (None on dry runs)."""
    p = Path(spec_path)
    data = parse_document(p)
    kind = spec_kind(p, data)
    runner: SpecRunner = generators.get(kind)
    return runner(p, data, Path(out), options or GenerateOptions())
