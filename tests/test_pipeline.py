"""`synthloop run`: the whole pipeline on a small spec, with real stages and stage caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthloop.cli import main
from synthloop.errors import ConfigError
from synthloop.pipeline import PipelineResult, check_pipeline, load_pipeline, run_pipeline
from synthloop.schema import EvalCase
from tests.conftest import REPO, run_cli

ANSWERS = {
    "billing": "Your invoices are under Settings > Billing > Invoices.",
    "refund": "Request a refund under Settings > Billing > Request refund within 30 days.",
    "sync": "Open Settings > Sync and tap Sync now.",
}

SPEC = """
kind: rules
name: mini
seed: 3
sessions: 160
pool_size: 16
slots:
  amount: {values: ["$4", "$9", "$48"]}
personas:
  - name: user
    locales: {en_US: 1}
    turns: {weights: {1: 2, 2: 1}}
intents:
  - name: billing
    templates: ["Where is my invoice for {{ amount }}?", "I need a receipt for {{ amount }}"]
    answers: ["Your invoices are under Settings > Billing > Invoices."]
    reply_quality: 0.8
  - name: refund
    templates: ["Can I get a refund of {{ amount }}?", "Please refund the {{ amount }} charge"]
    answers: ["Request a refund under Settings > Billing > Request refund within 30 days."]
    reply_quality: 0.8
  - name: sync
    templates: ["My notes do not sync", "Sync is stuck on my phone"]
    answers: ["Open Settings > Sync and tap Sync now."]
    reply_quality: 0.8
feedback:
  explicit_rate: 0.5
