"""`synthloop evalset list | show | diff | export | import | gc` through the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from synthloop.cli import main
from synthloop.evalset_import import FieldMapping, import_file
from synthloop.evalsets import open_evalset
from synthloop.generate import GenerateOptions, generate
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "generators" / "support_assistant.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions, shared by the read-only tests of this module."""
    r = tmp_path_factory.mktemp("store") / "evalsets"
    generate(SHIPPED, r / "support" / "v1", GenerateOptions(seed=1, sessions=120))
    generate(SHIPPED, r / "support" / "v2", GenerateOptions(seed=2, sessions=120))
    return r


# --------------------------------------------------------------------------- list / show
def test_list_table_and_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset", "list", "--root", str(root))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "CASES", "SESSIONS", "CREATED", "GENERATOR",
                                "HASH"]
    assert lines[1].split()[:2] == ["support", "v1"] and lines[2].split()[:2] == ["support", "v2"]
    h1 = open_evalset(root / "support" / "v1").content_hash
    assert h1.split(":")[1][:12] in lines[1]
    assert lines[-1] == f"2 versions under {root}"
    code, out, _ = cli(capsys, "evalset", "list", "--root", str(root), "--json")
    data = json.loads(out)
    assert [d["version"] for d in data] == ["v1", "v2"]
    assert data[0]["content_hash"] == h1 and data[0]["counts"]["sessions"] == 120


def test_list_of_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset", "list", "--root", str(tmp_path / "none"))
    assert code == 0 and out.strip() == f"no evalsets under {tmp_path / 'none'}"


def test_show_json_prints_the_manifest(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset", "show", str(root / "support" / "v1"), "--json")
    assert code == 0
    assert json.loads(out) == json.loads((root / "support" / "v1" / "manifest.json").read_text())
    code, out2, _ = cli(capsys, "evalset", "show", "support@v1", "--root", str(root), "--json")
    assert out2 == out
    code, out3, _ = cli(capsys, "evalset", "show", "support@latest", "--root", str(root), "--json")
    assert json.loads(out3)["version"] == "v2"


def test_show_human_summary_and_head(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset", "show", str(root / "support" / "v1"), "--head", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("support@v1")
    assert any(x.strip().startswith("counts    120 sessions") for x in lines)
    assert any(x.strip().startswith("consent") for x in lines)
    cases = [json.loads(x) for x in lines[-2:]]
    assert [c["case_id"] for c in cases] == ["s0000000-t0", cases[1]["case_id"]]


def test_show_unknown_reference_is_exit_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "evalset", "show", "support@v7", "--root", str(root))
    assert code == 2 and err.strip().splitlines() == [
        f"synthloop: error: evalset support@v7 not found under {root} "
        "(run `synthloop evalset list`)"]
    code, _, err = cli(capsys, "evalset", "show", str(root / "nope"))
    assert code == 2 and "no such evalset directory" in err


# --------------------------------------------------------------------------- diff
def test_diff_text_and_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset", "diff", "support@v1", "support@v2", "--root", str(root))
    assert code == 0
    assert "seed: 1 -> 2" in out and "changed" in out
    code, out, _ = cli(capsys, "evalset", "diff", "support@v1", "support@v1", "--root", str(root),
                       "--json")
    d = json.loads(out)
    assert d["identical"] and d["changed"] == d["added"] == d["removed"] == 0


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_export_formats(root: Path, tmp_path: Path, fmt: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"x.{fmt}"
    code, stdout, _ = cli(capsys, "evalset", "export", "support@v1", "--root", str(root),
                          "--out", str(out))
    assert code == 0
    n = open_evalset(root / "support" / "v1").manifest.counts.cases
    assert f"exported {n:,} cases" in stdout
    if fmt == "jsonl":
        assert len(out.read_text().splitlines()) == n
    elif fmt == "csv":
        with open(out, newline="") as f:
            assert len(list(csv.DictReader(f))) == n
    else:
        import pyarrow.parquet as pq

        assert pq.read_metadata(out).num_rows == n
    code, _, err = cli(capsys, "evalset", "export", "support@v1", "--root", str(root), "--out",
                       str(out))
    assert code == 2 and "already exists" in err
    code, _, _ = cli(capsys, "evalset", "export", "support@v1", "--root", str(root), "--out",
                     str(out), "--force")
    assert code == 0


def test_export_needs_a_known_format(root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "evalset", "export", "support@v1", "--root", str(root), "--out",
                       str(tmp_path / "x.txt"))
    assert code == 2 and "--format" in err
    assert not (tmp_path / "x.txt").exists()


# --------------------------------------------------------------------------- import
def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"uid": "q1", "prompt": "What is 2+2?", "cluster": "math", "answer": "4", "bad": ["5", "22"]},
    {"uid": "q2", "prompt": "Capital of France?", "cluster": "geo", "answer": "Paris"},
    {"uid": "q3", "prompt": "Sort [3,1,2]", "cluster": "code", "answer": ["[1,2,3]", "1 2 3"]},
]


