"""The scorer plugin contract, and the base class the built-in scorers share.

Contract (stable; plugins such as the feedback-model scorer implement against it):

* A scorer *kind* is registered in `synthloop.registry.scorers` (built-ins here, plugins with
  `scorers.register(...)`, the `@scorer` decorator or the entry-point group `synthloop.scorers`)
  and maps to a factory `factory(config: dict[str, Any], *, base_dir: Path) -> Scorer`.
  `config` is the YAML entry (with `name`, `kind` and the kind's options); the factory validates
  its own options (`parse_options(config, OptionsModel)` does it with a pydantic model) and
  raises `ConfigError` naming the field. `base_dir` is the directory of SCORERS.yaml, for
  relative paths in options.
* A `Scorer` has `name: str` (the metric name), `kind: "binary" | "continuous" | "ordinal"`
  and `score(case, response) -> Score | Awaitable[Score]`.
* Optional members, used when present:
  - `score_many(cases, responses) -> list[Score] | Awaitable[list[Score]]` (vectorised);
  - `score_batch(batch: ScoringBatch) -> BatchScores` (columnar fast path, no pydantic
    objects per case; the built-ins use it);
  - `higher_is_better: bool` (default True; recorded in scores.json so deltas are oriented);
  - `needs_baseline: bool` (the scorer needs `--baseline BASE_RUNDIR`);
  - `prepare(context: RunContext) -> None` (called once before scoring, with the run, its
    evalset, the baseline run and the response cache);
  - `describe() -> dict` (the config recorded in scores.json; secrets are removed anyway);
  - `usage() -> dict` (extra figures for scores.json, e.g. judge calls and tokens);
  - `summary_extra() -> dict` (extra keys merged into the metric's summary in scores.json);
  - `uses_cache: bool` (the runner opens the response cache and passes it in `prepare`);
  - `secret_env_vars: list[str]` (environment variables whose values must never be written);
  - `close()` / `aclose()` (release clients at the end).
* A scorer that raises on a case is recorded as that case's failure (value null, error set),
  never a crashed run. To stop the whole command (bad credentials, ...) raise a
  `synthloop.errors.SynthloopError` subclass.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from synthloop.config import validation_problems
from synthloop.errors import ConfigError
from synthloop.schema import EvalCase, References, Response, RunManifest, Score, Usage

if TYPE_CHECKING:
    from synthloop.evalsets import Evalset
    from synthloop.harness.cache import ResponseCache

M = TypeVar("M", bound=BaseModel)

MetricKind = Literal["binary", "continuous", "ordinal"]
METRIC_KINDS: tuple[str, ...] = ("binary", "continuous", "ordinal")

#: Prefix of the explanation (or error) recorded when the target returned no output.
NO_OUTPUT = "no output"


@runtime_checkable
class Scorer(Protocol):
    """One metric computed per (case, sample). See the module docstring for optional members."""

    name: str
    kind: MetricKind

    def score(self, case: EvalCase, response: Response) -> Score | Awaitable[Score]: ...


ScorerFactory = Callable[..., Scorer]
"""`factory(config: dict[str, Any], *, base_dir: Path) -> Scorer`."""


# --------------------------------------------------------------------------- options
class ScorerOptions(BaseModel):
    """Base of every built-in scorer's options: the keys every SCORERS.yaml entry has."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """Metric name recorded in scores.parquet (unique within a SCORERS.yaml)."""
    kind: str
    """Scorer kind, e.g. `exact_match`, `token_f1`, `llm_judge`, `python`."""
    description: str | None = None
    """Free text recorded with the scorer's config in scores.json."""


def parse_options(config: dict[str, Any], model: type[M]) -> M:
    """Validate a scorer's YAML entry into `model`; one ConfigError listing every problem.

    Problems read `field: what is wrong (hint)`; the score runner prefixes them with the file
    and the entry (`SCORERS.yaml: scorers[2] 'fmt': pattern: required field is missing`).
    """
    try:
        return model.model_validate(config)
    except ValidationError as e:
        marker = "\x00"
        problems = [p.removeprefix(f"{marker}: ")
                    for p in validation_problems(e, model, marker)]
        name = config.get("name", "?")
        head = (f"scorer '{name}': {problems[0]}" if len(problems) == 1
                else f"scorer '{name}': {len(problems)} problems")
        raise ConfigError(head, problems=problems) from None


