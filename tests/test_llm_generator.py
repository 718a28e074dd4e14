"""The LLM generator against a real OpenAI-compatible server on 127.0.0.1 (FakeOpenAIServer)
with scripted replies: valid JSON, invalid JSON, schema-violating JSON, refusals, duplicates
and injected faults (429 with Retry-After, 5xx, resets, garbled bodies, timeouts)."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from synthloop.errors import ConfigError, DataError, TargetError
from synthloop.evalsets import EvalsetWriter, open_evalset
from synthloop.generate import GenerateOptions, generate
from synthloop.generate.llm import (
    LLMSpec,
    UserMessage,
    estimate_prompt_tokens,
    looks_like_refusal,
    parse_structured,
    plan_cells,
    strict_schema,
)
from synthloop.schema import EvalCase, Provenance
from synthloop.testing import FakeOpenAIServer, FaultPlan
from tests.conftest import run_cli

VOCAB = [f"{a}{b}{c}" for a in ("bra", "cle", "dro", "fen", "gli", "hor", "jut", "kem", "lav",
                                "mon", "nup", "pes", "qua", "ros", "sty", "tre", "vim", "wex")
         for b in ("a", "e", "i", "o", "u", "y") for c in ("n", "st", "rk", "lm", "p", "x", "dd")]
SECRET = "sk-test-SECRET-do-not-leak-1234567890"


def words_for(seed: Any, k: int = 7) -> str:
    return " ".join(random.Random(str(seed)).sample(VOCAB, k))


def cell_variant(prompt: str) -> tuple[int, int]:
    """Grid cell and refill variant from the default prompt's `(sample SEED-CELL-VARIANT)`."""
    m = re.search(r"\(sample \d+-(\d+)-(\d+)\)", prompt)
    assert m is not None, prompt
    return int(m.group(1)), int(m.group(2))


def schema_name(body: dict[str, Any]) -> str | None:
    rf = body.get("response_format")
    if not rf:
        return None
    return str(rf.get("json_schema", {}).get("name") or rf.get("type"))


def good_responder(body: dict[str, Any], index: int) -> str:
    """Distinct valid replies derived from the request (so they are reproducible)."""
    name = schema_name(body)
    seed = body.get("seed")
    if name == "user_message":
        return json.dumps({"message": words_for(seed)})
    if name == "user_reaction":
        last_reply = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        thumb = "up" if "helpful" in last_reply else "down"
        return json.dumps({"thumb": thumb, "rating": 4 if thumb == "up" else 2,
                           "comment": None, "follow_up": "follow " + words_for(seed, 5)})
    return "A helpful reply: " + words_for(seed, 6)


