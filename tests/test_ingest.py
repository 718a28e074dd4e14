"""`synthloop ingest`: mapping, validation, quarantine, the fixed output format, bad input."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthloop.cli import main
from synthloop.errors import ConfigError, DataError
from synthloop.ingest import SAMPLE_SCHEMA, ingest, read_manifest, read_report, read_sample
from synthloop.privacy import luhn_valid
from tests.conftest import run_cli

# The minimal mapping of the issue, verbatim: it must work as it is.
MAPPING_YAML = """\
# MAPPING.yaml: Interaction field <- log column
format: csv
columns:
  user_id: uid
  session_id: sid
  timestamp: ts
  input: prompt
  intent: topic
  feedback.thumb: thumb                  # up / down / empty
  feedback.read_time_s: read_s
  consent.synthetic_fit: consent_synth   # true / false
"""
FIELDS = ["uid", "sid", "ts", "prompt", "topic", "thumb", "read_s", "consent_synth"]
OUTPUT_FILES = {"sample.parquet", "report.json", "quarantine.jsonl", "manifest.json"}
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers
def write_mapping(tmp: Path, text: str = MAPPING_YAML, name: str = "mapping.yaml") -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


def make_rows(users: int = 30, sessions: int = 2, turns: int = 3, seed: int = 0,
              consent: str = "true") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for u in range(users):
        for s in range(sessions):
            start = T0 + timedelta(days=u, hours=s)
            for t in range(turns):
                rows.append({
                    "uid": f"user{u}", "sid": f"user{u}-s{s}",
                    "ts": (start + timedelta(minutes=t)).isoformat().replace("+00:00", "Z"),
                    "prompt": f"question {rng.randint(1, 500)} about {rng.choice(['plans', 'bills', 'code'])}",
                    "topic": rng.choice(["billing", "support", "chat"]),
                    "thumb": rng.choice(["up", "down", "", "", ""]),
                    "read_s": f"{rng.uniform(0, 60):.2f}",
                    "consent_synth": consent,
                })
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] = FIELDS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def written_text(out: Path) -> str:
    """Everything written under `out` as text (Parquet read back, every value stringified)."""
    parts: list[str] = []
    for f in sorted(out.rglob("*")):
        if f.is_dir():
            continue
        if f.suffix == ".parquet":
            table = pq.read_table(f)
            for col in table.columns:
                parts.extend(str(v) for v in col.to_pylist())
            parts.extend(table.column_names)
        else:
            parts.append(f.read_text(encoding="utf-8"))
    return "\n".join(parts)


def assert_absent(out: Path, needles: list[str]) -> None:
    text = written_text(out)
    raw = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file())
    for needle in needles:
        assert needle not in text, f"{needle!r} was written under {out}"
        assert needle.encode() not in raw, f"{needle!r} is in the bytes under {out}"


def luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_valid(prefix + d):
            return prefix + d
    raise AssertionError


def nothing_written(tmp: Path, out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in tmp.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    assert leftovers == []


# --------------------------------------------------------------------------- the contract
def test_minimal_mapping_from_the_issue_works_as_is(tmp_path: Path) -> None:
    rows = make_rows(users=10)
    rows[0]["consent_synth"] = "false"
    logs = write_csv(tmp_path / "logs.csv", rows)
    report = ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES

    c = report.counts
    assert (c.read, c.invalid, c.excluded_consent, c.used) == (60, 0, 1, 59)
    assert (c.users_used, c.sessions_used, c.users_excluded_consent) == (10, 20, 1)
    assert report.consent.model_dump() == {
        "use": "synthetic_fit", "basis": "column:consent_synth", "assumed": False,
        "excluded_reasons": {"not_granted": 1}, "policy_versions": []}
    assert set(report.pii) == {"email", "phone", "card", "iban", "ip", "url_token", "name"}
    assert report.source.format == "csv" and len(report.source.sha256) == 64

    # report.json is the returned report; manifest adds provenance
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(report.model_dump_json())
    assert set(on_disk) >= {"counts", "consent", "pii", "source", "mapping_hash", "columns"}
    manifest = read_manifest(out)
    assert manifest.kind == "synthloop.ingest" and manifest.package_version
    assert manifest.mapping_hash == report.mapping_hash
    assert set(manifest.files) == {"sample.parquet", "report.json", "quarantine.jsonl"}
    assert (out / "quarantine.jsonl").read_text() == ""

    # the fixed Parquet schema: every column present, unmapped ones null (thumb "none")
    table = pq.read_table(out / "sample.parquet")
    assert table.schema.names == SAMPLE_SCHEMA.names == report.columns
    for field in SAMPLE_SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    df = read_sample(out)
    assert len(df) == 59
    assert not any(c.startswith("consent") for c in df.columns)
    for col in ["persona", "locale", "context", "output", "model_version", "latency_ms",
                "feedback.rating", "feedback.comment", "feedback.clicks", "feedback.copied"]:
        assert df[col].isna().all(), col
    assert set(df["feedback.thumb"]) <= {"up", "down", "none"} and "none" in set(df["feedback.thumb"])
    assert str(df["timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(df["turn"].dtype) == "Int64" and str(df["feedback.copied"].dtype) == "boolean"
    first = df.iloc[0]
    # turns count the used rows of a session (the excluded first row is not there at all)
    assert (first["session_id"], first["user_id"], first["turn"]) == ("user0-s0", "user0", 0)
    assert first["interaction_id"] == "user0-s0-0"
    assert first["intent"] == rows[1]["topic"] and first["input"] == rows[1]["prompt"]
    assert first["feedback.read_time_s"] == pytest.approx(float(rows[1]["read_s"]))
    assert report.mapped["input"] == "prompt" and "consent.synthetic_fit" not in report.mapped


def test_output_is_deterministic(tmp_path: Path) -> None:
    logs = write_csv(tmp_path / "logs.csv", make_rows(users=5))
    mapping = write_mapping(tmp_path)
    ingest(logs, mapping, tmp_path / "a")
    ingest(logs, mapping, tmp_path / "b")
    assert pq.read_table(tmp_path / "a" / "sample.parquet").equals(
        pq.read_table(tmp_path / "b" / "sample.parquet"))
    assert (tmp_path / "a" / "report.json").read_bytes() == (tmp_path / "b" / "report.json").read_bytes()


def test_turn_and_ids_generated_by_timestamp_then_line(tmp_path: Path) -> None:
    rows = make_rows(users=2, sessions=1, turns=4)
    rows.reverse()  # the log is out of order; turns follow time, not file order
    logs = write_csv(tmp_path / "logs.csv", rows)
    ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    df = read_sample(tmp_path / "out")
    for _, g in df.groupby("session_id"):
        assert list(g.sort_values("timestamp")["turn"]) == [0, 1, 2, 3]
        assert all(i == f"{s}-{t}" for i, s, t in zip(g["interaction_id"], g["session_id"],
                                                        g["turn"], strict=True))
    # no session/user columns: each row is its own session, user = session
    text = "format: csv\ncolumns: {input: prompt}\nconsent: {assume: true, basis: test data}\n"
    ingest(logs, write_mapping(tmp_path, text, "m2.yaml"), tmp_path / "out2")
    df2 = read_sample(tmp_path / "out2")
    assert list(df2["session_id"]) == [f"row-{i}" for i in range(2, 10)]
    assert (df2["user_id"] == df2["session_id"]).all() and (df2["turn"] == 0).all()
    assert df2["timestamp"].isna().all()


# --------------------------------------------------------------------------- PII
def test_pii_planted_in_one_percent_of_prompts_is_in_no_written_file(tmp_path: Path) -> None:
    rng = random.Random(11)
    rows = make_rows(users=100, sessions=2, turns=10, seed=3)  # 2,000 rows
    planted: list[str] = []
    decoys: list[str] = []
    picks = rng.sample(range(len(rows)), 40)
    for k, i in enumerate(picks[:20]):  # 1 % of prompts carry PII
        kind = k % 3
        if kind == 0:
            value = f"person{k}.x{rng.randint(100, 999)}@mail{k}.example.org"
        elif kind == 1:
            value = f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
        else:
            digits = luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14)))
            value = " ".join(digits[j:j + 4] for j in range(0, 16, 4)) if k % 2 else digits
        planted.append(value)
        rows[i]["prompt"] += f" contact {value} thanks"
    for i in picks[20:30]:  # Luhn-invalid decoys: not PII, must stay
        good = luhn_complete("5" + "".join(str(rng.randint(0, 9)) for _ in range(14)))
        decoy = good[:-1] + str((int(good[-1]) + 3) % 10)
        decoys.append(decoy)
        rows[i]["prompt"] += f" order {decoy}"
    # PII in an invalid row (quarantined) and in a non-consenting row (dropped)
    bad_secret = "quarantined.person@example.net"
    rows[picks[30]]["prompt"] += f" {bad_secret}"
    rows[picks[30]]["read_s"] = "not-a-number"
    dropped_secret = "never.consented@example.net"
    rows[picks[31]]["prompt"] += f" {dropped_secret}"
    rows[picks[31]]["consent_synth"] = "false"

    logs = write_csv(tmp_path / "logs.csv", rows)
    report = ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    out = tmp_path / "out"
    assert_absent(out, [*planted, bad_secret, dropped_secret])
    assert report.pii["email"] == 7 + 1  # seven planted + the quarantined row's
    assert report.pii["phone"] == 7 and report.pii["card"] == 6
    assert report.pii_by_column["quarantine"] == {"email": 1}
    df = read_sample(out)
    text = " ".join(df["input"])
    for decoy in decoys:
        assert decoy in text
    assert text.count("<EMAIL>") == 7 and text.count("<PHONE>") == 7 and text.count("<CARD>") == 6
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == 1 and "<EMAIL>" in q[0]["row"]["prompt"]


def test_faker_surrogates_are_consistent_within_a_session(tmp_path: Path) -> None:
    rows = make_rows(users=2, sessions=2, turns=2)
    for r in rows:
        r["prompt"] = "reach me at jane.roe@example.com or ask Jane Roe"
    logs = write_csv(tmp_path / "logs.csv", rows)
    text = MAPPING_YAML + "pii:\n  replace: faker\n  seed: 5\n  names: [Jane Roe]\n"
    report = ingest(logs, write_mapping(tmp_path, text), tmp_path / "out")
    df = read_sample(tmp_path / "out")
    assert_absent(tmp_path / "out", ["jane.roe@example.com", "Jane Roe"])
    assert report.pii_replace == "faker" and report.pii["name"] == 8
    per_session = df.groupby("session_id")["input"].nunique()
    assert (per_session == 1).all()  # same surrogates within a session
    assert df.groupby("session_id")["input"].first().nunique() == 4  # differ across sessions
    assert all("@" in t for t in df["input"])


def test_ids_holding_pii_become_pseudonyms(tmp_path: Path) -> None:
    rows = make_rows(users=3, sessions=1, turns=2)
    for r in rows:
        r["uid"] = r["uid"] + "@example.com"
    logs = write_csv(tmp_path / "logs.csv", rows)
    report = ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    df = read_sample(tmp_path / "out")
    assert_absent(tmp_path / "out", ["user0@example.com", "user1@example.com"])
    assert df["user_id"].str.startswith("user-").all() and df["user_id"].nunique() == 3
    assert report.counts.users_used == 3 and report.pii_by_column["user_id"] == {"email": 6}


# --------------------------------------------------------------------------- quarantine
def test_quarantine_line_numbers_csv(tmp_path: Path) -> None:
    header = ",".join(FIELDS)
    lines = [
        header,                                                                     # 1
        'u1,s1,2024-01-01T10:00:00Z,"a prompt that spans',                          # 2
        'two lines",chat,up,1.5,true',                                              # 3
        "u1,s1,2024-01-01T10:01:00Z,ok,chat,,2,true",                               # 4
        "",                                                                         # 5 blank
        "u2,s2,yesterday,bad time mail me x@y.org,chat,up,1,true",                  # 6
        "u2,s2,2024-01-01T10:03:00Z,too,many,fields,here,1,true",                   # 7
        "u3,s3,2024-01-01T10:04:00Z,bad thumb,chat,meh,-4,true",                    # 8
        "u4,s4,2024-01-01T10:05:00Z,,chat,up,1,true",                               # 9 no input
        "u5,s5,bad,not consenting and bad,chat,meh,x,false",                        # 10
    ] + [f"u9,s9,2024-01-02T00:{i:02d}:00Z,fine {i},chat,down,3,true" for i in range(20)]
    logs = tmp_path / "logs.csv"
    logs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest(logs, write_mapping(tmp_path, MAPPING_YAML + "max_invalid: 0.2\n"),
                    tmp_path / "out")
    q = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [e["line"] for e in q] == [6, 7, 8, 9]
    by_line = {e["line"]: e for e in q}
    assert by_line[6]["errors"] == [
        "timestamp: cannot parse 'yesterday' as a time (ISO 8601 expected; set timestamp_format)"]
    assert by_line[6]["row"]["prompt"] == "bad time mail me <EMAIL>"
    assert by_line[7]["row"] is None and "expected 8 fields" in by_line[7]["errors"][0]
    assert sorted(by_line[8]["errors"]) == [
        "feedback.read_time_s: '-4' is negative",
        "feedback.thumb: unknown value 'meh' (add it to thumb_values up/down/none)"]
    assert by_line[9]["errors"] == ["input: missing (column 'prompt' is empty)"]
    c = report.counts
    assert (c.read, c.invalid, c.excluded_consent, c.used) == (27, 4, 1, 22)
    df = read_sample(tmp_path / "out")
    assert df["input"].iloc[0] == "a prompt that spans\ntwo lines"
    assert "not consenting and bad" not in written_text(tmp_path / "out")


def test_quarantine_line_numbers_jsonl_and_parquet_rows(tmp_path: Path) -> None:
    rows = make_rows(users=4, sessions=1, turns=5)
    text_lines = [json.dumps(r) for r in rows]
    text_lines[3] = '{"uid": "u", broken json'
    text_lines[6] = "[1, 2, 3]"
    bad = dict(rows[9], read_s="slow")
    text_lines[9] = json.dumps(bad)
    text_lines.insert(12, "")  # a blank line shifts later line numbers
    logs = tmp_path / "logs.jsonl"
    logs.write_text("\n".join(text_lines) + "\n", encoding="utf-8")
    mapping = MAPPING_YAML.replace("format: csv", "format: jsonl") + "max_invalid: 0.2\n"
    report = ingest(logs, write_mapping(tmp_path, mapping), tmp_path / "out")
    q = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [e["line"] for e in q] == [4, 7, 10]
    assert q[0]["errors"][0].startswith("invalid JSON") and q[0]["row"] is None
    assert q[1]["errors"] == ["expected a JSON object, got list"]
    assert q[2]["errors"] == ["feedback.read_time_s: 'slow' is not a number"]
    assert report.counts.read == 20 and report.counts.used == 17

    # Parquet: the "line" is the 0-based row index
    df = pd.DataFrame(rows)
    df.loc[5, "read_s"] = "oops"
    df.loc[11, "ts"] = "never"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "logs.parquet")
    report = ingest(tmp_path / "logs.parquet",
                    write_mapping(tmp_path, MAPPING_YAML.replace("format: csv", "format: parquet"),
                                  "mp.yaml"), tmp_path / "outp")
    q = [json.loads(x) for x in (tmp_path / "outp" / "quarantine.jsonl").read_text().splitlines()]
    assert [e["line"] for e in q] == [5, 11]
    assert report.source.format == "parquet" and report.counts.used == 18


# --------------------------------------------------------------------------- bad input
def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("malformed_rows", "rows checked are invalid"),
        ("wrong_types", "cannot parse 'last tuesday' as a time"),
        ("missing_column", "columns.input: column 'prompt' is not in"),
        ("empty_consented_set", "no rows left to use: all 60 rows lack consent"),
        ("no_consent_column", "has no consent column for synthetic_fit"),
        ("unknown_mapping_key", "did you mean `feedback.thumb`?"),
        ("log_not_found", "log file not found"),
        ("binary_file", "is not utf-8 text"),
        # the decoder reads ahead in chunks: this used to say "byte 5002" of some chunk
        ("latin1_deep", "is not utf-8 text (line 1101, byte 1 of the line"),
        ("header_only", "no data rows"),
        ("empty_file", "empty file"),
        ("not_parquet", "cannot read as Parquet"),
        # used to list every mapped column as "not in logs.jsonl (its columns: )"
        ("json_array", "line 1: expected a JSON object, got list; no line is a JSON object"),
        ("pretty_json", "line 1: invalid JSON: Expecting value at column 2; no line is a JSON"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expect: str) -> None:
    rows = make_rows(users=10)
    mapping_text = MAPPING_YAML
    logs = tmp_path / "logs.csv"
    if case == "malformed_rows":
        logs.write_text(",".join(FIELDS) + "\n" + "\n".join("a;b;c" for _ in range(20)) + "\n")
    elif case == "wrong_types":
        for r in rows:
            r["ts"] = "last tuesday"
        write_csv(logs, rows)
    elif case == "missing_column":
        write_csv(logs, [{("prompts" if k == "prompt" else k): v for k, v in r.items()}
                         for r in rows],
                  [("prompts" if f == "prompt" else f) for f in FIELDS])
    elif case == "empty_consented_set":
        write_csv(logs, make_rows(users=10, consent="false"))
    elif case == "no_consent_column":
        write_csv(logs, rows)
        mapping_text = MAPPING_YAML.replace("  consent.synthetic_fit: consent_synth   # true / false\n", "")
    elif case == "unknown_mapping_key":
        write_csv(logs, rows)
        mapping_text = MAPPING_YAML.replace("feedback.thumb:", "feedback.thumbs:")
    elif case == "log_not_found":
        logs = tmp_path / "nope.csv"
    elif case == "latin1_deep":
        write_csv(logs, make_rows(users=200))
        lines = logs.read_bytes().split(b"\n")
        lines[1100] = b"\xe9" + lines[1100]
        logs.write_bytes(b"\n".join(lines))
    elif case == "binary_file":
        logs.write_bytes(bytes(range(256)) * 40)
    elif case == "header_only":
        logs.write_text(",".join(FIELDS) + "\n")
    elif case == "empty_file":
        logs.write_text("")
    elif case == "not_parquet":
        logs = write_csv(tmp_path / "logs.parquet", rows)
        mapping_text = MAPPING_YAML.replace("format: csv\n", "")
    elif case in ("json_array", "pretty_json"):
        logs = tmp_path / "logs.jsonl"
        logs.write_text(json.dumps(rows, indent=None if case == "json_array" else 2) + "\n")
        mapping_text = MAPPING_YAML.replace("format: csv\n", "")
    mapping = write_mapping(tmp_path, mapping_text)
    out = tmp_path / "out"
    code, err = _run(["ingest", str(logs), "--mapping", str(mapping), "--out", str(out)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("synthloop: error: ") and expect in err, err
    assert "Traceback" not in err
    nothing_written(tmp_path, out)


def test_missing_columns_are_listed_at_once_with_did_you_mean(tmp_path: Path) -> None:
    rows = [{("Prompt" if k == "prompt" else "timestamp" if k == "ts" else k): v
             for k, v in r.items()} for r in make_rows(users=2)]
    fields = [("Prompt" if f == "prompt" else "timestamp" if f == "ts" else f) for f in FIELDS]
    logs = write_csv(tmp_path / "logs.csv", rows, fields)
    with pytest.raises(ConfigError) as e:
        ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    text = str(e.value)
    assert "2 problems" in text
    assert "columns.timestamp: column 'ts' is not in" in text
    assert "columns.input: column 'prompt' is not in" in text and "did you mean 'Prompt'?" in text
    nothing_written(tmp_path, tmp_path / "out")


def test_mapping_problems_are_reported_together(tmp_path: Path) -> None:
    text = """\
