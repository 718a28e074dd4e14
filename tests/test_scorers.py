"""Scorers: match, similarity, latency/cost, custom functions, and the score runner."""

from __future__ import annotations

import asyncio
import json
import random
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import synthloop.scorers as ss
from synthloop.errors import ConfigError, DataError, TargetError
from synthloop.evalsets import write_evalset
from synthloop.registry import scorers as registry
from synthloop.runs import RunDir
from synthloop.schema import (
    EvalCase,
    Message,
    Provenance,
    References,
    Response,
    RunManifest,
    Score,
    TargetFingerprint,
    Usage,
)
from synthloop.scorers import ScorersConfig, build_scorers, score_run
from synthloop.scorers._text import (
    fuzzy_ratio,
    lcs_length,
    normalize,
    numbers,
    rouge_l,
    token_f1,
    tokens,
)


# --------------------------------------------------------------------------- fixtures
def case(cid: str, good: Sequence[str] = (), bad: Sequence[str] = (), inp: str = "q",
         **kw: Any) -> EvalCase:
    return EvalCase(case_id=cid, input=inp, references=References(good=list(good), bad=list(bad)),
                    **kw)


def ok(cid: str, output: str, *, sample: int = 0, latency_ms: float | None = 100.0,
       prompt_tokens: int = 0, completion_tokens: int = 0) -> Response:
    return Response(case_id=cid, sample=sample, output=output, latency_ms=latency_ms,
                    usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))


def failed(cid: str, kind: str = "timeout", *, sample: int = 0,
           latency_ms: float | None = 30_000.0) -> Response:
    return Response(case_id=cid, sample=sample, output=None, error=f"{kind} after 3 attempts",
                    error_kind=kind, latency_ms=latency_ms)


def make_evalset(path: Path, cases: Sequence[EvalCase]) -> str:
    return write_evalset(path, cases, provenance=Provenance(generator="test")).content_hash


def make_run(root: Path, cases: Sequence[EvalCase], responses: Sequence[Response], *,
             name: str = "run", model: str = "model-a", evalset: Path | None = None,
             status: str = "complete") -> Path:
    """An evalset (unless given) and a run directory holding `responses`."""
    ev = evalset if evalset is not None else root / f"{name}-evalset"
    if not (ev / "manifest.json").exists():
        make_evalset(ev, cases)
    from synthloop.evalsets import open_evalset

    es = open_evalset(ev)
    rd = RunDir(root / name)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_manifest(RunManifest(
        evalset_hash=es.content_hash, evalset_path=str(ev),
        target=TargetFingerprint(kind="fake", model=model), target_name=model,
        package_version="0", started_at=datetime.now(UTC), status=status,  # type: ignore[arg-type]
    ))
    rd.write_responses(responses)
    return rd.path


def build(entries: list[dict[str, Any]], base_dir: Path | None = None) -> list[Any]:
    return build_scorers(ScorersConfig.from_data({"scorers": entries}, base_dir=base_dir))


def one(entry: dict[str, Any], base_dir: Path | None = None) -> Any:
    return build([entry], base_dir)[0]


def values(scorer: Any, cases: Sequence[EvalCase], responses: Sequence[Response]
           ) -> list[float | None]:
    """Score through the columnar path and check the per-case path agrees."""
    batch = ss.ScoringBatch.from_objects(cases, responses)
    res = scorer.score_batch(batch)
    for c, r, v, e in zip(cases, responses, res.values, res.errors, strict=True):
        single = scorer.score(c, r)
        assert isinstance(single, Score)
        assert single.value == v and single.error == e and single.metric == scorer.name
    return res.values


def read_scores(run: Path) -> dict[tuple[str, int, str], dict[str, Any]]:
    rows = pq.read_table(run / "scores.parquet").to_pylist()
    return {(r["case_id"], r["sample"], r["metric"]): r for r in rows}


# --------------------------------------------------------------------------- text helpers
def _lcs_dp(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dynamic_programme() -> None:
    rng = random.Random(7)
    for _ in range(400):
        alphabet = "abcde"[: rng.randint(1, 5)]
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 80))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 80))]
        assert lcs_length(a, b) == _lcs_dp(a, b), (a, b)


def test_token_f1_and_rouge_l_known_values() -> None:
    assert token_f1(tokens("the cat sat"), tokens("The cat sat!")) == 1.0
    # 2 shared of 3 predicted and 4 reference tokens: P=2/3, R=1/2, F1=4/7
    assert token_f1(tokens("a cat sat"), tokens("the cat sat down")) == pytest.approx(4 / 7)
    assert token_f1([], []) == 1.0 and token_f1(["x"], []) == 0.0
    # LCS of "a b c d" and "a c b d" is 3 → P=R=3/4
    assert rouge_l(list("abcd"), list("acbd")) == pytest.approx(0.75)
    assert rouge_l(["x"], ["y"]) == 0.0


