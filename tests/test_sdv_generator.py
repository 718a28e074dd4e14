"""The sdv generator end to end: CSV log -> `synthloop ingest` -> `synthloop generate` (kind: sdv).

Real components throughout: the ingest engineer's consent filter and PII scrubber, real SDV
fits on small data, real files in tmp_path. The log is built here with known structure:
personas with different intent mixes, per-intent thumb-up rates, feedback delays only with
explicit feedback, a heavy user above the per-user cap, 1 % of prompts carrying PII, and users
without consent whose rows carry canaries (a category value, a numeric outlier, a prompt).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthloop.errors import ConfigError, DataError, PrivacyGateError
from synthloop.evalsets import open_evalset
from synthloop.generate import GenerateOptions, generate
from synthloop.generate.sdv import (
    Marginal,
    load_spec,
    strata_labels,
    synthesize,
    write,
)
from synthloop.ingest import ingest, read_sample
from tests.conftest import run_cli

INTENTS = ["billing", "refund", "howto", "bug", "account"]
PERSONAS = {"novice": [0.2, 0.3, 0.3, 0.1, 0.1], "expert": [0.1, 0.1, 0.2, 0.5, 0.1],
            "manager": [0.4, 0.2, 0.1, 0.1, 0.2]}
UP_RATE = {"billing": 0.6, "refund": 0.15, "howto": 0.85, "bug": 0.3, "account": 0.7}
COMMON = {i: [f"{i} question {j}: how do I {w} my {i} settings"
              for j, w in enumerate(["change", "reset", "view", "update", "export", "close"])]
          for i in INTENTS}
CANARY_PLAN = "canary-plan-x9q"
CANARY_PROMPT = "canary prompt zebra quartz"
CANARY_LATENCY = 9876543.0
MAPPING = """\
columns:
  user_id: uid
  session_id: sid
  timestamp: ts
  turn: turn
  persona: persona
  intent: intent
  locale: locale
  input: prompt
  output: reply
  latency_ms: latency
  feedback.thumb: thumb
  feedback.rating: rating
  feedback.feedback_delay_s: fb_delay
  feedback.read_time_s: read_time
  feedback.copied: copied
  feedback.abandoned: abandoned
  consent.synthetic_fit: consent_fit
extra: [plan]
"""


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def _card(rng: np.random.Generator) -> str:
    while True:
        n = "4" + "".join(str(x) for x in rng.integers(0, 10, 15))
        if _luhn_ok(n):
            return " ".join(n[i:i + 4] for i in range(0, 16, 4))


def make_log(path: Path, *, users: int = 160, seed: int = 0, canaries: bool = True
             ) -> dict[str, Any]:
    """Write a chat log CSV; returns what was planted."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    pii: list[str] = []
    canary_users = 0
    t0 = np.datetime64("2025-03-01T00:00:00")
    for u in range(users):
        is_canary = u % 25 == 7
        persona = str(rng.choice(list(PERSONAS)))
        locale = str(rng.choice(["en-US", "de-DE", "fr-FR"], p=[0.6, 0.25, 0.15]))
        plan = str(rng.choice(["free", "pro", "team"], p=[0.5, 0.35, 0.15]))
        n_sessions = 40 if u == 3 else int(rng.geometric(0.45))
        if is_canary and not canaries:
            # the same random draws as with canaries, so the consented rows are identical
            for _ in range(n_sessions):
                rng.integers(0, 30 * 86400)
                for _ in range(int(rng.geometric(0.4 if persona != "expert" else 0.3))):
                    _draw_turn(rng, persona, u)
            continue
        canary_users += is_canary
        for s in range(n_sessions):
            start = t0 + np.timedelta64(int(rng.integers(0, 30 * 86400)), "s")
            n_turns = int(rng.geometric(0.4 if persona != "expert" else 0.3))
            t = start
            for k in range(n_turns):
                d = _draw_turn(rng, persona, u)
                prompt = d["prompt"]
                if d["pii"]:
                    pii.append(d["pii_value"])
                    prompt = f"{prompt} {d['pii']}"
                rows.append({
                    "uid": f"user-{u}", "sid": f"s{u}-{s}", "ts": str(t) + "Z", "turn": k,
                    "persona": persona, "intent": d["intent"], "locale": locale,
                    "prompt": CANARY_PROMPT if is_canary else prompt,
                    "reply": f"reply about {d['intent']}",
                    "latency": f"{CANARY_LATENCY if is_canary else d['latency']:.1f}",
                    "thumb": d["thumb"], "rating": d["rating"], "fb_delay": d["delay"],
                    "read_time": d["read_time"], "copied": d["copied"],
                    "abandoned": str(k == n_turns - 1 and d["abandon"]).lower(),
                    "consent_fit": "false" if is_canary else "true",
                    "plan": CANARY_PLAN if is_canary else plan,
                })
                t = t + np.timedelta64(int(d["gap"]), "s")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    excluded = sum(1 for r in rows if r["consent_fit"] == "false")
    return {"rows": rows, "pii": pii, "excluded_rows": excluded, "canary_users": canary_users}