format: xml
columns:
  input: prompt
  feedback.thumbs: thumb
consent: {assume: true}
extras: all
"""
    logs = write_csv(tmp_path / "logs.csv", make_rows(users=1))
    with pytest.raises(ConfigError) as e:
        ingest(logs, write_mapping(tmp_path, text), tmp_path / "out")
    problems = "\n".join(e.value.problems)
    assert "format" in problems
    assert "did you mean `feedback.thumb`?" in problems
    assert "consent.assume: true needs consent.basis" in problems
    assert "extras: unknown key (did you mean `extra`?)" in problems


def test_out_dir_is_never_overwritten(tmp_path: Path) -> None:
    logs = write_csv(tmp_path / "logs.csv", make_rows(users=2))
    mapping = write_mapping(tmp_path)
    (tmp_path / "empty").mkdir()
    ingest(logs, mapping, tmp_path / "empty")  # an empty directory is fine
    assert (tmp_path / "empty" / "sample.parquet").is_file()
    before = (tmp_path / "empty" / "manifest.json").read_bytes()
    with pytest.raises(DataError, match="already exists"):
        ingest(logs, mapping, tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").read_bytes() == before


def test_max_invalid_threshold_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(users=10)  # 60 rows
    for r in rows[:9]:
        r["read_s"] = "??"
    logs = write_csv(tmp_path / "logs.csv", rows)
    mapping = write_mapping(tmp_path)
    with pytest.raises(DataError, match=r"9 of 60 rows checked are invalid \(15.0%, above max_invalid 10%\); first: line 2"):
        ingest(logs, mapping, tmp_path / "a")
    report = ingest(logs, mapping, tmp_path / "b", max_invalid=0.2)
    assert report.counts.invalid == 9 and report.max_invalid == 0.2
    code, err = _run(["ingest", str(logs), "--mapping", str(mapping), "--out",
                      str(tmp_path / "c"), "--strict"], capsys)
    assert code == 2 and "above max_invalid 0%" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", str(logs), "--mapping", str(mapping), "--out", str(tmp_path / "d"),
              "--max-invalid", "2"])
    assert exit_info.value.code == 2
    assert "expected a share between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_read_sample_rejects_other_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an ingest output"):
        read_sample(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"kind": "evalset"}')
    (tmp_path / "other" / "report.json").write_text("{}")
    (tmp_path / "other" / "sample.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="is not an ingest manifest"):
        read_sample(tmp_path / "other")
    with pytest.raises(DataError, match="no manifest.json"):
        read_report(tmp_path)


# --------------------------------------------------------------------------- formats & options
def test_jsonl_nested_fields_epoch_times_and_options(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        rows.append({
            "user": {"id": f"u{i % 3}"}, "session": f"s{i % 4}", "time": 1_709_280_000 + 60 * i,
            "text": f"prompt {i}", "reply": "ok", "model": "v2", "ms": 120.5 + i,
            "feedback": {"thumb": ["\U0001f44d", "\U0001f44e", None][i % 3], "stars": (i % 5) + 1,
                         "copied": i % 2 == 0, "note": "call 415-555-2671" if i == 4 else None},
            "uses": "analytics, synthetic_fit" if i != 7 else "analytics",
            "country": "FR", "score": i * 0.5,
        })
    logs = write_jsonl(tmp_path / "logs.jsonl", rows)
    mapping = """\