def test_fuzzy_ratio_is_the_normalised_indel_similarity() -> None:
    assert fuzzy_ratio("Hello   World", "hello world") == 1.0
    assert fuzzy_ratio("kitten", "sitting") == pytest.approx(2 * 4 / 13)  # LCS "ittn"
    assert fuzzy_ratio("", "") == 1.0 and fuzzy_ratio("abc", "") == 0.0
    rng = random.Random(3)
    for _ in range(200):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(1, 60)))
        b = "".join(rng.choice("abc d") for _ in range(rng.randint(1, 60)))
        a2, b2 = " ".join(a.split()), " ".join(b.split())
        if a2 or b2:
            assert fuzzy_ratio(a, b) == pytest.approx(2 * _lcs_dp(a2, b2) / (len(a2) + len(b2)))


def test_token_fast_path_equals_the_word_regex() -> None:
    import re

    rng = random.Random(5)
    alphabet = [chr(c) for c in range(128)] + ["é", "ß", "日"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokens(text) == re.findall(r"\w+", text.lower()), repr(text)


def test_normalize_ascii_fast_path_agrees_with_unicode_path() -> None:
    assert normalize("The  Eiffel-Tower, (Paris)!") == "eiffel tower paris"
    assert normalize("«Le» Louvre — à Paris!") == "le louvre à paris"
    assert normalize("snake_case stays") == "snake_case stays"
    assert normalize("A cat", remove_articles=False) == "a cat"
    assert normalize("a cat.", collapse_whitespace=False) == "cat"


def test_unicode_text_keeps_combining_marks_and_compares_in_nfc() -> None:
    import unicodedata

    # Devanagari vowel signs are combining marks: they belong to the word, not between words
    assert tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert token_f1(tokens("भाषा"), tokens("भूषा")) == 0.0  # different words stay different
    assert normalize("हिन्दी, भाषा!") == "हिन्दी भाषा"
    # "é" precomposed vs "e" + combining acute: the same text
    composed = "Le café résumé"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert tokens(decomposed) == tokens(composed) == ["le", "café", "résumé"]
    assert normalize(decomposed) == normalize(composed)
    assert fuzzy_ratio(composed, decomposed) == 1.0
    cases = [case("a", [composed])]
    res = [ok("a", decomposed)]
    for kind in ("exact_match", "normalized_match", "contains", "token_f1", "rouge_l",
                 "fuzzy_ratio"):
        assert values(one({"name": "m", "kind": kind}), cases, res) == [1.0], kind


def test_numbers_parse_separators_signs_and_exponents() -> None:
    assert numbers("paid $1,234.50 then -3 and 2e3, .5") == [1234.5, -3.0, 2000.0, 0.5]
    assert numbers("no digits") == []


# --------------------------------------------------------------------------- match scorers
def test_exact_match_trims_and_uses_the_first_good_reference() -> None:
    s = one({"name": "correct", "kind": "exact_match"})
    cases = [case("a", ["Paris", "paris"]), case("b", ["Paris"]), case("c", ["x", "Paris"]),
             case("d")]
    res = [ok("a", "  Paris\n"), ok("b", "paris"), ok("c", "Paris"), ok("d", "anything")]
    assert values(s, cases, res) == [1.0, 0.0, 0.0, None]
    d = s.score(cases[3], res[3])
    assert d.error and "no good reference" in d.error
    any_ref = one({"name": "c2", "kind": "exact_match", "reference": "any",
                   "case_sensitive": False})
    assert values(any_ref, cases[:3], res[:3]) == [1.0, 1.0, 1.0]


def test_normalized_match_drops_case_punctuation_articles_and_spacing() -> None:
    s = one({"name": "nm", "kind": "normalized_match"})
    cases = [case("a", ["The Eiffel Tower"]), case("b", ["42"])]
    res = [ok("a", "eiffel   tower."), ok("b", "forty-two")]
    assert values(s, cases, res) == [1.0, 0.0]
    strict = one({"name": "nm2", "kind": "normalized_match", "remove_articles": False})
    assert values(strict, cases[:1], res[:1]) == [0.0]


def test_contains_fixed_text_references_all_and_negate() -> None:
    cases = [case("a", ["refund"]), case("b", ["refund"])]
    res = [ok("a", "We will REFUND you within 5 days"), ok("b", "Sorry, no.")]
    assert values(one({"name": "c", "kind": "contains"}), cases, res) == [1.0, 0.0]
    both = one({"name": "c", "kind": "contains", "text": ["refund", "days"], "mode": "all"})
    assert values(both, cases, res) == [1.0, 0.0]
    banned = one({"name": "c", "kind": "contains", "text": "sorry", "negate": True})
    vals = values(banned, cases, res)
    assert vals == [1.0, 0.0]
    assert banned.score(cases[1], res[1]).explanation == "contains: sorry"
    cs = one({"name": "c", "kind": "contains", "text": "refund", "case_sensitive": True})
    assert values(cs, cases[:1], res[:1]) == [0.0]


def test_regex_modes_flags_and_negate() -> None:
    cases = [case("a"), case("b")]
    res = [ok("a", "  ORDER-1234  "), ok("b", "order 12")]
    full = one({"name": "r", "kind": "regex", "pattern": r"order-\d{4}", "mode": "fullmatch",
                "flags": ["IGNORECASE"]})
    assert values(full, cases, res) == [1.0, 0.0]
    search = one({"name": "r", "kind": "regex", "pattern": r"\d+"})
    assert values(search, cases, res) == [1.0, 1.0]
    neg = one({"name": "r", "kind": "regex", "pattern": "order", "negate": True})
    assert values(neg, cases, res) == [1.0, 0.0]


def test_regex_invalid_pattern_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        one({"name": "r", "kind": "regex", "pattern": "([a-z"})
    text = str(e.value)
    assert "scorers[0] 'r'" in text and "pattern" in text and "invalid regular expression" in text


def test_json_valid_with_extraction_and_required_type() -> None:
    cases = [case(c) for c in "abcd"]
    res = [ok("a", '{"x": 1}'), ok("b", 'Sure! ```json\n{"x": 2}\n```'), ok("c", "[1, 2]"),
           ok("d", "{oops")]
    assert values(one({"name": "j", "kind": "json_valid"}), cases, res) == [1.0, 0.0, 1.0, 0.0]
    ext = one({"name": "j", "kind": "json_valid", "extract": True, "require": "object"})
    assert values(ext, cases, res) == [1.0, 1.0, 0.0, 0.0]
    why = ext.score(cases[2], res[2]).explanation
    assert "expected an object" in why


def test_json_valid_rejects_nan_and_extract_finds_the_json_among_other_text() -> None:
    plain = one({"name": "j", "kind": "json_valid"})
    nan = [ok("a", '{"x": NaN}'), ok("b", "[Infinity]"), ok("c", "-Infinity")]
    assert values(plain, [case(c) for c in "abc"], nan) == [0.0, 0.0, 0.0]
    assert "NaN is not valid JSON" in (plain.score(case("a"), nan[0]).explanation or "")
    fence = "```"
    replies = [
        f"Code:\n{fence}python\nprint(1)\n{fence}\nData:\n{fence}json\n{{\"x\": 1}}\n{fence}",
        f"{fence}python\n{{\"x\": 2}}\n{fence}",
        'Fill in {name} later. The result: {"x": 3}',
        'Per [1], the result is {"x": 4}',
        "No JSON here {at all}",
    ]
    cases = [case(str(i)) for i in range(len(replies))]
    res = [ok(str(i), r) for i, r in enumerate(replies)]
    ext = one({"name": "j", "kind": "json_valid", "extract": True, "require": "object"})
    assert values(ext, cases, res) == [1.0, 1.0, 1.0, 1.0, 0.0]
    schema = one({"name": "s", "kind": "json_schema", "extract": True,
                  "schema": {"type": "object", "required": ["x"],
                             "properties": {"x": {"const": 4}}}})
    assert values(schema, cases[3:4], res[3:4]) == [1.0]


def test_json_schema_inline_and_from_file(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}},
              "required": ["amount"]}
    (tmp_path / "schema.yaml").write_text(json.dumps(schema))
    cases = [case(c) for c in "abc"]
    res = [ok("a", '{"amount": 3}'), ok("b", '{"amount": -1}'), ok("c", "not json")]
    inline = one({"name": "s", "kind": "json_schema", "schema": schema})
    from_file = one({"name": "s", "kind": "json_schema", "schema_file": "schema.yaml"},
                    base_dir=tmp_path)
    for s in (inline, from_file):
        assert values(s, cases, res) == [1.0, 0.0, 0.0]
        assert "$.amount" in s.score(cases[1], res[1]).explanation
    with pytest.raises(ConfigError, match="exactly one of"):
        one({"name": "s", "kind": "json_schema"})
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        one({"name": "s", "kind": "json_schema", "schema": {"type": "nonsense"}})


