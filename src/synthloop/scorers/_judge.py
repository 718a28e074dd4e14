"""LLM judges through any OpenAI-compatible endpoint (the `openai` client).

* `llm_judge` (pointwise): grades each reply against a rubric → binary, ordinal (min..max) or
  continuous (0..1) score, with the judge's reasoning as the explanation.
* `llm_pairwise`: baseline vs candidate reply to the same case, judged in BOTH orders (A/B and
  B/A) to cancel position bias → 1 candidate better, 0 worse, 0.5 tie (mean of the two orders
  by default, so one win and one tie is 0.75; `combine: strict` gives 0.5 unless both agree).

Verdicts are requested as structured output (`response_format` json_schema by default),
validated with pydantic, and re-asked a bounded number of times when invalid. Requests run
under a concurrency limit with tenacity retries on transient errors (429 honouring
Retry-After, 5xx, timeouts, connection errors). Valid verdicts are cached in the response cache
under a key over the endpoint, model, messages and parameters (never the API key), so re-scoring
never pays twice. A judge that still fails records the case's score as null with the error;
rejected credentials (401/403) or an unknown model/route (404) stop the command instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synthloop.errors import ConfigError
from synthloop.harness.cache import ResponseCache, make_key
from synthloop.llm_client import (
    RetryPolicy,
    api_key_from_env,
    create_completion,
    error_kind,
    fatal_error,
    is_transient,
    open_client,
    parse_structured,
    reask_messages,
    redact,
    response_format,
    secret_values,
    usage_tokens,
)
from synthloop.schema import EvalCase, Response, Score
from synthloop.scorers._base import (
    NO_OUTPUT,
    BaselineRun,
    MetricKind,
    RunContext,
    ScorerOptions,
    parse_options,
)
from synthloop.scorers._text import shorten

CACHE_NAMESPACE = "synthloop-judge/1"
_LOCAL_KEY = "sk-no-key-needed"
MAX_ECHO_CHARS = 4000
"""An invalid verdict is echoed back in a re-ask up to this many characters."""

# --------------------------------------------------------------------------- prompts
POINTWISE_SYSTEM = (
    "You are an impartial evaluator of an AI assistant's replies. Grade the reply to the "
    "user's last message against the rubric, judging only what the rubric asks. Think "
    "briefly, then answer with one JSON object "
    '{"reasoning": "<one or two sentences>", "score": <score>} and nothing else.'
)
POINTWISE_TEMPLATE = """\
{% if history %}## Conversation so far
{% for m in history %}{{ m.role }}: {{ m.content }}
{% endfor %}
{% endif %}## User message
{{ input }}
{% if context %}
## Context given to the assistant
{{ context }}
{% endif %}{% if references_good %}
## Reference answer(s) known to be good
{% for r in references_good %}- {{ r }}
{% endfor %}{% endif %}{% if references_bad %}
## Answer(s) known to be bad
{% for r in references_bad %}- {{ r }}
{% endfor %}{% endif %}
## Reply to grade
{{ output }}

## Rubric
{{ rubric }}

## Score
{{ scale_text }}
"""
PAIRWISE_SYSTEM = (
    "You are an impartial evaluator comparing two replies, A and B, of AI assistants to the "
    "same user message. Judge only by the criteria; the order of the replies and their "
    "length must not influence you. Think briefly, then answer with one JSON object "
    '{"reasoning": "<one or two sentences>", "winner": "A" | "B"%s} and nothing else.'
)
PAIRWISE_TEMPLATE = """\
{% if history %}## Conversation so far
{% for m in history %}{{ m.role }}: {{ m.content }}
{% endfor %}
{% endif %}## User message
{{ input }}
{% if context %}
## Context given to the assistants
{{ context }}
{% endif %}{% if references_good %}
## Reference answer(s) known to be good
{% for r in references_good %}- {{ r }}
{% endfor %}{% endif %}
## Reply A
{{ output_a }}

## Reply B
{{ output_b }}

## Criteria
{{ criteria }}

