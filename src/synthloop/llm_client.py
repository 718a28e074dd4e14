"""Endpoint plumbing shared by everything that talks to an OpenAI-compatible chat endpoint
through the `openai` client: the LLM generator and simulated user (`synthloop.generate.llm`)
and the LLM judges (`synthloop.scorers`).

Client creation (the SDK's own retries off), API-key lookup, error classification, Retry-After,
the retried chat-completions call with per-attempt accounting, fatal-error messages, token
usage, and structured output (strict schemas, `response_format`, parsing, re-ask messages).
Caching, budgets and what a failure means stay with the callers.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from synthloop.errors import TargetError
from synthloop.targets._base import parse_retry_after
from synthloop.targets._base import redact as redact  # re-exported: masks keys in errors
from synthloop.targets._base import secret_values as secret_values  # re-exported

M = TypeVar("M", bound=BaseModel)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
"""Hosts that get a placeholder API key when none is configured."""
REASK = ("That reply was invalid: {error}. Answer again with only the JSON object, matching "
         "the schema exactly.")

_FENCE_RE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


class EmptyReply(Exception):
    """A 200 reply that is unusable (no choices): retried like a 5xx."""


# --------------------------------------------------------------------------- client
def api_key_from_env(env: str | None, base_url: str, *, placeholder: str) -> str | None:
    """The key in `$env`; `placeholder` when no variable is named or the endpoint is local;
    None when the named variable is unset (the caller reports it)."""
    key = os.environ.get(env) if env else None
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if env is None or host in LOCAL_HOSTS:
        return placeholder
    return None


def open_client(*, base_url: str, api_key: str, timeout_s: float,
                headers: dict[str, str] | None) -> openai.AsyncOpenAI:
    """An async client without the SDK's own retries (callers retry with `create_completion`)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                              timeout=timeout_s, default_headers=headers or None)


# --------------------------------------------------------------------------- errors
def error_kind(e: BaseException, *, connection: str = "connection",
               empty_reply: str = "empty_reply") -> str:
    """A short, stable name of a failed attempt (`timeout`, `http_429`, `bad_response`, ...).
    `connection` and `empty_reply` name those two kinds (callers' recorded names differ)."""
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return connection
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}"
    if isinstance(e, EmptyReply):
        return empty_reply
    if isinstance(e, ValueError | openai.APIResponseValidationError):  # a garbled body
        return "bad_response"
    return type(e).__name__


def is_transient(e: BaseException) -> bool:
    """Worth retrying: 408, 409, 429, 5xx, timeouts, connection errors, garbled or empty
    replies."""
    if isinstance(e, openai.APIStatusError):
        return e.status_code in (408, 409, 429) or e.status_code >= 500
    return isinstance(e, openai.APIConnectionError | openai.APIResponseValidationError
                      | EmptyReply | ValueError)


def retry_after(e: BaseException | None) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms` or `Retry-After`), if any."""
    if not isinstance(e, openai.APIStatusError):
        return None
    return parse_retry_after(e.response.headers)


def fatal_error(e: BaseException, *, source: str, base_url: str, model: str,
                api_key_env: str | None, prefix: str = "") -> TargetError | None:
    """The error that stops the command for rejected credentials (401/403) or an unknown
    model or route (404); None for other errors. `prefix` qualifies config field names in
    hints (e.g. `endpoint.`)."""
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        hint = (f"check the key in ${api_key_env}" if api_key_env
                else f"set {prefix}api_key_env to the variable holding the key")
        return TargetError(f"{source}: {base_url} refused the credentials "
                           f"(HTTP {e.status_code})", hint=hint)
    if isinstance(e, openai.NotFoundError):
        return TargetError(f"{source}: {base_url} has no model '{model}' or no "
                           "chat-completions route (HTTP 404)",
                           hint=f"check {prefix}base_url (usually ends in /v1) and "
                                f"{prefix}model")
    return None


# --------------------------------------------------------------------------- requests
class Counters(Protocol):
    """Where `create_completion` counts attempts (each caller's stats object)."""

    requests: int
    retries: int
    errors: dict[str, int]


@dataclass
class RetryPolicy:
    """Attempts and waits: `backoff_s` doubling per retry (at most 30 s), times a jitter in
    [0.5, 1.5) when `rng` is given; a server's Retry-After wins (at most 120 s)."""

    max_retries: int
    backoff_s: float
    rng: random.Random | None = None

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        ra = retry_after(exc)
        if ra is not None:
            return min(ra, 120.0)
        base = float(min(30.0, self.backoff_s * (2 ** (state.attempt_number - 1))))
        return base if self.rng is None else base * (0.5 + self.rng.random())


async def create_completion(client: openai.AsyncOpenAI, body: dict[str, Any], *,
                            policy: RetryPolicy, counters: Counters,
                            kind: Callable[[BaseException], str] = error_kind
                            ) -> ChatCompletion:
    """POST one chat-completions request, retrying transient errors per `policy`; counts
    every attempt, retry and error (named by `kind`) in `counters`. Raises the last error."""
    retrying = AsyncRetrying(stop=stop_after_attempt(policy.attempts), wait=policy.wait,
                             retry=retry_if_exception(is_transient), reraise=True)
    async for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                counters.retries += 1
            counters.requests += 1
            try:
                # `post` (the client's documented route for raw bodies) skips the SDK's
                # per-request typed-dict transform: about 30 % less CPU per request; auth,
                # error types and parsing are the same as `chat.completions.create`.
                completion = await client.post("/chat/completions", cast_to=ChatCompletion,
                                               body=body)
                if not completion.choices:
                    raise EmptyReply("the reply has no choices")
            except Exception as e:
                k = kind(e)
                counters.errors[k] = counters.errors.get(k, 0) + 1
                raise
            return completion
    raise AssertionError("unreachable")  # pragma: no cover


def usage_tokens(completion: Any) -> tuple[int, int]:
    """(prompt, completion) tokens a reply reports (0 when it reports none)."""
    usage = getattr(completion, "usage", None)
    if usage is None:
        return 0, 0
    return (int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0))


# --------------------------------------------------------------------------- structured output
def response_format(mode: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` for a structured-output mode: `json_schema` (strict),
    `json_object`, or `none` (None: the prompt alone asks for JSON)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                       "strict": True}}
    if mode == "json_object":
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


def parse_structured(content: str | None, model: type[M], *,
                     prevalidate: Callable[[Any], Any] | None = None) -> M:
    """Validate a reply as `model`; accepts a JSON object optionally wrapped in a code fence.
    `prevalidate` may normalise the decoded JSON first. Raises ValueError with a short,
    model-readable message."""
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
    if prevalidate is not None:
        data = prevalidate(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts = []
        for err in e.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "(object)"
            parts.append(f"{loc}: {err['msg']}")
        raise ValueError("the JSON does not match the schema: " + "; ".join(parts)) from None


def reask_messages(convo: list[dict[str, str]], content: str | None, error: str, *,
                   max_echo: int) -> list[dict[str, str]]:
    """`convo` plus the invalid reply (up to `max_echo` characters) and a request to answer
    again; `error` says what was wrong."""
    return [*convo, {"role": "assistant", "content": (content or "")[:max_echo]},
            {"role": "user", "content": REASK.format(error=error)}]