def _draw_turn(rng: np.random.Generator, persona: str, u: int) -> dict[str, Any]:
    intent = str(rng.choice(INTENTS, p=PERSONAS[persona]))
    if rng.random() < 0.6:
        prompt = str(rng.choice(COMMON[intent]))
    else:
        prompt = f"user {u} asks about {intent} item {int(rng.integers(1_000_000))}"
    r = rng.random()
    value = ""
    if r < 0.01 / 3:
        value = f"person{int(rng.integers(1e6))}@mailbox.example.org"
    elif r < 0.02 / 3:
        value = f"+1 415 555 {int(rng.integers(1000, 9999))}"
    elif r < 0.01:
        value = _card(rng)
    pii = f"you can use {value} for that" if value else ""
    thumb, rating, delay = "none", "", ""
    if rng.random() < 0.35:
        thumb = "up" if rng.random() < UP_RATE[intent] else "down"
        delay = f"{rng.lognormal(3, 1):.2f}"
        if rng.random() < 0.4:
            rating = str(int(rng.integers(4, 6) if thumb == "up" else rng.integers(1, 3)))
    return {
        "intent": intent, "prompt": prompt, "pii": pii, "pii_value": value, "thumb": thumb, "rating": rating,
        "delay": delay, "latency": rng.lognormal(6 + (0.5 if intent == "bug" else 0), 0.4),
        "read_time": f"{rng.gamma(2, 10):.1f}",
        "copied": str(bool(thumb == "up" and rng.random() < 0.5)).lower(),
        "abandon": bool(rng.random() < 0.3), "gap": int(rng.exponential(60)) + 5,
    }


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ingested logs: with non-consenting canary users, and the same log without them."""
    base = tmp_path_factory.mktemp("sdvlogs")
    (base / "mapping.yaml").write_text(MAPPING)
    with_c = make_log(base / "log.csv", canaries=True)
    without = make_log(base / "log_clean.csv", canaries=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(base / "home"))
        mp.setenv("SYNTHLOOP_PROGRESS", "0")
        ingest(base / "log.csv", base / "mapping.yaml", base / "ing", progress=False)
        ingest(base / "log_clean.csv", base / "mapping.yaml", base / "ing_clean", progress=False)
    return {"dir": base, "with": with_c, "without": without}


def _spec(path: Path, source: Path, **fields: Any) -> Path:
    lines = ["kind: sdv", f"source: {source}"]
    for k, v in fields.items():
        lines.append(f"{k}: {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture(scope="module")
def result(logs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One default gaussian_copula synthesis (nothing written yet), shared by several tests."""
    spec = _spec(tmp_path_factory.mktemp("spec") / "spec.yaml", logs["dir"] / "ing",
                 sessions=300, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(logs["dir"] / "home"))
        return synthesize(load_spec(spec), progress=False)


