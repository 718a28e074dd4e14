"""The rules generator: determinism, the data matches the spec, every bad input fails cleanly."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from synthloop.cli import main
from synthloop.errors import ConfigError, DataError
from synthloop.evalsets import open_evalset
from synthloop.generate import GenerateOptions, generate
from synthloop.generate.rules import (
    CountSpec,
    explicit_feedback_probability,
    load_spec,
    spec_json_schema,
    true_thumb_up_probability,
    turns_distribution,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "generators" / "support_assistant.yaml"

BASE: dict[str, Any] = {
    "kind": "rules",
    "seed": 1,
    "sessions": 60,
    "pool_size": 8,
    "constants": {"brand": "Acme"},
    "slots": {
        "product_name": {"values": ["Acme Cloud", "Acme Drive"]},
        "first_name": {"faker": "first_name"},
        "order_id": {"pattern": "A-####"},
    },
    "personas": [
        {"name": "new_customer", "weight": 2, "locales": {"en_US": 1}},
        {"name": "pro", "weight": 1, "locales": {"en_GB": 1, "de_DE": 1},
         "turns": {"fixed": 2}},
    ],
    "intents": [
        {"name": "ask", "templates": ["Tell me about {{ product_name }}"],
         "answers": ["{{ product_name }} by {{ brand }} is great, {{ first_name }}"],
         "bad_answers": ["No idea."], "follow_ups": {"order": 1}},
        {"name": "order", "templates": ["Where is {{ order_id }}?"],
         "answers": ["{{ order_id }} ships today"], "persona_weights": {"pro": 3}},
    ],
}


def write_spec(tmp_path: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def gen(spec_path: Path, out: Path, **kw: Any) -> Any:
    return generate(spec_path, out, GenerateOptions(**kw))


def shard_bytes(path: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(path.glob("data-*.arrow"))]


# --------------------------------------------------------------------------- determinism
def test_same_spec_and_seed_give_identical_bytes_and_hash(tmp_path: Path) -> None:
    a = gen(SHIPPED, tmp_path / "a", seed=7, sessions=1500)
    b = gen(SHIPPED, tmp_path / "b", seed=7, sessions=1500)
    c = gen(SHIPPED, tmp_path / "c", seed=8, sessions=1500)
    assert a.content_hash == b.content_hash
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert a.provenance.spec_hash == b.provenance.spec_hash
    assert c.content_hash != a.content_hash
    assert a.counts.sessions == 1500 and c.counts.sessions == 1500
    assert a.provenance.seed == 7 and a.provenance.generator == "rules"
    # only created_at differs between the two manifests
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for m in (ma, mb):
        m.pop("created_at")
        m.pop("version")
    assert ma == mb


def test_seed_and_sessions_come_from_the_spec_by_default(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, BASE)
    m = gen(spec, tmp_path / "out")
    assert m.provenance.seed == 1
    assert m.counts.sessions == 60
    assert m.counts.cases == m.counts.interactions > 60


def test_template_file_change_changes_the_spec_hash(tmp_path: Path) -> None:
    s = copy.deepcopy(BASE)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.j2").write_text("{{ product_name }} is fine")
    s["intents"][0]["answers"] = [{"file": "templates/a.j2"}]
    p = write_spec(tmp_path, s)
    h1 = load_spec(p).spec_hash
    (tmp_path / "templates" / "a.j2").write_text("{{ product_name }} is very fine")
    assert load_spec(p).spec_hash != h1
    m = gen(p, tmp_path / "out")
    case = next(c for c in open_evalset(tmp_path / "out").iter_cases() if c.tags["intent"] == "ask")
    assert case.references.good[0].endswith("is very fine")
    assert m.provenance.spec_hash == load_spec(p).spec_hash


# --------------------------------------------------------------------------- the data follows the spec
@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, np.ndarray], Any]:
    """~20k interactions from the shipped spec, as numpy columns."""
    out = tmp_path_factory.mktemp("big") / "v1"
    m = generate(SHIPPED, out, GenerateOptions(seed=11, sessions=11_000, progress=False))
    t = open_evalset(out).table()
    tags = t.column("tags").combine_chunks()
    flat = tags.flatten()
    keys = np.asarray(pc.struct_field(flat, "key").to_numpy(zero_copy_only=False))
    vals = np.asarray(pc.struct_field(flat, "value").to_numpy(zero_copy_only=False))
    n_tags = 5
    assert len(keys) == n_tags * t.num_rows
    cols: dict[str, np.ndarray] = {}
    for j, k in enumerate(keys[:n_tags]):
        assert (keys[j::n_tags] == k).all()
        cols[str(k)] = vals[j::n_tags]
    fb = t.column("expected_feedback").combine_chunks()
    for f in ("thumb", "rating", "read_time_s", "regenerated", "abandoned", "copied", "edited",
              "feedback_delay_s", "clicks", "comment"):
        cols[f] = np.asarray(pc.struct_field(fb, f).to_numpy(zero_copy_only=False))
    for f in ("turn", "session_id", "user_id", "reply", "input", "case_id"):
        cols[f] = np.asarray(t.column(f).to_numpy(zero_copy_only=False))
    cols["timestamp_us"] = t.column("timestamp").cast(pa.int64()).to_numpy()
    cols["history_len"] = np.asarray(pc.list_value_length(t.column("history")).to_numpy())
    spec = load_spec(SHIPPED).spec
    return m, cols, spec


def within(observed: float, expected: float, se: float, k: float = 4.0) -> bool:
    return abs(observed - expected) <= k * se + 1e-12


def test_big_run_has_enough_interactions(big: Any) -> None:
    m, cols, _ = big
    assert m.counts.interactions >= 20_000
    assert m.counts.sessions == 11_000
    assert len(cols["turn"]) == m.counts.cases


def test_explicit_feedback_share_matches_the_spec(big: Any) -> None:
    m, cols, spec = big
    good = cols["quality"] == "good"
    p = np.array([explicit_feedback_probability(spec, per, bool(g))
                  for per, g in zip(cols["persona"], good, strict=True)])
    explicit = cols["thumb"] != "none"
    n = len(p)
    se = math.sqrt(float((p * (1 - p)).sum())) / n
    assert within(explicit.mean(), p.mean(), se), (explicit.mean(), p.mean(), se)
    # small, as in real products
    assert 0.02 < explicit.mean() < 0.15
    assert m.feedback_summary["explicit_share"] == pytest.approx(explicit.mean(), abs=1e-5)
    # the spec's own number, for a persona with propensity 1 after a good reply
    ftb = (cols["persona"] == "first_time_buyer") & good
    rate = spec.feedback.explicit_rate
    se = math.sqrt(rate * (1 - rate) / ftb.sum())
    assert within(explicit[ftb].mean(), rate, se)


def test_thumb_up_rate_per_intent_matches_the_spec(big: Any) -> None:
    m, cols, spec = big
    thumbed = cols["thumb"] != "none"
    checked = 0
    for intent in spec.intent_names():
        sel = thumbed & (cols["intent"] == intent)
        n = int(sel.sum())
        assert n > 20, intent
        p = np.array([true_thumb_up_probability(spec, intent, q) for q in cols["quality"][sel]])
        up = cols["thumb"][sel] == "up"
        se = math.sqrt(float((p * (1 - p)).sum())) / n
        assert within(up.mean(), p.mean(), se), (intent, up.mean(), p.mean(), se)
        assert m.feedback_summary["by_intent"][intent]["thumb_up_rate"] == pytest.approx(
            up.mean(), abs=1e-5)
        # conditional on a good reply the rate is exactly the spec's number
        g = sel & (cols["quality"] == "good")
        pg = true_thumb_up_probability(spec, intent, "good")
        assert within((cols["thumb"][g] == "up").mean(), pg, math.sqrt(pg * (1 - pg) / g.sum()))
        checked += 1
    assert checked == len(spec.intents)


def test_reply_quality_per_intent_matches_the_spec(big: Any) -> None:
    _, cols, spec = big
    for it in spec.intents:
        sel = cols["intent"] == it.name
        q = it.reply_quality
        se = math.sqrt(q * (1 - q) / sel.sum())
        assert within((cols["quality"][sel] == "good").mean(), q, se), it.name


def test_mean_turns_per_session_matches_the_spec(big: Any) -> None:
    _, cols, spec = big
    first = cols["turn"] == 0
    personas = cols["persona"][first]
    sessions, turns = np.unique(cols["session_id"], return_counts=True)
    assert len(sessions) == first.sum() == 11_000
    order = np.argsort(cols["session_id"][first])
    per_session_persona = personas[order]
    means = {p.name: spec.turns_for(p).mean() for p in spec.personas}
    variances = {p.name: spec.turns_for(p).variance() for p in spec.personas}
    exp = np.array([means[p] for p in per_session_persona])
    var = np.array([variances[p] for p in per_session_persona])
    se = math.sqrt(var.sum()) / len(turns)
    assert within(turns.mean(), exp.mean(), se), (turns.mean(), exp.mean(), se)
    # per persona, the whole distribution: the share of one-turn sessions
    for p in spec.personas:
        sel = per_session_persona == p.name
        values, probs = turns_distribution(spec, p.name)
        p1 = float(probs[values == 1].sum())
        se1 = math.sqrt(p1 * (1 - p1) / sel.sum())
        assert within((turns[sel] == 1).mean(), p1, se1), p.name
        assert turns[sel].max() <= values.max()


def test_persona_shares_of_users_match_weights(big: Any) -> None:
    _, cols, spec = big
    users, idx = np.unique(cols["user_id"], return_index=True)
    personas = cols["persona"][idx]
    w = np.array([p.weight for p in spec.personas])
    w = w / w.sum()
    for p, share in zip(spec.personas, w, strict=True):
        se = math.sqrt(share * (1 - share) / len(users))
        assert within((personas == p.name).mean(), share, se), p.name


def test_implicit_signals_follow_reply_quality_and_length(big: Any) -> None:
    _, cols, spec = big
    good = cols["quality"] == "good"
    last = np.zeros(len(good), dtype=bool)
    sid = cols["session_id"]
    last[:-1] = sid[:-1] != sid[1:]
    last[-1] = True
    fb = spec.feedback
    # regenerate and abandon: far more likely after bad replies, at the spec's rates
    for flag, rate, where in (("regenerated", fb.regenerate_rate, ~last),
                              ("abandoned", fb.abandon_rate, last)):
        for q, sel in (("good", good & where), ("bad", ~good & where)):
            p = getattr(rate, q)
            assert within(cols[flag][sel].mean(), p, math.sqrt(p * (1 - p) / sel.sum())), (flag, q)
    assert not cols["regenerated"][last].any()
    assert not cols["abandoned"][~last].any()
    # read time grows with the reply's length (rank correlation over all cases)
    words = np.array([len(r.split()) for r in cols["reply"]])
    from scipy.stats import spearmanr

    rho = spearmanr(words, cols["read_time_s"]).statistic
    assert rho > 0.5
    # feedback delay only with explicit feedback; ratings only with a thumb, and they agree
    explicit = cols["thumb"] != "none"
    assert np.isnan(cols["feedback_delay_s"][~explicit].astype(float)).all()
    assert (cols["feedback_delay_s"][explicit].astype(float) > 0).all()
    rated = ~np.isnan(cols["rating"].astype(float))
    assert not (rated & ~explicit).any()
    up_stars = cols["rating"][rated & (cols["thumb"] == "up")].astype(float)
    down_stars = cols["rating"][rated & (cols["thumb"] == "down")].astype(float)
    assert up_stars.mean() > 3.8 > 2.5 > down_stars.mean()


def test_sessions_are_coherent(big: Any) -> None:
    """A regenerated reply makes the next turn repeat the input and vanish from history."""
    _, cols, _ = big
    sid, turn = cols["session_id"], cols["turn"]
    regen = cols["regenerated"]
    nxt = np.flatnonzero(regen[:-1]) + 1
    assert len(nxt) > 100
    assert (sid[nxt] == sid[nxt - 1]).all()
    assert (cols["input"][nxt] == cols["input"][nxt - 1]).all()
    # history length = 2 x earlier turns of the session that were not regenerated
    expected = np.zeros(len(sid), dtype=np.int64)
    kept = 0
    for i in range(len(sid)):
        if turn[i] == 0:
            kept = 0
        expected[i] = 2 * kept
        if not regen[i]:
            kept += 1
    assert (cols["history_len"] == expected).all()
    # timestamps increase within a session; case ids are <session>-t<turn>
    ts = cols["timestamp_us"]
    same = sid[1:] == sid[:-1]
    assert (ts[1:][same] > ts[:-1][same]).all()
    assert all(c == f"{s}-t{t}" for c, s, t in zip(cols["case_id"][:500], sid[:500], turn[:500],
                                                    strict=True))


def test_start_times_follow_the_calendar(big: Any) -> None:
    _, cols, spec = big
    first = cols["turn"] == 0
    ts = cols["timestamp_us"][first] / 1e6
    start = np.datetime64(spec.calendar.start.isoformat(), "s").astype(np.int64)
    assert (ts >= start).all()
    assert (ts < start + spec.calendar.days * 86400).all()
    hours = ((ts - start) // 3600 % 24).astype(int)
    night = np.isin(hours, [1, 2, 3, 4, 5])
    day = np.isin(hours, [10, 11, 12, 13, 14])
    # the default hour pattern makes late mornings ~15x busier than the small hours
    assert day.mean() > 5 * night.mean()
    # small_business is a weekday persona
    dow = ((ts - start) // 86400 + spec.calendar.start.weekday()) % 7
    biz = cols["persona"][first] == "small_business"
    assert (dow[biz] >= 5).mean() < 0.1
    assert (dow[~biz] >= 5).mean() > 0.15


def test_consent_summary_matches_rates(big: Any) -> None:
    m, cols, spec = big
    cs = m.consent_summary
    users = cs["users"]
    assert users == len(np.unique(cols["user_id"]))
    for use, rate in spec.consent.rates.items():
        se = math.sqrt(rate * (1 - rate) / users)
        assert within(cs["uses"][use] / users, rate, se), use
    # the consent tag lists each user's uses
    _, idx = np.unique(cols["user_id"], return_index=True)
    tagged = cols["consent"][idx]
    assert sum("training" in t.split(",") for t in tagged) == cs["uses"]["training"]


def test_a_user_keeps_their_slot_values(tmp_path: Path) -> None:
    s = copy.deepcopy(BASE)
    s["users"] = {"sessions_per_user": {"fixed": 3}}
    s["intents"] = [{"name": "hi", "templates": ["I am {{ first_name }}"], "answers": ["ok"]}]
    p = write_spec(tmp_path, s)
    gen(p, tmp_path / "out", sessions=90)
    names: dict[str, set[str]] = {}
    for c in open_evalset(tmp_path / "out").iter_cases():
        names.setdefault(c.user_id or "", set()).add(c.input)
    assert len(names) == 30
    assert all(len(v) == 1 for v in names.values())
    assert len({next(iter(v)) for v in names.values()}) > 3


def test_count_spec_pmf() -> None:
    v, p = CountSpec(continue_probability=0.5, max=3).pmf()
    assert list(v) == [1, 2, 3]
    assert p == pytest.approx(np.array([4, 2, 1]) / 7)
    assert CountSpec(fixed=4).mean() == 4
    assert CountSpec(weights={1: 1, 3: 3}).mean() == pytest.approx(2.5)
    assert CountSpec(weights={1: 1, 3: 1}).variance() == pytest.approx(1.0)


# --------------------------------------------------------------------------- the spec's JSON Schema
def test_json_schema_file_is_current() -> None:
    on_disk = json.loads((REPO / "generators" / "support_assistant.schema.json").read_text())
    assert on_disk == spec_json_schema(), (
        "regenerate with: python -m synthloop.generate.rules --write-schema "
        "generators/support_assistant.schema.json")


def test_shipped_spec_validates_against_the_json_schema() -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    jsonschema.validate(json.loads(json.dumps(data, default=str)), spec_json_schema())
    bad = copy.deepcopy(data)
    bad["personas"][0]["wieght"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(bad, default=str)), spec_json_schema())


def test_shipped_spec_is_realistic() -> None:
    spec = load_spec(SHIPPED).spec
    assert 6 <= len(spec.intents) <= 10
    assert len(spec.personas) == 4
    assert len({loc for p in spec.personas for loc in p.locales}) >= 3
    assert spec.feedback.explicit_rate <= 0.1


# --------------------------------------------------------------------------- bad input
def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def mutate(fn: Any) -> dict[str, Any]:
    s = copy.deepcopy(BASE)
    fn(s)
    return s


BAD_SPECS = {
    "undefined_variable": (
        mutate(lambda s: s["intents"][0].__setitem__("templates", ["About {{ product_nme }}"])),
        "intents[0].templates[0]: undefined variable 'product_nme' (did you mean 'product_name'?)"),
    "unknown_persona": (
        mutate(lambda s: s["intents"][1].__setitem__("persona_weights", {"new_custmer": 2})),
        "intents[1].persona_weights.new_custmer: unknown persona 'new_custmer' "
        "(did you mean 'new_customer'?)"),
    "negative_probability": (
        mutate(lambda s: s["intents"][0].__setitem__("reply_quality", -0.2)),
        "intents[0].reply_quality: Input should be greater than or equal to 0"),
    "probability_above_one": (
        mutate(lambda s: s.setdefault("feedback", {}).__setitem__("explicit_rate", 1.5)),
        "feedback.explicit_rate: Input should be less than or equal to 1"),
    "all_zero_persona_weights": (
        mutate(lambda s: [p.__setitem__("weight", 0) for p in s["personas"]]),
        "personas: every weight is 0"),
    "all_zero_locale_weights": (
        mutate(lambda s: s["personas"][0].__setitem__("locales", {"en_US": 0})),
        "personas[0]: locales: every weight is 0"),
    "all_zero_intents_for_persona": (
        mutate(lambda s: [i.__setitem__("persona_weights", {"pro": 0}) for i in s["intents"]]),
        "personas[1]: every intent has weight 0 for persona 'pro'"),
    "unknown_key": (
        mutate(lambda s: s["personas"][0].__setitem__("wieght", 3)),
        "personas[0].wieght: unknown key (did you mean `weight`?)"),
    "unknown_top_key": (
        mutate(lambda s: s.__setitem__("intens", [])),
        "intens: unknown key (did you mean `intents`?)"),
    "unknown_follow_up": (
        mutate(lambda s: s["intents"][0].__setitem__("follow_ups", {"ordr": 1})),
        "intents[0].follow_ups.ordr: unknown intent 'ordr' (did you mean 'order'?)"),
    "missing_template_file": (
        mutate(lambda s: s["intents"][0].__setitem__("answers", [{"file": "templates/nope.j2"}])),
        "intents[0].answers[0].file: template file"),
    "template_syntax": (
        mutate(lambda s: s["intents"][0].__setitem__("answers", ["{{ product_name "])),
        "intents[0].answers[0]: template syntax error on line 1"),
    "unseeded_random_filter": (
        mutate(lambda s: s["intents"][0].__setitem__("answers", ["{{ ['a', 'b'] | random }}"])),
        "intents[0].answers[0]: template syntax error on line 1: No filter named 'random'"),
    "unknown_faker_provider": (
        mutate(lambda s: s["slots"].__setitem__("first_name", {"faker": "frist_name"})),
        "slots.first_name.faker: unknown Faker provider 'frist_name' (did you mean 'first_name'?)"),
    "unknown_locale": (
        mutate(lambda s: s["personas"][0].__setitem__("locales", {"en_XX": 1})),
        "personas[0].locales.en_XX: unknown Faker locale"),
    "undefined_attribute_at_render": (
        mutate(lambda s: s["intents"][0].__setitem__("answers", ["{{ traits.tone }}"])),
        "intents[0].answers[0]: 'dict object' has no attribute 'tone'"),
    "count_with_two_kinds": (
        mutate(lambda s: s["personas"][1].__setitem__("turns", {"fixed": 2,
                                                                "continue_probability": 0.5})),
        "personas[1].turns: give exactly one of fixed, weights or continue_probability"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_gives_one_line_exit_2_and_no_output(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, expected = BAD_SPECS[case]
    p = write_spec(tmp_path, spec, "bad.yaml")
    out = tmp_path / "evalsets" / "x" / "v1"
    code, stdout, err = run_main(capsys, "generate", str(p), "--out", str(out))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"synthloop: error: {p}: "), err
    assert expected in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "evalsets").exists()


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    s = copy.deepcopy(BASE)
    s["intents"][0]["templates"] = ["{{ product_nme }} {{ brnd }}"]
    s["intents"][1]["persona_weights"] = {"nobody": 1}
    p = write_spec(tmp_path, s)
    with pytest.raises(ConfigError) as ei:
        load_spec(p)
    problems = ei.value.problems
    assert len(problems) == 3
    assert all(x.startswith(f"{p}: ") for x in problems)
    assert "did you mean 'brand'?" in " ".join(problems)


def test_unreadable_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "generate", str(tmp_path / "missing.yaml"), "--out",
                            str(tmp_path / "o"))
    assert code == 2
    assert err.strip().splitlines() == [f"synthloop: error: {tmp_path / 'missing.yaml'}: config "
                                        "file not found (check the path)"]
    d = tmp_path / "adir.yaml"
    d.mkdir()
    code, _, err = run_main(capsys, "generate", str(d), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    p = write_spec(tmp_path, BASE)
    gen(p, tmp_path / "out")
    before = (tmp_path / "out" / "manifest.json").read_text()
    with pytest.raises(DataError, match="never overwritten"):
        gen(p, tmp_path / "out", seed=3)
    assert (tmp_path / "out" / "manifest.json").read_text() == before


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "generate", str(SHIPPED), "--dry-run", "--sessions", "500",
                            "--out", str(tmp_path / "ev" / "v1"))
    assert code == 0
    assert "would write 500 sessions" in out
    assert not (tmp_path / "ev").exists()


def test_n_is_rejected_for_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "generate", str(SHIPPED), "-n", "10", "--out",
                            str(tmp_path / "v"))
    assert code == 2 and "--sessions" in err


def test_env_interpolation_in_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = copy.deepcopy(BASE)
    s["constants"]["brand"] = "${BRAND_NAME:-Fallback}"
    p = write_spec(tmp_path, s)
    assert load_spec(p).spec.constants["brand"] == "Fallback"
    monkeypatch.setenv("BRAND_NAME", "Zeta")
    assert load_spec(p).spec.constants["brand"] == "Zeta"


def test_cli_summary_and_real_exit_codes(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    code, out, err = run_cli("generate", str(SHIPPED), "--seed", "7", "--sessions", "300",
                             "--out", str(tmp_path / "ev" / "v1"))
    assert code == 0, err
    assert "sessions 300" in out and "content_hash sha256:" in out and "explicit feedback" in out
    bad = write_spec(tmp_path, mutate(lambda s: s["intents"][0].__setitem__(
        "templates", ["{{ product_nme }}"])), "bad.yaml")
    code, out, err = run_cli("generate", str(bad), "--out", str(tmp_path / "ev" / "v2"))
    assert code == 2
    assert "undefined variable 'product_nme'" in err and "Traceback" not in err
    assert not (tmp_path / "ev" / "v2").exists()