def write_spec(tmp_path: Path, base_url: str, **over: Any) -> Path:
    spec: dict[str, Any] = {
        "kind": "llm",
        "endpoint": {"base_url": base_url, "model": "fake-model", "timeout_s": 2.0,
                     "backoff_s": 0.01, "max_retries": 5},
        "n": 20, "seed": 3, "concurrency": 8,
        "personas": [{"name": "busy_parent", "description": "no time", "weight": 3},
                     {"name": "student", "locale": "de_DE", "traits": {"budget": "low"}}],
        "intents": [{"name": "refund", "description": "wants money back",
                     "reference_answer": "Go to Orders > Refund."},
                    {"name": "login", "description": "cannot log in", "weight": 2}],
        "pricing": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def opts(tmp_path: Path, **kw: Any) -> GenerateOptions:
    return GenerateOptions(cache=tmp_path / "cache.sqlite", progress=False, **kw)


# --------------------------------------------------------------------------- units
def test_parse_structured_accepts_fenced_json_and_reports_schema_errors() -> None:
    assert parse_structured('```json\n{"message": "hi"}\n```', UserMessage).message == "hi"
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_structured('{"message": "hi"', UserMessage)
    with pytest.raises(ValueError, match="does not match the schema: message: Field required; msg: Extra"):
        parse_structured('{"msg": "hi"}', UserMessage)
    with pytest.raises(ValueError, match="empty"):
        parse_structured("", UserMessage)


def test_strict_schema_requires_every_property_and_forbids_extras() -> None:
    schema = strict_schema(UserMessage)
    assert schema["required"] == ["message"]
    assert schema["additionalProperties"] is False
    jsonschema.validate({"message": "x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"message": "x", "extra": 1}, schema)


def test_refusal_detection() -> None:
    assert looks_like_refusal("I'm sorry, but I can't help with that.")
    assert looks_like_refusal("I cannot assist with this request")
    assert looks_like_refusal("As an AI, I do not write messages for users.")
    assert not looks_like_refusal("sorry to bother, where is my order BW-1234567?")
    assert not looks_like_refusal("i cant log in to my account")


# What customers really write: apologies and "I can't ..." about their own problem.
APOLOGETIC_USERS = [
    "I'm sorry to bother you, but my order BW-1234567 has not arrived",
    "Sorry, I ordered the wrong size, can I swap it?",
    "I am sorry but the charger broke after a week",
    "I can't create an account on your site",
    "I cannot provide my order number, I lost the email",
    "I'm unable to log in since yesterday",
    "Unfortunately, I can't find the invoice for order 123",
    "Apologies, I can't remember which email I used for the order",
]


def test_refusal_detection_inside_a_user_message_needs_an_unmistakable_refusal() -> None:
    for text in APOLOGETIC_USERS:
        assert not looks_like_refusal(text, user_text=True), text
    for text in ("I'm sorry, but I can't help with that.", "I cannot assist with this request",
                 "Sorry, I can't comply.", "I'm sorry, but I can't continue this role-play.",
                 "I'm sorry, I can't pretend to be a customer.", "I can't do that.",
                 "As an AI, I do not write messages for users.",
                 "I am unable to fulfill this request."):
        assert looks_like_refusal(text, user_text=True), text


def test_apologetic_user_messages_are_kept_not_dropped_as_refusals(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], index: int) -> str:
        cell, variant = cell_variant(body["messages"][1]["content"])
        return json.dumps({"message": f"{APOLOGETIC_USERS[cell]} ({words_for((cell, variant))})"})

    with FakeOpenAIServer(responder=responder) as server:
        path = write_spec(tmp_path, server.base_url, n=len(APOLOGETIC_USERS))
        m = generate(path, tmp_path / "out", opts(tmp_path))
        assert server.request_count == len(APOLOGETIC_USERS)     # nothing refilled
    assert m is not None
    assert m.provenance.details["dropped"] == {}
    inputs = [c.input for c in open_evalset(tmp_path / "out").cases()]
    assert [i.split(" (")[0] for i in inputs] == APOLOGETIC_USERS


def test_grid_is_seeded_and_follows_weights(tmp_path: Path) -> None:
    spec = LLMSpec.model_validate(yaml.safe_load(write_spec(tmp_path, "http://127.0.0.1:9/v1")
                                                 .read_text()))
    a = plan_cells(spec, 3000, seed=5)
    b = plan_cells(spec, 3000, seed=5)
    c = plan_cells(spec, 3000, seed=6)
    key = [(x.persona.name, x.intent.name, x.style.name) for x in a]
    assert key == [(x.persona.name, x.intent.name, x.style.name) for x in b]
    assert key != [(x.persona.name, x.intent.name, x.style.name) for x in c]
    personas = Counter(x.persona.name for x in a)
    assert 0.70 < personas["busy_parent"] / 3000 < 0.80          # weight 3 : 1
    intents = Counter(x.intent.name for x in a)
    assert 0.60 < intents["login"] / 3000 < 0.73                 # weight 2 : 1
    styles = Counter(x.style.name for x in a)
    assert set(styles) == {"terse", "typos", "non_native", "other_language", "search_box",
                           "articulate"}
    assert {x.locale for x in a if x.persona.name == "student"} == {"de_DE"}


def test_spec_errors_are_listed_together(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", personaz=[], concurency=3)
    with pytest.raises(ConfigError) as e:
        generate(path, tmp_path / "out", opts(tmp_path))
    text = str(e.value)
    assert "did you mean `personas`?" in text and "did you mean `concurrency`?" in text
    assert not (tmp_path / "out").exists()
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", personas=[], intents=[],
                      styles=[{"name": "a", "instruction": "x", "weight": 0}])
    with pytest.raises(ConfigError) as e:
        generate(path, tmp_path / "out", opts(tmp_path))
    assert "list at least one persona" in str(e.value)
    assert "list at least one intent" in str(e.value)
    assert "at least one style needs a weight" in str(e.value)


def test_template_with_undefined_variable_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "opener.j2").write_text("Write as {{ persona.name }} about {{ intnet.name }}")
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", prompt_template="opener.j2")
    with pytest.raises(ConfigError, match=r"opener\.j2: 'intnet' is undefined"):
        generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", prompt_template="missing.j2")
    with pytest.raises(ConfigError, match="template file 'missing.j2' not found"):
        generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))


