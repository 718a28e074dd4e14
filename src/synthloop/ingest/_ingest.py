"""`ingest(LOGS, MAPPING, OUT)`: real logs -> a consented, validated, PII-scrubbed sample.

Order of work (each step sees only what the previous one let through):

1. read the log (CSV / JSONL / Parquet), keeping line numbers; records that cannot be parsed
   at all are invalid and their content is never written (their consent is unknown);
2. check the mapping against the log's columns (one error listing every missing column);
3. **consent**: drop every row not consented for the use at its timestamp, before anything
   else touches it; such rows are only counted (a row both invalid and non-consenting counts
   as excluded for consent and is never written);
4. validate the consented rows (types, ranges, required fields) — bad rows go to the
   quarantine file with their line numbers and messages; too many bad rows refuse the log;
5. scrub PII from every free-text value (sample and quarantine alike), pseudonymise ids that
   hold PII;
6. write `sample.parquet`, `report.json`, `quarantine.jsonl` and `manifest.json` into a
   temporary directory and rename it into place. Bad input writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from synthloop import __version__
from synthloop.config import file_hash, load_model, read_text, validate_data
from synthloop.errors import ConfigError, ConsentError, DataError
from synthloop.ingest._mapping import (
    BOOL,
    CATEGORY,
    FIELDS,
    FLOAT,
    ID,
    INT,
    RATING,
    TEXT,
    THUMB,
    TIMESTAMP,
    LogMapping,
    format_from_path,
)
from synthloop.ingest._parse import (
    blank_mask,
    infer_extra,
    parse_choice,
    parse_flags,
    parse_float,
    parse_int,
    parse_timestamps,
    to_text,
)
from synthloop.ingest._read import RawLog, read_log
from synthloop.privacy import PII_TYPES, Scrubber, decide_consent, uses_contain
from synthloop.progress import progress_bar

SAMPLE = "sample.parquet"
REPORT = "report.json"
QUARANTINE = "quarantine.jsonl"
MANIFEST = "manifest.json"
MANIFEST_KIND = "synthloop.ingest"
INGEST_SCHEMA_VERSION = "1.0"

_STR = pa.string()
_F64 = pa.float64()
_I64 = pa.int64()
_BOOL = pa.bool_()
SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("interaction_id", _STR, nullable=False),
        pa.field("session_id", _STR, nullable=False),
        pa.field("user_id", _STR, nullable=False),
        pa.field("turn", _I64, nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("persona", _STR),
        pa.field("intent", _STR),
        pa.field("locale", _STR),
        pa.field("input", _STR),
        pa.field("context", _STR),
        pa.field("output", _STR),
        pa.field("model_version", _STR),
        pa.field("latency_ms", _F64),
        pa.field("feedback.thumb", _STR),
        pa.field("feedback.rating", _I64),
        pa.field("feedback.comment", _STR),
        pa.field("feedback.clicks", _I64),
        pa.field("feedback.read_time_s", _F64),
        pa.field("feedback.watch_time_s", _F64),
        pa.field("feedback.feedback_delay_s", _F64),
        pa.field("feedback.copied", _BOOL),
        pa.field("feedback.regenerated", _BOOL),
        pa.field("feedback.edited", _BOOL),
        pa.field("feedback.abandoned", _BOOL),
    ]
)
"""The fixed columns of `sample.parquet`; `extra.<name>` columns follow them."""

_NON_NEGATIVE = {"turn", "latency_ms", "feedback.clicks", "feedback.read_time_s",
                 "feedback.watch_time_s", "feedback.feedback_delay_s"}
_REQUIRED = {"interaction_id", "session_id", "user_id", "timestamp", "input"}
"""Fields that must be non-empty in every row, when they are mapped."""


# --------------------------------------------------------------------------- report models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestCounts(_Model):
    """Row and user counts of one ingest."""

    read: int
    """Data records in the log (header and blank lines excluded)."""
    invalid: int
    """Consented (or undeterminable) rows that failed validation; listed in the quarantine."""
    excluded_consent: int
    """Rows dropped because consent for the use was missing, revoked or undeterminable."""
    used: int
    """Rows in the sample: read - invalid - excluded_consent."""
    users_used: int
    """Distinct users in the sample."""
    sessions_used: int
    """Distinct sessions in the sample."""
    users_excluded_consent: int
    """Distinct users with at least one row excluded for consent."""


class ConsentSummary(_Model):
    """How consent was decided."""

    use: str
    """The use rows were filtered for (default `synthetic_fit`)."""
    basis: str
    """`column:<name>` (or `columns:<a>,<b>`) when read from the log, `assumed: <basis>` else."""
    assumed: bool
    """True when consent was assumed by the mapping (`consent: {assume: true, basis: ...}`)."""
    excluded_reasons: dict[str, int] = Field(default_factory=dict)
    """Excluded rows per reason: not_granted, unrecognised, before_granted, revoked,
    undetermined."""
    policy_versions: list[str] = Field(default_factory=list)
    """Distinct consent policy versions among the used rows (when mapped)."""


class SourceInfo(_Model):
    """The log that was ingested."""

    path: str
    sha256: str
    format: str
    bytes: int


class IngestReport(_Model):
    """`report.json` of an ingest output."""

    schema_version: str = INGEST_SCHEMA_VERSION
    counts: IngestCounts
    consent: ConsentSummary
    pii: dict[str, int]
    """Replacements per PII type across everything written (sample and quarantine)."""
    pii_by_column: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Replacements per sample column (quarantine under `quarantine`), non-zero types only."""
    pii_replace: Literal["placeholder", "faker"] = "placeholder"
    pii_seed: int = 0
    source: SourceInfo
    mapping_hash: str
    columns: list[str]
    """Every column of sample.parquet, in order."""
    mapped: dict[str, str] = Field(default_factory=dict)
    """Sample column -> log column, for the columns that carry log data (incl. extra.*)."""
    max_invalid: float = 0.1


