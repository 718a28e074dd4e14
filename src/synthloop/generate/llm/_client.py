"""An OpenAI-compatible chat client for generation: structured output with validation and
bounded repair, tenacity retries honouring `Retry-After`, a concurrency limit, the shared
response cache, token and cost accounting, and a cost budget.

Shared by the LLM generator and the simulated user (`synthloop.simulate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from synthloop.errors import TargetError
from synthloop.generate.llm._spec import EndpointConfig, Pricing
from synthloop.harness.cache import ResponseCache, make_key

M = TypeVar("M", bound=BaseModel)

CACHE_NAMESPACE = "synthloop.generate.llm/1"
MAX_ECHO_CHARS = 2000
"""An invalid reply is echoed back in a repair request up to this many characters."""
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_DUMMY_KEY = "synthloop-local-no-key"

_REFUSAL_RE = re.compile(
    r"^\s*(?:i[’']m sorry|i am sorry|sorry, (?:but )?i|i can(?:not|[’']t) (?:help|assist|"
    r"comply|provide|do that|write|create|generate|fulfil)|i (?:won[’']t|will not) "
    r"(?:help|assist|write|create|generate)|as an ai\b|i[’']m (?:not able|unable) to|"
    r"i am (?:not able|unable) to|unfortunately,? i (?:can(?:not|[’']t)|am unable))",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def looks_like_refusal(text: str | None) -> bool:
    """True when text opens like a model refusal ("I'm sorry, but I can't ...")."""
    return bool(text) and bool(_REFUSAL_RE.match(text or ""))


class BudgetExceeded(Exception):
    """The next request could exceed the cost budget; no request was sent."""


class TransientReplyError(Exception):
    """A 200 reply that is unusable (no choices, garbled body): retried like a 5xx."""


class RequestFailed(Exception):
    """One logical request failed after its retry budget (transport errors)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Stats:
    """Counters over one client's life. `requests` counts HTTP attempts actually sent."""

    requests: int = 0
    """HTTP requests sent (first attempts and retries)."""
    retries: int = 0
    """Transport retries (429, 5xx, timeouts, resets, garbled replies)."""
    repairs: int = 0
    """Re-asks after an invalid structured reply."""
    cache_hits: int = 0
    """Replies served from the response cache (no request, no cost)."""
    replies: int = 0
    """Successful replies received from the server (each with usage)."""
    prompt_tokens: int = 0
    """Prompt tokens of replies received from the server (what was paid for)."""
    completion_tokens: int = 0
    """Completion tokens of replies received from the server."""
    cached_prompt_tokens: int = 0
    """Prompt tokens of cached replies (not paid again)."""
    cached_completion_tokens: int = 0
    """Completion tokens of cached replies."""
    cost_usd: float = 0.0
    """Cost of the replies received, at the spec's prices."""
    errors: dict[str, int] = field(default_factory=dict)
    """Transport errors by kind (each attempt)."""
    budget_stops: int = 0
    """Requests not sent because they could exceed the budget."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "retries": self.retries, "repairs": self.repairs,
            "cache_hits": self.cache_hits, "replies": self.replies,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "cached_tokens": {"prompt": self.cached_prompt_tokens,
                              "completion": self.cached_completion_tokens},
            "cost_usd": round(self.cost_usd, 8), "errors": dict(sorted(self.errors.items())),
            "budget_stops": self.budget_stops,
        }


class Budget:
    """Cost budget. A request starts only if spent + the worst cases of requests in flight +
    its own worst case stay within the limit; when it does not fit but others are in flight,
    it waits for them to settle (their actual cost is usually below their worst case) and
    checks again. So spend never exceeds the limit (when the server honours `max_tokens`), and
    generation stops only when the next request alone could exceed what is left: within one
    request of the budget."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self.exhausted = False
        self._changed: asyncio.Condition | None = None

    def _fits(self, worst_case: float) -> bool:
        assert self.limit is not None
        return self.spent + self.reserved + worst_case <= self.limit + 1e-12

    async def reserve(self, worst_case: float) -> bool:
        if self.limit is None:
            return True
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while not self.exhausted and not self._fits(worst_case) and self.in_flight:
                await self._changed.wait()
            if self.exhausted or not self._fits(worst_case):
                self.exhausted = True
                self._changed.notify_all()
                return False
            self.reserved += worst_case
            self.in_flight += 1
            return True

    async def settle(self, worst_case: float, actual: float) -> None:
        self.spent += actual
        if self.limit is None:
            return
        self.reserved = max(0.0, self.reserved - worst_case)
        self.in_flight -= 1
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - self.spent