def test_a_typo_in_a_later_prompt_stops_before_any_request(tmp_path: Path) -> None:
    # the reaction prompt is first rendered after the opener and the reply were paid for
    reaction = ("{% for m in conversation %}{{ m.content }}{% endfor %}"
                "{% if want_follow_up %}{{ folow_up_hint }}{% endif %} (sample {{ sample_id }})")
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, feedback=True, reaction_template=reaction,
                          turns={"max": 2, "follow_up_prob": 1.0})
        with pytest.raises(ConfigError, match=r"reaction_template: 'folow_up_hint' is undefined"):
            generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))
        with pytest.raises(ConfigError, match=r"reaction_template: 'folow_up_hint' is undefined"):
            generate(path, tmp_path / "out", opts(tmp_path))
        assert server.request_count == 0
        # a style instruction and the assistant's system prompt are checked the same way
        for over in ({"styles": [{"name": "s", "instruction": "as {{ persona.name }} {{ mood }}"}]},
                     {"assistant": {"system_prompt": "You help {{ product.name }} {{ user }}"}}):
            path = write_spec(tmp_path, server.base_url, feedback=True, **over)
            with pytest.raises(ConfigError, match=r"'(mood|user)' is undefined"):
                generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))
        assert server.request_count == 0
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- against the server
def test_generates_valid_evalset_with_structured_output(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url)
        m = generate(path, tmp_path / "ev" / "v1", opts(tmp_path))
        assert m is not None
        body = server.requests[0]
        headers = server.headers[0]
    assert headers.get("Authorization") == f"Bearer {SECRET}"
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["required"] == ["message"]
    assert body["model"] == "fake-model" and body["max_tokens"] == 256 and "seed" in body
    es = open_evalset(tmp_path / "ev" / "v1")
    cases = es.cases()
    assert m.counts.cases == len(cases) == 20 and m.counts.sessions == 20
    assert len({c.case_id for c in cases}) == 20
    for c in cases:
        assert c.input and c.turn == 0 and not c.history
        assert set(c.tags) == {"persona", "intent", "style", "locale"}
        assert c.references.good == (["Go to Orders > Refund."] if c.tags["intent"] == "refund"
                                     else [])
    d = m.provenance.details
    assert m.provenance.generator == "llm" and m.provenance.seed == 3
    assert d["requests"] == server.request_count == 20 and d["retries"] == 0
    assert d["tokens"] == {"prompt": server.prompt_tokens, "completion": server.completion_tokens}
    assert d["cost_usd"] == pytest.approx((server.prompt_tokens * 0.5 +
                                           server.completion_tokens * 1.5) / 1000)
    report = json.loads((tmp_path / "ev" / "v1" / "dedup_report.json").read_text())
    assert report["counts"]["kept"] == 20 and report["dropped"] == []
    assert report["diversity"]["openers"]["unique_ratio"] == 1.0
    # the API key is nowhere on disk
    for f in [*(tmp_path / "ev" / "v1").iterdir(), tmp_path / "cache.sqlite"]:
        assert SECRET.encode() not in f.read_bytes()
    db = sqlite3.connect(tmp_path / "cache.sqlite")
    assert all(SECRET not in v for (v,) in db.execute("SELECT value FROM responses"))
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 20


