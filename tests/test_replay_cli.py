"""`synthloop replay` end to end in subprocesses: the contract, exit codes, SIGKILL + resume,
and the API key never reaching a file or a log."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from synthloop.cli import main as cli_main
from synthloop.evalsets import write_evalset
from synthloop.harness import read_log
from synthloop.runs import RunDir
from synthloop.schema import EvalCase, Message, Provenance, Response
from synthloop.testing import FakeOpenAIServer, FaultPlan
from tests.conftest import run_cli

SECRET = "sk-proj-CLI-SECRET-9b1f4e6a2c"


def make_evalset(path: Path, n: int) -> Path:
    cases = [EvalCase(case_id=f"case-{i:04d}", input=f"question {i} about my order",
                      history=[Message(role="user", content="hi"),
                               Message(role="assistant", content="hello")] if i % 7 == 0 else [])
             for i in range(n)]
    write_evalset(path, cases, provenance=Provenance(generator="test"))
    return path


def write_target(path: Path, base_url: str, **extra: Any) -> Path:
    lines = ["kind: openai", f"base_url: {base_url}", "model: support-v2",
             "api_key_env: OPENAI_API_KEY"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (fast); returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def case_of(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def responses(run: Path) -> list[Response]:
    return list(RunDir(run).responses())


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------ the contract
def test_minimal_target_file_works_as_is_and_rerun_sends_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    ev = make_evalset(tmp_path / "ev", 25)
    port = 8000 if _port_free(8000) else 0
    with FakeOpenAIServer(port=port, latency_s=0.005) as server:
        target = tmp_path / "support-v2.yaml"
        target.write_text("kind: openai\n"
                          f"base_url: http://127.0.0.1:{server.port}/v1\n"
                          "model: support-v2\n"
                          "api_key_env: OPENAI_API_KEY\n")
        out = tmp_path / "run"
        code, stdout, stderr = run_cli("replay", "--evalset", str(ev), "--target", str(target),
                                       "--out", str(out), "--concurrency", "8", cwd=tmp_path)
        assert code == 0, stderr
        assert server.request_count == 25
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"] == {"total": 25, "ok": 25, "error": 0, "cached": 0}
        assert manifest["status"] == "complete" and manifest["target"]["model"] == "support-v2"
        assert (out / "responses.parquet").exists() and (out / "responses.jsonl").exists()
        assert "ok 25" in stdout and "error 0" in stdout and "cached 0" in stdout
        assert (tmp_path / ".synthloop" / "cache.sqlite").exists()  # the default cache

        code, stdout, _ = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target),
                              "--out", str(out))
        assert code == 0 and "already complete" in stdout
        code, stdout, _ = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target),
                              "--out", str(tmp_path / "run2"))
        assert code == 0 and "cached 25" in stdout and "requests sent 0" in stdout
        assert server.request_count == 25
        code, _, _ = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target),
                         "--out", str(tmp_path / "run3"), "--no-cache", "--repeats", "2")
        assert code == 0 and server.request_count == 75
        assert json.loads((tmp_path / "run3" / "manifest.json").read_text())["counts"][
            "total"] == 50


def test_progress_bar_shows_errors_and_cache_hits(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SYNTHLOOP_PROGRESS", "1")
    monkeypatch.setenv("COLUMNS", "200")
    ev = make_evalset(tmp_path / "ev", 10)
    with FakeOpenAIServer(faults=FaultPlan(script={0: "400"})) as server:
        target = write_target(tmp_path / "t.yaml", server.base_url)
        code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target),
                              "--out", str(tmp_path / "run"), "--concurrency", "1",
                              "--cache", str(tmp_path / "c.sqlite"))
    assert code == 0
    assert "replay t" in stderr and "10/10" in stderr
    assert "errors=1" in stderr and "cached=0" in stderr


@pytest.mark.slow
def test_two_processes_share_one_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ev = make_evalset(tmp_path / "ev", 120)
    cache = tmp_path / "shared.sqlite"
    with FakeOpenAIServer(latency_s=0.005) as server:
        target = write_target(tmp_path / "t.yaml", server.base_url)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "synthloop.cli", "replay", "--evalset", str(ev), "--target",
             str(target), "--out", str(tmp_path / f"run{i}"), "--cache", str(cache),
             "--concurrency", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]
        results = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        # each case was sent at most once per process, and the cache holds one reply per case
        assert 120 <= server.request_count <= 240
        code, stdout, _ = run_cli("replay", "--evalset", str(ev), "--target", str(target),
                                  "--out", str(tmp_path / "run3"), "--cache", str(cache))
        assert code == 0 and "cached 120" in stdout and server.request_count <= 240
    outputs = [[r.output for r in responses(tmp_path / f"run{i}")] for i in (0, 1, 3)]
    assert outputs[0] == outputs[1] == outputs[2]


# ------------------------------------------------------------------------ exit codes
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    ev = make_evalset(tmp_path / "ev", 3)
    target = write_target(tmp_path / "t.yaml", "http://127.0.0.1:9/v1")
    out = tmp_path / "run"
    code, _, stderr = run_cli("replay", "--evalset", str(ev), "--target", str(target),
                              "--out", str(out), cwd=tmp_path)  # the real command, once
    assert code == 2
    assert stderr.count("\n") == 1 and "OPENAI_API_KEY is not set" in stderr
    assert not out.exists() and not (tmp_path / ".synthloop").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: openai\nbase_url: http://127.0.0.1:9/v1\nmodle: x\n")
    code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(bad),
                          "--out", str(out))
    assert code == 2 and "did you mean `model`" in stderr and not out.exists()

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code, _, stderr = cli(capsys, "replay", "--evalset", str(tmp_path / "nope"), "--target",
                          str(target), "--out", str(out))
    assert code == 2 and "not an evalset" in stderr and not out.exists()
    code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target),
                          "--out", str(out), "--repeats", "0")
    assert code == 2 and "--repeats" in stderr and not out.exists()


def test_resume_with_another_target_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ev = make_evalset(tmp_path / "ev", 4)
    with FakeOpenAIServer() as server:
        t1 = write_target(tmp_path / "t1.yaml", server.base_url)
        t2 = write_target(tmp_path / "t2.yaml", server.base_url, temperature=0.9)
        out = tmp_path / "run"
        assert cli(capsys, "replay", "--evalset", str(ev), "--target", str(t1), "--out",
                   str(out), "--no-cache")[0] == 0
        code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(t2),
                              "--out", str(out), "--no-cache")
        assert code == 2 and "another target" in stderr and stderr.count("\n") == 1
        # a server that answers 401 stops the run with exit 2 and a hint
        server.faults = FaultPlan(rule=lambda body, index: "401")
        code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(t1),
                              "--out", str(tmp_path / "run401"), "--no-cache")
        assert code == 2 and "HTTP 401" in stderr and "OPENAI_API_KEY" in stderr
        assert SECRET not in stderr


# ------------------------------------------------------------------------ SIGKILL and resume
def _requests_by_case(bodies: list[dict[str, Any]]) -> Counter[str]:
    return Counter(case_of(b) for b in bodies)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 8])
def test_sigkill_then_resume_equals_an_uninterrupted_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        seed: int) -> None:
    """Kill -9 the replay at a random point (drawn from `seed`), resume it, and compare with an
    uninterrupted run on an identical server: the same result case for case, and no case
    finished before the kill is requested again."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    n = 240
    ev = make_evalset(tmp_path / "ev", n)
    plan = FaultPlan(rate=0.15, kinds=("429", "500", "timeout"), seed=seed, by="body",
                     retry_after_s=0.01, timeout_s=2.0)
    settings = {"timeout_s": 1.0, "max_retries": 8, "retry_initial_s": 0.005,
                "retry_max_s": 0.02}
    rng = random.Random(seed)
    kill_at = rng.randint(n // 5, 3 * n // 4)  # completed cases in the log when killed

    with FakeOpenAIServer(latency_s=0.02, faults=plan) as server_a:
        target_a = write_target(tmp_path / "a.yaml", server_a.base_url, **settings)
        run_a = tmp_path / "run-a"
        args = ["replay", "--evalset", str(ev), "--target", str(target_a), "--out", str(run_a),
                "--concurrency", "8", "--cache", str(tmp_path / "cache-a.sqlite")]
        proc = subprocess.Popen([sys.executable, "-m", "synthloop.cli", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ))
        log = run_a / "log.jsonl"
        deadline = time.monotonic() + 120
        lines = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists():
                lines = log.read_bytes().count(b"\n")
                if lines >= kill_at:
                    break
            time.sleep(0.002)
        assert proc.poll() is None, f"replay finished before the kill point ({lines} lines)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        # let the server finish reading what was already on the wire: wait until its count
        # has been still for a second (a fixed sleep was too short on a loaded machine)
        seen, still_since = server_a.request_count, time.monotonic()
        while time.monotonic() - still_since < 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
            if server_a.request_count != seen:
                seen, still_since = server_a.request_count, time.monotonic()
        before_kill = list(server_a.requests)
        logged = {r.case_id for r in read_log(log).values()}
        assert kill_at <= len(logged) < n
        assert RunDir(run_a).manifest().status == "running"

        code, stdout, stderr = cli(capsys, *args)  # resume (in this process)
        assert code == 0, stderr
        assert f"{len(logged):,} resumed from the run log" in stdout
        after_kill = server_a.requests[len(before_kill):]

    with FakeOpenAIServer(latency_s=0.02, faults=plan) as server_b:
        target_b = write_target(tmp_path / "b.yaml", server_b.base_url, **settings)
        code, _, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target", str(target_b),
                              "--out", str(tmp_path / "run-b"), "--concurrency", "8",
                              "--cache", str(tmp_path / "cache-b.sqlite"))
        assert code == 0, stderr

    resumed = responses(run_a)
    straight = responses(tmp_path / "run-b")
    assert [r.case_id for r in resumed] == [r.case_id for r in straight] == [
        f"case-{i:04d}" for i in range(n)]
    for a, b in zip(resumed, straight, strict=True):
        assert (a.output, a.error, a.error_kind, a.usage, a.cached) == (
            b.output, b.error, b.error_kind, b.usage, b.cached), a.case_id
        if a.case_id in logged:
            assert a.attempts == b.attempts, a.case_id  # the same fault sequence, not redone
    ma, mb = RunDir(run_a).manifest(), RunDir(tmp_path / "run-b").manifest()
    assert ma.status == mb.status == "complete"
    assert ma.counts == mb.counts and ma.tokens == mb.tokens

    # no case was requested again beyond its retries
    phase1, phase2 = _requests_by_case(before_kill), _requests_by_case(after_kill)
    by_input = {f"question {int(r.case_id[5:])} about my order": r for r in resumed}
    for text, r in by_input.items():
        if r.case_id in logged:
            assert phase2[text] == 0, r.case_id
            assert phase1[text] == r.attempts, r.case_id
        else:
            assert phase2[text] == r.attempts, r.case_id
    assert len(after_kill) == sum(r.attempts for r in resumed if r.case_id not in logged)


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cancelled CI job sends SIGTERM: the replay marks its run `interrupted`, flushes the
    replies it has into the cache, exits 143, and a resume requests only what was not done."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    n = 200
    ev = make_evalset(tmp_path / "ev", n)
    with FakeOpenAIServer(latency_s=0.03) as server:
        target = write_target(tmp_path / "t.yaml", server.base_url)
        run = tmp_path / "run"
        cache = tmp_path / "cache.sqlite"
        args = ["replay", "--evalset", str(ev), "--target", str(target), "--out", str(run),
                "--concurrency", "4", "--cache", str(cache)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "synthloop.cli", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(os.environ))
        log = run / "log.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "replay finished before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err.decode()
        assert b"terminated" in err and b"Traceback" not in err
        assert RunDir(run).manifest().status == "interrupted"
        done = {r.case_id for r in read_log(log).values()}
        assert 40 <= len(done) < n
        sent = server.request_count

        # a new run dir on the same cache: every reply finished before SIGTERM is a cache hit
        code, stdout, stderr = cli(capsys, "replay", "--evalset", str(ev), "--target",
                                   str(target), "--out", str(tmp_path / "fresh"), "--cache",
                                   str(cache), "--max-retries", "0", "--concurrency", "1",
                                   "--timeout", "0.001")
        hits = sum(r.cached for r in responses(tmp_path / "fresh"))
        assert hits >= len(done), stdout + stderr

        server_before = server.request_count
        code, stdout, stderr = cli(capsys, *args)  # resume
        assert code == 0, stderr
        assert f"{len(done):,} resumed from the run log" in stdout
        assert server.request_count - server_before <= n - len(done)
        assert sent >= len(done)
    assert [r.case_id for r in responses(run)] == [f"case-{i:04d}" for i in range(n)]
    assert RunDir(run).manifest().status == "complete"


