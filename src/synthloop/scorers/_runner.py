"""Score a run: SCORERS.yaml → scorers → per-case scores in RUNDIR/scores.parquet + scores.json.

`score_run(rundir, config)` reads the run's responses and the evalset it was replayed on,
scores every (case, sample) with every scorer and writes long-format scores. Re-scoring
replaces the metrics of the same name and keeps the others; metrics scored on different
responses (the run was replayed again since) are dropped as stale. Nothing is written when the
config, the run or a scorer's setup is invalid.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from synthloop import __version__
from synthloop.config import file_hash, interpolate_env, parse_document, read_text, validate_data
from synthloop.errors import ConfigError, DataError, SynthloopError
from synthloop.evalsets import Evalset, open_evalset, row_to_case
from synthloop.harness.cache import ResponseCache
from synthloop.progress import Bar, progress_bar
from synthloop.registry import scorers as registry
from synthloop.runs import SCORES_SCHEMA, RunDir
from synthloop.schema import SCHEMA_VERSION, EvalCase, Response, RunManifest, Score
from synthloop.scorers._base import (
    METRIC_KINDS,
    NO_OUTPUT,
    BaselineRun,
    BatchScores,
    RunContext,
    Scorer,
    ScoringBatch,
    as_factory,
    check_value,
    error_text,
)
from synthloop.scorers._custom import coerce

DEFAULT_CACHE = Path(".synthloop") / "cache.sqlite"
CHUNK_ROWS = 2048
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------- config
class ScorerEntry(BaseModel):
    """One entry of `scorers:`; its kind's factory validates the other keys."""

    model_config = ConfigDict(extra="allow")

    name: str
    """Metric name (letters, digits, `_`, `.`, `-`), unique in the file."""
    kind: str
    """Scorer kind: a built-in (exact_match, regex, token_f1, llm_judge, ...) or a plugin."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("use letters, digits, '_', '.' and '-' only")
        return v


class ScorersConfig(BaseModel):
    """SCORERS.yaml: the scorers to run on a run directory."""

    model_config = ConfigDict(extra="forbid")

    scorers: list[ScorerEntry] = Field(min_length=1)
    """The scorers, each with `name` (metric name), `kind` and the kind's options."""
    concurrency: int = Field(default=16, ge=1)
    """Async per-case scorings in flight at once (LLM judges also have their own limit)."""
    cache: str | None = None
    """Response cache for LLM judges (default `.synthloop/cache.sqlite`; `--cache` overrides)."""

    _source: str = PrivateAttr(default="SCORERS")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @classmethod
    def from_data(cls, data: Any, *, source: str = "SCORERS", base_dir: Path | None = None
                  ) -> ScorersConfig:
        """Validate already-parsed data (e.g. a section of a pipeline config)."""
        cfg = validate_data(data, cls, source)
        cfg._source = source
        cfg._base_dir = base_dir or Path.cwd()
        return cfg


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-.*?)?\}")


def _problems_of(e: ConfigError) -> list[str]:
    return list(e.problems) if e.problems else [str(e)]


def _raise(source: str, problems: list[str]) -> None:
    if problems:
        head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
        raise ConfigError(head, problems=problems)


def load_scorers_config(path: str | Path) -> ScorersConfig:
    """Read and validate SCORERS.yaml (every problem listed in one ConfigError)."""
    return load_and_build(path)[0]


def load_and_build(path: str | Path) -> tuple[ScorersConfig, list[Scorer]]:
    """Read SCORERS.yaml and build its scorers, listing every problem of the file at once:
    top-level keys, entries, each kind's options, duplicate names."""
    p = Path(path)
    text = read_text(p, "scorer config")
    data = parse_document(p, text)
    missing: list[str] = []
    data = interpolate_env(data, missing=missing)
    problems = [f"{p}: {m}" for m in missing]
    base_dir = p.resolve().parent
    cfg: ScorersConfig | None = None
    try:
        cfg = ScorersConfig.from_data(data, source=str(p), base_dir=base_dir)
    except ConfigError as e:
        problems.extend(_problems_of(e))
    entries = data.get("scorers") if isinstance(data, dict) else None
    scorers, entry_problems = _build_entries(entries if isinstance(entries, list) else [],
                                             str(p), base_dir)
    problems.extend(entry_problems)
    _raise(str(p), problems)
    assert cfg is not None
    cfg._secrets = _secret_env_values(text)
    return cfg, scorers


