"""Versioned, immutable evalsets on disk.

A version is a directory `evalsets/<name>/<version>/` holding Hugging Face `datasets` Arrow
shards (`data-00000-of-00002.arrow`, `state.json`, `dataset_info.json`, so
`datasets.load_from_disk(DIR)` works) plus `manifest.json` (an `EvalsetManifest`).

Writes are streaming and atomic: rows go to a hidden temporary directory beside the target in
fixed-size shards, and the directory is renamed into place only when complete. A version is
never overwritten. `content_hash` is the sha256 over the canonical Arrow IPC encoding of the
rows in fixed 65,536-row batches, so it depends on the rows and their order only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synthloop import __version__
from synthloop._locks import is_locked, try_lock
from synthloop._locks import release as release_lock
from synthloop.config import first_problem
from synthloop.errors import DataError
from synthloop.schema import (
    SCHEMA_VERSION,
    EvalCase,
    EvalsetCounts,
    EvalsetManifest,
    Provenance,
)

HASH_BATCH_ROWS = 65_536
DEFAULT_SHARD_ROWS = 262_144
MANIFEST = "manifest.json"
DEFAULT_ROOT = Path("evalsets")

FEEDBACK_TYPE = pa.struct(
    [
        ("thumb", pa.string()),
        ("rating", pa.int8()),
        ("comment", pa.string()),
        ("clicks", pa.int32()),
        ("read_time_s", pa.float64()),
        ("watch_time_s", pa.float64()),
        ("copied", pa.bool_()),
        ("regenerated", pa.bool_()),
        ("edited", pa.bool_()),
        ("abandoned", pa.bool_()),
        ("feedback_delay_s", pa.float64()),
    ]
)
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
TAG_TYPE = pa.struct([("key", pa.string()), ("value", pa.string())])

ARROW_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("turn", pa.int32()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("history", pa.list_(MESSAGE_TYPE)),
        ("input", pa.string()),
        ("context", pa.string()),
        ("references_good", pa.list_(pa.string())),
        ("references_bad", pa.list_(pa.string())),
        ("reply", pa.string()),
        ("reply_latency_ms", pa.float64()),
        ("expected_feedback", FEEDBACK_TYPE),
        ("tags", pa.list_(TAG_TYPE)),
    ]
)
COLUMNS = ARROW_SCHEMA.names

_HF_FEATURES: dict[str, Any] = {
    "case_id": {"dtype": "string", "_type": "Value"},
    "session_id": {"dtype": "string", "_type": "Value"},
    "user_id": {"dtype": "string", "_type": "Value"},
    "turn": {"dtype": "int32", "_type": "Value"},
    "timestamp": {"dtype": "timestamp[us, tz=UTC]", "_type": "Value"},
    "history": {"feature": {"role": {"dtype": "string", "_type": "Value"},
                            "content": {"dtype": "string", "_type": "Value"}},
                "_type": "List"},
    "input": {"dtype": "string", "_type": "Value"},
    "context": {"dtype": "string", "_type": "Value"},
    "references_good": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    "references_bad": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    "reply": {"dtype": "string", "_type": "Value"},
    "reply_latency_ms": {"dtype": "float64", "_type": "Value"},
    "expected_feedback": {
        "thumb": {"dtype": "string", "_type": "Value"},
        "rating": {"dtype": "int8", "_type": "Value"},
        "comment": {"dtype": "string", "_type": "Value"},
        "clicks": {"dtype": "int32", "_type": "Value"},
        "read_time_s": {"dtype": "float64", "_type": "Value"},
        "watch_time_s": {"dtype": "float64", "_type": "Value"},
        "copied": {"dtype": "bool", "_type": "Value"},
        "regenerated": {"dtype": "bool", "_type": "Value"},
        "edited": {"dtype": "bool", "_type": "Value"},
        "abandoned": {"dtype": "bool", "_type": "Value"},
        "feedback_delay_s": {"dtype": "float64", "_type": "Value"},
    },
    "tags": {"feature": {"key": {"dtype": "string", "_type": "Value"},
                         "value": {"dtype": "string", "_type": "Value"}},
             "_type": "List"},
}


# --------------------------------------------------------------------------- row conversion
def case_to_row(case: EvalCase) -> dict[str, Any]:
    """An EvalCase as one row of the evalset Arrow schema."""
    fb = case.expected_feedback
    return {
        "case_id": case.case_id,
        "session_id": case.session_id,
        "user_id": case.user_id,
        "turn": case.turn,
        "timestamp": case.timestamp,
        "history": [{"role": m.role, "content": m.content} for m in case.history],
        "input": case.input,
        "context": case.context,
        "references_good": list(case.references.good),
        "references_bad": list(case.references.bad),
        "reply": case.reply,
        "reply_latency_ms": case.reply_latency_ms,
        "expected_feedback": None if fb is None else {**fb.model_dump(), "thumb": fb.thumb.value},
        "tags": [{"key": k, "value": v} for k, v in case.tags.items()],
    }


def _case_fields(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the evalset Arrow schema as the fields of an EvalCase (not validated)."""
    return {
        "case_id": row["case_id"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "turn": row["turn"] or 0,
        "timestamp": row["timestamp"],
        "history": row["history"] or [],
        "input": row["input"],
        "context": row["context"],
        "references": {"good": row["references_good"] or [], "bad": row["references_bad"] or []},
        "reply": row["reply"],
        "reply_latency_ms": row["reply_latency_ms"],
        "expected_feedback": row["expected_feedback"],
        "tags": {t["key"]: t["value"] for t in (row["tags"] or [])},
    }


def row_to_case(row: dict[str, Any]) -> EvalCase:
    """One row of the evalset Arrow schema as an EvalCase."""
    return EvalCase.model_validate(_case_fields(row))


def cases_to_batch(cases: Sequence[EvalCase]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([case_to_row(c) for c in cases], schema=ARROW_SCHEMA)


def columns_to_batch(columns: dict[str, Any]) -> pa.RecordBatch:
    """Build a batch from a dict of column arrays/lists; missing columns become nulls."""
    n = None
    for v in columns.values():
        n = len(v)
        break
    if n is None:
        raise ValueError("columns_to_batch needs at least one column")
    arrays = []
    for field in ARROW_SCHEMA:
        if field.name in columns:
            col = columns[field.name]
            arr = col if isinstance(col, pa.Array) else pa.array(col, type=field.type)
            if arr.type != field.type:
                arr = arr.cast(field.type)
        else:
            arr = pa.nulls(n, type=field.type)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)


def _conform(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    if batch.schema.equals(ARROW_SCHEMA):
        return batch
    try:
        return batch.select(COLUMNS).cast(ARROW_SCHEMA)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise DataError(f"rows do not match the evalset schema: {e}") from None


# --------------------------------------------------------------------------- hashing
class _HashSink:
    """A write-only file object that feeds sha256 (for `pa.PythonFile`)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        self._h.update(data)
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def digest(self) -> bytes:
        return self._h.digest()


class ContentHasher:
    """sha256 over canonical Arrow IPC bytes of the rows in fixed-size batches."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._h.update(f"synthloop-evalset/{SCHEMA_VERSION}\n".encode())
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def update(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= HASH_BATCH_ROWS:
            table = pa.Table.from_batches(self._pending, schema=ARROW_SCHEMA)
            head = table.slice(0, HASH_BATCH_ROWS)
            rest = table.slice(HASH_BATCH_ROWS)
            self._digest(head)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows

    def _digest(self, table: pa.Table) -> None:
        single = table.num_columns > 0 and table.column(0).num_chunks == 1
        batch = table.combine_chunks().to_batches()
        if not batch:
            return
        if single:
            # one chunk is not copied by combine_chunks, and a zero-copy slice of a bigger
            # batch encodes (nested columns) differently from concatenated chunks: compact it
            # the same way, so the hash depends on the rows only, never on how they were batched
            batch = [batch[0].take(pa.array(range(batch[0].num_rows), type=pa.int64()))]
        # the IPC bytes stream straight into sha256 (same digest as hashing the whole buffer,
        # without holding two more copies of 65,536 rows in memory)
        sink = _HashSink()
        with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), ARROW_SCHEMA) as w:
            w.write_batch(batch[0])
        self._h.update(sink.digest())

    def hexdigest(self) -> str:
        if self._pending_rows:
            self._digest(pa.Table.from_batches(self._pending, schema=ARROW_SCHEMA))
            self._pending, self._pending_rows = [], 0
        return "sha256:" + self._h.hexdigest()


def table_hash(table: pa.Table | pa.RecordBatch) -> str:
    h = ContentHasher()
    for b in _conform(table).to_batches() if isinstance(table, pa.Table) else [_conform(table)]:
        h.update(b)  # type: ignore[arg-type]
    return h.hexdigest()


# --------------------------------------------------------------------------- summaries
class _FeedbackTally:
    def __init__(self) -> None:
        self.with_feedback = 0
        self.up = 0
        self.down = 0
        self.rated = 0
        self.rating_sum = 0.0
        self.explicit = 0

    def update(self, batch: pa.RecordBatch) -> None:
        fb = batch.column(ARROW_SCHEMA.get_field_index("expected_feedback"))
        valid = fb.is_valid()
        self.with_feedback += pc.sum(valid).as_py() or 0
        thumb = pc.struct_field(fb, "thumb")
        up = pc.equal(thumb, "up")
        down = pc.equal(thumb, "down")
        rating = pc.struct_field(fb, "rating")
        self.up += pc.sum(up).as_py() or 0
        self.down += pc.sum(down).as_py() or 0
        self.rated += pc.sum(rating.is_valid()).as_py() or 0
        self.rating_sum += pc.sum(rating).as_py() or 0
        explicit = pc.or_kleene(pc.or_kleene(up, down), rating.is_valid())
        self.explicit += pc.sum(pc.fill_null(explicit, False)).as_py() or 0

    def summary(self) -> dict[str, Any]:
        n = self.with_feedback
        return {
            "cases_with_feedback": n,
            "explicit_share": round(self.explicit / n, 6) if n else None,
            "thumbs_up": self.up,
            "thumbs_down": self.down,
            "thumb_up_rate": round(self.up / (self.up + self.down), 6) if self.up + self.down else None,
            "mean_rating": round(self.rating_sum / self.rated, 6) if self.rated else None,
        }


# --------------------------------------------------------------------------- writing
def _utcnow() -> datetime:
    return datetime.now(UTC)


def _tmp_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _hold_lock(path: Path) -> int | None:
    """Hold a shared `flock` on a temporary folder or file while it is being written.

    The pid in a temporary name means nothing to `evalset gc` run in another container or on
    another host sharing the folder; the lock does (`is_locked`). Returns the descriptor to
    release when the write is over, or None where there are no locks (the pid check remains).
    """
    try:
        return try_lock(path, exclusive=False)
    except BlockingIOError:  # pragma: no cover - only gc's probe takes it, and only briefly
        return None


def check_new_version(out: str | Path) -> Path:
    """Fail early, before any work, when `out` already holds something."""
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise DataError(f"{p}: already exists; an evalset version is never overwritten",
                        hint="choose a new --out directory")
    return p


class EvalsetWriter:
    """Stream rows into a new evalset version; the version appears atomically on `close()`.

    Use as a context manager: an exception inside the block removes the temporary directory
    and leaves no version behind.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        provenance: Provenance,
        name: str | None = None,
        version: str | None = None,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        count_sessions: bool = True,
    ) -> None:
        self.out = check_new_version(out)
        self.name = name or self.out.parent.name or "evalset"
        self.version = version or self.out.name
        self.provenance = provenance
        self.shard_rows = shard_rows
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _tmp_dir_for(self.out)
        self.tmp.mkdir()
        self._lock = _hold_lock(self.tmp)
        self._hasher = ContentHasher()
        self._feedback = _FeedbackTally()
        self._shard_files: list[Path] = []
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: Any = None
        self._rows_in_shard = 0
        self.rows = 0
        self._sessions: set[str] | None = set() if count_sessions else None
        self._closed = False
        self.extra_files: dict[str, Any] = {}

    # -- context manager
    def __enter__(self) -> EvalsetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
                self._sink.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        release_lock(self._lock)
        self._lock = None
        self._closed = True

    # -- writing
    def write_cases(self, cases: Iterable[EvalCase], batch_size: int = 10_000) -> None:
        buf: list[EvalCase] = []
        for c in cases:
            buf.append(c)
            if len(buf) >= batch_size:
                self.write_batch(cases_to_batch(buf))
                buf = []
        if buf:
            self.write_batch(cases_to_batch(buf))

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self._closed:
            raise RuntimeError("writer is closed")
        batch = _conform(batch)
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for b in batches:
            self._write_one(b)

    def _write_one(self, b: pa.RecordBatch) -> None:
        if b.num_rows == 0:
            return
        self._hasher.update(b)
        self._feedback.update(b)
        if self._sessions is not None:
            sid = b.column(ARROW_SCHEMA.get_field_index("session_id"))
            self._sessions.update(x for x in pc.unique(sid).to_pylist() if x is not None)
        offset = 0
        while offset < b.num_rows:
            if self._writer is None:
                path = self.tmp / f"shard-{len(self._shard_files):05d}.arrow"
                self._shard_files.append(path)
                self._sink = pa.OSFile(str(path), "wb")
                self._writer = pa.ipc.new_stream(self._sink, self._schema_with_features())
                self._rows_in_shard = 0
            take = min(b.num_rows - offset, self.shard_rows - self._rows_in_shard)
            self._writer.write_batch(b.slice(offset, take))
            offset += take
            self._rows_in_shard += take
            self.rows += take
            if self._rows_in_shard >= self.shard_rows:
                self._finish_shard()

    def _finish_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None

    @staticmethod
    def _schema_with_features() -> pa.Schema:
        meta = {"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})}
        return ARROW_SCHEMA.with_metadata(meta)

    def close(
        self,
        *,
        sessions: int | None = None,
        interactions: int | None = None,
        consent_summary: dict[str, Any] | None = None,
        feedback_summary: dict[str, Any] | None = None,
        privacy: dict[str, Any] | None = None,
        partial: bool = False,
        notes: Sequence[str] = (),
    ) -> EvalsetManifest:
        """Finish shards, write the manifest and rename the version into place."""
        self._finish_shard()
        if not self._shard_files:
            # an empty evalset still gets one (empty) shard so datasets can load it
            path = self.tmp / "shard-00000.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(
                sink, self._schema_with_features()
            ):
                pass
            self._shard_files.append(path)
        total = len(self._shard_files)
        names = []
        for i, p in enumerate(self._shard_files):
            name = f"data-{i:05d}-of-{total:05d}.arrow"
            p.rename(self.tmp / name)
            names.append(name)
        content_hash = self._hasher.hexdigest()
        n_sessions = sessions if sessions is not None else (
            len(self._sessions) if self._sessions is not None else 0)
        fsum = self._feedback.summary()
        if feedback_summary:
            fsum.update(feedback_summary)
        manifest = EvalsetManifest(
            name=self.name,
            version=self.version,
            content_hash=content_hash,
            created_at=_utcnow(),
            package_version=__version__,
            provenance=self.provenance,
            counts=EvalsetCounts(sessions=n_sessions, cases=self.rows,
                                 interactions=interactions if interactions is not None else self.rows),
            consent_summary=consent_summary or {},
            feedback_summary=fsum,
            privacy=privacy,
            partial=partial,
            shards=names,
            notes=list(notes),
        )
        state: dict[str, Any] = {
            "_data_files": [{"filename": n} for n in names],
            "_fingerprint": content_hash.split(":")[-1][:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.tmp / "state.json").write_text(json.dumps(state, indent=2))
        (self.tmp / "dataset_info.json").write_text(
            json.dumps({"features": _HF_FEATURES, "description": f"synthloop evalset {self.name}"
                        f"@{self.version}"}, indent=2))
        for fname, content in self.extra_files.items():
            data = content if isinstance(content, str | bytes) else json.dumps(
                content, indent=2, default=str)
            mode = "wb" if isinstance(data, bytes) else "w"
            with open(self.tmp / fname, mode) as f:
                f.write(data)
        (self.tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        _fsync_dir(self.tmp)
        check_new_version(self.out)
        try:
            # POSIX rename replaces an empty directory (one the user made) atomically and
            # fails on a non-empty one: another process that finished the same version
            # between the check above and here keeps its version, and this one loses
            os.rename(self.tmp, self.out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise DataError(f"{self.out}: already exists (another process wrote it while this "
                            "one was writing); an evalset version is never overwritten",
                            hint="choose a new --out directory") from None
        release_lock(self._lock)
        self._lock = None
        _fsync_dir(self.out.parent)
        self._closed = True
        return manifest


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_evalset(
    out: str | Path, cases: Iterable[EvalCase], *, provenance: Provenance, **close_kwargs: Any
) -> EvalsetManifest:
    """Write an evalset version from EvalCases in one call."""
    with EvalsetWriter(out, provenance=provenance) as w:
        w.write_cases(cases)
        return w.close(**close_kwargs)


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Evalset:
    """A read-only evalset version on disk."""

    path: Path
    manifest: EvalsetManifest

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    def __len__(self) -> int:
        return self.manifest.counts.cases

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        for name in self.manifest.shards:
            path = self.path / name
            try:
                src = pa.memory_map(str(path))
            except FileNotFoundError:
                raise DataError(f"{path}: a data shard listed in {MANIFEST} is missing",
                                hint=_DAMAGED_HINT) from None
            except OSError as e:
                raise DataError(f"{path}: cannot read the data shard: {e.strerror or e}",
                                hint=_DAMAGED_HINT) from None
            with src:
                try:
                    reader = pa.ipc.open_stream(src)
                    if not reader.schema.remove_metadata().equals(ARROW_SCHEMA):
                        raise DataError(f"{path}: the data shard's columns do not match the "
                                        "evalset schema", hint=_DAMAGED_HINT)
                    for b in reader:
                        yield b.replace_schema_metadata(None)
                except (pa.ArrowException, OSError) as e:
                    # a truncated or overwritten shard (copy interrupted, disk full, edited)
                    raise DataError(f"{path}: damaged data shard (not a complete Arrow "
                                    f"stream: {str(e).splitlines()[0]})",
                                    hint=_DAMAGED_HINT) from None

    def table(self) -> pa.Table:
        batches = list(self.iter_batches())
        return pa.Table.from_batches(batches, schema=ARROW_SCHEMA)

    def iter_cases(self) -> Iterator[EvalCase]:
        for b in self.iter_batches():
            for row in b.to_pylist():
                yield row_to_case(row)

    def cases(self) -> list[EvalCase]:
        return list(self.iter_cases())

    def to_dataset(self) -> Any:
        """The evalset as a Hugging Face `datasets.Dataset` (memory-mapped)."""
        import datasets

        return datasets.load_from_disk(str(self.path))


_DAMAGED_HINT = ("the version is damaged: restore it from a backup or git, or "
                 "generate or import a new version")
_NOT_A_VERSION_HINT = ("pass a directory written by `synthloop generate` or "
                       "`synthloop evalset import`, or NAME@VERSION")


def load_manifest(path: str | Path) -> EvalsetManifest:
    p = Path(path) / MANIFEST
    if Path(path).exists() and not Path(path).is_dir():
        raise DataError(f"{Path(path)}: not an evalset version (a file, not a directory)",
                        hint=_NOT_A_VERSION_HINT)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{Path(path)}: not an evalset version (no {MANIFEST})",
                        hint=_NOT_A_VERSION_HINT) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read the evalset manifest: {e}",
                        hint=_DAMAGED_HINT) from None
    try:
        return EvalsetManifest.model_validate_json(text)
    except Exception as e:  # pydantic.ValidationError or JSON error
        raise DataError(f"{p}: invalid evalset manifest: {first_problem(e)}",
                        hint=_DAMAGED_HINT) from None


def resolve(ref: str | Path, root: str | Path | None = None) -> Path:
    """A path, or `name@version` / `name@latest` under `root` (default `./evalsets`)."""
    p = Path(ref)
    if p.exists() or "@" not in str(ref):
        return p
    name, _, version = str(ref).rpartition("@")
    base = Path(root) if root is not None else Path(os.environ.get("SYNTHLOOP_EVALSETS", DEFAULT_ROOT))
    if version == "latest":  # the same rule as NAME@VERSION: versions in the folder base/NAME
        versions = [e for e in list_evalsets(base) if e.path.parent == base / name]
        if not versions:
            raise DataError(f"no versions of evalset '{name}' under {base}",
                            hint="run `synthloop evalset list`")
        return max(versions, key=lambda e: e.manifest.created_at).path
    cand = base / name / version
    if not (cand / MANIFEST).exists():
        raise DataError(f"evalset {name}@{version} not found under {base}",
                        hint="run `synthloop evalset list`")
    return cand


def open_evalset(ref: str | Path, root: str | Path | None = None) -> Evalset:
    path = resolve(ref, root)
    return Evalset(path=path, manifest=load_manifest(path))


def list_evalsets(root: str | Path = DEFAULT_ROOT) -> list[Evalset]:
    """Every complete version under root (temporary, half-written ones are never listed)."""
    base = Path(root)
    found: list[Evalset] = []
    if not base.exists():
        return found
    for d in _version_dirs(base):
        try:
            found.append(Evalset(path=d, manifest=load_manifest(d)))
        except DataError:
            continue
    return found


def _version_dirs(base: Path) -> list[Path]:
    """Folders holding a manifest under `base`, following symlinked folders (an evalset
    shared from elsewhere) once each; hidden folders (writes in progress) are skipped."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(base, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # a link cycle or a second link to one folder
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST in files:
            found.append(Path(top))
    return sorted(found)


def diff(a: Evalset, b: Evalset) -> dict[str, Any]:
    """Cases added, removed and changed between two versions, by case id (every id listed).

    Streams both versions through `diff_versions` (one 16-byte digest per case in memory).
    """
    d = diff_versions(a, b, limit=None)
    return {
        "a": {"path": str(a.path), "content_hash": a.content_hash, "cases": d["a"]["cases"]},
        "b": {"path": str(b.path), "content_hash": b.content_hash, "cases": d["b"]["cases"]},
        "identical": d["identical"],
        "added": d["added_ids"],
        "removed": d["removed_ids"],
        "changed": d["changed_ids"],
    }


# --------------------------------------------------------------------------- export (streaming, atomic)
EXPORT_FORMATS = ("jsonl", "parquet", "csv")
CSV_COLUMNS = [
    "case_id", "session_id", "user_id", "turn", "timestamp", "input", "context", "reply",
    "reply_latency_ms", "history", "references_good", "references_bad",
    "feedback_thumb", "feedback_rating", "feedback_comment", "feedback_clicks",
    "feedback_read_time_s", "feedback_watch_time_s", "feedback_copied", "feedback_regenerated",
    "feedback_edited", "feedback_abandoned", "feedback_delay_s", "tags",
]
"""Columns of a CSV export: nested values (history, references, tags) are JSON strings and
`expected_feedback` is flattened into `feedback_*` columns (empty when there is none)."""


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    s = ts.isoformat()
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def row_to_json(row: dict[str, Any]) -> dict[str, Any]:
    """One Arrow row as the JSON of its EvalCase (`EvalCase.model_dump(mode="json")`), fast."""
    fields = _case_fields(row)
    fields["timestamp"] = _iso(fields["timestamp"])
    return {"schema_version": SCHEMA_VERSION, **fields}


def _csv_row(row: dict[str, Any]) -> list[Any]:
    fb = row["expected_feedback"] or {}
    return [
        row["case_id"], row["session_id"], row["user_id"], row["turn"], _iso(row["timestamp"]),
        row["input"], row["context"], row["reply"], row["reply_latency_ms"],
        json.dumps(row["history"] or [], ensure_ascii=False),
        json.dumps(row["references_good"] or [], ensure_ascii=False),
        json.dumps(row["references_bad"] or [], ensure_ascii=False),
        fb.get("thumb"), fb.get("rating"), fb.get("comment"), fb.get("clicks"),
        fb.get("read_time_s"), fb.get("watch_time_s"), fb.get("copied"), fb.get("regenerated"),
        fb.get("edited"), fb.get("abandoned"), fb.get("feedback_delay_s"),
        json.dumps({t["key"]: t["value"] for t in (row["tags"] or [])}, ensure_ascii=False),
    ]


# --------------------------------------------------------------------------- fast JSONL export
# `export --format jsonl` writes `json.dumps(row_to_json(row), ensure_ascii=False)` per row.
# Converting every row to Python objects and dumping a dict costs about 80 µs a row; the
# functions below produce the same bytes a column at a time: text without anything to escape
# is quoted by Arrow, the rest goes through the encoder json.dumps itself uses; floats are
# Python's repr (Arrow's shortest digits where they agree), integers and booleans Arrow's
# text (the same as Python's). Only the final lines are assembled in Python.
_ENCODE_STR = json.encoder.encode_basestring  # type: ignore[attr-defined]
_END = 2**62  # a slice position past the end of any string


def _json_float(x: float | None) -> str:
    if x is None:
        return "null"
    r = float.__repr__(x)
    return r if r[-1].isdigit() else json.dumps(x)  # NaN, Infinity as json.dumps spells them


def _wrap(arr: pa.Array, before: str, after: str) -> pa.Array:
    return pc.binary_replace_slice(pc.binary_replace_slice(arr, 0, 0, before), _END, _END, after)


def _patched(text: pa.Array, slow: pa.Array, arr: pa.Array, encode: Any) -> list[str]:
    """`text`, with the rows where `slow` is true replaced by `encode(value)` of `arr`'s
    value; null rows are `null`."""
    slow = pc.fill_null(slow, False)
    if pc.any(slow).as_py():
        fixed = pa.array([encode(v) for v in arr.filter(slow).to_pylist()], pa.string())
        text = pc.replace_with_mask(text, slow, fixed)
    out: list[str] = pc.fill_null(text, "null").to_pylist()
    return out


def _json_strings(arr: pa.Array) -> list[str]:
    """Each value of a string array as a JSON string literal (`null` for null)."""
    needs_escape = pc.match_substring_regex(arr, r'[\x00-\x1f"\\]')
    return _patched(_wrap(arr, '"', '"'), needs_escape, arr, _ENCODE_STR)


def _json_floats(arr: pa.Array) -> list[str]:
    """Python's `repr` of each float. Arrow prints the same shortest digits in fixed notation
    (without Python's `.0`); exponents, NaN and infinities go through Python."""
    text = arr.cast(pa.string())
    size = pc.abs(arr)
    fixed = pc.and_(pc.or_(pc.equal(arr, 0.0), pc.and_(pc.greater_equal(size, 1e-4),
                                                       pc.less(size, 1e16))),
                    pc.invert(pc.match_substring(text, "e")))
    text = pc.if_else(pc.match_substring(text, "."), text, _wrap(text, "", ".0"))
    return _patched(text, pc.invert(fixed), arr, _json_float)


def _json_scalars(arr: pa.Array) -> list[str]:
    """Integers and booleans: Arrow's text is Python's (`7`, `-3`, `true`, `false`)."""
    out: list[str] = pc.fill_null(arr.cast(pa.string()), "null").to_pylist()
    return out


def _list_values(arr: pa.ListArray) -> tuple[list[int], pa.Array]:
    """A list array's offsets (from 0) and the values they point into (a zero-copy slice:
    `arr.values` of a sliced array holds every row's values)."""
    offs = arr.offsets.to_pylist()
    start = offs[0]
    return [o - start for o in offs], arr.values.slice(start, offs[-1] - start)


def _json_lists(arr: pa.ListArray, offs: list[int], items: list[str], open_: str,
                close: str) -> list[str]:
    """Each list as `open_ item, item close` from the encoded `items` of `_list_values(arr)`;
    a null list is empty, as in `row_to_json`."""
    valid = arr.is_valid().to_pylist() if arr.null_count else [True] * len(arr)
    return [open_ + ", ".join(items[offs[i]:offs[i + 1]]) + close if valid[i] else open_ + close
            for i in range(len(arr))]


def _json_timestamps(arr: pa.Array) -> list[str] | None:
    """`_iso(ts)` as JSON: isoformat ending in `Z`, microseconds only when not zero."""
    years = pc.min_max(pc.year(arr))
    if years["min"].is_valid and (years["min"].as_py() < 1000 or years["max"].as_py() > 9999):
        return None  # strftime pads years differently from isoformat: the slow path
    text = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S", locale="C")  # %S has 6 decimals
    text = pc.replace_substring_regex(text, pattern=r"\.000000$", replacement="")
    out: list[str] = pc.fill_null(_wrap(text, '"', 'Z"'), "null").to_pylist()
    return out


def _json_feedback(arr: pa.StructArray) -> list[str]:
    cols = []
    for i, f in enumerate(FEEDBACK_TYPE):
        child = pc.struct_field(arr, [i])
        if pa.types.is_string(f.type):
            cols.append(_json_strings(child))
        elif pa.types.is_floating(f.type):
            cols.append(_json_floats(child))
        else:
            cols.append(_json_scalars(child))
    names = [f.name for f in FEEDBACK_TYPE]
    assert names == ["thumb", "rating", "comment", "clicks", "read_time_s", "watch_time_s",
                     "copied", "regenerated", "edited", "abandoned", "feedback_delay_s"]
    return [
        f'{{"thumb": {a}, "rating": {b}, "comment": {c}, "clicks": {d}, "read_time_s": {e}, '
        f'"watch_time_s": {f}, "copied": {g}, "regenerated": {h}, "edited": {i}, '
        f'"abandoned": {j}, "feedback_delay_s": {k}}}' if ok else "null"
        for ok, a, b, c, d, e, f, g, h, i, j, k in zip(arr.is_valid().to_pylist(), *cols,
                                                      strict=True)
    ]


def _json_history(arr: pa.ListArray) -> list[str]:
    offs, msgs = _list_values(arr)
    items = [f'{{"role": {r}, "content": {c}}}' if ok else "null" for ok, r, c in zip(
        msgs.is_valid().to_pylist(), _json_strings(pc.struct_field(msgs, [0])),
        _json_strings(pc.struct_field(msgs, [1])), strict=True)]
    return _json_lists(arr, offs, items, "[", "]")


def _json_tags(arr: pa.ListArray) -> list[str] | None:
    """Tags as a JSON object; None (the slow path) when a row repeats a key, has a null key
    or a null pair, where a dict's rules decide what is kept."""
    pairs = arr.flatten()
    if pairs.null_count or pc.struct_field(pairs, [0]).null_count:
        return None
    if len(pairs):
        parent = pc.list_parent_indices(arr).cast(pa.string())
        keyed = pc.binary_join_element_wise(parent, pc.struct_field(pairs, [0]), "\x00")
        if len(pc.unique(keyed)) != len(pairs):
            return None
    offs, every = _list_values(arr)
    items = [f"{k}: {v}" for k, v in zip(_json_strings(pc.struct_field(every, [0])),
                                         _json_strings(pc.struct_field(every, [1])),
                                         strict=True)]
    return _json_lists(arr, offs, items, "{", "}")


def _jsonl_bytes(b: pa.RecordBatch) -> bytes | None:
    """The batch's JSONL lines, byte for byte what `row_to_json` + `json.dumps` give; None
    when the batch holds something only the row-by-row path spells right."""
    col = b.column
    timestamps = _json_timestamps(col("timestamp"))
    tags = _json_tags(col("tags"))
    if timestamps is None or tags is None:
        return None
    good, bad = (_json_lists(col(n), offs, _json_strings(values), "[", "]")
                 for n in ("references_good", "references_bad")
                 for offs, values in [_list_values(col(n))])
    head = f'{{"schema_version": {_ENCODE_STR(SCHEMA_VERSION)}, "case_id": '
    lines = [
        f'{head}{a}, "session_id": {b_}, "user_id": {c}, "turn": {d}, "timestamp": {e}, '
        f'"history": {f}, "input": {g}, "context": {h}, "references": {{"good": {i}, '
        f'"bad": {j}}}, "reply": {k}, "reply_latency_ms": {m}, "expected_feedback": {n}, '
        f'"tags": {o}}}\n'
        for a, b_, c, d, e, f, g, h, i, j, k, m, n, o in zip(
            _json_strings(col("case_id")), _json_strings(col("session_id")),
            _json_strings(col("user_id")), _json_scalars(pc.fill_null(col("turn"), 0)),
            timestamps, _json_history(col("history")), _json_strings(col("input")),
            _json_strings(col("context")), good, bad, _json_strings(col("reply")),
            _json_floats(col("reply_latency_ms")), _json_feedback(col("expected_feedback")),
            tags, strict=True)
    ]
    return "".join(lines).encode()


def _jsonl_chunks(b: pa.RecordBatch, rows: int = 16_384) -> Iterator[bytes]:
    """`b` as JSONL, some thousands of rows at a time (an Arrow string array holds at most
    2 GiB)."""
    for start in range(0, b.num_rows, rows):
        part = b.slice(start, rows)
        fast = _jsonl_bytes(part)
        if fast is None:
            fast = "".join(json.dumps(row_to_json(r), ensure_ascii=False) + "\n"
                           for r in part.to_pylist()).encode()
        yield fast


def export_evalset(ev: Evalset, out: str | Path, fmt: str, *, overwrite: bool = False,
                   on_batch: Any = None) -> int:
    """Write every case of `ev` to one file (jsonl, parquet or csv), streaming, atomically.

    Rows go to a hidden temporary file beside `out`, renamed into place when complete; an
    existing `out` is an error unless `overwrite`. Returns the number of rows written.
    `on_batch(rows)` is called after each batch (for progress bars).
    """
    import csv

    import pyarrow.parquet as pq

    if fmt not in EXPORT_FORMATS:
        raise DataError(f"unknown export format '{fmt}'", hint=f"use one of {', '.join(EXPORT_FORMATS)}")
    dest = Path(out)
    if dest.exists() and (dest.is_dir() or not overwrite):
        raise DataError(f"{dest}: already exists", hint="choose another --out or pass --force"
                        if not dest.is_dir() else "--out must be a file path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_dir_for(dest)
    rows = 0
    tmp.touch(exist_ok=False)
    lock = _hold_lock(tmp)
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(str(tmp), ARROW_SCHEMA) as pw:
                for b in ev.iter_batches():
                    pw.write_batch(b)
                    rows += b.num_rows
                    if on_batch is not None:
                        on_batch(b.num_rows)
        elif fmt == "jsonl":
            with open(tmp, "wb") as fb:
                for b in ev.iter_batches():
                    for chunk in _jsonl_chunks(b):
                        fb.write(chunk)
                    rows += b.num_rows
                    if on_batch is not None:
                        on_batch(b.num_rows)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_COLUMNS)
                for b in ev.iter_batches():
                    for row in b.to_pylist():
                        writer.writerow(_csv_row(row))
                    rows += b.num_rows
                    if on_batch is not None:
                        on_batch(b.num_rows)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        release_lock(lock)
    return rows


# --------------------------------------------------------------------------- streaming diff
def _row_digests(ev: Evalset) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for b in ev.iter_batches():
        for row in b.to_pylist():
            blob = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
            out[row["case_id"]] = hashlib.blake2b(blob.encode(), digest_size=16).digest()
    return out


def diff_versions(a: Evalset, b: Evalset, *, limit: int | None = 20) -> dict[str, Any]:
    """Cases added, removed and changed from `a` to `b` by case id, plus manifest differences.

    Streams both versions (one 16-byte digest per case in memory, not the rows). Lists of ids
    are cut to `limit` (None = all); the counts are always complete.
    """
    ma, mb = a.manifest, b.manifest

    def side(ev: Evalset) -> dict[str, Any]:
        m = ev.manifest
        return {"path": str(ev.path), "name": m.name, "version": m.version,
                "content_hash": m.content_hash, "cases": m.counts.cases,
                "sessions": m.counts.sessions}

    fields: dict[str, Any] = {}
    for label, va, vb in (
        ("generator", ma.provenance.generator, mb.provenance.generator),
        ("seed", ma.provenance.seed, mb.provenance.seed),
        ("spec_hash", ma.provenance.spec_hash, mb.provenance.spec_hash),
        ("source_data_hash", ma.provenance.source_data_hash, mb.provenance.source_data_hash),
        ("package_version", ma.package_version, mb.package_version),
    ):
        if va != vb:
            fields[label] = {"a": va, "b": vb}
    result: dict[str, Any] = {"a": side(a), "b": side(b),
                              "identical": ma.content_hash == mb.content_hash,
                              "manifest_changes": fields}
    if result["identical"]:
        result.update({"added": 0, "removed": 0, "changed": 0, "unchanged": ma.counts.cases,
                       "added_ids": [], "removed_ids": [], "changed_ids": []})
        return result
    da, db = _row_digests(a), _row_digests(b)
    added = sorted(k for k in db if k not in da)
    removed = sorted(k for k in da if k not in db)
    changed = sorted(k for k, v in da.items() if k in db and db[k] != v)
    cut = (lambda xs: xs) if limit is None else (lambda xs: xs[:limit])
    result.update({
        "added": len(added), "removed": len(removed), "changed": len(changed),
        "unchanged": len(da) - len(removed) - len(changed),
        "added_ids": cut(added), "removed_ids": cut(removed), "changed_ids": cut(changed),
    })
    return result


# --------------------------------------------------------------------------- stale temporaries
def stale_temp_dirs(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    """Hidden temporary directories left by writers that died.

    One is stale when its writer's pid is not running here and no writer holds its lock: a
    writer in another container or on another host (whose pid is unknown here) keeps it.
    """
    base = Path(root)
    found: list[Path] = []
    if not base.exists():
        return found
    for d in sorted(base.rglob(".*.tmp-*")):
        pid_part = d.name.rpartition(".tmp-")[2].split("-")[0]
        if not pid_part.isdigit():
            continue
        pid = int(pid_part)
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        # a live pid (ours, or a reused one) is left alone, and so is a folder whose writer
        # still holds its lock (a process in another pid namespace or on another host)
        if not alive and not is_locked(d):
            found.append(d)
    return found


def remove_stale_temp_dirs(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    """Delete `stale_temp_dirs(root)`; returns what was removed."""
    removed = []
    for d in stale_temp_dirs(root):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                d.unlink()
        removed.append(d)
    return removed
