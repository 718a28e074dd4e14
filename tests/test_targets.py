"""Targets: config loading, fingerprints, request shape, error mapping (real server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from synthloop.errors import ConfigError, TargetError
from synthloop.registry import targets as target_registry
from synthloop.schema import EvalCase, Message, Response, TargetFingerprint, Usage
from synthloop.targets import (
    HTTPTarget,
    OpenAITarget,
    PythonTarget,
    Target,
    TargetCallError,
    default_should_retry,
    load_target,
    parse_retry_after,
)
from synthloop.testing import FakeOpenAIServer, FaultPlan

SECRET = "sk-test-SECRET-0123456789abcdef"

MINIMAL = """\
kind: openai
base_url: http://127.0.0.1:8000/v1
model: support-v2
api_key_env: OPENAI_API_KEY
"""


def _case(**kw: Any) -> EvalCase:
    base: dict[str, Any] = {"case_id": "c1", "input": "where is my parcel"}
    base.update(kw)
    return EvalCase(**base)


def _write(tmp_path: Path, text: str, name: str = "target.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


async def _complete(target: Any, case: EvalCase, sample: int = 0) -> Response:
    await target.start()
    try:
        return await target.complete(case, sample=sample)  # type: ignore[no-any-return]
    finally:
        await target.aclose()


# ------------------------------------------------------------------------ loading & fingerprint
def test_minimal_openai_target_loads_and_never_exposes_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    target = load_target(_write(tmp_path, MINIMAL, "support-v2.yaml"))
    assert isinstance(target, OpenAITarget) and isinstance(target, Target)
    assert target.name == "support-v2"
    fp = target.fingerprint
    assert (fp.kind, fp.endpoint, fp.model) == ("openai", "http://127.0.0.1:8000/v1", "support-v2")
    blob = fp.model_dump_json() + repr(target) + str(target.config.model_dump()) + fp.digest()
    assert SECRET not in blob


def test_missing_api_key_variable_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError) as e:
        load_target(_write(tmp_path, MINIMAL))
    msg = str(e.value)
    assert "OPENAI_API_KEY" in msg and "\n" not in msg and e.value.exit_code == 2


def test_config_mistakes_are_reported_with_field_and_hint(tmp_path: Path) -> None:
    bad = _write(tmp_path, """\
        kind: openai
        base_url: 127.0.0.1:8000/v1
        model: m
        temprature: 0.3
        """)
    with pytest.raises(ConfigError) as e:
        load_target(bad)
    text = str(e.value)
    assert "temprature: unknown key (did you mean `temperature`?)" in text
    assert "base_url: must start with http://" in text
    with pytest.raises(ConfigError, match="did you mean `openai`"):
        load_target({"kind": "opnai", "base_url": "http://x", "model": "m"})
    with pytest.raises(ConfigError, match="kind: required"):
        load_target({"model": "m"})
    # an unknown kind names the file; a generator spec given as a target says what it is
    typo = _write(tmp_path, "kind: opnai\nmodel: m\n")
    with pytest.raises(ConfigError, match=rf"^{typo}: kind: unknown target kind 'opnai'"):
        load_target(typo)
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: rules\nname: s\n")
    with pytest.raises(ConfigError, match=r"spec.yaml: looks like a generator spec \(kind: "
                                          r"rules, for `synthloop generate`\), not a target file"):
        load_target(spec)
    with pytest.raises(ConfigError, match="model: required field is missing"):
        load_target({"kind": "openai", "base_url": "http://x"})
    with pytest.raises(ConfigError, match="not found"):
        load_target(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="inptu"):  # template typos fail at load time
        load_target({"kind": "openai", "base_url": "http://x", "model": "m",
                     "system_prompt": "Answer {{ inptu }}"})


def test_fingerprint_tracks_what_changes_replies_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"kind": "openai", "base_url": "http://h/v1", "model": "m", "temperature": 0.0,
            "system_prompt": "Be brief."}

    def digest(**over: Any) -> str:
        return str(load_target({**base, **over}).fingerprint.digest())

    d0 = digest()
    assert digest(system_prompt="Be verbose.") != d0
    assert digest(temperature=0.7) != d0
    assert digest(model="m2") != d0
    assert digest(base_url="http://other/v1") != d0
    assert digest(max_tokens=50) != d0
    # how the target is called does not change its replies
    assert digest(timeout_s=5, max_retries=9, concurrency=3, rpm=60, name="x") == d0
    monkeypatch.setenv("K1", "secret-one")
    monkeypatch.setenv("K2", "secret-two")
    assert digest(api_key_env="K1") == digest(api_key_env="K2")
    fp = load_target({**base, "extra_headers": {"X-Api-Key": "${K1}"}}).fingerprint
    assert "secret-one" not in fp.model_dump_json()
    assert fp.parameters["header_names"] == ["X-Api-Key"]
    assert fp.system_prompt_hash is not None and "Be brief" not in fp.model_dump_json()


# ------------------------------------------------------------------------ openai requests
def test_openai_request_carries_history_system_prompt_and_parameters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    case = _case(history=[Message(role="user", content="hi"),
                          Message(role="assistant", content="hello, how can I help?")],
                 context="order 42 shipped", tags={"locale": "fr"})
    with FakeOpenAIServer() as server:
        target = load_target({
            "kind": "openai", "base_url": server.base_url, "model": "support-v2",
            "api_key_env": "MY_KEY", "temperature": 0.7, "max_tokens": 64, "seed": 10,
            "response_format": {"type": "json_object"},
            "system_prompt": "Support bot.{% if tags.locale %} Reply in {{ tags.locale }}.{% endif %}",
            "user_template": "{% if context %}[{{ context }}] {% endif %}{{ input }}",
            "extra_headers": {"X-Team": "evals"}, "extra_body": {"user": "synthloop"},
        })
        r0 = asyncio.run(_complete(target, case, sample=0))
        r2 = asyncio.run(_complete(target, case, sample=2))
        assert server.request_count == 2
        body, body2 = server.requests
        headers = server.headers[0]
    assert body["model"] == "support-v2"
    assert body["messages"] == [
        {"role": "system", "content": "Support bot. Reply in fr."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello, how can I help?"},
        {"role": "user", "content": "[order 42 shipped] where is my parcel"},
    ]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.7, 64, 10)
    assert body["response_format"] == {"type": "json_object"} and body["user"] == "synthloop"
    assert body2["seed"] == 12  # sample k sends seed + k: independent draws
    assert headers["Authorization"] == f"Bearer {SECRET}" and headers["X-Team"] == "evals"
    assert r0.output and "where is my parcel" in r0.output and r0.output != r2.output
    assert (r0.case_id, r0.sample, r2.sample) == ("c1", 0, 2)
    assert r0.usage.prompt_tokens > 0 and r0.usage.completion_tokens > 0
    assert r0.latency_ms is not None and r0.latency_ms > 0


def test_templates_render_a_missing_context_as_empty_not_none() -> None:
    """The documented `user_template: "{{ context }}\\n\\n{{ input }}"` must not send the
    text "None" for the (many) cases without a context; a lone `{{ context }}` in an http
    body stays JSON null."""
    no_context = _case(input="where is my parcel")
    target = load_target({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                          "system_prompt": "Known: {{ context }}.",
                          "user_template": "{{ context }}\n\n{{ input }}"})
    assert target.messages(no_context) == [
        {"role": "system", "content": "Known: ."},
        {"role": "user", "content": "\n\nwhere is my parcel"}]
    with_context = _case(input="where is my parcel", context="order 42")
    assert target.messages(with_context)[-1]["content"] == "order 42\n\nwhere is my parcel"
    http = load_target({"kind": "http", "url": "http://127.0.0.1:9/reply",
                        "body": {"text": "ctx={{ context }} q={{ input }}", "ctx": "{{ context }}"}})
    assert http.render_body(no_context) == {"text": "ctx= q=where is my parcel", "ctx": None}


def test_openai_without_parameters_sends_only_model_and_messages() -> None:
    with FakeOpenAIServer() as server:
        target = load_target({"kind": "openai", "base_url": server.base_url + "/", "model": "m"})
        asyncio.run(_complete(target, _case(), sample=3))
        assert server.requests[0] == {"model": "m", "messages": [
            {"role": "user", "content": "where is my parcel"}]}
        assert "Authorization" not in server.headers[0]


@pytest.mark.parametrize(
    ("fault", "kind", "status", "retry"),
    [
        ("429", "http_429", 429, True),
        ("500", "http_500", 500, True),
        ("503", "http_503", 503, True),
        ("408", "http_408", 408, True),
        ("409", "http_409", 409, True),
        ("400", "http_400", 400, False),
        ("401", "http_401", 401, False),
        ("403", "http_403", 403, False),
        ("404", "http_404", 404, False),
        ("bad_json", "bad_response", None, True),
        ("empty_choices", "bad_response", None, True),
        ("reset", "disconnect", None, True),
    ],
)
def test_openai_failures_map_to_kinds_and_retry_decisions(
        fault: str, kind: str, status: int | None, retry: bool) -> None:
    with FakeOpenAIServer(faults=FaultPlan(script={0: fault}, retry_after_s=1.5)) as server:
        target = load_target({"kind": "openai", "base_url": server.base_url, "model": "m"})
        with pytest.raises(TargetCallError) as e:
            asyncio.run(_complete(target, _case()))
        assert (e.value.kind, e.value.status) == (kind, status)
        assert target.should_retry(e.value) is retry
        assert target.is_fatal(e.value) is (status in (401, 403, 404))
        if fault == "429":
            assert e.value.retry_after == 1.5
            assert "injected fault 429" in e.value.message
        ok = asyncio.run(_complete(target, _case()))  # the next request is fine
        assert ok.output


def test_garbled_usage_does_not_throw_away_a_good_reply() -> None:
    usages = [{"prompt_tokens": "n/a", "completion_tokens": {"x": 1}},
              {"prompt_tokens": "12", "completion_tokens": 3.0}, "lots"]

    def responder(body: dict[str, Any], index: int) -> dict[str, Any]:
        return {"choices": [{"message": {"role": "assistant", "content": f"reply {index}"}}],
                "usage": usages[index]}

    with FakeOpenAIServer(responder=responder) as server:
        target = load_target({"kind": "openai", "base_url": server.base_url, "model": "m"})
        got = [asyncio.run(_complete(target, _case())) for _ in usages]
    assert [r.output for r in got] == ["reply 0", "reply 1", "reply 2"]
    assert [r.usage for r in got] == [Usage(), Usage(prompt_tokens=12, completion_tokens=3),
                                      Usage()]


def test_huge_reply_and_connect_error() -> None:
    with FakeOpenAIServer(faults=FaultPlan(script={0: "huge"}, huge_chars=2_000_000)) as server:
        target = load_target({"kind": "openai", "base_url": server.base_url, "model": "m"})
        r = asyncio.run(_complete(target, _case()))
        assert r.output is not None and len(r.output) == 2_000_000
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = load_target({"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                          "model": "m"})
    with pytest.raises(TargetCallError) as e:
        asyncio.run(_complete(target, _case()))
    assert e.value.kind == "connect" and target.should_retry(e.value)


def test_retry_policy_and_retry_after_parsing() -> None:
    for status in (408, 409, 429, 500, 502, 503, 504, 529):
        assert default_should_retry(TargetCallError("x", kind="http", status=status))
    for status in (400, 401, 403, 404, 422):
        assert not default_should_retry(TargetCallError("x", kind="http", status=status))
    assert default_should_retry(TimeoutError())
    assert default_should_retry(ConnectionResetError())
    assert not default_should_retry(ValueError("bug in user code"))
    assert not default_should_retry(TargetCallError("x", kind="timeout", retryable=False))
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "7"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after({"Retry-After": when}) or 0) <= 31


# ------------------------------------------------------------------------ http target
def test_http_target_renders_body_and_reads_reply_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_KEY", SECRET)

    def responder(body: dict[str, Any], index: int) -> dict[str, Any]:
        return {"data": {"answers": [{"text": f"echo {body['q']} ({len(body['turns'])} turns)"}]},
                "meta": {"tok": {"in": 11, "out": 4}}, "reply": "unused"}

    case = _case(history=[Message(role="user", content="hi"),
                          Message(role="assistant", content="hey")], tags={"persona": "pro"})
    with FakeOpenAIServer(responder=responder) as server:
        path = _write(tmp_path, f"""\
            kind: http
            url: {server.url}/reply
            model: bot
            version: "3"
            api_key_env: BOT_KEY
            api_key_header: X-Api-Key
            api_key_prefix: ""
            body:
              q: "{{{{ input }}}}"
              turns: "{{{{ history }}}}"
              meta: {{persona: "{{{{ tags.persona }}}}", n: 3, label: "case {{{{ case_id }}}}"}}
            reply_path: data.answers.0.text
            prompt_tokens_path: meta.tok.in
            completion_tokens_path: meta.tok.out
            """, "bot.yaml")
        target = load_target(path)
        assert isinstance(target, HTTPTarget)
        r = asyncio.run(_complete(target, case))
        sent = server.reply_requests[0]
        assert server.headers[0]["X-Api-Key"] == SECRET
    assert sent == {"q": "where is my parcel",
                    "turns": [{"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hey"}],
                    "meta": {"persona": "pro", "n": 3, "label": "case c1"}}
    assert r.output == "echo where is my parcel (2 turns)"
    assert r.usage == Usage(prompt_tokens=11, completion_tokens=4)
    fp = target.fingerprint
    assert fp.kind == "http" and fp.model == "bot" and fp.parameters["version"] == "3"
    assert SECRET not in fp.model_dump_json()


def test_http_target_defaults_faults_and_get() -> None:
    with FakeOpenAIServer(faults=FaultPlan(script={0: "empty_choices", 1: "500"})) as server:
        target = load_target({"kind": "http", "url": server.url + "/reply"})
        with pytest.raises(TargetCallError) as e:
            asyncio.run(_complete(target, _case()))
        assert e.value.kind == "bad_response" and target.should_retry(e.value)
        with pytest.raises(TargetCallError) as e:
            asyncio.run(_complete(target, _case()))
        assert e.value.status == 500
        r = asyncio.run(_complete(target, _case(context="ctx")))
        assert r.output and "where is my parcel" in r.output
        assert r.usage.prompt_tokens > 0  # default usage paths
        assert server.reply_requests[-1] == {"input": "where is my parcel", "history": [],
                                             "context": "ctx"}


# ------------------------------------------------------------------------ python target
def _sync_model(case: EvalCase) -> str:
    return f"sync:{case.input}:{len(case.history)}"


async def _async_model(case: EvalCase, sample: int = 0) -> Response:
    await asyncio.sleep(0)
    return Response(case_id="ignored", output=f"async:{case.input}:{sample}",
                    usage=Usage(prompt_tokens=2, completion_tokens=3))


def _dict_model(case: EvalCase, *, style: str = "plain") -> dict[str, Any]:
    return {"output": f"{style}:{case.case_id}", "usage": {"prompt_tokens": 1,
                                                            "completion_tokens": 1}}


def test_python_target_sync_async_and_return_shapes() -> None:
    case = _case(history=[Message(role="user", content="a")])
    r = asyncio.run(PythonTarget.from_callable(_sync_model).complete(case))
    assert r.output == "sync:where is my parcel:1" and r.case_id == "c1"
    r = asyncio.run(PythonTarget.from_callable(_async_model).complete(case, sample=4))
    assert (r.output, r.case_id, r.sample, r.usage.completion_tokens) == (
        "async:where is my parcel:4", "c1", 4, 3)
    t = PythonTarget.from_callable(_dict_model, version="7")
    r = asyncio.run(t.complete(case))
    assert r.output == "plain:c1" and r.latency_ms is not None
    assert t.fingerprint.parameters == {"version": "7"}
    bad = PythonTarget.from_callable(lambda c: 42)
    with pytest.raises(TypeError, match="expected str, Response"):
        asyncio.run(bad.complete(case))
    assert not bad.should_retry(TypeError("x"))


def test_python_target_from_yaml_with_python_path(tmp_path: Path) -> None:
    pkg = tmp_path / "models_dir"
    pkg.mkdir()
    (pkg / "my_models_for_test.py").write_text(textwrap.dedent("""\
        def answer(case, *, prefix="A"):
            return prefix + ": " + case.input.upper()
        """))
    path = _write(tmp_path, """\
        kind: python
        name: mine
        function: my_models_for_test:answer
        version: "2024-06"
        python_path: [models_dir]
        kwargs: {prefix: B}
        """)
    target = load_target(path)
    assert isinstance(target, PythonTarget) and target.name == "mine"
    assert target.fingerprint == TargetFingerprint(
        kind="python", model="my_models_for_test:answer",
        parameters={"version": "2024-06", "kwargs": {"prefix": "B"}})
    assert asyncio.run(target.complete(_case())).output == "B: WHERE IS MY PARCEL"
    with pytest.raises(ConfigError, match="module:function"):
        load_target({"kind": "python", "function": "nocolon"})
    with pytest.raises(ConfigError, match="not found"):
        load_target({"kind": "python", "function": "no_such_module_xyz:f"})
    with pytest.raises(ConfigError, match="has no attribute"):
        load_target({"kind": "python", "function": "json:no_such_function"})


def test_python_target_without_version_is_fingerprinted_by_its_source_file(
        tmp_path: Path) -> None:
    """Editing the function's file changes the fingerprint (new cache keys, no resuming a run
    of the old code); with `version:` set, the label alone decides."""
    import importlib
    import sys

    pkg = tmp_path / "code"
    pkg.mkdir()
    module = pkg / "edited_model_for_test.py"
    module.write_text("def answer(case):\n    return 'v1 ' + case.input\n")
    spec = {"kind": "python", "function": "edited_model_for_test:answer",
            "python_path": [str(pkg)]}
    before = load_target(spec).fingerprint
    assert before.parameters["code"].startswith("sha256:")
    assert load_target(spec).fingerprint == before  # stable
    module.write_text("def answer(case):\n    return 'v2 ' + case.input\n")
    sys.modules.pop("edited_model_for_test", None)
    importlib.invalidate_caches()
    after = load_target(spec).fingerprint
    assert after != before and after.parameters["code"] != before.parameters["code"]
    versioned = load_target({**spec, "version": "7"}).fingerprint
    assert versioned.parameters == {"version": "7"}


def test_demo_reference_models_load_as_python_targets(repo_root: Path) -> None:
    path = repo_root / "configs" / "targets" / "demo-v1.yaml"
    demo = repo_root / "src" / "synthloop" / "demo" / "models.py"
    if not demo.exists():
        pytest.skip("demo models not present")
    target = load_target(path)
    r = asyncio.run(target.complete(_case(input="How do I export my notes to PDF?")))
    assert r.output


def test_plugin_targets_go_through_the_registry() -> None:
    class EchoTarget(PythonTarget):
        @classmethod
        def from_config(cls, data: dict[str, Any], source: str = "<dict>",
                        base_dir: Path | None = None) -> EchoTarget:
            return cls(lambda c: c.input[::-1], name=data["name"], function_ref="echo",
                       version=data.get("version"))

    target_registry.register("echo-test", EchoTarget)
    target = load_target({"kind": "echo-test", "version": "1"})
    assert asyncio.run(target.complete(_case())).output == "lecrap ym si erehw"
    assert "echo-test" in target_registry.names()


def test_every_example_target_config_loads(repo_root: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    files = sorted((repo_root / "configs" / "targets").glob("*.yaml"))
    assert files
    for f in files:
        if f.stem.startswith("demo-") and not (
                repo_root / "src" / "synthloop" / "demo" / "models.py").exists():
            continue
        target = load_target(f)
        assert SECRET not in json.dumps(target.fingerprint.model_dump())