def _secret_env_values(text: str) -> dict[str, str]:
    """Values of secret-looking environment variables the file interpolates (value → ${NAME})."""
    import os

    found: dict[str, str] = {}
    for m in _ENV_REF.finditer(text):
        name = m.group(1)
        value = os.environ.get(name)
        if value and _SECRET_KEY.search(name):
            found[value] = f"${{{name}}}"
    return found


def build_scorers(config: ScorersConfig) -> list[Scorer]:
    """Build every scorer; one ConfigError listing every entry's problems."""
    scorers, problems = _build_entries([e.model_dump() for e in config.scorers], config.source,
                                       config.base_dir)
    _raise(config.source, problems)
    return scorers


def _build_entries(entries: list[Any], source: str, base_dir: Path
                   ) -> tuple[list[Scorer], list[str]]:
    built: list[Scorer] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue  # reported by the ScorersConfig validation
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not isinstance(kind, str) or not _NAME_RE.match(name):
            continue  # reported by the ScorersConfig validation
        where = f"{source}: scorers[{i}] '{name}'"
        try:
            factory = as_factory(registry.get(kind), kind)
            s = factory(dict(entry), base_dir=base_dir)
        except ConfigError as e:
            problems.extend(f"{where}: {line}" for line in _problems_of(e))
            continue
        if getattr(s, "kind", None) not in METRIC_KINDS or not isinstance(
                getattr(s, "name", None), str):
            problems.append(f"{where}: scorer kind '{kind}' built {s!r} without a valid "
                            "name and kind (binary, continuous or ordinal)")
            continue
        if not callable(getattr(s, "score", None)):
            problems.append(f"{where}: scorer kind '{kind}' built {s!r} without a "
                            "score(case, response) method")
            continue
        built.append(s)
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    names += [s.name for s in built if s.name not in names]
    for n in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
        problems.append(f"{source}: scorers: duplicate metric name '{n}' (each name must be "
                        "unique)")
    return built, problems


# --------------------------------------------------------------------------- secrets
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:api[_\-]?key|key|token|secret|password|passwd|authorization|auth|bearer|"
    r"credentials?|cookie|private[_\-]?key)$", re.IGNORECASE)
"""Names of keys whose values are secrets: `api_key`, `X-Api-Key`, `access_token`,
`Authorization`, ... (not `max_tokens` or `prompt_tokens`)."""
REDACTED = "***redacted***"