def test_json_schema_refs_resolve_inside_the_schema_and_are_never_fetched(tmp_path: Path
                                                                          ) -> None:
    item = {"$defs": {"qty": {"type": "integer", "minimum": 1}}, "type": "object",
            "properties": {"qty": {"$ref": "#/$defs/qty"}}}
    s = one({"name": "s", "kind": "json_schema", "schema": item})
    assert values(s, [case("a"), case("b")], [ok("a", '{"qty": 2}'), ok("b", '{"qty": 0}')]
                  ) == [1.0, 0.0]
    for ref in ("#/$defs/missing", "other.json", "http://127.0.0.1:9/schema.json"):
        bad = {"type": "object", "properties": {"x": {"$ref": ref}}}
        with pytest.raises(ConfigError, match="does not resolve"):
            one({"name": "s", "kind": "json_schema", "schema": bad})
    # a nested $id defers the check to scoring: still a usage error, and nothing is written
    nested = {"type": "object", "properties": {"x": {"$id": "https://example.com/x",
                                                       "$ref": "missing.json"}}}
    run = make_run(tmp_path, [case("a")], [ok("a", '{"x": 1}')])
    cfg = ScorersConfig.from_data({"scorers": [{"name": "s", "kind": "json_schema",
                                                "schema": nested}]})
    with pytest.raises(ConfigError, match="does not resolve"):
        score_run(run, cfg)
    assert not (run / "scores.parquet").exists()