def test_import_jsonl_contract(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "q.jsonl", ROWS)
    out = tmp_path / "evalsets" / "quiz" / "v1"
    code, stdout, err = run_cli("evalset", "import", str(src), "--input-field", "prompt",
                                "--id-field", "uid", "--tag-field", "cluster",
                                "--reference-field", "answer", "--out", str(out))
    assert code == 0, err
    assert "imported 3 cases" in stdout
    cases = open_evalset(out).cases()
    assert [c.case_id for c in cases] == ["q1", "q2", "q3"]
    assert cases[0].tags == {"cluster": "math"} and cases[0].references.good == ["4"]
    assert cases[2].references.good == ["[1,2,3]", "1 2 3"]
    assert cases[1].input == "Capital of France?"
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"sessions": 3, "cases": 3, "interactions": 3}
    assert m["provenance"]["generator"] == "import"
    assert m["provenance"]["source_data_hash"].startswith("sha256:")
    assert m["name"] == "quiz"


def test_import_csv_with_every_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "logs.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sess", "text", "topic", "lang", "good", "bad", "hist"])
        w.writerow(["a", "s1", "hello", "greet", "en", "hi!", "go away", ""])
        w.writerow(["b", "s1", "and you?", "greet", "en", "fine", "", json.dumps(["hello", "hi!"])])
        w.writerow(["c", "s2", "bonjour", "greet", "fr", '["salut", "bonjour"]', "", ""])
    out = tmp_path / "ev" / "v1"
    code, _, err = cli(capsys, "evalset", "import", str(src), "--input-field", "text",
                       "--id-field", "id", "--session-field", "sess", "--tag-field", "topic",
                       "--tag-field", "lang", "--reference-field", "good",
                       "--bad-reference-field", "bad", "--history-field", "hist",
                       "--out", str(out), "--name", "chats")
    assert code == 0, err
    ev = open_evalset(out)
    assert ev.manifest.name == "chats" and ev.manifest.counts.sessions == 2
    a, b, c = ev.cases()
    assert (a.session_id, a.turn, b.turn, c.turn) == ("s1", 0, 1, 0)
    assert a.references.bad == ["go away"] and b.references.bad == []
    assert [m.role for m in b.history] == ["user", "assistant"]
    assert c.references.good == ["salut", "bonjour"]
    assert c.tags == {"topic": "greet", "lang": "fr"}


def test_import_nested_fields(tmp_path: Path) -> None:
    rows = [{"question_id": "x1", "meta": {"cluster": "alpha"},
             "turns": [{"content": "first question"}, {"content": "second"}]}]
    src = write_jsonl(tmp_path / "n.jsonl", rows)
    m = import_file(src, tmp_path / "v1", FieldMapping(input="turns.0.content", id="question_id",
                                                       tags=["meta.cluster"]))
    case = open_evalset(tmp_path / "v1").cases()[0]
    assert case.input == "first question" and case.tags == {"cluster": "alpha"}
    assert m.counts.cases == 1


