"""Match scorers: exact / normalised match, contains, regex, JSON validity and JSON Schema,
numeric tolerance. All binary (1 = pass), columnar, and 0 when the target returned no output."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from synthloop.config import read_text
from synthloop.errors import ConfigError
from synthloop.scorers._base import BatchScores, BuiltinScorer, ScorerOptions, ScoringBatch
from synthloop.scorers._text import nfc, normalize, numbers, shorten

NO_GOOD_REFERENCE = "case has no good reference (add references.good to the evalset)"


# --------------------------------------------------------------------------- exact match
class ExactMatchOptions(ScorerOptions):
    """`kind: exact_match`: output equals a good reference after trimming."""

    reference: Literal["first", "any"] = "first"
    """Compare with the case's first good reference, or pass when any good reference matches."""
    case_sensitive: bool = True
    """Compare letter case exactly (false lowercases both sides)."""
    collapse_whitespace: bool = False
    """Treat every run of whitespace as one space."""


class NormalizedMatchOptions(ScorerOptions):
    """`kind: normalized_match`: output equals a good reference after SQuAD-style normalisation."""

    reference: Literal["first", "any"] = "first"
    """Compare with the case's first good reference, or pass when any good reference matches."""
    lowercase: bool = True
    """Lowercase both sides."""
    strip_punctuation: bool = True
    """Drop punctuation."""
    remove_articles: bool = True
    """Drop the English articles a, an, the."""
    collapse_whitespace: bool = True
    """Treat every run of whitespace as one space."""


class ExactMatch(BuiltinScorer):
    """1 when the output equals the (first / any) good reference after trimming."""

    kind = "binary"
    options_model: type[ScorerOptions] = ExactMatchOptions

    def _norm(self, text: str) -> str:
        o = self.options
        text = nfc(text.strip())
        if not o.case_sensitive:
            text = text.lower()
        if o.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        first = self.options.reference == "first"
        norm = self._norm
        outputs, good = batch.outputs, batch.good
        for i in rows:
            refs = good[i]
            if not refs:
                out.errors[i] = NO_GOOD_REFERENCE
                continue
            o = norm(outputs[i])  # type: ignore[arg-type]
            hit = o == norm(refs[0]) if first else any(o == norm(r) for r in refs)
            out.values[i] = 1.0 if hit else 0.0


class NormalizedMatch(ExactMatch):
    """1 when the output equals a good reference after lowercasing, dropping punctuation and
    articles and collapsing whitespace (each step configurable)."""

    options_model = NormalizedMatchOptions

    def _norm(self, text: str) -> str:
        o = self.options
        return normalize(text, lowercase=o.lowercase, strip_punctuation=o.strip_punctuation,
                         remove_articles=o.remove_articles,
                         collapse_whitespace=o.collapse_whitespace)