def test_numeric_tolerance_extraction_and_bad_references() -> None:
    cases = [case("a", ["1,234.5"]), case("b", ["42"]), case("c", ["42"]), case("d", ["about 7 or 8"]),
             case("e", ["3"])]
    res = [ok("a", "The total is $1,234.50"), ok("b", "Step 1: 40. Answer: 42.1"),
           ok("c", "no idea"), ok("d", "7"), ok("e", "3 or 4")]
    exact = one({"name": "n", "kind": "numeric"})
    assert values(exact, cases, res) == [1.0, 0.0, 0.0, None, 0.0]
    assert "not one number" in (exact.score(cases[3], res[3]).error or "")
    tol = one({"name": "n", "kind": "numeric", "abs_tol": 0.2, "extract": "last"})
    assert values(tol, cases[:2], res[:2]) == [1.0, 1.0]
    first = one({"name": "n", "kind": "numeric", "extract": "first"})
    assert values(first, cases[4:], res[4:]) == [1.0]
    only = one({"name": "n", "kind": "numeric", "extract": "only"})
    assert values(only, cases[4:], res[4:]) == [0.0]
    fixed = one({"name": "n", "kind": "numeric", "expected": 0.5, "rel_tol": 0.1})
    assert values(fixed, [case("x")], [ok("x", "p = 0.52")]) == [1.0]


def test_numeric_signs_dashes_unicode_minus_and_non_finite_references() -> None:
    assert numbers("pages 5-10, on 2024-01-15") == [5.0, 10.0, 2024.0, 1.0, 15.0]
    assert numbers("it fell to −5 (a typographic minus), then -$3, +2 and x=-1") == [-5.0, -3.0, 2.0, -1.0]
    exact = one({"name": "n", "kind": "numeric"})
    cases = [case("a", ["-5"]), case("b", ["5"]), case("c", ["10"]), case("d", ["-$3"]),
             case("e", ["NaN"]), case("f", ["inf"])]
    res = [ok("a", "The answer is −5"), ok("b", "The answer is −5"), ok("c", "between 5-10"),
           ok("d", "a refund of -$3"), ok("e", "5"), ok("f", "5")]
    assert values(exact, cases, res) == [1.0, 0.0, 1.0, 1.0, None, None]
    assert "not one number" in (exact.score(cases[4], res[4]).error or "")
    with pytest.raises(ConfigError, match="expected"):
        one({"name": "n", "kind": "numeric", "expected": float("nan")})


# --------------------------------------------------------------------------- similarity
def test_similarity_uses_the_best_good_reference_and_thresholds() -> None:
    cases = [case("a", ["the cat sat on the mat", "a dog barked"]), case("b", ["hello"])]
    res = [ok("a", "a dog barked"), ok("b", "goodbye")]
    for kind in ("token_f1", "rouge_l", "fuzzy_ratio"):
        vals = values(one({"name": "s", "kind": kind}), cases, res)
        assert vals[0] == pytest.approx(1.0) and vals[1] < 0.5, kind
    thr = one({"name": "s", "kind": "token_f1", "threshold": 0.5})
    assert thr.kind == "binary"
    assert values(thr, cases, res) == [1.0, 0.0]
    assert values(one({"name": "s", "kind": "rouge_l"}), [case("c")], [ok("c", "x")]) == [None]


def test_closer_to_bad_flags_outputs_resembling_thumbed_down_replies() -> None:
    s = one({"name": "bad", "kind": "closer_to_bad"})
    assert s.higher_is_better is False and s.kind == "binary"
    cases = [case("a", ["Your refund was issued today"], ["I cannot help with refunds"]),
             case("b", ["Your refund was issued today"], ["I cannot help with refunds"]),
             case("c", ["ok"]), case("d", [], ["nope never"])]
    res = [ok("a", "Sorry, I cannot help with refunds"), ok("b", "The refund was issued today"),
           ok("c", "anything"), ok("d", "nope")]
    assert values(s, cases, res) == [1.0, 0.0, 0.0, 1.0]
    assert s.score(cases[2], res[2]).explanation == "no bad references"
    margin = one({"name": "bad", "kind": "closer_to_bad", "margin": 0.95})
    assert values(margin, cases[:1], res[:1]) == [0.0]


