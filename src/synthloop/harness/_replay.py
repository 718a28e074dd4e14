"""The replay engine: run every case of an evalset through a target, fast and without loss.

- asyncio workers (`concurrency` of them) pull (case, sample) items from a lazily planned
  queue; optional requests-per-minute and tokens-per-minute token buckets.
- each attempt runs under a timeout; retries go through tenacity (exponential backoff with
  jitter, `Retry-After` honoured) for what `target.should_retry` accepts; a case whose retry
  budget runs out is recorded with its error and the run goes on.
- a content-addressed SQLite cache (fingerprint + request + sample index) means a reply is
  never paid for twice, across runs and processes; identical requests within a run are sent
  once.
- `RUNDIR/log.jsonl` gets one line per completed (case, sample) as it completes (one
  `write(2)` each, so a SIGKILL loses at most the replies in flight); running again with the
  same RUNDIR resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from synthloop import __version__
from synthloop._locks import release as release_lock
from synthloop._locks import try_lock
from synthloop.errors import DataError, SynthloopError, TargetError
from synthloop.evalsets import Evalset, open_evalset, row_to_case
from synthloop.harness._limits import RateLimiter
from synthloop.harness.cache import ResponseCache, make_key
from synthloop.progress import Bar, progress_bar
from synthloop.runs import RunDir
from synthloop.schema import EvalCase, Response, RunCounts, RunManifest, TargetFingerprint, Usage
from synthloop.targets._base import (
    BaseTarget,
    TargetCallError,
    TargetSettings,
    default_should_retry,
    load_target,
)

DEFAULT_CACHE_PATH = Path(".synthloop") / "cache.sqlite"
"""Default response cache, relative to the current directory."""
DEFAULT_CONCURRENCY = 16
CACHE_NAMESPACE = "synthloop-response/1"
_PLAN_BATCH = 512
_CACHE_FLUSH = 64


@dataclass
class ReplayStats:
    """What one `replay` call did (the manifest describes the whole run)."""

    requests: int = 0
    """Attempts sent to the target by this call (retries included)."""
    completed: int = 0
    """(case, sample) items finished by this call."""
    cache_hits: int = 0
    """Items answered from the response cache (or an identical request in this run)."""
    resumed: int = 0
    """Items already in the run log when this call started."""
    errors: int = 0
    """Items finished with an error by this call."""
    wall_s: float = 0.0
    """Wall time of this call, seconds."""


@dataclass
class _Item:
    case: EvalCase
    sample: int
    key: str | None
    cached: dict[str, Any] | None = None


@dataclass
class _Counters:
    ok: int = 0
    errors: int = 0
    cached: int = 0
    fresh_ok: int = 0
    requests: int = 0


class _Fatal(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _RetryAfterWait(wait_base):
    """Wait what the server asked for (`Retry-After`), else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float, retry_after_max: float) -> None:
        self._exp = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
        self._retry_after_max = retry_after_max

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return float(min(retry_after, self._retry_after_max))
        return float(self._exp(retry_state))


def _settings_of(target: Any) -> TargetSettings:
    settings = getattr(target, "settings", None)
    if isinstance(settings, TargetSettings):
        return settings
    return TargetSettings(kind=target.fingerprint.kind)


def _response_value(r: Response) -> dict[str, Any]:
    return {"output": r.output, "latency_ms": r.latency_ms,
            "usage": {"prompt_tokens": r.usage.prompt_tokens,
                      "completion_tokens": r.usage.completion_tokens}}


def _from_cache(item: _Item, value: Mapping[str, Any]) -> Response:
    usage = value.get("usage") or {}
    return Response(case_id=item.case.case_id, sample=item.sample, output=value.get("output"),
                    latency_ms=value.get("latency_ms"),
                    usage=Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                completion_tokens=int(usage.get("completion_tokens") or 0)),
                    attempts=0, cached=True)


