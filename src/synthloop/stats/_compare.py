"""`compare_runs(base, cand)`: read two scored run directories and their evalset, pair the
cases by id and compute a `Comparison` (writes nothing); `write_comparison` writes it.

Pairing rules (documented in docs/compare-and-gate.md):

* both runs must be on the same evalset (same content hash), else a `DataError`;
* samples (repeats) of a case are averaged per case before pairing; samples whose scorer
  failed (null value) are left out of that average;
* a case is paired for a metric when both sides have a value; cases a scorer failed on
  every sample of, or that were not scored, are dropped and counted in `coverage`;
* segments are the evalset's tags; clusters are its `session_id`s.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from synthloop import __version__
from synthloop.config import first_problem
from synthloop.errors import DataError
from synthloop.evalsets import Evalset, open_evalset
from synthloop.runs import RESPONSES_SCHEMA, SCORES_SCHEMA, RunDir, write_atomic
from synthloop.schema import RunManifest
from synthloop.stats._bootstrap import LEVELS, N_BOOT, level_key
from synthloop.stats._model import (
    CaseDiff,
    Comparison,
    Coverage,
    EvalsetRef,
    LatencyComparison,
    LatencySide,
    MetricComparison,
    RunRef,
)
from synthloop.stats._paired import Segmentation, compare_metric
from synthloop.stats._pvalues import binom_ppf

FloatArray = NDArray[np.float64]

COMPARISON_FILE = "comparison.json"
#: tag keys with more distinct values than this are not used as segments unless asked for
MAX_SEGMENT_VALUES = 50
#: latency quantiles reported and available to ratio rules
LATENCY_QUANTILES: dict[str, float] = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
#: texts in the worst-regression browser are cut to this many characters
TEXT_LIMIT = 4000
HISTOGRAM_BINS = 40


# --------------------------------------------------------------------------- inputs
def _load_side(path: str | Path, label: str) -> tuple[RunDir, RunManifest]:
    run = RunDir(Path(path))
    if not run.path.exists():
        raise DataError(f"{label} run {run.path} does not exist",
                        hint="pass a directory written by `synthloop replay`")
    return run, run.manifest()


def _read_parquet(path: Path, columns: list[str], schema: pa.Schema,
                  dictionary: Sequence[str] = ()) -> pa.Table:
    """Read columns of a run file (ParquetFile: no pyarrow.dataset / pandas import), checked
    against the run layout's schema, with a one-line DataError when it is not readable."""
    try:
        pf = pq.ParquetFile(path, read_dictionary=list(dictionary) or None)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: missing columns {', '.join(missing)}",
                            hint="was it written by `synthloop replay` / `synthloop score`?")
        table = pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: unreadable parquet file: {e}") from None
    fields = []
    for c in columns:
        f = schema.field(c)
        have = table.schema.field(c).type
        fields.append(f.with_type(have) if pa.types.is_dictionary(have) else f)
    try:
        return table.cast(pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"{path}: unexpected column types: {e}") from None


def _floats(col: pa.ChunkedArray) -> FloatArray:
    """A float64 column as numpy, nulls as NaN (from the Arrow buffers: `to_numpy` would
    import pandas, a second of start-up for one conversion)."""
    parts = []
    for c in col.chunks:
        if c.type != pa.float64():
            c = c.cast(pa.float64())
        n, off = len(c), c.offset
        bufs = c.buffers()
        data = bufs[1]
        values = (np.frombuffer(data, dtype=np.float64, count=off + n)[off:].copy()
                  if data is not None else np.full(n, np.nan))
        if c.null_count:
            values[~_valid_mask(c)] = np.nan
        parts.append(values)
    return np.concatenate(parts) if parts else np.zeros(0)


def _valid_mask(c: pa.Array) -> NDArray[np.bool_]:
    n, off = len(c), c.offset
    if c.null_count == 0:
        return np.ones(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(c.buffers()[0], dtype=np.uint8), bitorder="little")
    return np.asarray(bits[off:off + n].astype(bool))


def _ints(c: pa.Array, fill: int = -1) -> NDArray[np.int64]:
    """An integer (or boolean) Arrow array as int64 numpy, nulls as `fill`, from the buffers."""
    n, off = len(c), c.offset
    if pa.types.is_boolean(c.type):
        bits = np.unpackbits(np.frombuffer(c.buffers()[1], dtype=np.uint8), bitorder="little")
        values = bits[off:off + n].astype(np.int64)
    else:
        dtype = np.dtype(c.type.to_pandas_dtype())
        values = np.frombuffer(c.buffers()[1], dtype=dtype, count=off + n)[off:].astype(np.int64)
    if c.null_count:
        values[~_valid_mask(c)] = fill
    return values