def estimate_prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A cheap, deliberately high prompt-token estimate: 1 token per 3 characters + 4 per
    message (real tokenizers average about 4 characters a token in English)."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return math.ceil(chars / 3) + 4 * len(messages) + 2


def api_key_for(endpoint: EndpointConfig, source: str) -> str:
    """The API key from the environment; a dummy for local servers without one."""
    env = endpoint.api_key_env
    key = os.environ.get(env) if env else None
    if key:
        return key
    host = urlparse(endpoint.base_url).hostname or ""
    if host in LOCAL_HOSTS or not env:
        return _DUMMY_KEY
    raise TargetError(f"{source}: endpoint.api_key_env: environment variable {env} is not set",
                      hint=f"export {env}=... (local servers at 127.0.0.1 need no key)")


def response_format_for(endpoint: EndpointConfig, name: str, schema: dict[str, Any]
                        ) -> dict[str, Any] | None:
    if endpoint.structured_output == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                       "strict": True}}
    if endpoint.structured_output == "json_object":
        return {"type": "json_object"}
    return None


@functools.cache
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema in the strict subset (every property required, no extras).
    Cached: treat the returned dict as read-only."""
    schema = model.model_json_schema()

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
                for prop in node["properties"].values():  # keys there are field names
                    fix(prop)
            node.pop("title", None)
            node.pop("default", None)
            for k, v in node.items():
                if k != "properties":
                    fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    fix(schema)
    return schema


def parse_structured(content: str | None, model: type[M]) -> M:
    """Validate a reply as `model`; accepts a JSON object optionally wrapped in a code fence.
    Raises ValueError with a short, model-readable message."""
    if content is None or not content.strip():
        raise ValueError("the reply was empty; answer with one JSON object")
    text = content.strip()
    m = _FENCE_RE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the reply is not valid JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno}); answer with one JSON object only") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts = []
        for err in e.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "(object)"
            parts.append(f"{loc}: {err['msg']}")
        raise ValueError("the JSON does not match the schema: " + "; ".join(parts)) from None


def _error_kind(e: BaseException) -> str:
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connect"
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}"
    if isinstance(e, TransientReplyError):
        return "bad_response"
    if isinstance(e, ValueError):  # JSON decode error of a garbled body
        return "bad_response"
    return type(e).__name__


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, openai.APIStatusError):
        return e.status_code in (408, 409, 429) or e.status_code >= 500
    return isinstance(e, openai.APIConnectionError | TransientReplyError | ValueError)


def _retry_after(e: BaseException | None) -> float | None:
    if not isinstance(e, openai.APIStatusError):
        return None
    headers = e.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        v = headers.get(name)
        if v:
            with contextlib.suppress(ValueError):
                return max(0.0, float(v) * scale)
    return None


@dataclass
class StructuredResult(Generic[M]):
    """The outcome of one structured request (with its repairs)."""

    value: M | None
    status: str
    """`ok`, `refusal` or `invalid`."""
    content: str | None = None
    """The last raw reply."""
    error: str | None = None
    """Why it is `refusal` or `invalid`."""
    attempts: int = 1
    """Replies obtained (1 + repairs)."""


@dataclass
class Reply:
    content: str | None
    refusal: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class LLMClient:
    """One endpoint: retries, concurrency limit, cache, accounting and budget."""

    def __init__(self, endpoint: EndpointConfig, *, pricing: Pricing | None = None,
                 concurrency: int = 8, cache: ResponseCache | None = None,
                 budget: Budget | None = None, source: str = "spec") -> None:
        self.endpoint = endpoint
        self.pricing = pricing or Pricing()
        self.cache = cache
        self.budget = budget or Budget(None)
        self.stats = Stats()
        self._sem = asyncio.Semaphore(concurrency)
        self._source = source
        self._client: openai.AsyncOpenAI | None = None
        self._rng = random.Random(0)  # backoff jitter only (never affects content)

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.endpoint.base_url,
                api_key=api_key_for(self.endpoint, self._source),
                max_retries=0, timeout=self.endpoint.timeout_s,
                default_headers=self.endpoint.headers or None,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def identity(self, model: str | None = None) -> dict[str, str]:
        """What identifies the endpoint in cache keys (never the key or headers)."""
        return {"base_url": self.endpoint.base_url.rstrip("/"), "model": model or self.endpoint.model}

    def worst_case_cost(self, messages: Sequence[dict[str, str]], max_tokens: int) -> float:
        return self.pricing.cost(estimate_prompt_tokens(messages), max_tokens)

    # ------------------------------------------------------------------ one request
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        ra = _retry_after(exc)
        if ra is not None:
            return min(ra, 120.0)
        base = self.endpoint.backoff_s * (2 ** (state.attempt_number - 1))
        return min(30.0, base) * (0.5 + self._rng.random())

    async def chat(self, messages: list[dict[str, str]], *, params: dict[str, Any],
                   sample: Any, model: str | None = None) -> Reply:
        """One logical chat request: cache, then budget, then retried HTTP calls.

        `params` are the request parameters besides model and messages (temperature,
        max_tokens, response_format, seed, ...); with `sample` they form the cache key.
        Raises BudgetExceeded, RequestFailed (retries exhausted) or TargetError (fatal).
        """
        model = model or self.endpoint.model
        key = make_key(CACHE_NAMESPACE, self.identity(model), messages, params, sample)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                self.stats.cached_prompt_tokens += int(hit.get("prompt_tokens") or 0)
                self.stats.cached_completion_tokens += int(hit.get("completion_tokens") or 0)
                return Reply(hit.get("content"), hit.get("refusal"), hit.get("finish_reason"),
                             int(hit.get("prompt_tokens") or 0),
                             int(hit.get("completion_tokens") or 0), True)
        worst = self.pricing.cost(estimate_prompt_tokens(messages),
                                  int(params.get("max_tokens") or self.endpoint.max_tokens))
        async with self._sem:
            # reserve only once a slot is free, so "in flight" means holding the semaphore
            if not await self.budget.reserve(worst):
                self.stats.budget_stops += 1
                raise BudgetExceeded()
            actual = 0.0
            try:
                completion = await self._create_with_retries(messages, params, model)
                usage = completion.usage
                pt = int(usage.prompt_tokens) if usage is not None else 0
                ct = int(usage.completion_tokens) if usage is not None else 0
                actual = self.pricing.cost(pt, ct)
                self.stats.replies += 1
                self.stats.prompt_tokens += pt
                self.stats.completion_tokens += ct
                self.stats.cost_usd += actual
            finally:
                await self.budget.settle(worst, actual)
        choice = completion.choices[0]
        msg = choice.message
        reply = Reply(msg.content, getattr(msg, "refusal", None), choice.finish_reason, pt, ct,
                      False)
        if self.cache is not None:
            self.cache.put(key, {"content": reply.content, "refusal": reply.refusal,
                                 "finish_reason": reply.finish_reason,
                                 "prompt_tokens": pt, "completion_tokens": ct})
        return reply

    async def _create_with_retries(self, messages: list[dict[str, str]],
                                   params: dict[str, Any], model: str) -> Any:
        client = self._get_client()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.endpoint.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.stats.retries += 1
                    self.stats.requests += 1
                    try:
                        # `post` (the client's documented route for raw bodies) skips the
                        # SDK's per-request typed-dict transform: about 30 % less CPU per
                        # request; auth, error types and parsing are the same as `create`.
                        completion = await client.post(
                            "/chat/completions", cast_to=ChatCompletion,
                            body={"model": model, "messages": messages, **params})
                        if not completion.choices:
                            raise TransientReplyError("the reply has no choices")
                    except Exception as e:
                        kind = _error_kind(e)
                        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
                        raise
                    return completion
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise TargetError(
                f"{self._source}: {self.endpoint.base_url} refused the credentials "
                f"(HTTP {e.status_code})",
                hint=f"check the key in ${self.endpoint.api_key_env}") from None
        except openai.NotFoundError:
            raise TargetError(
                f"{self._source}: {self.endpoint.base_url} has no model "
                f"'{model}' or no chat-completions route (HTTP 404)",
                hint="check endpoint.base_url (usually ends in /v1) and endpoint.model") from None
        except openai.BadRequestError as e:
            detail = _short(e.message)
            raise TargetError(
                f"{self._source}: {self.endpoint.base_url} rejected the request (HTTP 400: "
                f"{detail})",
                hint="if the server does not support json_schema output, set "
                     "endpoint.structured_output: json_object or none") from None
        except openai.APIStatusError as e:
            if _is_transient(e):
                raise RequestFailed(f"HTTP {e.status_code} after "
                                    f"{self.endpoint.max_retries + 1} attempts",
                                    _error_kind(e)) from None
            raise TargetError(f"{self._source}: {self.endpoint.base_url} answered HTTP "
                              f"{e.status_code}: {_short(e.message)}") from None
        except (openai.APIConnectionError, TransientReplyError, ValueError) as e:
            raise RequestFailed(f"{_error_kind(e)} after {self.endpoint.max_retries + 1} "
                                f"attempts: {_short(str(e))}", _error_kind(e)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ structured output
    async def structured(self, messages: list[dict[str, str]], output: type[M], *,
                         schema_name: str, sample: Any, max_repairs: int,
                         temperature: float | None = None, max_tokens: int | None = None,
                         seed: int | None = None, refusal_fields: Sequence[str] = ()
                         ) -> StructuredResult[M]:
        """Ask for JSON matching `output`; on invalid output re-ask (up to `max_repairs`
        times) with the validation error appended. A refusal (the API's `refusal` field or
        refusal-like text, also inside `refusal_fields` of the parsed object) is returned as
        status `refusal` and is not re-asked."""
        params = self.request_params(temperature=temperature, max_tokens=max_tokens, seed=seed,
                                     response_format=response_format_for(
                                         self.endpoint, schema_name, strict_schema(output)))
        convo = list(messages)
        last: str | None = None
        error: str | None = None
        for attempt in range(max_repairs + 1):
            if attempt:
                self.stats.repairs += 1
            reply = await self.chat(convo, params=params, sample=sample)
            last = reply.content
            if reply.refusal:
                return StructuredResult(None, "refusal", reply.refusal, f"refusal: {_short(reply.refusal)}",
                                        attempt + 1)
            try:
                value = parse_structured(reply.content, output)
            except ValueError as e:
                if looks_like_refusal(reply.content):
                    return StructuredResult(None, "refusal", reply.content,
                                            f"refusal: {_short(reply.content or '')}", attempt + 1)
                error = str(e)
                echoed = (reply.content or "")[:MAX_ECHO_CHARS]
                convo = [*convo, {"role": "assistant", "content": echoed},
                         {"role": "user", "content": f"That reply was invalid: {error}. Answer "
                          "again with only the JSON object, matching the schema exactly."}]
                continue
            for f in refusal_fields:
                if looks_like_refusal(getattr(value, f, None)):
                    return StructuredResult(None, "refusal", reply.content,
                                            f"refusal: {_short(str(getattr(value, f)))}",
                                            attempt + 1)
            return StructuredResult(value, "ok", reply.content, None, attempt + 1)
        return StructuredResult(None, "invalid", last, error, max_repairs + 1)

    def request_params(self, *, temperature: float | None = None, max_tokens: int | None = None,
                       seed: int | None = None, response_format: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        ep = self.endpoint
        params: dict[str, Any] = {
            "temperature": ep.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or ep.max_tokens,
        }
        if ep.top_p is not None:
            params["top_p"] = ep.top_p
        if seed is not None and ep.send_seed:
            params["seed"] = seed
        if response_format is not None:
            params["response_format"] = response_format
        return params


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
