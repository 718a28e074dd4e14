"""LLM judges against the real local OpenAI-compatible server (synthloop.testing)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from synthloop.errors import ConfigError, TargetError
from synthloop.scorers import ScorersConfig, score_run
from synthloop.testing import FakeOpenAIServer, FaultPlan
from tests.test_scorers import build, case, failed, make_run, ok, read_scores


def _user(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][0]["content"])


def section(body: dict[str, Any], title: str) -> str:
    """The text under `## title` in the first user message of a judge request."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", _user(body), re.S | re.M)
    assert m, f"no section {title!r}"
    return m.group(1).strip()


def paris_grader(body: dict[str, Any], index: int) -> str:
    reply = section(body, "Reply to grade")
    score = 5 if "paris" in reply.lower() else 2 if reply else 1
    return json.dumps({"reasoning": f"graded {reply[:20]}", "score": score})


def judge_entry(server: FakeOpenAIServer, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "quality", "kind": "llm_judge", "model": "judge-1",
                             "base_url": server.base_url, "rubric": "Is the answer correct?",
                             "backoff_s": 0.01, "max_retries": 2}
    entry.update(kw)
    return entry


def cfg(*entries: dict[str, Any]) -> ScorersConfig:
    return ScorersConfig.from_data({"scorers": list(entries)})


def _capital_run(tmp_path: Path, name: str = "run") -> Path:
    cases = [case("a", ["Paris"], inp="Capital of France?"),
             case("b", ["Paris"], inp="Capital of France, again?"),
             case("c", ["Paris"], inp="And now?")]
    return make_run(tmp_path, cases, [ok("a", "It is Paris."), ok("b", "Lyon"), failed("c")],
                    name=name)