## Verdict
{{ verdict_text }}
"""


def _compile(source: str, what: str) -> Any:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{what}: invalid template (line {e.lineno}): {e.message}") from None


# --------------------------------------------------------------------------- options
class JudgeOptions(ScorerOptions):
    """Options shared by `llm_judge` and `llm_pairwise`."""

    model: str
    """Judge model name sent to the endpoint."""
    base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible endpoint (usually ends in /v1)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (local 127.0.0.1 endpoints need none; null
    sends a placeholder). The key itself never appears in a config, log, cache or output."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (values of secret-looking names are removed from scores.json)."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """Sampling temperature of the judge."""
    max_tokens: int = Field(default=512, ge=1)
    """Maximum tokens of a verdict."""
    seed: int | None = 0
    """Seed sent with each request (null sends none)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Extra request parameters (e.g. top_p), part of the cache key."""
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How to ask for JSON: `json_schema` (strict schema), `json_object`, or `none` (prompt only,
    for servers without response_format)."""
    system_prompt: str | None = None
    """Replaces the default system prompt."""
    template: str | None = None
    """Jinja2 template of the user message (replaces the default; see docs/scorers.md)."""
    include_references: bool = True
    """Show the case's references to the judge."""
    include_history: bool = True
    """Show the conversation's prior turns to the judge."""
    concurrency: int = Field(default=8, ge=1)
    """Judge requests in flight at once."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Per-request timeout, seconds."""
    max_retries: int = Field(default=4, ge=0)
    """Retries of a request on transient errors (429, 5xx, timeouts, connection errors)."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry wait, seconds (doubles each retry, at most 30 s; Retry-After wins)."""
    reask: int = Field(default=2, ge=0)
    """Re-asks when a verdict is not valid JSON for the schema."""
    cache: bool = True
    """Cache valid verdicts in the response cache (re-scoring then costs nothing)."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        p = urlparse(v)
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000/v1")
        return v.rstrip("/")


class PointwiseOptions(JudgeOptions):
    """`kind: llm_judge`: grade each reply against a rubric."""

    rubric: str
    """What the judge checks, in plain words."""
    scale: Literal["binary", "ordinal", "continuous"] = "ordinal"
    """binary (0/1), ordinal (integers min..max) or continuous (0.0..1.0)."""
    min: int = 1
    """Lowest ordinal score (the worst)."""
    max: int = 5
    """Highest ordinal score (the best)."""

    @field_validator("max")
    @classmethod
    def _range(cls, v: int, info: Any) -> int:
        lo = info.data.get("min", 1)
        if v <= lo:
            raise ValueError(f"must be greater than min ({lo})")
        return v


class PairwiseOptions(JudgeOptions):
    """`kind: llm_pairwise`: baseline vs candidate reply, judged in both orders."""

    criteria: str = ("Which reply answers the user's message better: more correct, more "
                     "helpful, clearer?")
    """What makes a reply better, in plain words."""
    allow_tie: bool = True
    """Let the judge answer `tie`."""
    combine: Literal["mean", "strict"] = "mean"
    """How the two orders combine: `mean` of the per-order scores (1 win, 0.5 tie, 0 loss), or
    `strict` (1 or 0 only when both orders agree, else 0.5)."""


# --------------------------------------------------------------------------- verdicts
class PointwiseVerdict(BaseModel):
    """A pointwise judge's structured answer."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str
    """Why, in one or two sentences."""
    score: float
    """The grade on the configured scale."""


class PairwiseVerdict(BaseModel):
    """A pairwise judge's structured answer."""

    model_config = ConfigDict(extra="forbid")
    reasoning: str
    """Why, in one or two sentences."""
    winner: Literal["A", "B", "tie"]
    """The better reply, or tie."""


class InvalidVerdict(ValueError):
    """The judge's reply is not a valid verdict (re-asked, then recorded)."""


class JudgeFailed(Exception):
    """A judge request failed after its retries (recorded as the case's failure)."""


@dataclass
class JudgeUsage:
    """What the judge cost: requests, cache hits, tokens, retries and re-asks."""

    verdicts: int = 0
    cached: int = 0
    requests: int = 0
    retries: int = 0
    reasks: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"verdicts": self.verdicts, "cached": self.cached, "requests": self.requests,
                "retries": self.retries, "reasks": self.reasks, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "errors": dict(self.errors)}


