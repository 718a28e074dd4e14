"""The evalset store: atomic writes, never overwrite, stable hashes, HF loading, references."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthloop.errors import DataError
from synthloop.evalsets import (
    CSV_COLUMNS,
    EvalsetWriter,
    cases_to_batch,
    diff_versions,
    export_evalset,
    list_evalsets,
    open_evalset,
    remove_stale_temp_dirs,
    resolve,
    stale_temp_dirs,
    write_evalset,
)
from synthloop.schema import EvalCase, Feedback, Message, Provenance, References, Thumb

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "generators" / "support_assistant.yaml"
PROV = Provenance(generator="test", seed=0)


def make_cases(n: int, *, prefix: str = "c", text: str = "q") -> list[EvalCase]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        EvalCase(
            case_id=f"{prefix}{i:05d}", session_id=f"s{i // 3}", user_id=f"u{i // 6}", turn=i % 3,
            timestamp=t0 + timedelta(seconds=i),
            history=[Message(role="user", content="hi"), Message(role="assistant", content="hello")]
            if i % 3 else [],
            input=f"{text} {i}", references=References(good=[f"a {i}"], bad=["nope"] if i % 2 else []),
            reply=f"a {i}", reply_latency_ms=100.0 + i,
            expected_feedback=Feedback(thumb=Thumb.up if i % 5 == 0 else Thumb.none,
                                       rating=5 if i % 10 == 0 else None, read_time_s=1.5,
                                       copied=i % 4 == 0),
            tags={"intent": "a" if i % 2 else "b", "cluster": "x"},
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- writing
def test_round_trip_cases_and_manifest(tmp_path: Path) -> None:
    cases = make_cases(25)
    m = write_evalset(tmp_path / "ev" / "demo" / "v1", cases, provenance=PROV)
    ev = open_evalset(tmp_path / "ev" / "demo" / "v1")
    assert ev.cases() == cases
    assert m.name == "demo" and m.version == "v1"
    assert m.counts.cases == 25 and m.counts.sessions == 9
    assert m.feedback_summary["thumbs_up"] == 5
    on_disk = json.loads((tmp_path / "ev" / "demo" / "v1" / "manifest.json").read_text())
    assert on_disk["content_hash"] == m.content_hash
    assert set(on_disk["counts"]) >= {"sessions", "cases", "interactions"}


def test_hash_depends_on_rows_not_on_batching(tmp_path: Path) -> None:
    cases = make_cases(70_000 // 100)
    whole = write_evalset(tmp_path / "a", cases, provenance=PROV)
    with EvalsetWriter(tmp_path / "b", provenance=PROV, shard_rows=97) as w:
        for i in range(0, len(cases), 13):
            w.write_batch(cases_to_batch(cases[i:i + 13]))
        split = w.close()
    assert split.content_hash == whole.content_hash
    assert len(split.shards) > 1
    changed = list(cases)
    changed[5] = changed[5].model_copy(update={"input": "different"})
    assert write_evalset(tmp_path / "c", changed, provenance=PROV).content_hash != whole.content_hash
    reordered = cases[1:] + cases[:1]
    assert write_evalset(tmp_path / "d", reordered, provenance=PROV).content_hash != whole.content_hash


def test_content_hash_definition(tmp_path: Path) -> None:
    """sha256 over sha256(IPC stream of the compacted rows) per 65,536-row batch, after a header."""
    import hashlib

    from synthloop.evalsets import ARROW_SCHEMA, HASH_BATCH_ROWS, table_hash
    from synthloop.schema import SCHEMA_VERSION

    n = HASH_BATCH_ROWS + 300
    base = cases_to_batch(make_cases(7))
    rows = base.take(pa.array([i % 7 for i in range(n)]))
    rows = rows.set_column(0, "case_id", pa.array([f"c{i:06d}" for i in range(n)]))
    table = pa.Table.from_batches([rows])
    h = hashlib.sha256(f"synthloop-evalset/{SCHEMA_VERSION}\n".encode())
    for start in range(0, table.num_rows, HASH_BATCH_ROWS):
        part = table.slice(start, HASH_BATCH_ROWS).combine_chunks().to_batches()[0]
        part = part.take(pa.array(range(part.num_rows)))  # compact, as fresh arrays
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, ARROW_SCHEMA) as w:
            w.write_batch(part)
        h.update(hashlib.sha256(sink.getvalue().to_pybytes()).digest())
    expected = "sha256:" + h.hexdigest()
    # however the same rows are batched, the hash is the same
    assert table_hash(table) == expected
    assert table_hash(table.combine_chunks()) == expected
    chunked = pa.Table.from_batches([b.take(pa.array(range(b.num_rows)))
                                     for b in table.to_batches(max_chunksize=997)])
    assert chunked.column(0).num_chunks > 60
    assert table_hash(chunked) == expected
    with EvalsetWriter(tmp_path / "v", provenance=PROV) as w:
        for b in chunked.to_batches():
            w.write_batch(b)
        assert w.close().content_hash == expected
    with EvalsetWriter(tmp_path / "w", provenance=PROV) as w:
        w.write_batch(table.slice(0, 70_000))
        w.write_batch(table.slice(70_000))
        assert w.close().content_hash == expected


def test_error_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ev" / "x" / "v1"
    with pytest.raises(RuntimeError), EvalsetWriter(out, provenance=PROV) as w:
        w.write_cases(make_cases(10))
        raise RuntimeError("boom")
    assert not out.exists()
    assert list((tmp_path / "ev" / "x").iterdir()) == []
    assert list_evalsets(tmp_path / "ev") == []


def test_a_version_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    first = write_evalset(out, make_cases(5), provenance=PROV)
    with pytest.raises(DataError, match="never overwritten"):
        write_evalset(out, make_cases(6), provenance=PROV)
    assert open_evalset(out).content_hash == first.content_hash
    # an empty folder made by the user is fine
    (tmp_path / "v2").mkdir()
    write_evalset(tmp_path / "v2", make_cases(2), provenance=PROV)


def test_a_version_finished_by_another_process_meanwhile_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two writers of the same NAME/VERSION: the other one renames its version into place
    # after this one's last check: this one gets a DataError, the other's rows stay whole
    import shutil

    import synthloop.evalsets as es

    theirs = write_evalset(tmp_path / "theirs", make_cases(3, prefix="t"), provenance=PROV)
    out = tmp_path / "evalsets" / "demo" / "v1"
    real_check = es.check_new_version

    def other_process_finishes_first(p: str | Path) -> Path:
        checked = real_check(p)
        shutil.copytree(tmp_path / "theirs", out)
        return checked

    with pytest.raises(DataError, match="another process wrote it"), \
            EvalsetWriter(out, provenance=PROV) as w:
        w.write_cases(make_cases(5))
        monkeypatch.setattr(es, "check_new_version", other_process_finishes_first)
        w.close()
    assert open_evalset(out).content_hash == theirs.content_hash
    assert sorted(p.name for p in out.parent.iterdir()) == ["v1"]  # no temporary left


def test_rows_that_do_not_fit_the_schema_are_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError), EvalsetWriter(tmp_path / "v", provenance=PROV) as w:
        w.write_batch(pa.table({"case_id": ["a"]}))
    assert not (tmp_path / "v").exists()


def test_damaged_versions_are_one_line_data_errors(tmp_path: Path) -> None:
    # a truncated copy, a lost shard, a file where a version folder should be: each used to
    # escape as a pyarrow/OS traceback from `evalset show/export`, replay, score, feedback
    out = tmp_path / "support" / "v1"
    write_evalset(out, make_cases(30), provenance=PROV)
    shard = out / "data-00000-of-00001.arrow"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match=r"data-00000-of-00001\.arrow: damaged data shard") as e:
        open_evalset(out).cases()
    assert "\n" not in str(e.value) and "restore it" in str(e.value)
    with pytest.raises(DataError, match="damaged data shard"):
        export_evalset(open_evalset(out), tmp_path / "x.jsonl", "jsonl")
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob(".x.jsonl*"))
    shard.unlink()
    with pytest.raises(DataError, match="data shard listed in manifest.json is missing"):
        list(open_evalset(out).iter_batches())
    other = pa.table({"case_id": ["a"]})
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, other.schema) as w:
        w.write_table(other)
    with pytest.raises(DataError, match="columns do not match the evalset schema"):
        open_evalset(out).table()
    (out / "manifest.json").write_text('{"name": "support", "version": "v1"}')
    with pytest.raises(DataError, match=r"invalid evalset manifest: \w+: Field required "
                                        r"\(and \d+ more problems\)"):
        open_evalset(out)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataError, match="a-file: not an evalset version \\(a file"):
        open_evalset(tmp_path / "a-file")


def test_datasets_load_from_disk_works(tmp_path: Path) -> None:
    import datasets

    from synthloop.generate import GenerateOptions, generate

    out = tmp_path / "support" / "v1"
    m = generate(SHIPPED, out, GenerateOptions(seed=3, sessions=400))
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == m.counts.cases
    row = ds[0]
    assert row["case_id"] == "s0000000-t0"
    assert row["expected_feedback"]["thumb"] in ("up", "down", "none")
    assert {t["key"] for t in row["tags"]} == {"persona", "intent", "locale", "quality", "consent"}
    assert open_evalset(out).to_dataset()[0]["input"] == row["input"]


def test_empty_evalset_is_valid(tmp_path: Path) -> None:
    m = write_evalset(tmp_path / "v", [], provenance=PROV)
    assert m.counts.cases == 0
    assert open_evalset(tmp_path / "v").cases() == []


# --------------------------------------------------------------------------- references
def test_name_at_version_and_latest(tmp_path: Path) -> None:
    root = tmp_path / "evalsets"
    write_evalset(root / "demo" / "v1", make_cases(3), provenance=PROV)
    time.sleep(0.01)
    write_evalset(root / "demo" / "v2", make_cases(4), provenance=PROV)
    write_evalset(root / "other" / "v9", make_cases(1), provenance=PROV)
    assert resolve("demo@v1", root) == root / "demo" / "v1"
    assert resolve("demo@latest", root) == root / "demo" / "v2"
    assert len(open_evalset("demo@latest", root)) == 4
    with pytest.raises(DataError, match="demo@v3 not found"):
        resolve("demo@v3", root)
    with pytest.raises(DataError, match="no versions of evalset 'nope'"):
        resolve("nope@latest", root)
    with pytest.raises(DataError, match="not an evalset version"):
        open_evalset(tmp_path)


def test_latest_uses_the_folder_name_like_a_version_ref_and_follows_symlinks(
        tmp_path: Path) -> None:
    root = tmp_path / "evalsets"
    write_evalset(root / "foo" / "v1", make_cases(2), provenance=PROV)
    time.sleep(0.01)
    # stored under bar/ with the manifest name "foo": it is bar@v7, so it is bar@latest too
    with EvalsetWriter(root / "bar" / "v7", provenance=PROV, name="foo") as w:
        w.write_cases(make_cases(3))
        w.close()
    assert resolve("foo@latest", root) == root / "foo" / "v1"
    assert resolve("bar@latest", root) == root / "bar" / "v7" == resolve("bar@v7", root)

    # an evalset shared from elsewhere by a symlinked name folder (and a link cycle) is listed
    shared = tmp_path / "team" / "shared"
    write_evalset(shared / "v1", make_cases(1), provenance=PROV)
    (root / "shared").symlink_to(shared, target_is_directory=True)
    (shared / "loop").symlink_to(root, target_is_directory=True)
    names = sorted(str(e.path.relative_to(root)) for e in list_evalsets(root))
    assert names == ["bar/v7", "foo/v1", "shared/v1"]
    assert resolve("shared@latest", root) == root / "shared" / "v1"


def test_reference_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "elsewhere"
    write_evalset(root / "demo" / "v1", make_cases(2), provenance=PROV)
    monkeypatch.setenv("SYNTHLOOP_EVALSETS", str(root))
    assert open_evalset("demo@latest").path == root / "demo" / "v1"


def test_list_skips_hidden_temporary_dirs(tmp_path: Path) -> None:
    root = tmp_path / "evalsets"
    write_evalset(root / "demo" / "v1", make_cases(2), provenance=PROV)
    tmp = root / "demo" / ".v2.tmp-999999999-abcd"
    tmp.mkdir()
    (tmp / "manifest.json").write_text((root / "demo" / "v1" / "manifest.json").read_text())
    assert [e.path for e in list_evalsets(root)] == [root / "demo" / "v1"]


# --------------------------------------------------------------------------- SIGKILL
def test_sigkill_mid_write_leaves_no_listed_version(tmp_path: Path) -> None:
    root = tmp_path / "evalsets"
    out = root / "support" / "v1"
    env = dict(os.environ, SYNTHLOOP_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthloop.cli", "generate", str(SHIPPED), "--sessions",
         "3000000", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = list((root / "support").glob(".v1.tmp-*")) if (root / "support").exists() else []
            if tmps and any(p.stat().st_size > 0 for p in tmps[0].glob("shard-*.arrow")):
                started = True
                break
            time.sleep(0.05)
        assert started, "the writer never started writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert list_evalsets(root) == []
    from tests.conftest import run_cli

    code, stdout, _ = run_cli("evalset", "list", "--root", str(root))
    assert code == 0 and stdout.strip() == f"no evalsets under {root}"
    # the stale temporary folder is found and can be removed
    stale = stale_temp_dirs(root)
    assert len(stale) == 1 and stale[0].name.startswith(".v1.tmp-")
    assert remove_stale_temp_dirs(root) == stale
    assert not stale[0].exists()
    # and the same output can now be written
    from synthloop.generate import GenerateOptions, generate

    assert generate(SHIPPED, out, GenerateOptions(sessions=50)).counts.sessions == 50


def test_live_writers_temp_dirs_are_not_stale(tmp_path: Path) -> None:
    with EvalsetWriter(tmp_path / "v1", provenance=PROV) as w:
        assert stale_temp_dirs(tmp_path) == []
        w.write_cases(make_cases(2))
        w.close()


def test_gc_keeps_a_writer_whose_pid_is_unknown_here(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a writer in another container or on another host sharing the folder: its pid does not
    # exist in this pid namespace, but it is alive and still writing
    import synthloop.evalsets as es

    foreign = 999_999_999
    monkeypatch.setattr(es, "_tmp_dir_for",
                        lambda out: out.parent / f".{out.name}.tmp-{foreign}-abcd")
    root = tmp_path / "evalsets"
    with EvalsetWriter(root / "demo" / "v1", provenance=PROV) as w:
        w.write_cases(make_cases(4))
        assert stale_temp_dirs(root) == []
        assert remove_stale_temp_dirs(root) == []
        w.write_cases(make_cases(4, prefix="d"))
        w.close()
    assert len(open_evalset(root / "demo" / "v1")) == 8
    # the same for an export being written there
    seen: list[list[Path]] = []
    export_evalset(open_evalset(root / "demo" / "v1"), root / "x.jsonl", "jsonl",
                   on_batch=lambda n: seen.append(stale_temp_dirs(root)))
    assert seen and all(s == [] for s in seen) and (root / "x.jsonl").exists()
    # once the writer is gone its leftovers are stale
    dead = root / "demo" / f".v2.tmp-{foreign}-ef"
    dead.mkdir()
    assert stale_temp_dirs(root) == [dead]


# --------------------------------------------------------------------------- export
def test_export_jsonl_parquet_csv(tmp_path: Path) -> None:
    cases = make_cases(40)
    write_evalset(tmp_path / "v1", cases, provenance=PROV)
    ev = open_evalset(tmp_path / "v1")
    assert export_evalset(ev, tmp_path / "x.jsonl", "jsonl") == 40
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert [EvalCase.model_validate_json(x) for x in lines] == cases
    assert json.loads(lines[0]) == cases[0].model_dump(mode="json")
    assert export_evalset(ev, tmp_path / "x.parquet", "parquet") == 40
    assert pq.read_table(tmp_path / "x.parquet").equals(ev.table())
    assert export_evalset(ev, tmp_path / "x.csv", "csv") == 40
    import csv

    with open(tmp_path / "x.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert rows[0]["feedback_thumb"] == "up" and json.loads(rows[1]["history"])[0]["role"] == "user"
    assert json.loads(rows[3]["tags"]) == {"intent": "a", "cluster": "x"}


def test_jsonl_export_is_byte_for_byte_json_dumps(tmp_path: Path) -> None:
    # the column-at-a-time JSONL writer must give exactly json.dumps(row_to_json(row)) for
    # every value that needs care: escapes, unicode, empty vs null, odd floats and years
    import json as _json

    from synthloop.evalsets import _jsonl_bytes, _jsonl_chunks, columns_to_batch, row_to_json

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    texts = ["plain", 'say "hi"', "back\\slash", "line\nbreak\r\ttab", "ctl\x00\x01\x1f\x7f",
             "\u00e9t\u00e9 \u65e5\u672c \U0001f600 \u2028", "", None]
    floats = [0.0, -0.0, 1.0, 2102.9, 1e-5, 1e16, 123456789012345.6, float("nan"),
              float("inf"), float("-inf"), None, 1 / 3]
    n = 24
    cols = {
        "case_id": [f"c{i}" if i % 7 else texts[i % len(texts)] or f"c{i}" for i in range(n)],
        "session_id": [texts[i % len(texts)] for i in range(n)],
        "user_id": [None if i % 3 else f"u{i}" for i in range(n)],
        "turn": [None if i == 5 else i for i in range(n)],
        "timestamp": [None if i % 4 == 1 else t0 + timedelta(seconds=i, microseconds=i % 2 * 7)
                      for i in range(n - 1)] + [datetime(1, 1, 1, tzinfo=UTC)],
        "history": [None if i % 5 == 0 else [] if i % 5 == 1 else
                    [{"role": "user", "content": texts[i % len(texts)]}, None,
                     {"role": None, "content": "x"}] for i in range(n)],
        "input": [texts[(i + 1) % len(texts)] for i in range(n)],
        "context": [texts[(i + 2) % len(texts)] for i in range(n)],
        "references_good": [None if i % 4 == 0 else [texts[j % len(texts)] for j in range(i % 3)]
                            for i in range(n)],
        "references_bad": [[None, ""] if i % 2 else [] for i in range(n)],
        "reply": [texts[(i + 3) % len(texts)] for i in range(n)],
        "reply_latency_ms": [floats[i % len(floats)] for i in range(n)],
        "expected_feedback": [None if i % 3 == 0 else {
            "thumb": ["up", "down", None][i % 3], "rating": [None, -3, 5][i % 3],
            "comment": texts[i % len(texts)], "clicks": i, "read_time_s": floats[(i + 1) % 12],
            "watch_time_s": None, "copied": [None, True, False][i % 3], "regenerated": False,
            "edited": True, "abandoned": None, "feedback_delay_s": floats[(i + 5) % 12],
        } for i in range(n)],
        "tags": [None if i % 6 == 0 else [{"key": texts[i % 6] or "k", "value": texts[i % 8]},
                                          {"key": "z", "value": ""}] for i in range(n)],
    }
    batch = columns_to_batch(cols)
    want = "".join(_json.dumps(row_to_json(r), ensure_ascii=False) + "\n"
                   for r in batch.to_pylist()).encode()
    assert _jsonl_bytes(batch.slice(0, n - 1)) is not None  # the fast path is what is tested
    assert b"".join(_jsonl_chunks(batch, rows=5)) == want
    assert b"".join(_jsonl_chunks(batch.slice(3, 17))) == want.split(b"\n", 3)[3].rsplit(
        b"\n", 5)[0] + b"\n"
    # duplicate tag keys take the row-by-row path (a dict keeps the first place, last value)
    dup = columns_to_batch({"case_id": ["a"], "tags": [[{"key": "k", "value": "1"},
                                                        {"key": "j", "value": "2"},
                                                        {"key": "k", "value": "3"}]]})
    assert b"".join(_jsonl_chunks(dup)).decode().endswith('"tags": {"k": "3", "j": "2"}}\n')
    with EvalsetWriter(tmp_path / "v1", provenance=PROV) as w:
        w.write_batch(batch)
        w.close()
    export_evalset(open_evalset(tmp_path / "v1"), tmp_path / "x.jsonl", "jsonl")
    assert (tmp_path / "x.jsonl").read_bytes() == want


def test_export_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    write_evalset(tmp_path / "v1", make_cases(3), provenance=PROV)
    ev = open_evalset(tmp_path / "v1")
    (tmp_path / "x.jsonl").write_text("keep")
    with pytest.raises(DataError, match="already exists"):
        export_evalset(ev, tmp_path / "x.jsonl", "jsonl")
    assert (tmp_path / "x.jsonl").read_text() == "keep"
    export_evalset(ev, tmp_path / "x.jsonl", "jsonl", overwrite=True)
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 3

    def boom(n: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export_evalset(ev, tmp_path / "y.csv", "csv", on_batch=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1", "x.jsonl"]


# --------------------------------------------------------------------------- diff
def test_diff_counts_added_removed_changed(tmp_path: Path) -> None:
    a = make_cases(10)
    b = [c.model_copy(update={"input": "edited"}) if c.case_id == "c00003" else c for c in a[2:]]
    b += make_cases(2, prefix="new")
    write_evalset(tmp_path / "a", a, provenance=PROV)
    write_evalset(tmp_path / "b", b, provenance=Provenance(generator="test", seed=1))
    d = diff_versions(open_evalset(tmp_path / "a"), open_evalset(tmp_path / "b"))
    assert not d["identical"]
    assert (d["added"], d["removed"], d["changed"], d["unchanged"]) == (2, 2, 1, 7)
    assert d["removed_ids"] == ["c00000", "c00001"]
    assert d["changed_ids"] == ["c00003"]
    assert d["manifest_changes"]["seed"] == {"a": 0, "b": 1}
    same = diff_versions(open_evalset(tmp_path / "a"), open_evalset(tmp_path / "a"))
    assert same["identical"] and same["changed"] == 0
    assert len(diff_versions(open_evalset(tmp_path / "a"), open_evalset(tmp_path / "b"),
                             limit=1)["removed_ids"]) == 1
    # the library's diff() streams through diff_versions: it never loads a whole table
    import synthloop.evalsets as es

    def no_table(self: object) -> None:
        raise AssertionError("diff() loaded a whole table")

    mp = pytest.MonkeyPatch()
    mp.setattr(es.Evalset, "table", no_table)
    try:
        full = es.diff(open_evalset(tmp_path / "a"), open_evalset(tmp_path / "b"))
    finally:
        mp.undo()
    assert (full["added"], full["removed"], full["changed"]) == (
        ["new00000", "new00001"], ["c00000", "c00001"], ["c00003"])
    assert full["a"]["cases"] == 10 and full["b"]["cases"] == 10 and not full["identical"]