class IngestManifest(IngestReport):
    """`manifest.json` of an ingest output: the report plus provenance metadata."""

    kind: Literal["synthloop.ingest"] = "synthloop.ingest"
    package_version: str
    created_at: datetime
    files: dict[str, str] = Field(default_factory=dict)
    """sha256 of sample.parquet, report.json and quarantine.jsonl."""


# --------------------------------------------------------------------------- mapping
@dataclass
class _Resolved:
    mapping: LogMapping
    source: str
    names: list[str]
    names_hash: str | None


def _resolve_mapping(mapping: Path | str | LogMapping | Mapping[str, Any]) -> _Resolved:
    base = Path.cwd()
    if isinstance(mapping, LogMapping):
        m, source = mapping, "mapping"
    elif isinstance(mapping, Mapping):
        m, source = validate_data(dict(mapping), LogMapping, "mapping"), "mapping"
    else:
        path = Path(mapping)
        m, source = load_model(path, LogMapping), str(path)
        base = path.parent
    names = [n for n in m.pii.names if n.strip()]
    names_hash = None
    if m.pii.names_file is not None:
        nf = m.pii.names_file if m.pii.names_file.is_absolute() else base / m.pii.names_file
        try:
            text = read_text(nf, "names file")
        except ConfigError as e:
            raise ConfigError(f"{source}: pii.names_file: {e}") from None
        names += [line.strip() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
        names_hash = hashlib.sha256(text.encode()).hexdigest()
    return _Resolved(m, source, names, names_hash)


def _check_columns(raw: RawLog, m: LogMapping, logs: Path, source: str) -> list[str]:
    """Every mapped and extra column exists; returns the extra columns to keep."""
    import difflib

    header = raw.header
    present = set(header)
    problems: list[str] = []

    def missing(where: str, col: str) -> None:
        close = difflib.get_close_matches(col, header, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]!r}?"
        else:
            shown = ", ".join(repr(h) for h in header[:12])
            hint = f"its columns: {shown}{', ...' if len(header) > 12 else ''}"
        problems.append(f"{source}: {where}: column {col!r} is not in {logs} ({hint})")

    for field, col in m.columns.items():
        if col not in present:
            missing(f"columns.{field}", col)
    mapped_cols = set(m.columns.values())
    if m.extra == "all":
        # consent columns for other uses are consent records, not data about the interaction:
        # `all` leaves them out (list one under `extra:` to keep it anyway)
        extra = [h for h in header if h not in mapped_cols and "consent" not in h.lower()]
    else:
        extra = []
        for i, col in enumerate(m.extra):
            if col not in present:
                missing(f"extra[{i}]", col)
            elif col in mapped_cols:
                field = next(k for k, v in m.columns.items() if v == col)
                problems.append(f"{source}: extra[{i}]: column {col!r} is already mapped to "
                                f"{field} (remove it from extra)")
            elif col not in extra:
                extra.append(col)
    if problems:
        head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
        raise ConfigError(head, problems=problems)
    return extra


