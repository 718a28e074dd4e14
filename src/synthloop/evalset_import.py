"""Turn an existing JSONL or CSV file of prompts or interactions into an evalset version.

A field mapping says which field holds the input (required), and optionally the case id, tags,
good and bad references, session and history. Field names may be dotted paths into nested
JSON (`turns.0.content`, `meta.cluster`). Rows are streamed into an `EvalsetWriter`; any bad
row stops the import with one line naming the file and line, and nothing is written.

    synthloop evalset import questions.jsonl --input-field prompt --id-field uid \\
        --tag-field cluster --reference-field answer --out evalsets/arena/v1
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from synthloop.config import file_hash
from synthloop.errors import DataError
from synthloop.evalsets import ARROW_SCHEMA, EvalsetWriter, check_new_version
from synthloop.schema import EvalsetManifest, Provenance

FORMATS = ("jsonl", "csv")
BATCH_ROWS = 10_000
_MISSING = object()


@dataclass
class FieldMapping:
    """Which source field feeds which part of an EvalCase (dotted paths allowed)."""

    input: str
    """The user's input (required)."""
    id: str | None = None
    """Case id (default: `<line number>` as `row-000001`). Must be unique."""
    tags: list[str] = field(default_factory=list)
    """Fields copied into tags as `<last path part>=<value>`; a mapping value (or, in CSV, a
    JSON object) gives one tag per key."""
    reference: str | None = None
    """Good reference answer(s): a string, or a list of strings."""
    bad_reference: str | None = None
    """Bad reference answer(s): a string, or a list of strings."""
    session: str | None = None
    """Session id; rows of one session get turns 0, 1, 2, ... in file order."""
    history: str | None = None
    """Prior turns: a list of `{role, content}` or of strings (user first, alternating), or
    that list as a JSON string."""

    def fields(self) -> list[tuple[str, str]]:
        """(option name, field path) of every mapped field."""
        out = [("--input-field", self.input)]
        for opt, val in (("--id-field", self.id), ("--reference-field", self.reference),
                         ("--bad-reference-field", self.bad_reference),
                         ("--session-field", self.session), ("--history-field", self.history)):
            if val:
                out.append((opt, val))
        out += [("--tag-field", t) for t in self.tags]
        return out


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"unknown import format '{fmt}'", hint=f"use one of {', '.join(FORMATS)}")
        return fmt
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    raise DataError(f"{path}: cannot tell the format from the file name",
                    hint="pass --format jsonl or --format csv")


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]
        return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError(f"{path}: file not found", hint="check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSONL or CSV file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.__class__.__name__}: {e}") from None


def _not_utf8(path: Path, e: UnicodeDecodeError) -> DataError:
    """One line naming the first line that is not UTF-8 (the decoder reads ahead in chunks,
    so the line being parsed when it fails is not the bad one: find it in the bytes)."""
    from synthloop.ingest._read import undecodable_line

    found = undecodable_line(path)
    where = f"{found[0]}: byte {found[1]} of the line" if found else "?"
    return DataError(f"{path}:{where}: not UTF-8 text ({e.reason})",
                     hint="convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`")