def _arrow_ints(values: NDArray[np.integer[Any]]) -> pa.Array:
    """numpy integers as an Arrow int64 array without `pa.array` (which imports pandas)."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), v.size, [None, pa.py_buffer(v)])


def _read_scores(run: RunDir) -> pa.Table:
    if not run.scores_path.exists():
        raise DataError(f"{run.path}: run has no scores.parquet",
                        hint=f"run `synthloop score {run.path} --scorers SCORERS.yaml` first")
    return _read_parquet(run.scores_path, ["case_id", "sample", "metric", "value", "kind"],
                         SCORES_SCHEMA, dictionary=["metric", "kind"])


def _scores_meta(run: RunDir) -> dict[str, Any]:
    try:
        doc = json.loads(run.scores_summary_path.read_text())
    except (OSError, ValueError):
        return {}
    metrics = doc.get("metrics") if isinstance(doc, dict) else None
    return metrics if isinstance(metrics, dict) else {}


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key that orders `c2` before `c10`."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text) if t]


def _dictionary_codes(col: pa.ChunkedArray | pa.Array) -> tuple[NDArray[np.int32], list[str]]:
    """Codes (−1 for null) into one naturally sorted list of the distinct strings of a column."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    enc = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c) for c in chunks]
    names = sorted({str(x) for c in enc for x in c.dictionary.to_pylist() if x is not None},
                   key=natural_key)
    where = {name: i for i, name in enumerate(names)}
    parts: list[NDArray[np.int32]] = []
    for c in enc:
        local = np.array([where.get(str(x), -1) if x is not None else -1
                          for x in c.dictionary.to_pylist()] + [-1], dtype=np.int32)
        idx = _ints(c.indices)
        parts.append(local[idx])
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return codes, names


def _positions(case_ids: pa.Array | pa.ChunkedArray, eval_ids: pa.Array, where: str
               ) -> NDArray[np.int64] | None:
    """Evalset row of every case id; None when the ids are exactly the evalset's, in order."""
    if isinstance(case_ids, pa.ChunkedArray):
        case_ids = case_ids.combine_chunks()
    n = len(case_ids)
    if n == len(eval_ids) and case_ids.null_count == 0 and pc.all(
            pc.equal(case_ids, eval_ids)).as_py():
        return None
    idx = pc.index_in(case_ids, value_set=eval_ids)
    if idx.null_count:
        bad = pc.filter(case_ids, idx.is_null())
        example = bad[0].as_py()
        raise DataError(f"{where}: {idx.null_count:,} rows have case ids that are not in the "
                        f"evalset (e.g. {example!r})",
                        hint="was this run made on another evalset version?")
    return _ints(idx)


