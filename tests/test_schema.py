"""The nouns: unknown fields are rejected, JSON Schemas export, consent semantics hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from synthloop import schema
from synthloop.cli import main
from synthloop.cli._schema import MODELS
from synthloop.schema import (
    Consent,
    EvalCase,
    Feedback,
    Interaction,
    TargetFingerprint,
    Thumb,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_forbids_unknown_fields(name: str) -> None:
    model = MODELS[name]
    assert model.model_config.get("extra") == "forbid"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({"definitely_not_a_field": 1})


def test_nested_models_forbid_unknown_fields_too() -> None:
    with pytest.raises(ValidationError) as ei:
        EvalCase.model_validate({"case_id": "a", "input": "x",
                                 "expected_feedback": {"thumb": "up", "thumbs": 1}})
    assert ei.value.errors()[0]["loc"] == ("expected_feedback", "thumbs")


def test_feedback_defaults_and_explicit() -> None:
    fb = Feedback()
    assert fb.thumb is Thumb.none and not fb.explicit
    assert Feedback(thumb="up").explicit
    assert Feedback(rating=2).explicit
    assert Feedback(comment="meh").explicit
    assert not Feedback(comment="", clicks=3, copied=True).explicit
    with pytest.raises(ValidationError):
        Feedback(rating=6)
    with pytest.raises(ValidationError):
        Feedback(thumb="sideways")
    with pytest.raises(ValidationError):
        Feedback(read_time_s=-1)


def test_consent_allows_semantics() -> None:
    c = Consent(uses=["analytics", "synthetic_fit"], granted_at=T0)
    assert c.allows("analytics")
    assert not c.allows("training")
    assert not c.allows("analytics", at=T0 - timedelta(seconds=1))
    assert c.allows("analytics", at=T0)
    revoked = Consent(uses=["training"], granted_at=T0, revoked_at=T0 + timedelta(days=2))
    assert revoked.allows("training", at=T0 + timedelta(days=1))
    assert not revoked.allows("training", at=T0 + timedelta(days=2))
    assert not revoked.allows("training")  # revoked now
    assert not Consent().allows("analytics")
    assert Consent(uses=["analytics"]).allows("analytics", at=T0)


def test_interaction_round_trips_json() -> None:
    it = Interaction(interaction_id="i1", session_id="s1", user_id="u1", timestamp=T0,
                     input="hi", feedback=Feedback(thumb="down", regenerated=True),
                     consent=Consent(uses=["analytics"]), tags={"intent": "greet"})
    assert Interaction.model_validate_json(it.model_dump_json()) == it
    assert it.schema_version == schema.SCHEMA_VERSION


def test_fingerprint_digest_is_stable_and_has_no_secret_field() -> None:
    fp = TargetFingerprint(kind="openai", endpoint="http://127.0.0.1:1/v1", model="m",
                           parameters={"temperature": 0})
    same = TargetFingerprint(kind="openai", endpoint="http://127.0.0.1:1/v1", model="m",
                             parameters={"temperature": 0})
    assert fp.digest() == same.digest()
    assert fp.digest() != fp.model_copy(update={"model": "m2"}).digest()
    assert not any("key" in f for f in TargetFingerprint.model_fields)
    with pytest.raises(ValidationError):
        TargetFingerprint.model_validate({"kind": "openai", "api_key": "sk-x"})


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "feedback"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == Feedback.model_json_schema()
    assert printed["additionalProperties"] is False
    jsonschema.validate(Feedback(thumb="up", rating=4).model_dump(mode="json"), printed)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"thumb": "up", "bogus": 1}, printed)


def test_schema_command_writes_every_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert main(["schema", "--out", str(tmp_path / "schemas")]) == 0
    assert f"wrote {len(MODELS)} schemas" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert files == sorted(f"{n}.schema.json" for n in MODELS)
    ev_schema = json.loads((tmp_path / "schemas" / "evalcase.schema.json").read_text())
    case = EvalCase(case_id="c", input="x", tags={"a": "b"}, expected_feedback=Feedback())
    jsonschema.validate(case.model_dump(mode="json"), ev_schema)


def test_unknown_schema_model_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["schema", "nonsense"])
    assert ei.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
