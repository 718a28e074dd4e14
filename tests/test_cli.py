"""The `synthloop` entry point itself: behaviour shared by every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthloop.stats.fixtures import write_run_pair


def _run_with_closed_stdout(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose reader has already gone (`synthloop ... | head`)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "synthloop.cli", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=600)
    finally:
        os.close(w)


def test_output_piped_into_a_closed_reader_is_not_a_crash() -> None:
    proc = _run_with_closed_stdout("schema")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_gate_keeps_its_exit_code_and_reports_when_stdout_is_closed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    base = (rng.random(n) < 0.8).astype(float)
    cand = np.where(rng.random(n) < 0.3, 0.0, base)  # a clear regression
    _, base_run, cand_run = write_run_pair(
        tmp_path / "data", base={"correct": base}, cand={"correct": cand},
        kinds={"correct": "binary"})
    cmp = tmp_path / "cmp"
    assert _run_with_closed_stdout("compare", str(base_run), str(cand_run), "--out",
                                   str(cmp)).returncode == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - metric: correct\n    max_drop: 0.02\n")
    proc = _run_with_closed_stdout("gate", str(cmp), "--policy", str(policy),
                                   "--junit", str(tmp_path / "junit.xml"))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    assert (tmp_path / "junit.xml").is_file() and (cmp / "verdict.json").is_file()


def test_generate_help_says_what_n_and_dry_run_do(capsys: pytest.CaptureFixture[str]) -> None:
    from synthloop.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "llm: number of sessions" in text and "sdv: number of interactions" in text
    assert "call nothing, write nothing" in text and "(default: the spec's `name`" in text


def test_n_on_a_rules_spec_names_both_kinds_it_applies_to(
        tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthloop.cli import main

    code = main(["generate", str(repo_root / "generators" / "support_assistant.yaml"),
                 "--out", str(tmp_path / "e" / "v1"), "-n", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "-n applies to llm and sdv specs" in err
    assert not (tmp_path / "e").exists()


def test_schema_takes_model_names_as_the_readme_spells_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from synthloop.cli import main

    for name, title in (("Interaction", "Interaction"), ("EvalCase", "EvalCase"),
                        ("EvalsetManifest", "EvalsetManifest"), ("run-manifest", "RunManifest")):
        assert main(["schema", name]) == 0
        assert json.loads(capsys.readouterr().out)["title"] == title
    with pytest.raises(SystemExit) as e:
        main(["schema", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
