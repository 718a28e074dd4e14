"""End-to-end: `synthloop compare` and `synthloop gate`, every exit code and the reports they
write. The main paths run the real command in a subprocess (`run_cli`); variants of the same
paths call `synthloop.cli.main` in-process to keep the suite fast."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from synthloop.cli import main
from synthloop.stats.fixtures import write_run_pair
from tests.conftest import run_cli

POLICY = """\
rules:
  - metric: correct
    max_drop: 0.02           # non-inferiority margin
    confidence: 0.95
    segments: cluster        # also test each value of tag `cluster`, corrected for multiplicity
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`synthloop ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _runs(root: Path, n: int, p_disc: float, *, bad_cluster_drop: float = 0.0,
          seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    half = p_disc / 2
    cell = rng.choice(4, size=n, p=[0.6, half, half, 0.4 - p_disc])
    b = np.isin(cell, (0, 1)).astype(float)
    c = np.isin(cell, (0, 2)).astype(float)
    clusters = np.array(["billing", "login", "refunds", "shipping", "other"])[np.arange(n) % 5]
    if bad_cluster_drop:
        c[(clusters == "billing") & (b == 1) & (rng.random(n) < bad_cluster_drop)] = 0.0
    _, base, cand = write_run_pair(
        root, base={"correct": b}, cand={"correct": c}, kinds={"correct": "binary"},
        tags={"cluster": clusters}, sessions=[f"s{i // 2}" for i in range(n)],
        latency_base=rng.lognormal(5, 0.3, n), latency_cand=rng.lognormal(5, 0.3, n))
    return base, cand


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("policy") / "policy.yaml"
    p.write_text(POLICY)
    return p


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three comparisons: pass, regression (one cluster), inconclusive (too few cases)."""
    root = tmp_path_factory.mktemp("cli")
    out: dict[str, Path] = {}
    for name, kw in {"pass": dict(n=4000, p_disc=0.02),
                     "regression": dict(n=4000, p_disc=0.04, bad_cluster_drop=0.4),
                     "inconclusive": dict(n=400, p_disc=0.3)}.items():
        base, cand = _runs(root / name, **kw)  # type: ignore[arg-type]
        args = ["compare", str(base), str(cand), "--out", str(root / name / "cmp"), "--seed", "3"]
        if name == "regression":
            code, stdout, stderr = run_cli(*args)  # the real command, end to end
            assert code == 0, stderr
            assert "wrote" in stdout and "correct ↑" in stdout
        else:
            assert main(args) == 0
        out[name] = root / name / "cmp"
    return out


def test_compare_writes_comparison_json(compared: dict[str, Path]) -> None:
    doc = json.loads((compared["pass"] / "comparison.json").read_text())
    assert doc["kind"] == "synthloop-comparison" and doc["seed"] == 3
    assert doc["segment_keys"] == ["cluster"] and doc["clustered"] is True
    m = doc["metrics"]["correct"]
    assert m["overall"]["n"] == 4000 and set(m["segments"]["cluster"]) == {
        "billing", "login", "other", "refunds", "shipping"}
    assert m["overall"]["test"].startswith("cluster_sign_flip")


def test_gate_pass_exit_0(compared: dict[str, Path], policy: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = cli(capsys, "gate", str(compared["pass"]), "--policy", str(policy),
                               "--junit", str(tmp_path / "j.xml"),
                               "--markdown", str(tmp_path / "r.md"), "--no-step-summary")
    assert code == 0, stdout + stderr
    assert stdout.startswith("PASS:")
    assert (compared["pass"] / "verdict.json").exists()
    assert (tmp_path / "r.md").read_text().startswith("## ✅ synthloop gate: passed")
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"


def test_gate_regression_exit_1_names_the_segment(compared: dict[str, Path], policy: Path,
                                                  tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    env_before = os.environ.get("GITHUB_STEP_SUMMARY")
    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        code, stdout, stderr = run_cli(
            "gate", str(compared["regression"]), "--policy", str(policy),
            "--junit", str(tmp_path / "junit.xml"), "--markdown", str(tmp_path / "report.md"),
            "--html", str(tmp_path / "report.html"), "--json", str(tmp_path / "verdict.json"))
    finally:
        if env_before is None:
            os.environ.pop("GITHUB_STEP_SUMMARY", None)
        else:
            os.environ["GITHUB_STEP_SUMMARY"] = env_before
    assert code == 1, stdout + stderr
    assert stdout.startswith("FAIL:") and "cluster=billing" in stdout
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("## ❌ synthloop gate: regression found")
    assert "**Failing segments:** `cluster=billing`" in md
    assert summary.read_text() == md + "\n"
    root = ET.parse(tmp_path / "junit.xml").getroot()
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert "correct drop <= 0.02 [cluster=billing]" in failed
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "cluster=billing" in html
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["status"] == "fail" and verdict["exit_code"] == 1


def test_gate_inconclusive_exit_3(compared: dict[str, Path], policy: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run_cli("gate", str(compared["inconclusive"]), "--policy", str(policy),
                                   "--junit", str(tmp_path / "j.xml"), "--no-step-summary")
    assert code == 3, stdout + stderr
    assert stdout.startswith("INCONCLUSIVE:") and "paired cases needed" in stdout
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("errors") == "1"


def test_gate_usage_and_config_errors_exit_2(compared: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cmpdir = compared["pass"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - metric: correct\n    max_dorp: 0.02\n  - metric: corect\n    min: 1\n")
    verdict_file = cmpdir / "verdict.json"
    before = verdict_file.read_bytes() if verdict_file.exists() else None
    code, stdout, stderr = run_cli("gate", str(cmpdir), "--policy", str(bad),
                                   "--junit", str(tmp_path / "never.xml"))
    assert code == 2
    assert "did you mean `max_drop`?" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "never.xml").exists()  # bad input writes nothing
    assert (verdict_file.read_bytes() if verdict_file.exists() else None) == before
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rules:\n  - metric: corect\n    max_drop: 0.02\n")
    code, _, stderr = cli(capsys, "gate", str(cmpdir), "--policy", str(unknown))
    assert code == 2 and "did you mean `correct`?" in stderr
    code, _, stderr = cli(capsys, "gate", str(tmp_path / "nowhere"), "--policy", str(unknown))
    assert code == 2 and "no comparison found" in stderr and "synthloop compare" in stderr
    code, _, stderr = cli(capsys, "gate", str(cmpdir), "--policy", str(tmp_path / "missing.yaml"))
    assert code == 2 and "not found" in stderr
    code, _, stderr = cli(capsys, "gate", str(cmpdir))
    assert code == 2 and "--policy" in stderr


def test_compare_input_errors_exit_2_and_write_nothing(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    base, _ = _runs(tmp_path / "a", n=60, p_disc=0.2)
    _, other = _runs(tmp_path / "b", n=70, p_disc=0.2)
    out = tmp_path / "cmp"
    code, _, stderr = run_cli("compare", str(base), str(other), "--out", str(out))
    assert code == 2 and "different evalsets" in stderr and "Traceback" not in stderr
    assert not out.exists()
    # the evalset moved away: a clear error, and --evalset fixes it
    _, cand = _runs(tmp_path / "c", n=60, p_disc=0.2)
    (tmp_path / "c" / "evalset").rename(tmp_path / "c" / "moved")
    code, _, stderr = cli(capsys, "compare", str(tmp_path / "c" / "base"), str(cand),
                          "--out", str(out))
    assert code == 2 and "--evalset" in stderr and not out.exists()
    code, stdout, _ = cli(capsys, "compare", str(tmp_path / "c" / "base"), str(cand), "--out",
                          str(out), "--evalset", str(tmp_path / "c" / "moved"), "--html",
                          str(out / "cmp.html"), "--markdown", str(out / "cmp.md"))
    assert code == 0 and (out / "comparison.json").exists() and (out / "cmp.html").exists()
    assert (out / "cmp.md").read_text().startswith("## synthloop comparison")
    code, _, stderr = cli(capsys, "compare", str(base), str(base), "--out", str(out),
                          "--confidence", "2")
    assert code == 2 and "between 0.5 and 1" in stderr
    code, _, stderr = cli(capsys, "compare", str(base), str(cand), "--out", str(out),
                          "--metrics", "nope")
    assert code == 2 and "metric 'nope'" in stderr


def test_cli_default_bootstrap_matches_the_library() -> None:
    from synthloop.cli._compare import N_BOOT as CLI_N_BOOT
    from synthloop.stats import N_BOOT

    assert CLI_N_BOOT == N_BOOT


def test_unwritable_report_paths_exit_2_not_1(compared: dict[str, Path], policy: Path,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # an OSError on a path the user chose used to escape as a traceback with exit code 1,
    # which CI reads as "regression", and left `.NAME.tmp-PID` files behind
    cmpdir = compared["pass"]
    folder = tmp_path / "reports"
    folder.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for flag, path in (("--junit", folder), ("--markdown", blocker / "report.md"),
                       ("--html", folder)):
        code, _, stderr = cli(capsys, "gate", str(cmpdir), "--policy", str(policy),
                              flag, str(path))
        assert code == 2, (flag, stderr)
        assert len(stderr.strip().splitlines()) == 1 and "check the path" in stderr
    code, _, stderr = cli(capsys, "compare", str(compared["pass"] / ".." / "base"),
                          str(compared["pass"] / ".." / "base"), "--out", str(blocker / "cmp"))
    assert code == 2 and str(blocker) in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "reports"]
    assert list(folder.iterdir()) == []


def test_damaged_comparison_names_the_problem(compared: dict[str, Path], policy: Path,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # used to print pydantic's header only: "1 validation error for Comparison"
    text = (compared["pass"] / "comparison.json").read_text()
    (tmp_path / "comparison.json").write_text(text[: len(text) // 2])
    code, _, stderr = cli(capsys, "gate", str(tmp_path), "--policy", str(policy))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "invalid comparison file: (top level): Invalid JSON: EOF while parsing" in stderr
    assert not (tmp_path / "verdict.json").exists()


def test_compare_into_a_gated_cmpdir_removes_the_stale_verdict(
        tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = _runs(tmp_path / "runs", n=400, p_disc=0.3)
    cmpdir = tmp_path / "cmp"
    assert cli(capsys, "compare", str(base), str(cand), "--out", str(cmpdir))[0] == 0
    cli(capsys, "gate", str(cmpdir), "--policy", str(policy), "--no-step-summary")
    assert (cmpdir / "verdict.json").is_file()
    # comparing again into the same CMPDIR (e.g. with other runs) makes that verdict stale
    code, _, err = cli(capsys, "compare", str(cand), str(base), "--out", str(cmpdir))
    assert code == 0
    assert not (cmpdir / "verdict.json").exists()
    assert f"removed {cmpdir / 'verdict.json'}" in err and "synthloop gate" in err
    assert (cmpdir / "comparison.json").is_file()
    # a comparison that fails leaves the directory as it was
    cli(capsys, "gate", str(cmpdir), "--policy", str(policy), "--no-step-summary")
    code, _, err = cli(capsys, "compare", str(base), str(tmp_path / "nope"), "--out", str(cmpdir))
    assert code == 2 and (cmpdir / "verdict.json").is_file()
    # and no note without a verdict to remove
    (cmpdir / "verdict.json").unlink()
    assert "removed" not in cli(capsys, "compare", str(base), str(cand), "--out", str(cmpdir))[2]