# --------------------------------------------------------------------------- helpers
def _show(v: Any, limit: int = 40) -> str:
    text = repr(v) if not isinstance(v, str) else repr(v.strip())
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _jsonable(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, datetime | pd.Timestamp):
        return v.isoformat()
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, str | int | float | bool):
        return v
    return str(v)


def _scrub_json(v: Any, scrubber: Scrubber, uid: str | None, sid: str | None) -> Any:
    if isinstance(v, str):
        return scrubber.scrub(v, user_id=uid, session_id=sid)
    if isinstance(v, list):
        return [_scrub_json(x, scrubber, uid, sid) for x in v]
    if isinstance(v, dict):
        return {k: _scrub_json(x, scrubber, uid, sid) for k, x in v.items()}
    return v


def _counts_delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in PII_TYPES if after[k] - before[k]}


def _pseudonym(prefix: str, value: str, seed: int) -> str:
    digest = hashlib.sha256(f"synthloop-id\x1f{seed}\x1f{value}".encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"


def _scrub_ids(values: pd.Series, field: str, scrubber: Scrubber, seed: int
               ) -> tuple[pd.Series, Counter[str]]:
    """Ids that contain PII (an e-mail as user id, ...) become stable keyed pseudonyms."""
    counts: Counter[str] = Counter()
    replace: dict[str, str] = {}
    freq = values.value_counts(dropna=True)
    for value, n in freq.items():
        found = scrubber.find(str(value))
        if found:
            replace[str(value)] = _pseudonym(field.removesuffix("_id"), str(value), seed)
            for m in found:
                counts[m.kind] += int(n)
    if not replace:
        return values, counts
    return values.map(lambda v: replace.get(v, v) if isinstance(v, str) else v), counts


def _scrub_by_value(values: pd.Series, scrubber: Scrubber) -> tuple[pd.Series, Counter[str]]:
    """Scrub a low-cardinality text column once per distinct value (no user context)."""
    counts: Counter[str] = Counter()
    mapping: dict[str, str] = {}
    for value, n in values.value_counts(dropna=True).items():
        if not isinstance(value, str):
            continue
        found = scrubber.find(value)
        if found:
            mapping[value] = scrubber.redact(value, found)
            for m in found:
                counts[m.kind] += int(n)
    if not mapping:
        return values, counts
    return values.map(lambda v: mapping.get(v, v) if isinstance(v, str) else v), counts


# --------------------------------------------------------------------------- stages
@dataclass
class _Consent:
    """Stage 1: which rows may be used."""

    allowed: np.ndarray
    reasons: dict[str, int]
    users_excluded: int
    basis: str

    @property
    def excluded(self) -> int:
        return int((~self.allowed).sum())


def _consent_stage(frame: pd.DataFrame, m: LogMapping, row_time: pd.Series | None,
                   user_key: pd.Series | None) -> _Consent:
    n = len(frame)
    if m.consent.assume:
        return _Consent(np.ones(n, dtype=bool), {}, 0, f"assumed: {m.consent.basis}")
    cols, use, bools = m.columns, m.consent.use, m.bool_values
    flag_col = cols.get(f"consent.{use}")
    uses_col = cols.get("consent.uses")
    granted = unrecognised = uses_granted = None
    if flag_col is not None:
        flags, unrecognised = parse_flags(frame[flag_col], bools.true, bools.false)
        granted = np.asarray(flags.fillna(False), dtype=bool)
    if uses_col is not None:
        uses_granted = uses_contain(frame[uses_col], use)
    g_at = g_bad = r_at = r_bad = None
    if "consent.granted_at" in cols:
        g_at, g_bad = parse_timestamps(frame[cols["consent.granted_at"]], m.timestamp_format)
    if "consent.revoked_at" in cols:
        r_at, r_bad = parse_timestamps(frame[cols["consent.revoked_at"]], m.timestamp_format)
    decision = decide_consent(
        n, granted=granted, granted_unrecognised=unrecognised, uses_granted=uses_granted,
        row_time=row_time, granted_at=g_at, granted_at_bad=g_bad, revoked_at=r_at,
        revoked_at_bad=r_bad, user_ids=user_key)
    users_excluded = decision.users_excluded if user_key is not None else decision.excluded
    if flag_col and uses_col:
        basis = f"columns:{flag_col},{uses_col}"
    else:
        basis = f"column:{flag_col or uses_col}"
    return _Consent(decision.allowed, decision.reasons, users_excluded, basis)


@dataclass
class _Validated:
    """Stage 2: parsed mapped fields of the consented rows, and each bad row's messages."""

    parsed: dict[str, Any]
    errors: dict[int, list[str]]


def _validate_stage(frame: pd.DataFrame, lines: np.ndarray, m: LogMapping,
                    row_time: pd.Series | None, ts_bad: np.ndarray) -> _Validated:
    errors: dict[int, list[str]] = defaultdict(list)
    parsed: dict[str, Any] = {}
    bools = m.bool_values

    def report_bad(mask: np.ndarray, column: pd.Series, template: str) -> None:
        """Add `template` (with `{v}` = the offending value) to each masked row's errors."""
        for i in np.flatnonzero(mask):
            errors[int(i)].append(template.replace("{v}", _show(column.iloc[i])))

    for field, col in m.field_columns().items():
        kind = FIELDS[field]
        column = frame[col]
        blank = blank_mask(column)
        if field in _REQUIRED:
            report_bad(blank, column, f"{field}: missing (column {col!r} is empty)")
        if kind in (ID, TEXT, CATEGORY):
            parsed[field] = to_text(column, blank)
        elif kind == TIMESTAMP:
            assert row_time is not None
            parsed[field] = row_time
            expected = m.timestamp_format or "ISO 8601 expected"
            report_bad(ts_bad, column, f"{field}: cannot parse {{v}} as a time ({expected}; "
                                       "set timestamp_format)")
        elif kind == FLOAT:
            arr, bad = parse_float(column, blank)
            report_bad(bad, column, f"{field}: {{v}} is not a number")
            report_bad(np.nan_to_num(arr, nan=0.0) < 0, column, f"{field}: {{v}} is negative")
            parsed[field] = arr
        elif kind in (INT, RATING):
            ints, bad = parse_int(column, blank)
            report_bad(bad, column, f"{field}: {{v}} is not a whole number")
            vals = np.asarray(ints.fillna(0), dtype=np.int64)
            if kind == RATING:
                lo, hi = m.rating_range
                out_of = ~np.asarray(ints.isna()) & ((vals < lo) | (vals > hi))
                report_bad(out_of, column, f"{field}: {{v}} is outside {lo}-{hi} "
                                           "(set rating_range)")
            elif field in _NON_NEGATIVE:
                report_bad(vals < 0, column, f"{field}: {{v}} is negative")
            parsed[field] = ints
        elif kind == THUMB:
            thumbs, bad = parse_choice(
                column, {"up": m.thumb_values.up, "down": m.thumb_values.down,
                         "none": m.thumb_values.none}, "none", blank)
            report_bad(bad, column, "feedback.thumb: unknown value {v} (add it to thumb_values "
                                    "up/down/none)")
            parsed[field] = thumbs
        elif kind == BOOL:
            flags, bad = parse_flags(column, bools.true, bools.false, blank)
            report_bad(bad, column, f"{field}: {{v}} is not true/false (add it to bool_values)")
            parsed[field] = flags
    if "interaction_id" in parsed:
        ids = parsed["interaction_id"]
        dup = (ids.duplicated(keep="first") & ids.notna()).to_numpy()
        if dup.any():
            first_line = {v: int(lines[i]) for i, v in reversed(list(enumerate(ids)))
                          if isinstance(v, str)}
            for i in np.flatnonzero(dup):
                errors[int(i)].append(
                    f"interaction_id: duplicate of line {first_line[ids.iloc[i]]}")
    return _Validated(parsed, errors)


class _PiiTally:
    """Replacements per PII type, in total and per written column."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter({k: 0 for k in PII_TYPES})
        self.by_column: dict[str, dict[str, int]] = {}

    def add(self, column: str, counts: Mapping[str, int]) -> None:
        found = {k: int(v) for k, v in counts.items() if v}
        if found:
            merged = Counter(self.by_column.get(column, {}))
            merged.update(found)
            self.by_column[column] = dict(merged)
            self.total.update(found)


def _sample_stage(frame: pd.DataFrame, lines: np.ndarray, used: np.ndarray, m: LogMapping,
                  val: _Validated, row_time: pd.Series | None, extra_cols: list[str],
                  scrubber: Scrubber, tally: _PiiTally, progress: bool | None) -> pa.Table:
    """Stage 3: the used rows as the fixed sample schema, every text scrubbed."""
    parsed = val.parsed
    upos = np.flatnonzero(used)
    n = len(upos)
    u_lines = lines[upos]

    def take(values: Any) -> Any:
        if isinstance(values, pd.Series):
            return values.iloc[upos].reset_index(drop=True)
        return values[upos]

    columns: dict[str, Any] = {}
    # ids; the raw values key the faker surrogates (consistent per user and session)
    if "session_id" in parsed:
        raw_session = take(parsed["session_id"])
    else:
        raw_session = pd.Series([f"row-{ln}" for ln in u_lines], dtype=object)
    raw_user = take(parsed["user_id"]) if "user_id" in parsed else raw_session
    session, c_s = _scrub_ids(raw_session, "session_id", scrubber, m.pii.seed)
    user, c_u = _scrub_ids(raw_user, "user_id", scrubber, m.pii.seed)
    tally.add("session_id", c_s)
    tally.add("user_id", c_u)
    ts = take(row_time) if row_time is not None else pd.Series(
        pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    if "turn" in parsed:
        turn = np.asarray(take(parsed["turn"]).fillna(0), dtype=np.int64)
    else:  # order within the session: by time, then by line
        order = pd.DataFrame({"s": session.to_numpy(), "t": ts, "l": u_lines})
        order = order.sort_values(["s", "t", "l"], na_position="last", kind="mergesort")
        turn = order.groupby("s", sort=False).cumcount().reindex(range(n)).to_numpy(
            dtype=np.int64)
    if "interaction_id" in parsed:
        iid, c_i = _scrub_ids(take(parsed["interaction_id"]), "interaction_id", scrubber,
                              m.pii.seed)
        tally.add("interaction_id", c_i)
    else:
        iid = pd.Series([f"{s}-{t}" for s, t in zip(session, turn, strict=True)], dtype=object)
        dup = iid.duplicated(keep=False).to_numpy()
        if dup.any():
            iid[dup] = [f"{iid[i]}-{u_lines[i]}" for i in np.flatnonzero(dup)]
    columns.update(interaction_id=iid, session_id=session, user_id=user, turn=turn, timestamp=ts)

    text_fields = [f for f in parsed if FIELDS[f] == TEXT]
    u_ids, s_ids = raw_user.tolist(), raw_session.tolist()
    chunk = 20_000
    with progress_bar(total=n * max(1, len(text_fields)), description="scrub",
                      enabled=progress) as bar:
        for field in text_fields:
            before = Counter(scrubber.counts)
            values = take(parsed[field]).tolist()
            scrubbed: list[Any] = []
            for start in range(0, len(values), chunk):
                stop = start + chunk
                scrubbed += scrubber.scrub_many(values[start:stop], u_ids[start:stop],
                                                s_ids[start:stop])
                bar.advance(min(chunk, len(values) - start))
            columns[field] = pd.Series(scrubbed, dtype=object)
            tally.add(field, _counts_delta(scrubber.counts, before))
        if not text_fields:
            bar.advance(n)
    for field in parsed:
        kind = FIELDS[field]
        if kind == CATEGORY:
            values, c = _scrub_by_value(take(parsed[field]), scrubber)
            columns[field] = values
            tally.add(field, c)
        elif kind in (FLOAT, INT, RATING, THUMB, BOOL) and field != "turn":
            columns[field] = take(parsed[field])
    if "feedback.thumb" not in columns:
        columns["feedback.thumb"] = np.full(n, "none", dtype=object)

    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for f in SAMPLE_SCHEMA:
        values = columns.get(f.name)
        if values is None:
            arr = pa.nulls(n, type=f.type)
        elif isinstance(values, pd.Series) and pd.api.types.is_datetime64_any_dtype(values):
            arr = pa.Array.from_pandas(values).cast(f.type)
        else:
            arr = pa.array(values, type=f.type, from_pandas=True)
        arrays.append(arr)
        fields.append(f)
    for col in extra_cols:
        values = infer_extra(frame[col].iloc[upos].reset_index(drop=True))
        if values.dtype == object:
            values, c = _scrub_by_value(values, scrubber)
            tally.add(f"extra.{col}", c)
            arr = pa.array(values, type=pa.string(), from_pandas=True)
        elif pd.api.types.is_datetime64_any_dtype(values):
            arr = pa.Array.from_pandas(values).cast(pa.timestamp("us", tz="UTC"))
        else:
            arr = pa.array(values, from_pandas=True)
        arrays.append(arr)
        fields.append(pa.field(f"extra.{col}", arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _quarantine_stage(frame: pd.DataFrame, lines: np.ndarray, raw: RawLog, val: _Validated,
                      scrubber: Scrubber, tally: _PiiTally) -> list[dict[str, Any]]:
    """Stage 4: one scrubbed entry per invalid row, in line order."""
    entries: list[dict[str, Any]] = [
        {"line": ln, "errors": [msg], "row": None} for ln, msg in raw.broken]
    if val.errors:
        before = Counter(scrubber.counts)
        header = list(frame.columns)
        sessions = val.parsed.get("session_id")
        users = val.parsed.get("user_id")
        for i in sorted(val.errors):
            uid = users.iloc[i] if users is not None else None
            sid = sessions.iloc[i] if sessions is not None else None
            row = {h: _scrub_json(_jsonable(frame[h].iloc[i]), scrubber, uid, sid)
                   for h in header}
            msgs = [scrubber.scrub(e, user_id=uid, session_id=sid) for e in val.errors[i]]
            entries.append({"line": int(lines[i]), "errors": msgs, "row": row})
        tally.add("quarantine", _counts_delta(scrubber.counts, before))
    entries.sort(key=lambda q: q["line"])
    return entries


# --------------------------------------------------------------------------- main
def ingest(
    logs: str | Path,
    mapping: str | Path | LogMapping | Mapping[str, Any],
    out: str | Path,
    *,
    max_invalid: float | None = None,
    progress: bool | None = None,
) -> IngestReport:
    """Read LOGS with MAPPING; write the consented, scrubbed sample to the new directory OUT.

    Returns the report (also written as `OUT/report.json`). Raises `ConfigError` (mapping),
    `ConsentError` (no consent column / nothing consented) or `DataError` (unreadable log, too
    many invalid rows, OUT exists); on any error nothing is written.
    """
    logs, out = Path(logs), Path(out)
    resolved = _resolve_mapping(mapping)
    m, source = resolved.mapping, resolved.source
    limit = m.max_invalid if max_invalid is None else max_invalid
    if not 0 <= limit <= 1:
        raise ConfigError(f"max_invalid must be a share between 0 and 1 (got {limit})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists; an ingest output is never overwritten",
                        hint="choose a new --out directory")
    if not logs.exists():
        raise DataError(f"{logs}: log file not found", hint="check the path")
    if logs.is_dir():
        raise DataError(f"{logs}: is a directory, expected a log file (CSV, JSONL or Parquet)")
    fmt = m.format or format_from_path(logs)
    if fmt is None:
        raise ConfigError(f"{source}: format: cannot tell the format of {logs.name} from its "
                          "extension; set `format: csv`, `jsonl` or `parquet`")

    raw = read_log(logs, fmt, delimiter=m.delimiter, encoding=m.encoding)
    use = m.consent.use
    if not m.consent.assume and not m.grants_mapped():
        candidates = [h for h in raw.header if "consent" in h.lower() or "opt" in h.lower()]
        hint = f"its columns include {candidates[0]!r}" if candidates else None
        raise ConsentError(
            f"{logs} has no consent column for {use}; map `consent.{use}` (or `consent.uses`) "
            f"or state `consent: {{assume: true, basis: ...}}` in {source}", hint=hint)
    extra_cols = _check_columns(raw, m, logs, source)
    if raw.read == 0:
        raise DataError(f"{logs}: no data rows (only a header)")

    # 1. consent, first: rows without it leave here, and nothing below ever sees them
    frame = raw.frame
    row_time: pd.Series | None = None
    ts_bad = np.zeros(len(frame), dtype=bool)
    if "timestamp" in m.columns:
        row_time, ts_bad = parse_timestamps(frame[m.columns["timestamp"]], m.timestamp_format)
    user_col = m.columns.get("user_id") or m.columns.get("session_id")
    user_key = to_text(frame[user_col]) if user_col is not None else None
    consent = _consent_stage(frame, m, row_time, user_key)
    keep = np.flatnonzero(consent.allowed)
    frame = frame.iloc[keep].reset_index(drop=True)
    lines = raw.lines[keep]
    if row_time is not None:
        row_time = row_time.iloc[keep].reset_index(drop=True)
        ts_bad = ts_bad[keep]

    # 2. validation of the consented rows
    val = _validate_stage(frame, lines, m, row_time, ts_bad)
    invalid = len(val.errors) + len(raw.broken)
    checked = len(frame) + len(raw.broken)
    scrubber = Scrubber(resolved.names, replace=m.pii.replace, seed=m.pii.seed,
                        detect=m.pii.detect, locale=m.pii.locale)
    if invalid and invalid / checked > limit:
        first = sorted([(int(lines[i]), msgs[0]) for i, msgs in val.errors.items()]
                       + raw.broken)[0]
        where = "row" if raw.format == "parquet" else "line"
        raise DataError(
            f"{logs}: {invalid:,} of {checked:,} rows checked are invalid "
            f"({invalid / checked:.1%}, above max_invalid {limit:.0%}); first: "
            f"{where} {first[0]}: {scrubber.scrub(first[1])}",
            hint="fix the mapping (timestamp_format, thumb_values, bool_values, ...) or the log, "
                 "or raise max_invalid / --max-invalid; nothing was written")
    used = np.ones(len(frame), dtype=bool)
    used[list(val.errors)] = False
    n_used = int(used.sum())
    if n_used == 0:
        if consent.excluded and not invalid:
            raise ConsentError(
                f"{logs}: no rows left to use: all {raw.read:,} rows lack consent for {use} "
                f"({_reasons(consent.reasons)}); nothing written",
                hint="check the consent column mapping and bool_values")
        raise DataError(
            f"{logs}: no usable rows: {raw.read:,} read, {invalid:,} invalid, "
            f"{consent.excluded:,} excluded for consent; nothing written")

    # 3-4. the scrubbed sample and quarantine
    tally = _PiiTally()
    table = _sample_stage(frame, lines, used, m, val, row_time, extra_cols, scrubber, tally,
                          progress)
    quarantine = _quarantine_stage(frame, lines, raw, val, scrubber, tally)
    policy_versions: list[str] = []
    if "consent.policy_version" in m.columns:
        pv = to_text(frame[m.columns["consent.policy_version"]].iloc[np.flatnonzero(used)])
        policy_versions = sorted({scrubber.scrub(v) for v in pv.dropna().unique()})[:50]

    mapped = dict(m.field_columns())
    mapped.update({f"extra.{c}": c for c in extra_cols})
    report = IngestReport(
        counts=IngestCounts(
            read=raw.read, invalid=invalid, excluded_consent=consent.excluded, used=n_used,
            users_used=int(pc.count_distinct(table.column("user_id")).as_py()),
            sessions_used=int(pc.count_distinct(table.column("session_id")).as_py()),
            users_excluded_consent=consent.users_excluded,
        ),
        consent=ConsentSummary(use=use, basis=consent.basis, assumed=m.consent.assume,
                               excluded_reasons=consent.reasons,
                               policy_versions=policy_versions),
        pii={k: int(tally.total[k]) for k in PII_TYPES},
        pii_by_column=tally.by_column,
        pii_replace=m.pii.replace,
        pii_seed=m.pii.seed,
        source=SourceInfo(path=str(logs), sha256=file_hash(logs), format=fmt,
                          bytes=logs.stat().st_size),
        mapping_hash=m.digest(resolved.names_hash),
        columns=table.column_names,
        mapped=mapped,
        max_invalid=limit,
    )
    _write(out, table, report, quarantine)
    return report


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "none granted"


def _write(out: Path, table: pa.Table, report: IngestReport,
           quarantine: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        pq.write_table(table, tmp / SAMPLE, compression="zstd")
        (tmp / REPORT).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        with open(tmp / QUARANTINE, "w", encoding="utf-8") as f:
            for entry in quarantine:
                f.write(json.dumps(entry, ensure_ascii=False, sort_keys=False) + "\n")
        manifest = IngestManifest(
            **report.model_dump(),
            package_version=__version__,
            created_at=datetime.now(UTC),
            files={name: file_hash(tmp / name) for name in (SAMPLE, REPORT, QUARANTINE)},
        )
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # an empty directory the user made beforehand
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- reading back
def _check_output(path: str | Path) -> Path:
    p = Path(path)
    hint = f"create one with `synthloop ingest LOGS --mapping MAPPING.yaml --out {p}`"
    if not p.is_dir():
        raise DataError(f"{p}: not an ingest output (no such directory)", hint=hint)
    for name in (MANIFEST, REPORT, SAMPLE):
        if not (p / name).is_file():
            raise DataError(f"{p}: not an ingest output (no {name})", hint=hint)
    try:
        kind = json.loads((p / MANIFEST).read_text(encoding="utf-8")).get("kind")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        kind = None
    if kind != MANIFEST_KIND:
        raise DataError(f"{p}: not an ingest output ({MANIFEST} is not an ingest manifest)",
                        hint=hint)
    return p


def read_report(path: str | Path) -> IngestReport:
    """The `report.json` of an ingest output directory."""
    p = _check_output(path)
    try:
        return IngestReport.model_validate_json((p / REPORT).read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{p / REPORT}: not a valid ingest report: {str(e).splitlines()[0]}"
                        ) from None


def read_manifest(path: str | Path) -> IngestManifest:
    """The `manifest.json` of an ingest output directory."""
    p = _check_output(path)
    try:
        return IngestManifest.model_validate_json((p / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{p / MANIFEST}: not a valid ingest manifest: "
                        f"{str(e).splitlines()[0]}") from None


_PANDAS_TYPES: dict[Any, Any] = {
    pa.int64(): pd.Int64Dtype(),
    pa.int32(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def read_sample(path: str | Path) -> pd.DataFrame:
    """The sample of an ingest output as a DataFrame.

    Dtypes: text as `object` (None for missing), integers as nullable `Int64`, booleans as
    nullable `boolean`, floats as `float64` (NaN for missing), `timestamp` as
    `datetime64[us, UTC]`. Raises DataError when `path` is not an ingest output.
    """
    p = _check_output(path)
    try:
        table = pq.read_table(p / SAMPLE)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{p / SAMPLE}: cannot read the sample: {e}") from None
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)