# --------------------------------------------------------------------------- run context
@dataclass
class BaselineRun:
    """The baseline run for pairwise scorers: its path, manifest and responses by (case, sample)."""

    path: Path
    manifest: RunManifest
    responses: dict[tuple[str, int], Response]

    def get(self, case_id: str, sample: int) -> Response | None:
        r = self.responses.get((case_id, sample))
        if r is None and sample != 0:
            r = self.responses.get((case_id, 0))
        return r


@dataclass
class RunContext:
    """What a scorer's optional `prepare(context)` hook receives."""

    rundir: Path
    manifest: RunManifest
    evalset: Evalset
    baseline: BaselineRun | None = None
    cache: ResponseCache | None = None
    concurrency: int = 16


# --------------------------------------------------------------------------- batches
class ScoringBatch:
    """Aligned columns for a slice of a run: row i is response i and its case.

    Plain Python lists (no pydantic objects), so simple scorers run at list speed. The
    response columns are lists; the case columns `inputs`, `good` and `bad` are read on first
    use (a scorer that never looks at references never pays for them); `cases()` /
    `responses()` build the pydantic objects on demand.
    """

    def __init__(
        self,
        *,
        case_ids: list[str],
        samples: list[int],
        outputs: list[str | None],
        errors: list[str | None],
        error_kinds: list[str | None],
        latency_ms: list[float | None],
        prompt_tokens: list[int],
        completion_tokens: list[int],
        inputs: list[str] | None = None,
        good: list[list[str]] | None = None,
        bad: list[list[str]] | None = None,
        case_columns: Callable[[str], list[Any]] | None = None,
        case_loader: Callable[[], list[EvalCase]] | None = None,
    ) -> None:
        self.case_ids = case_ids
        self.samples = samples
        self.outputs = outputs
        self.errors = errors
        self.error_kinds = error_kinds
        self.latency_ms = latency_ms
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self._inputs = inputs
        self._good = good
        self._bad = bad
        self._case_columns = case_columns
        self._case_loader = case_loader
        self._cases: list[EvalCase] | None = None
        self._responses: list[Response] | None = None
        self._output_tokens: list[list[str]] | None = None
        self._good_tokens: list[list[list[str]]] | None = None
        self._bad_tokens: list[list[list[str]]] | None = None

    def __len__(self) -> int:
        return len(self.case_ids)

    def _column(self, name: str) -> list[Any]:
        if self._case_columns is None:
            raise RuntimeError(f"batch has no case column {name!r}")
        return self._case_columns(name)

    @property
    def inputs(self) -> list[str]:
        """The cases' current user inputs."""
        if self._inputs is None:
            self._inputs = self._column("input")
        return self._inputs

    @property
    def good(self) -> list[list[str]]:
        """The cases' good references (empty lists when none)."""
        if self._good is None:
            self._good = [g or [] for g in self._column("references_good")]
        return self._good

    @property
    def bad(self) -> list[list[str]]:
        """The cases' bad references (empty lists when none)."""
        if self._bad is None:
            self._bad = [b or [] for b in self._column("references_bad")]
        return self._bad

    def output_tokens(self) -> list[list[str]]:
        """Word tokens of each output (empty for no output), computed once per batch."""
        if self._output_tokens is None:
            from synthloop.scorers._text import tokens

            self._output_tokens = [tokens(o) if o is not None else [] for o in self.outputs]
        return self._output_tokens

    def good_tokens(self) -> list[list[list[str]]]:
        """Word tokens of each case's good references, computed once per batch."""
        if self._good_tokens is None:
            from synthloop.scorers._text import tokens

            self._good_tokens = [[tokens(r) for r in refs] for refs in self.good]
        return self._good_tokens

    def bad_tokens(self) -> list[list[list[str]]]:
        """Word tokens of each case's bad references, computed once per batch."""
        if self._bad_tokens is None:
            from synthloop.scorers._text import tokens

            self._bad_tokens = [[tokens(r) for r in refs] for refs in self.bad]
        return self._bad_tokens

    def cases(self) -> list[EvalCase]:
        if self._cases is None:
            if self._case_loader is None:
                self._cases = [
                    EvalCase(case_id=c, input=i, references=References(good=g, bad=b))
                    for c, i, g, b in zip(self.case_ids, self.inputs, self.good, self.bad,
                                          strict=True)
                ]
            else:
                self._cases = self._case_loader()
        return self._cases

    def responses(self) -> list[Response]:
        if self._responses is None:
            self._responses = [
                Response(case_id=c, sample=s, output=o, error=e, error_kind=k, latency_ms=lat,
                         usage=Usage(prompt_tokens=p, completion_tokens=q))
                for c, s, o, e, k, lat, p, q in zip(
                    self.case_ids, self.samples, self.outputs, self.errors, self.error_kinds,
                    self.latency_ms, self.prompt_tokens, self.completion_tokens, strict=True)
            ]
        return self._responses

    def no_output_text(self, i: int) -> str:
        return f"{NO_OUTPUT}: {self.error_kinds[i] or 'error'}"

    @classmethod
    def from_objects(cls, cases: Sequence[EvalCase], responses: Sequence[Response]) -> ScoringBatch:
        """A batch from pydantic objects (used by `score(case, response)` on built-ins)."""
        batch = cls(
            case_ids=[r.case_id for r in responses],
            samples=[r.sample for r in responses],
            outputs=[r.output for r in responses],
            errors=[r.error for r in responses],
            error_kinds=[r.error_kind for r in responses],
            latency_ms=[r.latency_ms for r in responses],
            prompt_tokens=[r.usage.prompt_tokens for r in responses],
            completion_tokens=[r.usage.completion_tokens for r in responses],
            inputs=[c.input for c in cases],
            good=[list(c.references.good) for c in cases],
            bad=[list(c.references.bad) for c in cases],
        )
        batch._cases = list(cases)
        batch._responses = list(responses)
        return batch


