"""Simulated users: a scripted user LLM on a real OpenAI-compatible server (FakeOpenAIServer)
plays personas with goals against python targets (two model versions)."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from synthloop.errors import ConfigError, DataError
from synthloop.evalsets import EvalsetWriter, open_evalset
from synthloop.runs import RunDir
from synthloop.schema import EvalCase, Provenance, Response, Usage
from synthloop.simulate import TRANSCRIPTS, simulate
from synthloop.targets import PythonTarget
from synthloop.testing import FakeOpenAIServer, FaultPlan
from tests.conftest import run_cli

CALLS: Counter[str] = Counter()
_LOCK = threading.Lock()


def good_bot(case: EvalCase) -> str:
    """Solves the problem on the second turn (after one clarification)."""
    with _LOCK:
        CALLS["good"] += 1
    if case.history:
        return f"SOLVED: here is how to fix '{case.history[0].content}'."
    return "Could you tell me your order number?"


def bad_bot(case: EvalCase) -> str:
    with _LOCK:
        CALLS["bad"] += 1
    return "Sorry, I don't know."


def flaky_bot(case: EvalCase) -> str:
    if "boom" in case.input:
        raise RuntimeError("model crashed")
    return "SOLVED right away."


def user_llm(body: dict[str, Any], index: int) -> str:
    """The scripted simulated user, reading the conversation in the turn prompt."""
    name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
    prompt = body["messages"][-1]["content"]
    if name == "user_message":                       # an opener (grid mode)
        return json.dumps({"message": f"my gadget {body.get('seed')} is broken"})
    assert name == "simulated_user_turn", name
    replies = re.findall(r"^ASSISTANT: (.*)$", prompt, flags=re.M)
    last = replies[-1]
    if "refuse me" in prompt:
        return "I'm sorry, but I can't continue this role-play."
    if "SOLVED" in last:
        return json.dumps({"goal_reached": True, "give_up": False, "thumb": "up", "rating": 5,
                           "message": None})
    if sum("don't know" in r for r in replies) >= 2:
        return json.dumps({"goal_reached": False, "give_up": True, "thumb": "down",
                           "rating": 1, "message": None})
    return json.dumps({"goal_reached": False, "give_up": False, "thumb": "none",
                       "rating": None, "message": f"it is order BW-{len(replies)}"})


def write_spec(tmp_path: Path, base_url: str, **over: Any) -> Path:
    spec: dict[str, Any] = {
        "kind": "llm",
        "endpoint": {"base_url": base_url, "model": "user-sim", "backoff_s": 0.01,
                     "timeout_s": 2.0},
        "n": 5, "seed": 2, "concurrency": 4,
        "product": {"name": "Brightwave support"},
        "personas": [{"name": "shopper", "description": "buys gadgets"},
                     {"name": "reseller", "description": "buys in bulk"}],
        "intents": [{"name": "fix", "description": "broken device", "goal": "get the gadget "
                     "working again"}, {"name": "order", "description": "where is the order"}],
        "simulate": {"max_turns": 4},
        "pricing": {"prompt_per_1k": 1.0, "completion_per_1k": 1.0},
    }
    spec.update(over)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def scenario_evalset(tmp_path: Path, n: int = 6) -> Path:
    cases = []
    for i in range(n):
        persona = "shopper" if i % 2 else "reseller"
        intent = "fix" if i % 3 else "order"
        cases.append(EvalCase(case_id=f"c{i}", session_id=f"s{i}", input=f"help with thing {i}",
                              tags={"persona": persona, "intent": intent, "locale": "en_US"}))
        cases.append(EvalCase(case_id=f"c{i}-1", session_id=f"s{i}", turn=1, input="and?",
                              tags={"persona": persona, "intent": intent}))
    path = tmp_path / "evalsets" / "scen" / "v1"
    with EvalsetWriter(path, provenance=Provenance(generator="rules")) as w:
        w.write_cases(cases)
        w.close()
    return path


def test_simulation_from_evalset_writes_a_comparable_run(tmp_path: Path) -> None:
    ev = scenario_evalset(tmp_path)
    cache = tmp_path / "cache.sqlite"
    good = PythonTarget.from_callable(good_bot, name="v-good")
    bad = PythonTarget.from_callable(bad_bot, name="v-bad")
    CALLS.clear()
    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url)
        r_good = simulate(spec, good, tmp_path / "runs" / "good", evalset=ev, cache=cache,
                          progress=False)
        r_bad = simulate(spec, bad, tmp_path / "runs" / "bad", evalset=ev, cache=cache,
                         progress=False)
        sent = server.request_count
        turn_bodies = [b for b in server.requests if "simulated_user_turn" in json.dumps(b)]
        # the same simulation again: everything from the cache (user LLM and target)
        calls_before = dict(CALLS)
        again = simulate(spec, PythonTarget.from_callable(good_bot, name="v-good"),
                         tmp_path / "runs" / "good2", evalset=ev, cache=cache, progress=False)
        assert server.request_count == sent and dict(CALLS) == calls_before
    es = open_evalset(ev)
    # good: clarification turn, then solved on turn 2 -> 2 turns, goal reached everywhere
    assert r_good.summary["outcomes"] == {"goal_reached": 6}
    assert r_good.summary["mean_turns"] == 2.0 and CALLS["good"] == 12
    # bad: "don't know" twice -> the user gives up after 2 turns
    assert r_bad.summary["outcomes"] == {"gave_up": 6}
    m = r_good.manifest
    assert m.evalset_hash == es.content_hash and m.status == "complete"
    assert m.counts.total == 6 and m.counts.ok == 6 and m.target_name == "v-good"
    run = RunDir(tmp_path / "runs" / "good")
    responses = list(run.responses())
    assert [r.case_id for r in responses] == [f"c{i}" for i in range(6)]   # openers only
    assert all(r.output and r.output.startswith("SOLVED") for r in responses)
    transcripts = [json.loads(x) for x in (run.path / TRANSCRIPTS).read_text().splitlines()]
    t0 = transcripts[0]
    assert t0["scenario_id"] == "c0" and t0["outcome"] == "goal_reached"
    assert t0["turns"][0]["user"] == "help with thing 0"          # the evalset's opener
    assert t0["turns"][0]["feedback"] == {} and t0["turns"][1]["feedback"] == {
        "thumb": "up", "rating": 5}
    assert t0["turns"][1]["user"] == "it is order BW-1"             # the user LLM's follow-up
    assert t0["goal"] == "where is the order" and t0["persona"] == "reseller"
    # the turn prompt shows the persona, the goal and the whole conversation
    assert any("Your goal: get the gadget working again" in b["messages"][-1]["content"]
               for b in turn_bodies)
    assert any("ASSISTANT: Could you tell me your order number?" in b["messages"][-1]["content"]
               for b in turn_bodies)
    scores = pq.read_table(run.scores_path).to_pylist()
    by_metric = {(s["case_id"], s["metric"]): s["value"] for s in scores}
    assert by_metric[("c0", "sim_goal_reached")] == 1.0 and by_metric[("c0", "sim_turns")] == 2
    assert by_metric[("c0", "sim_thumb_up_share")] == 0.5
    bad_scores = {(s["case_id"], s["metric"]): s["value"]
                  for s in pq.read_table(tmp_path / "runs" / "bad" / "scores.parquet").to_pylist()}
    assert bad_scores[("c3", "sim_gave_up")] == 1.0 and bad_scores[("c3", "sim_mean_rating")] == 1
    meta = json.loads(run.scores_summary_path.read_text())
    assert meta["metrics"]["sim_gave_up"]["higher_is_better"] is False
    assert again.summary["target"] == {"requests": 0, "retries": 0, "cache_hits": 12}
    assert again.summary["user_llm"]["requests"] == 0
    cached = list(RunDir(tmp_path / "runs" / "good2").responses())
    assert [r.output for r in cached] == [r.output for r in responses]
    assert all(r.cached for r in cached) and not any(r.cached for r in responses)

    # `synthloop score` adds metrics to a simulation run and keeps the simulation's
    from synthloop.scorers import score_run

    (tmp_path / "scorers.yaml").write_text(yaml.safe_dump(
        {"scorers": [{"name": "solved", "kind": "contains", "text": "SOLVED"}]}))
    summary = score_run(tmp_path / "runs" / "good", tmp_path / "scorers.yaml")
    assert summary["metrics"]["solved"]["mean"] == 1.0
    assert "sim_goal_reached" in summary["kept"]

    # the two model versions compare paired on scenario ids, like any replay
    from synthloop.stats import compare_runs

    cmp = compare_runs(tmp_path / "runs" / "good", tmp_path / "runs" / "bad", n_boot=200)
    goal = cmp.metrics["sim_goal_reached"].overall
    assert goal.n == 6 and goal.mean_base == 1.0 and goal.mean_cand == 0.0
    assert cmp.metrics["sim_gave_up"].higher_is_better is False


def test_grid_mode_writes_its_scenario_evalset(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url)
        r = simulate(spec, PythonTarget.from_callable(good_bot), tmp_path / "run", n=4,
                     cache=tmp_path / "c.sqlite", progress=False)
        openers = [b for b in server.requests if "user_message" in json.dumps(b)]
    assert len(openers) == 4
    es = open_evalset(tmp_path / "run" / "scenarios")
    assert r.manifest.evalset_path == str((tmp_path / "run" / "scenarios").resolve())
    assert r.manifest.evalset_hash == es.content_hash
    cases = es.cases()
    assert [c.case_id for c in cases] == [f"sim-2-{i:06d}" for i in range(4)]
    assert all(c.input.startswith("my gadget") for c in cases)
    assert set(cases[0].tags) == {"persona", "intent", "style", "locale"}
    assert r.summary["outcomes"] == {"goal_reached": 4}
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == []


def test_target_rate_limits_apply_to_every_target_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target's `rpm` / `tpm` hold in `simulate` as in `replay`: every request to the target
    (retries too) first takes from both buckets."""
    from synthloop.harness._limits import RateLimiter

    taken: list[tuple[float, float]] = []
    original = RateLimiter.acquire

    async def acquire(self: RateLimiter, n: float = 1.0) -> None:
        taken.append((self.per_second * 60, n))
        await original(self, n)

    monkeypatch.setattr(RateLimiter, "acquire", acquire)
    calls: list[str] = []

    def bot(case: EvalCase) -> Response:
        calls.append(case.input)
        if len(calls) == 1:
            raise TimeoutError("first attempt times out")
        return Response(case_id=case.case_id, output="SOLVED right away.",
                        usage=Usage(prompt_tokens=7, completion_tokens=3))

    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url)
        target = PythonTarget.from_callable(bot, rpm=6000, tpm=600_000, retry_initial_s=0.001)
        r = simulate(spec, target, tmp_path / "run", n=3, cache=None, progress=False)
    assert r.summary["outcomes"] == {"goal_reached": 3}
    assert len(calls) == 4  # 3 scenarios, one retried
    assert sorted(n for per_min, n in taken if per_min == 6000) == [1.0] * 4
    assert len([n for per_min, n in taken if per_min == 600_000]) == 4