# --------------------------------------------------------------------------- latency and cost
def test_latency_values_threshold_and_errors() -> None:
    cases = [case("a"), case("b"), case("c")]
    res = [ok("a", "x", latency_ms=120.0), failed("b", latency_ms=30_000.0),
           ok("c", "y", latency_ms=None)]
    lat = one({"name": "lat", "kind": "latency"})
    assert lat.higher_is_better is False
    assert values(lat, cases, res) == [120.0, 30_000.0, None]
    secs = one({"name": "lat", "kind": "latency", "unit": "s", "include_errors": False})
    got = values(secs, cases, res)
    assert got[0] == pytest.approx(0.12) and got[1] is None
    assert secs.score(cases[1], res[1]).error == "no output: timeout"
    slo = one({"name": "slo", "kind": "latency", "threshold_ms": 200})
    assert slo.kind == "binary" and slo.higher_is_better is True
    assert values(slo, cases[:2], res[:2]) == [1.0, 0.0]


def test_cost_from_flat_prices_and_from_a_model_table(tmp_path: Path) -> None:
    cases = [case("a"), case("b")]
    res = [ok("a", "x", prompt_tokens=1000, completion_tokens=500), failed("b")]
    flat = one({"name": "usd", "kind": "cost", "prompt_per_1m": 1.0, "completion_per_1m": 4.0})
    assert values(flat, cases, res) == [pytest.approx(0.003), 0.0]
    run = make_run(tmp_path, cases, res, model="model-b")
    table = {"name": "usd", "kind": "cost",
             "prices": {"model-a": {"prompt_per_1m": 1, "completion_per_1m": 1},
                        "model-b": {"prompt_per_1m": 10, "completion_per_1m": 20}}}
    cfg = ScorersConfig.from_data({"scorers": [table]})
    summary = score_run(run, cfg)
    assert summary["metrics"]["usd"]["max"] == pytest.approx(0.02)
    doc = json.loads((run / "scores.json").read_text())
    assert doc["scorers"]["usd"]["priced_model"] == "model-b"
    run2 = make_run(tmp_path, cases, res, name="run2", model="model-z")
    with pytest.raises(ConfigError, match="no price for model 'model-z'"):
        score_run(run2, cfg)
    assert not (run2 / "scores.parquet").exists()
    with pytest.raises(ConfigError, match="not both"):
        one({**table, "prompt_per_1m": 1})


def test_no_output_policy_of_every_builtin_scorer() -> None:
    """A reply the target failed to produce counts as a failure for correctness metrics."""
    c = case("a", ["good answer 1"], ["bad answer"])
    r = failed("a", "http_500", latency_ms=900.0)
    expected = {
        "exact_match": 0.0, "normalized_match": 0.0, "contains": 0.0, "token_f1": 0.0,
        "rouge_l": 0.0, "fuzzy_ratio": 0.0, "json_valid": 0.0, "numeric": 0.0,
        "closer_to_bad": 1.0, "latency": 900.0,
    }
    extra: dict[str, dict[str, Any]] = {"regex": {"pattern": "x"}}
    expected["regex"] = 0.0
    for kind, want in expected.items():
        s = one({"name": "m", "kind": kind, **extra.get(kind, {})})
        got = s.score(c, r)
        assert got.value == want, kind
        assert got.error is None and got.explanation == "no output: http_500", kind


# --------------------------------------------------------------------------- custom scorers
def test_decorated_function_is_a_scorer_kind_and_stays_callable(tmp_path: Path) -> None:
    @ss.scorer(name="test_polite", kind="binary")
    def polite(case: EvalCase, response: Response, word: str = "please") -> bool:
        return word in (response.output or "").lower()

    try:
        assert polite(case("a"), ok("a", "Please wait")) is True  # still a plain function
        cases = [case("a"), case("b"), case("c")]
        res = [ok("a", "Please wait"), ok("b", "wait"), failed("c")]
        run = make_run(tmp_path, cases, res)
        cfg = ScorersConfig.from_data({"scorers": [
            {"name": "polite", "kind": "test_polite"},
            {"name": "thanks", "kind": "test_polite", "params": {"word": "wait"},
             "on_no_output": "null"}]})
        summary = score_run(run, cfg)
        got = read_scores(run)
        assert [got[(c, 0, "polite")]["value"] for c in "abc"] == [1.0, 0.0, 0.0]
        assert [got[(c, 0, "thanks")]["value"] for c in "abc"] == [1.0, 1.0, None]
        assert got[("c", 0, "thanks")]["error"] == "no output: timeout"
        assert summary["metrics"]["thanks"]["no_output_null"] == 1
        assert summary["metrics"]["polite"]["kind"] == "binary"
    finally:
        registry._loaded.pop("test_polite", None)


def test_decorator_refuses_builtin_names() -> None:
    with pytest.raises(ValueError, match="built-in"):
        ss.scorer(name="regex")(lambda c, r: 1.0)