def _per_case_mean(pos: NDArray[np.int64] | None, values: FloatArray, n: int
                   ) -> tuple[FloatArray, NDArray[np.bool_], int]:
    """(mean of non-null values per case or NaN, case has rows, most rows per case).

    `pos` None means row i is case i (one row per case, in evalset order)."""
    if pos is None:
        return values, np.ones(n, dtype=bool), 1 if n else 0
    ok = ~np.isnan(values)
    rows = np.bincount(pos, minlength=n)
    cnt = np.bincount(pos[ok], minlength=n)
    sums = np.bincount(pos[ok], weights=values[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    return mean, rows > 0, int(rows.max()) if rows.size else 0


def _metric_rows(table: pa.Table, codes: NDArray[np.int32], k: int, values: FloatArray
                 ) -> tuple[pa.Array | pa.ChunkedArray, FloatArray, pa.ChunkedArray]:
    """(case ids, values, kinds) of metric k's rows: a zero-copy slice when they are one block
    (scorers write metric by metric), else a filter."""
    rows = np.flatnonzero(codes == k)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        lo, m = int(rows[0]), int(rows.size)
        return (table.column("case_id").slice(lo, m), values[lo:lo + m],
                table.column("kind").slice(lo, m))
    take = _arrow_ints(rows)
    return (table.column("case_id").take(take), values[rows], table.column("kind").take(take))


# --------------------------------------------------------------------------- segments
def _segmentations(tags: pa.ChunkedArray, n: int, wanted: Sequence[str] | None,
                   max_values: int) -> tuple[list[Segmentation], dict[str, str]]:
    arr = tags.combine_chunks() if tags.num_chunks != 1 else tags.chunk(0)
    if len(arr) == 0:
        if wanted:
            raise DataError(f"segment key(s) {', '.join(wanted)} not found: the evalset is empty")
        return [], {}
    parents = _ints(pc.list_parent_indices(arr))
    flat = pc.list_flatten(arr)
    if len(flat) == 0:
        if wanted:
            raise DataError(f"segment key {wanted[0]!r} not found: the evalset's cases have no tags",
                            hint="drop --segments, or tag the cases when generating them")
        return [], {}
    key_codes, key_names = _dictionary_codes(pc.struct_field(flat, "key"))
    value_codes, value_names = _dictionary_codes(pc.struct_field(flat, "value"))
    skipped: dict[str, str] = {}
    if wanted is not None:
        unknown = [k for k in wanted if k not in key_names]
        if unknown:
            raise DataError(f"segment key {unknown[0]!r} is not a tag of the evalset's cases",
                            hint=f"tag keys: {', '.join(key_names) or '(none)'}")
        keys = list(dict.fromkeys(wanted))
    else:
        keys = key_names
    out: list[Segmentation] = []
    for key in keys:
        k = key_names.index(key)
        sel = key_codes == k
        rows = parents[sel]
        vals = value_codes[sel]
        present = np.flatnonzero(np.bincount(vals[vals >= 0], minlength=len(value_names)))
        names_k = [value_names[i] for i in present]  # value_names is naturally sorted
        if wanted is None and len(names_k) > max_values:
            skipped[key] = f"{len(names_k):,} distinct values (more than {max_values})"
            continue
        if wanted is None and len(names_k) < 2 and rows.size == n:
            skipped[key] = "one value on every case"
            continue
        remap = np.full(len(value_names) + 1, -1, dtype=np.int32)
        remap[present] = np.arange(present.size, dtype=np.int32)
        codes = np.full(n, -1, dtype=np.int32)
        codes[rows] = remap[vals]
        out.append(Segmentation(key=key, codes=codes, values=names_k))
    return out, skipped


def _clusters(session_ids: pa.ChunkedArray, n: int) -> tuple[NDArray[np.int64], int]:
    """Dense cluster codes; a case without a session is its own cluster."""
    arr = session_ids.combine_chunks() if session_ids.num_chunks != 1 else session_ids.chunk(0)
    enc = pc.dictionary_encode(arr)
    idx = _ints(enc.indices)
    g = len(enc.dictionary)
    null = idx < 0
    if null.any():
        idx[null] = g + np.arange(int(null.sum()))
        g += int(null.sum())
    return idx, g


# --------------------------------------------------------------------------- latency
def _latency_side(x: FloatArray) -> LatencySide:
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return LatencySide(n=0)
    levels = sorted(set(LEVELS) | {1 - (1 - lv) / 2 for lv in LEVELS})
    lv = np.array(levels)
    need: dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
    kth: list[int] = [0, n - 1]
    for k, q in LATENCY_QUANTILES.items():
        # order statistics x_(lo) <= q-quantile <= x_(hi), each with confidence lv
        lo = np.clip(binom_ppf(1 - lv, n, q) - 1, 0, n - 1)
        hi = np.clip(binom_ppf(lv, n, q), 0, n - 1)
        need[k] = (lo, hi)
        h = (n - 1) * q
        kth += [*lo.tolist(), *hi.tolist(), int(math.floor(h)), int(math.ceil(h))]
    part = np.partition(x, sorted(set(kth)))  # O(n log k): no full sort
    quantiles: dict[str, float] = {}
    bounds: dict[str, dict[str, tuple[float, float]]] = {}
    for k, q in LATENCY_QUANTILES.items():
        h = (n - 1) * q
        f = int(math.floor(h))
        quantiles[k] = float(part[f] + (h - f) * (part[int(math.ceil(h))] - part[f]))
        lo, hi = need[k]
        bounds[k] = {level_key(v): (float(part[a]), float(part[b]))
                     for v, a, b in zip(levels, lo.tolist(), hi.tolist(), strict=True)}
    return LatencySide(n=n, mean=float(x.mean()), max=float(part[n - 1]), quantiles=quantiles,
                       bounds=bounds)


def _latency(base: FloatArray, cand: FloatArray) -> LatencyComparison | None:
    bs, cs = _latency_side(base), _latency_side(cand)
    if bs.n == 0 and cs.n == 0:
        return None
    ratio: dict[str, float | None] = {}
    for k in LATENCY_QUANTILES:
        qb, qc = bs.quantiles.get(k), cs.quantiles.get(k)
        ratio[k] = qc / qb if qb and qc is not None and qb > 0 else None
    both = np.concatenate([base[~np.isnan(base)], cand[~np.isnan(cand)]])
    pos = both[both > 0]
    edges: list[float] = []
    hb: list[int] = []
    hc: list[int] = []
    if pos.size:
        lo, hi = float(pos.min()), float(pos.max())
        if hi <= lo:
            hi = lo * 1.01 + 1e-9
        e = np.geomspace(lo, hi, HISTOGRAM_BINS + 1)
        edges = [float(v) for v in e]
        hb = [int(v) for v in np.histogram(np.clip(base[~np.isnan(base)], lo, hi), e)[0]]
        hc = [int(v) for v in np.histogram(np.clip(cand[~np.isnan(cand)], lo, hi), e)[0]]
    return LatencyComparison(base=bs, cand=cs, ratio=ratio, histogram_edges=edges,
                             histogram_base=hb, histogram_cand=hc)


# --------------------------------------------------------------------------- worst cases
def _cut(s: Any) -> str | None:
    if s is None:
        return None
    s = str(s)
    return s if len(s) <= TEXT_LIMIT else s[:TEXT_LIMIT] + f"… [{len(s) - TEXT_LIMIT:,} more characters]"


# --------------------------------------------------------------------------- main entry
class _Clock:
    """Wall and CPU seconds per phase, into `sink` (`NAME` and `NAME cpu`)."""

    def __init__(self, sink: dict[str, float] | None) -> None:
        self.sink = sink
        self.t = time.perf_counter()
        self.c = time.process_time()

    def lap(self, name: str) -> None:
        if self.sink is not None:
            now, cpu = time.perf_counter(), time.process_time()
            self.sink[name] = self.sink.get(name, 0.0) + now - self.t
            self.sink[name + " cpu"] = self.sink.get(name + " cpu", 0.0) + cpu - self.c
            self.t, self.c = now, cpu



def _run_ref(run: RunDir, m: RunManifest, responses: pa.Table) -> RunRef:
    errors = int(responses.num_rows - pc.sum(responses.column("error").is_null()).as_py()) \
        if responses.num_rows else 0
    return RunRef(path=str(run.path), target_name=m.target_name, target_kind=m.target.kind,
                  model=m.target.model, fingerprint=m.target.digest(),
                  responses=responses.num_rows, errors=errors, repeats=m.repeats)


def _read_responses(run: RunDir) -> pa.Table:
    if not run.responses_path.exists():
        raise DataError(f"{run.path}: run has no responses.parquet (not finished?)",
                        hint="run `synthloop replay` again with the same --out to finish it")
    return _read_parquet(run.responses_path, ["case_id", "sample", "latency_ms", "error"],
                         RESPONSES_SCHEMA)


def _open_evalset(base: RunDir, bm: RunManifest, cand: RunDir, cm: RunManifest,
                  evalset: str | Path | None) -> Evalset:
    if evalset is not None:
        refs = [(Path(evalset), "--evalset")]
    else:
        refs = [(Path(m.evalset_path), f"{r.manifest_path}") for r, m in ((base, bm), (cand, cm))
                if m.evalset_path]
        if not refs:
            raise DataError(f"{base.manifest_path}: the run does not record its evalset path",
                            hint="pass --evalset PATH")
    last: DataError | None = None
    for path, where in refs:
        try:
            es = open_evalset(path)
        except DataError as e:
            last = e
            continue
        if es.content_hash != bm.evalset_hash:
            raise DataError(f"evalset {path} (from {where}) has content hash {es.content_hash}, "
                            f"but the runs were made on {bm.evalset_hash}",
                            hint="pass the evalset version the runs were replayed on with --evalset")
        return es
    path, where = refs[0]
    raise DataError(f"evalset {path} (recorded in {where}) cannot be opened: {last}",
                    hint="pass its current location with --evalset PATH")


def compare_runs(
    base: str | Path,
    cand: str | Path,
    *,
    evalset: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    segments: Sequence[str] | None = None,
    lower_is_better: Collection[str] = (),
    higher_is_better: Collection[str] = (),
    cluster: bool = True,
    seed: int = 0,
    n_boot: int = N_BOOT,
    confidence: float = 0.95,
    worst: int = 10,
    max_segment_values: int = MAX_SEGMENT_VALUES,
    on_metric: Callable[[str], None] | None = None,
    timings: dict[str, float] | None = None,
) -> Comparison:
    """Compare two scored runs of the same evalset case by case. Writes nothing.

    `metrics` limits the metrics (default: every metric both runs have); `segments` names the
    tag keys to compare segment by segment (default: every tag key with 2 to
    `max_segment_values` values). Metric direction comes from the runs' scores.json
    (`higher_is_better`), overridden by `lower_is_better` / `higher_is_better`.
    `on_metric(name)` is called after each metric (for progress bars); `timings`, when given,
    receives seconds per phase (read, segments, metrics, worst, latency).
    """
    clock = _Clock(timings)
    if not 0.5 < confidence < 1:
        raise DataError(f"confidence must be between 0.5 and 1 (got {confidence})")
    if n_boot < 100:
        raise DataError(f"n_boot must be at least 100 (got {n_boot})")
    brun, bm = _load_side(base, "baseline")
    crun, cm = _load_side(cand, "candidate")
    if bm.evalset_hash != cm.evalset_hash:
        raise DataError(
            f"the runs were replayed on different evalsets: baseline {brun.path} on "
            f"{bm.evalset_hash}, candidate {crun.path} on {cm.evalset_hash}",
            hint="replay both model versions on the same evalset version, then compare")
    es = _open_evalset(brun, bm, crun, cm, evalset)
    etable = es.table().select(["case_id", "session_id", "tags"])
    n = etable.num_rows
    eval_ids = etable.column("case_id").combine_chunks()

    clock.lap("evalset")
    b_scores = _read_scores(brun)
    c_scores = _read_scores(crun)
    all_values = {label: _floats(t.column("value"))
                  for label, t in (("baseline", b_scores), ("candidate", c_scores))}
    for vals, table, run in zip(all_values.values(), (b_scores, c_scores), (brun, crun),
                                strict=True):
        bad = np.flatnonzero(np.isinf(vals))
        if bad.size:
            row = table.slice(int(bad[0]), 1).to_pylist()[0]
            raise DataError(f"{run.scores_path}: {bad.size:,} scores are infinite (e.g. metric "
                            f"{row['metric']!r} on case {row['case_id']!r})",
                            hint="scores must be finite numbers or null (scorer failed); "
                                 f"re-run `synthloop score {run.path}`")
    b_codes, b_names = _dictionary_codes(b_scores.column("metric"))
    c_codes, c_names = _dictionary_codes(c_scores.column("metric"))
    notes: list[str] = []
    if metrics is not None:
        for m in metrics:
            for names, label, run in ((b_names, "baseline", brun), (c_names, "candidate", crun)):
                if m not in names:
                    raise DataError(f"metric {m!r} is not in the {label} run's scores ({run.path})",
                                    hint=f"metrics there: {', '.join(names) or '(none)'}")
        chosen = list(dict.fromkeys(metrics))
    else:
        chosen = [m for m in b_names if m in c_names]
        for m in b_names:
            if m not in c_names:
                notes.append(f"metric {m!r} is scored only on the baseline: not compared")
        for m in c_names:
            if m not in b_names:
                notes.append(f"metric {m!r} is scored only on the candidate: not compared")
        if not chosen:
            raise DataError("the runs have no metric in common",
                            hint="score both runs with the same SCORERS.yaml")
    b_meta, c_meta = _scores_meta(brun), _scores_meta(crun)

    clock.lap("read scores")
    segs, skipped = _segmentations(etable.column("tags"), n, segments, max_segment_values)
    clusters, g = _clusters(etable.column("session_id"), n)
    clustered = cluster and g < n
    if not clustered:
        g = n

    b_resp = _read_responses(brun)
    c_resp = _read_responses(crun)

    clock.lap("segments, sessions, responses")
    results: dict[str, MetricComparison] = {}
    picks: dict[str, NDArray[np.int64]] = {}
    values: dict[str, tuple[FloatArray, FloatArray]] = {}
    order_cache: dict[str, Any] = {}
    for name in chosen:
        sides = []
        for table, codes, names, label in ((b_scores, b_codes, b_names, "baseline"),
                                           (c_scores, c_codes, c_names, "candidate")):
            k = names.index(name)
            ids, vals, kinds = _metric_rows(table, codes, k, all_values[label])
            where = f"{label} scores, metric {name!r}"
            pos = _positions(ids, eval_ids, where)
            mean, present, max_samples = _per_case_mean(pos, vals, n)
            kind = next((x for x in kinds.slice(0, 1).to_pylist() if x), "continuous")
            sides.append((mean, present, max_samples, kind))
        (bv, bp, bmax, bkind), (cv, cp, cmax, ckind) = sides
        kind = str((b_meta.get(name) or {}).get("kind") or bkind)
        if bkind != ckind:
            notes.append(f"metric {name!r} has kind {bkind} on the baseline and {ckind} on the "
                         f"candidate; analysed as {kind}")
        hib = (b_meta.get(name) or c_meta.get(name) or {}).get("higher_is_better", True)
        if name in lower_is_better:
            hib = False
        if name in higher_is_better:
            hib = True
        coverage = Coverage(
            cases=n,
            paired=int(np.count_nonzero(~np.isnan(bv) & ~np.isnan(cv))),
            not_scored_base=int(np.count_nonzero(~bp)),
            not_scored_cand=int(np.count_nonzero(~cp)),
            failed_base=int(np.count_nonzero(bp & np.isnan(bv))),
            failed_cand=int(np.count_nonzero(cp & np.isnan(cv))),
            samples_base=max(bmax, 1), samples_cand=max(cmax, 1),
        )
        mc = compare_metric(name, kind, bv, cv, clusters=clusters if clustered else None,
                            segmentations=segs, cache=order_cache,
                            higher_is_better=bool(hib), confidence=confidence, n_boot=n_boot,
                            seed=seed, coverage=coverage)
        if worst > 0:
            picks[name] = _select_worst(bv, cv, bool(hib), worst)
            values[name] = (bv, cv)
        dropped = n - coverage.paired
        if dropped:
            notes.append(f"{name}: {dropped:,} of {n:,} cases not paired "
                         f"(baseline: {coverage.not_scored_base:,} not scored, "
                         f"{coverage.failed_base:,} scorer failures; candidate: "
                         f"{coverage.not_scored_cand:,} not scored, {coverage.failed_cand:,} "
                         f"scorer failures)")
        results[name] = mc
        if on_metric is not None:
            on_metric(name)

    clock.lap("metrics")
    _attach_worst(results, picks, values, es,
                  [(brun, b_resp, b_scores, b_codes, b_names),
                   (crun, c_resp, c_scores, c_codes, c_names)])
    clock.lap("worst cases")
    b_lat = _latency_per_case(b_resp, eval_ids, n, "baseline responses")
    c_lat = _latency_per_case(c_resp, eval_ids, n, "candidate responses")
    latency = _latency(b_lat, c_lat)
    clock.lap("latency")
    return Comparison(
        created_at=datetime.now(UTC),
        package_version=__version__,
        seed=seed,
        n_boot=n_boot,
        confidence=confidence,
        levels=list(LEVELS),
        baseline=_run_ref(brun, bm, b_resp),
        candidate=_run_ref(crun, cm, c_resp),
        evalset=EvalsetRef(path=str(es.path), name=es.manifest.name, version=es.manifest.version,
                           content_hash=es.content_hash, cases=n),
        clustered=clustered,
        n_clusters=g,
        segment_keys=[s.key for s in segs],
        skipped_segment_keys=skipped,
        metrics=results,
        latency=latency,
        notes=notes,
    )


def _latency_per_case(resp: pa.Table, eval_ids: pa.Array, n: int, where: str) -> FloatArray:
    if resp.num_rows == 0:
        return np.full(n, np.nan)
    pos = _positions(resp.column("case_id"), eval_ids, where)
    lat = _floats(resp.column("latency_ms"))
    mean, _, _ = _per_case_mean(pos, lat, n)
    return mean


def _select_worst(bv: FloatArray, cv: FloatArray, hib: bool, k: int) -> NDArray[np.int64]:
    """Evalset rows of the (at most k) cases with the largest worsening, worst first."""
    sign = 1.0 if hib else -1.0
    w = sign * (cv - bv)
    w = np.where(np.isnan(w), np.inf, w)
    neg = int(np.count_nonzero(w < 0))
    if neg == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, neg)
    idx = np.argpartition(w, k - 1)[:k] if k < w.size else np.arange(w.size)
    idx = idx[w[idx] < 0]
    return np.asarray(idx[np.lexsort((idx, w[idx]))], dtype=np.int64)


def _all_null(path: Path, column: str) -> bool:
    """True when the parquet statistics say every value of `column` is null (no read needed)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if column not in names:
        return True
    j = names.index(column)
    for g in range(meta.num_row_groups):
        col = meta.row_group(g).column(j)
        st = col.statistics
        if st is None or not st.has_null_count or st.null_count != col.num_values:
            return False
    return True


def _matching_rows(table: pa.Table, ids: pa.Array) -> NDArray[np.int64]:
    mask = pc.is_in(table.column("case_id"), value_set=ids)
    m = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    return np.flatnonzero(_ints(m, fill=0))


def _attach_worst(results: dict[str, MetricComparison], picks: dict[str, NDArray[np.int64]],
                  values: dict[str, tuple[FloatArray, FloatArray]], es: Evalset,
                  sides: Sequence[tuple[RunDir, pa.Table, pa.Table, NDArray[np.int32], list[str]]],
                  ) -> None:
    """Fill `worst` of every metric: inputs from the evalset, outputs and explanations from
    the runs. Rows are located in the tables already in memory; only the text columns are
    read again, once per run for all metrics."""
    every = np.unique(np.concatenate([v for v in picks.values()] or [np.zeros(0, np.int64)]))
    if every.size == 0:
        return
    cols = ["case_id", "session_id", "tags", "input", "history", "references_good"]
    picked = es.table().select(cols).take(_arrow_ints(every))
    rows = picked.to_pylist()
    by_row = dict(zip(every.tolist(), rows, strict=True))
    ids = picked.column("case_id").combine_chunks()
    outs: list[dict[str, tuple[int, str | None, str | None]]] = []
    expl: list[dict[tuple[str, str], tuple[int, str | None]]] = []
    for run, resp, scores, codes, names in sides:
        r_rows = _matching_rows(resp, ids)
        texts = _read_parquet(run.responses_path, ["output", "error"],
                              RESPONSES_SCHEMA).take(_arrow_ints(r_rows))
        found: dict[str, tuple[int, str | None, str | None]] = {}
        for cid, smp, text, err in zip(resp.column("case_id").take(_arrow_ints(r_rows)).to_pylist(),
                                      resp.column("sample").take(_arrow_ints(r_rows)).to_pylist(),
                                      texts.column("output").to_pylist(),
                                      texts.column("error").to_pylist(), strict=True):
            if cid not in found or (smp or 0) < found[cid][0]:
                found[cid] = (smp or 0, text, err)
        outs.append(found)
        best: dict[tuple[str, str], tuple[int, str | None]] = {}
        expl.append(best)
        if _all_null(run.scores_path, "explanation"):
            continue
        s_rows = _matching_rows(scores, ids)
        ex = _read_parquet(run.scores_path, ["explanation"], SCORES_SCHEMA).column("explanation")
        for cid, smp, code, e in zip(scores.column("case_id").take(_arrow_ints(s_rows)).to_pylist(),
                                     scores.column("sample").take(_arrow_ints(s_rows)).to_pylist(),
                                     codes[s_rows].tolist(),
                                     ex.take(_arrow_ints(s_rows)).to_pylist(), strict=True):
            key = (cid, names[code])
            if key not in best or (smp or 0) < best[key][0]:
                best[key] = (smp or 0, e)
    for name, idx in picks.items():
        bv, cv = values[name]
        out: list[CaseDiff] = []
        for i in idx.tolist():
            row = by_row[i]
            cid = row["case_id"]
            bo, co = outs[0].get(cid, (0, None, None)), outs[1].get(cid, (0, None, None))
            refs = row.get("references_good") or []
            hist = [{"role": str(m["role"]), "content": _cut(m["content"]) or ""}
                    for m in (row.get("history") or [])[-4:]]
            out.append(CaseDiff(
                case_id=cid, session_id=row.get("session_id"),
                tags={t["key"]: t["value"] for t in (row.get("tags") or [])},
                input=_cut(row.get("input")), history=hist,
                reference=_cut(refs[0]) if refs else None,
                base_output=_cut(bo[1]), cand_output=_cut(co[1]),
                base_error=_cut(bo[2]), cand_error=_cut(co[2]),
                base_score=_num(bv[i]), cand_score=_num(cv[i]),
                base_explanation=_cut(expl[0].get((cid, name), (0, None))[1]),
                cand_explanation=_cut(expl[1].get((cid, name), (0, None))[1]),
            ))
        results[name].worst = out


def _num(x: float) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- in memory
def segmentation_from_values(key: str, values: Sequence[str | None] | NDArray[Any]) -> Segmentation:
    """A Segmentation from one tag value per case (None = the case lacks the tag)."""
    codes, names = _dictionary_codes(pa.array(list(values) if not isinstance(values, np.ndarray)
                                              else values.astype(object), pa.string()))
    return Segmentation(key=key, codes=codes, values=names)


def compare_arrays(
    base: Mapping[str, Sequence[float] | FloatArray],
    cand: Mapping[str, Sequence[float] | FloatArray],
    *,
    kinds: Mapping[str, str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    segments: Mapping[str, Sequence[str | None] | NDArray[Any]] | None = None,
    sessions: Sequence[str | None] | NDArray[Any] | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    confidence: float = 0.95,
    name: str = "arrays",
) -> Comparison:
    """Compare per-case values held in memory (aligned by position; NaN = no value).

    The same statistics as `compare_runs`, without files: for simulations (the calibration
    benchmark uses it), notebooks and pipelines that already hold scores. No latency, no
    worst cases (there are no outputs).
    """
    names = [m for m in base if m in cand]
    if not names:
        raise DataError("base and cand have no metric in common")
    n = len(next(iter(base.values())))
    for what, seq in [*((f"segments[{k!r}]", v) for k, v in (segments or {}).items()),
                      *([("sessions", sessions)] if sessions is not None else [])]:
        if len(seq) != n:
            raise DataError(f"{what}: {len(seq)} values for {n} cases",
                            hint="give one value per case, aligned with the metric values")
    segs = [segmentation_from_values(k, v) for k, v in (segments or {}).items()]
    clusters: NDArray[np.int64] | None = None
    if sessions is not None:
        arr = pa.array(list(sessions) if not isinstance(sessions, np.ndarray)
                       else sessions.astype(object), pa.string())
        clusters, g = _clusters(pa.chunked_array([arr]), n)
        if g == n:
            clusters = None
    results: dict[str, MetricComparison] = {}
    order_cache: dict[str, Any] = {}
    for m in names:
        bv = np.asarray(base[m], dtype=np.float64)
        cv = np.asarray(cand[m], dtype=np.float64)
        if bv.size != n or cv.size != n:
            raise DataError(f"metric {m!r}: {bv.size} baseline and {cv.size} candidate values "
                            f"for {n} cases")
        for label, v in (("baseline", bv), ("candidate", cv)):
            bad = np.flatnonzero(np.isinf(v))
            if bad.size:
                raise DataError(f"metric {m!r}: {label} value {v[bad[0]]} at position "
                                f"{int(bad[0])} is not finite",
                                hint="use NaN for a case without a value")
        results[m] = compare_metric(
            m, (kinds or {}).get(m, "continuous"), bv, cv, clusters=clusters,
            segmentations=segs, higher_is_better=(higher_is_better or {}).get(m, True),
            confidence=confidence, n_boot=n_boot, seed=seed, cache=order_cache)
    ref = RunRef(path="<memory>", target_kind="memory", fingerprint="", responses=n, errors=0)
    return Comparison(
        created_at=datetime.now(UTC), package_version=__version__, seed=seed, n_boot=n_boot,
        confidence=confidence, levels=list(LEVELS),
        baseline=ref.model_copy(update={"target_name": "baseline"}),
        candidate=ref.model_copy(update={"target_name": "candidate"}),
        evalset=EvalsetRef(path="<memory>", name=name, version="-", content_hash="", cases=n),
        clustered=clusters is not None, n_clusters=int(clusters.max()) + 1 if clusters is not None else n,
        segment_keys=[sg.key for sg in segs], metrics=results,
    )


# --------------------------------------------------------------------------- files
def comparison_path(ref: str | Path) -> Path:
    """CMPDIR/comparison.json, or the file itself when `ref` is a JSON file."""
    p = Path(ref)
    return p if p.suffix == ".json" and not p.is_dir() else p / COMPARISON_FILE


VERDICT_FILE = "verdict.json"
"""`synthloop gate` writes CMPDIR/verdict.json (synthloop.gate.VERDICT_FILE): a verdict on the
comparison beside it, so a new comparison makes it stale."""


def write_comparison(comparison: Comparison, out: str | Path) -> Path:
    """Write CMPDIR/comparison.json atomically (creating CMPDIR); returns the file path.

    A `verdict.json` already in CMPDIR gated the comparison this one replaces, so it is
    removed first: a new comparison never sits beside an old verdict."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise DataError(f"{d}: exists and is not a directory", hint="choose another --out")
    d.mkdir(parents=True, exist_ok=True)
    (d / VERDICT_FILE).unlink(missing_ok=True)
    path = d / COMPARISON_FILE
    write_atomic(path, comparison.model_dump_json(indent=1) + "\n")
    return path


def read_comparison(ref: str | Path) -> Comparison:
    """Read CMPDIR/comparison.json (or a comparison JSON file) with a clear error."""
    path = comparison_path(ref)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: no comparison found",
                        hint="run `synthloop compare BASE_RUNDIR CAND_RUNDIR --out CMPDIR` first") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read comparison: {e}") from None
    try:
        return Comparison.model_validate_json(text)
    except Exception as e:
        raise DataError(f"{path}: invalid comparison file: {first_problem(e)}",
                        hint="re-run `synthloop compare` with this synthloop version") from None