# --------------------------------------------------------------------------- contains
class ContainsOptions(ScorerOptions):
    """`kind: contains`: the output contains given text (or the good references)."""

    text: str | list[str] | None = None
    """Substring(s) to look for. When omitted, the case's good references are used."""
    mode: Literal["any", "all"] = "any"
    """Pass when any / all of the substrings occur."""
    case_sensitive: bool = False
    """Match letter case exactly."""
    negate: bool = False
    """Invert the test: pass when the text does NOT occur (e.g. banned phrases)."""

    @field_validator("text")
    @classmethod
    def _non_empty(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is not None and (v == "" or v == [] or (isinstance(v, list) and "" in v)):
            raise ValueError("must be a non-empty string or list of non-empty strings")
        return v


class Contains(BuiltinScorer):
    kind = "binary"
    options_model = ContainsOptions

    def __init__(self, options: ContainsOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        t = options.text
        fixed = [t] if isinstance(t, str) else t
        self._fixed = None if fixed is None else [nfc(s) if options.case_sensitive
                                                  else nfc(s).lower() for s in fixed]

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        o = self.options
        cs = o.case_sensitive
        test = any if o.mode == "any" else all
        for i in rows:
            text = nfc(batch.outputs[i] or "")
            if not cs:
                text = text.lower()
            needles = self._fixed
            if needles is None:
                refs = [nfc(r.strip()) for r in batch.good[i] if r.strip()]
                if not refs:
                    out.errors[i] = NO_GOOD_REFERENCE
                    continue
                needles = refs if cs else [r.lower() for r in refs]
            hit = test(n in text for n in needles)
            if o.negate:
                hit = not hit
            out.values[i] = 1.0 if hit else 0.0
            if not hit:
                missing = [n for n in needles if (n in text) == o.negate]
                verb = "contains" if o.negate else "missing"
                out.explanations[i] = f"{verb}: " + ", ".join(shorten(m, 40) for m in missing[:3])


# --------------------------------------------------------------------------- regex
_FLAGS = {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL,
          "VERBOSE": re.VERBOSE, "ASCII": re.ASCII}


class RegexOptions(ScorerOptions):
    """`kind: regex`: the output matches a regular expression (Python `re` syntax)."""

    pattern: str
    """The regular expression."""
    mode: Literal["search", "match", "fullmatch"] = "search"
    """`search` anywhere, `match` at the start, `fullmatch` the whole (trimmed) output."""
    flags: list[Literal["IGNORECASE", "MULTILINE", "DOTALL", "VERBOSE", "ASCII"]] = Field(
        default_factory=list)
    """Regular-expression flags."""
    negate: bool = False
    """Invert the test: pass when the pattern does NOT match."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        return v


class Regex(BuiltinScorer):
    kind = "binary"
    options_model = RegexOptions

    def __init__(self, options: RegexOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        flags = 0
        for f in options.flags:
            flags |= _FLAGS[f]
        rx = re.compile(options.pattern, flags)
        self._fn = {"search": rx.search, "match": rx.match, "fullmatch": rx.fullmatch}[options.mode]

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        fn = self._fn
        negate = self.options.negate
        full = self.options.mode == "fullmatch"
        for i in rows:
            text: str = batch.outputs[i]  # type: ignore[assignment]
            hit = fn(text.strip() if full else text) is not None
            out.values[i] = 1.0 if hit != negate else 0.0


# --------------------------------------------------------------------------- JSON
_JSON_STARTS = frozenset('{["-0123456789tfn')
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n`]*\n?(.*?)```", re.DOTALL)
_MAX_SCAN = 64
"""`extract` tries at most this many `{` / `[` positions after the simpler candidates."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity)")


def loads_strict(text: str) -> Any:
    """`json.loads` without Python's extensions: NaN, Infinity and -Infinity are rejected."""
    return json.loads(text, parse_constant=_no_constant)


def json_candidates(text: str) -> Iterator[str]:
    """Where the JSON of a reply may be, most likely first: ```json fences, untagged fences,
    other fences, from the first `{`/`[` to the last matching `}`/`]`, then every value that
    decodes from a `{` or `[` (at most `_MAX_SCAN` positions). The trimmed text when there is
    no candidate at all."""
    tagged: list[str] = []
    untagged: list[str] = []
    other: list[str] = []
    for m in _FENCE.finditer(text):
        tag = m.group(1).lower()
        (tagged if tag == "json" else untagged if not tag else other).append(m.group(2).strip())
    found = False
    for c in tagged + untagged + other:
        found = True
        yield c
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        if not found:
            yield text.strip()
        return
    start = min(starts)
    close = "}" if text[start] == "{" else "]"
    end = text.rfind(close)
    if end > start:
        yield text[start:end + 1]
    elif not found:
        yield text.strip()
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    scanned = 0
    for i, ch in enumerate(text):
        if ch in "{[":
            scanned += 1
            try:
                _, stop = decoder.raw_decode(text, i)
            except ValueError:
                pass
            else:
                yield text[i:stop]
            if scanned >= _MAX_SCAN:
                return


class JsonValidOptions(ScorerOptions):
    """`kind: json_valid`: the output parses as JSON."""

    extract: bool = False
    """Look for JSON inside the reply (a ```json fence, another fence, the outermost {...} /
    [...], else the first {...} / [...] that parses)."""
    require: Literal["any", "object", "array"] = "any"
    """Also require the top-level value to be an object / array."""


class JsonValid(BuiltinScorer):
    kind = "binary"
    options_model = JsonValidOptions

    def _parse(self, text: str) -> tuple[Any, str | None]:
        """`text` as JSON of the required type: (value, None), or (None, why not)."""
        head = text.lstrip()[:1]
        if head not in _JSON_STARTS:  # fast path: no exception per non-JSON reply
            return None, ("invalid JSON: empty output" if not head
                          else f"invalid JSON: starts with {head!r}")
        try:
            value = loads_strict(text)
        except ValueError as e:
            return None, f"invalid JSON: {e}"
        req = self.options.require
        if req == "object" and not isinstance(value, dict):
            return None, f"top-level JSON is {type(value).__name__}, expected an object"
        if req == "array" and not isinstance(value, list):
            return None, f"top-level JSON is {type(value).__name__}, expected an array"
        return value, None

    def _check(self, text: str) -> tuple[str | None, bool]:
        """Why `text` fails (None when it passes), and whether it parsed as the required type."""
        _, why = self._parse(text)
        return why, why is None

    def _why(self, output: str) -> str | None:
        """Why the output fails (None when it passes). With `extract`, the first candidate
        that passes wins; else the reason of the first candidate that parsed, else of the
        first candidate."""
        if not self.options.extract:
            return self._check(output)[0]
        first: str | None = None
        parsed: str | None = None
        for c in json_candidates(output):
            why, ok = self._check(c)
            if why is None:
                return None
            first = first or why
            if ok and parsed is None:
                parsed = why
        return parsed or first or "invalid JSON: empty output"

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        for i in rows:
            why = self._why(batch.outputs[i])  # type: ignore[arg-type]
            out.values[i] = 0.0 if why else 1.0
            out.explanations[i] = why


class JsonSchemaOptions(JsonValidOptions):
    """`kind: json_schema`: the output is JSON valid against a JSON Schema."""

    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON Schema, inline (YAML mapping)."""
    schema_file: str | None = None
    """Path of a JSON or YAML file holding the schema, relative to SCORERS.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaOptions:
        if (self.json_schema is None) == (self.schema_file is None):
            raise ValueError("give exactly one of `schema` (inline) or `schema_file`")
        return self


class JsonSchema(JsonValid):
    options_model = JsonSchemaOptions

    def __init__(self, options: JsonSchemaOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        from jsonschema import exceptions as js_exc
        from jsonschema import validators

        schema = options.json_schema
        where = "schema"
        if options.schema_file is not None:
            path = Path(options.schema_file)
            if not path.is_absolute():
                path = self.base_dir / path
            where = f"schema_file {path}"
            try:
                schema = yaml.safe_load(read_text(path, "JSON Schema file"))
            except yaml.YAMLError as e:
                raise ConfigError(f"scorer '{self.name}': schema_file: {path} is not JSON/YAML: "
                                  f"{str(e).splitlines()[0]}") from None
            if not isinstance(schema, dict):
                raise ConfigError(f"scorer '{self.name}': schema_file: {path} does not hold a "
                                  "JSON Schema object")
        assert schema is not None
        cls = validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except js_exc.SchemaError as e:
            raise ConfigError(f"scorer '{self.name}': {where}: not a valid JSON Schema: "
                              f"{shorten(e.message, 200)}") from None
        # An empty registry: a `$ref` is resolved inside the schema (and the JSON Schema
        # metaschemas), never fetched over the network while scoring.
        import referencing

        self._validator = cls(schema, registry=referencing.Registry())
        self._where = where
        self._check_refs(schema)

    def _check_refs(self, schema: dict[str, Any]) -> None:
        """A `$ref` that does not resolve is a config error now, not one failure per case."""
        import referencing
        import referencing.jsonschema
        from jsonschema_specifications import REGISTRY

        refs: list[str] = []
        nested_ids = False

        def walk(node: Any, root: bool) -> None:
            nonlocal nested_ids
            if isinstance(node, dict):
                if isinstance(node.get("$ref"), str):
                    refs.append(node["$ref"])
                if not root and "$id" in node:
                    nested_ids = True
                for k, v in node.items():
                    if k not in ("const", "enum", "default", "examples"):
                        walk(v, False)
            elif isinstance(node, list):
                for v in node:
                    walk(v, False)

        walk(schema, True)
        if not refs or nested_ids:  # nested $id change the base URI: checked while scoring
            return
        spec = referencing.jsonschema.specification_with(
            str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012)
        resource = spec.create_resource(schema)
        base = resource.id() or ""
        resolver = REGISTRY.combine(
            referencing.Registry().with_resource(base, resource)).resolver(base_uri=base)
        for ref in refs:
            try:
                resolver.lookup(ref)
            except referencing.exceptions.Unresolvable:
                raise self._unresolvable(ref) from None

    def _unresolvable(self, ref: str) -> ConfigError:
        return ConfigError(f"scorer '{self.name}': {self._where}: $ref {ref!r} does not "
                           "resolve within the schema",
                           hint="define it under $defs (e.g. \"$ref\": \"#/$defs/item\"); "
                                "other files and URLs are not fetched")

    def _check(self, text: str) -> tuple[str | None, bool]:
        from jsonschema.exceptions import best_match
        from referencing.exceptions import Unresolvable

        value, why = self._parse(text)
        if why is not None:
            return why, False
        try:
            err = best_match(self._validator.iter_errors(value))
        except Unresolvable as e:
            raise self._unresolvable(str(getattr(e, "ref", e))) from None
        if err is None:
            return None, True
        return f"schema: {err.json_path}: {shorten(err.message, 160)}", True


# --------------------------------------------------------------------------- numeric
class NumericOptions(ScorerOptions):
    """`kind: numeric`: the number in the output is within tolerance of the expected one."""

    expected: float | None = Field(default=None, allow_inf_nan=False)
    """A fixed expected number. When omitted, the number in the case's first good reference."""
    extract: Literal["first", "last", "only"] = "last"
    """Which number of the output to use; `only` fails outputs with several numbers."""
    abs_tol: float = Field(default=0.0, ge=0)
    """Absolute tolerance."""
    rel_tol: float = Field(default=1e-9, ge=0)
    """Relative tolerance (fraction of |expected|). Pass when |x - y| <= max(abs_tol, rel_tol*|y|)."""


def reference_number(text: str) -> float | None:
    """A reference as a number: the whole string, else its only number."""
    s = text.strip().replace(",", "").removeprefix("$").removesuffix("%").strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if math.isfinite(value):  # "nan" and "inf" are not numbers to compare with
            return value
    found = numbers(text)
    return found[0] if len(found) == 1 else None


class Numeric(BuiltinScorer):
    kind = "binary"
    options_model = NumericOptions

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        o = self.options
        for i in rows:
            if o.expected is not None:
                y = o.expected
            else:
                refs = batch.good[i]
                if not refs:
                    out.errors[i] = NO_GOOD_REFERENCE
                    continue
                ref_y = reference_number(refs[0])
                if ref_y is None:
                    out.errors[i] = f"reference {shorten(refs[0], 40)!r} is not one number"
                    continue
                y = ref_y
            found = numbers(batch.outputs[i])  # type: ignore[arg-type]
            if not found:
                out.values[i] = 0.0
                out.explanations[i] = "no number in output"
                continue
            if o.extract == "only" and len(found) > 1:
                out.values[i] = 0.0
                out.explanations[i] = f"{len(found)} numbers in output, expected one"
                continue
            x = found[0] if o.extract == "first" else found[-1]
            ok = math.isfinite(x) and abs(x - y) <= max(o.abs_tol, o.rel_tol * abs(y))
            out.values[i] = 1.0 if ok else 0.0
            out.explanations[i] = f"{x:g} vs expected {y:g}"
