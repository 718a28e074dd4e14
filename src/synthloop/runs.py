"""The on-disk layout of a run directory (RUNDIR), shared by replay, score, compare and gate.

    RUNDIR/
      manifest.json       RunManifest (evalset hash, target fingerprint, counts, tokens, times)
      log.jsonl           run log: one Response JSON per completed (case, sample), appended
                          as each completes, so a killed run resumes where it stopped
      responses.parquet   final responses, one row per (case_id, sample), in evalset order
      responses.jsonl     the same rows as JSON lines
      scores.parquet      long-format scores written by `synthloop score`
      scores.json         scorer configs and per-metric summary

`responses.parquet` columns: case_id, sample, output, error, error_kind, latency_ms,
prompt_tokens, completion_tokens, attempts, cached.
`scores.parquet` columns: case_id, sample, metric, value (null when the scorer failed), kind,
explanation, error.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthloop.config import first_problem
from synthloop.errors import DataError
from synthloop.schema import Response, RunManifest, Score, Usage

RESPONSES_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("sample", pa.int32()),
        ("output", pa.string()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("latency_ms", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("attempts", pa.int32()),
        ("cached", pa.bool_()),
    ]
)

SCORES_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("sample", pa.int32()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("kind", pa.string()),
        ("explanation", pa.string()),
        ("error", pa.string()),
    ]
)


def response_to_row(r: Response) -> dict[str, object]:
    return {
        "case_id": r.case_id,
        "sample": r.sample,
        "output": r.output,
        "error": r.error,
        "error_kind": r.error_kind,
        "latency_ms": r.latency_ms,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "attempts": r.attempts,
        "cached": r.cached,
    }


def row_to_response(row: dict[str, object]) -> Response:
    return Response(
        case_id=str(row["case_id"]),
        sample=int(row["sample"] or 0),  # type: ignore[call-overload]
        output=row["output"],  # type: ignore[arg-type]
        error=row["error"],  # type: ignore[arg-type]
        error_kind=row["error_kind"],  # type: ignore[arg-type]
        latency_ms=row["latency_ms"],  # type: ignore[arg-type]
        usage=Usage(prompt_tokens=int(row["prompt_tokens"] or 0),  # type: ignore[call-overload]
                    completion_tokens=int(row["completion_tokens"] or 0)),  # type: ignore[call-overload]
        attempts=1 if row["attempts"] is None else int(row["attempts"]),  # type: ignore[call-overload]
        cached=bool(row["cached"]),
    )


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file via a temporary sibling and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # no temporary file left behind (a folder at `path`, Ctrl-C, ...)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_table_atomic(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _read_parquet(path: Path, schema: pa.Schema, fix: str) -> pa.Table:
    """A run's Parquet file, or one DataError line when it is damaged or has other columns."""
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: damaged or not written by synthloop "
                        f"({str(e).splitlines()[0]})", hint=fix) from None


@dataclass(frozen=True)
class RunDir:
    """Paths and readers for one run directory."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def responses_path(self) -> Path:
        return self.path / "responses.parquet"

    @property
    def responses_jsonl_path(self) -> Path:
        return self.path / "responses.jsonl"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.parquet"

    @property
    def scores_summary_path(self) -> Path:
        return self.path / "scores.json"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def manifest(self) -> RunManifest:
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"{self.path}: not a run directory (a file, not a directory)",
                            hint="pass a directory written by `synthloop replay`")
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{self.path}: not a run directory (no manifest.json)",
                            hint="pass a directory written by `synthloop replay`") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{self.manifest_path}: cannot read the run manifest: {e}") from None
        try:
            return RunManifest.model_validate_json(text)
        except Exception as e:
            raise DataError(f"{self.manifest_path}: invalid run manifest: {first_problem(e)}",
                            hint="replay into a new --out directory") from None

    def write_manifest(self, manifest: RunManifest) -> None:
        write_atomic(self.manifest_path, manifest.model_dump_json(indent=2) + "\n")

    def responses_table(self) -> pa.Table:
        if not self.responses_path.exists():
            raise DataError(f"{self.path}: run has no responses.parquet (not finished?)",
                            hint="run `synthloop replay` again with the same --out to finish it")
        return _read_parquet(self.responses_path, RESPONSES_SCHEMA,
                             "delete it and run `synthloop replay` again with the same "
                             "--out: it is rebuilt from log.jsonl, nothing is re-sent")

    def responses(self) -> Iterator[Response]:
        for row in self.responses_table().to_pylist():
            yield row_to_response(row)

    def write_responses(self, responses: Iterable[Response]) -> None:
        rows = [response_to_row(r) for r in responses]
        table = pa.Table.from_pylist(rows, schema=RESPONSES_SCHEMA)
        write_table_atomic(self.responses_path, table)
        write_atomic(self.responses_jsonl_path,
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def scores_table(self) -> pa.Table:
        if not self.scores_path.exists():
            raise DataError(f"{self.path}: run has no scores",
                            hint=f"run `synthloop score {self.path} --scorers SCORERS.yaml` first")
        return _read_parquet(self.scores_path, SCORES_SCHEMA,
                             f"run `synthloop score {self.path} --scorers SCORERS.yaml` again")

    def write_scores(self, scores: Iterable[Score] | pa.Table) -> None:
        if isinstance(scores, pa.Table):
            table = scores.cast(SCORES_SCHEMA)
        else:
            table = pa.Table.from_pylist([s.model_dump() for s in scores], schema=SCORES_SCHEMA)
        write_table_atomic(self.scores_path, table)