@dataclass
class BatchScores:
    """One metric's results for a batch, aligned with its rows."""

    values: list[float | None]
    explanations: list[str | None]
    errors: list[str | None]

    @classmethod
    def empty(cls, n: int) -> BatchScores:
        return cls([None] * n, [None] * n, [None] * n)

    def __len__(self) -> int:
        return len(self.values)


def error_text(exc: BaseException, limit: int = 500) -> str:
    """A one-line `Type: message` for a recorded failure."""
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_value(value: float | None, kind: str) -> str | None:
    """Why a value cannot be recorded for a metric of `kind`, or None when it is fine."""
    if value is None:
        return None
    if not math.isfinite(value):
        return f"non-finite value {value!r}"
    if kind == "binary" and value not in (0.0, 1.0):
        return f"binary scorer returned {value!r} (expected 0 or 1)"
    return None


# --------------------------------------------------------------------------- built-in base
class BuiltinScorer:
    """Base of the built-in, synchronous, columnar scorers.

    Subclasses set `kind`, `higher_is_better`, `no_output_value` (recorded with the explanation
    `no output: <error_kind>` when the target returned no output; None records a null with that
    text as the error) and implement `_score_rows(batch, rows, out)` for rows with output.
    """

    kind: MetricKind = "continuous"
    higher_is_better: bool = True
    no_output_value: float | None = 0.0
    options_model: type[ScorerOptions] = ScorerOptions

    def __init__(self, options: Any, base_dir: Path | None = None) -> None:
        self.options = options
        self.name: str = options.name
        self.base_dir = base_dir or Path.cwd()

    @classmethod
    def from_config(cls, config: dict[str, Any], *, base_dir: Path) -> BuiltinScorer:
        """The registry factory: validate the YAML entry, then build."""
        return cls(parse_options(config, cls.options_model), base_dir)

    def describe(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.options.model_dump(mode="json", exclude_none=True,
                                                         by_alias=True)
        return dumped

    def score_batch(self, batch: ScoringBatch) -> BatchScores:
        out = BatchScores.empty(len(batch))
        rows: list[int] = []
        nov = self.no_output_value
        for i, o in enumerate(batch.outputs):
            if o is None:
                text = batch.no_output_text(i)
                out.values[i] = nov
                out.explanations[i] = text
                if nov is None:
                    out.errors[i] = text
            else:
                rows.append(i)
        if rows:
            self._score_rows(batch, rows, out)
        return out

    def _score_rows(self, batch: ScoringBatch, rows: list[int], out: BatchScores) -> None:
        raise NotImplementedError

    def score(self, case: EvalCase, response: Response) -> Score:
        r = self.score_batch(ScoringBatch.from_objects([case], [response]))
        return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                     value=r.values[0], kind=self.kind, explanation=r.explanations[0],
                     error=r.errors[0])


def as_factory(obj: Any, kind_name: str) -> ScorerFactory:
    """A registry entry as a factory: a factory function, a Scorer class or a `@scorer` function."""
    factory = getattr(obj, "as_factory", None)
    if callable(factory):
        return factory()  # type: ignore[no-any-return]
    if callable(obj):
        return obj  # type: ignore[no-any-return]
    raise ConfigError(f"scorer kind '{kind_name}' is registered to {obj!r}, which is not a "
                      "factory(config, *, base_dir) -> Scorer")