def test_invalid_and_schema_violating_json_are_repaired_with_the_error(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], index: int) -> str:
        msgs = body["messages"]
        repairs = sum(1 for m in msgs if m["role"] == "user" and "was invalid" in m["content"])
        cell, _ = cell_variant(msgs[1]["content"])
        if cell % 4 == 0 and repairs == 0:
            return '{"message": "unterminated'                      # invalid JSON
        if cell % 4 == 1 and repairs == 0:
            return json.dumps({"text": "wrong key", "extra": 1})    # schema-violating
        if cell % 4 == 2 and repairs < 3:
            return json.dumps({"message": ""})                      # violates minLength, always
        return json.dumps({"message": words_for((cell, repairs))})

    with FakeOpenAIServer(responder=responder) as server:
        path = write_spec(tmp_path, server.base_url, n=8, max_repairs=2, refill_rounds=0)
        m = generate(path, tmp_path / "out", opts(tmp_path))
        repair_bodies = [b for b in server.requests
                         if any("was invalid" in x["content"] for x in b["messages"])]
    assert m is not None
    d = m.provenance.details
    # cells 0,4: one repair each; 1,5: one each; 2,6: two repairs each, then dropped
    assert d["repairs"] == 2 + 2 + 4
    assert d["requests"] == 8 + 8
    assert d["dropped"] == {"invalid_output": 2}
    assert m.counts.cases == 6
    assert m.notes and "2 of 8 grid cells could not be filled" in m.notes[0]
    errors = " ".join(b["messages"][-1]["content"] for b in repair_bodies)
    assert "not valid JSON" in errors
    assert "message: Field required" in errors and "text: Extra inputs are not permitted" in errors
    assert "String should have at least 1 character" in errors
    # the invalid reply is echoed back as the assistant's turn before the error
    assert repair_bodies[0]["messages"][-2]["role"] == "assistant"
    report = json.loads((tmp_path / "out" / "dedup_report.json").read_text())
    invalid = [r for r in report["dropped"] if r["reason"] == "invalid_output"]
    assert sorted(r["cell"] for r in invalid) == [2, 6]
    assert "String should have at least 1 character" in invalid[0]["error"]


def test_refusals_are_dropped_and_refilled(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], index: int) -> str | dict[str, Any]:
        prompt = body["messages"][1]["content"]
        cell, variant = cell_variant(prompt)
        if cell == 1 and variant == 0:          # the API's refusal field
            return {"id": "x", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": None,
                                             "refusal": "I can't help with that."}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
        if cell == 2 and variant == 0:          # refusal-like plain text
            return "I'm sorry, but I can't write messages pretending to be a user."
        if cell == 3 and variant == 0:          # refusal inside valid JSON
            return json.dumps({"message": "I'm sorry, I cannot assist with that request."})
        return json.dumps({"message": words_for((cell, variant))})

    with FakeOpenAIServer(responder=responder) as server:
        path = write_spec(tmp_path, server.base_url, n=6)
        m = generate(path, tmp_path / "out", opts(tmp_path))
        assert m is not None
        assert m.provenance.details["tokens"]["prompt"] == server.prompt_tokens
    assert m.counts.cases == 6 and not m.notes
    assert m.provenance.details["dropped"] == {"refusal": 3}
    assert m.provenance.details["repairs"] == 0          # refusals are not re-asked
    report = json.loads((tmp_path / "out" / "dedup_report.json").read_text())
    assert sorted((r["cell"], r["reason"]) for r in report["dropped"]) == [
        (1, "refusal"), (2, "refusal"), (3, "refusal")]
    assert all(not looks_like_refusal(c.input) for c in open_evalset(tmp_path / "out").cases())