# --------------------------------------------------------------------------- end to end (CLI)
def test_cli_ingest_then_generate_with_the_contract_spec(logs: dict[str, Any], tmp_path: Path
                                                          ) -> None:
    shutil.copy(logs["dir"] / "log.csv", tmp_path / "log.csv")
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    code, _, err = run_cli("ingest", str(tmp_path / "log.csv"), "--mapping",
                           str(tmp_path / "mapping.yaml"), "--out", str(tmp_path / "ing"))
    assert code == 0, err
    # the spec of the contract, as is
    (tmp_path / "spec.yaml").write_text(
        "kind: sdv\nsource: ing\nsynthesizer: gaussian_copula\nsessions: 500\nseed: 1\n")
    out = tmp_path / "evalsets" / "support" / "v1"
    code, stdout, err = run_cli("generate", str(tmp_path / "spec.yaml"), "--out", str(out))
    assert code == 0, err
    assert "privacy gate passed" in err
    for name in ("manifest.json", "fidelity_report.json", "privacy_report.json",
                 "synthesizer.pkl", "synthetic.parquet"):
        assert (out / name).is_file(), name
    ev = open_evalset(out)
    m = ev.manifest
    assert m.counts.sessions == 500
    assert m.provenance.generator == "sdv" and m.provenance.seed == 1
    details = m.provenance.details
    assert details["synthesizer_sha256"] == hashlib.sha256(
        (out / "synthesizer.pkl").read_bytes()).hexdigest()
    assert details["k"] == 5 and details["max_sessions_per_user"] == 20
    assert m.provenance.source_data_hash and m.provenance.source_data_hash.startswith("sha256:")
    # consent: the non-consenting users are counted, and their rows never reached the fit
    planted = logs["with"]
    assert m.consent_summary["counts"]["excluded_consent"] == planted["excluded_rows"]
    assert m.consent_summary["counts"]["users_excluded_consent"] == planted["canary_users"]
    assert m.consent_summary["basis"] == "column:consent_fit"
    assert m.privacy is not None and m.privacy["gate"] == "passed"
    everything = _all_bytes(out)
    for canary in (CANARY_PLAN, CANARY_PROMPT, "9876543"):
        assert canary.encode() not in everything, canary
    # PII planted in 1 % of prompts appears in no evalset, report or model file
    assert planted["pii"], "the log should carry PII"
    for value in planted["pii"]:
        for needle in {value, value.replace(" ", "")}:
            assert needle.encode() not in everything, needle
    syn = pd.read_parquet(out / "synthetic.parquet")
    real = read_sample(tmp_path / "ing")
    assert syn["latency_ms"].max() < CANARY_LATENCY / 100
    assert not set(syn["user_id"]) & set(real["user_id"])  # synthetic pseudonyms only
    assert syn["timestamp"].min() >= real["timestamp"].min()
    assert syn["timestamp"].min() <= real["timestamp"].max()
    cases = ev.cases()
    assert cases[0].expected_feedback is not None
    assert {"persona", "intent", "locale", "plan", "text_source"} <= set(cases[0].tags)
    multi = [c for c in cases if c.turn > 0]
    assert multi and multi[0].history[0].role == "user"


# --------------------------------------------------------------------------- consent
def test_non_consenting_canaries_do_not_shift_the_output(logs: dict[str, Any], tmp_path: Path
                                                        ) -> None:
    a = read_sample(logs["dir"] / "ing")
    b = read_sample(logs["dir"] / "ing_clean")
    pd.testing.assert_frame_equal(a, b)  # consent filtering removed every canary row
    assert CANARY_PLAN not in set(a["extra.plan"])
    outs = []
    for name, seed in (("ing", 5), ("ing_clean", 5), ("ing", 6)):
        spec = _spec(tmp_path / f"{name}-{seed}.yaml", logs["dir"] / name, sessions=80, seed=seed,
                     save_synthesizer=False)
        m = generate(spec, tmp_path / f"out-{name}-{seed}", GenerateOptions(progress=False))
        assert m is not None
        outs.append(m.content_hash)
    assert outs[0] == outs[1]  # the canary users changed nothing at all
    assert outs[0] != outs[2]  # while another seed does


# --------------------------------------------------------------------------- what is synthesized
def test_text_pool_is_k_anonymous(result: Any, logs: dict[str, Any]) -> None:
    rows = [r for r in logs["with"]["rows"] if r["consent_fit"] == "true"]
    users_per_prompt: dict[str, set[str]] = {}
    for r in rows:
        users_per_prompt.setdefault(r["prompt"].casefold(), set()).add(r["uid"])
    syn = result.synthetic
    assert set(syn["text_source"]) == {"pool"}
    for text in set(syn["input"]):
        assert len(users_per_prompt[text.casefold()]) >= 5, text
    rare = {p for p, us in users_per_prompt.items() if len(us) < 5}
    assert not rare & {t.casefold() for t in syn["input"]}
    # intents keep their prompts: a billing turn gets a billing prompt
    assert all(t.startswith(i) for t, i in zip(syn["input"], syn["intent"], strict=True))


