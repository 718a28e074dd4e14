"""`kind: http`: a generic JSON endpoint (a body template in, a path to the reply text out)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from synthloop.schema import EvalCase, Response, TargetFingerprint, Usage
from synthloop.targets._base import (
    BaseTarget,
    TargetCallError,
    TargetSettings,
    canonical_json,
    case_variables,
    resolve_api_key,
    secret_values,
    validate_settings,
)
from synthloop.targets._client import HTTPClient, parse_json, raise_for_status
from synthloop.targets._template import compile_value


def _default_body() -> dict[str, Any]:
    return {"input": "{{ input }}", "history": "{{ history }}", "context": "{{ context }}"}


class HTTPTargetConfig(TargetSettings):
    """A target YAML with `kind: http`."""

    kind: Literal["http"] = "http"
    """Always `http`."""
    url: str
    """Endpoint URL (part of the fingerprint)."""
    method: Literal["POST", "PUT", "GET"] = "POST"
    """HTTP method. With GET the rendered body's top-level fields go in the query string."""
    model: str | None = None
    """Label of the model version behind the URL (part of the fingerprint)."""
    version: str | None = None
    """Version label (part of the fingerprint); change it when the model behind the URL changes."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers. Only their names enter the fingerprint."""
    api_key_env: str | None = None
    """Environment variable holding an API key, sent as `api_key_header: api_key_prefix KEY`."""
    api_key_header: str = "Authorization"
    """Header that carries the API key."""
    api_key_prefix: str = "Bearer "
    """Text before the key in that header."""
    body: Any = Field(default_factory=_default_body)
    """Request body: JSON-like data whose strings are sandboxed Jinja2 templates over the case
    (`input`, `history`, `context`, `tags`, `case_id`, ...). A string that is exactly one
    `{{ expression }}` keeps the value's type (e.g. `history` stays a list)."""
    reply_path: str = "reply"
    """Dotted path to the reply text in the JSON response, e.g. `data.answer` or
    `choices.0.message.content`."""
    prompt_tokens_path: str | None = "usage.prompt_tokens"
    """Dotted path to the prompt token count (ignored when absent)."""
    completion_tokens_path: str | None = "usage.completion_tokens"
    """Dotted path to the completion token count (ignored when absent)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path (`a.b.0.c`) through dicts and lists; KeyError when it breaks."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                raise KeyError(part)
            current = current[part]
        elif isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise KeyError(part) from None
        else:
            raise KeyError(part)
    return current


class HTTPTarget(BaseTarget):
    """A generic JSON endpoint over aiohttp."""

    def __init__(self, config: HTTPTargetConfig, *, source: str = "<dict>") -> None:
        self.config = config
        self.settings = config
        self.name = config.name or config.model or config.url
        self._client = HTTPClient()
        self._render = compile_value(config.body, f"{source}: body")
        key = resolve_api_key(config.api_key_env, source)
        headers = {"Content-Type": "application/json", **config.headers}
        if key is not None:
            headers[config.api_key_header] = f"{config.api_key_prefix}{key}"
        self._headers = headers  # holds the key: never logged, hashed or shown
        self._secrets = secret_values(key, config.headers)  # masked in error messages
        params: dict[str, Any] = {
            "method": config.method,
            "body": config.body,
            "reply_path": config.reply_path,
        }
        if config.version is not None:
            params["version"] = config.version
        if config.headers:
            params["header_names"] = sorted(config.headers)
        self.fingerprint = TargetFingerprint(kind="http", endpoint=config.url, model=config.model,
                                             parameters=params)
        self.render_body(EvalCase(case_id="probe", input="probe"))  # template typos fail early

    @classmethod
    def from_config(cls, data: dict[str, Any], source: str = "<dict>",
                    base_dir: Path | None = None) -> HTTPTarget:
        config: HTTPTargetConfig = validate_settings(data, HTTPTargetConfig, source)
        return cls(config, source=source)

    def render_body(self, case: EvalCase) -> Any:
        return self._render(case_variables(case))

    def request_identity(self, case: EvalCase, sample: int) -> Any:
        return {"body": self.render_body(case), "sample": sample}

    async def start(self) -> None:
        await self._client.start()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, case: EvalCase, *, sample: int = 0) -> Response:
        rendered = self.render_body(case)
        url = self.config.url
        if self.config.method == "GET":
            params = {str(k): v if isinstance(v, str) else canonical_json(v)
                      for k, v in (rendered or {}).items()} if isinstance(rendered, dict) else None
            payload = None
        else:
            params = None
            payload = json.dumps(rendered, ensure_ascii=False).encode()
        t0 = time.perf_counter()
        status, headers, data = await self._client.request(
            self.config.method, url, body=payload, headers=self._headers, params=params)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        raise_for_status(status, headers, data, url, self._secrets)
        reply = parse_json(data, url)
        try:
            text = lookup(reply, self.config.reply_path)
        except KeyError:
            raise TargetCallError(f"reply from {url} has no `{self.config.reply_path}`",
                                  kind="bad_response") from None
        if text is None:
            raise TargetCallError(f"reply from {url} has null `{self.config.reply_path}`",
                                  kind="bad_response")
        output = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
        return Response(case_id=case.case_id, sample=sample, output=output,
                        latency_ms=latency_ms, usage=self._usage(reply))

    def _usage(self, reply: Any) -> Usage:
        def count(path: str | None) -> int:
            if not path:
                return 0
            try:
                value = lookup(reply, path)
            except KeyError:
                return 0
            return int(value) if isinstance(value, int | float) else 0

        return Usage(prompt_tokens=count(self.config.prompt_tokens_path),
                     completion_tokens=count(self.config.completion_tokens_path))