def redact(value: Any, secrets: Sequence[str] | dict[str, str] = (), *, keys: bool = True
           ) -> Any:
    """A copy of a config with secret-looking keys and known secret values removed.

    Keys naming an environment variable (`*_env`) are kept: they hold a name, not a secret.
    `secrets` lists secret values to blank out anywhere in strings (or maps each to the text
    that replaces it, e.g. `${API_TOKEN}`).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            ks = str(k)
            if keys and _SECRET_KEY.search(ks) and not ks.endswith("_env") and v is not None:
                out[ks] = REDACTED
            else:
                out[ks] = redact(v, secrets, keys=keys)
        return out
    if isinstance(value, list):
        return [redact(v, secrets, keys=keys) for v in value]
    if isinstance(value, str):
        pairs = secrets.items() if isinstance(secrets, dict) else ((s, REDACTED) for s in secrets)
        for s, replacement in pairs:
            if s and len(s) >= 4 and s in value:
                value = value.replace(s, replacement)
        return value
    return value


def _secret_values(scorers: Sequence[Any], cfg: ScorersConfig) -> dict[str, str]:
    import os

    found = dict(cfg._secrets)
    for s in scorers:
        for var in getattr(s, "secret_env_vars", ()) or ():
            v = os.environ.get(var)
            if v:
                found[v] = f"${{{var}}}"
    return found


# --------------------------------------------------------------------------- run loading
def _open_run_evalset(run: RunDir, manifest: RunManifest, override: str | Path | None) -> Evalset:
    ref = override if override is not None else manifest.evalset_path
    if not ref:
        raise DataError(f"{run.manifest_path}: the run does not record its evalset_path",
                        hint="pass --evalset PATH (the evalset version the run replayed)")
    candidates = [Path(ref)]
    if not Path(ref).is_absolute():
        candidates.append(run.path / ref)
    es: Evalset | None = None
    for c in candidates:
        if (c / "manifest.json").exists():
            es = open_evalset(c)
            break
    if es is None:
        try:
            es = open_evalset(ref)
        except DataError as e:
            raise DataError(f"evalset of run {run.path} not found: {e.message}",
                            hint="pass --evalset PATH (the evalset version the run replayed)"
                            ) from None
    if es.content_hash != manifest.evalset_hash:
        raise DataError(
            f"evalset at {es.path} has hash {es.content_hash}, but run {run.path} was replayed "
            f"on {manifest.evalset_hash}",
            hint="pass --evalset with the version the run used")
    return es


def _responses_table(run: RunDir) -> pa.Table:
    table = run.responses_table()
    if table.num_rows == 0:
        raise DataError(f"{run.path}: the run has no responses: nothing to score",
                        hint="replay the evalset first (`synthloop replay`)")
    return table


def _load_baseline(path: Path, manifest: RunManifest) -> BaselineRun:
    base = RunDir(Path(path))
    bm = base.manifest()
    if bm.evalset_hash != manifest.evalset_hash:
        raise DataError(f"baseline {path} was replayed on evalset {bm.evalset_hash}, the "
                        f"candidate on {manifest.evalset_hash}",
                        hint="pair runs of the same evalset version")
    responses = {(r.case_id, r.sample): r for r in base.responses()}
    if not responses:
        raise DataError(f"baseline {path}: the run has no responses")
    return BaselineRun(path=Path(path), manifest=bm, responses=responses)


# --------------------------------------------------------------------------- scoring
@dataclass
class _Columns:
    """One metric's output columns for the whole run."""

    values: list[float | None]
    explanations: list[str | None]
    errors: list[str | None]

    def put(self, i: int, value: float | None, explanation: str | None, error: str | None,
            kind: str) -> None:
        why = check_value(value, kind)
        if why is not None:
            value, error = None, why
        self.values[i] = value
        self.explanations[i] = explanation
        self.errors[i] = error

    def put_many(self, start: int, res: BatchScores, kind: str) -> None:
        """Store a batch's results at rows start.., checking every value in bulk."""
        stop = start + len(res)
        self.values[start:stop] = res.values
        self.explanations[start:stop] = res.explanations
        self.errors[start:stop] = res.errors
        binary = kind == "binary"
        for j, v in enumerate(res.values):
            if v is not None and (not math.isfinite(v) or (binary and v != 0.0 and v != 1.0)):
                self.put(start + j, v, res.explanations[j], res.errors[j], kind)


@dataclass
class _Job:
    scorer: Any
    cols: _Columns
    mode: str  # batch | many | one
    is_async: bool = False


def _mode(s: Any) -> str:
    if callable(getattr(s, "score_batch", None)):
        return "batch"
    if callable(getattr(s, "score_many", None)):
        return "many"
    return "one"


