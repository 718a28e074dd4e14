"""Custom scorers: a Python function registered by decorator, by YAML path or by entry point.

    import synthloop.scorers as ss

    @ss.scorer(name="polite", kind="binary")
    def polite(case, response):
        return "please" in (response.output or "").lower()

The function takes `(case: EvalCase, response: Response)` (plus any `params:` from the YAML
entry as keyword arguments) and returns a float, a bool, a `(value, explanation)` pair or a
`Score`; it may be `async`. With `batched=True` it takes lists of cases and responses and
returns a list of those. Decorating registers a scorer kind of the same name (`kind: polite` in
SCORERS.yaml once the module is imported, e.g. through the entry-point group
`synthloop.scorers`); `kind: python` + `function: module:func` works for any function,
decorated or not.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

from pydantic import Field

from synthloop.errors import ConfigError
from synthloop.registry import import_object, scorers
from synthloop.schema import EvalCase, Response, Score
from synthloop.scorers._base import (
    NO_OUTPUT,
    MetricKind,
    ScorerFactory,
    ScorerOptions,
    parse_options,
)

OnNoOutput = Literal["zero", "null", "call"]


class ScorerFunction:
    """A function made into a scorer kind by `@scorer`; still callable as the plain function."""

    def __init__(self, fn: Callable[..., Any], *, name: str, kind: MetricKind,
                 higher_is_better: bool, batched: bool) -> None:
        self.fn = fn
        self.name = name
        self.kind: MetricKind = kind
        self.higher_is_better = higher_is_better
        self.batched = batched
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def as_factory(self) -> ScorerFactory:
        """The registry factory for `kind: <name>` entries."""

        def factory(config: dict[str, Any], *, base_dir: Path) -> FunctionScorer:
            opts = parse_options(config, DecoratedOptions)
            return FunctionScorer(self.fn, name=opts.name, kind=self.kind,
                                  higher_is_better=self.higher_is_better, batched=self.batched,
                                  params=opts.params, on_no_output=opts.on_no_output,
                                  config=opts.model_dump(mode="json", exclude_none=True))

        return factory

    def __repr__(self) -> str:
        return f"<scorer {self.name} ({self.kind}) {self.__name__}>"


@overload
def scorer(fn: Callable[..., Any], /) -> ScorerFunction: ...


@overload
def scorer(*, name: str | None = None, kind: MetricKind = "continuous",
           higher_is_better: bool = True, batched: bool = False,
           register: bool = True) -> Callable[[Callable[..., Any]], ScorerFunction]: ...


def scorer(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
           kind: MetricKind = "continuous", higher_is_better: bool = True,
           batched: bool = False, register: bool = True
           ) -> ScorerFunction | Callable[[Callable[..., Any]], ScorerFunction]:
    """Make a function a scorer and register it as a scorer kind (default name: its own).

    `kind` is the metric kind (binary, continuous, ordinal); `higher_is_better` orients deltas;
    `batched=True` means the function scores lists of cases at once.
    """
    if kind not in ("binary", "continuous", "ordinal"):
        raise ValueError(f"kind must be binary, continuous or ordinal, not {kind!r}")

    def deco(f: Callable[..., Any]) -> ScorerFunction:
        sf = ScorerFunction(f, name=name or f.__name__, kind=kind,
                            higher_is_better=higher_is_better, batched=batched)
        if register:
            from synthloop.scorers import BUILTIN_KINDS

            if sf.name in BUILTIN_KINDS:
                raise ValueError(f"@scorer name '{sf.name}' is a built-in scorer kind; "
                                 "choose another name")
            scorers.register(sf.name, sf)
        return sf

    return deco(fn) if fn is not None else deco


class DecoratedOptions(ScorerOptions):
    """Options of a `kind: <decorated function name>` entry."""

    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to the function on every call."""
    on_no_output: OnNoOutput = "zero"
    """When the target returned no output: record 0 (`zero`), record null (`null`, left out
    of means), or call the function anyway (`call`; `response.output` is then None)."""


class PythonOptions(DecoratedOptions):
    """`kind: python`: any Python function `module:function`."""

    function: str
    """`package.module:function`, importable from PYTHONPATH or the directory of SCORERS.yaml."""
    metric_kind: MetricKind | None = None
    """binary, continuous or ordinal (default: the decorator's, else continuous)."""
    higher_is_better: bool | None = None
    """Direction of improvement (default: the decorator's, else true)."""
    batched: bool | None = None
    """The function takes lists of cases and responses (default: the decorator's, else false)."""


