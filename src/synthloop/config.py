"""YAML/TOML → validated config objects. Every error names file, field and a fix.

`load_model(path, Model)` reads a file, interpolates `${ENV_VAR}` (and `${ENV_VAR:-default}`),
validates with pydantic and raises one `ConfigError` listing *every* problem at once, each as
`FILE: field.path: what is wrong (hint)`, with "did you mean `intents`?" for misspelt keys.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from synthloop.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def read_text(path: str | Path, what: str = "file") -> str:
    """Read a text file or raise a one-line ConfigError naming it."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found", hint="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, expected a {what}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: cannot read {what}: not UTF-8 text (byte {e.start}: {e.reason})",
                          hint=f"save the {what} as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what}: {e.strerror or e}") from None


def interpolate_env(value: Any, *, where: str = "", missing: list[str] | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed document."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            if missing is not None:
                missing.append(f"{where}: environment variable {name} is not set "
                               f"(export {name}=... or write ${{{name}:-default}})")
            return m.group(0)

        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [interpolate_env(v, where=f"{where}[{i}]", missing=missing) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: interpolate_env(v, where=f"{where}.{k}" if where else str(k), missing=missing)
            for k, v in value.items()
        }
    return value


def parse_document(path: str | Path, text: str | None = None) -> Any:
    """Parse YAML (or TOML by extension) into plain Python data, with a clear error."""
    p = Path(path)
    if text is None:
        text = read_text(p, "config file")
    try:
        if p.suffix.lower() == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}:{loc}: invalid YAML: {problem}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known field names of the (nested) model at `loc`, for did-you-mean hints."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = _unwrap_model(ann)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _unwrap_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validation_problems(e: ValidationError, model: type[BaseModel], source: str) -> list[str]:
    """Turn a pydantic ValidationError into `source: field: message (hint)` lines."""
    problems: list[str] = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop discriminator tags pydantic inserts into the location
        loc = tuple(p for p in loc if p not in _tag_names(model))
        field = format_loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            names = _field_names(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else (
                f"known keys: {', '.join(names)}" if names else "remove it")
            problems.append(f"{source}: {field}: unknown key ({hint})")
        elif kind == "missing":
            problems.append(f"{source}: {field}: required field is missing (add it)")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            got = err.get("input")
            got_s = ""
            if got is not None and not isinstance(got, dict | list):
                got_s = f" (got {got!r})"
            problems.append(f"{source}: {field}: {msg}{got_s}")
    return problems


def first_problem(e: Exception) -> str:
    """One line for a data file that failed to parse or validate: its first problem (field
    and message) and how many more there are, instead of pydantic's "1 validation error for
    Model" header, which names neither."""
    if not isinstance(e, ValidationError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    errors = e.errors()
    if not errors:
        return str(e).splitlines()[0]
    first = errors[0]
    msg = str(first["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{format_loc(tuple(first['loc']))}: {msg}{more}"


def _tag_names(model: type[BaseModel]) -> set[str]:
    return set(getattr(model, "__discriminator_tags__", set()))


CONFIG_KINDS: tuple[tuple[str, str, str, str | None], ...] = (
    # what the file is, the command that reads it, its model, its `kind:` (None: has none)
    ("a pipeline file", "synthloop run", "synthloop.pipeline:PipelineConfig", None),
    ("a generator spec", "synthloop generate", "synthloop.generate._rules._spec:RulesSpec",
     "rules"),
    ("a generator spec", "synthloop generate", "synthloop.generate.sdv:SdvSpec", "sdv"),
    ("a generator spec", "synthloop generate", "synthloop.generate.llm._spec:LLMSpec", "llm"),
    ("a target file", "synthloop replay --target",
     "synthloop.targets._openai:OpenAITargetConfig", "openai"),
    ("a target file", "synthloop replay --target", "synthloop.targets._http:HTTPTargetConfig",
     "http"),
    ("a target file", "synthloop replay --target",
     "synthloop.targets._python:PythonTargetConfig", "python"),
    ("a scorers file", "synthloop score --scorers", "synthloop.scorers._runner:ScorersConfig",
     None),
    ("a gate policy", "synthloop gate --policy", "synthloop.gate._policy:Policy", None),
    ("an ingest mapping", "synthloop ingest --mapping", "synthloop.ingest._mapping:LogMapping",
     None),
    ("a feedback training config", "synthloop feedback train --config",
     "synthloop.scorers.feedback:FeedbackTrainConfig", None),
)
"""The synthloop config kinds, for telling a user who passed one kind where another is read."""
WRONG_KIND_HINT = "check the path, or pass it to the command named"


def wrong_kind(data: Mapping[str, Any], model: type[BaseModel] | None = None, *,
               expected: str | None = None) -> str | None:
    """When `data` failed to validate as `model` (or, before a model is known, as `expected`:
    e.g. "a target file") but its keys are exactly those of another synthloop config kind (all
    of its required keys, none it does not know), say which:
    `looks like a pipeline file (for `synthloop run`), not a generator spec`."""
    import importlib

    keys = {k for k in data if isinstance(k, str)}
    if model is not None:
        if not keys - set(model.model_fields):
            return None  # no unknown key: a genuine problem with a value, not the wrong file
        ref = f"{model.__module__}:{model.__qualname__}"
        own = next((k for k in CONFIG_KINDS if k[2] == ref), None)
        expected = own[0] if own is not None else expected
    for label, command, other, kind in CONFIG_KINDS:
        if label == expected:
            continue
        if kind is not None and data.get("kind", "rules") != kind:
            continue  # (a spec without `kind:` is a rules spec)
        module, _, name = other.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # pragma: no cover - an optional extra missing
            continue
        fields = cls.model_fields
        required = {n for n, f in fields.items() if f.is_required()}
        if keys <= set(fields) and required <= keys:
            return f"looks like {label} (for `{command}`), not {expected or 'this file kind'}"
    # an explicit `kind:` of another config kind says it too, even when the file has problems
    kind_value = data.get("kind")
    for label, command, _, kind in CONFIG_KINDS:
        if label != expected and kind is not None and kind_value == kind:
            return (f"looks like {label} (kind: {kind}, for `{command}`), not "
                    f"{expected or 'this file kind'}")
    return None


def validate_data(data: Any, model: type[M], source: str) -> M:
    """Validate already-parsed data into `model`, raising one ConfigError with every problem;
    a file of another synthloop config kind gets one line saying which kind it is."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, "
                          f"got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        diagnosis = wrong_kind(data, model)
        if diagnosis is not None:
            raise ConfigError(f"{source}: {diagnosis}", hint=WRONG_KIND_HINT) from None
        problems = validation_problems(e, model, source)
        head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
        raise ConfigError(head, problems=problems) from None


def load_model(path: str | Path, model: type[M], *, env: bool = True) -> M:
    """Read, interpolate and validate a YAML/TOML config file into `model`."""
    p = Path(path)
    data = parse_document(p)
    missing: list[str] = []
    if env:
        data = interpolate_env(data, missing=missing)
    if missing:
        problems = [f"{p}: {m}" for m in missing]
        raise ConfigError(problems[0] if len(problems) == 1 else f"{p}: {len(problems)} problems",
                          problems=problems)
    return validate_data(data, model, str(p))


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