class _Scoring:
    """The scoring loop over one run (chunks of rows × scorers), inside one event loop."""

    def __init__(self, scorers: list[Any], responses: pa.Table, evalset_table: pa.Table,
                 case_rows: list[int], concurrency: int, bar: Bar) -> None:
        self.n = responses.num_rows
        self.responses = responses
        self.evalset_table = evalset_table
        self.case_rows = case_rows
        """Evalset row of each response row."""
        self.aligned = case_rows == list(range(len(case_rows)))
        """Responses are in evalset order, one per case: case columns are plain slices."""
        self._ev_lists: dict[str, list[Any]] = {}
        self.sem = asyncio.Semaphore(concurrency)
        self.bar = bar
        self.jobs = [
            _Job(s, _Columns([None] * self.n, [None] * self.n, [None] * self.n), _mode(s),
                 is_async=inspect.iscoroutinefunction(getattr(s, "score", None)))
            for s in scorers
        ]

    def _case_list(self, name: str) -> list[Any]:
        """A whole evalset column as a Python list (read once, shared by every chunk)."""
        col = self._ev_lists.get(name)
        if col is None:
            col = self._ev_lists[name] = self.evalset_table.column(name).to_pylist()
        return col

    def batch(self, start: int, stop: int) -> ScoringBatch:
        t = self.responses.slice(start, stop - start)
        idx = self.case_rows[start:stop]
        aligned = self.aligned

        def case_columns(name: str) -> list[Any]:
            full = self._case_list(name)
            if aligned:
                return full[start:stop]
            return [full[i] for i in idx]

        def load_cases() -> list[EvalCase]:
            rows = self.evalset_table.take(pa.array(idx, pa.int64())).to_pylist()
            return [row_to_case(r) for r in rows]

        return ScoringBatch(
            case_ids=t.column("case_id").to_pylist(),
            samples=[int(s or 0) for s in t.column("sample").to_pylist()],
            outputs=t.column("output").to_pylist(),
            errors=t.column("error").to_pylist(),
            error_kinds=t.column("error_kind").to_pylist(),
            latency_ms=t.column("latency_ms").to_pylist(),
            prompt_tokens=[int(x or 0) for x in t.column("prompt_tokens").to_pylist()],
            completion_tokens=[int(x or 0) for x in t.column("completion_tokens").to_pylist()],
            case_columns=case_columns,
            case_loader=load_cases,
        )

    async def run(self) -> None:
        for start in range(0, self.n, CHUNK_ROWS):
            stop = min(self.n, start + CHUNK_ROWS)
            batch = self.batch(start, stop)
            pending: list[Awaitable[None]] = []
            for job in self.jobs:
                if job.mode == "batch":
                    await self._run_batch(job, batch, start)
                elif job.mode == "many":
                    await self._run_many(job, batch, start)
                else:
                    pending.extend(self._run_each(job, batch, start))
            if pending:
                await self._gather(pending)

    async def _gather(self, pending: list[Awaitable[None]]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for p in pending:
                    tg.create_task(p)  # type: ignore[arg-type]
        except* SynthloopError as eg:
            raise eg.exceptions[0] from None

    # -- columnar fast path
    async def _run_batch(self, job: _Job, batch: ScoringBatch, start: int) -> None:
        s = job.scorer
        try:
            res = s.score_batch(batch)
            if inspect.isawaitable(res):
                res = await res
            if not isinstance(res, BatchScores) or len(res) != len(batch):
                raise TypeError(f"score_batch returned {type(res).__name__} of the wrong size")
        except SynthloopError:
            raise
        except Exception:
            await self._fallback(job, batch, start)
            return
        job.cols.put_many(start, res, s.kind)
        self.bar.advance(len(batch))

    # -- vectorised plugin path
    async def _run_many(self, job: _Job, batch: ScoringBatch, start: int) -> None:
        s = job.scorer
        responses = batch.responses()
        try:
            res = s.score_many(batch.cases(), responses)
            if inspect.isawaitable(res):
                res = await res
            res = list(res)
            if len(res) != len(batch):
                raise ValueError(f"score_many returned {len(res)} scores for {len(batch)} cases")
            scores = [self._as_score(job, r, resp) for r, resp in zip(res, responses,
                                                                      strict=True)]
        except SynthloopError:
            raise
        except Exception:
            await self._fallback(job, batch, start)
            return
        for j, sc in enumerate(scores):
            job.cols.put(start + j, sc.value, sc.explanation, sc.error, s.kind)
        self.bar.advance(len(batch))

    async def _fallback(self, job: _Job, batch: ScoringBatch, start: int) -> None:
        """A vectorised call failed: score case by case so one bad case fails alone."""
        pending = self._run_each(job, batch, start)
        if pending:
            await self._gather(pending)

    # -- per-case path (sync or async)
    def _run_each(self, job: _Job, batch: ScoringBatch, start: int) -> list[Awaitable[None]]:
        s = job.scorer
        cases, responses = batch.cases(), batch.responses()
        pending: list[Awaitable[None]] = []
        synced = 0
        for j, (case, resp) in enumerate(zip(cases, responses, strict=True)):
            i = start + j
            if job.is_async:
                pending.append(self._finish_async(job, functools.partial(s.score, case, resp), resp, i))
                continue
            try:
                res = s.score(case, resp)
            except SynthloopError:
                raise
            except Exception as e:
                job.cols.put(i, None, None, error_text(e), s.kind)
                synced += 1
                continue
            if inspect.isawaitable(res):
                pending.append(self._finish_async(job, res, resp, i))
            else:
                self._record(job, res, resp, i)
                synced += 1
        if synced:
            self.bar.advance(synced)
        return pending

    async def _finish_async(self, job: _Job, aw: Awaitable[Any] | Callable[[], Awaitable[Any]],
                            resp: Response, i: int) -> None:
        """Await one score under the concurrency limit; `aw` may be a factory (started inside)."""
        async with self.sem:
            try:
                res = await (aw() if callable(aw) else aw)
            except SynthloopError:
                raise
            except Exception as e:
                job.cols.put(i, None, None, error_text(e), job.scorer.kind)
                self.bar.advance(1)
                return
        self._record(job, res, resp, i)
        self.bar.advance(1)

    def _record(self, job: _Job, res: Any, resp: Response, i: int) -> None:
        try:
            sc = self._as_score(job, res, resp)
        except Exception as e:
            job.cols.put(i, None, None, error_text(e), job.scorer.kind)
            return
        job.cols.put(i, sc.value, sc.explanation, sc.error, job.scorer.kind)

    @staticmethod
    def _as_score(job: _Job, res: Any, resp: Response) -> Score:
        return coerce(res, case_id=resp.case_id, sample=resp.sample, metric=job.scorer.name,
                      kind=job.scorer.kind)


def _run_coroutine(factory: Callable[[], Awaitable[None]]) -> None:
    """asyncio.run, or in a helper thread when called from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(factory())  # type: ignore[arg-type]
        return
    box: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as e:  # re-raised in the caller's thread
            box.append(e)

    t = threading.Thread(target=target, name="synthloop-score")
    t.start()
    t.join()
    if box:
        raise box[0]


async def _close_all(scorers: Sequence[Any]) -> None:
    for s in scorers:
        aclose = getattr(s, "aclose", None)
        if callable(aclose):
            res = aclose()
            if inspect.isawaitable(res):
                await res
            continue
        close = getattr(s, "close", None)
        if callable(close):
            res = close()
            if inspect.isawaitable(res):
                await res


# --------------------------------------------------------------------------- summaries
def metric_summary(cols: _Columns, kind: str, higher_is_better: bool) -> dict[str, Any]:
    """mean, n, failures and spread of one metric's values (nulls left out)."""
    vals = np.array([v for v in cols.values if v is not None], dtype=float)
    failures = 0
    no_output = 0
    first_failure: str | None = None
    for v, err in zip(cols.values, cols.errors, strict=True):
        if v is None:
            if err is not None and err.startswith(NO_OUTPUT):
                no_output += 1
            else:
                failures += 1
                if first_failure is None:
                    first_failure = err
    out: dict[str, Any] = {
        "kind": kind,
        "higher_is_better": bool(higher_is_better),
        "n": int(vals.size),
        "mean": _num(vals.mean()) if vals.size else None,
        "failures": failures,
        "no_output_null": no_output,
    }
    if vals.size:
        out["std"] = _num(vals.std(ddof=1)) if vals.size > 1 else 0.0
        out["min"] = _num(vals.min())
        out["max"] = _num(vals.max())
        if kind != "binary":
            out["p50"] = _num(np.percentile(vals, 50))
            out["p95"] = _num(np.percentile(vals, 95))
    if first_failure:
        out["first_failure"] = first_failure
    return out


def _num(x: Any) -> float | None:
    f = float(x)
    return round(f, 10) if math.isfinite(f) else None


def _read_existing(run: RunDir) -> tuple[pa.Table | None, dict[str, Any]]:
    table = run.scores_table() if run.scores_path.exists() else None
    meta: dict[str, Any] = {}
    if run.scores_summary_path.exists():
        try:
            meta = json.loads(run.scores_summary_path.read_text())
        except ValueError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
    return table, meta


# --------------------------------------------------------------------------- entry point
def score_run(
    rundir: str | Path,
    config: ScorersConfig | str | Path,
    *,
    baseline: str | Path | None = None,
    cache: str | Path | None = None,
    no_cache: bool = False,
    evalset: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score a run directory and write RUNDIR/scores.parquet + scores.json; returns the summary.

    `config` is a ScorersConfig or the path of SCORERS.yaml. `baseline` is the baseline run
    for pairwise scorers. `cache` is the LLM-judge response cache (default from the config, else
    `.synthloop/cache.sqlite`); `no_cache` disables it. `evalset` overrides the run's
    recorded evalset path.
    """
    if isinstance(config, ScorersConfig):
        cfg, scorers = config, build_scorers(config)
    else:
        cfg, scorers = load_and_build(config)
    run = RunDir(Path(rundir))
    manifest = run.manifest()
    responses = _responses_table(run)
    es = _open_run_evalset(run, manifest, evalset)
    ev_table = es.table()
    case_ids: list[str] = ev_table.column("case_id").to_pylist()
    case_index = {c: i for i, c in enumerate(case_ids)}
    resp_ids = responses.column("case_id").to_pylist()
    unknown = [c for c in resp_ids if c not in case_index]
    case_rows = [case_index.get(c, -1) for c in resp_ids]
    if unknown:
        raise DataError(f"{run.responses_path}: {len(unknown)} responses refer to cases not in "
                        f"evalset {es.path} (e.g. '{unknown[0]}')",
                        hint="score the run against the evalset it replayed (--evalset)")

    needing = [s.name for s in scorers if getattr(s, "needs_baseline", False)]
    base: BaselineRun | None = None
    if needing and baseline is None:
        raise ConfigError(f"scorer(s) {', '.join(needing)} compare against a baseline run",
                          hint="pass --baseline BASE_RUNDIR")
    if baseline is not None:
        base = _load_baseline(Path(baseline), manifest)

    response_cache: ResponseCache | None = None
    if not no_cache and any(getattr(s, "uses_cache", False) for s in scorers):
        response_cache = ResponseCache(Path(cache) if cache is not None else
                                       Path(cfg.cache) if cfg.cache else DEFAULT_CACHE)
    context = RunContext(rundir=run.path, manifest=manifest, evalset=es, baseline=base,
                         cache=response_cache, concurrency=cfg.concurrency)
    try:
        for s in scorers:
            prep = getattr(s, "prepare", None)
            if callable(prep):
                prep(context)

        n = responses.num_rows
        with progress_bar(n * len(scorers), "score", enabled=progress) as bar:
            holder: dict[str, _Scoring] = {}

            async def main() -> None:
                scoring = _Scoring(scorers, responses, ev_table, case_rows, cfg.concurrency, bar)
                holder["s"] = scoring
                try:
                    await scoring.run()
                finally:
                    await _close_all(scorers)

            _run_coroutine(main)
        scoring = holder["s"]
    finally:
        if response_cache is not None:
            response_cache.close()

    return _write(run, manifest, cfg, scorers, scoring, responses, base)


def _write(run: RunDir, manifest: RunManifest, cfg: ScorersConfig, scorers: list[Any],
           scoring: _Scoring, responses: pa.Table, base: BaselineRun | None) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    resp_hash = "sha256:" + file_hash(run.responses_path)
    n = responses.num_rows
    case_col = responses.column("case_id").combine_chunks()
    sample_col = responses.column("sample").combine_chunks().cast(pa.int32())
    secrets = _secret_values(scorers, cfg)

    new_tables: list[pa.Table] = []
    metrics: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    for job in scoring.jobs:
        s = job.scorer
        c = job.cols
        new_tables.append(pa.table({
            "case_id": case_col,
            "sample": sample_col,
            "metric": pa.array([s.name] * n, pa.string()),
            "value": pa.array(c.values, pa.float64()),
            "kind": pa.array([s.kind] * n, pa.string()),
            "explanation": pa.array(c.explanations, pa.string()),
            "error": pa.array(c.errors, pa.string()),
        }, schema=SCORES_SCHEMA))
        summ = metric_summary(c, s.kind, getattr(s, "higher_is_better", True))
        extra = getattr(s, "summary_extra", None)
        if callable(extra):
            summ.update(extra())
        summ["responses_hash"] = resp_hash
        summ["scored_at"] = now
        metrics[s.name] = summ
        describe = getattr(s, "describe", None)
        desc = describe() if callable(describe) else {"name": s.name}
        configs[s.name] = redact(desc, secrets)
        use = getattr(s, "usage", None)
        if callable(use):
            u = use()
            if u:
                usage[s.name] = redact(u, secrets, keys=False)

    old_table, old_meta = _read_existing(run)
    new_names = {s.name for s in scorers}
    old_metrics: dict[str, Any] = dict(old_meta.get("metrics") or {})
    old_configs: dict[str, Any] = dict(old_meta.get("scorers") or {})
    old_usage: dict[str, Any] = dict(old_meta.get("usage") or {})
    stale = sorted(m for m, summ in old_metrics.items()
                   if m not in new_names and isinstance(summ, dict)
                   and summ.get("responses_hash") not in (None, resp_hash))
    drop = new_names | set(stale)
    kept: list[str] = []
    tables = []
    if old_table is not None and old_table.num_rows:
        keep_mask = pc.invert(pc.is_in(old_table.column("metric"),
                                       value_set=pa.array(sorted(drop), pa.string())))
        kept_table = old_table.filter(keep_mask)
        if kept_table.num_rows:
            tables.append(kept_table)
            kept = sorted(set(kept_table.column("metric").to_pylist()))
    tables.extend(new_tables)
    table = pa.concat_tables(tables)

    all_metrics = {m: v for m, v in old_metrics.items() if m in kept}
    all_metrics.update(metrics)
    all_configs = {m: v for m, v in old_configs.items() if m in kept}
    all_configs.update(configs)
    all_usage = {m: v for m, v in old_usage.items() if m in kept}
    all_usage.update(usage)
    no_output = int(pc.sum(responses.column("output").is_null()).as_py() or 0)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "scored_at": now,
        "run": {
            "path": str(run.path),
            "evalset_hash": manifest.evalset_hash,
            "target": manifest.target_name or manifest.target.model or manifest.target.kind,
            "responses_hash": resp_hash,
            "responses": n,
            "no_output": no_output,
        },
        "baseline": None if base is None else {
            "path": str(base.path), "target": base.manifest.target_name
            or base.manifest.target.model or base.manifest.target.kind},
        "scorers": all_configs,
        "metrics": all_metrics,
        "usage": all_usage,
    }
    run.write_scores(table)
    from synthloop.runs import write_atomic

    write_atomic(run.scores_summary_path, json.dumps(doc, indent=2, default=str) + "\n")
    warnings = []
    if manifest.status != "complete":
        warnings.append(f"the run's status is '{manifest.status}': scores cover the "
                        f"{n} responses recorded so far")
    return {
        "rundir": str(run.path),
        "responses": n,
        "no_output": no_output,
        "metrics": metrics,
        "usage": usage,
        "kept": kept,
        "dropped_stale": stale,
        "scores_path": str(run.scores_path),
        "warnings": warnings,
    }