def read_log(path: Path) -> dict[tuple[str, int], Response]:
    """The responses in a run log (last line wins). A torn last line (a write cut short by a
    kill) is cut off the file so appending can go on."""
    results: dict[tuple[str, int], Response] = {}
    if not path.exists():
        return results
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
        data = data[:end]
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = Response.model_validate_json(line)
        except ValueError:
            raise DataError(f"{path}: line {lineno} is not a response record",
                            hint="the run log is damaged; replay into a new --out") from None
        results[(r.case_id, r.sample)] = r
    return results


class _Replay:
    def __init__(self, evalset: Evalset, target: Any, rundir: RunDir, *, concurrency: int,
                 cache: ResponseCache | None, repeats: int, rpm: float | None,
                 tpm: float | None, timeout_s: float, max_retries: int,
                 settings: TargetSettings, results: dict[tuple[str, int], Response],
                 bar: Bar, stats: ReplayStats) -> None:
        self.evalset = evalset
        self.target = target
        self.rundir = rundir
        self.concurrency = concurrency
        self.cache = cache
        self.repeats = repeats
        self.rpm = RateLimiter(rpm) if rpm else None
        self.tpm = RateLimiter(tpm) if tpm else None
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.settings = settings
        self.results = results
        self.bar = bar
        self.stats = stats
        self.order: list[tuple[str, int]] = []
        self.counters = _Counters()
        for r in results.values():
            if r.error is None:
                self.counters.ok += 1
                if r.cached:
                    self.counters.cached += 1
            else:
                self.counters.errors += 1
        self.fatal: BaseException | None = None
        self._digest = target.fingerprint.digest()
        self._identity = getattr(target, "request_identity", None)
        self._estimate = getattr(target, "estimate_tokens", None)
        self._is_fatal = getattr(target, "is_fatal", None)
        self._inflight: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._completed_keys: set[str] = set()
        self._wait = _RetryAfterWait(settings.retry_initial_s, settings.retry_max_s,
                                     settings.retry_after_max_s)
        self._log_fd = -1

    # ------------------------------------------------------------------ planning
    def key_for(self, case: EvalCase, sample: int) -> str:
        if self._identity is not None:
            identity = self._identity(case, sample)
        else:
            identity = BaseTarget.request_identity(self.target, case, sample)
        return make_key(CACHE_NAMESPACE, self._digest, identity)

    def plan(self) -> Iterator[_Item]:
        """Items still to do, in evalset order, with cache hits looked up a batch at a time."""
        batch: list[_Item] = []
        backfill: list[tuple[str, Any]] = []
        step = 64  # a small first slice, so the first requests go out at once
        for rb in self.evalset.iter_batches():
            offset = 0
            while offset < rb.num_rows:
                rows = rb.slice(offset, step).to_pylist()
                offset += len(rows)
                for row in rows:
                    case = row_to_case(row)
                    for sample in range(self.repeats):
                        rid = (case.case_id, sample)
                        self.order.append(rid)
                        done = self.results.get(rid)
                        if done is not None:
                            if self.cache is not None and done.error is None and not done.cached:
                                backfill.append((self.key_for(case, sample),
                                                 _response_value(done)))
                            continue
                        key = self.key_for(case, sample) if self.cache is not None else None
                        batch.append(_Item(case, sample, key))
                if len(batch) >= step:
                    yield from self._lookup(batch)
                    batch = []
                    step = _PLAN_BATCH
        if batch:
            yield from self._lookup(batch)
        if backfill and self.cache is not None:  # replies logged before a kill, not yet cached
            self.cache.put_many(backfill)

    def _lookup(self, batch: list[_Item]) -> list[_Item]:
        if self.cache is None:
            return batch
        hits = self.cache.get_many([i.key for i in batch if i.key is not None])
        for item in batch:
            assert item.key is not None
            item.cached = hits.get(item.key) or self._pending.get(item.key)
        return batch

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        start = getattr(self.target, "start", None)
        if start is not None:
            await start()
        self._log_fd = os.open(self.rundir.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        items = self.plan()
        try:
            workers = [asyncio.create_task(self._worker(items)) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            self.flush_cache()
            os.close(self._log_fd)
            aclose = getattr(self.target, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _worker(self, items: Iterator[_Item]) -> None:
        for item in items:
            if self.fatal is not None:
                return
            try:
                response = await self._process(item)
            except _Fatal as f:
                if self.fatal is None:
                    self.fatal = f.error
                return
            self._record(item, response)

    async def _process(self, item: _Item) -> Response:
        key = item.key
        if key is None:
            return await self._call(item)
        if item.cached is not None:
            return _from_cache(item, item.cached)
        if key in self._completed_keys:  # an identical request finished earlier in this run
            value = self._pending.get(key)
            if value is None and self.cache is not None:
                value = self.cache.get(key)
            if value is not None:
                return _from_cache(item, value)
        running = self._inflight.get(key)
        if running is not None:  # an identical request is in flight: share its reply
            value = await asyncio.shield(running)
            if value is not None:
                return _from_cache(item, value)
            return await self._call(item)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        response: Response | None = None
        try:
            response = await self._call(item)
            return response
        finally:
            del self._inflight[key]
            ok = response is not None and response.error is None
            future.set_result(_response_value(response) if ok and response is not None else None)

    def _should_retry(self, error: BaseException) -> bool:
        if isinstance(error, SynthloopError) or self._fatal_error(error):
            return False
        should = getattr(self.target, "should_retry", None)
        return bool(should(error)) if should is not None else default_should_retry(error)

    def _fatal_error(self, error: BaseException) -> bool:
        if self._is_fatal is not None:
            return bool(self._is_fatal(error))
        return isinstance(error, TargetCallError) and error.status in self.settings.fatal_status

    async def _attempt(self, item: _Item, tally: list[int]) -> Response:
        """One attempt under the rate limits and the timeout; `tally` = [attempts, estimate]."""
        if self.rpm is not None:
            await self.rpm.acquire(1)
        if self.tpm is not None:
            tally[1] = self._estimate(item.case) if self._estimate is not None else 1
            await self.tpm.acquire(tally[1])
        tally[0] += 1
        self.counters.requests += 1
        async with asyncio.timeout(self.timeout_s):
            response: Response = await self.target.complete(item.case, sample=item.sample)
        return response

    async def _retry(self, item: _Item, tally: list[int], first: BaseException) -> Response:
        """Attempts 2.. through tenacity; the first (failed) attempt is replayed into it so the
        first wait honours its `Retry-After`. (The first attempt runs outside tenacity: its
        bookkeeping costs about 0.15 ms a call, which the common, successful case skips.)"""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            reraise=True,
        )
        pending: BaseException | None = first
        async for attempt in retrying:
            with attempt:
                if pending is not None:
                    error, pending = pending, None
                    raise error
                return await self._attempt(item, tally)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, item: _Item) -> Response:
        case, sample = item.case, item.sample
        tally = [0, 0]
        try:
            try:
                response = await self._attempt(item, tally)
            except Exception as first:
                if self.max_retries == 0 or not self._should_retry(first):
                    raise
                response = await self._retry(item, tally, first)
        except asyncio.CancelledError:
            raise
        except SynthloopError as e:  # a config mistake surfacing mid-run: stop the run
            raise _Fatal(e) from None
        except Exception as e:
            if self._fatal_error(e):
                raise _Fatal(e) from None
            kind, message = _describe(e, self.timeout_s)
            if kind == "connect" and self.counters.fresh_ok == 0:  # never reached it yet
                raise _Fatal(TargetError(
                    f"target {getattr(self.target, 'name', '?')}: {message}",
                    hint="is the server running and the URL right?")) from None
            return Response(case_id=case.case_id, sample=sample, error=message, error_kind=kind,
                            attempts=tally[0])
        if self.tpm is not None:
            actual = response.usage.prompt_tokens + response.usage.completion_tokens
            if actual:
                self.tpm.adjust(actual - tally[1])
        if response.case_id != case.case_id or response.sample != sample or \
                response.attempts != tally[0] or response.cached:
            response = response.model_copy(update={"case_id": case.case_id, "sample": sample,
                                                   "attempts": tally[0], "cached": False})
        return response

    def _record(self, item: _Item, response: Response) -> None:
        rid = (item.case.case_id, item.sample)
        self.results[rid] = response
        os.write(self._log_fd, (response.model_dump_json() + "\n").encode())
        self.stats.completed += 1
        c = self.counters
        if response.error is None:
            c.ok += 1
            if response.cached:
                c.cached += 1
                self.stats.cache_hits += 1
            else:
                c.fresh_ok += 1
                if item.key is not None:
                    self._completed_keys.add(item.key)
                    self._pending[item.key] = _response_value(response)
                    if len(self._pending) >= _CACHE_FLUSH:
                        self.flush_cache()
        else:
            c.errors += 1
            self.stats.errors += 1
        self.bar.advance(1, errors=c.errors, cached=c.cached)

    def flush_cache(self) -> None:
        if self.cache is not None and self._pending:
            self.cache.put_many(list(self._pending.items()))
        self._pending = {}


def _describe(error: BaseException, timeout_s: float) -> tuple[str, str]:
    if isinstance(error, TargetCallError):
        return error.kind, error.message
    if isinstance(error, TimeoutError):
        return "timeout", f"no reply within {timeout_s:g} s"
    text = str(error).splitlines()[0][:300] if str(error) else ""
    return "exception", f"{type(error).__name__}: {text}" if text else type(error).__name__


def _now() -> datetime:
    return datetime.now(UTC)


def _summarise(results: Mapping[tuple[str, int], Response],
               order: list[tuple[str, int]] | None = None
               ) -> tuple[list[Response], RunCounts, Usage]:
    """Responses in evalset order (or log order without `order`), counts and token totals."""
    ordered = list(results.values()) if order is None else [
        results[rid] for rid in order if rid in results]
    ok = [r for r in ordered if r.error is None]
    counts = RunCounts(total=len(ordered), ok=len(ok), error=len(ordered) - len(ok),
                       cached=sum(1 for r in ok if r.cached))
    tokens = Usage(prompt_tokens=sum(r.usage.prompt_tokens for r in ok),
                   completion_tokens=sum(r.usage.completion_tokens for r in ok))
    return ordered, counts, tokens


def _open_cache(cache: str | Path | ResponseCache | None) -> ResponseCache | None:
    if cache is None or isinstance(cache, ResponseCache):
        return cache
    try:
        return ResponseCache(cache)
    except Exception as e:  # sqlite3 errors, permission problems
        raise DataError(f"{cache}: cannot open the response cache: {e}",
                        hint="pass another --cache path or --no-cache") from None


async def areplay(
    evalset: str | Path | Evalset,
    target: Any,
    out: str | Path,
    *,
    concurrency: int | None = None,
    cache: str | Path | ResponseCache | None = DEFAULT_CACHE_PATH,
    repeats: int = 1,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    retry_errors: bool = False,
    progress: bool | None = None,
    stats: ReplayStats | None = None,
) -> RunManifest:
    """Async form of `replay` (for callers already inside an event loop)."""
    t_start = time.perf_counter()
    stats = stats if stats is not None else ReplayStats()
    if repeats < 1:
        raise DataError(f"--repeats must be at least 1 (got {repeats})")
    if concurrency is not None and concurrency < 1:
        raise DataError(f"--concurrency must be at least 1 (got {concurrency})")
    ev = evalset if isinstance(evalset, Evalset) else open_evalset(evalset)
    tgt = target if hasattr(target, "complete") else load_target(target)
    settings = _settings_of(tgt)
    fingerprint = tgt.fingerprint
    rundir = RunDir(Path(out))

    # Everything is validated before anything is written; again under the run directory's
    # lock, in case another replay wrote it in between.
    _previous_run(rundir, ev, fingerprint, repeats)
    cache_obj = _open_cache(cache)
    try:
        lock = _lock_run_dir(rundir.path)
    except BaseException:
        if cache_obj is not None and not isinstance(cache, ResponseCache):
            cache_obj.close()
        raise
    try:
        return await _replay_locked(
            ev, tgt, rundir, settings=settings, cache_obj=cache_obj,
            repeats=repeats, concurrency=concurrency, rpm=rpm, tpm=tpm, timeout_s=timeout_s,
            max_retries=max_retries, retry_errors=retry_errors, progress=progress, stats=stats,
            t_start=t_start)
    finally:
        if cache_obj is not None and not isinstance(cache, ResponseCache):
            cache_obj.close()
        release_lock(lock)


async def _replay_locked(
    ev: Evalset, tgt: Any, rundir: RunDir, *, settings: TargetSettings,
    cache_obj: ResponseCache | None, repeats: int,
    concurrency: int | None, rpm: float | None, tpm: float | None, timeout_s: float | None,
    max_retries: int | None, retry_errors: bool, progress: bool | None, stats: ReplayStats,
    t_start: float,
) -> RunManifest:
    """The replay proper, with the run directory locked against another replay."""
    fingerprint = tgt.fingerprint
    previous = _previous_run(rundir, ev, fingerprint, repeats)

    results = read_log(rundir.log_path) if previous is not None else {}
    if retry_errors:
        results = {k: v for k, v in results.items() if v.error is None}
    stats.resumed = len(results)
    total = len(ev) * repeats
    if previous is not None and previous.status == "complete" and len(results) == total \
            and rundir.responses_path.exists():
        stats.wall_s = time.perf_counter() - t_start
        return previous  # nothing left to do: not a single request

    rundir.path.mkdir(parents=True, exist_ok=True)
    manifest = RunManifest(
        evalset_hash=ev.content_hash,
        evalset_path=str(ev.path),
        target=fingerprint,
        target_name=getattr(tgt, "name", None),
        package_version=__version__,
        started_at=previous.started_at if previous is not None else _now(),
        repeats=repeats,
        seed=getattr(getattr(tgt, "config", None), "seed", None),
        status="running",
    )
    rundir.write_manifest(manifest)

    n_workers = concurrency or settings.concurrency or DEFAULT_CONCURRENCY
    label = f"replay {getattr(tgt, 'name', fingerprint.kind)}"
    with progress_bar(total, label, enabled=progress) as bar:
        engine = _Replay(
            ev, tgt, rundir, concurrency=n_workers, cache=cache_obj, repeats=repeats,
            rpm=rpm if rpm is not None else settings.rpm,
            tpm=tpm if tpm is not None else settings.tpm,
            timeout_s=timeout_s if timeout_s is not None else settings.timeout_s,
            max_retries=max_retries if max_retries is not None else settings.max_retries,
            settings=settings, results=results, bar=bar, stats=stats,
        )
        if results:
            bar.advance(len(results), errors=engine.counters.errors, cached=engine.counters.cached)
        try:
            await engine.run()
        except BaseException:
            _, counts, tokens = _summarise(results)
            rundir.write_manifest(manifest.model_copy(update={
                "status": "interrupted", "counts": counts, "tokens": tokens}))
            raise
        finally:
            stats.requests += engine.counters.requests
            stats.wall_s = time.perf_counter() - t_start
    if engine.fatal is not None:
        _, counts, tokens = _summarise(results)
        rundir.write_manifest(manifest.model_copy(update={
            "status": "interrupted", "counts": counts, "tokens": tokens}))
        err = engine.fatal
        if isinstance(err, SynthloopError):
            raise err
        message = err.message if isinstance(err, TargetCallError) else str(err)
        raise TargetError(f"target {getattr(tgt, 'name', '?')}: {message}; run stopped, "
                          f"{len(results)} of {total} done are kept",
                          hint=_fatal_hint(err, tgt))
    ordered, counts, tokens = _summarise(results, engine.order)
    rundir.write_responses(ordered)
    final = manifest.model_copy(update={"status": "complete", "finished_at": _now(),
                                        "counts": counts, "tokens": tokens})
    rundir.write_manifest(final)
    return final


def _previous_run(rundir: RunDir, ev: Evalset, fingerprint: TargetFingerprint,
                  repeats: int) -> RunManifest | None:
    """The manifest of the run being resumed (None for a new run); `DataError` when `rundir`
    holds another evalset, target or `repeats`, or is not a run directory."""
    previous: RunManifest | None = None
    if rundir.exists():
        previous = rundir.manifest()
        if previous.evalset_hash != ev.content_hash:
            raise DataError(f"{rundir.path}: this run replayed another evalset "
                            f"({previous.evalset_hash[:19]}…, not {ev.content_hash[:19]}…)",
                            hint="resume with the same --evalset, or use a new --out")
        if previous.target.digest() != fingerprint.digest():
            raise DataError(f"{rundir.path}: this run used another target "
                            f"({_describe_fp(previous.target.model_dump())}); the target's "
                            f"model, endpoint, parameters or prompt changed",
                            hint="resume with the same --target, or use a new --out")
        if previous.repeats != repeats:
            raise DataError(f"{rundir.path}: this run was started with --repeats "
                            f"{previous.repeats}, not {repeats}",
                            hint=f"resume with --repeats {previous.repeats}, or use a new --out")
    elif rundir.path.exists() and (not rundir.path.is_dir() or any(rundir.path.iterdir())):
        raise DataError(f"{rundir.path}: exists and is not a run directory",
                        hint="choose a new or empty --out directory")
    return previous


def _lock_run_dir(path: Path) -> int | None:
    """Create `path` if needed and lock it (an exclusive `flock` on the directory, released
    when the returned descriptor is closed or the process dies): two replays writing one run
    directory would each send every case, paying twice, and interleave its log."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        return try_lock(path, exclusive=True)
    except BlockingIOError:
        raise DataError(f"{path}: another replay is writing this run directory",
                        hint="wait for it to finish, or use another --out") from None


def _describe_fp(fp: Mapping[str, Any]) -> str:
    parts = [str(fp.get("kind"))]
    if fp.get("model"):
        parts.append(str(fp["model"]))
    if fp.get("endpoint"):
        parts.append(str(fp["endpoint"]))
    return " ".join(parts)


def _fatal_hint(err: BaseException, target: Any) -> str:
    status = getattr(err, "status", None)
    env = getattr(getattr(target, "config", None), "api_key_env", None)
    if status in (401, 403):
        return f"check the API key in ${env}" if env else "the endpoint needs an API key: set api_key_env"
    if status == 404:
        return "check base_url/url and the model name"
    return "fix the target and run the same command again to resume"


def replay(
    evalset: str | Path | Evalset,
    target: Any,
    out: str | Path,
    *,
    concurrency: int | None = None,
    cache: str | Path | ResponseCache | None = DEFAULT_CACHE_PATH,
    repeats: int = 1,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    retry_errors: bool = False,
    progress: bool | None = None,
    stats: ReplayStats | None = None,
) -> RunManifest:
    """Replay an evalset against a target into the run directory `out`; returns its manifest.

    `evalset`: a directory, `name@version` or an `Evalset`. `target`: a target object, a target
    YAML path or a mapping. Running again with the same `out` resumes (only unfinished cases
    are sent; with `retry_errors`, failed ones too); resuming with another evalset, target
    fingerprint or `repeats` raises `DataError`. `cache`: the response cache file (default
    `.synthloop/cache.sqlite` under the current directory), or None for no cache.
    `concurrency`, `rpm`, `tpm`, `timeout_s`, `max_retries`: None takes the target's settings.
    `repeats=K` draws K independent samples per case (distinct cache keys, sample 0..K-1).
    Raises `TargetError` when the target cannot work at all (401/403/404, unreachable).
    """
    return asyncio.run(areplay(
        evalset, target, out, concurrency=concurrency, cache=cache, repeats=repeats, rpm=rpm,
        tpm=tpm, timeout_s=timeout_s, max_retries=max_retries, retry_errors=retry_errors,
        progress=progress, stats=stats))


__all__ = ["DEFAULT_CACHE_PATH", "ReplayStats", "areplay", "read_log", "replay"]
