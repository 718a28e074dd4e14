"""Build an evalset and two scored run directories straight from arrays.

For tests, benchmarks and for checking a gate policy against simulated data, without a
replay or a scorer: everything is written columnar (a million cases take seconds), in the
same layout `synthloop replay` and `synthloop score` write (see `synthloop.runs`).

    from synthloop.stats.fixtures import write_run_pair
    es, base, cand = write_run_pair(tmp, base={"correct": b}, cand={"correct": c},
                                    kinds={"correct": "binary"}, tags={"cluster": clusters})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from synthloop import __version__
from synthloop.evalsets import ARROW_SCHEMA, MESSAGE_TYPE, TAG_TYPE, EvalsetWriter, columns_to_batch
from synthloop.runs import RESPONSES_SCHEMA, SCORES_SCHEMA, RunDir, write_atomic, write_table_atomic
from synthloop.schema import Provenance, RunCounts, RunManifest, TargetFingerprint

ArrayLike = NDArray[np.float64] | Sequence[float | None]


def _tags_array(tags: Mapping[str, Sequence[str | None] | NDArray[np.str_]], n: int) -> pa.Array:
    keys: list[pa.Array] = []
    vals: list[pa.Array] = []
    present: list[NDArray[np.bool_]] = []
    for k, v in tags.items():
        arr = pa.array(list(v) if not isinstance(v, np.ndarray) else v, pa.string())
        if len(arr) != n:
            raise ValueError(f"tag {k!r} has {len(arr)} values for {n} cases")
        ok = arr.is_valid().to_numpy(zero_copy_only=False)
        present.append(ok)
        keys.append(pa.array(np.full(n, k, dtype=object), pa.string()))
        vals.append(arr)
    if not tags:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                        pa.array([], TAG_TYPE))
    # interleave: case i's tags are (key_0, value_0[i]), (key_1, value_1[i]), ... when present
    m = len(tags)
    ok_mat = np.stack(present, axis=1)                       # n × m
    order = np.flatnonzero(ok_mat.reshape(-1))               # row-major → case-major
    key_flat = pa.concat_arrays(keys)
    val_flat = pa.concat_arrays(vals)
    # concat is key-major; map case-major positions to key-major ones
    case = order // m
    key = order % m
    take = pa.array(key * n + case)
    struct = pa.StructArray.from_arrays([key_flat.take(take), val_flat.take(take)],
                                        fields=list(TAG_TYPE))
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(ok_mat.sum(axis=1))
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def write_evalset_arrays(out: Path, *, n: int, case_ids: Sequence[str] | None = None,
                         sessions: Sequence[str | None] | NDArray[np.str_] | None = None,
                         tags: Mapping[str, Sequence[str | None] | NDArray[np.str_]] | None = None,
                         inputs: Sequence[str] | None = None,
                         references: Sequence[str | None] | None = None) -> tuple[Path, str]:
    """Write an evalset of `n` cases; returns (path, content hash)."""
    ids = list(case_ids) if case_ids is not None else [f"case-{i:07d}" for i in range(n)]
    cols: dict[str, object] = {
        "case_id": pa.array(ids, pa.string()),
        "input": pa.array(list(inputs) if inputs is not None else [f"question {i}" for i in range(n)],
                          pa.string()),
        "tags": _tags_array(tags or {}, n),
        "history": pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                            pa.array([], MESSAGE_TYPE)),
    }
    if sessions is not None:
        cols["session_id"] = pa.array(list(sessions) if not isinstance(sessions, np.ndarray)
                                      else sessions, pa.string())
    if references is not None:
        cols["references_good"] = pa.array([[r] if r is not None else [] for r in references],
                                           pa.list_(pa.string()))
    batch = columns_to_batch(cols)
    assert batch.schema.equals(ARROW_SCHEMA)
    with EvalsetWriter(out, provenance=Provenance(generator="fixture")) as w:
        w.write_batch(batch)
        manifest = w.close()
    return out, manifest.content_hash


def write_run(out: Path, *, evalset: Path, evalset_hash: str, case_ids: Sequence[str],
              scores: Mapping[str, ArrayLike], kinds: Mapping[str, str] | None = None,
              higher_is_better: Mapping[str, bool] | None = None,
              latency_ms: ArrayLike | None = None, outputs: Sequence[str | None] | None = None,
              errors: Sequence[str | None] | None = None, model: str = "model",
              samples: int = 1, explanations: Mapping[str, Sequence[str | None]] | None = None,
              ) -> Path:
    """Write a run directory with responses and long-format scores.

    `scores[metric]` holds one value per case, or `samples` × cases values (sample-major)
    when `samples > 1`; NaN or None becomes a null score (a scorer failure).
    """
    n = len(case_ids)
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = pa.array(list(case_ids), pa.string())
    rows = n * samples
    ids_rep = pa.concat_arrays([ids] * samples) if samples > 1 else ids
    sample_col = np.repeat(np.arange(samples, dtype=np.int32), n)
    lat = np.full(rows, 100.0) if latency_ms is None else np.asarray(latency_ms, dtype=np.float64)
    if lat.size == n and samples > 1:
        lat = np.tile(lat, samples)
    if outputs is not None:
        out_col = pa.array(list(outputs), pa.string())
    elif rows <= 200_000:
        out_col = pa.array([f"answer {i % n}" for i in range(rows)], pa.string())
    else:
        out_col = pa.array(np.full(rows, "answer", dtype=object), pa.string())
    if len(out_col) == n and samples > 1:
        out_col = pa.concat_arrays([out_col] * samples)
    err_col = pa.array(list(errors), pa.string()) if errors is not None else pa.nulls(n, pa.string())
    if len(err_col) == n and samples > 1:
        err_col = pa.concat_arrays([err_col] * samples)
    responses = pa.table({
        "case_id": ids_rep,
        "sample": pa.array(sample_col),
        "output": out_col,
        "error": err_col,
        "error_kind": pa.nulls(rows, pa.string()),
        "latency_ms": pa.array(lat, mask=np.isnan(lat)),
        "prompt_tokens": pa.array(np.full(rows, 10, dtype=np.int64)),
        "completion_tokens": pa.array(np.full(rows, 20, dtype=np.int64)),
        "attempts": pa.array(np.ones(rows, dtype=np.int32)),
        "cached": pa.array(np.zeros(rows, dtype=bool)),
    }, schema=RESPONSES_SCHEMA)
    write_table_atomic(run.responses_path, responses)
    parts = []
    meta: dict[str, dict[str, object]] = {}
    for metric, values in scores.items():
        v = np.array([np.nan if x is None else x for x in values], dtype=np.float64) \
            if not isinstance(values, np.ndarray) else values.astype(np.float64)
        if v.size != rows:
            raise ValueError(f"metric {metric!r}: {v.size} values for {rows} rows")
        kind = (kinds or {}).get(metric, "continuous")
        expl = (explanations or {}).get(metric)
        parts.append(pa.table({
            "case_id": ids_rep,
            "sample": pa.array(sample_col),
            "metric": pa.array(np.full(rows, metric, dtype=object), pa.string()),
            "value": pa.array(v, mask=np.isnan(v)),
            "kind": pa.array(np.full(rows, kind, dtype=object), pa.string()),
            "explanation": pa.array(list(expl), pa.string()) if expl is not None
            else pa.nulls(rows, pa.string()),
            "error": pa.array(["scorer failed" if f else None for f in np.isnan(v).tolist()],
                              pa.string()),
        }, schema=SCORES_SCHEMA))
        meta[metric] = {"kind": kind,
                        "higher_is_better": (higher_is_better or {}).get(metric, True)}
    run.write_scores(pa.concat_tables(parts) if parts else SCORES_SCHEMA.empty_table())
    write_atomic(run.scores_summary_path, json.dumps({"metrics": meta}, indent=2) + "\n")
    n_err = len(err_col) - err_col.null_count
    run.write_manifest(RunManifest(
        evalset_hash=evalset_hash, evalset_path=str(evalset),
        target=TargetFingerprint(kind="python", model=model), target_name=model,
        package_version=__version__, started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC), repeats=samples, seed=0, status="complete",
        counts=RunCounts(total=rows, ok=rows - n_err, error=n_err),
    ))
    return out


def write_run_pair(
    root: Path,
    *,
    base: Mapping[str, ArrayLike],
    cand: Mapping[str, ArrayLike],
    kinds: Mapping[str, str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    tags: Mapping[str, Sequence[str | None] | NDArray[np.str_]] | None = None,
    sessions: Sequence[str | None] | NDArray[np.str_] | None = None,
    latency_base: ArrayLike | None = None,
    latency_cand: ArrayLike | None = None,
    outputs_base: Sequence[str | None] | None = None,
    outputs_cand: Sequence[str | None] | None = None,
    inputs: Sequence[str] | None = None,
) -> tuple[Path, Path, Path]:
    """Write `root/evalset`, `root/base` and `root/cand`; returns their paths."""
    n = len(next(iter(base.values())))
    es, h = write_evalset_arrays(root / "evalset", n=n, sessions=sessions, tags=tags,
                                 inputs=inputs)
    ids = [f"case-{i:07d}" for i in range(n)]
    b = write_run(root / "base", evalset=es, evalset_hash=h, case_ids=ids, scores=base,
                  kinds=kinds, higher_is_better=higher_is_better, latency_ms=latency_base,
                  outputs=outputs_base, model="baseline-model")
    c = write_run(root / "cand", evalset=es, evalset_hash=h, case_ids=ids, scores=cand,
                  kinds=kinds, higher_is_better=higher_is_better, latency_ms=latency_cand,
                  outputs=outputs_cand, model="candidate-model")
    return es, b, c