def test_max_turns_errors_refusals_and_retries(tmp_path: Path) -> None:
    cases = [EvalCase(case_id="ok", input="fine", tags={"persona": "shopper"}),
             EvalCase(case_id="crash", input="boom", tags={"persona": "shopper"}),
             EvalCase(case_id="refused", input="refuse me", tags={"persona": "shopper"}),
             EvalCase(case_id="long", input="loop", tags={"persona": "shopper"})]
    with EvalsetWriter(tmp_path / "ev", provenance=Provenance(generator="import")) as w:
        w.write_cases(cases)
        w.close()

    def bot(case: EvalCase) -> str:
        if case.input == "boom":
            raise RuntimeError("model crashed")
        if case.input == "fine":
            return "SOLVED"
        return "hmm, tell me more"

    faults = FaultPlan(script={0: "429", 3: "500"}, retry_after_s=0.01)
    with FakeOpenAIServer(responder=user_llm, faults=faults) as server:
        spec = write_spec(tmp_path, server.base_url)
        r = simulate(spec, PythonTarget.from_callable(bot, max_retries=0), tmp_path / "run",
                     evalset=tmp_path / "ev", max_turns=3, cache=None, progress=False)
        assert r.summary["user_llm"]["requests"] == server.request_count
    assert r.summary["outcomes"] == {"goal_reached": 1, "target_error": 1, "user_error": 1,
                                     "max_turns": 1}
    assert r.summary["user_llm"]["retries"] == 2
    transcripts = {t["scenario_id"]: t for t in (
        json.loads(x) for x in (tmp_path / "run" / TRANSCRIPTS).read_text().splitlines())}
    assert "model crashed" in transcripts["crash"]["error"]
    assert transcripts["refused"]["error"].startswith("refusal")
    assert len(transcripts["long"]["turns"]) == 3
    responses = {x.case_id: x for x in RunDir(tmp_path / "run").responses()}
    assert responses["crash"].error and "model crashed" in responses["crash"].error
    assert r.manifest.counts.error == 1
    scores = pq.read_table(tmp_path / "run" / "scores.parquet").to_pylist()
    crash = [s for s in scores if s["case_id"] == "crash"]
    assert crash and all(s["value"] is None and s["error"] for s in crash)