def _readable(path: Path, rows: Iterator[tuple[int, dict[str, Any]]]
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    """`rows`, with undecodable bytes and broken gzip streams as one-line DataErrors."""
    try:
        yield from rows
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated or not gzip at all
        raise DataError(f"{path}: cannot read the gzip file: {e}",
                        hint="check the file, or drop the .gz suffix if it is not compressed"
                        ) from None


def _iter_jsonl(path: Path, f: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, "
                            f"got {type(obj).__name__}")
        yield lineno, obj


def _iter_csv(path: Path, f: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    reader = csv.DictReader(f, delimiter=delimiter)
    try:
        if not reader.fieldnames:
            return
        n_cols = len(reader.fieldnames)
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                got = n_cols + len(row.get(None) or []) if None in row else sum(
                    v is not None for v in row.values())
                raise DataError(f"{path}:{reader.line_num}: expected {n_cols} columns, got {got}")
            yield reader.line_num, row
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV: {e}") from None


def _get(obj: Any, path: str) -> Any:
    """Value at a dotted path (`a.b.0.c`), or `_MISSING`."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit():
            i = int(part)
            if not -len(cur) <= i < len(cur):
                return _MISSING
            cur = cur[i]
        else:
            return _MISSING
    return cur


def _check_columns(path: Path, mapping: FieldMapping, columns: list[str],
                   first: dict[str, Any]) -> None:
    """Every mapped field exists in the first row; else one line with a did-you-mean."""
    for opt, fpath in mapping.fields():
        if _get(first, fpath) is not _MISSING:
            continue
        head = fpath.split(".")[0]
        if head in columns:  # the top-level field exists; the nested path does not
            raise DataError(f"{path}: {opt} {fpath}: not found in the first row "
                            f"(field '{head}' has no '{fpath[len(head) + 1:]}')")
        close = difflib.get_close_matches(head, columns, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"{path}: {opt} {fpath}: no such field ({hint}fields: "
                        f"{', '.join(columns)})")


def _text(value: Any, where: str, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise DataError(f"{where}: {what} must be text, got "
                        f"{'null' if value is None else type(value).__name__}")
    return str(value)


def _maybe_json(value: Any, is_csv: bool) -> Any:
    if is_csv and isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _references(value: Any, where: str, what: str, is_csv: bool) -> list[str]:
    value = _maybe_json(value, is_csv)
    if value is _MISSING or value is None or value == "":
        return []
    if isinstance(value, list):
        return [_text(v, where, what) for v in value if v is not None]
    return [_text(value, where, what)]


def _history(value: Any, where: str, is_csv: bool) -> list[dict[str, str]]:
    value = _maybe_json(value, is_csv or isinstance(value, str))
    if value is _MISSING or value is None or value == "":
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: history must be a list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if isinstance(m, str):
            out.append({"role": "user" if i % 2 == 0 else "assistant", "content": m})
        elif isinstance(m, dict) and "content" in m:
            role = m.get("role", "user" if i % 2 == 0 else "assistant")
            if role not in ("system", "user", "assistant"):
                raise DataError(f"{where}: history[{i}].role must be system, user or assistant "
                                f"(got {role!r})")
            out.append({"role": role, "content": _text(m["content"], where, f"history[{i}].content")})
        else:
            raise DataError(f"{where}: history[{i}] must be a string or an object with 'content'")
    return out


def import_file(
    source: str | Path,
    out: str | Path,
    mapping: FieldMapping,
    *,
    fmt: str | None = None,
    name: str | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> EvalsetManifest:
    """Import a JSONL/CSV file into a new evalset version at `out` (atomic; nothing on error)."""
    path = Path(source)
    kind = detect_format(path, fmt)
    dest = check_new_version(out)
    is_csv = kind == "csv"
    seen_ids: dict[str, int] = {}
    session_turns: dict[str, int] = {}
    created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    with _open_text(path) as f:
        rows_iter = _readable(path, _iter_csv(path, f) if is_csv else _iter_jsonl(path, f))
        first = next(rows_iter, None)
        if first is None:
            raise DataError(f"{path}: no rows to import (the file is empty)")
        _check_columns(path, mapping, list(first[1].keys()), first[1])
        provenance = Provenance(
            generator="import",
            source_data_hash="sha256:" + file_hash(path),
            details={"source": str(path), "format": kind,
                     "mapping": {k: v for k, v in asdict(mapping).items() if v}},
        )
        try:
            with EvalsetWriter(dest, provenance=provenance, name=name, count_sessions=False) as w:
                buf: list[dict[str, Any]] = []
                n = 0
                for lineno, obj in itertools.chain([first], rows_iter):
                    n += 1
                    buf.append(_row(obj, mapping, f"{path}:{lineno}", lineno, n, is_csv,
                                    seen_ids, session_turns))
                    if len(buf) >= BATCH_ROWS:
                        w.write_batch(pa.RecordBatch.from_pylist(buf, schema=ARROW_SCHEMA))
                        if on_rows is not None:
                            on_rows(len(buf))
                        buf = []
                if buf:
                    w.write_batch(pa.RecordBatch.from_pylist(buf, schema=ARROW_SCHEMA))
                    if on_rows is not None:
                        on_rows(len(buf))
                sessions = len(session_turns) if mapping.session else n
                return w.close(sessions=sessions, interactions=n)
        except BaseException:
            for d in created:  # folders made only for this version go too (deepest first)
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise


def _row(obj: dict[str, Any], m: FieldMapping, where: str, lineno: int, n: int, is_csv: bool,
         seen_ids: dict[str, int], session_turns: dict[str, int]) -> dict[str, Any]:
    raw = _get(obj, m.input)
    if raw is _MISSING:
        raise DataError(f"{where}: field '{m.input}' is missing (--input-field)")
    text = _text(raw, where, f"input field '{m.input}'")
    if not text.strip():
        raise DataError(f"{where}: input field '{m.input}' is empty")
    if m.id:
        raw_id = _get(obj, m.id)
        if raw_id is _MISSING or raw_id is None or raw_id == "":
            raise DataError(f"{where}: id field '{m.id}' is missing or empty (--id-field)")
        case_id = _text(raw_id, where, f"id field '{m.id}'")
    else:
        case_id = f"row-{n:06d}"
    if case_id in seen_ids:
        raise DataError(f"{where}: duplicate case id '{case_id}' (first on line "
                        f"{seen_ids[case_id]}); ids must be unique")
    seen_ids[case_id] = lineno
    session_id = None
    turn = 0
    if m.session:
        raw_s = _get(obj, m.session)
        if raw_s is _MISSING:
            raise DataError(f"{where}: session field '{m.session}' is missing")
        if raw_s is not None and raw_s != "":  # null or empty: a case in a session of its own
            session_id = _text(raw_s, where, f"session field '{m.session}'")
            turn = session_turns.get(session_id, 0)
            session_turns[session_id] = turn + 1
        else:
            session_turns[f"\x00{n}"] = 1  # counted as one session, never matched by an id
    tags = []
    for t in m.tags:
        v = _maybe_json(_get(obj, t), is_csv)
        if v is _MISSING or v is None or v == "":
            continue
        # a mapping (e.g. the `tags` of an exported evalset) becomes one tag per key
        items = v.items() if isinstance(v, dict) else [(t.rsplit(".", 1)[-1], v)]
        for key, val in items:
            if val is None:
                continue
            tags.append({"key": str(key),
                         "value": val if isinstance(val, str) else json.dumps(val, ensure_ascii=False)})
    return {
        "case_id": case_id,
        "session_id": session_id,
        "user_id": None,
        "turn": turn,
        "timestamp": None,
        "history": _history(_get(obj, m.history), where, is_csv) if m.history else [],
        "input": text,
        "context": None,
        "references_good": _references(_get(obj, m.reference), where, "reference", is_csv)
        if m.reference else [],
        "references_bad": _references(_get(obj, m.bad_reference), where, "bad reference", is_csv)
        if m.bad_reference else [],
        "reply": None,
        "reply_latency_ms": None,
        "expected_feedback": None,
        "tags": tags,
    }
