"""The Target contract, the settings every target shares, and `load_target`.

A target is one model version to replay against. It has a `fingerprint` (kind, endpoint,
model, parameters, system-prompt hash; never a key) and one required coroutine:

    async def complete(self, case: EvalCase, *, sample: int = 0) -> Response

which makes ONE attempt and raises on failure. The harness owns timeouts, retries
(`should_retry(error)`), rate limits and caching. Built-in kinds (`openai`, `http`, `python`)
and plugins (entry-point group `synthloop.targets`) are built by `load_target` through
`synthloop.registry.targets`; a registered object is a class with `from_config(data, source,
base_dir)` or a callable with that signature.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from synthloop.config import (
    WRONG_KIND_HINT,
    interpolate_env,
    parse_document,
    validate_data,
    wrong_kind,
)
from synthloop.errors import ConfigError, TargetError
from synthloop.registry import targets
from synthloop.schema import EvalCase, Response, TargetFingerprint

targets.register("openai", "synthloop.targets._openai:OpenAITarget")
targets.register("http", "synthloop.targets._http:HTTPTarget")
targets.register("python", "synthloop.targets._python:PythonTarget")

RETRY_STATUS = frozenset({408, 409, 429})
"""HTTP statuses that are retried (besides every 5xx)."""
TRANSIENT_KINDS = frozenset({"timeout", "connect", "disconnect", "bad_response"})
"""Error kinds that are retried."""


class TargetSettings(BaseModel):
    """Settings shared by every target kind (how to call it, not what it answers)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """Target kind: `openai`, `http`, `python` or a plugin's name."""
    name: str | None = None
    """Display name of this model version in runs and reports (default: the file's stem)."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Per-attempt timeout, seconds."""
    max_retries: int = Field(default=4, ge=0)
    """Retries after the first attempt for retryable failures (connect errors, timeouts, 408,
    409, 429, 5xx, malformed replies). Never for 400, 401, 403, 404."""
    retry_initial_s: float = Field(default=0.5, ge=0)
    """First backoff wait, seconds; doubles per retry, with jitter."""
    retry_max_s: float = Field(default=30.0, ge=0)
    """Longest backoff wait, seconds (a longer `Retry-After` from the server is still honoured
    up to `retry_after_max_s`)."""
    retry_after_max_s: float = Field(default=120.0, ge=0)
    """Longest `Retry-After` honoured, seconds."""
    concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once (default 16; `--concurrency` overrides)."""
    rpm: float | None = Field(default=None, gt=0)
    """Requests-per-minute limit (None: unlimited)."""
    tpm: float | None = Field(default=None, gt=0)
    """Tokens-per-minute limit, prompt + completion (None: unlimited)."""
    fatal_status: list[int] = Field(default_factory=lambda: [401, 403, 404])
    """HTTP statuses that stop the whole run (exit 2) instead of failing one case: every other
    case would fail the same way (bad key, wrong URL or model). Progress so far is kept."""


class TargetCallError(Exception):
    """One failed attempt. `kind` names the failure (`timeout`, `connect`, `disconnect`,
    `http_429`, `bad_response`, ...); `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, kind: str, status: int | None = None,
                 retry_after: float | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


@runtime_checkable
class Target(Protocol):
    """One model version to replay against."""

    name: str
    fingerprint: TargetFingerprint
    settings: TargetSettings

    async def complete(self, case: EvalCase, *, sample: int = 0) -> Response:
        """One attempt at answering `case` (sample index `sample`); raises on failure."""
        ...

    def should_retry(self, error: BaseException) -> bool:
        """True when `error` (from `complete` or a timeout) is worth another attempt."""
        ...


class BaseTarget:
    """Defaults for the optional parts of a target; built-ins and plugins subclass it."""

    name: str
    fingerprint: TargetFingerprint
    settings: TargetSettings

    async def start(self) -> None:
        """Open connections on the running event loop (called by the harness)."""

    async def aclose(self) -> None:
        """Close connections (called by the harness at the end of a run)."""

    async def complete(self, case: EvalCase, *, sample: int = 0) -> Response:
        raise NotImplementedError

    def request_identity(self, case: EvalCase, sample: int) -> Any:
        """What determines the reply besides the fingerprint (part of the cache key)."""
        return {"history": [m.model_dump() for m in case.history], "input": case.input,
                "context": case.context, "sample": sample}

    def estimate_tokens(self, case: EvalCase) -> int:
        """A cheap prompt-token estimate (about 4 characters a token) for the TPM limit."""
        chars = len(case.input) + sum(len(m.content) for m in case.history)
        if case.context:
            chars += len(case.context)
        return chars // 4 + 1

    def should_retry(self, error: BaseException) -> bool:
        return default_should_retry(error)

    def is_fatal(self, error: BaseException) -> bool:
        """True when the error means every case would fail (stop the run)."""
        return isinstance(error, TargetCallError) and error.status in self.settings.fatal_status

    def __repr__(self) -> str:  # never shows headers or keys
        return f"{type(self).__name__}(name={self.name!r}, kind={self.fingerprint.kind!r}, " \
               f"endpoint={self.fingerprint.endpoint!r}, model={self.fingerprint.model!r})"


def default_should_retry(error: BaseException) -> bool:
    """Retry connect errors, timeouts, 408, 409, 429, 5xx and malformed replies; never other
    4xx (400, 401, 403, 404, ...) nor errors raised by user code."""
    if isinstance(error, TargetCallError):
        if error.retryable is not None:
            return error.retryable
        if error.status is not None:
            return error.status in RETRY_STATUS or error.status >= 500
        return error.kind in TRANSIENT_KINDS
    return isinstance(error, TimeoutError | ConnectionError)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def secret_values(key: str | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """What a target must never echo: its API key and the values of the headers a user set
    (they may hold secrets via `${ENV}`); values shorter than 8 characters are left out."""
    values = [key] if key else []
    values += [v for v in headers.values() if len(v) >= 8]
    return tuple(sorted(set(values), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***` (servers' error messages can echo a key)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def text_hash(text: str | None) -> str | None:
    return None if text is None else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def case_variables(case: EvalCase) -> dict[str, Any]:
    """The variables a target template sees: the case's fields as plain data."""
    return {
        "case_id": case.case_id,
        "session_id": case.session_id,
        "user_id": case.user_id,
        "turn": case.turn,
        "input": case.input,
        "context": case.context,
        "history": [{"role": m.role, "content": m.content} for m in case.history],
        "tags": dict(case.tags),
        "references": case.references.model_dump(),
    }


def resolve_api_key(env_name: str | None, source: str) -> str | None:
    """The API key from the environment variable `env_name`; a one-line error when unset."""
    import os

    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise TargetError(f"{source}: api_key_env: environment variable {env_name} is not set",
                          hint=f"export {env_name}=... or set api_key_env: null for an "
                               "endpoint without authentication")
    return key


def _display_name(data: Mapping[str, Any], source: str | None) -> str:
    name = data.get("name")
    if isinstance(name, str) and name:
        return name
    if source and source != "<dict>":
        return Path(source).stem
    return str(data.get("model") or data.get("function") or data.get("kind") or "target")


def load_target(spec: str | Path | Mapping[str, Any], *, name: str | None = None) -> Any:
    """Build a target from a YAML/TOML file or an already-parsed mapping.

    `${ENV}` references in string values are interpolated; the kind is looked up in
    `synthloop.registry.targets`. Returns an object following the `Target` protocol.
    """
    if isinstance(spec, Mapping):
        source = "<dict>"
        base_dir: Path | None = None
        missing: list[str] = []
        data = interpolate_env(dict(spec), missing=missing)
    else:
        path = Path(spec)
        source = str(path)
        base_dir = path.parent
        raw = parse_document(path)
        missing = []
        data = interpolate_env(raw, missing=missing)
    if missing:
        problems = [f"{source}: {m}" for m in missing]
        raise ConfigError(problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems",
                          problems=problems)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level of the target")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in targets.names():
        diagnosis = wrong_kind(data, expected="a target file")  # e.g. a policy passed here
        if diagnosis is not None:
            raise ConfigError(f"{source}: {diagnosis}", hint=WRONG_KIND_HINT)
    if not isinstance(kind, str):
        raise ConfigError(f"{source}: kind: required field is missing",
                          hint=f"add `kind:` with one of {', '.join(targets.names())}")
    try:
        factory = targets.get(kind)
    except ConfigError as e:  # an unknown kind: name the file
        raise ConfigError(f"{source}: kind: {e.message}", hint=e.hint) from None
    if name is not None:
        data = {**data, "name": name}
    data.setdefault("name", _display_name(data, source))
    build = getattr(factory, "from_config", factory)
    target = build(data, source, base_dir)
    for attr in ("fingerprint", "complete", "should_retry"):
        if not hasattr(target, attr):
            raise ConfigError(f"{source}: target kind '{kind}' built an object without `{attr}`",
                              hint="a target needs fingerprint, complete() and should_retry()")
    return target


def validate_settings(data: Mapping[str, Any], model: type[BaseModel], source: str) -> Any:
    """Validate a target config mapping into its pydantic model (one ConfigError for all)."""
    return validate_data(dict(data), model, source)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