def test_user_cap_and_holdout(result: Any) -> None:
    cap = result.cap_stats
    assert cap["users_capped"] == 1 and cap["sessions_dropped"] == 20
    train_users = set(result.real_train["user_id"])
    hold_users = set(result.real_holdout["user_id"])
    assert hold_users and not train_users & hold_users
    assert result.real_train.groupby("user_id")["session_id"].nunique().max() <= 20


def test_fidelity_follows_sessions_and_feedback(result: Any) -> None:
    f = result.fidelity
    assert f["quality"]["score"] > 0.85
    assert f["sessions"]["tv_distance"] < 0.12
    assert f["sessions"]["synthetic_sessions"] == 300
    by_intent = f["feedback_by_intent"]
    assert by_intent["weighted_mean_abs_diff_up_rate"] < 0.08
    howto = next(r for r in by_intent["intents"] if r["intent"] == "howto")
    refund = next(r for r in by_intent["intents"] if r["intent"] == "refund")
    assert howto["synthetic_up_rate"] > refund["synthetic_up_rate"] + 0.1  # per-intent rates
    ttf = f["time_to_feedback"]
    assert ttf["ks_statistic"] < 0.2
    syn = result.synthetic
    no_thumb = syn["feedback.thumb"] == "none"
    # a feedback delay exists only with explicit feedback, as in the real data
    assert syn.loc[no_thumb, "feedback.feedback_delay_s"].isna().mean() > 0.95


def test_privacy_report_and_gate_outcome(result: Any, tmp_path: Path) -> None:
    p = result.privacy
    assert p.passed, p.failed
    m = p.metrics
    assert m["exact_copies"]["rate"] <= 0.01
    assert m["dcr_overfitting_protection"]["training_sample"] == "user-matched"
    assert m["pii"]["hits"] == 0 and m["canaries"]["hits"] == 0
    manifest = write(result, tmp_path / "v1")
    saved = json.loads((tmp_path / "v1" / "privacy_report.json").read_text())
    assert saved["passed"] is True and len(saved["checks"]) == len(p.checks)
    assert manifest.privacy is not None and manifest.privacy["gate"] == "passed"


def test_failed_gate_writes_nothing_unless_allowed(logs: dict[str, Any], tmp_path: Path) -> None:
    # a canary that is in the k-anonymous pool: the gate must catch it
    spec = _spec(tmp_path / "spec.yaml", logs["dir"] / "ing", sessions=60, seed=2,
                 canaries=["howto question 2"], save_synthesizer=False)
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(spec), "--out", str(out))
    assert code == 4, err
    assert "privacy gate failed" in err and "canary_hits" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    res = synthesize(load_spec(spec), progress=False)
    with pytest.raises(PrivacyGateError):
        write(res, out)
    assert not out.exists()
    m = write(res, out, allow_privacy_failure=True)
    assert m.privacy is not None and m.privacy["gate"] == "failed"
    assert m.privacy["allowed_failure"] is True
    assert any("PRIVACY GATE FAILED" in n for n in m.notes)


# --------------------------------------------------------------------------- model files
def test_saved_synthesizer_reloads_only_with_its_checksum(logs: dict[str, Any], tmp_path: Path
                                                         ) -> None:
    spec = _spec(tmp_path / "fit.yaml", logs["dir"] / "ing", sessions=50, seed=4)
    first = generate(spec, tmp_path / "v1", GenerateOptions(progress=False))
    assert first is not None
    pkl = tmp_path / "v1" / "synthesizer.pkl"
    # checksum read from the manifest beside the file: same seed, same evalset
    again = _spec(tmp_path / "load.yaml", logs["dir"] / "ing", sessions=50, seed=4,
                  load_synthesizer=str(pkl), save_synthesizer=False)
    second = generate(again, tmp_path / "v2", GenerateOptions(progress=False))
    assert second is not None and second.content_hash == first.content_hash
    assert second.provenance.details["synthesizer_loaded_from"] == str(pkl)
    # a changed file is refused before it is unpickled
    bad_dir = tmp_path / "tampered"
    bad_dir.mkdir()
    shutil.copy(tmp_path / "v1" / "manifest.json", bad_dir / "manifest.json")
    (bad_dir / "synthesizer.pkl").write_bytes(pkl.read_bytes() + b"\x00")
    tampered = _spec(tmp_path / "bad.yaml", logs["dir"] / "ing", sessions=50, seed=4,
                     load_synthesizer=str(bad_dir / "synthesizer.pkl"))
    with pytest.raises(DataError, match="checksum mismatch"):
        generate(tampered, tmp_path / "v3", GenerateOptions(progress=False))
    wrong = _spec(tmp_path / "wrong.yaml", logs["dir"] / "ing", sessions=50, seed=4,
                  load_synthesizer=str(pkl), checksum="0" * 64)
    with pytest.raises(DataError, match="refusing to load"):
        generate(wrong, tmp_path / "v4", GenerateOptions(progress=False))
    assert not (tmp_path / "v3").exists() and not (tmp_path / "v4").exists()


