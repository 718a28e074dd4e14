"""The config loader: every problem at once, with file, field path and did-you-mean; ${ENV}."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from synthloop.config import (
    file_hash,
    interpolate_env,
    load_model,
    parse_document,
    read_text,
    validate_data,
)
from synthloop.errors import EXIT_USAGE, ConfigError


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(default=3, ge=1)
    """How many tries."""
    backoff_s: float = 1.0
    """Seconds between tries."""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    """Target name."""
    endpoint: str
    """URL."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """Sampling temperature."""
    retry: Retry = Field(default_factory=Retry)
    """Retry policy."""


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[Target]
    """Models to compare."""
    seed: int = 0
    """Random seed."""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_file_loads(tmp_path: Path) -> None:
    p = write(tmp_path, "targets:\n  - name: a\n    endpoint: http://x\n    retry: {attempts: 5}\n")
    cfg = load_model(p, Pipeline)
    assert cfg.targets[0].retry.attempts == 5 and cfg.seed == 0


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    p = write(tmp_path, """
seed: seven
targets:
  - name: a
    endpoint: http://x
    temprature: 0.5
  - name: b
    temperature: 3
    retry: {attempts: 0, backof_s: 2}
""")
    with pytest.raises(ConfigError) as ei:
        load_model(p, Pipeline)
    e = ei.value
    assert e.exit_code == EXIT_USAGE
    assert str(e.message) == f"{p}: 6 problems"
    src = str(p)
    assert sorted(e.problems) == sorted([
        f"{src}: seed: Input should be a valid integer, unable to parse string as an integer "
        "(got 'seven')",
        f"{src}: targets[0].temprature: unknown key (did you mean `temperature`?)",
        f"{src}: targets[1].endpoint: required field is missing (add it)",
        f"{src}: targets[1].temperature: Input should be less than or equal to 2 (got 3)",
        f"{src}: targets[1].retry.attempts: Input should be greater than or equal to 1 (got 0)",
        f"{src}: targets[1].retry.backof_s: unknown key (did you mean `backoff_s`?)",
    ])
    # the CLI prints the head line and one line per problem
    assert str(e).splitlines()[0] == f"{src}: 6 problems"
    assert len(str(e).splitlines()) == 7


def test_single_problem_is_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, "targets: []\nsede: 3\n")
    with pytest.raises(ConfigError) as ei:
        load_model(p, Pipeline)
    assert str(ei.value) == f"{p}: sede: unknown key (did you mean `seed`?)"


def test_unknown_key_without_close_match_lists_known_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "targets: []\nzzz: 1\n")
    with pytest.raises(ConfigError, match=r"zzz: unknown key \(known keys: targets, seed\)"):
        load_model(p, Pipeline)


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EP_HOST", "example.test")
    p = write(tmp_path, "targets:\n  - name: ${NAME:-fallback}\n"
                        "    endpoint: https://${EP_HOST}/v1\n")
    t = load_model(p, Pipeline).targets[0]
    assert (t.name, t.endpoint) == ("fallback", "https://example.test/v1")
    assert load_model(p, Pipeline, env=False).targets[0].endpoint == "https://${EP_HOST}/v1"


def test_missing_env_var_names_file_field_and_fix(tmp_path: Path) -> None:
    p = write(tmp_path, "targets:\n  - name: a\n    endpoint: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError) as ei:
        load_model(p, Pipeline)
    assert str(ei.value) == (f"{p}: targets[0].endpoint: environment variable NOT_SET_ANYWHERE "
                             "is not set (export NOT_SET_ANYWHERE=... or write "
                             "${NOT_SET_ANYWHERE:-default})")


def test_interpolate_env_walks_nested_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A", "1")
    missing: list[str] = []
    out = interpolate_env({"x": ["${A}", {"y": "${B}"}], "n": 3}, missing=missing)
    assert out == {"x": ["1", {"y": "${B}"}], "n": 3}
    assert missing == ["x[1].y: environment variable B is not set (export B=... or write "
                       "${B:-default})"]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "targets:\n  - name: a\n   endpoint: [unclosed\n")
    with pytest.raises(ConfigError) as ei:
        load_model(p, Pipeline)
    assert str(ei.value).startswith(f"{p}: line 3, column")
    assert "invalid YAML" in str(ei.value)


def test_toml_is_supported(tmp_path: Path) -> None:
    p = write(tmp_path, 'seed = 4\n[[targets]]\nname = "a"\nendpoint = "http://x"\n', "p.toml")
    assert load_model(p, Pipeline).seed == 4
    bad = write(tmp_path, "seed = = 4\n", "bad.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_model(bad, Pipeline)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_model(tmp_path / "nope.yaml", Pipeline)
    assert str(ei.value) == f"{tmp_path / 'nope.yaml'}: config file not found (check the path)"
    with pytest.raises(ConfigError, match="is a directory"):
        read_text(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read") as ei:
        parse_document(binary)
    assert "not UTF-8 text (byte 0" in str(ei.value) and "save the config file as UTF-8" in str(ei.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level, got list"):
        load_model(p, Pipeline)
    with pytest.raises(ConfigError, match="targets: required field is missing"):
        load_model(write(tmp_path, "", "empty.yaml"), Pipeline)


def test_validate_data_uses_the_given_source_name() -> None:
    with pytest.raises(ConfigError) as ei:
        validate_data({"targets": [{"name": "a"}]}, Pipeline, "inline config")
    assert str(ei.value) == "inline config: targets[0].endpoint: required field is missing (add it)"


def test_file_hash(tmp_path: Path) -> None:
    import hashlib

    p = write(tmp_path, "abc", "f.txt")
    assert file_hash(p) == hashlib.sha256(b"abc").hexdigest()


# --------------------------------------------------------------------------- the wrong kind of file
WRONG_FILES = [
    # (command line, the file passed, what it is, what the command reads)
    (["generate", "configs/quickstart.yaml", "--out", "OUT"], "configs/quickstart.yaml",
     "a pipeline file (for `synthloop run`)", "a generator spec"),
    (["run", "generators/support_assistant.yaml", "--check"], "generators/support_assistant.yaml",
     "a generator spec (for `synthloop generate`)", "a pipeline file"),
    (["run", "generators/sdv_example.yaml", "--check"], "generators/sdv_example.yaml",
     "a generator spec (for `synthloop generate`)", "a pipeline file"),
    (["ingest", "logs.csv", "--mapping", "configs/targets/demo-v1.yaml", "--out", "OUT"],
     "configs/targets/demo-v1.yaml", "a target file (for `synthloop replay --target`)",
     "an ingest mapping"),
    (["score", "RUN", "--scorers", "configs/policy.yaml"], "configs/policy.yaml",
     "a gate policy (for `synthloop gate --policy`)", "a scorers file"),
    (["run", "configs/mappings/chat_logs.yaml", "--check"], "configs/mappings/chat_logs.yaml",
     "an ingest mapping (for `synthloop ingest --mapping`)", "a pipeline file"),
    (["replay", "--evalset", "evalsets/support/v1", "--target", "configs/policy.yaml", "--out",
      "OUT"], "configs/policy.yaml", "a gate policy (for `synthloop gate --policy`)",
     "a target file"),
    (["generate", "configs/targets/demo-v1.yaml", "--out", "OUT"], "configs/targets/demo-v1.yaml",
     "a target file (for `synthloop replay --target`)", "a generator spec"),
]


@pytest.mark.parametrize(("argv", "path", "looks_like", "expected"), WRONG_FILES,
                         ids=[f"{w[0][0]}-{Path(w[1]).name}" for w in WRONG_FILES])
def test_a_config_of_another_kind_gets_one_line_naming_its_kind(
        argv: list[str], path: str, looks_like: str, expected: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from synthloop.cli import main
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    (tmp_path / "logs.csv").write_text("a,b\n1,2\n")
    (tmp_path / "RUN").mkdir()
    argv = [str(tmp_path / "out") if a == "OUT" else str(tmp_path / a)
            if a in ("logs.csv", "RUN") else a for a in argv]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"synthloop: error: {path}: looks like {looks_like}, not "
                                f"{expected} (check the path, or pass it to the command named)"]
    assert not (tmp_path / "out").exists()


def test_gate_policy_given_a_scorers_file_says_so() -> None:
    from synthloop.gate import load_policy
    from tests.conftest import REPO

    with pytest.raises(ConfigError) as e:
        load_policy(REPO / "configs" / "scorers.yaml")
    assert "looks like a scorers file (for `synthloop score --scorers`), not a gate policy" in \
        str(e.value)


def test_a_genuine_typo_still_lists_every_problem(tmp_path: Path) -> None:
    from synthloop.pipeline import load_pipeline

    p = tmp_path / "p.yaml"
    # the keys of a pipeline, one misspelt: not another kind, so the full list with hints
    p.write_text("evalset: {generate: s.yaml}\ntargets: {baseline: a.yaml, candidates: [b.yaml]}\n"
                 "scorers: s.yaml\npolicy: p.yaml\nworkdri: w\nconcurency: 2\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    assert "looks like" not in str(e.value)
    assert any("workdri: unknown key (did you mean `workdir`?)" in x for x in e.value.problems)
    assert len(e.value.problems) == 2
    # a policy with a misspelt key is still a policy
    p.write_text("rules: [{metric: x, max_drop: 0.1}]\nmin_case: 3\n")
    from synthloop.gate import load_policy

    with pytest.raises(ConfigError, match="did you mean `min_cases`"):
        load_policy(p)
