"""`synthloop run PIPELINE.yaml`: the whole flywheel in one call, each stage cached.

    generate (or reuse) an evalset
      -> [train the feedback model on thumbs]          (optional: metric thumb_up_pred)
      -> replay it against the baseline and every candidate
      -> score every run
      -> compare each candidate with the baseline      (paired, per metric and segment)
      -> gate each comparison with the policy          -> Markdown, JUnit and HTML reports

Every stage writes under the work directory, in a folder named by the hash of its inputs:

| stage | folder | key |
| --- | --- | --- |
| evalset | `evalsets/<spec>/<key>/` | spec hash (templates included for rules specs), seed, sessions, synthloop version |
| feedback model | `feedback/<key>/` | training evalset's content hash, training config |
| replay | `runs/<target>-<key>/` | evalset hash, target fingerprint, repeats |
| score | (inside the run) `pipeline-scores.json` | responses file hash, scorer configs, feedback model |
| compare | `compare/<candidate>-<key>/` | both score keys, comparison options |
| gate + reports | `reports/<candidate>/` | redone every time (cheap) |

A stage whose folder is present and complete is reused, so an unchanged pipeline re-runs in
seconds; `force=True` (`--force`) redoes every stage. Replays also share a response cache
(`workdir/cache.sqlite` by default), so even a forced replay never calls a model twice for the
same request. The result's exit code is the gate's: 0 pass, 1 regression, 3 inconclusive.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthloop import __version__
from synthloop.config import file_hash, load_model, parse_document, validate_data
from synthloop.errors import (
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    EXIT_REGRESSION,
    ConfigError,
    DataError,
    SynthloopError,
)
from synthloop.scorers.feedback import METRIC as FEEDBACK_METRIC
from synthloop.scorers.feedback import FeedbackTrainConfig

PIPELINE_SCORES = "pipeline-scores.json"
DEFAULT_WORKDIR_ROOT = Path("synthloop-runs")

Log = Callable[[str], None]


# --------------------------------------------------------------------------- config
class EvalsetStage(BaseModel):
    """Where the evalset comes from: generated from a spec, or an existing version."""

    model_config = ConfigDict(extra="forbid")

    generate: str | None = None
    """Generator spec (rules, sdv or llm) to generate the evalset from; relative to the
    pipeline file."""
    ref: str | None = None
    """An existing evalset instead: a directory (relative to the pipeline file) or
    `name@version` under `./evalsets`."""
    seed: int | None = Field(default=None, ge=0)
    """Generation seed (default: the spec's)."""
    sessions: int | None = Field(default=None, ge=1)
    """Sessions to generate (default: the spec's)."""
    name: str | None = None
    """Evalset name recorded in the manifest (default: the spec's name)."""

    @model_validator(mode="after")
    def _one_source(self) -> EvalsetStage:
        if (self.generate is None) == (self.ref is None):
            raise ValueError("give exactly one of `generate: SPEC.yaml` or `ref: DIR|NAME@VERSION`")
        if self.ref is not None and (self.seed is not None or self.sessions is not None):
            raise ValueError("seed and sessions apply to `generate`, not to `ref`")
        return self


class TargetsSection(BaseModel):
    """The model versions to replay: one baseline, one or more candidates."""

    model_config = ConfigDict(extra="forbid")

    baseline: str | dict[str, Any]
    """Target YAML (relative to the pipeline file) or an inline target mapping."""
    candidates: list[str | dict[str, Any]] = Field(min_length=1)
    """Target YAMLs or inline mappings; each is compared with the baseline."""


class FeedbackStage(BaseModel):
    """Train the feedback model on thumbs and score every run with it (`thumb_up_pred`)."""

    model_config = ConfigDict(extra="forbid")

    train_on: EvalsetStage | None = None
    """Evalset whose thumbs train the model (e.g. last month's logs, or a bigger synthetic
    set); default: the pipeline's evalset."""
    model: str | None = None
    """Use this trained model directory instead of training one."""
    metric: str = FEEDBACK_METRIC
    """Metric name of its scores."""
    expect_evalset_hash: str | None = None
    """With `model`: refuse it unless it was trained on this evalset content hash."""
    training: FeedbackTrainConfig = Field(default_factory=FeedbackTrainConfig)
    """Training options (see docs/feedback-model.md)."""

    @model_validator(mode="after")
    def _train_or_model(self) -> FeedbackStage:
        if self.model is not None and self.train_on is not None:
            raise ValueError("give `model` (a trained model) or `train_on`, not both")
        return self


class PipelineConfig(BaseModel):
    """PIPELINE.yaml: everything `synthloop run` does, from evalset to verdict."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    """Pipeline name shown in the summary (default: the file's stem)."""
    description: str | None = None
    """Free text for humans."""
    evalset: EvalsetStage
    """The evalset: `generate` from a spec, or `ref` an existing version."""
    targets: TargetsSection
    """Baseline and candidate model versions."""
    scorers: str | dict[str, Any]
    """SCORERS.yaml (relative to this file) or an inline `{scorers: [...]}` mapping."""
    feedback_model: FeedbackStage | None = None
    """Optional: train (or load) the feedback model and add its metric to the scores."""
    policy: str | dict[str, Any]
    """Gate policy YAML (relative to this file) or an inline policy mapping."""
    workdir: str | None = None
    """Where stage outputs go, relative to this file (default: `./synthloop-runs/<name>`;
    `--workdir` overrides)."""
    concurrency: int | None = Field(default=None, ge=1)
    """Replay requests in flight at once (default: each target's own setting)."""
    cache: bool | str = True
    """Response cache for replays: true = `WORKDIR/cache.sqlite`, false = none, or a path."""
    repeats: int = Field(default=1, ge=1, le=100)
    """Samples per case in each replay."""
    seed: int = Field(default=0, ge=0)
    """Seed of the comparison's bootstrap."""


# --------------------------------------------------------------------------- results
@dataclass
class StageRecord:
    """What one stage did."""

    stage: str
    status: str
    """`ran` or `reused`."""
    path: Path
    seconds: float
    detail: str = ""


@dataclass
class Regression:
    """One failed gate rule, for the summary."""

    metric: str
    segment: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    message: str


@dataclass
class CandidateResult:
    label: str
    target: str
    run: Path
    comparison: Path
    exit_code: int
    verdict: str
    """`pass`, `fail` or `inconclusive`."""
    regressions: list[Regression] = field(default_factory=list)
    reports: dict[str, Path] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)
    """Overall per-metric deltas, one line each, for the summary."""
    inconclusive: list[str] = field(default_factory=list)
    """The checks that could not be decided, `name: reason` each, for the summary."""


@dataclass
class PipelineResult:
    """Everything `run_pipeline` produced."""

    name: str
    config_path: Path
    workdir: Path
    evalset: Path
    evalset_hash: str
    cases: int
    baseline: str
    baseline_run: Path
    candidates: list[CandidateResult]
    stages: list[StageRecord]
    feedback_model: Path | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        codes = [c.exit_code for c in self.candidates]
        if EXIT_REGRESSION in codes:
            return EXIT_REGRESSION
        if EXIT_INCONCLUSIVE in codes:
            return EXIT_INCONCLUSIVE
        return max(codes, default=EXIT_OK)

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "PASS", EXIT_REGRESSION: "FAIL",
                EXIT_INCONCLUSIVE: "INCONCLUSIVE"}.get(self.exit_code, "ERROR")

    def summary_lines(self) -> list[str]:
        """The end-of-run summary: verdict, regressions found, undecided checks, report paths."""
        reused = sum(1 for s in self.stages if s.status == "reused")
        lines = [f"{self.name}: {self.verdict} (exit {self.exit_code})  "
                 f"evalset {self.cases:,} cases  {len(self.stages)} stages "
                 f"({reused} reused)  {self.seconds:.1f} s"]
        for c in self.candidates:
            lines.append(f"  {c.label} vs {self.baseline}: {c.verdict.upper()}")
            lines.extend(f"    {h}" for h in c.headline)
            if c.regressions:
                lines.append(f"    regressions ({len(c.regressions)}):")
                for r in c.regressions:
                    lines.append(f"      - {r.message}")
            if c.inconclusive:
                lines.append(f"    inconclusive ({len(c.inconclusive)}):")
                lines.extend(f"      - {text}" for text in c.inconclusive)
            for kind, path in c.reports.items():
                lines.append(f"    {kind + ' report':<16} {path}")
        return lines


