"""An OpenAI-compatible chat client for generation: structured output with validation and
bounded repair, tenacity retries honouring `Retry-After`, a concurrency limit, the shared
response cache, token and cost accounting, and a cost budget.

Shared by the LLM generator and the simulated user (`synthloop.simulate`). The endpoint
plumbing (errors, Retry-After, the retried request, structured output) is in
`synthloop.llm_client`, shared with the LLM judges.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai
from pydantic import BaseModel

from synthloop.errors import TargetError
from synthloop.generate.llm._spec import EndpointConfig, Pricing
from synthloop.harness.cache import ResponseCache, make_key
from synthloop.llm_client import LOCAL_HOSTS as LOCAL_HOSTS  # re-exported
from synthloop.llm_client import (
    EmptyReply,
    RetryPolicy,
    api_key_from_env,
    create_completion,
    error_kind,
    fatal_error,
    is_transient,
    open_client,
    reask_messages,
    redact,
    response_format,
    secret_values,
    usage_tokens,
)
from synthloop.llm_client import parse_structured as parse_structured  # re-exported
from synthloop.llm_client import strict_schema as strict_schema  # re-exported

M = TypeVar("M", bound=BaseModel)

CACHE_NAMESPACE = "synthloop.generate.llm/1"
MAX_ECHO_CHARS = 2000
"""An invalid reply is echoed back in a repair request up to this many characters."""
_DUMMY_KEY = "synthloop-local-no-key"

_REFUSAL_RE = re.compile(
    r"^\s*(?:i[’']m sorry|i am sorry|sorry, (?:but )?i|i can(?:not|[’']t) (?:help|assist|"
    r"comply|provide|do that|write|create|generate|fulfil)|i (?:won[’']t|will not) "
    r"(?:help|assist|write|create|generate)|as an ai\b|i[’']m (?:not able|unable) to|"
    r"i am (?:not able|unable) to|unfortunately,? i (?:can(?:not|[’']t)|am unable))",
    re.IGNORECASE,
)


_UNABLE = (r"i (?:can(?:not|[’']t| not)|won[’']t|will not|must decline to|(?:am|[’']m) "
           r"(?:unable to|not able to|not comfortable))")
_APOLOGY = (r"(?:(?:(?:i[’']m|i am) (?:so |very |really )?sorry|sorry|unfortunately|apologies)"
            r"[,.!]*\s+(?:but,?\s+)?)?")
_USER_TEXT_REFUSAL_RE = re.compile(
    r"^\s*(?:as an ai\b|as a language model\b|" + _APOLOGY + _UNABLE + r"\s+(?:"
    r"(?:help|assist|comply|fulfil{1,2})\b"
    r"|(?:do|write|create|generate|provide|produce|continue|engage in|participate in)"
    r"\s+(?:that|this|such)\b"
    r"|(?:pretend|role-?play|impersonate|act as|play (?:the )?(?:role|part))\b))",
    re.IGNORECASE,
)


def looks_like_refusal(text: str | None, *, user_text: bool = False) -> bool:
    """True when text opens like a model refusal ("I'm sorry, but I can't ...").

    `user_text=True` is for a field that holds a user's message (a structured reply's
    `message` or `follow_up`): customers open with "I'm sorry to bother you" or "I can't
    create an account" all the time, so there only an unmistakable refusal counts (an
    apology or "I can't" about helping, complying, doing *that*, or playing the role).
    """
    if not text:
        return False
    return bool((_USER_TEXT_REFUSAL_RE if user_text else _REFUSAL_RE).match(text))


class BudgetExceeded(Exception):
    """The next request could exceed the cost budget; no request was sent."""


TransientReplyError = EmptyReply
"""A 200 reply that is unusable (no choices): retried like a 5xx."""


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
    key = api_key_from_env(env or None, endpoint.base_url, placeholder=_DUMMY_KEY)
    if key is not None:
        return key
    raise TargetError(f"{source}: endpoint.api_key_env: environment variable {env} is not set",
                      hint=f"export {env}=... (local servers at 127.0.0.1 need no key)")


def response_format_for(endpoint: EndpointConfig, name: str, schema: dict[str, Any]
                        ) -> dict[str, Any] | None:
    return response_format(endpoint.structured_output, name, schema)


def _error_kind(e: BaseException) -> str:
    """Error kinds as the generator records them (`connect`; an empty reply is
    `bad_response`)."""
    return error_kind(e, connection="connect", empty_reply="bad_response")


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
        # jitter from a seeded rng: backoff only (never affects content)
        self._retry = RetryPolicy(endpoint.max_retries, endpoint.backoff_s, random.Random(0))

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = open_client(
                base_url=self.endpoint.base_url,
                api_key=api_key_for(self.endpoint, self._source),
                timeout_s=self.endpoint.timeout_s, headers=self.endpoint.headers)
        return self._client

    def _mask(self, text: str) -> str:
        """`text` (a server's error message) with the key and header values masked."""
        key = api_key_for(self.endpoint, self._source)
        return redact(text, secret_values(key, self.endpoint.headers))

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
                pt, ct = usage_tokens(completion)
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
        try:
            return await create_completion(
                client, {"model": model, "messages": messages, **params},
                policy=self._retry, counters=self.stats, kind=_error_kind)
        except (openai.AuthenticationError, openai.PermissionDeniedError,
                openai.NotFoundError) as e:
            fatal = fatal_error(e, source=self._source, base_url=self.endpoint.base_url,
                                model=model, api_key_env=self.endpoint.api_key_env,
                                prefix="endpoint.")
            assert fatal is not None
            raise fatal from None
        except openai.BadRequestError as e:
            detail = _short(self._mask(e.message))
            raise TargetError(
                f"{self._source}: {self.endpoint.base_url} rejected the request (HTTP 400: "
                f"{detail})",
                hint="if the server does not support json_schema output, set "
                     "endpoint.structured_output: json_object or none") from None
        except openai.APIStatusError as e:
            if is_transient(e):
                raise RequestFailed(f"HTTP {e.status_code} after "
                                    f"{self.endpoint.max_retries + 1} attempts",
                                    _error_kind(e)) from None
            raise TargetError(f"{self._source}: {self.endpoint.base_url} answered HTTP "
                              f"{e.status_code}: {_short(self._mask(e.message))}") from None
        except (openai.APIConnectionError, openai.APIResponseValidationError, EmptyReply,
                ValueError) as e:
            raise RequestFailed(f"{_error_kind(e)} after {self.endpoint.max_retries + 1} "
                                f"attempts: {_short(self._mask(str(e)))}", _error_kind(e)) from None

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
                convo = reask_messages(convo, reply.content, error, max_echo=MAX_ECHO_CHARS)
                continue
            for f in refusal_fields:
                if looks_like_refusal(getattr(value, f, None), user_text=True):
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
