"""The fake OpenAI-compatible server (synthloop.testing) that other tests and benchmarks use."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import aiohttp
import openai
import pytest

from synthloop.testing import FakeOpenAIServer, FaultPlan, count_tokens, default_reply


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
          timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": text}], **extra}


def test_default_reply_is_deterministic_with_usage() -> None:
    with FakeOpenAIServer() as server:
        url = server.base_url + "/chat/completions"
        s1, _, b1 = _post(url, _chat_body("where is my order"), {"Authorization": "Bearer sk-x"})
        s2, _, b2 = _post(url, _chat_body("where is my order"))
        s3, _, b3 = _post(url, _chat_body("where is my order", seed=7))
        assert (s1, s2, s3) == (200, 200, 200)
        r1, r2, r3 = json.loads(b1), json.loads(b2), json.loads(b3)
        c1 = r1["choices"][0]["message"]["content"]
        assert c1 == r2["choices"][0]["message"]["content"]
        assert c1 != r3["choices"][0]["message"]["content"]  # another seed, another draw
        assert "where is my order" in c1
        assert c1 == default_reply(_chat_body("where is my order"))
        assert r1["usage"]["prompt_tokens"] == count_tokens("be brief where is my order") == 6
        assert r1["usage"]["completion_tokens"] == count_tokens(c1)
        assert server.request_count == 3
        assert server.requests[0]["messages"][1]["content"] == "where is my order"
        assert server.headers[0]["Authorization"] == "Bearer sk-x"
        assert server.prompt_tokens == 18
        assert server.completion_tokens == sum(
            r["usage"]["completion_tokens"] for r in (r1, r2, r3))


def test_responder_str_dict_and_response_format_passthrough() -> None:
    seen: list[tuple[dict[str, Any], int]] = []

    def responder(body: dict[str, Any], index: int) -> str | dict[str, Any]:
        seen.append((body, index))
        if index == 1:
            return {"choices": [{"message": {"role": "assistant", "content": "raw"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        return json.dumps({"fmt": body.get("response_format", {}).get("type")})

    with FakeOpenAIServer(responder=responder) as server:
        url = server.base_url + "/chat/completions"
        _, _, b0 = _post(url, _chat_body("a", response_format={"type": "json_object"}))
        _, _, b1 = _post(url, _chat_body("b"))
        assert json.loads(json.loads(b0)["choices"][0]["message"]["content"]) == {
            "fmt": "json_object"}
        assert json.loads(b1)["choices"][0]["message"]["content"] == "raw"
        assert [i for _, i in seen] == [0, 1]
        assert server.prompt_tokens == count_tokens("be brief a") + 3


def test_every_fault_kind_on_chat_endpoint() -> None:
    plan = FaultPlan(script={0: "429", 1: "500", 2: "503", 3: "timeout", 4: "reset",
                             5: "bad_json", 6: "empty_choices", 7: "huge"},
                     retry_after_s=0.25, timeout_s=2.0, huge_chars=300_000)

    async def go(base: str) -> list[Any]:
        out: list[Any] = []
        async with aiohttp.ClientSession() as s:
            for _ in range(9):
                try:
                    async with s.post(base + "/chat/completions", json=_chat_body("hi"),
                                      timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                        out.append((r.status, r.headers.get("Retry-After"), await r.read()))
                except (TimeoutError, aiohttp.ClientError) as e:
                    out.append(type(e).__name__)
        return out

    with FakeOpenAIServer(faults=plan) as server:
        out = asyncio.run(go(server.base_url))
        assert server.request_count == 9
        assert [k for _, k in server.faults_injected] == list(plan.script.values())  # type: ignore[union-attr]
        # huge + the clean last request are the only successful replies counted
        assert server.completion_tokens > 40_000
    assert out[0][:2] == (429, "0.25")
    assert out[1][0] == 500 and out[2][0] == 503
    assert out[3] == "TimeoutError"
    assert out[4] in ("ClientOSError", "ServerDisconnectedError", "ClientConnectionError")
    assert out[5][0] == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(out[5][2])
    assert json.loads(out[6][2])["choices"] == []
    huge = json.loads(out[7][2])["choices"][0]["message"]["content"]
    assert len(huge) == 300_000
    assert json.loads(out[8][2])["choices"][0]["message"]["content"].startswith("Thanks")


def test_random_faults_rate_and_reproducibility() -> None:
    def run(plan: FaultPlan) -> list[tuple[int, str]]:
        with FakeOpenAIServer(faults=plan) as server:
            for i in range(300):
                _post(server.base_url + "/chat/completions", _chat_body(f"q{i}"))
            return list(server.faults_injected)

    plan = FaultPlan(rate=0.2, kinds=("429", "500", "bad_json", "empty_choices"), seed=3)
    a, b = run(plan), run(plan)
    assert a == b
    assert 35 <= len(a) <= 85  # 20 % of 300, generous binomial bounds
    assert set(Counter(k for _, k in a)) == {"429", "500", "bad_json", "empty_choices"}
    assert run(FaultPlan(rate=0.2, kinds=plan.kinds, seed=4)) != a


def test_body_keyed_faults_do_not_depend_on_arrival_order() -> None:
    plan = FaultPlan(rate=0.5, kinds=("500",), seed=1, by="body")

    def statuses(order: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        with FakeOpenAIServer(faults=plan) as server:
            for i in order:
                for _ in range(3):  # the first three requests with this body
                    status, _, _ = _post(server.base_url + "/chat/completions",
                                         _chat_body(f"case {i}"))
                    out.setdefault(i, []).append(status)
        return out

    forward = statuses(list(range(20)))
    backward = statuses(list(reversed(range(20))))
    assert forward == backward
    assert any(500 in v for v in forward.values())
    assert any(v[0] == 200 for v in forward.values())


def test_plain_json_reply_endpoint_with_faults() -> None:
    plan = FaultPlan(script={1: "503", 2: "empty_choices"})
    with FakeOpenAIServer(faults=plan) as server:
        s0, _, b0 = _post(server.url + "/reply", {"input": "reset my password"})
        s1, _, _ = _post(server.url + "/reply", {"input": "x"})
        s2, _, b2 = _post(server.url + "/reply", {"input": "x"})
        assert (s0, s1, s2) == (200, 503, 200)
        assert "reset my password" in json.loads(b0)["reply"]
        assert json.loads(b2) == {}
        assert server.reply_count == 3 and server.request_count == 0
        assert server.reply_requests[0] == {"input": "reset my password"}
        s, _, b = _post(server.url + "/reply", ["not", "an", "object"])  # type: ignore[arg-type]
        assert s == 400


def test_works_with_the_openai_client() -> None:
    async def go(base: str) -> str:
        client = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0, timeout=5)
        try:
            r = await client.chat.completions.create(
                model="support-v2", messages=[{"role": "user", "content": "track parcel"}])
            assert r.usage is not None and r.usage.prompt_tokens == 2
            return r.choices[0].message.content or ""
        finally:
            await client.close()

    with FakeOpenAIServer(latency_s=0.01) as server:
        text = asyncio.run(go(server.base_url))
        assert "track parcel" in text
        assert server.request_count == 1
        assert server.requests[0]["model"] == "support-v2"
        assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_latency_and_concurrency() -> None:
    async def go(base: str, n: int) -> float:
        async with aiohttp.ClientSession() as s:
            async def one(i: int) -> None:
                async with s.post(base + "/chat/completions", json=_chat_body(str(i))) as r:
                    assert r.status == 200
                    await r.read()
            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - t

    with FakeOpenAIServer(latency_s=0.2) as server:
        wall = asyncio.run(go(server.base_url, 40))
        assert server.request_count == 40
    assert 0.2 <= wall < 2.0  # concurrent, not 40 × 0.2 s


def test_standalone_process_prints_base_url_and_stats() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthloop.testing.openai_server", "--latency", "0.01",
         "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
        status, _, body = _post(base + "/chat/completions", _chat_body("hello"))
        assert status == 200 and json.loads(body)["choices"]
        root = base[: -len("/v1")]
        with urllib.request.urlopen(root + "/stats", timeout=5) as r:
            stats = json.loads(r.read())
        assert stats["request_count"] == 1 and stats["completion_tokens"] > 0
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_fault_plan_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan(rate=0.1, kinds=("418",))
    with pytest.raises(ValueError, match="rate"):
        FaultPlan(rate=1.5)
    server = FakeOpenAIServer()
    server.stop()  # stopping a server that never started is harmless


@pytest.mark.parametrize("model_path", [
    "synthloop.generate.llm._generator:UserMessage",
    "synthloop.generate.llm._generator:Reaction",
    "synthloop.simulate:UserTurn",
    "synthloop.scorers._judge:PointwiseVerdict",
    "synthloop.scorers._judge:PairwiseVerdict",
])
def test_default_reply_to_a_structured_output_request_is_valid_against_its_schema(
        model_path: str) -> None:
    """So the LLM generator, the judge and simulate run against the fake server as it is."""
    import importlib

    import jsonschema

    from synthloop.llm_client import strict_schema

    module, _, name = model_path.partition(":")
    model = getattr(importlib.import_module(module), name)
    schema = strict_schema(model)
    body = _chat_body("my parcel is late", response_format={
        "type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}})
    first = default_reply(body)
    doc = json.loads(first)
    jsonschema.validate(doc, schema)
    model.model_validate(doc)
    assert default_reply(body) == first  # deterministic
    assert default_reply({**body, "seed": 5}) != first  # a new sample, as a model would give
