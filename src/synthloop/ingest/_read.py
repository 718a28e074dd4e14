"""Read CSV, JSONL or Parquet logs into a frame, keeping each row's line number.

Line numbers are what a user sees in an editor: 1-based physical lines, the CSV header being
line 1 (a quoted field spanning lines gives its record's first line). Parquet rows have no line:
their 0-based row index is used instead.

A record that cannot be parsed at all (invalid JSON, a CSV record with the wrong number of
fields) is returned in `broken` with its line number and no content: its consent cannot be
determined, so its content must never reach an output.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from synthloop.errors import DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class RawLog:
    """A log as read: one object-dtype column per log column, plus line numbers."""

    frame: pd.DataFrame
    lines: np.ndarray
    header: list[str]
    format: str
    broken: list[tuple[int, str]] = field(default_factory=list)
    """Records that could not be parsed: (line, error)."""

    @property
    def read(self) -> int:
        return len(self.frame) + len(self.broken)


def _open_text(path: Path, encoding: str) -> IO[str]:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=enc, newline="")
    return open(path, encoding=enc, newline="")


def undecodable_line(path: Path, encoding: str = "utf-8") -> tuple[int, int] | None:
    """(line, byte within the line), both 1-based, of the first line of `path` (gzip or not)
    that does not decode as `encoding`; None when all do or it cannot tell (UTF-16/32)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return None  # their newlines are not single b"\n" bytes
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError as e:
                    return number, e.start + 1
    except (OSError, EOFError):
        return None
    return None


def read_log(path: Path, fmt: str, *, delimiter: str | None = None,
             encoding: str = "utf-8") -> RawLog:
    """Read a log file; raises DataError for an unreadable file (not for bad rows)."""
    try:
        if fmt == "csv":
            return _read_csv(path, delimiter, encoding)
        if fmt == "jsonl":
            return _read_jsonl(path, encoding)
        if fmt == "parquet":
            return _read_parquet(path)
    except UnicodeDecodeError as e:
        # the text reader decodes ahead in chunks: e.start is an offset in a chunk, not the file
        found = undecodable_line(path, encoding)
        where = f"line {found[0]}, byte {found[1]} of the line" if found else "somewhere"
        raise DataError(f"{path}: is not {encoding} text ({where}: {e.reason})",
                        hint="set `encoding:` in the mapping, or check the file and its format"
                        ) from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read the gzip file: {e}") from None
    raise DataError(f"{path}: unknown log format {fmt!r}", hint="use csv, jsonl or parquet")


def _read_csv(path: Path, delimiter: str | None, encoding: str) -> RawLog:
    if delimiter is None:
        name = path.name.lower().removesuffix(".gz")
        delimiter = "\t" if name.endswith(".tsv") else ","
    rows: list[list[str]] = []
    lines: list[int] = []
    broken: list[tuple[int, str]] = []
    header: list[str] | None = None
    with _open_text(path, encoding) as f:
        reader = csv.reader(f, delimiter=delimiter)
        last = 0
        while True:
            start = last + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e})",
                                hint="check the quoting, or set `delimiter:` in the mapping"
                                ) from None
            last = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if "\x00" in "".join(record):
                raise DataError(f"{path}: line {start}: NUL byte in a CSV record; "
                                "is this a binary file?", hint="check the file and `format:`")
            if header is None:
                header = [h.strip() for h in record]
                dup = sorted({h for h in header if header.count(h) > 1})
                if dup:
                    raise DataError(f"{path}: line {start}: the header repeats column "
                                    f"{dup[0]!r}", hint="give every column a unique name")
                continue
            if len(record) != len(header):
                broken.append((start, f"expected {len(header)} fields (the header's), "
                                      f"got {len(record)}"))
                continue
            rows.append(record)
            lines.append(start)
    if header is None:
        raise DataError(f"{path}: empty file: no header and no rows")
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(
        {h: pd.Series([], dtype=object) for h in header})
    return RawLog(frame, np.asarray(lines, dtype=np.int64), header, "csv", broken)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _read_jsonl(path: Path, encoding: str) -> RawLog:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    broken: list[tuple[int, str]] = []
    header: dict[str, None] = {}
    with _open_text(path, encoding) as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                broken.append((number, f"invalid JSON: {e.msg} at column {e.colno}"))
                continue
            if not isinstance(obj, dict):
                broken.append((number, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            flat = _flatten(obj)
            for key in flat:
                if key not in header:
                    header[key] = None
            records.append(flat)
            lines.append(number)
    if not records and not broken:
        raise DataError(f"{path}: empty file: no JSON lines")
    if not records:
        # not one line is a JSON object: not a log with some bad rows but not JSONL at all
        # (a JSON array, pretty-printed JSON, another format); say so, rather than that no
        # mapped column exists
        number, problem = broken[0]
        raise DataError(f"{path}: line {number}: {problem}; no line is a JSON object",
                        hint="JSONL needs one JSON object per line: a JSON array or "
                             "pretty-printed JSON is not JSONL; or set `format:` in the mapping")
    cols = list(header)
    data = {c: pd.Series([r.get(c) for r in records], dtype=object) for c in cols}
    frame = pd.DataFrame(data, columns=cols) if records else pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in cols})
    return RawLog(frame, np.asarray(lines, dtype=np.int64), cols, "jsonl", broken)


def _read_parquet(path: Path) -> RawLog:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet: {e}",
                        hint="check the file, or set `format:` in the mapping") from None
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    names = table.column_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: the Parquet schema repeats column {dup[0]!r}")
    nullable: dict[Any, Any] = {
        pa.int8(): pd.Int64Dtype(), pa.int16(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.Int64Dtype(), pa.uint16(): pd.Int64Dtype(),
        pa.uint32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
    }
    frame = table.to_pandas(types_mapper=nullable.get)
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.reset_index(drop=True)
    return RawLog(frame, np.arange(len(frame), dtype=np.int64), list(frame.columns), "parquet")