"""


def _route(text: str, refund_first: bool) -> str:
    t = text.lower()
    refund = "refund" in t
    billing = any(w in t for w in ("invoice", "receipt", "charge"))
    if refund and (refund_first or not billing):
        return ANSWERS["refund"]
    if billing:
        return ANSWERS["billing"]
    if "sync" in t:
        return ANSWERS["sync"]
    return "Sorry, I don't know."


def model_good(case: EvalCase) -> str:
    """Keyword routing that checks refunds first: right on every intent."""
    return _route(case.input, refund_first=True)


def model_refund_bug(case: EvalCase) -> str:
    """Checks billing words first: refund questions that mention a charge get billing."""
    return _route(case.input, refund_first=False)


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def make_project(tmp: Path, *, candidate: str = "model_refund_bug", policy: Any = None,
                 feedback: bool = False, **extra: Any) -> Path:
    """A pipeline folder: spec, two python targets, scorers, policy, pipeline.yaml."""
    _write(tmp / "spec.yaml", SPEC)
    for name, fn in (("base", "model_good"), ("cand", candidate)):
        _write(tmp / "targets" / f"{name}.yaml",
               {"kind": "python", "name": name, "function": f"tests.test_pipeline:{fn}",
                "version": fn, "threaded": False})
    _write(tmp / "scorers.yaml", {"scorers": [{"name": "correct", "kind": "exact_match"}]})
    _write(tmp / "policy.yaml", policy or {
        "min_cases": 20, "min_segment_cases": 10,
        "rules": [{"metric": "correct", "max_drop": 0.05, "segments": "intent"}]})
    cfg: dict[str, Any] = {
        "name": "mini",
        "evalset": {"generate": "spec.yaml"},
        "targets": {"baseline": "targets/base.yaml", "candidates": ["targets/cand.yaml"]},
        "scorers": "scorers.yaml",
        "policy": "policy.yaml",
        "workdir": "work",
    }
    if feedback:
        cfg["feedback_model"] = {"training": {"use_latency": False, "min_rows": 30}}
    cfg.update(extra)
    return _write(tmp / "pipeline.yaml", cfg)


def statuses(result: PipelineResult) -> dict[str, str]:
    return {s.stage: s.status for s in result.stages}


def test_pipeline_finds_segment_regression_and_caches_every_stage(tmp_path: Path) -> None:
    cfg = make_project(tmp_path)
    first = run_pipeline(cfg, progress=False)
    assert first.exit_code == 1 and first.verdict == "FAIL"
    assert set(statuses(first).values()) == {"ran"}
    cand = first.candidates[0]
    assert any(r.metric == "correct" and r.segment == "intent=refund" for r in cand.regressions)
    assert not any(r.segment in ("intent=sync", "intent=billing") for r in cand.regressions)
    for kind in ("markdown", "junit", "html"):
        assert cand.reports[kind].is_file()
    assert "intent=refund" in cand.reports["html"].read_text()
    assert first.workdir == tmp_path / "work"
    cmp_before = (cand.comparison / "comparison.json").read_text()

    second = run_pipeline(cfg, progress=False)
    st = statuses(second)
    assert {k: v for k, v in st.items() if not k.startswith("gate")} == {
        k: "reused" for k in st if not k.startswith("gate")}
    assert second.exit_code == 1
    assert (second.candidates[0].comparison / "comparison.json").read_text() == cmp_before
    summary = "\n".join(second.summary_lines())
    assert "FAIL" in summary and "intent=refund" in summary and "report.html" in summary

    # a new scorer re-scores and re-compares, but reuses the evalset and both replays
    _write(tmp_path / "scorers.yaml", {"scorers": [
        {"name": "correct", "kind": "exact_match"}, {"name": "f1", "kind": "token_f1"}]})
    third = run_pipeline(cfg, progress=False)
    st = statuses(third)
    assert st["evalset"] == "reused" and st["replay base"] == "reused"
    assert st["replay cand"] == "reused"
    assert st["score base"] == "ran" and st["score cand"] == "ran" and st["compare cand"] == "ran"

    # a new seed generates a new evalset version; --force redoes everything
    data = yaml.safe_load(cfg.read_text())
    data["evalset"]["seed"] = 11
    _write(cfg, data)
    fourth = run_pipeline(cfg, progress=False)
    assert statuses(fourth)["evalset"] == "ran" and fourth.evalset != first.evalset
    forced = run_pipeline(cfg, progress=False, force=True)
    assert set(statuses(forced).values()) == {"ran"}
    assert forced.evalset_hash == fourth.evalset_hash  # deterministic


def test_candidate_equal_to_baseline_passes(tmp_path: Path) -> None:
    cfg = make_project(tmp_path, candidate="model_good")
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["candidates"] = ["targets/base.yaml"]  # the very same target
    data["feedback_model"] = {"train_on": {"generate": "spec.yaml"},  # = the evalset stage
                              "training": {"use_latency": False, "min_rows": 30}}
    _write(cfg, data)
    result = run_pipeline(cfg, progress=False)
    assert result.exit_code == 0 and result.verdict == "PASS"
    assert result.candidates[0].regressions == []
    assert result.candidates[0].run == result.baseline_run
    assert statuses(result)["feedback-evalset"] == "reused"
    # --force redoes each stage once, not the ones this run just made
    forced = run_pipeline(cfg, progress=False, force=True)
    assert forced.exit_code == 0
    st = [(s.stage, s.status) for s in forced.stages]
    assert ("evalset", "ran") in st and ("feedback-evalset", "reused") in st
    assert st.count(("replay base", "ran")) == 1 and ("replay base", "reused") in st


def test_inline_sections_multiple_candidates_and_feedback_model(tmp_path: Path) -> None:
    cfg = make_project(tmp_path, feedback=True)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["candidates"] = [
        "targets/cand.yaml",
        {"kind": "python", "name": "same", "function": "tests.test_pipeline:model_good",
         "threaded": False},
    ]
    data["scorers"] = {"scorers": [{"name": "correct", "kind": "exact_match"}]}
    data["policy"] = {"min_cases": 20, "rules": [
        {"metric": "correct", "max_drop": 0.05, "segments": ["intent"]},
        {"metric": "thumb_up_pred", "max_drop": 0.2}]}
    _write(cfg, data)
    result = run_pipeline(cfg, progress=False)
    by = {c.label: c for c in result.candidates}
    assert by["cand"].exit_code == 1 and by["same"].exit_code == 0
    assert result.exit_code == 1
    assert result.feedback_model is not None and (result.feedback_model / "model.json").exists()
    scores = json.loads((by["cand"].run / "scores.json").read_text())
    assert set(scores["metrics"]) == {"correct", "thumb_up_pred"}
    assert statuses(result)["feedback"] == "ran"
    again = run_pipeline(cfg, progress=False)
    assert statuses(again)["feedback"] == "reused"


def test_inconclusive_with_too_few_cases(tmp_path: Path) -> None:
    cfg = make_project(tmp_path, candidate="model_good", policy={
        "min_cases": 100000, "rules": [{"metric": "correct", "max_drop": 0.05}]})
    result = run_pipeline(cfg, progress=False)
    assert result.exit_code == 3 and result.verdict == "INCONCLUSIVE"
    # the summary says which check could not be decided, and why
    summary = "\n".join(result.summary_lines())
    assert "inconclusive (1):" in summary
    assert "- correct drop <= 0.05: only 202 paired cases (fewer than 100000)" in summary


def test_reuses_an_existing_evalset_by_ref(tmp_path: Path) -> None:
    cfg = make_project(tmp_path)
    first = run_pipeline(cfg, progress=False)
    ref_dir = tmp_path / "pinned"
    shutil.copytree(first.evalset, ref_dir)
    data = yaml.safe_load(cfg.read_text())
    data["evalset"] = {"ref": "pinned"}
    data["workdir"] = "work2"
    _write(cfg, data)
    second = run_pipeline(cfg, progress=False)
    assert second.evalset == ref_dir and second.evalset_hash == first.evalset_hash
    assert second.exit_code == 1


def test_bad_config_fails_before_any_work(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_project(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["candidate"] = data["targets"].pop("candidates")
    _write(cfg, data)
    with pytest.raises(ConfigError) as e:
        load_pipeline(cfg)
    assert "did you mean `candidates`" in "\n".join(e.value.problems or [str(e.value)])

    cfg = make_project(tmp_path, policy={"rules": [{"metric": "corect", "max_drop": 0.1}]})
    with pytest.raises(ConfigError, match="did you mean `correct`"):
        run_pipeline(cfg, progress=False)
    assert not (tmp_path / "work").exists()

    cfg = make_project(tmp_path, policy={"rules": [
        {"metric": "correct", "max_drop": 0.1, "segments": "topic"}]})
    with pytest.raises(ConfigError, match="no tag `topic`"):
        run_pipeline(cfg, progress=False)
    assert not (tmp_path / "work" / "runs").exists()

    cfg = make_project(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["baseline"] = "targets/missing.yaml"
    _write(cfg, data)
    capsys.readouterr()
    code = main(["run", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "missing.yaml" in err and "not found" in err
    assert len(err.strip().splitlines()) == 1

    data["targets"]["baseline"] = "targets/base.yaml"
    data["evalset"] = {"generate": "spec.yaml", "ref": "x@v1"}
    _write(cfg, data)
    code = main(["run", str(cfg)])
    assert code == 2 and "exactly one of" in capsys.readouterr().err


def test_cli_run_prints_summary_and_exits_with_the_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_project(tmp_path)
    work = tmp_path / "elsewhere"
    code, out, err = run_cli("run", str(cfg), "--workdir", str(work), cwd=REPO)
    assert code == 1, err
    assert "mini: FAIL (exit 1)" in out
    assert "intent=refund" in out and "html report" in out
    assert "[replay cand] ran" in err
    assert (work / "reports" / "cand" / "report.html").is_file()
    capsys.readouterr()
    code = main(["run", str(cfg), "--workdir", str(work)])
    assert code == 1 and "[replay cand] reused" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quickstart.yaml", "ci.yaml"])
def test_example_configs_validate(name: str, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    monkeypatch.setenv("BASELINE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CANDIDATE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    lines = check_pipeline(REPO / "configs" / name, workdir=tmp_path / "w")
    assert lines[0].endswith(f"valid pipeline '{name.removesuffix('.yaml')}'")
    assert any(line.startswith("  candidate:") for line in lines)
    assert not (tmp_path / "w").exists()  # checking does no work
    assert all("sk-test" not in line for line in lines)


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_project(tmp_path, feedback=True)
    assert main(["run", str(cfg), "--check"]) == 0
    out = capsys.readouterr().out
    assert "valid pipeline 'mini'" in out and "metrics: correct, thumb_up_pred" in out
    assert not (tmp_path / "work").exists()
    _write(tmp_path / "scorers.yaml", {"scorers": [{"name": "correct", "kind": "regex"}]})
    assert main(["run", str(cfg), "--check"]) == 2
    assert "pattern" in capsys.readouterr().err


def test_inline_target_errors_name_the_pipeline_file_and_the_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_project(tmp_path, targets={
        "baseline": "targets/base.yaml",
        "candidates": [{"kind": "openai", "name": "c", "base_url": "http://127.0.0.1:9/v1",
                        "model": "m", "temprature": 0}]})
    assert main(["run", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: targets.candidates[0]: temprature: unknown key" in err
    assert "<dict>" not in err
    assert not (tmp_path / "work").exists()


def test_ci_config_endpoints_come_from_the_ci_job() -> None:
    # A CI runner has no model server on localhost: the README's CI recipe sets BASELINE_URL
    # and CANDIDATE_URL, so every endpoint of configs/ci.yaml must come from them.
    cfg = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    targets = [cfg["targets"]["baseline"], *cfg["targets"]["candidates"]]
    for t in targets:
        if isinstance(t, str):
            t = yaml.safe_load((REPO / "configs" / t).read_text())
        assert t["base_url"] in ("${BASELINE_URL}", "${CANDIDATE_URL}"), t
    readme = (REPO / "README.md").read_text()
    assert "BASELINE_URL:" in readme and "CANDIDATE_URL:" in readme


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def test_damaged_cached_stages_are_redone_not_trusted(tmp_path: Path) -> None:
    cfg = make_project(tmp_path)
    first = run_pipeline(cfg, progress=False)
    cand = first.candidates[0]
    verdict = first.exit_code

    # a truncated scores file (disk full, killed copy) is scored again, not reused
    _truncate(cand.run / "scores.parquet")
    shutil.rmtree(cand.comparison)
    st = statuses(r := run_pipeline(cfg, progress=False))
    assert st["score cand"] == "ran" and st["compare cand"] == "ran" and st["score base"] == "reused"
    assert r.exit_code == verdict

    # a truncated comparison is compared again
    _truncate(cand.comparison / "comparison.json")
    st = statuses(r := run_pipeline(cfg, progress=False))
    assert st["compare cand"] == "ran" and r.exit_code == verdict

    # a damaged or missing responses file is rebuilt from the run's log
    _truncate(cand.run / "responses.parquet")
    st = statuses(r := run_pipeline(cfg, progress=False))
    assert st["replay cand"] == "ran" and r.exit_code == verdict
    (cand.run / "responses.parquet").unlink()
    assert statuses(run_pipeline(cfg, progress=False))["replay cand"] == "ran"

    # a half-deleted run folder (no manifest) is replayed afresh
    (cand.run / "manifest.json").unlink()
    st = statuses(r := run_pipeline(cfg, progress=False))
    assert st["replay cand"] == "ran" and r.exit_code == verdict

    # a damaged evalset shard or manifest regenerates the (same) version
    shard = next(first.evalset.glob("*.arrow"))
    _truncate(shard)
    st = statuses(r := run_pipeline(cfg, progress=False))
    assert st["evalset"] == "ran" and r.evalset_hash == first.evalset_hash
    assert st["replay base"] == "reused"
    (first.evalset / "manifest.json").write_text("{")
    assert statuses(run_pipeline(cfg, progress=False))["evalset"] == "ran"
    again = statuses(run_pipeline(cfg, progress=False))
    assert {v for k, v in again.items() if not k.startswith("gate")} == {"reused"}


def test_a_removed_scorer_leaves_the_comparison(tmp_path: Path) -> None:
    cfg = make_project(tmp_path)
    _write(tmp_path / "scorers.yaml", {"scorers": [
        {"name": "correct", "kind": "exact_match"}, {"name": "f1", "kind": "token_f1"}]})
    first = run_pipeline(cfg, progress=False)
    assert any(h.startswith("f1:") for h in first.candidates[0].headline)
    _write(tmp_path / "scorers.yaml", {"scorers": [{"name": "correct", "kind": "exact_match"}]})
    second = run_pipeline(cfg, progress=False)
    assert statuses(second)["score cand"] == "ran"
    assert [h.split(":")[0] for h in second.candidates[0].headline] == ["correct"]
    scores = json.loads((second.candidates[0].run / "scores.json").read_text())
    assert set(scores["metrics"]) == {"correct"}


def test_check_catches_an_unknown_segment_key_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = {"rules": [{"metric": "correct", "max_drop": 0.1, "segments": ["intent", "intnet"]}]}
    # a rules spec always writes the same tag keys: known without generating anything
    cfg = make_project(tmp_path, policy=policy)
    assert main(["run", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert "segments: the evalset has no tag `intnet`" in err and "did you mean `intent`" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["run", str(cfg)]) == 2
    capsys.readouterr()
    assert not (tmp_path / "work").exists()

    # an existing evalset (`ref`) is read, not replayed
    good = make_project(tmp_path / "g")
    pinned = run_pipeline(good, progress=False).evalset
    cfg = make_project(tmp_path / "r", policy=policy, evalset={"ref": str(pinned)})
    assert main(["run", str(cfg), "--check"]) == 2
    assert "no tag `intnet`" in capsys.readouterr().err
    assert not (tmp_path / "r" / "work").exists()


# ------------------------------------------------------------- what an evalset stage depends on
def test_llm_spec_digest_follows_its_template_files_and_personas_from(tmp_path: Path) -> None:
    """An edit to a `.j2` prompt an llm spec names, or to the rules spec it is grounded on,
    must regenerate the evalset stage (and change the manifest's spec_hash), not reuse it."""
    from synthloop.config import parse_document
    from synthloop.generate.llm._generator import load_prompts, load_spec, spec_hash
    from synthloop.pipeline import _spec_digest

    (tmp_path / "opener.j2").write_text("Write the first message of {{ persona.name }}.\n")
    shutil.copy(REPO / "generators" / "support_assistant.yaml", tmp_path / "rules.yaml")
    shutil.copytree(REPO / "generators" / "templates", tmp_path / "templates")
    spec = tmp_path / "llm.yaml"
    spec.write_text(yaml.safe_dump({
        "kind": "llm", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
        "n": 5, "prompt_template": "opener.j2", "personas_from": "rules.yaml",
        "intents": [{"name": "refund", "description": "wants money back"}]}))

    def provenance_hash() -> str:
        llm = load_spec(spec, parse_document(spec))
        return spec_hash(spec, load_prompts(llm, spec))

    d0, h0 = _spec_digest(spec), provenance_hash()
    assert _spec_digest(spec) == d0  # stable
    (tmp_path / "opener.j2").write_text("Write the opening message of {{ persona.name }}.\n")
    d1, h1 = _spec_digest(spec), provenance_hash()
    assert d1 != d0 and h1 != h0
    rules = (tmp_path / "rules.yaml").read_text()
    (tmp_path / "rules.yaml").write_text(rules.replace("seed: 7", "seed: 8", 1)
                                         if "seed: 7" in rules else rules + "\n# edited\n")
    assert _spec_digest(spec) != d1
    assert provenance_hash() == h1  # the skeleton is recorded as source_data_hash instead


def test_sdv_spec_digest_follows_its_ingest_sample(tmp_path: Path) -> None:
    from synthloop.ingest import SAMPLE
    from synthloop.pipeline import _spec_digest

    (tmp_path / "ing").mkdir()
    (tmp_path / "ing" / SAMPLE).write_bytes(b"first sample")
    spec = tmp_path / "sdv.yaml"
    spec.write_text("kind: sdv\nsource: ing\n")
    d0 = _spec_digest(spec)
    (tmp_path / "ing" / SAMPLE).write_bytes(b"re-ingested sample")
    assert _spec_digest(spec) != d0