def test_export_then_import_round_trips(root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = root / "support" / "v1"
    for fmt in ("jsonl", "csv"):
        f = tmp_path / f"x.{fmt}"
        assert cli(capsys, "evalset", "export", str(src), "--out", str(f))[0] == 0
        ref = "references.good" if fmt == "jsonl" else "references_good"
        code, _, err = cli(capsys, "evalset", "import", str(f), "--input-field", "input",
                           "--id-field", "case_id", "--session-field", "session_id",
                           "--history-field", "history", "--reference-field", ref,
                           "--tag-field", "tags", "--out", str(tmp_path / f"rt-{fmt}"))
        assert code == 0, err
        orig = open_evalset(src).cases()
        back = open_evalset(tmp_path / f"rt-{fmt}").cases()
        assert [(c.case_id, c.input, c.turn, c.history, c.references.good, c.tags) for c in back] \
            == [(c.case_id, c.input, c.turn, c.history, c.references.good, c.tags) for c in orig]


def test_exported_imported_evalset_imports_back_with_the_documented_flags(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an imported evalset has no sessions (session_id null, empty in CSV): the documented
    # round trip (--session-field session_id) must accept that and give the same hash
    src = write_jsonl(tmp_path / "q.jsonl", [
        {"uid": "a", "prompt": "line\none \u00e9", "cluster": "x", "answer": ["", "ok"],
         "bad": "no"},
        {"uid": "b", "prompt": 'say "hi"', "cluster": "", "answer": None, "bad": ["n1", "n2"]},
    ])
    assert cli(capsys, "evalset", "import", str(src), "--input-field", "prompt", "--id-field",
               "uid", "--tag-field", "cluster", "--reference-field", "answer",
               "--bad-reference-field", "bad", "--out", str(tmp_path / "e" / "v1"))[0] == 0
    first = open_evalset(tmp_path / "e" / "v1")
    for fmt, good, bad in (("jsonl", "references.good", "references.bad"),
                           ("csv", "references_good", "references_bad")):
        f = tmp_path / f"x.{fmt}"
        assert cli(capsys, "evalset", "export", str(first.path), "--out", str(f))[0] == 0
        code, _, err = cli(capsys, "evalset", "import", str(f), "--input-field", "input",
                           "--id-field", "case_id", "--session-field", "session_id",
                           "--history-field", "history", "--reference-field", good,
                           "--bad-reference-field", bad, "--tag-field", "tags",
                           "--out", str(tmp_path / f"rt-{fmt}"))
        assert code == 0, err
        back = open_evalset(tmp_path / f"rt-{fmt}")
        assert back.content_hash == first.content_hash, fmt
        assert back.manifest.counts.sessions == 2


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        ("".join(json.dumps(r) + "\n" for r in ROWS), ["--input-field", "promt"],
         "--input-field promt: no such field (did you mean 'prompt'? fields: uid, prompt, "
         "cluster, answer, bad)"),
        ("".join(json.dumps(r) + "\n" for r in ROWS), ["--input-field", "prompt", "--tag-field",
                                                      "clustr"],
         "--tag-field clustr: no such field (did you mean 'cluster'?"),
        (json.dumps(ROWS[0]) + "\n{not json\n", ["--input-field", "prompt"],
         "q.jsonl:2: invalid JSON: Expecting property name enclosed in double quotes"),
        (json.dumps(ROWS[0]) + "\n" + json.dumps({"uid": "z"}) + "\n", ["--input-field", "prompt"],
         "q.jsonl:2: field 'prompt' is missing (--input-field)"),
        (json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[0]) + "\n",
         ["--input-field", "prompt", "--id-field", "uid"],
         "q.jsonl:2: duplicate case id 'q1' (first on line 1); ids must be unique"),
        (json.dumps(ROWS[0]) + "\n[1, 2]\n", ["--input-field", "prompt"],
         "q.jsonl:2: expected a JSON object per line, got list"),
        (json.dumps({"prompt": {"a": 1}}) + "\n", ["--input-field", "prompt"],
         "q.jsonl:1: input field 'prompt' must be text, got dict"),
        ("", ["--input-field", "prompt"], "q.jsonl: no rows to import (the file is empty)"),
    ],
)
def test_import_bad_input_is_one_line_exit_2_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, args: list[str],
        expected: str) -> None:
    src = tmp_path / "q.jsonl"
    src.write_text(content)
    out = tmp_path / "evalsets" / "quiz" / "v1"
    code, _, err = cli(capsys, "evalset", "import", str(src), *args, "--out", str(out))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "evalsets").exists()


