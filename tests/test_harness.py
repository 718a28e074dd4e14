"""The replay harness against a real fake-OpenAI server on 127.0.0.1: faults, retries, cache,
rate limits, resume, repeats, and keys never written anywhere."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from synthloop.errors import DataError, TargetError
from synthloop.evalsets import write_evalset
from synthloop.harness import RateLimiter, ReplayStats, ResponseCache, read_log, replay
from synthloop.runs import RESPONSES_SCHEMA, RunDir
from synthloop.schema import EvalCase, Message, Provenance, Response, Usage
from synthloop.targets import PythonTarget, load_target
from synthloop.testing import FakeOpenAIServer, FaultPlan

SECRET = "sk-live-TOPSECRET-5f0c2a9e7d"


def make_evalset(path: Path, n: int, *, dup_every: int = 0) -> Path:
    cases = []
    for i in range(n):
        text = f"question {i // dup_every if dup_every else i} about my order"
        history = ([Message(role="user", content=f"earlier {i}"),
                    Message(role="assistant", content="earlier answer")] if i % 5 == 0 else [])
        cases.append(EvalCase(case_id=f"case-{i:04d}", input=text,
                              history=history if not dup_every else [],
                              tags={"intent": "order" if i % 2 else "refund"}))
    write_evalset(path, cases, provenance=Provenance(generator="test"))
    return path


def openai_target(server: FakeOpenAIServer, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"kind": "openai", "base_url": server.base_url, "model": "support-v2",
                           "name": "support-v2", "timeout_s": 0.5, "max_retries": 6,
                           "retry_initial_s": 0.005, "retry_max_s": 0.05}
    cfg.update(over)
    return cfg


def responses(run: Path) -> list[Response]:
    return list(RunDir(run).responses())


def case_of(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


# ------------------------------------------------------------------------ the happy path
def test_replay_writes_the_run_directory(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 40)
    with FakeOpenAIServer(latency_s=0.005) as server:
        m = replay(ev, openai_target(server), tmp_path / "run", concurrency=8,
                   cache=tmp_path / "cache.sqlite")
        assert server.request_count == 40
        prompt, completion = server.prompt_tokens, server.completion_tokens
    run = RunDir(tmp_path / "run")
    assert m == run.manifest()
    assert m.status == "complete" and m.finished_at is not None and m.started_at <= m.finished_at
    assert (m.counts.total, m.counts.ok, m.counts.error, m.counts.cached) == (40, 40, 0, 0)
    assert (m.tokens.prompt_tokens, m.tokens.completion_tokens) == (prompt, completion)
    assert m.target.model == "support-v2" and m.target_name == "support-v2"
    assert m.evalset_hash.startswith("sha256:") and m.package_version
    table = pq.read_table(run.responses_path)
    assert table.schema.equals(RESPONSES_SCHEMA)
    rs = responses(tmp_path / "run")
    assert [r.case_id for r in rs] == [f"case-{i:04d}" for i in range(40)]  # evalset order
    assert all(r.output and r.attempts == 1 and not r.cached for r in rs)
    jsonl = [json.loads(x) for x in run.responses_jsonl_path.read_text().splitlines()]
    assert [j["case_id"] for j in jsonl] == [r.case_id for r in rs]
    assert len(read_log(run.log_path)) == 40
    # multi-turn: case 0 has history, sent as prior messages before the input
    assert rs[0].output and "question 0" in rs[0].output


# ------------------------------------------------------------------------ faults & retries
def test_faulty_server_every_case_accounted_and_rerun_is_free(tmp_path: Path) -> None:
    """20 % faults (429 with Retry-After, 500, timeouts): every case ends ok or with its error
    after the retry budget; server requests == sum of attempts; reruns send nothing."""
    ev = make_evalset(tmp_path / "ev", 150)
    plan = FaultPlan(rate=0.2, kinds=("429", "500", "timeout"), seed=11, by="body",
                     retry_after_s=0.02, timeout_s=2.0)
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(latency_s=0.002, faults=plan) as server:
        stats = ReplayStats()
        m = replay(ev, openai_target(server, timeout_s=0.25, max_retries=5), tmp_path / "run",
                   concurrency=32, cache=cache, stats=stats)
        rs = responses(tmp_path / "run")
        kinds = Counter(k for _, k in server.faults_injected)
        assert set(kinds) == {"429", "500", "timeout"}
        assert len(server.faults_injected) >= 20
        # exact accounting: each request the server saw is one attempt of one case
        assert server.request_count == sum(r.attempts for r in rs) == stats.requests
        per_case = Counter(case_of(b) for b in server.requests)
        for r, case_input in zip(rs, (f"question {i} about my order" for i in range(150)),
                                 strict=True):
            assert per_case[case_input] == r.attempts
            if r.error is None:
                assert r.output and 1 <= r.attempts <= 6
            else:
                assert r.attempts == 6 and r.error_kind in ("http_429", "http_500", "timeout")
        assert m.counts.ok + m.counts.error == 150 and m.counts.ok == sum(
            r.error is None for r in rs)
        assert any(r.attempts > 1 and r.error is None for r in rs)
        sent = server.request_count

        # rerun into the same RUNDIR: complete already, nothing is sent
        again = ReplayStats()
        m2 = replay(ev, openai_target(server, timeout_s=0.25, max_retries=5), tmp_path / "run",
                    concurrency=32, cache=cache, stats=again)
        assert server.request_count == sent and again.requests == 0 and m2 == m
        # rerun into a new RUNDIR: every ok reply comes from the cache
        fresh = ReplayStats()
        m3 = replay(ev, openai_target(server, timeout_s=0.25, max_retries=5), tmp_path / "run2",
                    concurrency=32, cache=cache, stats=fresh)
        # with 6 attempts a case fails only after 6 faults in a row (p = 0.2**6): none here
        # (test_retry_budget_runs_out_case_recorded_run_goes_on covers exhausted budgets)
        assert m.counts.error == 0
        assert server.request_count == sent and fresh.requests == 0
        assert m3.counts.cached == m3.counts.ok == 150
        rs3 = responses(tmp_path / "run2")
        assert [r.output for r in rs3 if r.cached] == [r.output for r in rs if r.error is None]
        assert all(r.attempts == 0 for r in rs3 if r.cached)


def test_retry_budget_runs_out_case_recorded_run_goes_on(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 6)

    def responder(body: dict[str, Any], index: int) -> str:
        return "fine"

    # every request for case 2 fails with 503; the others succeed
    plan = FaultPlan(rule=lambda body, index: "503" if "question 2 " in case_of(body) else None)
    with FakeOpenAIServer(responder=responder, faults=plan) as server:
        target = openai_target(server, max_retries=2)
        m = replay(ev, target, tmp_path / "run", concurrency=1, cache=tmp_path / "c.sqlite")
        rs = responses(tmp_path / "run")
        assert server.request_count == 5 + 3
    bad = rs[2]
    assert bad.output is None and bad.error_kind == "http_503" and bad.attempts == 3
    assert bad.error is not None and "HTTP 503" in bad.error
    assert all(r.output == "fine" for i, r in enumerate(rs) if i != 2)
    assert (m.counts.ok, m.counts.error) == (5, 1)


def test_never_retries_400_and_user_code_errors(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 5)
    with FakeOpenAIServer(faults=FaultPlan(script={0: "400"})) as server:
        replay(ev, openai_target(server), tmp_path / "run", concurrency=1, cache=None)
        rs = responses(tmp_path / "run")
        assert server.request_count == 5
    assert (rs[0].error_kind, rs[0].attempts) == ("http_400", 1)
    assert all(r.output for r in rs[1:])

    calls: Counter[str] = Counter()

    def flaky(case: EvalCase) -> str:
        calls[case.case_id] += 1
        if case.case_id == "case-0001":
            raise ValueError("bad input for this model")
        return "ok"

    replay(ev, PythonTarget.from_callable(flaky, max_retries=3), tmp_path / "py", cache=None)
    rs = responses(tmp_path / "py")
    assert rs[1].error == "ValueError: bad input for this model"
    assert rs[1].error_kind == "exception" and rs[1].attempts == 1 and calls["case-0001"] == 1


def test_retry_after_is_honoured_and_each_failure_kind_recovers(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 1)
    plan = FaultPlan(script={0: "429", 1: "reset", 2: "bad_json", 3: "empty_choices",
                             4: "timeout", 5: "503"}, retry_after_s=0.6, timeout_s=3.0)
    with FakeOpenAIServer(faults=plan) as server:
        t0 = time.perf_counter()
        replay(ev, openai_target(server, timeout_s=0.2, retry_initial_s=0.001,
                                 retry_max_s=0.01), tmp_path / "run", cache=None)
        wall = time.perf_counter() - t0
        assert server.request_count == 7
    r = responses(tmp_path / "run")[0]
    assert r.output and r.error is None and r.attempts == 7
    assert wall >= 0.6 + 0.2  # the Retry-After wait, plus the timed-out attempt


def test_huge_replies_are_kept_whole(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 3)
    plan = FaultPlan(script={1: "huge"}, huge_chars=3_000_000)
    with FakeOpenAIServer(faults=plan) as server:
        replay(ev, openai_target(server, timeout_s=10), tmp_path / "run", concurrency=1,
               cache=tmp_path / "c.sqlite")
    rs = responses(tmp_path / "run")
    assert len(rs[1].output or "") == 3_000_000 and rs[1].usage.completion_tokens > 400_000


# ------------------------------------------------------------------------ fatal errors
def test_auth_failure_stops_the_run_and_resume_finishes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = make_evalset(tmp_path / "ev", 20)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(faults=FaultPlan(script={5: "401"})) as server:
        target = openai_target(server, api_key_env="OPENAI_API_KEY")
        with pytest.raises(TargetError) as e:
            replay(ev, target, tmp_path / "run", concurrency=1, cache=None)
        assert "HTTP 401" in str(e.value) and "OPENAI_API_KEY" in str(e.value)
        assert SECRET not in str(e.value)
        m = RunDir(tmp_path / "run").manifest()
        assert m.status == "interrupted" and m.counts.ok == 5
        assert len(read_log(tmp_path / "run" / "log.jsonl")) == 5  # the 401 is not a result
        before = server.request_count
        m = replay(ev, target, tmp_path / "run", concurrency=4, cache=None)
        assert m.status == "complete" and m.counts.ok == 20 and m.counts.error == 0
        assert server.request_count - before == 15


def test_unreachable_endpoint_is_a_target_error(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
              "max_retries": 1, "retry_initial_s": 0.001}
    with pytest.raises(TargetError, match="cannot connect"):
        replay(ev, target, tmp_path / "run", cache=None)


# ------------------------------------------------------------------------ cache & repeats
def test_repeats_are_independent_draws_and_cached_per_sample(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 10)
    with FakeOpenAIServer() as server:
        target = openai_target(server, temperature=0.8, seed=100)
        m = replay(ev, target, tmp_path / "run", repeats=3, cache=tmp_path / "c.sqlite")
        assert server.request_count == 30 and m.repeats == 3 and m.counts.total == 30
        seeds = Counter(b["seed"] for b in server.requests)
        assert seeds == {100: 10, 101: 10, 102: 10}
        rs = responses(tmp_path / "run")
        assert [(r.case_id, r.sample) for r in rs[:4]] == [
            ("case-0000", 0), ("case-0000", 1), ("case-0000", 2), ("case-0001", 0)]
        assert len({r.output for r in rs[:3]}) == 3
        # more repeats later: samples 0-2 come from the cache, only sample 3 is new
        replay(ev, target, tmp_path / "run4", repeats=4, cache=tmp_path / "c.sqlite")
        assert server.request_count == 40
        with pytest.raises(DataError, match="--repeats 3"):
            replay(ev, target, tmp_path / "run", repeats=2, cache=None)


def test_identical_requests_are_sent_once(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 30, dup_every=3)  # 10 distinct inputs, 3 cases each
    with FakeOpenAIServer(latency_s=0.02) as server:
        m = replay(ev, openai_target(server), tmp_path / "run", concurrency=16,
                   cache=tmp_path / "c.sqlite")
        assert server.request_count == 10
        assert m.counts.ok == 30 and m.counts.cached == 20
        rs = responses(tmp_path / "run")
        assert rs[0].output == rs[1].output == rs[2].output
        # without a cache every case is sent
        replay(ev, openai_target(server), tmp_path / "nocache", concurrency=16, cache=None)
        assert server.request_count == 40


def test_cache_is_keyed_by_fingerprint_and_shared_across_processes(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 8)
    cache_path = tmp_path / "c.sqlite"
    with FakeOpenAIServer() as server:
        replay(ev, openai_target(server), tmp_path / "a", cache=cache_path)
        replay(ev, openai_target(server, temperature=0.5), tmp_path / "b", cache=cache_path)
        assert server.request_count == 16  # another fingerprint, other keys
        replay(ev, openai_target(server, concurrency=2, timeout_s=3), tmp_path / "c",
               cache=cache_path)
        assert server.request_count == 16  # call settings are not part of the key
    cache = ResponseCache(cache_path)
    assert len(cache) == 16
    cache.close()


def test_key_never_written_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ev = make_evalset(tmp_path / "ev", 40)
    plan = FaultPlan(rate=0.3, kinds=("429", "500", "bad_json", "reset"), seed=2)
    with FakeOpenAIServer(faults=plan) as server:
        target = openai_target(server, api_key_env="OPENAI_API_KEY", max_retries=1)
        replay(ev, target, tmp_path / "run", cache=tmp_path / "cache" / "c.sqlite",
               progress=True)
        assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.headers)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "log.jsonl" for p in written)
    assert any(p.name.startswith("c.sqlite") for p in written)
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    assert SECRET not in repr(load_target(target))


# ------------------------------------------------------------------------ limits
def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 24)
    state = {"now": 0, "peak": 0}

    async def model(case: EvalCase) -> str:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return "ok"

    replay(ev, PythonTarget.from_callable(model), tmp_path / "run", concurrency=4, cache=None)
    assert state["peak"] == 4


def test_rpm_limit_spreads_requests(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 30)
    times: list[float] = []

    async def model(case: EvalCase) -> str:
        times.append(time.perf_counter())
        return "ok"

    t0 = time.perf_counter()
    replay(ev, PythonTarget.from_callable(model), tmp_path / "run", concurrency=30, cache=None,
           rpm=1200)  # 20 a second, a burst of 20
    wall = time.perf_counter() - t0
    assert wall >= 0.45  # the 10 beyond the burst wait 10/20 s
    assert max(times) - min(times) >= 0.45

    t0 = time.perf_counter()
    replay(ev, PythonTarget.from_callable(model), tmp_path / "fast", concurrency=30, cache=None)
    assert time.perf_counter() - t0 < wall


def test_tpm_limit_counts_actual_tokens(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 8)

    async def model(case: EvalCase) -> Response:
        return Response(case_id=case.case_id, output="x",
                        usage=Usage(prompt_tokens=100, completion_tokens=150))

    starts: list[float] = []

    async def timed(case: EvalCase) -> Response:
        starts.append(time.perf_counter())
        return await model(case)

    # 1,000 tokens a second (burst 1,000); 8 × 250 = 2,000 tokens: the requests after the
    # first 1,000 tokens wait for the bucket to refill
    replay(ev, PythonTarget.from_callable(timed), tmp_path / "run", concurrency=1, cache=None,
           tpm=60_000)
    assert starts[-1] - starts[0] >= 0.6
    starts.clear()
    replay(ev, PythonTarget.from_callable(timed), tmp_path / "free", concurrency=1, cache=None)
    assert starts[-1] - starts[0] < 0.3


def test_rate_limiter_token_bucket() -> None:
    async def go() -> float:
        limiter = RateLimiter(600)  # 10 a second, burst 10
        t0 = time.perf_counter()
        for _ in range(15):
            await limiter.acquire()
        return time.perf_counter() - t0

    assert 0.45 <= asyncio.run(go()) < 2.0
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_timeout_applies_to_python_targets(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 2)
    calls: Counter[str] = Counter()

    async def slow(case: EvalCase) -> str:
        calls[case.case_id] += 1
        if case.case_id == "case-0000":
            await asyncio.sleep(5)
        return "ok"

    t0 = time.perf_counter()
    replay(ev, PythonTarget.from_callable(slow, timeout_s=0.1, max_retries=2,
                                          retry_initial_s=0.001), tmp_path / "run", cache=None)
    assert time.perf_counter() - t0 < 2
    rs = responses(tmp_path / "run")
    assert rs[0].error_kind == "timeout" and rs[0].attempts == 3 and calls["case-0000"] == 3
    assert rs[1].output == "ok"


# ------------------------------------------------------------------------ resume & validation
def test_resume_sends_only_what_is_missing(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 20)
    with FakeOpenAIServer() as server:
        target = openai_target(server)
        full = replay(ev, target, tmp_path / "full", cache=None)
        log = (tmp_path / "full" / "log.jsonl").read_bytes().splitlines(keepends=True)
        part = tmp_path / "part"
        part.mkdir()
        (part / "manifest.json").write_bytes((tmp_path / "full" / "manifest.json").read_bytes())
        # 7 complete lines and a torn eighth, as a kill mid-write would leave
        (part / "log.jsonl").write_bytes(b"".join(log[:7]) + log[7][:25])
        before = server.request_count
        m = replay(ev, target, part, cache=None)
        assert server.request_count - before == 13
    assert m.counts == full.counts and m.status == "complete"
    assert [r.output for r in responses(part)] == [r.output for r in responses(tmp_path / "full")]


def test_resume_refuses_another_evalset_or_target(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 4)
    ev2 = make_evalset(tmp_path / "ev2", 5)
    with FakeOpenAIServer() as server:
        replay(ev, openai_target(server), tmp_path / "run", cache=None)
        with pytest.raises(DataError, match="another evalset"):
            replay(ev2, openai_target(server), tmp_path / "run", cache=None)
        with pytest.raises(DataError, match="another target"):
            replay(ev, openai_target(server, model="support-v3"), tmp_path / "run", cache=None)
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("x")
        with pytest.raises(DataError, match="not a run directory"):
            replay(ev, openai_target(server), tmp_path / "other", cache=None)
        with pytest.raises(DataError):
            replay(tmp_path / "missing-evalset", openai_target(server), tmp_path / "new",
                   cache=None)
        assert not (tmp_path / "new").exists()
        assert server.request_count == 4


def test_retry_errors_on_resume(tmp_path: Path) -> None:
    ev = make_evalset(tmp_path / "ev", 5)
    with FakeOpenAIServer(faults=FaultPlan(script={0: "500", 1: "500"})) as server:
        target = openai_target(server, max_retries=1)
        m = replay(ev, target, tmp_path / "run", concurrency=1, cache=None)
        assert m.counts.error == 1 and server.request_count == 6
        replay(ev, target, tmp_path / "run", cache=None)  # complete: nothing sent
        assert server.request_count == 6
        m = replay(ev, target, tmp_path / "run", cache=None, retry_errors=True)
        assert m.counts.error == 0 and m.counts.ok == 5 and server.request_count == 7


def test_empty_evalset(tmp_path: Path) -> None:
    write_evalset(tmp_path / "ev", [], provenance=Provenance(generator="test"))
    m = replay(tmp_path / "ev", PythonTarget.from_callable(lambda c: "x"), tmp_path / "run",
               cache=None)
    assert m.status == "complete" and m.counts.total == 0
    assert responses(tmp_path / "run") == []


def test_second_replay_into_the_same_run_directory_is_refused_not_paid_twice(
        tmp_path: Path) -> None:
    """Two replays writing one RUNDIR at once would each send every case (paying twice) and
    interleave the log; the second one stops with a one-line error instead."""
    import threading

    ev = make_evalset(tmp_path / "ev", 6)
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(case: EvalCase) -> str:
        calls.append(case.case_id)
        started.set()
        release.wait(30)
        return "reply to " + case.input

    target = PythonTarget.from_callable(slow, version="1")
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(
        replay(ev, target, tmp_path / "run", concurrency=2, cache=None)))
    thread.start()
    try:
        assert started.wait(30)
        with pytest.raises(DataError, match="another replay is writing"):
            replay(ev, target, tmp_path / "run", concurrency=2, cache=None)
    finally:
        release.set()
        thread.join(60)
    assert first and first[0].status == "complete" and first[0].counts.ok == 6
    assert sorted(calls) == [f"case-{i:04d}" for i in range(6)]
    assert len((tmp_path / "run" / "log.jsonl").read_bytes().splitlines()) == 6
    # once the first is done, the same command is a no-op resume again
    assert replay(ev, target, tmp_path / "run", cache=None).status == "complete"
    assert len(calls) == 6


class EchoingServer(FakeOpenAIServer):
    """Answers errors that echo the request's credentials, as some proxies and servers do:
    `POST /eSTATUS/v1/chat/completions` (or `/eSTATUS/reply`) gets that status, with a
    plain-text body for 5xx and an OpenAI-style JSON error otherwise."""

    def make_app(self) -> Any:
        from aiohttp import web

        async def echo(request: Any) -> Any:
            await request.read()
            status = int(request.match_info["status"])
            text = (f"request had Authorization: {request.headers.get('Authorization')}, "
                    f"X-Team-Token: {request.headers.get('X-Team-Token')}")
            if status >= 500:
                return web.Response(status=status, text="upstream failed; " + text)
            return web.json_response({"error": {"message": "Rejected: " + text}}, status=status)

        app = super().make_app()
        app.router.add_post(r"/e{status:\d+}/v1/chat/completions", echo)
        app.router.add_post(r"/e{status:\d+}/reply", echo)
        return app


def test_key_echoed_by_the_server_in_an_error_is_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "team-token-7d2c9e1f"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("TEAM_TOKEN", token)
    ev = make_evalset(tmp_path / "ev", 4)
    with EchoingServer() as server:
        openai_cfg = openai_target(server, base_url=server.url + "/e500/v1", max_retries=0,
                                   api_key_env="OPENAI_API_KEY",
                                   extra_headers={"X-Team-Token": "${TEAM_TOKEN}"})
        m = replay(ev, openai_cfg, tmp_path / "run-openai", cache=tmp_path / "c.sqlite")
        http_cfg = {"kind": "http", "url": server.url + "/e500/reply", "max_retries": 0,
                    "api_key_env": "OPENAI_API_KEY", "headers": {"X-Team-Token": "${TEAM_TOKEN}"}}
        m2 = replay(ev, http_cfg, tmp_path / "run-http", cache=tmp_path / "c.sqlite")
        with pytest.raises(TargetError) as err:
            replay(ev, openai_target(server, base_url=server.url + "/e401/v1",
                                     api_key_env="OPENAI_API_KEY"),
                   tmp_path / "run-401", cache=None)
    assert m.counts.error == 4 and m2.counts.error == 4
    errors = [r.error or "" for run in ("run-openai", "run-http") for r in responses(tmp_path / run)]
    assert all("HTTP 500" in e and "Authorization: Bearer ***" in e for e in errors), errors
    assert all("X-Team-Token: ***" in e for e in errors), errors
    assert "HTTP 401" in str(err.value) and "Bearer ***" in str(err.value)
    assert SECRET not in str(err.value) and token not in str(err.value)
    for p in (p for p in tmp_path.rglob("*") if p.is_file()):
        data = p.read_bytes()
        assert SECRET.encode() not in data and token.encode() not in data, p