def test_python_kind_sync_async_batched_and_failures_recorded(tmp_path: Path) -> None:
    (tmp_path / "my_scorers_mod.py").write_text(textwrap.dedent("""
        import asyncio
        import synthloop.scorers as ss
        from synthloop.schema import Score

        def length(case, response, scale=1.0):
            if response.output == "boom":
                raise RuntimeError("cannot score this one")
            return len(response.output) * scale

        async def slow_len(case, response):
            await asyncio.sleep(0.001)
            return (len(response.output), f"{len(response.output)} chars")

        @ss.scorer(kind="binary", higher_is_better=False, batched=True, register=False)
        def short(cases, responses):
            return [len(r.output) < 3 for r in responses]

        def half(case, response):
            return 0.5

        def weird(case, response):
            return "not a number"

        def as_score(case, response):
            return Score(case_id="ignored", metric="ignored", value=2.0, explanation="why")
    """))
    cases = [case(c) for c in "abcd"]
    res = [ok("a", "hi"), ok("b", "hello"), ok("c", "boom"), failed("d")]
    run = make_run(tmp_path, cases, res)
    (tmp_path / "scorers.yaml").write_text(textwrap.dedent("""
        scorers:
          - {name: length, kind: python, function: "my_scorers_mod:length", params: {scale: 2}}
          - {name: slow, kind: python, function: "my_scorers_mod:slow_len"}
          - {name: short, kind: python, function: "my_scorers_mod:short"}
          - {name: half, kind: python, function: "my_scorers_mod:half", metric_kind: binary}
          - {name: weird, kind: python, function: "my_scorers_mod:weird"}
          - {name: as_score, kind: python, function: "my_scorers_mod:as_score"}
    """))
    summary = score_run(run, tmp_path / "scorers.yaml")
    got = read_scores(run)
    assert [got[(c, 0, "length")]["value"] for c in "abcd"] == [4.0, 10.0, None, 0.0]
    assert got[("c", 0, "length")]["error"] == "RuntimeError: cannot score this one"
    assert summary["metrics"]["length"]["failures"] == 1
    assert [got[(c, 0, "slow")]["value"] for c in "ab"] == [2.0, 5.0]
    assert got[("b", 0, "slow")]["explanation"] == "5 chars"
    assert [got[(c, 0, "short")]["value"] for c in "abcd"] == [1.0, 0.0, 0.0, 0.0]
    assert summary["metrics"]["short"]["higher_is_better"] is False
    assert got[("a", 0, "half")]["value"] is None
    assert "binary scorer returned 0.5" in got[("a", 0, "half")]["error"]
    assert "expected a number" in got[("a", 0, "weird")]["error"]
    assert got[("a", 0, "as_score")]["value"] == 2.0
    assert got[("a", 0, "as_score")]["explanation"] == "why"


def test_python_kind_bad_function_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build([{"name": "x", "kind": "python", "function": "no_such_module_zz:f"},
               {"name": "y", "kind": "python"}], base_dir=tmp_path)
    assert len(e.value.problems) == 2
    assert "no_such_module_zz" in e.value.problems[0]
    assert "function: required field is missing" in e.value.problems[1]


def test_entry_point_plugin_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "ep_plugin_zz.py"
    pkg.write_text(textwrap.dedent("""
        from synthloop.schema import Score

        class Shouty:
            kind = "binary"
            def __init__(self, name):
                self.name = name
            def score(self, case, response):
                return Score(case_id=case.case_id, metric=self.name,
                             value=float((response.output or "").isupper()), kind="binary")

        def factory(config, *, base_dir):
            return Shouty(config["name"])
    """))
    dist = tmp_path / "ep_plugin_zz-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-zz\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[synthloop.scorers]\nshouty = ep_plugin_zz:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_read", False)
    try:
        s = one({"name": "loud", "kind": "shouty"})
        assert s.score(case("a"), ok("a", "HEY")).value == 1.0
        assert "shouty" in registry.names()
    finally:
        registry._lazy.pop("shouty", None)
        registry._loaded.pop("shouty", None)


# --------------------------------------------------------------------------- runner
def _basic_run(tmp_path: Path) -> Path:
    cases = [case("a", ["Paris"]), case("b", ["Rome"]), case("c", ["Oslo"])]
    res = [ok("a", "Paris"), ok("b", "Milan"), failed("c")]
    return make_run(tmp_path, cases, res)


def test_minimal_config_from_the_issue_works_as_is(tmp_path: Path) -> None:
    run = _basic_run(tmp_path)
    cfg = tmp_path / "SCORERS.yaml"
    cfg.write_text("# SCORERS.yaml\nscorers:\n  - name: correct\n    kind: exact_match"
                   "        # output equals the case's first good reference, after trimming\n")
    summary = score_run(run, cfg)
    m = summary["metrics"]["correct"]
    assert (m["mean"], m["n"], m["failures"], m["kind"]) == (pytest.approx(1 / 3), 3, 0, "binary")
    rows = pq.read_table(run / "scores.parquet").to_pylist()
    assert [(r["case_id"], r["metric"], r["value"]) for r in rows] == [
        ("a", "correct", 1.0), ("b", "correct", 0.0), ("c", "correct", 0.0)]
    doc = json.loads((run / "scores.json").read_text())
    assert doc["metrics"]["correct"]["higher_is_better"] is True
    assert doc["scorers"]["correct"]["kind"] == "exact_match"
    assert doc["run"]["no_output"] == 1