class _JudgeBase:
    """Endpoint, retries, structured output, re-asks and caching shared by both judges."""

    higher_is_better = True
    verdict_model: type[BaseModel] = PointwiseVerdict

    def __init__(self, options: JudgeOptions, base_dir: Path) -> None:
        self.options = options
        self.name = options.name
        self.base_dir = base_dir
        self.secret_env_vars = [options.api_key_env] if options.api_key_env else []
        self._api_key = self._resolve_key()
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        self.cache: ResponseCache | None = None
        self.stats = JudgeUsage()
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        """Requests being asked now, by cache key: an identical request (repeated samples with
        the same reply) waits for that verdict instead of paying again."""

    # -- setup
    def _resolve_key(self) -> str:
        env = self.options.api_key_env
        key = api_key_from_env(env, self.options.base_url, placeholder=_LOCAL_KEY)
        if key is not None:
            return key
        raise ConfigError(f"api_key_env: environment variable {env} is not set",
                          hint=f"export {env}=... (local 127.0.0.1 endpoints need none; "
                               "`api_key_env: null` sends no key)")

    @property
    def uses_cache(self) -> bool:
        """The runner opens the response cache only for scorers that use it."""
        return bool(self.options.cache)

    def prepare(self, context: RunContext) -> None:
        self.cache = context.cache if self.options.cache else None

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = self.options.model_dump(mode="json", exclude_none=True)
        return d

    def usage(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = open_client(base_url=self.options.base_url, api_key=self._api_key,
                                       timeout_s=self.options.timeout_s,
                                       headers=self.options.headers)
            self._sem = asyncio.Semaphore(self.options.concurrency)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- requests
    def _response_format(self) -> dict[str, Any] | None:
        return response_format(self.options.structured_output, self.verdict_name,
                               self.verdict_schema())

    verdict_name = "verdict"

    def verdict_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def request_params(self) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {"temperature": o.temperature, "max_tokens": o.max_tokens}
        if o.seed is not None:
            params["seed"] = o.seed
        rf = self._response_format()
        if rf is not None:
            params["response_format"] = rf
        params.update(o.params)
        return params

    def cache_key(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        """Content address of a verdict request: endpoint, model, messages, params (no key)."""
        return make_key(CACHE_NAMESPACE, self.options.base_url, self.options.model, messages,
                        params)

    async def _create(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Any:
        import openai

        o = self.options
        client = self._get_client()
        assert self._sem is not None
        try:
            async with self._sem:
                return await create_completion(
                    client, {"model": o.model, "messages": messages, **params},
                    policy=RetryPolicy(o.max_retries, o.backoff_s), counters=self.stats)
        except openai.BadRequestError as e:
            raise JudgeFailed(
                f"HTTP 400: {shorten(self._mask(str(e.message)), 200)} (if the server does not "
                "support json_schema output, set structured_output: json_object or none)"
            ) from None
        except Exception as e:
            fatal = fatal_error(e, source=f"judge '{self.name}'", base_url=o.base_url,
                                model=o.model, api_key_env=o.api_key_env)
            if fatal is not None:
                raise fatal from None
            if is_transient(e) or isinstance(e, openai.APIStatusError):
                raise JudgeFailed(f"{error_kind(e)} after {o.max_retries + 1} attempts: "
                                  f"{shorten(self._mask(str(e)), 200)}") from None
            raise

    def _mask(self, text: str) -> str:
        """`text` (a server's error message) with the key and header values masked."""
        return redact(text, secret_values(self._api_key, self.options.headers))

    def parse(self, content: str | None) -> BaseModel:
        """Validate a reply as a verdict; raises InvalidVerdict with a short, model-readable
        message."""
        try:
            verdict = parse_structured(content, self.verdict_model,
                                       prevalidate=self.prevalidate)
        except ValueError as e:
            raise InvalidVerdict(str(e)) from None
        self.check(verdict)
        return verdict

    def prevalidate(self, data: Any) -> Any:
        return data

    def check(self, verdict: Any) -> None:
        return None

    async def verdict(self, messages: list[dict[str, str]]) -> tuple[Any, bool]:
        """A valid verdict for `messages` (cached, retried, re-asked); (verdict, cached)."""
        params = self.request_params()
        key = self.cache_key(messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                try:
                    v = self.verdict_model.model_validate(hit["verdict"])
                    self.check(v)
                    self.stats.cached += 1
                    self.stats.verdicts += 1
                    return v, True
                except (ValidationError, KeyError, TypeError, InvalidVerdict):
                    pass  # an entry from another version of the schema: ask again
            pending = self._inflight.get(key)
            if pending is not None:
                v = await asyncio.shield(pending)
                self.stats.cached += 1
                self.stats.verdicts += 1
                return v, True
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._inflight[key] = fut
            try:
                v, _ = await self._ask(messages, params, key)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning without waiters
                raise
            else:
                fut.set_result(v)
            finally:
                self._inflight.pop(key, None)
            return v, False
        return await self._ask(messages, params, key)

    async def _ask(self, messages: list[dict[str, str]], params: dict[str, Any], key: str
                   ) -> tuple[Any, bool]:
        """Ask the judge (re-asking invalid verdicts) and cache the valid verdict."""
        convo = list(messages)
        why = ""
        for attempt in range(self.options.reask + 1):
            if attempt:
                self.stats.reasks += 1
            completion = await self._create(convo, params)
            pt, ct = usage_tokens(completion)
            self.stats.prompt_tokens += pt
            self.stats.completion_tokens += ct
            content = completion.choices[0].message.content
            try:
                v = self.parse(content)
            except InvalidVerdict as e:
                why = str(e)
                convo = reask_messages(convo, content, why, max_echo=MAX_ECHO_CHARS)
                continue
            self.stats.verdicts += 1
            if self.cache is not None:
                self.cache.put(key, {"verdict": v.model_dump(mode="json"),
                                     "prompt_tokens": pt, "completion_tokens": ct})
            return v, False
        raise JudgeFailed(f"invalid verdict after {self.options.reask + 1} replies: {why}")

    # -- prompt context
    def _context(self, case: EvalCase) -> dict[str, Any]:
        o = self.options
        return {
            "case_id": case.case_id,
            "input": case.input,
            "context": case.context,
            "history": [m.model_dump() for m in case.history] if o.include_history else [],
            "references_good": list(case.references.good) if o.include_references else [],
            "references_bad": list(case.references.bad) if o.include_references else [],
            "tags": dict(case.tags),
        }

    def _fail(self, response: Response, message: str) -> Score:
        self.stats.failures += 1
        return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                     kind=self.kind, error=message)

    kind: MetricKind = "ordinal"


_DUMMY_CASE = EvalCase(case_id="c", input="hello", context="ctx",
                       references={"good": ["good"], "bad": ["bad"]})  # type: ignore[arg-type]


class PointwiseJudge(_JudgeBase):
    """`llm_judge`: one verdict per reply on a rubric scale."""

    verdict_model = PointwiseVerdict
    options: PointwiseOptions

    def __init__(self, options: PointwiseOptions, base_dir: Path) -> None:
        super().__init__(options, base_dir)
        self.kind = options.scale
        if options.scale == "binary":
            self.lo, self.hi = 0.0, 1.0
            self.scale_text = ("1 if the reply satisfies the rubric, 0 if it does not "
                               "(the integer 0 or 1).")
        elif options.scale == "ordinal":
            self.lo, self.hi = float(options.min), float(options.max)
            self.scale_text = (f"An integer from {options.min} (worst) to {options.max} "
                               "(best).")
        else:
            self.lo, self.hi = 0.0, 1.0
            self.scale_text = "A number from 0.0 (worst) to 1.0 (best)."
        self.no_output_value = self.lo
        self.system = options.system_prompt or POINTWISE_SYSTEM
        self.template = _compile(options.template or POINTWISE_TEMPLATE, "template")
        try:
            self.render(_DUMMY_CASE, "a reply")
        except Exception as e:  # jinja2.UndefinedError and friends
            raise ConfigError(f"template: {e}",
                              hint="variables: input, output, history, context, "
                                   "references_good, references_bad, rubric, scale_text, "
                                   "tags, case_id") from None

    def verdict_schema(self) -> dict[str, Any]:
        if self.kind == "binary":
            score: dict[str, Any] = {"type": "integer", "enum": [0, 1]}
        elif self.kind == "ordinal":
            score = {"type": "integer", "minimum": int(self.lo), "maximum": int(self.hi)}
        else:
            score = {"type": "number", "minimum": 0, "maximum": 1}
        return {"type": "object",
                "properties": {"reasoning": {"type": "string"}, "score": score},
                "required": ["reasoning", "score"], "additionalProperties": False}

    def prevalidate(self, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("score"), bool):
            return {**data, "score": int(data["score"])}
        return data

    def check(self, verdict: Any) -> None:
        s = float(verdict.score)
        if not self.lo <= s <= self.hi:
            raise InvalidVerdict(f"score {s:g} is outside {self.lo:g}..{self.hi:g}")
        if self.kind != "continuous" and s != int(s):
            raise InvalidVerdict(f"score {s:g} must be an integer")

    def render(self, case: EvalCase, output: str) -> list[dict[str, str]]:
        ctx = self._context(case)
        ctx.update(output=output, rubric=self.options.rubric, scale_text=self.scale_text)
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.template.render(**ctx)}]

    async def score(self, case: EvalCase, response: Response) -> Score:
        if response.output is None:
            text = f"{NO_OUTPUT}: {response.error_kind or 'error'}"
            return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                         value=self.no_output_value, kind=self.kind, explanation=text)
        try:
            v, _ = await self.verdict(self.render(case, response.output))
        except JudgeFailed as e:
            return self._fail(response, f"judge failed: {e}")
        return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                     value=float(v.score), kind=self.kind,
                     explanation=shorten(v.reasoning, 500))