columns:
  user_id: user.id
  session_id: session
  timestamp: time
  input: text
  output: reply
  model_version: model
  latency_ms: ms
  feedback:
    thumb: feedback.thumb
    rating: feedback.stars
    copied: feedback.copied
    comment: feedback.note
  consent.uses: uses
extra: [country, score]
"""
    report = ingest(logs, write_mapping(tmp_path, mapping), tmp_path / "out")
    assert report.source.format == "jsonl" and report.consent.basis == "column:uses"
    assert report.counts.used == 11 and report.counts.excluded_consent == 1
    df = read_sample(tmp_path / "out")
    assert df["timestamp"].iloc[0] == pd.Timestamp(1_709_280_000, unit="s", tz="UTC")
    assert list(df["feedback.thumb"][:3]) == ["up", "down", "none"]
    assert list(df["feedback.rating"][:3]) == [1, 2, 3]
    assert df["feedback.copied"].iloc[0] is True or bool(df["feedback.copied"].iloc[0])
    assert df["feedback.comment"].iloc[4] == "call <PHONE>"
    assert list(df.columns[-2:]) == ["extra.country", "extra.score"]
    assert str(df["extra.score"].dtype) == "float64" and df["extra.country"].iloc[0] == "FR"
    assert report.mapped["extra.score"] == "score"


def test_timestamp_formats_offsets_and_rating_range(tmp_path: Path) -> None:
    rows = make_rows(users=2, sessions=1, turns=2)
    rows[0]["ts"] = "2024-03-01T10:00:00+02:00"   # offset -> UTC
    rows[1]["ts"] = "2024-03-01 09:30:00"         # naive -> UTC
    logs = write_csv(tmp_path / "logs.csv", rows)
    ingest(logs, write_mapping(tmp_path), tmp_path / "a")
    df = read_sample(tmp_path / "a")
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-03-01T08:00:00Z")
    assert df["timestamp"].iloc[1] == pd.Timestamp("2024-03-01T09:30:00Z")

    rows = make_rows(users=2, sessions=1, turns=2)
    for i, r in enumerate(rows):
        r["ts"] = f"0{i + 1}/03/2024 10h{i}5"
        r["thumb"] = ["8", "10", "3", "11"][i]
    logs = write_csv(tmp_path / "logs2.csv", rows)
    text = MAPPING_YAML.replace("feedback.thumb: thumb", "feedback.rating: thumb") + \
        'timestamp_format: "%d/%m/%Y %Hh%M"\nrating_range: [1, 10]\nmax_invalid: 0.5\n'
    report = ingest(logs, write_mapping(tmp_path, text, "m2.yaml"), tmp_path / "b")
    q = [json.loads(x) for x in (tmp_path / "b" / "quarantine.jsonl").read_text().splitlines()]
    assert q[0]["errors"] == ["feedback.rating: '11' is outside 1-10 (set rating_range)"]
    df = read_sample(tmp_path / "b")
    assert list(df["feedback.rating"]) == [8, 10, 3] and report.counts.invalid == 1
    assert df["timestamp"].iloc[1] == pd.Timestamp("2024-03-02T10:15:00Z")


def test_extra_all_infers_types_and_scrubs_text(tmp_path: Path) -> None:
    rows = make_rows(users=3, sessions=1, turns=2)
    for i, r in enumerate(rows):
        r.update({"n": str(i), "x": f"{i}.5", "flag": "TRUE" if i % 2 else "false",
                  "note": "ip 10.0.0.7" if i == 2 else "plain", "mixed": "3" if i else "three"})
        r["Consent_Training"] = "false"  # consent for another use: not data to model
    fields = [*FIELDS, "n", "x", "flag", "note", "mixed", "Consent_Training"]
    logs = write_csv(tmp_path / "logs.csv", rows, fields)
    report = ingest(logs, write_mapping(tmp_path, MAPPING_YAML + "extra: all\n"), tmp_path / "out")
    df = read_sample(tmp_path / "out")
    extra = [c for c in df.columns if c.startswith("extra.")]
    assert extra == ["extra.n", "extra.x", "extra.flag", "extra.note", "extra.mixed"]
    assert [str(df[c].dtype) for c in extra] == ["Int64", "float64", "boolean", "object", "object"]
    assert df["extra.note"].iloc[2] == "ip <IP>" and report.pii_by_column["extra.note"] == {"ip": 1}


def test_online_shoppers_tabular_log(shared_data: Path, repo_root: Path, tmp_path: Path) -> None:
    logs = shared_data / "online_shoppers" / "online_shoppers_intention.csv"
    mapping = repo_root / "configs" / "mappings" / "online_shoppers.yaml"
    report = ingest(logs, mapping, tmp_path / "out")
    assert report.counts.read == report.counts.used == 12_205
    assert report.consent.assumed and report.consent.basis == "assumed: public dataset, CC BY 4.0"
    assert read_manifest(tmp_path / "out").consent.basis == report.consent.basis
    df = read_sample(tmp_path / "out")
    assert len([c for c in df.columns if c.startswith("extra.")]) == 18
    assert str(df["extra.Revenue"].dtype) == "boolean" and str(df["extra.Month"].dtype) == "object"
    assert str(df["extra.ProductRelated"].dtype) == "Int64"
    assert str(df["extra.BounceRates"].dtype) == "float64"
    assert df["extra.Revenue"].mean() == pytest.approx(0.156, abs=0.01)


# --------------------------------------------------------------------------- the real command
def test_cli_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(users=3)
    rows[0]["prompt"] += " mail me: a.b@example.com"
    rows[1]["consent_synth"] = "false"
    logs = write_csv(tmp_path / "logs.csv", rows)
    mapping = write_mapping(tmp_path)
    code, out, err = run_cli("ingest", str(logs), "--mapping", str(mapping), "--out",
                             str(tmp_path / "out"))  # the real `python -m synthloop.cli`
    assert code == 0, err
    assert out.splitlines() == [
        f"ingested {logs} -> {tmp_path / 'out'}",
        "  rows read 18  used 17  invalid 0  excluded for consent 1 (1 users)",
        "  users 3  sessions 6  consent synthetic_fit: column:consent_synth",
        "  PII scrubbed: email 1 (placeholder)",
    ]
    code, err = _run(["ingest", str(logs), "--mapping", str(mapping), "--out",
                      str(tmp_path / "out")], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_example_mappings_are_valid(repo_root: Path) -> None:
    from synthloop.config import load_model
    from synthloop.ingest import LogMapping

    paths = sorted((repo_root / "configs" / "mappings").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        load_model(path, LogMapping)


def test_support_events_example_end_to_end(repo_root: Path, tmp_path: Path) -> None:
    rows = []
    for i in range(30):
        rows.append({
            "event_id": f"e{i}", "user": {"id": f"u{i % 5}", "locale": "fr-FR"},
            "session": f"s{i % 10}", "at": f"2024-05-01T10:{i:02d}:00+02:00",
            "message": f"Bonjour, Marta Kowalski m'a dit d'écrire à marta{i}@corp.example",
            "answer": "ok", "model": "v3", "latency_ms": 800 + i, "rating": 1 + i % 5,
            "reaction": ["\U0001f44d", "", "\U0001f44e"][i % 3], "copied": "yes" if i % 2 else "no",
            "comment": None,
            "consent": {"uses": "analytics,synthetic_fit" if i % 5 != 4 else "analytics",
                        "policy": "2024-03",
                        "revoked_at": "2024-05-01T10:20:00+02:00" if i % 5 == 3 else None},
            "plan": "pro",
        })
    logs = write_jsonl(tmp_path / "events.jsonl", rows)
    report = ingest(logs, repo_root / "configs" / "mappings" / "support_events.yaml",
                    tmp_path / "out")
    # user u4 never granted synthetic_fit (6 rows); u3 revoked at 10:20 (rows at 10:23, 10:28)
    assert report.counts.excluded_consent == 8 and report.counts.used == 22
    assert report.consent.policy_versions == ["2024-03"]
    assert report.pii["name"] == 22 and report.pii["email"] == 22
    assert_absent(tmp_path / "out", ["Marta Kowalski", "@corp.example"])
    df = read_sample(tmp_path / "out")
    assert df["interaction_id"].iloc[0] == "e0" and df["locale"].iloc[0] == "fr-FR"
    assert set(df["feedback.thumb"]) == {"up", "down", "none"}
    assert df["extra.plan"].eq("pro").all()


def test_gzipped_tsv_with_bom_and_crlf(tmp_path: Path) -> None:
    import gzip

    rows = make_rows(users=2, sessions=1, turns=2)
    body = "\r\n".join(["\t".join(FIELDS)] + ["\t".join(str(r[f]) for f in FIELDS) for r in rows])
    logs = tmp_path / "logs.tsv.gz"
    with gzip.open(logs, "wb") as f:
        f.write(("\ufeff" + body + "\r\n").encode("utf-8"))
    mapping = MAPPING_YAML.replace("format: csv\n", "")
    report = ingest(logs, write_mapping(tmp_path, mapping), tmp_path / "out")
    assert report.source.format == "csv" and report.counts.used == 4
    df = read_sample(tmp_path / "out")
    assert list(df["user_id"]) == ["user0", "user0", "user1", "user1"]
    assert df["input"].iloc[0] == rows[0]["prompt"]