def test_duplicates_are_removed_reported_and_refilled(tmp_path: Path) -> None:
    def responder(body: dict[str, Any], index: int) -> str:
        prompt = body["messages"][1]["content"]
        cell, variant = cell_variant(prompt)
        if variant == 0 and cell in (3, 7):
            return json.dumps({"message": "Where is my ORDER?"})         # exact dup of cell 0
        if variant == 0 and cell == 5:
            return json.dumps({"message": "where is my ordre"})   # near dup of cell 0 (a typo)
        if cell == 0:
            return json.dumps({"message": "where is my order"})
        if "already written by other users" in prompt:
            return json.dumps({"message": "refill " + words_for((cell, variant))})
        return json.dumps({"message": words_for((cell, variant))})

    with FakeOpenAIServer(responder=responder) as server:
        path = write_spec(tmp_path, server.base_url, n=10)
        m = generate(path, tmp_path / "out", opts(tmp_path))
        refill_prompts = [b["messages"][1]["content"] for b in server.requests
                          if "already written" in b["messages"][1]["content"]]
    assert m is not None and m.counts.cases == 10
    assert m.provenance.details["dropped"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert len(refill_prompts) == 3 and all("where is my order" in p for p in refill_prompts)
    report = json.loads((tmp_path / "out" / "dedup_report.json").read_text())
    assert report["counts"]["exact_duplicate"] == 2 and report["counts"]["near_duplicate"] == 1
    near = next(r for r in report["dropped"] if r["reason"] == "near_duplicate")
    assert near["cell"] == 5 and near["duplicate_of"] == "llm-3-000000"
    assert near["duplicate_of_text"] == "where is my order" and near["similarity"] >= 0.6
    inputs = [c.input for c in open_evalset(tmp_path / "out").cases()]
    assert sum(i.startswith("refill ") for i in inputs) == 3


def test_faults_are_retried_and_accounted(tmp_path: Path) -> None:
    script = {0: "429", 1: "500", 2: "bad_json", 3: "empty_choices", 4: "reset", 5: "503",
              9: "429", 12: "timeout"}
    plan = FaultPlan(script=script, retry_after_s=0.2, timeout_s=6.0)
    with FakeOpenAIServer(responder=good_responder, faults=plan) as server:
        path = write_spec(tmp_path, server.base_url, n=12, concurrency=1,
                          endpoint={"timeout_s": 1.5, "backoff_s": 0.01, "max_retries": 8})
        t0 = time.perf_counter()
        m = generate(path, tmp_path / "out", opts(tmp_path))
        wall = time.perf_counter() - t0
        assert m is not None
        d = m.provenance.details
        assert d["requests"] == server.request_count == 12 + len(script)
        assert d["retries"] == len(server.faults_injected) == len(script)
        assert d["tokens"] == {"prompt": server.prompt_tokens,
                               "completion": server.completion_tokens}
    assert m.counts.cases == 12
    assert d["errors"] == {"bad_response": 2, "connect": 1, "http_429": 2, "http_500": 1,
                           "http_503": 1, "timeout": 1}
    assert wall >= 0.4          # two 429s honoured Retry-After: 0.2 s each


def test_warm_cache_gives_identical_hash_and_no_requests(tmp_path: Path) -> None:
    faults = FaultPlan(rate=0.15, kinds=("429", "500", "bad_json"), seed=2, retry_after_s=0.01)
    with FakeOpenAIServer(responder=good_responder, faults=faults) as server:
        path = write_spec(tmp_path, server.base_url, n=40, turns={"max": 2, "follow_up_prob": 0.5},
                          feedback=True)
        first = generate(path, tmp_path / "a", opts(tmp_path))
        sent = server.request_count
        assert sent > 40
        second = generate(path, tmp_path / "b", opts(tmp_path))
        assert server.request_count == sent                          # zero new requests
        third = generate(path, tmp_path / "c", opts(tmp_path, seed=4))
        assert server.request_count > sent
    assert first is not None and second is not None and third is not None
    assert second.content_hash == first.content_hash
    assert third.content_hash != first.content_hash
    assert second.provenance.details["cache_hits"] == first.provenance.details["replies"]
    assert second.provenance.details["cost_usd"] == 0.0


def test_multi_turn_follow_ups_and_expected_feedback(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, n=30, feedback=True,
                          turns={"max": 3, "follow_up_prob": 0.6},
                          assistant={"system_prompt": "You help {{ product.name }} users.",
                                     "max_tokens": 99})
        m = generate(path, tmp_path / "out", opts(tmp_path))
        bodies = list(server.requests)
    assert m is not None
    cases = open_evalset(tmp_path / "out").cases()
    by_session: dict[str, list[EvalCase]] = {}
    for c in cases:
        by_session.setdefault(c.session_id or "", []).append(c)
    assert len(by_session) == 30 and m.counts.sessions == 30
    turns = Counter(len(v) for v in by_session.values())
    assert set(turns) <= {1, 2, 3} and turns[1] < 30 and turns[2] + turns[3] > 0
    for session in by_session.values():
        for t, c in enumerate(session):
            assert c.turn == t and c.case_id.endswith(f"-t{t}")
            assert len(c.history) == 2 * t
            assert c.reply is not None and c.reply.startswith("A helpful reply")
            assert c.expected_feedback is not None and c.expected_feedback.thumb.value == "up"
            assert c.expected_feedback.rating == 4
            if t:
                prev = session[t - 1]
                assert c.history[-1].content == prev.reply     # conditioned on the last reply
                assert c.input.startswith("follow ")
    replies = [b for b in bodies if "response_format" not in b]
    assert replies and all(b["messages"][0]["content"] == "You help the assistant users."
                           and b["max_tokens"] == 99 for b in replies)
    reactions = [b for b in bodies if schema_name(b) == "user_reaction"]
    assert any("A helpful reply" in b["messages"][1]["content"] for b in reactions)
    assert m.feedback_summary["thumb_up_rate"] == 1.0


def test_max_cost_stops_within_one_request_and_writes_partial(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, n=200, concurrency=4,
                          pricing={"prompt_per_1k": 1.0, "completion_per_1k": 2.0},
                          endpoint={"max_tokens": 40})
        budget = 0.8
        m = generate(path, tmp_path / "out", opts(tmp_path, max_cost=budget))
        assert m is not None
        spent = (server.prompt_tokens * 1.0 + server.completion_tokens * 2.0) / 1000
        bodies = list(server.requests)
    assert m.partial is True
    assert m.notes and m.notes[0].startswith("stopped by the cost budget")
    d = m.provenance.details
    assert d["budget_stopped"] is True and d["budget_stops"] >= 1
    assert d["cost_usd"] == pytest.approx(spent)
    assert spent <= budget
    # within one request of the budget: what is left is less than the worst case of a
    # request (the next one was not sent because it could have exceeded the budget)
    worst = max((estimate_prompt_tokens(b["messages"]) * 1.0 + 40 * 2.0) / 1000
                for b in bodies)
    assert budget - spent < worst
    assert 0 < m.counts.cases < 200
    assert m.counts.cases == d["sessions_written"]


def test_max_cost_below_one_request_writes_nothing(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url)
        with pytest.raises(ConfigError, match="below the worst-case cost of one request"):
            generate(path, tmp_path / "out", opts(tmp_path, max_cost=0.0001))
        assert server.request_count == 0
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_plan_and_calls_nothing(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, n=50, feedback=True,
                          turns={"max": 2, "follow_up_prob": 0.5})
        assert generate(path, tmp_path / "out", opts(tmp_path, dry_run=True)) is None
        assert server.request_count == 0
    out = capsys.readouterr().out
    assert "dry run: llm generator, 50 sessions (seed 3)" in out
    assert "busy_parent" in out and "refund" in out and "terse" in out
    assert "openers 50, replies 75, reactions 75" in out
    assert "tokens    prompt ~" in out and "cost      <= $" in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache.sqlite").exists()
    generate(path, tmp_path / "out", opts(tmp_path, dry_run=True, sessions=7))
    assert "llm generator, 7 sessions" in capsys.readouterr().out


def test_grounded_mode_follows_the_skeleton_distribution(tmp_path: Path) -> None:
    skeleton = []
    for i in range(100):
        persona, intent, locale = (("shopper", "order_status", "en_GB") if i % 10 else
                                   ("reseller", "invoice_request", "fr_FR"))
        skeleton.append(EvalCase(case_id=f"s{i}", session_id=f"s{i}", input="x",
                                 tags={"persona": persona, "intent": intent, "locale": locale}))
        skeleton.append(EvalCase(case_id=f"s{i}-1", session_id=f"s{i}", turn=1, input="y",
                                 tags={"persona": "ignored", "intent": "ignored"}))
    with EvalsetWriter(tmp_path / "skel" / "v1", provenance=Provenance(generator="rules")) as w:
        w.write_cases(skeleton)
        skel = w.close()
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, n=300, personas=[], intents=[
            {"name": "invoice_request", "description": "needs a VAT invoice"}],
            personas_from=str(tmp_path / "skel" / "v1"))
        m = generate(path, tmp_path / "out", opts(tmp_path))
        prompts = [b["messages"][1]["content"] for b in server.requests]
    assert m is not None and m.provenance.source_data_hash == skel.content_hash
    tags = [c.tags for c in open_evalset(tmp_path / "out").cases()]
    pairs = Counter((t["persona"], t["intent"], t["locale"]) for t in tags)
    assert set(pairs) == {("shopper", "order_status", "en_GB"),
                          ("reseller", "invoice_request", "fr_FR")}
    assert 0.04 < pairs[("reseller", "invoice_request", "fr_FR")] / 300 < 0.17
    assert any("needs a VAT invoice" in p for p in prompts)       # catalog description used
    assert any("Locale: fr_FR" in p for p in prompts)