# --------------------------------------------------------------------------- helpers
def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s[:60] or "target"


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _say(log: Log | None, text: str) -> None:
    if log is not None:
        log(text)


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate PIPELINE.yaml (every problem listed in one ConfigError)."""
    return load_model(path, PipelineConfig)


# --------------------------------------------------------------------------- stages
@dataclass
class _Ctx:
    config: PipelineConfig
    path: Path
    base: Path
    workdir: Path
    force: bool
    progress: bool | None
    log: Log | None
    stages: list[StageRecord] = field(default_factory=list)
    made: set[Path] = field(default_factory=set)
    """Stage outputs produced by this invocation (never redone twice, even with --force)."""

    def redo(self, out: Path) -> None:
        """With --force, clear a stage output once (not one this invocation just made)."""
        if self.force and out not in self.made and out.exists():
            shutil.rmtree(out)
        self.made.add(out)

    def record(self, stage: str, status: str, path: Path, t0: float, detail: str = "") -> None:
        rec = StageRecord(stage, status, path, time.perf_counter() - t0, detail)
        self.stages.append(rec)
        _say(self.log, f"[{stage}] {status} {detail}  ({rec.seconds:.1f} s) -> {path}")


def _spec_digest(spec: Path) -> str:
    """What a generated evalset depends on besides seed, sessions and name. Rules specs: the
    generator's spec hash (templates included). LLM specs: the spec file, every prompt
    template, and what `personas_from` names. SDV specs: the spec file and the consented
    ingest sample it is fitted on."""
    data = parse_document(spec)
    kind = data.get("kind", "rules") if isinstance(data, dict) else None
    if kind == "rules":
        from synthloop.generate.rules import load_spec

        return load_spec(spec, data).spec_hash
    if kind == "llm":
        from synthloop.generate.llm._generator import load_prompts, spec_hash
        from synthloop.generate.llm._generator import load_spec as load_llm_spec

        llm = load_llm_spec(spec, data)
        parts: list[str | None] = [spec_hash(spec, load_prompts(llm, spec))]
        if llm.personas_from:
            parts.append(_personas_digest(spec, llm.personas_from))
        return _digest(*parts)
    if kind == "sdv":
        from synthloop.generate.sdv import _resolve as sdv_resolve
        from synthloop.generate.sdv import load_spec as load_sdv_spec
        from synthloop.ingest import SAMPLE

        sample = sdv_resolve(spec, load_sdv_spec(spec, data).spec.source) / SAMPLE
        return _digest(file_hash(spec), file_hash(sample) if sample.is_file() else None)
    return "sha256:" + file_hash(spec)


def _personas_digest(spec: Path, ref: str) -> str | None:
    """The content behind an llm spec's `personas_from`: a spec's digest or an evalset's hash
    (None when it cannot be found: the generator then reports it)."""
    from synthloop.evalsets import load_manifest, resolve

    path = next((c for c in (spec.parent / ref, Path(ref)) if c.exists()), None)
    if path is not None and path.is_file():
        return _spec_digest(path)
    try:
        return load_manifest(path if path is not None else resolve(ref)).content_hash
    except (DataError, ConfigError):
        return None


def _evalset_stage(ctx: _Ctx, stage: EvalsetStage, label: str) -> Any:
    from synthloop.evalsets import open_evalset
    from synthloop.generate import GenerateOptions, generate

    t0 = time.perf_counter()
    if stage.ref is not None:
        ref_path = _resolve(ctx.base, stage.ref)
        es = open_evalset(ref_path if ref_path.exists() else stage.ref)
        ctx.record(label, "reused", es.path, t0, f"{es.manifest.name}@{es.manifest.version} "
                   f"({len(es):,} cases)")
        return es
    assert stage.generate is not None
    spec = _resolve(ctx.base, stage.generate)
    if not spec.is_file():
        raise ConfigError(f"{ctx.path}: {label}.generate: spec {spec} not found",
                          hint="paths are relative to the pipeline file")
    key = _digest("evalset", _spec_digest(spec), stage.seed, stage.sessions, stage.name,
                  __version__)[:16]
    out = ctx.workdir / "evalsets" / _slug(spec.stem) / key
    ctx.redo(out)
    if (out / "manifest.json").exists():
        try:
            es = open_evalset(out)
            # every shard is there and whole (memory-mapped: cheap even for a big version)
            rows = sum(b.num_rows for b in es.iter_batches())
            if rows != len(es):
                raise DataError(f"{out}: {rows:,} cases in the data, {len(es):,} in the manifest")
            ctx.record(label, "reused", out, t0, f"{len(es):,} cases")
            return es
        except DataError as e:  # a damaged cached version is regenerated, never trusted
            _say(ctx.log, f"[{label}] cached version is damaged, generating it again: "
                 f"{e.message}")
    if out.exists():  # an empty, damaged or foreign folder cannot be a finished version
        shutil.rmtree(out)
    manifest = generate(spec, out, GenerateOptions(seed=stage.seed, sessions=stage.sessions,
                                                   name=stage.name, progress=ctx.progress))
    if manifest is None:  # pragma: no cover - only dry runs return None
        raise DataError(f"{spec}: the generator wrote no evalset")
    es = open_evalset(out)
    ctx.record(label, "ran", out, t0, f"generated {manifest.counts.cases:,} cases "
               f"({manifest.counts.sessions:,} sessions)")
    return es


def _feedback_stage(ctx: _Ctx, fb: FeedbackStage, evalset: Any) -> Path:
    from synthloop.scorers.feedback import MODEL_FILE, FeedbackModel, train_feedback_model

    t0 = time.perf_counter()
    if fb.model is not None:
        path = _resolve(ctx.base, fb.model)
        FeedbackModel.load(path, expect_evalset_hash=fb.expect_evalset_hash)  # verify early
        ctx.record("feedback", "reused", path, t0, "given model")
        return path
    train = evalset if fb.train_on is None else _evalset_stage(ctx, fb.train_on,
                                                                "feedback-evalset")
    t0 = time.perf_counter()  # the training evalset's stage timed itself
    cfg = fb.training
    key = _digest("feedback", train.content_hash, cfg.model_dump(mode="json"), __version__)[:16]
    out = ctx.workdir / "feedback" / key
    ctx.redo(out)
    if (out / MODEL_FILE).exists():
        try:
            FeedbackModel.load(out, expect_evalset_hash=train.content_hash)
            ctx.record("feedback", "reused", out, t0, "model")
            return out
        except DataError:
            shutil.rmtree(out)
    model = train_feedback_model(train, cfg, progress=ctx.progress)
    model.save(out)
    cv = model.metrics["cross_validated"]
    ctx.record("feedback", "ran", out, t0,
               f"trained on {model.training['n']:,} thumbs (cross-validated Brier "
               f"{cv['brier']:.3f}, ECE {cv['ece']:.3f})")
    return out


def _load_target(ctx: _Ctx, spec: str | dict[str, Any], where: str) -> tuple[Any, str]:
    from synthloop.targets import load_target

    if isinstance(spec, str):
        path = _resolve(ctx.base, spec)
        if not path.is_file():
            raise ConfigError(f"{ctx.path}: {where}: target file {path} not found",
                              hint="paths are relative to the pipeline file")
        target = load_target(path)
        label = getattr(target, "name", None) or path.stem
    else:
        try:
            target = load_target(spec)
        except SynthloopError as e:  # name the pipeline file and the target, not "<dict>"
            _relabel(e, "<dict>", f"{ctx.path}: {where}")
            raise
        label = getattr(target, "name", None) or spec.get("name") or spec.get("kind", "target")
    return target, str(label)


def _relabel(error: SynthloopError, old: str, new: str) -> None:
    error.message = error.message.replace(old, new)
    error.args = (error.message, *error.args[1:])
    problems = getattr(error, "problems", None)
    if problems:
        error.problems = [p.replace(old, new) for p in problems]  # type: ignore[attr-defined]


def _cache_path(ctx: _Ctx) -> Path | None:
    c = ctx.config.cache
    if c is False:
        return None
    if c is True:
        return ctx.workdir / "cache.sqlite"
    return _resolve(ctx.base, str(c))


def _replay_stage(ctx: _Ctx, evalset: Any, target: Any, label: str) -> Path:
    from synthloop.harness import replay
    from synthloop.runs import RunDir

    t0 = time.perf_counter()
    fp = target.fingerprint.digest()
    key = _digest("run", evalset.content_hash, fp, ctx.config.repeats)[:16]
    out = ctx.workdir / "runs" / f"{_slug(label)}-{key}"
    run = RunDir(out)
    ctx.redo(out)
    if _run_intact(ctx, run, label):
        m = run.manifest()
        ctx.record(f"replay {label}", "reused", out, t0, f"{m.counts.total:,} responses")
        return out
    m = replay(evalset, target, out, concurrency=ctx.config.concurrency, cache=_cache_path(ctx),
               repeats=ctx.config.repeats, progress=ctx.progress)
    detail = f"{m.counts.total:,} responses, {m.counts.error:,} errors, {m.counts.cached:,} cached"
    ctx.record(f"replay {label}", "ran", out, t0, detail)
    return out


def _run_intact(ctx: _Ctx, run: Any, label: str) -> bool:
    """True when the cached run is complete and readable. A run folder that is damaged
    (manifest missing or unreadable) is removed so the replay starts afresh; a damaged or
    missing responses file is removed so the replay rebuilds it from log.jsonl. Neither
    calls a model again for a request the response cache holds."""
    import pyarrow.parquet as pq

    if not run.path.exists():
        return False
    try:
        m = run.manifest()
    except DataError as e:
        _say(ctx.log, f"[replay {label}] cached run is damaged, replaying again: {e.message}")
        shutil.rmtree(run.path)
        return False
    if m.status != "complete":
        return False  # interrupted: the replay resumes it
    try:
        rows = pq.read_metadata(run.responses_path).num_rows
    except FileNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        rows = -1
    if rows != m.counts.total:
        _say(ctx.log, f"[replay {label}] {run.responses_path.name} is damaged, rebuilding it "
             "from log.jsonl")
        run.responses_path.unlink()
        return False
    return True


def _scorers_config(ctx: _Ctx, feedback: Path | None) -> Any:
    from synthloop.scorers._runner import ScorersConfig, load_scorers_config

    sc = ctx.config.scorers
    if isinstance(sc, str):
        cfg = load_scorers_config(_resolve(ctx.base, sc))
        data = cfg.model_dump(mode="json")
        source, base_dir = cfg.source, cfg.base_dir
    else:
        data = dict(sc)
        source, base_dir = f"{ctx.path}: scorers", ctx.base
    if feedback is not None:
        assert ctx.config.feedback_model is not None
        metric = ctx.config.feedback_model.metric
        entries = [e for e in data.get("scorers", []) if isinstance(e, Mapping)]
        if any(e.get("name") == metric for e in entries):
            raise ConfigError(f"{ctx.path}: feedback_model.metric: the scorers already define a "
                              f"metric named '{metric}'",
                              hint="rename one of them (feedback_model.metric: ...)")
        data["scorers"] = [*data.get("scorers", []),
                           {"name": metric, "kind": "feedback_model",
                            "model": str(feedback.resolve())}]
    return ScorersConfig.from_data(data, source=source, base_dir=base_dir)


def _score_stage(ctx: _Ctx, run_path: Path, label: str, scorers: Any) -> str:
    from synthloop.runs import RunDir, write_atomic
    from synthloop.scorers import score_run

    t0 = time.perf_counter()
    run = RunDir(run_path)
    cfg_blob = scorers.model_dump(mode="json")
    feedback_hashes = []
    for e in cfg_blob.get("scorers", []):
        if e.get("kind") == "feedback_model" and e.get("model"):
            mf = Path(e["model"]) / "model.json"
            feedback_hashes.append(file_hash(mf) if mf.exists() else None)
    key = _digest("score", file_hash(run.responses_path), cfg_blob, feedback_hashes,
                  __version__)
    marker = run_path / PIPELINE_SCORES
    forced = ctx.force and marker not in ctx.made
    ctx.made.add(marker)
    if not forced and marker.exists() and run.scores_path.exists():
        try:
            done = json.loads(marker.read_text())
            # the scores file must be the one this key wrote (not truncated or replaced)
            if (isinstance(done, dict) and done.get("key") == key
                    and done.get("scores") == file_hash(run.scores_path)):
                ctx.record(f"score {label}", "reused", run.scores_path, t0)
                return key
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            pass
    marker.unlink(missing_ok=True)
    # score from scratch: `score_run` keeps the metrics of scorers it is not given, so a scorer
    # removed from the pipeline would stay in the comparison; a damaged file could not be read
    run.scores_path.unlink(missing_ok=True)
    run.scores_summary_path.unlink(missing_ok=True)
    summary = score_run(run_path, scorers, progress=ctx.progress)
    write_atomic(marker, json.dumps({"key": key, "scores": file_hash(run.scores_path)}) + "\n")
    metrics = summary.get("metrics", {}) if isinstance(summary, dict) else {}
    detail = ", ".join(f"{k} {_fmt_mean(v)}" for k, v in metrics.items())
    ctx.record(f"score {label}", "ran", run.scores_path, t0, detail)
    return key


def _fmt_mean(summary: Any) -> str:
    if isinstance(summary, Mapping):
        mean = summary.get("mean")
        if isinstance(mean, int | float):
            return f"{mean:.3f}"
    return "?"


def _compare_stage(ctx: _Ctx, base_run: Path, cand_run: Path, label: str, keys: list[str],
                   options: dict[str, Any]) -> Path:
    from synthloop.stats import COMPARISON_FILE, compare_runs, read_comparison, write_comparison

    t0 = time.perf_counter()
    key = _digest("compare", keys, options, ctx.config.seed, __version__)[:16]
    out = ctx.workdir / "compare" / f"{_slug(label)}-{key}"
    ctx.redo(out)
    if (out / COMPARISON_FILE).exists():
        try:
            read_comparison(out)
            ctx.record(f"compare {label}", "reused", out, t0)
            return out
        except DataError as e:  # a damaged cached comparison is redone, never trusted
            _say(ctx.log, f"[compare {label}] cached comparison is damaged, comparing again: "
                 f"{e.message}")
            shutil.rmtree(out)
    cmp = compare_runs(base_run, cand_run, seed=ctx.config.seed, **options)
    write_comparison(cmp, out)
    ctx.record(f"compare {label}", "ran", out, t0,
               f"{len(cmp.metrics)} metrics, segments: {', '.join(cmp.segment_keys) or 'none'}")
    return out


def _load_policy(ctx: _Ctx) -> tuple[Any, str]:
    from synthloop.gate import Policy, load_policy

    p = ctx.config.policy
    if isinstance(p, str):
        path = _resolve(ctx.base, p)
        if not path.is_file():
            raise ConfigError(f"{ctx.path}: policy: file {path} not found",
                              hint="paths are relative to the pipeline file")
        return load_policy(path), str(path)
    return validate_data(p, Policy, f"{ctx.path}: policy"), f"{ctx.path}: policy"


def _metric_names(scorers: Any) -> list[str]:
    return [e.name for e in scorers.scorers]


def _check_policy_early(ctx: _Ctx, policy: Any, source: str, metrics: list[str]) -> None:
    """Rules naming metrics no scorer produces fail before any work is done."""
    import difflib

    problems = []
    for i, rule in enumerate(policy.rules):
        if rule.metric is not None and rule.metric not in metrics:
            close = difflib.get_close_matches(rule.metric, metrics, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else f"metrics: {', '.join(metrics)}"
            problems.append(f"{source}: rules[{i}].metric: no scorer produces `{rule.metric}` "
                            f"({hint})")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
        raise ConfigError(head, problems=problems)


def _segment_keys(policy: Any) -> list[str]:
    keys: list[str] = []
    for rule in policy.rules:
        for k in rule.segments or []:
            if k not in keys:
                keys.append(k)
    return keys


def _tag_keys(evalset: Any) -> set[str]:
    import pyarrow.compute as pc

    found: set[str] = set()
    for batch in evalset.iter_batches():
        tags = batch.column(batch.schema.get_field_index("tags"))
        found.update(k for k in pc.unique(pc.list_flatten(tags).field("key")).to_pylist()
                     if k is not None)
    return found


def _missing_segment(keys: list[str], found: set[str], source: str, where: str) -> None:
    import difflib

    missing = [k for k in keys if k not in found]
    if missing:
        close = difflib.get_close_matches(missing[0], sorted(found), n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise ConfigError(f"{source}: segments: the evalset has no tag `{missing[0]}`",
                          hint=f"{hint}tag keys in {where}: {', '.join(sorted(found)) or 'none'}")


def _check_segments(ctx: _Ctx, evalset: Any, keys: list[str], source: str) -> None:
    if keys:
        _missing_segment(keys, _tag_keys(evalset), source, str(evalset.path))


def _check_segments_early(ctx: _Ctx, keys: list[str], source: str) -> None:
    """Segment keys the evalset cannot have fail before any work, where the tag keys are
    known without generating: a rules spec always writes the same tags, and an existing
    evalset (`ref`) can be read. sdv and llm specs are checked after the evalset stage."""
    from synthloop.evalsets import open_evalset

    stage = ctx.config.evalset
    if not keys:
        return
    if stage.ref is not None:
        ref_path = _resolve(ctx.base, stage.ref)
        es = open_evalset(ref_path if ref_path.exists() else stage.ref)
        _missing_segment(keys, _tag_keys(es), source, str(es.path))
        return
    assert stage.generate is not None
    spec = _resolve(ctx.base, stage.generate)
    if not spec.is_file():
        raise ConfigError(f"{ctx.path}: evalset.generate: spec {spec} not found",
                          hint="paths are relative to the pipeline file")
    data = parse_document(spec)
    if isinstance(data, dict) and data.get("kind", "rules") == "rules":
        from synthloop.generate._rules._engine import TAG_KEYS

        _missing_segment(keys, set(TAG_KEYS), source, f"evalsets generated from {spec}")


def _regressions(verdict: Any, comparison: Any) -> list[Regression]:
    """The failed checks as (metric, segment, delta, two-sided CI) for the summary."""
    from synthloop.gate import fmt, fmt_p

    out = []
    level = f"{comparison.confidence:.0%}"
    for r in verdict.results:
        if r.counts_as != "fail" or r.kind == "segments":
            continue
        seg = r.segment or "overall"
        stats = None
        m = comparison.metrics.get(r.metric)
        if m is not None:
            if r.segment and "=" in r.segment:
                key, _, value = r.segment.partition("=")
                stats = m.segments.get(key, {}).get(value)
            elif r.kind == "non_inferiority":
                stats = m.overall
        if stats is not None and stats.delta is not None:
            ci = stats.ci or (None, None)
            p = r.p_adjusted if r.p_adjusted is not None else r.p_value
            msg = (f"{r.metric} [{seg}]: change {fmt(stats.delta, True)} "
                   f"[{level} CI {fmt(ci[0], True)}, {fmt(ci[1], True)}] on {stats.n:,} cases, "
                   f"{'adjusted ' if r.p_adjusted is not None else ''}p={fmt_p(p)}")
            out.append(Regression(metric=r.metric, segment=seg, delta=stats.delta,
                                  ci_low=ci[0], ci_high=ci[1], message=msg))
        else:
            out.append(Regression(metric=r.metric, segment=seg, delta=r.estimate,
                                  ci_low=r.lower, ci_high=r.upper,
                                  message=f"{r.metric} [{seg}]: {r.reason}"))
    return out


def _headline(comparison: Any) -> list[str]:
    from synthloop.gate import fmt, fmt_p

    lines = []
    level = f"{comparison.confidence:.0%}"
    for name, m in comparison.metrics.items():
        s = m.overall
        ci = f" [{level} CI {fmt(s.ci[0], True)}, {fmt(s.ci[1], True)}]" if s.ci else ""
        lines.append(f"{name}: {fmt(s.mean_base)} -> {fmt(s.mean_cand)} "
                     f"(change {fmt(s.delta, True)}{ci}, p={fmt_p(s.p_value)}, n={s.n:,})")
    return lines


@dataclass
class _Plan:
    ctx: _Ctx
    name: str
    policy: Any
    policy_source: str
    baseline: Any
    base_label: str
    candidates: list[tuple[Any, str]]
    metrics: list[str]


def _prepare(config_path: str | Path, *, workdir: str | Path | None, force: bool,
             candidates: list[str | dict[str, Any]] | None, progress: bool | None,
             log: Log | None) -> _Plan:
    """Everything that can be checked before any work: config, policy, targets, scorers."""
    from synthloop.scorers._runner import build_scorers

    path = Path(config_path)
    config = load_pipeline(path)
    base = path.resolve().parent
    name = config.name or path.stem
    if workdir is not None:
        wd = Path(workdir)
    elif config.workdir is not None:
        wd = _resolve(base, config.workdir)
    else:
        wd = DEFAULT_WORKDIR_ROOT / _slug(name)
    ctx = _Ctx(config=config, path=path, base=base, workdir=wd, force=force,
               progress=progress, log=log)
    policy, policy_source = _load_policy(ctx)
    baseline, base_label = _load_target(ctx, config.targets.baseline, "targets.baseline")
    specs: list[str | dict[str, Any]] = (
        [c if isinstance(c, dict) else str(Path(c).resolve()) for c in candidates]
        if candidates is not None else list(config.targets.candidates))
    cands = [_load_target(ctx, spec, f"targets.candidates[{i}]") for i, spec in enumerate(specs)]
    probe = _scorers_config(ctx, None)
    build_scorers(probe)  # every scorer's options are valid (the feedback model comes later)
    metrics = _metric_names(probe)
    if config.feedback_model is not None:
        metrics.append(config.feedback_model.metric)
        _scorers_config(ctx, Path("feedback-model"))  # its metric name clashes with none
    _check_policy_early(ctx, policy, policy_source, metrics)
    _check_segments_early(ctx, _segment_keys(policy), policy_source)
    return _Plan(ctx=ctx, name=name, policy=policy, policy_source=policy_source,
                 baseline=baseline, base_label=base_label, candidates=cands, metrics=metrics)


def check_pipeline(config_path: str | Path, *, workdir: str | Path | None = None,
                   candidates: list[str | dict[str, Any]] | None = None) -> list[str]:
    """Validate PIPELINE.yaml without doing any work (`synthloop run --check`): the config,
    the policy, the targets (built, not called) and the scorers. Returns the plan as lines."""
    plan = _prepare(config_path, workdir=workdir, force=False, candidates=candidates,
                    progress=False, log=None)
    cfg = plan.ctx.config
    ev = cfg.evalset
    source = (f"generate {ev.generate} (seed {ev.seed if ev.seed is not None else 'from spec'}, "
              f"sessions {ev.sessions if ev.sessions is not None else 'from spec'})"
              if ev.generate else f"ref {ev.ref}")
    lines = [f"{plan.ctx.path}: valid pipeline '{plan.name}'",
             f"  work directory {plan.ctx.workdir}",
             f"  evalset: {source}"]
    if cfg.feedback_model is not None:
        fb = cfg.feedback_model
        what = (f"model {fb.model}" if fb.model else
                "train on " + ("the evalset" if fb.train_on is None else
                               str(fb.train_on.generate or fb.train_on.ref)))
        lines.append(f"  feedback model: {what} -> metric {fb.metric}")
    lines.append(f"  baseline: {plan.base_label}")
    lines.extend(f"  candidate: {label}" for _, label in plan.candidates)
    lines.append(f"  metrics: {', '.join(plan.metrics)}")
    lines.append(f"  gate: {len(plan.policy.rules)} rules from {plan.policy_source}; "
                 f"segments: {', '.join(_segment_keys(plan.policy)) or 'none'}")
    return lines


def run_pipeline(
    config_path: str | Path,
    *,
    workdir: str | Path | None = None,
    force: bool = False,
    candidates: list[str | dict[str, Any]] | None = None,
    progress: bool | None = None,
    log: Log | None = None,
) -> PipelineResult:
    """Run PIPELINE.yaml end to end; returns what every stage did and the verdicts.

    `workdir` overrides the config's; `candidates` replaces its candidate targets (paths are
    then relative to the current directory); `force` redoes every stage; `log` receives one
    line per stage. Raises ConfigError / DataError on bad input before any stage writes.
    """
    from synthloop.gate import evaluate, write_verdict
    from synthloop.report import write_reports
    from synthloop.stats import read_comparison

    started = time.perf_counter()
    plan = _prepare(config_path, workdir=workdir, force=force, candidates=candidates,
                    progress=progress, log=log)
    ctx, config, wd, name = plan.ctx, plan.ctx.config, plan.ctx.workdir, plan.name
    policy, policy_source = plan.policy, plan.policy_source
    baseline, base_label, cands = plan.baseline, plan.base_label, plan.candidates
    wd.mkdir(parents=True, exist_ok=True)
    _say(log, f"{name}: work directory {wd}")

    # -- stages
    evalset = _evalset_stage(ctx, config.evalset, "evalset")
    segments = _segment_keys(policy)
    _check_segments(ctx, evalset, segments, policy_source)
    feedback = (_feedback_stage(ctx, config.feedback_model, evalset)
                if config.feedback_model is not None else None)
    scorers = _scorers_config(ctx, feedback)
    base_run = _replay_stage(ctx, evalset, baseline, base_label)
    base_key = _score_stage(ctx, base_run, base_label, scorers)
    compare_opts: dict[str, Any] = {"segments": segments or None}

    results: list[CandidateResult] = []
    used_labels: set[str] = set()
    for target, label in cands:
        run_path = _replay_stage(ctx, evalset, target, label)
        key = base_key if run_path == base_run else _score_stage(ctx, run_path, label, scorers)
        cmp_dir = _compare_stage(ctx, base_run, run_path, label, [base_key, key], compare_opts)
        comparison = read_comparison(cmp_dir)
        t0 = time.perf_counter()
        verdict = evaluate(comparison, policy, comparison_path=cmp_dir, policy_path=policy_source)
        report_label = _slug(label)
        while report_label in used_labels:
            report_label += "-2"
        used_labels.add(report_label)
        rdir = wd / "reports" / report_label
        write_verdict(verdict, rdir / "verdict.json")
        written = write_reports(comparison, verdict, markdown=rdir / "report.md",
                                junit=rdir / "junit.xml", html=rdir / "report.html")
        reports: dict[str, Path] = {k: written[k] for k in ("markdown", "junit", "html")
                                    if k in written}
        reports["verdict"] = rdir / "verdict.json"
        ctx.record(f"gate {label}", "ran", rdir, t0, f"{verdict.status}: {verdict.summary}")
        results.append(CandidateResult(
            label=label, target=label, run=run_path, comparison=cmp_dir,
            exit_code=verdict.exit_code, verdict=verdict.status,
            regressions=_regressions(verdict, comparison), reports=reports,
            headline=_headline(comparison),
            inconclusive=[f"{r.name}: {r.reason}" for r in verdict.results
                          if r.counts_as == "inconclusive"]))

    return PipelineResult(
        name=name, config_path=ctx.path, workdir=wd, evalset=evalset.path,
        evalset_hash=evalset.content_hash, cases=len(evalset), baseline=base_label,
        baseline_run=base_run, candidates=results, stages=ctx.stages, feedback_model=feedback,
        seconds=time.perf_counter() - started)
