"""A real OpenAI-compatible HTTP server on 127.0.0.1 with fault injection, for tests and benchmarks.

    from synthloop.testing import FakeOpenAIServer, FaultPlan

    with FakeOpenAIServer(latency_s=0.01, faults=FaultPlan(rate=0.2, seed=1)) as server:
        client_base_url = server.base_url          # "http://127.0.0.1:PORT/v1"
        ...
        server.request_count                       # POST /v1/chat/completions received

Endpoints:

- `POST /v1/chat/completions`: chat.completions JSON (`choices[0].message.content`, `usage`).
- `POST /reply`: a plain JSON endpoint answering `{"reply": TEXT, "usage": {...}}`, for the
  generic `http` target.
- `GET /v1/models`: one model, so clients that list models work.
- `GET /stats`: `{"request_count", "reply_count", "prompt_tokens", "completion_tokens"}`, so a
  benchmark or test can read the counters of a server running in another process.

The server runs aiohttp on its own event loop in a background thread (or in the foreground
with `python -m synthloop.testing.openai_server`). Everything it does is deterministic: the
default reply depends only on the request body, and injected faults on a recorded seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULT_KINDS: tuple[str, ...] = (
    "429", "500", "503", "timeout", "reset", "bad_json", "empty_choices", "huge",
)
"""The default mix of injected faults."""

_STATUS_FAULTS = {"400", "401", "403", "404", "408", "409", "429", "500", "502", "503", "504"}
_OTHER_FAULTS = {"timeout", "reset", "bad_json", "empty_choices", "huge"}
KNOWN_FAULTS: frozenset[str] = frozenset(_STATUS_FAULTS | _OTHER_FAULTS)

Responder = Callable[[dict[str, Any], int], "str | dict[str, Any]"]


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail, and how.

    Either random faults (`rate` of requests, kinds drawn from `kinds`, reproducible from
    `seed`), a `script` mapping a request index (0-based arrival order) to a fault kind, or a
    `rule(body, index)` function returning a kind or None.
    Fault kinds: an HTTP status (`"429"`, `"500"`, `"503"`, `"408"`, `"409"`, `"400"`,
    `"401"`, `"403"`, `"404"`, `"502"`, `"504"`), `"timeout"` (the server waits `timeout_s`
    before replying), `"reset"` (the connection is reset with no reply), `"bad_json"`
    (status 200, truncated JSON), `"empty_choices"` (status 200, `choices: []`) and
    `"huge"` (status 200, a valid reply of `huge_chars` characters).
    """

    rate: float = 0.0
    """Share of requests that get a fault (random mode)."""
    kinds: tuple[str, ...] = FAULT_KINDS
    """Fault kinds to draw from (random mode), uniformly."""
    seed: int = 0
    """Seed for the random draws."""
    retry_after_s: float | None = 0.05
    """`Retry-After` sent with 429 replies (seconds; None sends no header)."""
    timeout_s: float = 5.0
    """How long a `timeout` fault stalls before answering (set above the client's timeout)."""
    huge_chars: int = 1_000_000
    """Length of a `huge` reply."""
    script: Mapping[int, str] | None = None
    """Explicit faults by request index; when set, `rate` is ignored."""
    rule: Callable[[dict[str, Any], int], str | None] | None = None
    """`rule(body, index)` returns a fault kind (or None) for each request, e.g. to fail every
    request for one case; when set, `script` and `rate` are ignored."""
    by: str = "index"
    """Random-mode key: `index` (arrival order) or `body` (a hash of the request body and how
    many times that body was seen before), which makes the faults a given request meets
    independent of arrival order under concurrency."""

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.kinds, *(self.script or {}).values()) if k not in KNOWN_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {sorted(KNOWN_FAULTS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if self.by not in ("index", "body"):
            raise ValueError("by must be 'index' or 'body'")
        if not self.kinds and self.rate > 0:
            raise ValueError("kinds is empty")


def count_tokens(text: str) -> int:
    """Deterministic token count used by the fake server: whitespace-separated words."""
    return len(text.split())


def _last_user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                content = m.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):  # content parts
                    return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    for key in ("input", "prompt", "text", "query"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    return ""


_WORDS = ("order", "refund", "account", "password", "invoice", "delivery", "plan", "upgrade",
          "login", "billing", "parcel", "export", "notes", "sync", "trial", "card", "address",
          "support", "update", "error", "today", "please", "again", "still", "quickly", "why")


def _schema_instance(schema: Any, seed: str, path: str = "$", defs: Mapping[str, Any] | None = None,
                     depth: int = 0) -> Any:
    """A deterministic value that validates against a (strict, OpenAI-style) JSON Schema:
    strings are a few words drawn from sha256(seed, path), numbers the low end of their range,
    enums and anyOf their first option. Enough for structured-output clients (the LLM
    generator, the judge, simulate) to run against the fake server unchanged."""
    if not isinstance(schema, Mapping) or depth > 12:
        return None
    defs = defs if defs is not None else {**schema.get("$defs", {}), **schema.get("definitions", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return _schema_instance(defs[ref.rsplit("/", 1)[-1]], seed, path, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _schema_instance(options[0], seed, path, defs, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _schema_instance(v, seed, f"{path}.{k}", defs, depth + 1)
                for k, v in props.items()}
    if kind == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [_schema_instance(schema.get("items", {}), seed, f"{path}[{i}]", defs, depth + 1)
                for i in range(n)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + (1 if "exclusiveMinimum" in schema else 0)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return hashlib.sha256(f"{seed}|{path}".encode()).digest()[0] % 2 == 0
    if kind == "null":
        return None
    digest = hashlib.sha256(f"{seed}|{path}".encode()).digest()
    words = " ".join(_WORDS[b % len(_WORDS)] for b in digest[: 4 + digest[-1] % 8])
    return words[0].upper() + words[1:]


def default_reply(body: Mapping[str, Any]) -> str:
    """The default deterministic reply: derived from the last user message (and `seed`).

    The same body always gets the same reply; a different `seed` in the body gives a
    different reply, as a sampling model would. A request for structured output
    (`response_format: {type: json_schema, ...}`) gets a JSON document valid against its
    schema.
    """
    text = _last_user_text(body)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            return json.dumps(_schema_instance(schema, digest), ensure_ascii=False)
    words = text.split()
    gist = " ".join(words[:12])
    return f"Thanks for asking about {gist!s}. Here is what I suggest ({digest})."


def _prompt_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            if isinstance(m, dict):
                c = m.get("content")
                if isinstance(c, str):
                    parts.append(c)
        return " ".join(parts)
    return _last_user_text(body)


@dataclass
class _Counters:
    request_count: int = 0
    reply_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0
    seen: dict[str, int] = field(default_factory=dict)


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (port 0 by default).

    `responder(body, index)` returns the assistant's message content (str) or a full JSON
    body (dict, sent with status 200). `index` is the 0-based arrival index over every POST.
    Use as a context manager (background thread) or call `start()` / `stop()`.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        record: bool = True,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.faults = faults
        self.host = host
        self.port = port
        self.model = model
        self.record = record
        self.requests: list[dict[str, Any]] = []
        """Received chat-completions JSON bodies, in arrival order."""
        self.reply_requests: list[dict[str, Any]] = []
        """Received `POST /reply` JSON bodies, in arrival order."""
        self.headers: list[dict[str, str]] = []
        """Request headers of every received POST, in arrival order."""
        self.faults_injected: list[tuple[int, str]] = []
        """(request index, fault kind) of every injected fault."""
        self._c = _Counters()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ counters
    @property
    def request_count(self) -> int:
        """POST /v1/chat/completions received (faulty ones included)."""
        return self._c.request_count

    @property
    def reply_count(self) -> int:
        """POST /reply received (faulty ones included)."""
        return self._c.reply_count

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over successful replies (200 with a reply)."""
        return self._c.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over successful replies (200 with a reply)."""
        return self._c.completion_tokens

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, for OpenAI-compatible clients."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (the plain JSON endpoint is `url + "/reply"`)."""
        return f"http://{self.host}:{self.port}"

    def reset_counters(self) -> None:
        """Zero the counters and recorded requests (fault draws keep their seed)."""
        with self._lock:
            self._c = _Counters()
            self.requests.clear()
            self.reply_requests.clear()
            self.headers.clear()
            self.faults_injected.clear()

    def stats(self) -> dict[str, int]:
        return {
            "request_count": self._c.request_count,
            "reply_count": self._c.reply_count,
            "prompt_tokens": self._c.prompt_tokens,
            "completion_tokens": self._c.completion_tokens,
        }

    # ------------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/reply", self._reply)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        return app

    def _fault_for(self, index: int, body: Mapping[str, Any]) -> str | None:
        plan = self.faults
        if plan is None:
            return None
        if plan.rule is not None:
            kind = plan.rule(dict(body), index)
            if kind is not None and kind not in KNOWN_FAULTS:
                raise ValueError(f"FaultPlan.rule returned unknown fault kind {kind!r}")
            return kind
        if plan.script is not None:
            return plan.script.get(index)
        if plan.rate <= 0:
            return None
        if plan.by == "body":
            key = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
            with self._lock:
                n = self._c.seen.get(key, 0)
                self._c.seen[key] = n + 1
            rng = random.Random(f"{plan.seed}:{key}:{n}")
        else:
            rng = random.Random(f"{plan.seed}:{index}")
        if rng.random() < plan.rate:
            return plan.kinds[rng.randrange(len(plan.kinds))]
        return None

    async def _read_body(self, request: web.Request) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            index = self._c.index
            self._c.index += 1
        if self.record:
            self.headers.append(dict(request.headers))
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return index, None
        return index, body if isinstance(body, dict) else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._c.request_count += 1
        index, body = await self._read_body(request)
        if body is None:
            return _error(400, "request body is not a JSON object")
        if self.record:
            self.requests.append(body)
        return await self._answer(request, index, body, chat=True)

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._c.reply_count += 1
        index, body = await self._read_body(request)
        if body is None:
            return _error(400, "request body is not a JSON object")
        if self.record:
            self.reply_requests.append(body)
        return await self._answer(request, index, body, chat=False)

    async def _answer(self, request: web.Request, index: int, body: dict[str, Any],
                      *, chat: bool) -> web.StreamResponse:
        fault = self._fault_for(index, body)
        if fault is not None:
            self.faults_injected.append((index, fault))
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault is not None and fault != "huge":
            plan = self.faults
            assert plan is not None
            if fault in _STATUS_FAULTS:
                headers = {}
                if fault == "429" and plan.retry_after_s is not None:
                    headers["Retry-After"] = f"{plan.retry_after_s:g}"
                return _error(int(fault), f"injected fault {fault}", headers)
            if fault == "timeout":
                await asyncio.sleep(plan.timeout_s)
            elif fault == "reset":
                _reset(request)
                raise asyncio.CancelledError  # nothing more is sent on a reset connection
            elif fault == "bad_json":
                return web.Response(body=b'{"id": "chatcmpl-bad", "choices": [{"message": {"con',
                                    content_type="application/json")
            elif fault == "empty_choices":
                payload: dict[str, Any] = (
                    {"id": f"chatcmpl-{index}", "object": "chat.completion", "model": self.model,
                     "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                              "total_tokens": 0}}
                    if chat else {})
                return _json(payload)
        if fault == "huge":
            assert self.faults is not None
            unit = "lorem ipsum dolor sit amet "
            content: str | dict[str, Any] = (unit * (self.faults.huge_chars // len(unit) + 1))[
                : self.faults.huge_chars]
        elif self.responder is not None:
            content = self.responder(body, index)
        else:
            content = default_reply(body)
        if isinstance(content, dict):
            usage = content.get("usage") if isinstance(content.get("usage"), dict) else None
            has_reply = bool(content.get("choices")) if chat else "reply" in content
            if has_reply and usage:
                with self._lock:  # counts only what is a number: a test may send garbage
                    self._c.prompt_tokens += _number(usage.get("prompt_tokens"))
                    self._c.completion_tokens += _number(usage.get("completion_tokens"))
            return _json(content)
        prompt_tokens = count_tokens(_prompt_text(body))
        completion_tokens = count_tokens(content)
        with self._lock:
            self._c.prompt_tokens += prompt_tokens
            self._c.completion_tokens += completion_tokens
        usage_d = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens}
        if not chat:
            return _json({"reply": content, "usage": usage_d})
        return _json({
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "created": 0,
            "model": str(body.get("model") or self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": usage_d,
        })

    async def _models(self, request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": self.model, "object": "model",
                                                  "owned_by": "synthloop"}]})

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    # ------------------------------------------------------------------ lifecycle
    async def start_async(self) -> None:
        """Start serving on the running event loop (binds the port; see `port`)."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self.start_async()
            except BaseException as e:  # reported to the starting thread
                self._startup_error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.stop_async()

        try:
            loop.run_until_complete(main())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> FakeOpenAIServer:
        """Start in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name="fake-openai-server",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            err = self._startup_error
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"fake server failed to start: {err}") from err
        return self

    def stop(self) -> None:
        """Stop the background server (pending stalled replies are cancelled)."""
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeOpenAIServer({self.url}, latency_s={self.latency_s}, faults={self.faults})"


def _number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status,
                        content_type="application/json", headers=headers)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": {"message": message, "type": "injected", "code": status}},
                 status=status, headers=headers)


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), sending no reply."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