# --------------------------------------------------------------------------- options
def test_templates_rows_and_placeholder(logs: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(tmp_path / "t.yaml", logs["dir"] / "ing", rows=77, seed=9, fill=["templates"],
                 templates={"billing": ["Invoice {{ faker.random_int(100, 999) }} for a {{ persona }}"],
                            "refund": ["Refund please ({{ locale }})"]},
                 placeholder="[{{ intent }} question]", history_reply=None,
                 save_synthesizer=False)
    m = generate(spec, tmp_path / "out", GenerateOptions(progress=False))
    assert m is not None and m.counts.cases == 77
    syn = pd.read_parquet(tmp_path / "out" / "synthetic.parquet")
    billing = syn[syn["intent"] == "billing"]
    assert billing["input"].str.match(r"Invoice \d{3} for a (novice|expert|manager)$").all()
    other = syn[~syn["intent"].isin(["billing", "refund"])]
    assert (other["input"] == "[" + other["intent"] + " question]").all()
    assert set(syn["text_source"]) <= {"template", "placeholder"}
    cases = open_evalset(tmp_path / "out").cases()
    later = [c for c in cases if c.turn > 0]
    assert later and all(msg.role == "user" for c in later for msg in c.history)


def test_dry_run_writes_nothing(logs: dict[str, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path / "s.yaml", logs["dir"] / "ing", sessions=10)
    assert generate(spec, tmp_path / "out", GenerateOptions(dry_run=True)) is None
    assert "valid sdv spec" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input
def _broken_ingest(logs: dict[str, Any], tmp_path: Path, change: Any) -> Path:
    target = tmp_path / "ing"
    shutil.copytree(logs["dir"] / "ing", target)
    table = pq.read_table(target / "sample.parquet").to_pandas()
    pq.write_table(__import__("pyarrow").Table.from_pandas(change(table), preserve_index=False),
                   target / "sample.parquet")
    return target


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.iloc[0:0], "the consented sample is empty"),
    (lambda t: t.assign(latency_ms=t["latency_ms"].astype(str)), "latency_ms must be numeric"),
    (lambda t: t.drop(columns=["session_id"]), "missing column(s) session_id"),
    (lambda t: t.assign(turn=t["turn"].astype(str)), "turn must hold integers"),
])
def test_bad_samples_give_one_clear_error_and_write_nothing(
        logs: dict[str, Any], tmp_path: Path, change: Any, message: str) -> None:
    source = _broken_ingest(logs, tmp_path, change)
    spec = _spec(tmp_path / "s.yaml", source, sessions=10)
    with pytest.raises(DataError) as e:
        generate(spec, tmp_path / "out", GenerateOptions(progress=False))
    assert message in str(e.value)
    assert e.value.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("fields", "message"), [
    ({"synthesiser": "ctgan"}, "did you mean `synthesizer`?"),
    ({"sessions": 5, "rows": 5}, "either sessions or rows"),
    ({"metadata": {"lattency_ms": "numerical"}}, "did you mean `latency_ms`?"),
    ({"templates": {"billing": ["{{ unclosed"]}}, "templates.billing[0]"),
    ({"stratify": ["latency_ms"]}, "strata need a categorical"),
    ({"synthesizer": "gan"}, "synthesizer"),
])
def test_bad_specs_are_config_errors(logs: dict[str, Any], tmp_path: Path, fields: dict[str, Any],
                                     message: str) -> None:
    spec = _spec(tmp_path / "s.yaml", logs["dir"] / "ing", **fields)
    with pytest.raises(ConfigError) as e:
        generate(spec, tmp_path / "out", GenerateOptions(progress=False))
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_missing_source_is_a_data_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "s.yaml", tmp_path / "nowhere", sessions=10)
    code, _, err = run_cli("generate", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "not an ingest output" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- building blocks
def test_marginal_round_trip_keeps_each_distribution() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    zero_inflated = np.where(rng.random(n) < 0.45, 0.0, rng.lognormal(3, 1, n))
    counts = rng.poisson(2.0, n).astype(float)
    with_missing = pd.Series(np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)))
    cats = pd.Series(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]))
    for values, sdtype in ((pd.Series(zero_inflated), "numerical"), (pd.Series(counts), "numerical"),
                           (with_missing, "numerical"), (cats, "categorical")):
        m = Marginal(values, sdtype, k=5)
        z = m.to_normal(values, np.random.default_rng(1))
        assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05  # ties spread: standard normal
        back = m.from_normal(rng.standard_normal(n))
        if sdtype == "categorical":
            assert abs((back == "a").mean() - 0.6) < 0.03
            continue
        assert abs(back.isna().mean() - values.isna().mean()) < 0.03
        assert abs((back == 0).mean() - (values == 0).mean()) < 0.03
        q = [0.25, 0.5, 0.75, 0.9]
        np.testing.assert_allclose(back.quantile(q), values.quantile(q), rtol=0.15, atol=0.1)
    stamps = pd.Series(pd.to_datetime("2025-01-01", utc=True)
                       + pd.to_timedelta(rng.integers(0, 86400 * 30, 500), unit="s"))
    m = Marginal(stamps.astype("datetime64[us, UTC]"), "datetime", k=5)
    back = m.from_normal(rng.standard_normal(500))
    assert back.min() >= stamps.min() and back.max() <= stamps.max()