def test_rescoring_replaces_same_names_keeps_others_and_drops_stale(tmp_path: Path) -> None:
    run = _basic_run(tmp_path)
    score_run(run, ScorersConfig.from_data({"scorers": [
        {"name": "correct", "kind": "exact_match"}, {"name": "f1", "kind": "token_f1"}]}))
    summary = score_run(run, ScorersConfig.from_data({"scorers": [
        {"name": "correct", "kind": "exact_match", "case_sensitive": False},
        {"name": "lat", "kind": "latency"}]}))
    assert summary["kept"] == ["f1"]
    got = read_scores(run)
    assert sorted({k[2] for k in got}) == ["correct", "f1", "lat"]
    assert len(got) == 9
    doc = json.loads((run / "scores.json").read_text())
    assert set(doc["metrics"]) == {"correct", "f1", "lat"}
    assert doc["scorers"]["correct"]["case_sensitive"] is False
    # replay again (different responses): metrics not re-scored now are stale and dropped
    RunDir(run).write_responses([ok("a", "Paris"), ok("b", "Rome"), ok("c", "Oslo")])
    summary = score_run(run, ScorersConfig.from_data({"scorers": [
        {"name": "correct", "kind": "exact_match"}]}))
    assert summary["dropped_stale"] == ["f1", "lat"] and summary["kept"] == []
    assert {k[2] for k in read_scores(run)} == {"correct"}
    assert summary["metrics"]["correct"]["mean"] == 1.0


def test_repeated_samples_are_scored_separately(tmp_path: Path) -> None:
    cases = [case("a", ["yes"])]
    res = [ok("a", "yes", sample=0), ok("a", "no", sample=1), failed("a", sample=2)]
    run = make_run(tmp_path, cases, res)
    score_run(run, ScorersConfig.from_data({"scorers": [{"name": "m", "kind": "exact_match"}]}))
    got = read_scores(run)
    assert [got[("a", s, "m")]["value"] for s in range(3)] == [1.0, 0.0, 0.0]


def test_bad_config_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    run = _basic_run(tmp_path)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent("""
        scorers:
          - {name: a, kind: exact_mach}
          - {name: b, kind: regex}
          - {name: c, kind: token_f1, treshold: 0.5}
          - {name: a, kind: latency}
          - {kind: contains}
        concurency: 3
    """))
    with pytest.raises(ConfigError) as e:
        score_run(run, cfg)
    text = str(e.value)
    assert "scorers: duplicate metric name 'a'" in text
    assert "did you mean `exact_match`?" in text and "pattern: required field" in text
    assert "scorers[4].name: required field is missing" in text
    assert "concurency: unknown key (did you mean `concurrency`?)" in text
    assert not (run / "scores.parquet").exists() and not (run / "scores.json").exists()
    cfg.write_text(textwrap.dedent("""
        scorers:
          - {name: a, kind: exact_mach}
          - {name: b, kind: regex}
          - {name: c, kind: token_f1, treshold: 0.5}
    """))
    with pytest.raises(ConfigError) as e:
        score_run(run, cfg)
    problems = e.value.problems
    assert len(problems) == 3
    assert "scorers[0] 'a'" in problems[0] and "did you mean `exact_match`?" in problems[0]
    assert "scorers[1] 'b': pattern: required field is missing" in problems[1]
    assert "scorers[2] 'c': treshold: unknown key (did you mean `threshold`?)" in problems[2]
    assert all(str(cfg) in p for p in problems)
    assert not (run / "scores.parquet").exists()


def test_run_problems_are_data_errors(tmp_path: Path) -> None:
    cfg = ScorersConfig.from_data({"scorers": [{"name": "m", "kind": "exact_match"}]})
    with pytest.raises(DataError, match="not a run directory"):
        score_run(tmp_path / "missing", cfg)
    empty = make_run(tmp_path, [case("a", ["x"])], [], name="empty")
    with pytest.raises(DataError, match="no responses: nothing to score"):
        score_run(empty, cfg)
    unfinished = make_run(tmp_path, [case("a", ["x"])], [ok("a", "x")], name="unfinished")
    (unfinished / "responses.parquet").unlink()
    with pytest.raises(DataError, match="no responses.parquet"):
        score_run(unfinished, cfg)
    other = make_run(tmp_path, [case("a", ["x"])], [ok("zzz", "x")], name="other")
    with pytest.raises(DataError, match="1 responses refer to cases not in"):
        score_run(other, cfg)
    # the evalset moved: --evalset points at it; a different version is refused
    moved = make_run(tmp_path, [case("a", ["x"])], [ok("a", "x")], name="moved")
    ev = tmp_path / "moved-evalset"
    ev.rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="--evalset"):
        score_run(moved, cfg)
    assert score_run(moved, cfg, evalset=tmp_path / "elsewhere")["metrics"]["m"]["mean"] == 1.0
    make_evalset(tmp_path / "v2", [case("a", ["y"])])
    with pytest.raises(DataError, match="was replayed on"):
        score_run(moved, cfg, evalset=tmp_path / "v2")