def test_grounded_mode_from_an_evalset_without_tags_is_an_error(tmp_path: Path) -> None:
    with EvalsetWriter(tmp_path / "skel", provenance=Provenance(generator="import")) as w:
        w.write_cases([EvalCase(case_id="a", input="x")])
        w.close()
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", personas=[], intents=[],
                      personas_from=str(tmp_path / "skel"))
    with pytest.raises(ConfigError, match="no session openers tagged with persona and intent"):
        generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))


def test_grounded_mode_from_the_rules_spec(tmp_path: Path, repo_root: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rules = repo_root / "generators" / "support_assistant.yaml"
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", personas=[], intents=[], n=400,
                      personas_from=str(rules))
    generate(path, tmp_path / "out", opts(tmp_path, dry_run=True))
    out = capsys.readouterr().out
    personas_line = next(line for line in out.splitlines() if line.strip().startswith("personas"))
    # the rules spec weights personas 4:3:2:1 (first_time_buyer is the most frequent)
    assert personas_line.split()[1] == "first_time_buyer"
    assert "frustrated_customer" in personas_line and "order_status" in out


def test_auth_failure_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=good_responder, faults=FaultPlan(script={0: "401"})) as server:
        path = write_spec(tmp_path, server.base_url, concurrency=1)
        with pytest.raises(TargetError, match="refused the credentials"):
            generate(path, tmp_path / "out", opts(tmp_path))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unreachable_endpoint_and_missing_key(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    path = write_spec(tmp_path, f"http://127.0.0.1:{port}/v1", n=3,
                      endpoint={"max_retries": 1, "backoff_s": 0.0})
    with pytest.raises(TargetError, match="every request failed"):
        generate(path, tmp_path / "out", opts(tmp_path))
    path = write_spec(tmp_path, "https://api.example.invalid/v1", n=3)
    with pytest.raises(TargetError, match="OPENAI_API_KEY is not set"):
        generate(path, tmp_path / "out", opts(tmp_path))


def test_key_echoed_in_a_rejected_request_is_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_harness import EchoingServer

    key, token = "sk-gen-SECRET-31337", "team-token-7d2c9e1f"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with EchoingServer() as server:
        for status in ("400", "422"):
            path = write_spec(tmp_path, f"{server.url}/e{status}/v1", n=2,
                              endpoint={"api_key_env": "OPENAI_API_KEY",
                                        "headers": {"X-Team-Token": token}})
            with pytest.raises(TargetError) as err:
                generate(path, tmp_path / "out", opts(tmp_path))
            assert f"{status}" in str(err.value) and "Bearer ***" in str(err.value), err.value
            assert key not in str(err.value) and token not in str(err.value)


def test_existing_output_is_refused_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url)
        with pytest.raises(DataError, match="never overwritten"):
            generate(path, tmp_path / "out", opts(tmp_path))
        assert server.request_count == 0