# ------------------------------------------------------------------------ the key stays secret
def test_api_key_appears_in_no_file_and_no_output(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SYNTHLOOP_PROGRESS", "1")
    ev = make_evalset(tmp_path / "ev", 60)
    rng = random.Random(4)  # 30 % faults of every kind, and a 401 that is always reached
    kinds = ("429", "500", "503", "bad_json", "empty_choices", "reset")
    script = {i: rng.choice(kinds) for i in range(400) if rng.random() < 0.3}
    script[5] = script[150] = "401"
    plan = FaultPlan(script=script)
    outputs = []
    with FakeOpenAIServer(faults=plan) as server:
        target = write_target(tmp_path / "t.yaml", server.base_url, max_retries=2,
                              retry_initial_s=0.001)
        args = ["replay", "--evalset", str(ev), "--target", str(target), "--out",
                str(tmp_path / "run")]
        code, stdout, stderr = run_cli(*args, cwd=tmp_path)  # the real command
        outputs.append(stdout + stderr)
        monkeypatch.chdir(tmp_path)
        for _ in range(3):  # 401s stop the run; resuming goes on
            code, stdout, stderr = cli(capsys, *args)
            outputs.append(stdout + stderr + caplog.text)
        assert any(h.get("Authorization") == f"Bearer {SECRET}" for h in server.headers)
    assert any("HTTP 401" in o for o in outputs)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"log.jsonl", "manifest.json", "cache.sqlite"} <= names
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    for o in outputs:
        assert SECRET not in o