def test_strata_merge_small_groups() -> None:
    frame = pd.DataFrame({"intent": ["a"] * 60 + ["b"] * 55 + ["c"] * 8,
                          "thumb": (["up"] * 50 + ["down"] * 10) + ["none"] * 55 + ["up"] * 8})
    users = pd.Series([f"u{i % 20}" for i in range(len(frame))])
    labels = strata_labels(frame, ["intent", "thumb"], users, min_rows=40, min_users=5,
                           max_strata=16)
    # a|down (10 rows) and c|up (8) are too small, so are a|* and *|*: they join b|none
    assert labels.iloc[0] == "a\x1fup"
    assert labels.iloc[60] == "b\x1fnone"
    assert labels.iloc[55] == "b\x1fnone" and labels.iloc[120] == "b\x1fnone"
    assert set(labels) == {"a\x1fup", "b\x1fnone"}
    many = strata_labels(frame, ["intent", "thumb"], users, min_rows=5, min_users=5,
                         max_strata=16)
    assert set(many) == {"a\x1fup", "a\x1fdown", "b\x1fnone", "c\x1fup"}


# --------------------------------------------------------------------------- other synthesizers
@pytest.mark.slow
@pytest.mark.parametrize("synthesizer", ["ctgan", "tvae", "par"])
def test_neural_and_sequential_synthesizers_run(logs: dict[str, Any], tmp_path: Path,
                                                synthesizer: str) -> None:
    spec = _spec(tmp_path / "s.yaml", logs["dir"] / "ing", synthesizer=synthesizer, epochs=2,
                 sessions=15, seed=1, max_sessions_per_user=2, save_synthesizer=False,
                 privacy={"min_dcr_overfitting_protection": None, "min_dcr_holdout_ratio": None})
    m = generate(spec, tmp_path / "out", GenerateOptions(progress=False))
    assert m is not None and m.counts.sessions == 15
    assert m.provenance.details["synthesizer"] == synthesizer
    syn = pd.read_parquet(tmp_path / "out" / "synthetic.parquet")
    assert set(syn["intent"].dropna()) <= set(INTENTS) | {"(other)"}


# --------------------------------------------------------------------------- tabular logs
def test_tabular_log_online_shoppers(shared_data: Path, tmp_path: Path) -> None:
    csv_path = shared_data / "online_shoppers" / "online_shoppers_intention.csv"
    pd.read_csv(csv_path).iloc[:2500].to_csv(tmp_path / "shoppers.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(
        "consent: {assume: true, basis: \"public dataset, CC BY 4.0 (UCI)\"}\nextra: all\n")
    ingest(tmp_path / "shoppers.csv", tmp_path / "mapping.yaml", tmp_path / "ing", progress=False)
    spec = _spec(tmp_path / "s.yaml", tmp_path / "ing", rows=1500, seed=1)
    m = generate(spec, tmp_path / "out", GenerateOptions(progress=False))
    assert m is not None and m.counts.cases == 1500
    assert m.privacy is not None and m.privacy["gate"] == "passed"
    fid = json.loads((tmp_path / "out" / "fidelity_report.json").read_text())
    assert fid["quality"]["score"] > 0.85
    case = open_evalset(tmp_path / "out").cases()[0]
    assert case.input == "" and case.expected_feedback is None
    assert {"Month", "VisitorType", "Weekend", "Revenue"} <= set(case.tags)
    assert m.consent_summary["assumed"] is True