def test_cli_generate(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=good_responder) as server:
        path = write_spec(tmp_path, server.base_url, n=12)
        code, out, err = run_cli("generate", str(path), "--out", str(tmp_path / "o"), "-n", "5",
                                 "--cache", str(tmp_path / "c.sqlite"), "--max-cost", "10")
        assert code == 0, err
        assert server.request_count == 5
    assert "wrote evalset" in out and "cases 5" in out and "5 requests" in out
    bad = write_spec(tmp_path, "http://127.0.0.1:9/v1", endpiont={"x": 1})
    code, out, err = run_cli("generate", str(bad), "--out", str(tmp_path / "p"))
    assert code == 2
    assert "did you mean `endpoint`?" in err and "Traceback" not in err


@pytest.mark.slow
def test_acceptance_1000_interactions_concurrency_32_with_10pct_faults(tmp_path: Path) -> None:
    kinds = ("429", "500", "503", "timeout", "reset", "bad_json", "empty_choices")
    # the client timeout is generous so that only injected `timeout` faults time out, even on
    # a loaded machine (a healthy reply cut off by the client would be counted by the server)
    plan = FaultPlan(rate=0.10, kinds=kinds, seed=11, retry_after_s=0.05, timeout_s=10.0)
    with FakeOpenAIServer(responder=good_responder, faults=plan, latency_s=0.005) as server:
        path = write_spec(tmp_path, server.base_url, n=1000, concurrency=32,
                          endpoint={"timeout_s": 3.0, "backoff_s": 0.02, "max_retries": 8})
        m = generate(path, tmp_path / "out", opts(tmp_path))
        assert m is not None
        d = m.provenance.details
        injected = Counter(kind for _, kind in server.faults_injected)
        assert d["requests"] == server.request_count, (d, injected)
        assert d["retries"] == len(server.faults_injected) > 50, (d, injected)
        assert d["tokens"] == {"prompt": server.prompt_tokens,
                               "completion": server.completion_tokens}, (d, injected)
        assert d["cost_usd"] == pytest.approx((server.prompt_tokens * 0.5 +
                                               server.completion_tokens * 1.5) / 1000)
        sent = server.request_count
        again = generate(path, tmp_path / "again", opts(tmp_path))
        assert server.request_count == sent
    assert again is not None and again.content_hash == m.content_hash
    cases = open_evalset(tmp_path / "out").cases()
    assert len(cases) == m.counts.cases == 1000 and len({c.case_id for c in cases}) == 1000
    schema = strict_schema(UserMessage)
    for c in cases:
        jsonschema.validate({"message": c.input}, schema)
        EvalCase.model_validate(c.model_dump())