def test_import_bad_csv_row_names_the_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "q.csv"
    src.write_text("id,text\n1,hello\n2,hi,extra\n")
    code, _, err = cli(capsys, "evalset", "import", str(src), "--input-field", "text",
                       "--out", str(tmp_path / "ev" / "v1"))
    assert code == 2
    assert err.strip() == f"synthloop: error: {src}:3: expected 2 columns, got 3"
    assert not (tmp_path / "ev").exists()
    code, _, err = cli(capsys, "evalset", "import", str(tmp_path / "missing.csv"),
                       "--input-field", "text", "--out", str(tmp_path / "ev" / "v1"))
    assert code == 2 and "file not found" in err


def test_import_non_utf8_and_broken_gzip_name_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Latin-1 export (Excel, old databases) used to be a UnicodeDecodeError traceback, and
    # the decoder reads ahead, so the bad line is found in the bytes, not where parsing was
    import gzip

    lines = ["prompt,answer", *(f"q{i},a{i}" for i in range(3000))]
    lines[2500] = "caf\xe9 au lait,x"
    src = tmp_path / "latin.csv"
    src.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    out = tmp_path / "evalsets" / "quiz" / "v1"
    code, _, err = cli(capsys, "evalset", "import", str(src), "--input-field", "prompt",
                       "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{src}:2501: byte 4 of the line: not UTF-8 text" in err and "iconv" in err
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    code, _, err = cli(capsys, "evalset", "import", str(jsonl), "--input-field", "prompt",
                       "--out", str(out))
    assert code == 2 and f"{jsonl}:1: byte 16 of the line: not UTF-8 text" in err
    packed = gzip.compress(("\n".join(lines[:2000]) + "\n").encode())
    truncated = tmp_path / "q.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    code, _, err = cli(capsys, "evalset", "import", str(truncated), "--input-field", "prompt",
                       "--out", str(out))
    assert code == 2 and "q.csv.gz: cannot read the gzip file" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "evalsets").exists()


def test_import_refuses_existing_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "q.jsonl", ROWS)
    out = tmp_path / "v1"
    assert cli(capsys, "evalset", "import", str(src), "--input-field", "prompt",
               "--out", str(out))[0] == 0
    code, _, err = cli(capsys, "evalset", "import", str(src), "--input-field", "prompt",
                       "--out", str(out))
    assert code == 2 and "never overwritten" in err


def test_import_arena_hard(shared_data: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "arena_hard" / "question_v0.1.jsonl"
    out = tmp_path / "evalsets" / "arena_hard" / "v0.1"
    code, stdout, err = cli(capsys, "evalset", "import", str(src), "--input-field", "prompt",
                            "--id-field", "uid", "--tag-field", "cluster", "--tag-field",
                            "category", "--out", str(out))
    assert code == 0, err
    ev = open_evalset("arena_hard@latest", tmp_path / "evalsets")
    assert ev.manifest.counts.cases == 500
    first = json.loads(src.read_text().splitlines()[0])
    case = next(ev.iter_cases())
    assert case.case_id == first["uid"] and case.input == first["prompt"]
    assert case.tags == {"cluster": first["cluster"], "category": "arena-hard-v0.1"}
    clusters = {c.tags["cluster"] for c in ev.iter_cases()}
    assert len(clusters) > 100
    # importing the same file twice gives the same content hash
    m2 = import_file(src, tmp_path / "again", FieldMapping(input="prompt", id="uid",
                                                            tags=["cluster", "category"]))
    assert m2.content_hash == ev.content_hash


# --------------------------------------------------------------------------- gc
def test_gc_removes_only_dead_writers_temp_dirs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "evalsets"
    dead = root / "x" / ".v1.tmp-999999999-abcd"
    dead.mkdir(parents=True)
    import os

    live = root / "x" / f".v2.tmp-{os.getpid()}-abcd"
    live.mkdir()
    code, out, _ = cli(capsys, "evalset", "gc", "--root", str(root), "--dry-run")
    assert code == 0 and f"would remove {dead}" in out and dead.exists()
    code, out, _ = cli(capsys, "evalset", "gc", "--root", str(root))
    assert code == 0 and not dead.exists() and live.exists()


def test_evalset_without_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "evalset")
    assert code == 2 and "SUBCOMMAND" in out
