"""The rules generator: realistic sessions with feedback from personas, intents and templates.

No data needed: a spec (YAML, see `generators/support_assistant.yaml` and
`docs/rules-generator.md`) describes personas, intents with Jinja2 templates and answer keys,
session structure, feedback behaviour and consent rates; `run_spec` streams a new evalset
version. Same spec and seed give byte-identical data and the same `content_hash`.

    from synthloop.generate.rules import load_spec, true_thumb_up_probability
    spec = load_spec("generators/support_assistant.yaml").spec
    true_thumb_up_probability(spec, "refund_request", "bad")   # P(up | thumb given)

Write the spec's JSON Schema (for editors) with
`python -m synthloop.generate.rules --write-schema generators/support_assistant.schema.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from synthloop.errors import ConfigError
from synthloop.evalsets import check_new_version
from synthloop.generate import GenerateOptions
from synthloop.generate._rules._engine import (
    GENERATOR_VERSION,
    LoadedSpec,
    RulesRun,
    load_spec,
    prepare,
    write,
)
from synthloop.generate._rules._spec import (
    ByQuality,
    CountSpec,
    Intent,
    Persona,
    RulesSpec,
    Slot,
)
from synthloop.schema import EvalsetManifest

__all__ = [
    "GENERATOR_VERSION",
    "ByQuality",
    "CountSpec",
    "Intent",
    "LoadedSpec",
    "Persona",
    "RulesRun",
    "RulesSpec",
    "Slot",
    "explicit_feedback_probability",
    "load_spec",
    "prepare",
    "run_spec",
    "spec_json_schema",
    "true_thumb_up_probability",
    "turns_distribution",
    "write_spec_schema",
]


def run_spec(spec_path: Path, data: dict[str, Any], out: Path, options: GenerateOptions
             ) -> EvalsetManifest | None:
    """Generate a new evalset version at `out` from a rules spec (None on a dry run)."""
    if options.n is not None:
        raise ConfigError(f"{spec_path}: -n applies to llm and sdv specs; a rules spec counts sessions",
                          hint="use --sessions")
    loaded = load_spec(spec_path, data)
    spec = loaded.spec
    seed = spec.seed if options.seed is None else options.seed
    sessions = spec.sessions if options.sessions is None else options.sessions
    if seed < 0:
        raise ConfigError(f"--seed: must be 0 or more (got {seed})")
    if sessions < 0:
        raise ConfigError(f"--sessions: must be 0 or more (got {sessions})")
    if options.dry_run:
        _print_plan(loaded, seed, sessions, out)
        return None
    check_new_version(out)
    run = prepare(loaded, seed, sessions)
    return write(run, out, name=options.name or spec.name, progress=options.progress)


def _print_plan(loaded: LoadedSpec, seed: int, sessions: int, out: Path) -> None:
    spec = loaded.spec
    pw = np.array([p.weight for p in spec.personas])
    mean_turns = float(sum(spec.turns_for(p).mean() * w for p, w in zip(spec.personas, pw / pw.sum(),
                                                                       strict=True)))
    print(f"{loaded.source}: valid rules spec ({len(spec.personas)} personas, "
          f"{len(spec.intents)} intents, {len(spec.slots)} slots)")
    print(f"  would write {sessions:,} sessions (~{sessions * mean_turns:,.0f} interactions, "
          f"{mean_turns:.2f} turns/session) with seed {seed} to {out}")
    print(f"  spec_hash {loaded.spec_hash}")


# --------------------------------------------------------------------------- the spec's truth
def _as_spec(spec: RulesSpec | LoadedSpec | str | Path) -> RulesSpec:
    if isinstance(spec, RulesSpec):
        return spec
    if isinstance(spec, LoadedSpec):
        return spec.spec
    return load_spec(spec).spec


def _good(quality: str | bool) -> bool:
    if isinstance(quality, bool):
        return quality
    if quality not in ("good", "bad"):
        raise ValueError(f"quality must be 'good' or 'bad' (the `quality` tag), got {quality!r}")
    return quality == "good"


def _find(items: list[Any], name: str, what: str) -> Any:
    for it in items:
        if it.name == name:
            return it
    raise KeyError(f"unknown {what} {name!r}")


def true_thumb_up_probability(spec: RulesSpec | LoadedSpec | str | Path, intent: str,
                              quality: str | bool) -> float:
    """P(thumb = up | the user gave a thumb, intent, reply quality) as the spec defines it.

    `quality` is the case's `quality` tag (`good`/`bad`) or a bool. Stable contract: the
    generator draws every thumb as up with exactly this probability.
    """
    s = _as_spec(spec)
    q = s.thumb_up_for(_find(s.intents, intent, "intent"))
    return float(q.good if _good(quality) else q.bad)


def explicit_feedback_probability(spec: RulesSpec | LoadedSpec | str | Path, persona: str,
                                  quality: str | bool) -> float:
    """P(the user gives a thumb | persona, reply quality): explicit_rate x propensity
    (x bad_reply_multiplier after a bad reply), capped at 1."""
    s = _as_spec(spec)
    p = _find(s.personas, persona, "persona")
    mult = 1.0 if _good(quality) else s.feedback.bad_reply_multiplier
    return float(min(s.feedback.explicit_rate * p.feedback_propensity * mult, 1.0))


def turns_distribution(spec: RulesSpec | LoadedSpec | str | Path, persona: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(turn counts, probabilities) of sessions of `persona`."""
    s = _as_spec(spec)
    return s.turns_for(_find(s.personas, persona, "persona")).pmf()


# --------------------------------------------------------------------------- JSON Schema
def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of a rules spec, from the pydantic model (for editor validation)."""
    schema = RulesSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_spec_schema(path: str | Path) -> None:
    Path(path).write_text(json.dumps(spec_json_schema(), indent=2, sort_keys=False) + "\n",
                          encoding="utf-8")


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write-schema":
        write_spec_schema(argv[1])
        print(f"wrote {argv[1]}")
        return 0
    print(json.dumps(spec_json_schema(), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