def test_pointwise_judge_scores_with_structured_output(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    with FakeOpenAIServer(responder=paris_grader) as server:
        summary = score_run(run, cfg(judge_entry(server)), cache=tmp_path / "cache.sqlite")
        bodies = list(server.requests)
    got = read_scores(run)
    assert got[("a", 0, "quality")]["value"] == 5.0
    assert got[("a", 0, "quality")]["explanation"] == "graded It is Paris."
    assert got[("b", 0, "quality")]["value"] == 2.0
    # the target failed on c: worst score, no judge call
    assert got[("c", 0, "quality")]["value"] == 1.0
    assert got[("c", 0, "quality")]["explanation"] == "no output: timeout"
    assert len(bodies) == 2
    body = bodies[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0.0 and body["seed"] == 0
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert schema["additionalProperties"] is False
    assert "Is the answer correct?" in section(body, "Rubric")
    assert section(body, "Reference answer(s) known to be good") == "- Paris"
    assert summary["metrics"]["quality"]["kind"] == "ordinal"
    assert summary["usage"]["quality"]["verdicts"] == 2
    assert summary["usage"]["quality"]["requests"] == 2


def test_verdicts_are_cached_so_rescoring_costs_nothing(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(responder=paris_grader) as server:
        score_run(run, cfg(judge_entry(server)), cache=cache)
        first = server.request_count
        summary = score_run(run, cfg(judge_entry(server)), cache=cache)
        assert server.request_count == first == 2
        assert summary["usage"]["quality"]["cached"] == 2
        # a different rubric is a different request
        score_run(run, cfg(judge_entry(server, rubric="Is it polite?")), cache=cache)
        assert server.request_count == 4
        # no cache: asks again
        score_run(run, cfg(judge_entry(server)), no_cache=True)
        assert server.request_count == 6
    assert read_scores(run)[("a", 0, "quality")]["value"] == 5.0


def test_invalid_verdicts_are_reasked_then_recorded_as_failures(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    seen: dict[str, int] = {}

    def sloppy(body: dict[str, Any], index: int) -> str:
        if "Lyon" in section(body, "Reply to grade"):
            return "I think it's fine!"  # never valid JSON
        reply = section(body, "Reply to grade")
        n = seen[reply] = seen.get(reply, 0) + 1
        if n == 1:
            return json.dumps({"reasoning": "out of range", "score": 9})
        return "```json\n" + json.dumps({"reasoning": "ok now", "score": 4}) + "\n```"

    with FakeOpenAIServer(responder=sloppy) as server:
        summary = score_run(run, cfg(judge_entry(server, reask=1)), no_cache=True)
        bodies = list(server.requests)
    got = read_scores(run)
    assert got[("a", 0, "quality")]["value"] == 4.0
    assert got[("b", 0, "quality")]["value"] is None
    err = got[("b", 0, "quality")]["error"]
    assert err.startswith("judge failed: invalid verdict after 2 replies")
    assert summary["metrics"]["quality"]["failures"] == 1
    assert summary["usage"]["quality"]["reasks"] == 2
    reask = [b for b in bodies if len(b["messages"]) == 4]
    assert reask and "score 9 is outside 1..5" in reask[0]["messages"][-1]["content"]


def test_transient_faults_are_retried_honouring_retry_after(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    plan = FaultPlan(script={0: "429", 1: "500", 2: "bad_json", 3: "empty_choices"},
                     retry_after_s=0.05)
    with FakeOpenAIServer(responder=paris_grader, faults=plan) as server:
        summary = score_run(run, cfg(judge_entry(server, concurrency=1, max_retries=4)),
                            no_cache=True)
        assert server.request_count == 6
    got = read_scores(run)
    assert [got[(c, 0, "quality")]["value"] for c in "ab"] == [5.0, 2.0]
    use = summary["usage"]["quality"]
    assert use["retries"] == 4
    assert use["errors"] == {"http_429": 1, "http_500": 1, "bad_response": 1,
                             "empty_reply": 1}


def test_exhausted_retries_are_recorded_not_crashed(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    plan = FaultPlan(rate=1.0, kinds=("503",))
    with FakeOpenAIServer(responder=paris_grader, faults=plan) as server:
        summary = score_run(run, cfg(judge_entry(server, max_retries=1)), no_cache=True)
        assert server.request_count == 4
    got = read_scores(run)
    for c in "ab":
        assert got[(c, 0, "quality")]["value"] is None
        assert got[(c, 0, "quality")]["error"].startswith("judge failed: http_503 after 2 attempts")
    assert summary["metrics"]["quality"]["failures"] == 2


def test_timeouts_are_retried_then_recorded(tmp_path: Path) -> None:
    run = make_run(tmp_path, [case("a", ["Paris"])], [ok("a", "Paris")])
    plan = FaultPlan(script={0: "timeout"}, timeout_s=3.0)
    with FakeOpenAIServer(responder=paris_grader, faults=plan) as server:
        summary = score_run(run, cfg(judge_entry(server, timeout_s=0.3, max_retries=1)),
                            no_cache=True)
    assert read_scores(run)[("a", 0, "quality")]["value"] == 5.0
    assert summary["usage"]["quality"]["errors"] == {"timeout": 1}


def test_rejected_credentials_stop_the_command_and_write_nothing(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("401",))) as server, \
            pytest.raises(TargetError, match="refused the credentials"):
        score_run(run, cfg({"name": "x", "kind": "exact_match"}, judge_entry(server)),
                  no_cache=True)
    assert not (run / "scores.parquet").exists() and not (run / "scores.json").exists()
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("404",))) as server, \
            pytest.raises(TargetError, match="has no model 'judge-1'"):
        score_run(run, cfg(judge_entry(server)), no_cache=True)


def test_api_key_is_sent_but_never_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-judge-SECRET-4242"
    monkeypatch.setenv("JUDGE_API_KEY", key)
    run = _capital_run(tmp_path)
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(responder=paris_grader) as server:
        score_run(run, cfg(judge_entry(server, api_key_env="JUDGE_API_KEY",
                                       headers={"X-Api-Key": key, "X-Team": "evals"})),
                  cache=cache)
        auth = {h.get("Authorization") for h in server.headers}
    assert auth == {f"Bearer {key}"}
    for path in (run / "scores.json", run / "scores.parquet"):
        assert key.encode() not in path.read_bytes(), path
    with sqlite3.connect(cache) as conn:
        rows = conn.execute("SELECT key, value FROM responses").fetchall()
    assert rows and all(key not in k + v for k, v in rows)
    doc = json.loads((run / "scores.json").read_text())
    assert doc["scorers"]["quality"]["api_key_env"] == "JUDGE_API_KEY"
    assert doc["scorers"]["quality"]["headers"] == {"X-Api-Key": "***redacted***",
                                                     "X-Team": "evals"}


def test_key_echoed_in_a_server_error_is_masked_in_scores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_harness import EchoingServer

    key, token = "sk-judge-SECRET-4242", "team-token-7d2c9e1f"
    monkeypatch.setenv("JUDGE_API_KEY", key)
    run = _capital_run(tmp_path)
    with EchoingServer() as server:
        for status in ("400", "422"):  # JSON errors, which the SDK puts in its message
            score_run(run, cfg(judge_entry(server, base_url=f"{server.url}/e{status}/v1",
                                           api_key_env="JUDGE_API_KEY", max_retries=0,
                                           headers={"X-Team-Token": token})), no_cache=True)
            errors = [read_scores(run)[(c, 0, "quality")]["error"] for c in "ab"]
            assert all(f"HTTP {status}" in e or f"http_{status}" in e for e in errors), errors
            assert all("Bearer ***" in e and key not in e and token not in e for e in errors), errors
            for path in (run / "scores.json", run / "scores.parquet"):
                data = path.read_bytes()
                assert key.encode() not in data and token.encode() not in data, path


def test_missing_key_for_a_remote_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        build([{"name": "j", "kind": "llm_judge", "model": "m", "rubric": "r",
                "base_url": "https://judge.example.com/v1", "api_key_env": "NOPE_KEY_ZZ"},
               {"name": "k", "kind": "llm_judge", "model": "m", "rubric": "r",
                "base_url": "ftp://x", "scale": "weird"}])
    text = str(e.value)
    assert "environment variable NOPE_KEY_ZZ is not set" in text
    assert "base_url: must be an http(s) URL" in text and "scale:" in text


def test_template_mistakes_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'nope' is undefined"):
        build([{"name": "j", "kind": "llm_judge", "model": "m", "rubric": "r",
                "base_url": "http://127.0.0.1:9/v1", "template": "{{ input }} {{ nope }}"}])
    with pytest.raises(ConfigError, match="invalid template"):
        build([{"name": "j", "kind": "llm_judge", "model": "m", "rubric": "r",
                "base_url": "http://127.0.0.1:9/v1", "template": "{% if %}"}])


def test_custom_template_binary_scale_and_json_object_mode(tmp_path: Path) -> None:
    run = _capital_run(tmp_path)

    def yes_no(body: dict[str, Any], index: int) -> str:
        ok_ = "paris" in _user(body).lower()
        return json.dumps({"reasoning": "r", "score": ok_})  # a boolean: accepted as 0/1

    with FakeOpenAIServer(responder=yes_no) as server:
        summary = score_run(run, cfg(judge_entry(
            server, scale="binary", structured_output="json_object",
            template="Q: {{ input }}\nA: {{ output }}\n{{ scale_text }}")), no_cache=True)
        body = server.requests[0]
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][1]["content"].startswith("Q: Capital of France?\nA: It is Paris.")
    got = read_scores(run)
    assert [got[(c, 0, "quality")]["value"] for c in "abc"] == [1.0, 0.0, 0.0]
    assert summary["metrics"]["quality"]["kind"] == "binary"


def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    cases = [case(f"c{i}", ["Paris"], inp=f"question {i}") for i in range(8)]
    run = make_run(tmp_path, cases, [ok(f"c{i}", f"answer {i}") for i in range(8)])
    with FakeOpenAIServer(responder=paris_grader, latency_s=0.1) as server:
        t0 = time.perf_counter()
        score_run(run, cfg(judge_entry(server, concurrency=2)), no_cache=True)
        elapsed = time.perf_counter() - t0
        assert server.request_count == 8
    assert elapsed >= 0.4  # 8 requests of 0.1 s, at most 2 at a time


def test_identical_requests_in_one_run_are_paid_once(tmp_path: Path) -> None:
    """`replay --repeats 4` at temperature 0 often gives the same reply four times: the four
    identical verdict requests run concurrently, and only one of them may reach the judge."""
    cases = [case("a", ["Paris"]), case("b", ["Paris"])]
    run = make_run(tmp_path, cases, [ok("a", "It is Paris.", sample=s) for s in range(4)]
                   + [ok("b", "Lyon", sample=s) for s in range(3)])
    with FakeOpenAIServer(responder=paris_grader, latency_s=0.05) as server:
        summary = score_run(run, cfg(judge_entry(server)), cache=tmp_path / "cache.sqlite")
        assert server.request_count == 2
    got = read_scores(run)
    assert [got[("a", s, "quality")]["value"] for s in range(4)] == [5.0] * 4
    assert [got[("b", s, "quality")]["value"] for s in range(3)] == [2.0] * 3
    use = summary["usage"]["quality"]
    assert use["requests"] == 2 and use["verdicts"] == 7 and use["cached"] == 5

    # a failed verdict is the failure of every case that asked the same question
    def never_json(body: dict[str, Any], index: int) -> str:
        return "no verdict today"

    with FakeOpenAIServer(responder=never_json) as server:
        summary = score_run(run, cfg(judge_entry(server, rubric="Other?", reask=0)),
                            cache=tmp_path / "cache.sqlite")
        assert server.request_count == 2
    got = read_scores(run)
    assert all(got[("a", s, "quality")]["value"] is None for s in range(4))
    assert "invalid verdict" in (got[("a", 3, "quality")]["error"] or "")
    assert summary["metrics"]["quality"]["failures"] == 7


# --------------------------------------------------------------------------- pairwise
def pair_entry(server: FakeOpenAIServer, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "vs_base", "kind": "llm_pairwise", "model": "judge-1",
                             "base_url": server.base_url, "backoff_s": 0.01}
    entry.update(kw)
    return entry


def _pair_runs(tmp_path: Path) -> tuple[Path, Path]:
    cases = [case(c, ["Paris"], inp=f"Capital of France ({c})?") for c in "abcdef"]
    base = make_run(tmp_path, cases, [
        ok("a", "Lyon"), ok("b", "Paris it is"), ok("c", "Same answer"), failed("d"),
        ok("e", "Marseille"), failed("f")], name="base")
    ev = tmp_path / "base-evalset"
    cand = make_run(tmp_path, cases, [
        ok("a", "Paris it is"), ok("b", "Lyon"), ok("c", "Same answer"), ok("d", "Paris"),
        failed("e"), failed("f")], name="cand", evalset=ev)
    return base, cand


def test_pairwise_judges_both_orders_to_cancel_position_bias(tmp_path: Path) -> None:
    base, cand = _pair_runs(tmp_path)

    def knows_paris(body: dict[str, Any], index: int) -> str:
        a, b = section(body, "Reply A"), section(body, "Reply B")
        winner = "A" if "Paris" in a else "B" if "Paris" in b else "tie"
        return json.dumps({"reasoning": f"{winner} names the capital", "winner": winner})

    with FakeOpenAIServer(responder=knows_paris) as server:
        summary = score_run(cand, cfg(pair_entry(server)), baseline=base, no_cache=True)
        bodies = list(server.requests)
    got = read_scores(cand)
    vals = {c: got[(c, 0, "vs_base")]["value"] for c in "abcdef"}
    assert vals == {"a": 1.0, "b": 0.0, "c": 0.5, "d": 1.0, "e": 0.0, "f": 0.5}
    # only a and b needed the judge, each in both orders
    assert len(bodies) == 4
    orders = sorted((section(b, "Reply A"), section(b, "Reply B")) for b in bodies)
    assert orders == sorted([("Lyon", "Paris it is"), ("Paris it is", "Lyon")] * 2)
    assert bodies[0]["response_format"]["json_schema"]["schema"]["properties"]["winner"] == {
        "type": "string", "enum": ["A", "B", "tie"]}
    m = summary["metrics"]["vs_base"]
    assert m["null_value"] == 0.5 and m["baseline"] == str(base)
    assert m["outcomes"]["candidate_better"] == 2 and m["outcomes"]["baseline_better"] == 2
    assert "candidate=A,baseline=B: candidate" in got[("a", 0, "vs_base")]["explanation"]


def test_pairwise_position_bias_becomes_a_tie(tmp_path: Path) -> None:
    base, cand = _pair_runs(tmp_path)

    def always_first(body: dict[str, Any], index: int) -> str:
        return json.dumps({"reasoning": "the first one", "winner": "A"})

    with FakeOpenAIServer(responder=always_first) as server:
        summary = score_run(cand, cfg(pair_entry(server)), baseline=base, no_cache=True)
    got = read_scores(cand)
    assert got[("a", 0, "vs_base")]["value"] == 0.5 and got[("b", 0, "vs_base")]["value"] == 0.5
    outcomes = summary["metrics"]["vs_base"]["outcomes"]
    assert outcomes["inconsistent"] == 2 and outcomes["first_position_wins"] == 4

    def win_and_tie(body: dict[str, Any], index: int) -> str:
        a = section(body, "Reply A")
        return json.dumps({"reasoning": "r", "winner": "A" if "Paris" in a else "tie"})

    with FakeOpenAIServer(responder=win_and_tie) as server:
        score_run(cand, cfg(pair_entry(server)), baseline=base, no_cache=True)
        score_run(cand, cfg(pair_entry(server, name="strict", combine="strict")),
                  baseline=base, no_cache=True)
    got = read_scores(cand)
    assert got[("a", 0, "vs_base")]["value"] == 0.75  # one win, one tie
    assert got[("a", 0, "strict")]["value"] == 0.5


def test_pairwise_needs_a_baseline_of_the_same_evalset(tmp_path: Path) -> None:
    base, cand = _pair_runs(tmp_path)
    entry = {"name": "vs", "kind": "llm_pairwise", "model": "m",
             "base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(ConfigError, match="--baseline"):
        score_run(cand, cfg(entry))
    other = make_run(tmp_path, [case("zz", ["x"])], [ok("zz", "x")], name="other")
    from synthloop.errors import DataError

    with pytest.raises(DataError, match="same evalset"):
        score_run(cand, cfg(entry), baseline=other)
    assert not (cand / "scores.parquet").exists()


def test_pairwise_cache_keys_cover_both_orders(tmp_path: Path) -> None:
    base, cand = _pair_runs(tmp_path)
    cache = tmp_path / "c.sqlite"

    def first(body: dict[str, Any], index: int) -> str:
        return json.dumps({"reasoning": "r", "winner": "B"})

    with FakeOpenAIServer(responder=first) as server:
        score_run(cand, cfg(pair_entry(server)), baseline=base, cache=cache)
        score_run(cand, cfg(pair_entry(server)), baseline=base, cache=cache)
        assert server.request_count == 4
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 4
    assert pq.read_table(cand / "scores.parquet").num_rows == 6