def python_factory(config: dict[str, Any], *, base_dir: Path) -> FunctionScorer:
    """Factory for `kind: python`."""
    opts = parse_options(config, PythonOptions)
    base = str(base_dir.resolve())
    if base not in sys.path:
        sys.path.append(base)
    try:
        obj = import_object(opts.function, what="function")
    except ConfigError as e:
        raise ConfigError(f"scorer '{opts.name}': function: {e}") from None
    if not callable(obj):
        raise ConfigError(f"scorer '{opts.name}': function: '{opts.function}' is not callable")
    if isinstance(obj, ScorerFunction):
        fn, kind, hib, batched = obj.fn, obj.kind, obj.higher_is_better, obj.batched
    else:
        fn, kind, hib, batched = obj, "continuous", True, False
    return FunctionScorer(
        fn, name=opts.name, kind=opts.metric_kind or kind,
        higher_is_better=hib if opts.higher_is_better is None else opts.higher_is_better,
        batched=batched if opts.batched is None else opts.batched,
        params=opts.params, on_no_output=opts.on_no_output,
        config=opts.model_dump(mode="json", exclude_none=True))


def coerce(result: Any, *, case_id: str, sample: int, metric: str, kind: MetricKind) -> Score:
    """A function's return value as a Score (bool → 0/1; (value, explanation); Score)."""
    if isinstance(result, Score):
        return result.model_copy(update={"case_id": case_id, "sample": sample,
                                         "metric": metric, "kind": kind})
    explanation: str | None = None
    if isinstance(result, tuple) and len(result) == 2:
        result, explanation = result
        explanation = None if explanation is None else str(explanation)
    if result is None:
        raise TypeError("scorer returned None (return a number, a bool or a Score)")
    if isinstance(result, bool):
        value = 1.0 if result else 0.0
    elif isinstance(result, int | float):
        value = float(result)
    else:
        try:
            value = float(result)  # numpy scalars
        except (TypeError, ValueError):
            raise TypeError(f"scorer returned {type(result).__name__}, expected a number, "
                            "a bool or a Score") from None
    return Score(case_id=case_id, sample=sample, metric=metric, value=value, kind=kind,
                 explanation=explanation)


class FunctionScorer:
    """A scorer backed by a plain (sync or async) Python function."""

    def __init__(self, fn: Callable[..., Any], *, name: str, kind: MetricKind,
                 higher_is_better: bool, batched: bool, params: dict[str, Any],
                 on_no_output: OnNoOutput, config: dict[str, Any]) -> None:
        self.fn = fn
        self.name = name
        self.kind: MetricKind = kind
        self.higher_is_better = higher_is_better
        self.params = params
        self.on_no_output = on_no_output
        self._config = config
        self.batched = batched
        if batched:
            self.score_many = self._score_many

    def describe(self) -> dict[str, Any]:
        return dict(self._config)

    def _no_output(self, response: Response) -> Score:
        text = f"{NO_OUTPUT}: {response.error_kind or 'error'}"
        if self.on_no_output == "null":
            return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                         kind=self.kind, explanation=text, error=text)
        return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                     value=0.0, kind=self.kind, explanation=text)

    def _coerce(self, result: Any, response: Response) -> Score:
        return coerce(result, case_id=response.case_id, sample=response.sample,
                      metric=self.name, kind=self.kind)

    def score(self, case: EvalCase, response: Response) -> Score | Awaitable[Score]:
        if response.output is None and self.on_no_output != "call":
            return self._no_output(response)
        if self.batched:
            many = self._score_many([case], [response])
            if inspect.isawaitable(many):
                return self._first(many)
            return many[0]
        result = self.fn(case, response, **self.params)
        if inspect.isawaitable(result):
            return self._await_one(result, response)
        return self._coerce(result, response)

    @staticmethod
    async def _first(many: Awaitable[list[Score]]) -> Score:
        return (await many)[0]

    async def _await_one(self, result: Awaitable[Any], response: Response) -> Score:
        return self._coerce(await result, response)

    def _score_many(self, cases: Sequence[EvalCase], responses: Sequence[Response]
                    ) -> list[Score] | Awaitable[list[Score]]:
        todo = [i for i, r in enumerate(responses)
                if r.output is not None or self.on_no_output == "call"]
        result = self.fn([cases[i] for i in todo], [responses[i] for i in todo], **self.params)
        if inspect.isawaitable(result):
            return self._await_many(result, todo, responses)
        return self._assemble(result, todo, responses)

    async def _await_many(self, result: Awaitable[Any], todo: list[int],
                          responses: Sequence[Response]) -> list[Score]:
        return self._assemble(await result, todo, responses)

    def _assemble(self, result: Any, todo: list[int], responses: Sequence[Response]
                  ) -> list[Score]:
        values = list(result)
        if len(values) != len(todo):
            raise ValueError(f"batched scorer returned {len(values)} results for "
                             f"{len(todo)} cases")
        out = [self._no_output(r) for r in responses]
        for i, v in zip(todo, values, strict=True):
            out[i] = self._coerce(v, responses[i])
        return out
