"""The feedback model: training, calibration, persistence, the scorer and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthloop.cli import main
from synthloop.errors import ConfigError, DataError
from synthloop.evalsets import open_evalset, write_evalset
from synthloop.schema import EvalCase, Feedback, Message, Provenance, Response
from synthloop.scorers.feedback import (
    MODEL_FILE,
    FeedbackModel,
    FeedbackTrainConfig,
    brier_score,
    expected_calibration_error,
    factory,
    feedback_report,
    labelled_rows,
    report_html,
    train_feedback_model,
)
from tests.conftest import run_cli

INTENTS = {
    "refund": ("How do I get a refund for order {n}?",
               "Open Settings > Billing > Request refund within 30 days; the money returns in "
               "5 to 10 business days."),
    "sync": ("My notes on device {n} are not syncing",
             "Open Settings > Sync and tap Sync now; sign out and back in if a note is missing."),
    "export": ("How can I export note {n} as a PDF?",
               "Choose Share > Export > PDF and pick a page size."),
}
BAD = ["Sorry, I can't help with that right now.", "Please contact support."]


def true_p(good: bool, intent: str, latency_ms: float) -> float:
    z = (1.4 if good else -1.6) - 0.6 * np.log(latency_ms / 1500.0) + (
        0.4 if intent == "export" else 0.0)
    return float(1.0 / (1.0 + np.exp(-z)))


def synth_cases(n: int, seed: int, *, with_none: int = 0) -> tuple[list[EvalCase], np.ndarray]:
    """Cases whose thumb is drawn from a known P(up): reply quality, intent, latency."""
    rng = np.random.default_rng(seed)
    names = sorted(INTENTS)
    cases: list[EvalCase] = []
    ps: list[float] = []
    for i in range(n):
        intent = names[int(rng.integers(len(names)))]
        question, answer = INTENTS[intent]
        good = bool(rng.random() < 0.6)
        reply = answer if good else BAD[int(rng.integers(len(BAD)))]
        lat = float(rng.lognormal(np.log(1500.0), 0.7))
        p = true_p(good, intent, lat)
        thumb = "up" if rng.random() < p else "down"
        cases.append(EvalCase(
            case_id=f"s{seed}-c{i}", session_id=f"s{seed}-{i}",
            input=question.format(n=int(rng.integers(1000))), reply=reply,
            reply_latency_ms=lat, expected_feedback=Feedback(thumb=thumb),
            tags={"intent": intent}))
        ps.append(p)
    for j in range(with_none):  # unlabelled rows are skipped, not errors
        cases.append(EvalCase(case_id=f"s{seed}-none{j}", input="hello", reply="hi",
                              expected_feedback=Feedback()))
    return cases, np.asarray(ps)


def write_cases(path: Path, cases: list[EvalCase]) -> Path:
    write_evalset(path, cases, provenance=Provenance(generator="test", seed=0))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeedbackModel, Path, Path]:
    base = tmp_path_factory.mktemp("fb")
    train_cases, _ = synth_cases(2500, seed=1, with_none=40)
    test_cases, _ = synth_cases(2500, seed=2)
    train_es = write_cases(base / "train" / "v1", train_cases)
    test_es = write_cases(base / "test" / "v1", test_cases)
    model = train_feedback_model(open_evalset(train_es), FeedbackTrainConfig(), progress=False)
    model.save(base / "model")
    return model, train_es, test_es


def test_calibrated_on_held_out_data_against_true_probabilities(
        trained: tuple[FeedbackModel, Path, Path]) -> None:
    model, _, test_es = trained
    cases, p_true = synth_cases(2500, seed=2)
    pred = model.predict(cases)
    ece_true = expected_calibration_error(pred, p_true)
    assert ece_true <= 0.05, ece_true
    y = np.asarray([1.0 if c.expected_feedback and c.expected_feedback.thumb == "up" else 0.0
                    for c in cases])
    oracle = brier_score(p_true, y)
    assert brier_score(pred, y) <= oracle + 0.02  # close to the best possible
    # it learned the real effects: good replies and low latency raise P(up)
    assert np.corrcoef(pred, p_true)[0, 1] > 0.85
    r = feedback_report(model.path or "", open_evalset(test_es))
    assert not r.in_sample
    assert r.metrics["n"] == 2500
    assert r.metrics["ece"] <= 0.05
    assert r.metrics["auc"] > 0.75


def test_training_records_evalset_and_skips_unlabelled(
        trained: tuple[FeedbackModel, Path, Path]) -> None:
    model, train_es, _ = trained
    es = open_evalset(train_es)
    assert model.training["evalset_hash"] == es.content_hash
    assert model.training["n"] == 2500
    assert model.training["skipped_no_thumb"] == 40
    cv = model.metrics["cross_validated"]
    assert 0.0 <= cv["ece"] <= 0.06 and cv["brier"] < 0.22 and cv["auc"] > 0.75
    assert model.metrics["calibration"] == "isotonic"  # auto: >= 1000 rows
    doc = json.loads((model.path / MODEL_FILE).read_text())  # type: ignore[operator]
    assert doc["training"]["evalset_hash"] == es.content_hash
    assert sorted(p.name for p in model.path.iterdir()) == [MODEL_FILE]  # type: ignore[union-attr]


def test_save_load_round_trip_is_exact(trained: tuple[FeedbackModel, Path, Path]) -> None:
    model, _, _ = trained
    cases, _ = synth_cases(300, seed=3)
    loaded = FeedbackModel.load(model.path)  # type: ignore[arg-type]
    assert np.array_equal(loaded.predict(cases), model.predict(cases))
    es_hash = model.training["evalset_hash"]
    assert FeedbackModel.load(model.path, expect_evalset_hash=es_hash)  # type: ignore[arg-type]


def test_refuses_tampered_wrong_format_and_wrong_evalset(
        trained: tuple[FeedbackModel, Path, Path], tmp_path: Path) -> None:
    model, _, _ = trained
    assert model.path is not None
    # an edited coefficient no longer matches params_sha256
    doc = json.loads((model.path / MODEL_FILE).read_text())
    doc["params"]["intercept"] = doc["params"]["intercept"] + 1.0
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / MODEL_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataError, match="params_sha256"):
        FeedbackModel.load(tmp_path / "edited")
    # a newer format version
    doc = json.loads((model.path / MODEL_FILE).read_text())
    doc["format_version"] = 99
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / MODEL_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataError, match="format_version 99"):
        FeedbackModel.load(tmp_path / "future")
    # not a feedback model at all
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / MODEL_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="not a synthloop feedback model"):
        FeedbackModel.load(tmp_path / "other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / MODEL_FILE).write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        FeedbackModel.load(tmp_path / "junk")
    with pytest.raises(DataError, match="not found"):
        FeedbackModel.load(tmp_path / "missing")
    # trained on a different evalset than the scorer config demands
    with pytest.raises(DataError, match="trained on evalset"):
        FeedbackModel.load(model.path, expect_evalset_hash="sha256:" + "0" * 64)


def test_refuses_too_little_or_one_sided_feedback(tmp_path: Path) -> None:
    few, _ = synth_cases(20, seed=4)
    es = write_cases(tmp_path / "few" / "v1", few)
    with pytest.raises(DataError, match="needs at least 50"):
        train_feedback_model(es, progress=False)
    ups = [c.model_copy(update={"expected_feedback": Feedback(thumb="up")})
           for c in synth_cases(80, seed=5)[0]]
    es2 = write_cases(tmp_path / "ups" / "v1", ups)
    with pytest.raises(DataError, match="every labelled case is a thumb up"):
        train_feedback_model(es2, progress=False)


def test_small_data_uses_platt_scaling(tmp_path: Path) -> None:
    cases, p_true = synth_cases(400, seed=6)
    es = write_cases(tmp_path / "small" / "v1", cases)
    model = train_feedback_model(es, FeedbackTrainConfig(use_latency=False), progress=False)
    assert model.metrics["calibration"] == "sigmoid"
    assert not model.use_latency
    pred = model.predict(synth_cases(1500, seed=7)[0])
    assert pred.min() > 0.0 and pred.max() < 1.0


def test_scorer_scores_runs_vectorised_and_records_failures(
        trained: tuple[FeedbackModel, Path, Path], tmp_path: Path) -> None:
    model, _, _ = trained
    assert model.path is not None
    # relative model path resolved against the scorers file's folder
    scorer = factory({"name": "thumb_up_pred", "kind": "feedback_model",
                      "model": model.path.name}, base_dir=model.path.parent)
    assert scorer.name == "thumb_up_pred" and scorer.kind == "continuous"
    cases, _ = synth_cases(50, seed=8)
    good = [Response(case_id=c.case_id, output=INTENTS[c.tags["intent"]][1], latency_ms=900.0)
            for c in cases]
    bad = [Response(case_id=c.case_id, output=BAD[0], latency_ms=900.0) for c in cases]
    s_good = scorer.score_many(cases, good)
    s_bad = scorer.score_many(cases, bad)
    assert all(s.metric == "thumb_up_pred" and s.value is not None for s in s_good)
    assert np.mean([s.value for s in s_good]) > np.mean([s.value for s in s_bad]) + 0.3
    single = scorer.score(cases[0], good[0])
    assert single.value == pytest.approx(s_good[0].value)
    failed = Response(case_id=cases[1].case_id, error="timeout", error_kind="timeout")
    out = scorer.score_many(cases[:2], [good[0], failed])
    assert out[0].value is not None and out[1].value is None and out[1].error
    assert scorer.describe()["model_evalset_hash"] == model.training["evalset_hash"]
    with pytest.raises(ConfigError, match="unknown key"):
        factory({"name": "x", "kind": "feedback_model", "model": str(model.path),
                 "modle": 1}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        factory({"name": "x", "kind": "feedback_model", "model": "nowhere"}, base_dir=tmp_path)


def test_history_and_tags_are_features(trained: tuple[FeedbackModel, Path, Path]) -> None:
    model, _, _ = trained
    c = EvalCase(case_id="h", input="How do I get a refund for order 5?",
                 history=[Message(role="user", content="hi"),
                          Message(role="assistant", content="hello")],
                 reply=INTENTS["refund"][1], reply_latency_ms=1500.0, tags={"intent": "refund"})
    rows = labelled_rows([c.model_copy(update={"expected_feedback": Feedback(thumb="up")})])
    assert rows.rows.history_turns == [1] and rows.rows.tags == [{"intent": "refund"}]
    p = model.predict([c])
    assert 0.5 < p[0] < 1.0


def test_very_long_texts_pair_a_bounded_number_of_words(
        trained: tuple[FeedbackModel, Path, Path]) -> None:
    from synthloop.scorers.feedback import MAX_PAIR_WORDS, _pair_text

    model, _, _ = trained
    # two 3,000-word texts used to make 9 million input x reply pairs (1 GB for one row)
    long_in = " ".join(f"question{i}" for i in range(3000))
    long_reply = " ".join(f"answer{i}" for i in range(3000))
    pairs = _pair_text("", long_in, long_reply).split()
    assert len(pairs) == MAX_PAIR_WORDS ** 2
    assert "question0|answer0" in pairs and f"question{MAX_PAIR_WORDS}|answer0" not in pairs
    # texts under the cap pair every content word, as before
    short = _pair_text("refund money", "where is my invoice", "invoices are under Billing")
    assert sorted(short.split()) == sorted(f"{a}|{b}" for a in ("invoice", "refund", "money")
                                           for b in ("invoice", "billing"))
    p = model.predict([EvalCase(case_id="long", input=long_in)], [long_reply])
    assert p.shape == (1,) and 0.0 < p[0] < 1.0


def test_ece_and_report_html() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02
    assert expected_calibration_error(np.clip(p + 0.2, 0, 1), y) > 0.1
    assert expected_calibration_error(p, p) == 0.0


def test_cli_train_and_report(trained: tuple[FeedbackModel, Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    _, train_es, test_es = trained
    out = tmp_path / "m"
    code, stdout, stderr = run_cli("feedback", "train", str(train_es), "--out", str(out),
                                   "--no-latency")
    assert code == 0, stderr
    assert "cross-validated" in stdout and (out / MODEL_FILE).exists()
    assert json.loads((out / MODEL_FILE).read_text())["params"]["use_latency"] is False
    # never silently replaced
    assert main(["feedback", "train", str(train_es), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    html_path = tmp_path / "r" / "report.html"
    json_path = tmp_path / "r" / "report.json"
    assert main(["feedback", "report", str(out), "--evalset", str(test_es),
                 "--html", str(html_path), "--json", str(json_path)]) == 0
    stdout = capsys.readouterr().out
    assert "Brier" in stdout and "ECE" in stdout and "AUC" in stdout
    page = html_path.read_text()
    assert "<svg" in page and "reliability" in page and "<script" not in page
    figures = json.loads(json_path.read_text())
    assert figures["metrics"]["n"] == 2500 and len(figures["reliability"]) == 15
    # in-sample evaluation is flagged
    assert main(["feedback", "report", str(out), "--evalset", str(train_es)]) == 0
    assert "IN-SAMPLE" in capsys.readouterr().out
    # user mistakes: one line, exit 2, nothing written
    assert main(["feedback", "train", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "m2")]) == 2
    assert "not an evalset" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_text("folds: 5\ncalibraton: isotonic\n")
    assert main(["feedback", "train", str(train_es), "--out", str(tmp_path / "m3"),
                 "--config", str(bad_cfg)]) == 2
    assert "did you mean `calibration`" in capsys.readouterr().err
    assert not (tmp_path / "m3").exists()
    # an --html path that is a folder: one line, exit 2 (not a traceback), no temporary file
    assert main(["feedback", "report", str(out), "--evalset", str(test_es),
                 "--html", str(tmp_path / "r")]) == 2
    assert "check the path" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html", "report.json"]
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_report_html_is_self_contained(trained: tuple[FeedbackModel, Path, Path]) -> None:
    model, _, test_es = trained
    r = feedback_report(model.path or "", test_es)
    page = report_html(r)
    assert page.count("<circle") == sum(1 for b in r.bins if b.count)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