class _ManyPlugin:
    """A vectorised plugin whose batch call fails on one case: cases are isolated."""

    kind = "continuous"

    def __init__(self, name: str) -> None:
        self.name = name
        self.batch_calls = 0

    def _value(self, response: Response) -> float:
        if response.output == "poison":
            raise ValueError("poisoned")
        return float(len(response.output or ""))

    def score(self, case: EvalCase, response: Response) -> Score:
        return Score(case_id=case.case_id, metric=self.name, value=self._value(response))

    def score_many(self, cases: list[EvalCase], responses: list[Response]) -> list[Score]:
        self.batch_calls += 1
        return [self.score(c, r) for c, r in zip(cases, responses, strict=True)]


def test_vectorised_failure_falls_back_to_per_case(tmp_path: Path) -> None:
    made: list[_ManyPlugin] = []

    def factory(config: dict[str, Any], *, base_dir: Path) -> _ManyPlugin:
        made.append(_ManyPlugin(config["name"]))
        return made[-1]

    registry.register("test_many", factory)
    try:
        cases = [case(c) for c in "abc"]
        run = make_run(tmp_path, cases, [ok("a", "aa"), ok("b", "poison"), ok("c", "ccc")])
        summary = score_run(run, ScorersConfig.from_data(
            {"scorers": [{"name": "len", "kind": "test_many"}]}))
        got = read_scores(run)
        assert [got[(c, 0, "len")]["value"] for c in "abc"] == [2.0, None, 3.0]
        assert got[("b", 0, "len")]["error"] == "ValueError: poisoned"
        assert summary["metrics"]["len"]["first_failure"] == "ValueError: poisoned"
        assert made[0].batch_calls == 1
    finally:
        registry._loaded.pop("test_many", None)


def test_a_synthloop_error_from_a_scorer_stops_the_run_and_writes_nothing(tmp_path: Path) -> None:
    class Abort:
        kind = "binary"
        name = "abort"

        async def score(self, case: EvalCase, response: Response) -> Score:
            await asyncio.sleep(0)
            raise TargetError("credentials refused")

    registry.register("test_abort", lambda config, *, base_dir: Abort())
    try:
        run = _basic_run(tmp_path)
        with pytest.raises(TargetError, match="credentials refused"):
            score_run(run, ScorersConfig.from_data({"scorers": [
                {"name": "x", "kind": "exact_match"}, {"name": "abort", "kind": "test_abort"}]}))
        assert not (run / "scores.parquet").exists()
    finally:
        registry._loaded.pop("test_abort", None)


def test_secrets_never_reach_scores_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", "sk-very-secret-123")
    run = _basic_run(tmp_path)
    (tmp_path / "mod_secret_zz.py").write_text("def f(case, response, **kw):\n    return 1.0\n")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(textwrap.dedent("""
        scorers:
          - name: p
            kind: python
            function: mod_secret_zz:f
            params: {api_key: "${MY_SECRET_TOKEN}", note: "uses ${MY_SECRET_TOKEN}"}
    """))
    score_run(run, cfg)
    text = (run / "scores.json").read_text()
    assert "sk-very-secret-123" not in text
    assert ss.redact({"api_key": "x", "api_key_env": "OPENAI_API_KEY", "headers": {
        "Authorization": "Bearer y"}, "note": "has sk-abcd inside"}, ["sk-abcd"]) == {
        "api_key": ss._runner.REDACTED, "api_key_env": "OPENAI_API_KEY",
        "headers": {"Authorization": ss._runner.REDACTED}, "note": "has ***redacted*** inside"}


def test_history_and_tags_reach_custom_scorers(tmp_path: Path) -> None:
    seen: list[EvalCase] = []

    @ss.scorer(name="test_seen", register=False)
    def record(c: EvalCase, r: Response) -> float:
        seen.append(c)
        return 1.0

    registry.register("test_seen", record)
    try:
        c = case("a", ["x"], history=[Message(role="user", content="hi")], tags={"intent": "faq"})
        run = make_run(tmp_path, [c], [ok("a", "x")])
        score_run(run, ScorersConfig.from_data({"scorers": [{"name": "s", "kind": "test_seen"}]}))
        assert seen[0].history[0].content == "hi" and seen[0].tags == {"intent": "faq"}
    finally:
        registry._loaded.pop("test_seen", None)


def test_incomplete_run_is_scored_with_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path, [case("a", ["x"])], [ok("a", "x")], status="interrupted")
    summary = score_run(run, ScorersConfig.from_data(
        {"scorers": [{"name": "m", "kind": "exact_match"}]}))
    assert summary["warnings"] and "interrupted" in summary["warnings"][0]


def test_example_configs_load(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    paths = sorted((repo_root / "configs").glob("scorers*.yaml"))
    assert len(paths) >= 2
    for p in paths:
        cfg, built = ss._runner.load_and_build(p)
        assert [s.name for s in built] == [e.name for e in cfg.scorers]