def test_budget_stops_the_user_llm(tmp_path: Path) -> None:
    ev = scenario_evalset(tmp_path, n=6)
    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url, concurrency=1,
                          endpoint={"base_url": server.base_url, "model": "u", "max_tokens": 50})
        r = simulate(spec, PythonTarget.from_callable(good_bot), tmp_path / "run", evalset=ev,
                     cache=None, max_cost=1.0, progress=False)
        spent = (server.prompt_tokens + server.completion_tokens) / 1000
    assert r.manifest.status == "interrupted"
    assert r.summary["outcomes"].get("budget", 0) >= 1
    assert spent <= 1.0 and r.summary["user_llm"]["cost_usd"] == pytest.approx(spent)


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    ev = scenario_evalset(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(DataError, match="already exists"):
        simulate(spec, PythonTarget.from_callable(good_bot), tmp_path / "taken", evalset=ev)
    with pytest.raises(DataError, match="not an evalset version"):
        simulate(spec, PythonTarget.from_callable(good_bot), tmp_path / "o",
                 evalset=tmp_path / "nope")
    with pytest.raises(ConfigError, match="max_turns"):
        simulate(write_spec(tmp_path, "http://127.0.0.1:9/v1", simulate={"max_turnz": 3}),
                 PythonTarget.from_callable(good_bot), tmp_path / "o", evalset=ev)
    # a rules spec used to be ~100 lines of "unknown key", one per key of the rules format
    rules = Path(__file__).resolve().parents[1] / "generators" / "support_assistant.yaml"
    with pytest.raises(ConfigError) as e:
        simulate(rules, PythonTarget.from_callable(good_bot), tmp_path / "o", evalset=ev)
    assert str(e.value).count("\n") == 0 and "simulate needs a `kind: llm` spec" in str(e.value)
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_a_typo_in_the_turn_template_stops_before_any_request(tmp_path: Path) -> None:
    ev = scenario_evalset(tmp_path)
    CALLS.clear()
    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url, simulate={
            "max_turns": 3, "turn_template": "Goal: {{ goal }}. {{ conversaton }} JSON please"})
        with pytest.raises(ConfigError, match=r"turn_template: 'conversaton' is undefined"):
            simulate(spec, PythonTarget.from_callable(good_bot), tmp_path / "o", evalset=ev,
                     progress=False)
        assert server.request_count == 0
    assert CALLS["good"] == 0                  # the target was not called either
    assert not (tmp_path / "o").exists()


def test_cli_simulate(tmp_path: Path) -> None:
    ev = scenario_evalset(tmp_path, n=3)
    (tmp_path / "bots.py").write_text(
        "def reply(case):\n"
        "    return 'SOLVED' if case.history else 'which order?'\n")
    (tmp_path / "target.yaml").write_text(yaml.safe_dump(
        {"kind": "python", "function": "bots:reply", "python_path": ["."], "name": "cli-bot"}))
    with FakeOpenAIServer(responder=user_llm) as server:
        spec = write_spec(tmp_path, server.base_url)
        code, out, err = run_cli("simulate", "--spec", str(spec), "--target",
                                 str(tmp_path / "target.yaml"), "--evalset", str(ev),
                                 "--out", str(tmp_path / "run"), "--cache",
                                 str(tmp_path / "c.sqlite"), "--max-turns", "3")
    assert code == 0, err
    assert "scenarios 3" in out and "goal reached 100.0%" in out and "cli-bot" in out
    code, out, err = run_cli("simulate", "--spec", str(tmp_path / "missing.yaml"), "--target",
                             str(tmp_path / "target.yaml"), "--out", str(tmp_path / "run2"))
    assert code == 2 and "missing.yaml: config file not found" in err
    assert "Traceback" not in err