# --------------------------------------------------------------------------- k-anonymity of categories
def _small_ingest(tmp_path: Path, users: int, extra: Any) -> Path:
    """A small chat log with `extra(user, rng)` columns, ingested with `extra: all`."""
    rng = np.random.default_rng(5)
    rows = []
    for u in range(users):
        for s in range(2):
            for k in range(int(rng.integers(1, 4))):
                rows.append({"uid": f"u{u}", "sid": f"u{u}-{s}", "turn": k,
                             "ts": f"2025-03-{1 + s:02d}T{10 + k}:{u % 60:02d}:00Z",
                             "prompt": f"question {int(rng.integers(5))}",
                             "topic": str(rng.choice(["a", "b"])),
                             "read": float(rng.exponential(10)), "c": "true", **extra(u, rng)})
    pd.DataFrame(rows).to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(
        "columns: {user_id: uid, session_id: sid, turn: turn, timestamp: ts, input: prompt,\n"
        "          intent: topic, feedback.read_time_s: read, consent.synthetic_fit: c}\n"
        "extra: all\n")
    ingest(tmp_path / "log.csv", tmp_path / "mapping.yaml", tmp_path / "ing", progress=False)
    return tmp_path / "ing"


def test_rare_values_of_a_number_column_declared_categorical_are_merged(tmp_path: Path) -> None:
    # zip codes 90000-90007 each belong to one user: as categories they must never come out
    source = _small_ingest(tmp_path, 40, lambda u, rng: {
        "zip": 90000 + u if u < 8 else int(rng.choice([10115, 10117, 10119]))})
    spec = _spec(tmp_path / "s.yaml", source, sessions=400, seed=1, k=5,
                 metadata={"extra.zip": "categorical"})
    res = synthesize(load_spec(spec), progress=False)
    assert res.model.plan.rare_merged == {"extra.zip": 8}
    values = {str(v) for v in res.synthetic["extra.zip"].dropna()}
    assert not {str(90000 + u) for u in range(8)} & values
    assert values <= {"10115", "10117", "10119", "(other)"}
    write(res, tmp_path / "out", allow_privacy_failure=True)
    written = pd.read_parquet(tmp_path / "out" / "synthetic.parquet")["extra.zip"]
    assert not {str(90000 + u) for u in range(8)} & {str(v) for v in written.dropna()}


def test_a_constant_category_of_fewer_than_k_users_is_not_reproduced(tmp_path: Path) -> None:
    # three users, all on one unique plan: a category value of 3 < k users, constant or not
    source = _small_ingest(tmp_path, 3, lambda u, rng: {"plan": "acme-pilot-deal", "tier": 7})
    spec = _spec(tmp_path / "s.yaml", source, sessions=20, seed=1, k=5, holdout=0)
    res = synthesize(load_spec(spec), progress=False)
    assert set(res.synthetic["extra.plan"]) == {"(other)"}
    assert set(res.synthetic["extra.tier"]) == {7}  # numbers are not k-anonymised (documented)


def test_saved_synthesizer_holds_no_rare_category_value(tmp_path: Path) -> None:
    # the rare values are the identifying ones: merged away, and not kept in synthesizer.pkl
    source = _small_ingest(tmp_path, 30, lambda u, rng: {
        "plan": "only-mine-unique-plan" if u == 4 else str(rng.choice(["free", "pro"]))})
    spec = _spec(tmp_path / "s.yaml", source, sessions=30, seed=1, k=5)
    res = synthesize(load_spec(spec), progress=False)
    assert res.model.plan.rare_merged == {"extra.plan": 1}
    write(res, tmp_path / "out", allow_privacy_failure=True)
    assert b"only-mine-unique-plan" not in _all_bytes(tmp_path / "out")
    assert b"free" in (tmp_path / "out" / "synthesizer.pkl").read_bytes()