class PairwiseJudge(_JudgeBase):
    """`llm_pairwise`: candidate vs baseline reply, judged in both orders."""

    verdict_model = PairwiseVerdict
    needs_baseline = True
    options: PairwiseOptions

    def __init__(self, options: PairwiseOptions, base_dir: Path) -> None:
        super().__init__(options, base_dir)
        self.kind = "ordinal"
        self.baseline: BaselineRun | None = None
        self.system = options.system_prompt or (
            PAIRWISE_SYSTEM % (' | "tie"' if options.allow_tie else ""))
        self.verdict_text = ('Answer "A" or "B" for the better reply, or "tie" when they are '
                             'equally good.' if options.allow_tie
                             else 'Answer "A" or "B" for the better reply.')
        self.template = _compile(options.template or PAIRWISE_TEMPLATE, "template")
        self.outcomes = {"candidate_better": 0, "baseline_better": 0, "tie": 0,
                         "inconsistent": 0, "first_position_wins": 0,
                         "second_position_wins": 0}
        try:
            self.render(_DUMMY_CASE, "reply a", "reply b")
        except Exception as e:
            raise ConfigError(f"template: {e}",
                              hint="variables: input, output_a, output_b, history, context, "
                                   "references_good, references_bad, criteria, "
                                   "verdict_text, tags, case_id") from None

    def prepare(self, context: RunContext) -> None:
        super().prepare(context)
        self.baseline = context.baseline

    def summary_extra(self) -> dict[str, Any]:
        return {"null_value": 0.5,
                "baseline": None if self.baseline is None else str(self.baseline.path),
                "outcomes": dict(self.outcomes)}

    def verdict_schema(self) -> dict[str, Any]:
        options = ["A", "B", "tie"] if self.options.allow_tie else ["A", "B"]
        return {"type": "object",
                "properties": {"reasoning": {"type": "string"},
                               "winner": {"type": "string", "enum": options}},
                "required": ["reasoning", "winner"], "additionalProperties": False}

    def prevalidate(self, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("winner"), str):
            w = data["winner"].strip()
            w = {"a": "A", "b": "B", "tie": "tie", "TIE": "tie", "Tie": "tie"}.get(w, w)
            return {**data, "winner": w}
        return data

    def check(self, verdict: Any) -> None:
        if verdict.winner == "tie" and not self.options.allow_tie:
            raise InvalidVerdict('winner must be "A" or "B" (no ties)')

    def render(self, case: EvalCase, a: str, b: str) -> list[dict[str, str]]:
        ctx = self._context(case)
        ctx.update(output_a=a, output_b=b, criteria=self.options.criteria,
                   verdict_text=self.verdict_text)
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.template.render(**ctx)}]

    def _value(self, response: Response, value: float, explanation: str) -> Score:
        return Score(case_id=response.case_id, sample=response.sample, metric=self.name,
                     value=value, kind=self.kind, explanation=explanation)

    async def score(self, case: EvalCase, response: Response) -> Score:
        if self.baseline is None:
            raise ConfigError(f"scorer '{self.name}' needs a baseline run",
                              hint="pass --baseline BASE_RUNDIR")
        base = self.baseline.get(response.case_id, response.sample)
        if base is None:
            return self._fail(response, "no baseline response for this case")
        cand_out, base_out = response.output, base.output
        if cand_out is None and base_out is None:
            return self._value(response, 0.5, f"{NO_OUTPUT}: both runs failed")
        if cand_out is None:
            self.outcomes["baseline_better"] += 1
            return self._value(response, 0.0,
                               f"{NO_OUTPUT}: {response.error_kind or 'error'} (candidate)")
        if base_out is None:
            self.outcomes["candidate_better"] += 1
            return self._value(response, 1.0,
                               f"baseline had {NO_OUTPUT}: {base.error_kind or 'error'}")
        if cand_out.strip() == base_out.strip():
            self.outcomes["tie"] += 1
            return self._value(response, 0.5, "identical replies")
        try:
            (v1, _), (v2, _) = await asyncio.gather(
                self.verdict(self.render(case, base_out, cand_out)),   # candidate is B
                self.verdict(self.render(case, cand_out, base_out)))   # candidate is A
        except JudgeFailed as e:
            return self._fail(response, f"judge failed: {e}")
        s1 = {"B": 1.0, "A": 0.0, "tie": 0.5}[v1.winner]
        s2 = {"A": 1.0, "B": 0.0, "tie": 0.5}[v2.winner]
        for w in (v1.winner, v2.winner):
            if w == "A":
                self.outcomes["first_position_wins"] += 1
            elif w == "B":
                self.outcomes["second_position_wins"] += 1
        strict = self.options.combine == "strict"
        value = (s1 if s1 == s2 else 0.5) if strict else (s1 + s2) / 2
        if s1 == s2:
            self.outcomes[{1.0: "candidate_better", 0.0: "baseline_better",
                           0.5: "tie"}[s1]] += 1
        else:
            self.outcomes["inconsistent"] += 1
        label = {1.0: "candidate", 0.0: "baseline", 0.5: "tie"}
        explanation = (f"baseline=A,candidate=B: {label[s1]} ({shorten(v1.reasoning, 200)}); "
                       f"candidate=A,baseline=B: {label[s2]} ({shorten(v2.reasoning, 200)})")
        return self._value(response, value, explanation)


def pointwise_factory(config: dict[str, Any], *, base_dir: Path) -> PointwiseJudge:
    return PointwiseJudge(parse_options(config, PointwiseOptions), base_dir)


def pairwise_factory(config: dict[str, Any], *, base_dir: Path) -> PairwiseJudge:
    return PairwiseJudge(parse_options(config, PairwiseOptions), base_dir)


def judge_messages(scorer: PointwiseJudge | PairwiseJudge, case: EvalCase,
                   outputs: Sequence[str]) -> list[dict[str, str]]:
    """The messages a judge would send (for `--dry-run`-style inspection and tests)."""
    if isinstance(scorer, PointwiseJudge):
        return scorer.render(case, outputs[0])
    return scorer.render(case, outputs[0], outputs[1])
