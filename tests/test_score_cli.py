"""`synthloop score` end to end, in a subprocess: exit codes, summary, files written."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthloop.cli import main
from synthloop.testing import FakeOpenAIServer, FaultPlan
from tests.conftest import run_cli
from tests.test_scorers import case, failed, make_run, ok

MINIMAL = """\
# SCORERS.yaml
scorers:
  - name: correct
    kind: exact_match        # output equals the case's first good reference, after trimming
"""


def _run(tmp_path: Path) -> Path:
    cases = [case("a", ["Paris"], inp="Capital of France?"), case("b", ["Rome"], inp="Italy?"),
             case("c", ["Oslo"], inp="Norway?")]
    return make_run(tmp_path, cases, [ok("a", " Paris "), ok("b", "Milan"), failed("c")])


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in-process (same parser, dispatch and error mapping as the subprocess)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_minimal_scorers_file_scores_a_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (tmp_path / "SCORERS.yaml").write_text(MINIMAL)
    code, out, err = run_cli("score", str(run), "--scorers", str(tmp_path / "SCORERS.yaml"))
    assert code == 0, err
    assert "scored 3 responses" in out and "(1 without output)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("correct"))
    assert line.split()[:6] == ["correct", "binary", "higher", "0.3333", "3", "0"]
    rows = pq.read_table(run / "scores.parquet").to_pylist()
    assert [r["value"] for r in rows] == [1.0, 0.0, 0.0]
    assert json.loads((run / "scores.json").read_text())["metrics"]["correct"]["n"] == 3


def test_json_summary_and_rescoring_keeps_other_metrics(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(textwrap.dedent("""
        scorers:
          - {name: f1, kind: token_f1}
          - {name: latency, kind: latency}
    """))
    assert _main(capsys, "score", str(run), "--scorers", str(tmp_path / "a.yaml"))[0] == 0
    code, out, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "b.yaml"),
                           "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["kept"] == ["correct"]
    assert summary["metrics"]["latency"]["higher_is_better"] is False
    metrics = {r["metric"] for r in pq.read_table(run / "scores.parquet").to_pylist()}
    assert metrics == {"correct", "f1", "latency"}


def test_bad_config_exits_2_listing_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    run = _run(tmp_path)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent("""
        scorers:
          - {name: correct, kind: exact_mach}
          - {name: fmt, kind: regex, patern: "x"}
          - {name: score, kind: numeric, abs_tol: -1}
    """))
    code, out, err = run_cli("score", str(run), "--scorers", str(cfg))
    assert code == 2
    assert "Traceback" not in err
    assert "4 problems" in err
    assert "scorers[0] 'correct': unknown scorer kind 'exact_mach' (did you mean `exact_match`?)" \
        in err
    assert "scorers[1] 'fmt': patern: unknown key (did you mean `pattern`?)" in err
    assert "scorers[1] 'fmt': pattern: required field is missing" in err
    assert "scorers[2] 'score': abs_tol: Input should be greater than or equal to 0" in err
    assert not (run / "scores.parquet").exists() and not (run / "scores.json").exists()


def test_input_errors_exit_2_with_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    (tmp_path / "s.yaml").write_text(MINIMAL)
    code, _, err = run_cli("score", str(tmp_path / "nope"), "--scorers", str(tmp_path / "s.yaml"))
    assert code == 2 and "not a run directory" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: scorer config not found" in err
    with pytest.raises(SystemExit) as e:
        main(["score", str(run)])
    assert e.value.code == 2 and "--scorers" in capsys.readouterr().err
    empty = make_run(tmp_path, [case("a", ["x"])], [], name="empty")
    code, _, err = _main(capsys, "score", str(empty), "--scorers", str(tmp_path / "s.yaml"))
    assert code == 2 and "nothing to score" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "p.yaml").write_text(
        "scorers:\n  - {name: vs, kind: llm_pairwise, model: m, base_url: 'http://127.0.0.1:9/v1'}\n")
    code, _, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "p.yaml"))
    assert code == 2 and "pass --baseline BASE_RUNDIR" in err
    code, _, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "s.yaml"),
                         "--evalset", str(tmp_path / "elsewhere"))
    assert code == 2 and "--evalset" in err
    assert not (run / "scores.parquet").exists()


def test_damaged_run_directories_exit_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # these used to be pyarrow / NotADirectoryError tracebacks (exit 1)
    run = _run(tmp_path)
    (tmp_path / "s.yaml").write_text(MINIMAL)
    good = (run / "responses.parquet").read_bytes()
    (run / "responses.parquet").write_bytes(good[:40])
    code, _, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "s.yaml"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "responses.parquet: damaged or not written by synthloop" in err
    assert "rebuilt from log.jsonl" in err and not (run / "scores.parquet").exists()
    (run / "responses.parquet").write_bytes(good)
    manifest = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(manifest[: len(manifest) // 2])
    code, _, err = _main(capsys, "score", str(run), "--scorers", str(tmp_path / "s.yaml"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "invalid run manifest: (top level): Invalid JSON" in err
    (tmp_path / "a-file").write_text("x")
    code, _, err = _main(capsys, "score", str(tmp_path / "a-file"), "--scorers",
                         str(tmp_path / "s.yaml"))
    assert code == 2 and "a-file: not a run directory (a file, not a directory)" in err


def test_judges_through_the_cli_and_credential_failure_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [case(c, ["Paris"], inp=f"Capital of France? ({c})") for c in "ab"]
    base = make_run(tmp_path, cases, [ok("a", "Lyon"), ok("b", "Paris")], name="base")
    cand = make_run(tmp_path, cases, [ok("a", "Paris"), ok("b", "Paris")], name="cand",
                    evalset=tmp_path / "base-evalset")

    def judge(body: dict[str, object], index: int) -> str:
        text = str(body["messages"][1]["content"])  # type: ignore[index]
        if "## Reply A" in text:
            a = text.split("## Reply A\n", 1)[1].split("\n", 1)[0]
            return json.dumps({"reasoning": "r", "winner": "A" if "Paris" in a else "B"})
        return json.dumps({"reasoning": "fine", "score": 4})

    with FakeOpenAIServer(responder=judge) as server:
        (tmp_path / "j.yaml").write_text(textwrap.dedent(f"""
            scorers:
              - {{name: quality, kind: llm_judge, model: j, base_url: "{server.base_url}",
                  rubric: "Correct?"}}
              - {{name: vs_base, kind: llm_pairwise, model: j, base_url: "{server.base_url}"}}
        """))
        code, out, err = run_cli("score", str(cand), "--scorers", str(tmp_path / "j.yaml"),
                                 "--baseline", str(base), "--cache", str(tmp_path / "c.sqlite"))
        assert code == 0, err
        assert server.request_count == 2 + 2  # two pointwise, one pair in both orders
    assert "quality: 2 verdicts (0 cached)" in out
    got = {(r["case_id"], r["metric"]): r["value"]
           for r in pq.read_table(cand / "scores.parquet").to_pylist()}
    assert got == {("a", "quality"): 4.0, ("b", "quality"): 4.0, ("a", "vs_base"): 1.0,
                   ("b", "vs_base"): 0.5}
    with FakeOpenAIServer(faults=FaultPlan(rate=1.0, kinds=("401",))) as server:
        (tmp_path / "k.yaml").write_text(
            f"scorers:\n  - {{name: q, kind: llm_judge, model: j, base_url: '{server.base_url}',"
            " rubric: r}\n")
        code, _, err = _main(capsys, "score", str(cand), "--scorers", str(tmp_path / "k.yaml"),
                             "--no-cache")
    assert code == 2 and "refused the credentials (HTTP 401)" in err and "Traceback" not in err
