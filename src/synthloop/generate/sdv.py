"""The sdv generator: synthetic sessions fitted on a consented, scrubbed ingest sample.

    kind: sdv
    source: ingested/                 # a directory written by `synthloop ingest`
    synthesizer: gaussian_copula      # or ctgan, tvae, par
    sessions: 500
    seed: 1

Pipeline (`run_spec` -> `prepare` -> `synthesize` -> `write`):

1. read the ingest sample (consent was enforced there: rows without consent never arrive);
2. cap each user's contribution (`max_sessions_per_user`, seeded), hold out a share of users
   for the privacy checks, merge categories used by fewer than `k` users into `(other)`;
3. split columns into session-level ones (constant within every session: persona, locale, ...)
   and turn-level ones (intent, feedback, latency, ...); ids and free text never reach SDV;
4. fit SDV on a session table (turn count, start time, session-level columns) and a turn table
   (position, last-turn flag, time since the previous turn, turn-level columns). With the
   default Gaussian copula every column first goes through its empirical distribution
   (randomised probability integral transform), so marginals are reproduced closely and SDV
   fits the dependence; `par` fits one sequential model instead;
5. sample sessions, then fill their turns from a pool of sampled turn rows matched on
   (position, last turn, persona) — rejection sampling of the conditional, relaxed in that
   order when a bucket runs dry;
6. fill the text of each turn from the k-anonymous pool of real prompts of the same intent
   (reused only when at least `k` distinct users wrote it), else from the spec's templates,
   else the placeholder;
7. measure fidelity and privacy; a failing privacy gate raises PrivacyGateError (exit 4) and
   writes nothing, unless `--allow-privacy-failure`;
8. write the evalset version atomically with `fidelity_report.json`, `privacy_report.json`,
   `synthetic.parquet` (the full synthetic table) and `synthesizer.pkl` (checksum in the
   manifest).

See docs/sdv.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.special import ndtr, ndtri

from synthloop import __version__
from synthloop.config import file_hash, interpolate_env, validate_data
from synthloop.errors import ConfigError, DataError, PrivacyGateError
from synthloop.evalsets import EvalsetWriter, check_new_version, columns_to_batch
from synthloop.generate import GenerateOptions
from synthloop.privacy._fidelity import fidelity_report
from synthloop.privacy._metrics import normalize_text
from synthloop.privacy._report import (
    PrivacyInputs,
    PrivacyReport,
    PrivacyThresholds,
    privacy_report,
)
from synthloop.progress import progress_bar
from synthloop.schema import EvalsetManifest, Provenance

GENERATOR_VERSION = "1"
MODEL_FORMAT = "synthloop-sdv-model/1"
SYNTHESIZER_FILE = "synthesizer.pkl"
FIDELITY_FILE = "fidelity_report.json"
PRIVACY_FILE = "privacy_report.json"
SYNTHETIC_FILE = "synthetic.parquet"
OTHER = "(other)"

SynthesizerName = Literal["gaussian_copula", "ctgan", "tvae", "par"]
SdType = Literal["numerical", "categorical", "boolean", "datetime", "ignore"]
FillSource = Literal["pool", "templates"]
DEFAULT_FILL: tuple[FillSource, ...] = ("pool", "templates")

ID_COLUMNS = ("interaction_id", "session_id", "user_id")
TEXT_COLUMNS = ("input", "context", "output", "feedback.comment")
CATEGORY_FIELDS = ("persona", "intent", "locale", "model_version", "feedback.thumb")
NUMERIC_FIELDS = ("latency_ms", "feedback.rating", "feedback.clicks", "feedback.read_time_s",
                  "feedback.watch_time_s", "feedback.feedback_delay_s")
BOOL_FIELDS = ("feedback.copied", "feedback.regenerated", "feedback.edited",
               "feedback.abandoned")
FEEDBACK_FIELDS = ("feedback.thumb", "feedback.rating", "feedback.clicks",
                   "feedback.read_time_s", "feedback.watch_time_s", "feedback.feedback_delay_s",
                   *BOOL_FIELDS)
REQUIRED_COLUMNS = ("session_id", "user_id", "turn")

# internal columns of the session and turn tables
N_TURNS = "_n_turns"
START = "_start"
POSITION = "_position"
IS_LAST = "_is_last"
GAP = "_gap_s"
_MATCH_POSITIONS = 3  # positions 0, 1, 2 and "3 or later" are matched separately

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the spec
class SdvSpec(BaseModel):
    """An sdv generator spec (`kind: sdv`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sdv"] = "sdv"
    """Generator kind."""
    source: str
    """Ingest output directory (`synthloop ingest ... --out DIR`). A relative path is read
    relative to the spec file's folder, else to the current directory."""
    name: str | None = None
    """Evalset name recorded in the manifest (default: the output's parent folder)."""
    synthesizer: SynthesizerName = "gaussian_copula"
    """`gaussian_copula` (default, fast), `ctgan`, `tvae` (neural, slower) or `par`
    (sequential: one model over whole sessions)."""
    sessions: int | None = Field(default=None, ge=1)
    """Sessions to synthesize (default: as many as the training sample has)."""
    rows: int | None = Field(default=None, ge=1)
    """Interactions to synthesize instead of sessions (the last session is cut short)."""
    seed: int = Field(default=0, ge=0)
    """Seed of every random draw: user cap, holdout split, fit, sampling, text fill."""
    max_sessions_per_user: int | None = Field(default=20, ge=1)
    """Sessions kept per user before fitting (a seeded choice); null keeps all."""
    k: int = Field(default=5, ge=1)
    """k-anonymity: a real prompt is reused only if at least k distinct users wrote it, and
    category values used by fewer than k users are merged into `(other)`."""
    merge_rare_categories: bool = True
    """Merge category values used by fewer than `k` users into `(other)` before fitting."""
    holdout: float = Field(default=0.2, ge=0.0, lt=0.9)
    """Share of users kept out of the fit, for the privacy checks that need unseen real rows."""
    marginals: Literal["empirical", "parametric"] = "empirical"
    """gaussian_copula only: `empirical` maps every column through its empirical distribution
    (a quantile grid of at most 1,001 points and at most one point per k values),
    `parametric` lets SDV fit `distribution` to each numerical column."""
    distribution: Literal["beta", "truncnorm", "gamma", "norm", "uniform", "gaussian_kde"] = "beta"
    """gaussian_copula with `marginals: parametric`: SDV's default_distribution."""
    stratify: list[str] | None = None
    """Categorical columns whose value combinations get their own model (strata), so that
    rates within them (e.g. thumb-up rate per intent) are reproduced. Default: `[intent,
    feedback.thumb]` for gaussian_copula, none for the neural synthesizers; `[]` turns it off."""
    min_stratum_rows: int = Field(default=50, ge=2)
    """A stratum needs at least this many rows (and k distinct users); smaller ones are merged
    (their last key becomes `*`)."""
    max_strata: int = Field(default=16, ge=1)
    """At most this many strata per table (the largest); the rest are merged."""
    epochs: int = Field(default=100, ge=1)
    """Training epochs of ctgan, tvae and par."""
    metadata: dict[str, SdType] = Field(default_factory=dict)
    """Per-column sdtype overrides (`numerical`, `categorical`, `boolean`, `datetime`), or
    `ignore` to leave a column out of the model. Keys are sample columns, e.g. `intent`,
    `latency_ms`, `extra.country`."""
    fill: list[FillSource] = Field(default_factory=lambda: list(DEFAULT_FILL))
    """Where a turn's text comes from, in order of preference: `pool` (k-anonymous real
    prompts of the same intent), `templates` (the `templates` below)."""
    templates: dict[str, list[str]] = Field(default_factory=dict)
    """Jinja2 templates (sandboxed) per intent; key `*` for any intent. Variables: intent,
    persona, locale, turn, extra (dict of extra.* values by short name), fields (every
    synthetic column), faker (a seeded Faker)."""
    placeholder: str = ""
    """Template of the text when neither the pool nor a template applies (default empty, e.g.
    for tabular logs without text)."""
    history_reply: str | None = "(earlier reply omitted)"
    """Assistant message placed after each earlier user turn in `history` (real replies are
    never copied); null puts only the user turns in the history."""
    canaries: list[str | float] = Field(default_factory=list)
    """Planted values that must not appear in the output: strings are searched in every text
    and value, numbers in every numerical column."""
    privacy: PrivacyThresholds = Field(default_factory=PrivacyThresholds)
    """Privacy gate thresholds (see docs/sdv.md)."""
    load_synthesizer: str | None = None
    """A `synthesizer.pkl` to sample from instead of fitting (relative to the spec's folder)."""
    checksum: str | None = None
    """sha256 of `load_synthesizer`; default: read from the `manifest.json` beside it. A
    mismatch refuses to load (a pickle runs code when loaded)."""
    save_synthesizer: bool = True
    """Write the fitted model as `synthesizer.pkl` in the version directory."""

    @field_validator("templates")
    @classmethod
    def _templates_compile(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        env = _jinja()
        for intent, items in v.items():
            for i, t in enumerate(items):
                try:
                    env.from_string(t)
                except Exception as e:  # jinja2.TemplateSyntaxError
                    raise ValueError(f"templates.{intent}[{i}]: {e}") from None
        return v

    @field_validator("checksum")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower().removeprefix("sha256:")
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be a sha256 hex digest (64 characters)")
        return v

    @model_validator(mode="after")
    def _one_count(self) -> SdvSpec:
        if self.sessions is not None and self.rows is not None:
            raise ValueError("give either sessions or rows, not both")
        return self


def _jinja() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass
class LoadedSpec:
    spec: SdvSpec
    path: Path
    spec_hash: str


def load_spec(path: str | Path, data: Any | None = None) -> LoadedSpec:
    """Validate an sdv spec (already parsed `data`, or read from `path`)."""
    from synthloop.config import parse_document

    p = Path(path)
    if data is None:
        data = parse_document(p)
    missing: list[str] = []
    data = interpolate_env(data, missing=missing)
    if missing:
        raise ConfigError(f"{p}: {missing[0]}", problems=[f"{p}: {m}" for m in missing])
    spec = validate_data(data, SdvSpec, str(p))
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return LoadedSpec(spec=spec, path=p, spec_hash="sha256:" + hashlib.sha256(blob.encode()).hexdigest())


def _resolve(spec_path: Path, ref: str) -> Path:
    p = Path(ref).expanduser()
    if p.is_absolute():
        return p
    beside = spec_path.parent / p
    if beside.exists() or not p.exists():
        return beside
    return p


# --------------------------------------------------------------------------- the source
@dataclass
class Source:
    """A consented, scrubbed ingest sample and its report."""

    path: Path
    frame: pd.DataFrame
    report: Any  # synthloop.ingest.IngestReport
    sample_sha256: str

    @property
    def mapped(self) -> set[str]:
        return set(self.report.mapped or {})


def load_source(path: Path) -> Source:
    """Read an ingest output directory, checking what the generator relies on."""
    from synthloop.ingest import SAMPLE, read_report, read_sample

    report = read_report(path)
    frame = read_sample(path)
    where = f"{path / SAMPLE}"
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}",
                        hint="re-run `synthloop ingest` to rebuild the sample")
    if frame.empty:
        raise DataError(f"{where}: the consented sample is empty: nothing to fit",
                        hint=f"{report.counts.excluded_consent:,} rows were excluded for consent "
                             f"and {report.counts.invalid:,} were invalid; check the log's "
                             "consent columns and the mapping")
    for c in ("session_id", "user_id"):
        if frame[c].isna().any():
            raise DataError(f"{where}: column {c} has {int(frame[c].isna().sum()):,} empty values")
    if not pd.api.types.is_integer_dtype(frame["turn"]):
        raise DataError(f"{where}: column turn must hold integers (has {frame['turn'].dtype})")
    for c in NUMERIC_FIELDS:
        if c in frame.columns and not (pd.api.types.is_numeric_dtype(frame[c])
                                       or frame[c].isna().all()):
            raise DataError(f"{where}: column {c} must be numeric (has {frame[c].dtype})")
    if "timestamp" in frame.columns and not (
            pd.api.types.is_datetime64_any_dtype(frame["timestamp"]) or frame["timestamp"].isna().all()):
        raise DataError(f"{where}: column timestamp must hold timestamps (has "
                        f"{frame['timestamp'].dtype})")
    return Source(path=path, frame=frame, report=report,
                  sample_sha256="sha256:" + file_hash(path / SAMPLE))


# --------------------------------------------------------------------------- preparation
@dataclass
class ColumnPlan:
    """Which sample columns are modelled, how, and at which level."""

    sdtypes: dict[str, str]
    """Modelled column -> numerical / categorical / boolean / datetime (original values)."""
    session_cols: list[str]
    turn_cols: list[str]
    constants: dict[str, Any]
    dropped: dict[str, str]
    has_timestamps: bool
    turn_offset: int
    feedback: bool
    """Some feedback column was mapped from the log."""
    rare_merged: dict[str, int] = field(default_factory=dict)
    """Column -> number of category values merged into `(other)`."""
    persona_key: bool = False


def _text_like(s: pd.Series) -> bool:
    v = s.dropna().astype(str)
    if v.empty:
        return False
    nunique = v.nunique()
    return bool(v.str.len().mean() > 40 or (nunique > 100 and nunique > 0.5 * len(v)))


def _candidate_sdtype(name: str, s: pd.Series) -> str | None:
    if name in CATEGORY_FIELDS:
        return "categorical"
    if name in NUMERIC_FIELDS:
        return "numerical"
    if name in BOOL_FIELDS:
        return "boolean"
    if not name.startswith("extra."):
        return None
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s):
        return "numerical"
    return "text" if _text_like(s) else "categorical"


def plan_columns(frame: pd.DataFrame, spec: SdvSpec, mapped: set[str], where: str) -> ColumnPlan:
    """Decide the modelled columns (ids and free text never reach SDV)."""
    candidates: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for c in frame.columns:
        t = _candidate_sdtype(c, frame[c])
        if t is None:
            continue
        if t == "text":
            dropped[c] = "free text (never modelled)"
            continue
        candidates[c] = t
    known = [c for c in frame.columns if c not in ID_COLUMNS and c not in ("turn", "timestamp")]
    problems = []
    for c, t in spec.metadata.items():
        if c not in frame.columns or c in ID_COLUMNS or c in ("turn", "timestamp"):
            import difflib

            close = difflib.get_close_matches(c, known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else "known: " + ", ".join(known[:20])
            problems.append(f"{where}: metadata.{c}: not a modelled column of the sample ({hint})")
            continue
        if c in TEXT_COLUMNS and t != "ignore":
            problems.append(f"{where}: metadata.{c}: free text is never modelled (use ignore)")
            continue
        if t == "ignore":
            candidates.pop(c, None)
            dropped[c] = "ignored by the spec"
        else:
            candidates[c] = t
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else f"{where}: {len(problems)} problems",
                          problems=problems)
    constants: dict[str, Any] = {}
    sdtypes: dict[str, str] = {}
    for c, t in candidates.items():
        s = frame[c]
        if s.isna().all():
            dropped[c] = "empty (not in the log)"
            continue
        if s.nunique(dropna=False) == 1:
            v = s.iloc[0]
            constants[c] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
            continue
        if t == "numerical" and not pd.api.types.is_numeric_dtype(s):
            conv = pd.to_numeric(s, errors="coerce")
            if conv.isna().sum() > s.isna().sum():
                raise ConfigError(f"{where}: metadata.{c}: numerical, but the column holds "
                                  "non-numbers (use categorical)")
        sdtypes[c] = t
    for c in spec.stratify or []:
        if c not in frame.columns:
            problems.append(f"{where}: stratify: {c} is not a column of the sample")
        elif c in candidates and candidates[c] not in ("categorical", "boolean"):
            problems.append(f"{where}: stratify: {c} is {candidates[c]}; strata need a "
                            "categorical or boolean column")
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else f"{where}: {len(problems)} problems",
                          problems=problems)
    has_ts = "timestamp" in frame.columns and bool(frame["timestamp"].notna().all())
    if "timestamp" in frame.columns and not has_ts and frame["timestamp"].notna().any():
        dropped["timestamp"] = "partly missing: synthetic sessions get no timestamps"
    # session-level columns are constant within every session
    if sdtypes:
        per_session = frame.groupby("session_id", sort=False)[list(sdtypes)].nunique(dropna=False)
        session_level = set(per_session.columns[(per_session <= 1).all(axis=0)])
    else:
        session_level = set()
    session_cols = [c for c in sdtypes if c in session_level]
    turn_cols = [c for c in sdtypes if c not in session_level]
    first_turn = frame.groupby("session_id", sort=False)["turn"].min()
    offset = int(first_turn.mode().iloc[0]) if len(first_turn) else 0
    return ColumnPlan(
        sdtypes=sdtypes, session_cols=session_cols, turn_cols=turn_cols, constants=constants,
        dropped=dropped, has_timestamps=has_ts, turn_offset=offset,
        feedback=any(f in mapped for f in FEEDBACK_FIELDS),
        persona_key="persona" in session_cols,
    )


def cap_users(frame: pd.DataFrame, cap: int | None, seed: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep at most `cap` sessions per user (a seeded choice)."""
    sessions = frame[["user_id", "session_id"]].drop_duplicates()
    per_user = sessions.groupby("user_id", sort=True).size()
    stats = {"users": int(len(per_user)), "sessions": int(len(sessions)), "users_capped": 0,
             "sessions_dropped": 0, "rows_dropped": 0}
    if cap is None or per_user.empty or per_user.max() <= cap:
        return frame, stats
    rng = np.random.default_rng([seed, 11])
    sessions = sessions.sort_values(["user_id", "session_id"], kind="mergesort")
    sessions["_r"] = rng.random(len(sessions))
    sessions["_rank"] = sessions.groupby("user_id")["_r"].rank(method="first")
    keep = set(sessions.loc[sessions["_rank"] <= cap, "session_id"])
    out = frame[frame["session_id"].isin(keep)]
    stats["users_capped"] = int((per_user > cap).sum())
    stats["sessions_dropped"] = int(len(sessions) - len(keep))
    stats["rows_dropped"] = int(len(frame) - len(out))
    return out.reset_index(drop=True), stats


def split_holdout(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded share of users (all their rows), keeping at least one training user."""
    users = np.array(sorted(frame["user_id"].astype(str).unique()))
    n_hold = int(round(share * len(users)))
    n_hold = min(n_hold, len(users) - 1)
    if n_hold <= 0:
        return frame.reset_index(drop=True), frame.iloc[0:0].reset_index(drop=True)
    rng = np.random.default_rng([seed, 23])
    held = set(users[rng.permutation(len(users))[:n_hold]])
    mask = frame["user_id"].astype(str).isin(held).to_numpy()
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


def merge_rare(frame: pd.DataFrame, plan: ColumnPlan, k: int) -> dict[str, set[Any]]:
    """Category values used by fewer than k distinct users (per categorical column)."""
    rare: dict[str, set[Any]] = {}
    for c, t in plan.sdtypes.items():
        # any dtype: a zip code or plan id declared categorical is a category all the same
        if t != "categorical":
            continue
        users = frame.dropna(subset=[c]).groupby(c, sort=False)["user_id"].nunique()
        few = set(users.index[users < k])
        if few:
            rare[c] = few
    # a category constant over the whole sample is restored as is: rare when < k users wrote it
    for c, v in plan.constants.items():
        if (isinstance(v, str) and c != "feedback.thumb" and c in frame.columns
                and frame.loc[frame[c].notna(), "user_id"].nunique() < k):
            rare[c] = {v}
    return rare


def apply_rare(frame: pd.DataFrame, rare: dict[str, set[Any]]) -> pd.DataFrame:
    if not rare:
        return frame
    out = frame.copy()
    for c, values in rare.items():
        if c in out.columns:
            col = out[c].astype(object)
            if not (pd.api.types.is_object_dtype(out[c]) or pd.api.types.is_string_dtype(out[c])):
                # numbers declared categorical: as text, so that `(other)` fits the column
                values = {_category_text(v) for v in values}
                col = col.map(lambda v: None if _isna(v) else _category_text(v))
            out[c] = col.where(~col.isin(values), OTHER)
    return out


def _category_text(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v.item() if isinstance(v, np.generic) else v)


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["session_id", "turn"] + (["timestamp"] if "timestamp" in frame.columns else [])
    return frame.sort_values(keys, kind="mergesort").reset_index(drop=True)


def session_table(frame: pd.DataFrame, plan: ColumnPlan) -> pd.DataFrame:
    """One row per session: turn count, start time, session-level columns."""
    g = frame.groupby("session_id", sort=False)
    out = g[plan.session_cols].first() if plan.session_cols else pd.DataFrame(index=g.size().index)
    out[N_TURNS] = g.size().astype("int64")
    if plan.has_timestamps:
        out[START] = g["timestamp"].min()
    return out.reset_index(drop=True)


def turn_table(frame: pd.DataFrame, plan: ColumnPlan) -> pd.DataFrame:
    """One row per interaction: position, last-turn flag, gap to the previous turn, turn columns."""
    f = _ordered(frame)
    pos = f.groupby("session_id", sort=False).cumcount()
    size = f.groupby("session_id", sort=False)["session_id"].transform("size")
    out = pd.DataFrame({POSITION: pos.astype("int64"), IS_LAST: (pos == size - 1)})
    if plan.has_timestamps:
        ts = f["timestamp"]
        gap = ts.groupby(f["session_id"], sort=False).diff().dt.total_seconds()
        out[GAP] = gap.clip(lower=0)
    if plan.persona_key:
        out["persona"] = f["persona"].astype(object)
    for c in plan.turn_cols:
        out[c] = f[c]
    return out


def interaction_table(frame: pd.DataFrame, plan: ColumnPlan) -> pd.DataFrame:
    """The compared columns of real interactions (ids kept for session measures)."""
    f = _ordered(frame)
    cols = ["session_id", "user_id", "turn"] + (["timestamp"] if plan.has_timestamps else []) + list(
        plan.sdtypes)
    return f[cols].reset_index(drop=True)


def compared_sdtypes(plan: ColumnPlan) -> dict[str, str]:
    out = {"turn": "numerical"}
    if plan.has_timestamps:
        out["timestamp"] = "datetime"
    out.update(plan.sdtypes)
    return out


# --------------------------------------------------------------------------- marginals
class Marginal:
    """One column's empirical distribution: atoms (missing, categories, discrete values) and a
    quantile grid for continuous values. `to_normal` is a randomised probability integral
    transform of the fit data (ties spread uniformly), `from_normal` its inverse."""

    def __init__(self, values: pd.Series, sdtype: str, *, k: int, grid: int = 1001,
                 discrete_max: int = 64) -> None:
        self.sdtype = sdtype
        s = values.reset_index(drop=True)
        missing = s.isna().to_numpy()
        n = len(s)
        self.p_missing = float(missing.mean()) if n else 0.0
        present = s[~missing]
        self.is_int = False
        self.tz: Any = None
        if sdtype in ("categorical", "boolean"):
            counts = present.astype(object).value_counts(sort=False)
            order = sorted(counts.index, key=lambda v: (-counts[v], str(v)))
            self.kind = "atoms"
            self.atoms: list[Any] = list(order)
            self._rank = {v: i for i, v in enumerate(order)}
            self.cum = np.cumsum([counts[v] for v in order]) / max(len(present), 1)
            return
        x = self._numbers(present)
        uniq, cnt = np.unique(x, return_counts=True)
        self.is_int = bool(len(x) and np.all(np.mod(x, 1) == 0))
        if len(uniq) <= discrete_max:
            self.kind = "discrete"
            self.values = uniq
            self.cum = np.cumsum(cnt) / max(len(x), 1)
        else:
            self.kind = "continuous"
            points = int(min(grid, max(2, len(x) // max(k, 1))))
            self.probs = np.linspace(0.0, 1.0, points)
            self.grid = np.quantile(x, self.probs)

    def _numbers(self, s: pd.Series) -> np.ndarray:
        if self.sdtype == "datetime":
            t = pd.to_datetime(s, utc=True)
            self.tz = "UTC"
            seconds = (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
            return np.asarray(seconds, dtype="float64")
        return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()

    def to_normal(self, values: pd.Series, rng: np.random.Generator) -> np.ndarray:
        s = values.reset_index(drop=True)
        n = len(s)
        missing = s.isna().to_numpy()
        primary = np.full(n, -np.inf)
        if self.kind == "atoms":
            primary[~missing] = [self._rank.get(v, len(self._rank)) for v in s[~missing].astype(object)]
        else:
            primary[~missing] = self._numbers(s[~missing])
        order = np.lexsort((rng.random(n), primary))
        ranks = np.empty(n)
        ranks[order] = np.arange(n)
        return np.asarray(ndtri((ranks + 0.5) / n), dtype="float64")

    def from_normal(self, z: np.ndarray) -> pd.Series:
        u = ndtr(np.asarray(z, dtype="float64"))
        n = len(u)
        missing = u < self.p_missing
        rest = (u[~missing] - self.p_missing) / max(1.0 - self.p_missing, 1e-12)
        rest = np.clip(rest, 0.0, 1.0)
        if self.kind == "atoms":
            idx = np.minimum(np.searchsorted(self.cum, rest, side="left"), len(self.atoms) - 1)
            out = np.empty(n, dtype=object)
            out[:] = None
            out[~missing] = np.asarray(self.atoms, dtype=object)[idx] if len(self.atoms) else None
            if self.sdtype == "boolean":
                return pd.Series(out, dtype=object)
            return pd.Series(out, dtype=object)
        if self.kind == "discrete":
            idx = np.minimum(np.searchsorted(self.cum, rest, side="left"), len(self.values) - 1)
            vals = self.values[idx]
        else:
            vals = np.interp(rest, self.probs, self.grid)
            if self.is_int:
                vals = np.round(vals)
        x = np.full(n, np.nan)
        x[~missing] = vals
        if self.sdtype == "datetime":
            ns = np.where(np.isnan(x), 0, np.round(x * 1e9)).astype("int64")
            t = pd.to_datetime(ns, utc=True)
            return pd.Series(t).where(~np.isnan(x), pd.NaT)
        return pd.Series(x)


# --------------------------------------------------------------------------- table models
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence SDV's warnings, prints and log records (it logs to ~/.local/share/sdv)."""
    loggers = [logging.getLogger(n) for n in ("sdv", "rdt", "copulas", "ctgan", "deepecho",
                                               "SingleTableSynthesizer", "MultiTableSynthesizer")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch comes with sdv
        pass


def _sdv_frame(frame: pd.DataFrame, sdtypes: dict[str, str]) -> pd.DataFrame:
    """Values SDV accepts: categories/booleans as objects (None for missing), naive datetimes."""
    out = {}
    for c, t in sdtypes.items():
        s = frame[c].reset_index(drop=True)
        if t in ("categorical", "boolean"):
            s = s.astype(object).where(s.notna(), None)
            if t == "categorical":
                s = s.map(lambda v: v if v is None else str(v))
        elif t == "datetime":
            s = pd.to_datetime(s, utc=True).dt.tz_convert(None)
        else:
            s = pd.to_numeric(s, errors="coerce").astype("float64")
        out[c] = s
    return pd.DataFrame(out)


def _metadata(columns: dict[str, str], table: str = "t", **extra: Any) -> Any:
    from sdv.metadata import Metadata

    cols = {c: ({"sdtype": t} if t != "datetime" else {"sdtype": "datetime"})
            for c, t in columns.items()}
    tdict: dict[str, Any] = {"columns": cols}
    tdict.update(extra)
    return Metadata.load_from_dict({"tables": {table: tdict}})


class TableModel:
    """One SDV single-table synthesizer over one table, with synthloop's transforms.

    Columns constant in the fit data are kept aside and restored when sampling.
    """

    def __init__(self, name: str, sdtypes: dict[str, str], spec: SdvSpec) -> None:
        self.name = name
        self.sdtypes = dict(sdtypes)
        self.kind: SynthesizerName = "gaussian_copula" if spec.synthesizer == "par" else spec.synthesizer
        self.empirical = self.kind == "gaussian_copula" and spec.marginals == "empirical"
        self.distribution = spec.distribution
        self.epochs = spec.epochs
        self.k = spec.k
        self.marginals: dict[str, Marginal] = {}
        self.constants: dict[str, Any] = {}
        self.modelled: dict[str, str] = {}
        self.alias: dict[str, str] = {}
        self.synth: Any = None
        self.rows = 0

    def fit(self, frame: pd.DataFrame, seed: int) -> None:
        from sdv.single_table import (
            CTGANSynthesizer,
            GaussianCopulaSynthesizer,
            TVAESynthesizer,
        )

        self.rows = len(frame)
        for c, t in self.sdtypes.items():
            col = frame[c]
            if col.nunique(dropna=False) <= 1:
                v = col.iloc[0] if len(col) else None
                self.constants[c] = None if _isna(v) else v
            else:
                self.modelled[c] = t
        self.alias = {c: f"c{i}" for i, c in enumerate(self.modelled)}
        if not self.modelled:
            return
        rng = np.random.default_rng([seed, 31])
        if self.empirical:
            data = {}
            for c, t in self.modelled.items():
                m = Marginal(frame[c], t, k=self.k)
                self.marginals[c] = m
                data[self.alias[c]] = m.to_normal(frame[c], rng)
            table = pd.DataFrame(data)
            md = _metadata({a: "numerical" for a in table.columns})
        else:
            table = _sdv_frame(frame, self.modelled).rename(columns=self.alias)
            md = _metadata({self.alias[c]: t for c, t in self.modelled.items()})
        _seed_everything(seed)
        with _quiet():
            if self.kind == "gaussian_copula":
                if self.empirical:
                    synth = GaussianCopulaSynthesizer(md, default_distribution="norm",
                                                      enforce_rounding=False,
                                                      enforce_min_max_values=True)
                else:
                    synth = GaussianCopulaSynthesizer(md, default_distribution=self.distribution)
            elif self.kind == "ctgan":
                synth = CTGANSynthesizer(md, epochs=self.epochs, enable_gpu=False)
            else:
                synth = TVAESynthesizer(md, epochs=self.epochs, enable_gpu=False)
            synth.fit({"t": table})
        self.synth = synth

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        out: dict[str, Any] = {}
        if n > 0 and self.modelled:
            _seed_everything(seed)
            with _quiet():
                self.synth.reset_sampling()
                self.synth._set_random_state(seed)
                raw = self.synth.sample(n)
            table = raw["t"] if isinstance(raw, dict) else raw
            table = table.reset_index(drop=True)
            for c, t in self.modelled.items():
                col = table[self.alias[c]]
                if self.empirical:
                    out[c] = self.marginals[c].from_normal(col.to_numpy(dtype="float64"))
                elif t == "datetime":
                    out[c] = pd.to_datetime(col).dt.tz_localize("UTC")
                else:
                    out[c] = col
        frame = pd.DataFrame(out, index=range(max(n, 0)))
        for c, v in self.constants.items():
            frame[c] = [v] * len(frame)
        return frame[list(self.sdtypes)]


def strata_labels(frame: pd.DataFrame, keys: Sequence[str], users: pd.Series, *,
                  min_rows: int, min_users: int, max_strata: int) -> pd.Series:
    """Stratum of each row: the values of `keys`; strata with too few rows or users are merged
    by replacing their trailing key values with `*` (then into the largest stratum)."""
    n = len(frame)
    if not keys or n == 0:
        return pd.Series(["*"] * n, index=frame.index, dtype=object)
    parts = [frame[k].astype(object).where(frame[k].notna(), "(missing)").astype(str).to_numpy()
             for k in keys]
    labels = np.array(["\x1f".join(v) for v in zip(*parts, strict=True)], dtype=object)
    uarr = users.astype(str).to_numpy()
    for level in range(len(keys), -1, -1):
        df = pd.DataFrame({"l": labels, "u": uarr})
        g = df.groupby("l")
        size, nusers = g.size(), g["u"].nunique()
        ok = (size >= min_rows) & (nusers >= min_users)
        keep = set(size[ok].sort_values(ascending=False).index[:max_strata])
        bad = ~pd.Series(labels).isin(keep).to_numpy()
        if not bad.any():
            break
        if level == 0:
            # what is left over is too small on its own: join the largest stratum
            largest = size[list(keep)].idxmax() if keep else None
            if largest is not None:
                labels[bad] = largest
            break
        coarse = ["\x1f".join(lab.split("\x1f")[: level - 1] + ["*"] * (len(keys) - level + 1))
                  for lab in labels[bad]]
        labels[bad] = coarse
    return pd.Series(labels, index=frame.index, dtype=object)


class StratifiedModel:
    """One TableModel per stratum (e.g. per intent and thumb): marginals within each stratum
    are reproduced exactly, so rates per stratum (thumb-up rate per intent) follow the data.
    Sampling draws stratum sizes from the training shares (multinomial, seeded)."""

    def __init__(self, name: str, sdtypes: dict[str, str], spec: SdvSpec, keys: list[str]) -> None:
        self.name = name
        self.sdtypes = dict(sdtypes)
        self.spec = spec
        self.keys = keys
        self.labels: list[str] = []
        self.weights = np.zeros(0)
        self.models: list[TableModel] = []

    def fit(self, frame: pd.DataFrame, users: pd.Series, seed: int) -> None:
        spec = self.spec
        labels = strata_labels(frame, self.keys, users, min_rows=spec.min_stratum_rows,
                               min_users=max(spec.k, 2), max_strata=spec.max_strata)
        counts = labels.value_counts()
        self.labels = sorted(counts.index)
        self.weights = np.array([counts[lab] for lab in self.labels], dtype="float64")
        self.weights /= self.weights.sum()
        for i, lab in enumerate(self.labels):
            part = frame[labels.to_numpy() == lab].reset_index(drop=True)
            m = TableModel(f"{self.name}[{lab}]", self.sdtypes, spec)
            m.fit(part, seed + 7919 * i)
            self.models.append(m)

    @property
    def strata(self) -> dict[str, float]:
        return {lab.replace("\x1f", "|"): round(float(w), 6)
                for lab, w in zip(self.labels, self.weights, strict=True)}

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng([seed, 61])
        sizes: Sequence[int] = (rng.multinomial(max(n, 0), self.weights).tolist()
                                if len(self.models) else [])
        parts = [m.sample(int(k), seed + 104729 * i)
                 for i, (m, k) in enumerate(zip(self.models, sizes, strict=True)) if k > 0]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in self.sdtypes})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # all-missing columns in a stratum
            out = pd.concat(parts, ignore_index=True)
        return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


class SequenceModel:
    """SDV's PAR over whole sessions: context = session-level columns, sequence = turns."""

    def __init__(self, plan: ColumnPlan, spec: SdvSpec) -> None:
        self.plan = plan
        self.epochs = spec.epochs
        self.context = list(plan.session_cols) + ([START] if plan.has_timestamps else [])
        self.sequence = list(plan.turn_cols) + ([GAP] if plan.has_timestamps else [])
        types = {**plan.sdtypes, START: "datetime", GAP: "numerical"}
        self.sdtypes = {c: types[c] for c in self.context + self.sequence}
        self.alias = {c: f"c{i}" for i, c in enumerate(self.sdtypes)}
        self.synth: Any = None

    def fit(self, frame: pd.DataFrame, seed: int) -> None:
        from sdv.sequential import PARSynthesizer

        f = _ordered(frame)
        sess = session_table(f, self.plan)
        turns = turn_table(f, self.plan)
        sid = f["session_id"].astype(str).to_numpy()
        order = pd.unique(sid)
        start_by = dict(zip(order, sess[START], strict=True)) if self.plan.has_timestamps else {}
        table = pd.DataFrame({"sid": sid, "pos": turns[POSITION].to_numpy(dtype="float64")})
        for c in self.plan.session_cols + self.plan.turn_cols:
            table[c] = f[c].to_numpy()
        if self.plan.has_timestamps:
            table[START] = [start_by[s] for s in sid]
            table[GAP] = turns[GAP].fillna(0.0).to_numpy()
        body = _sdv_frame(table, self.sdtypes).rename(columns=self.alias)
        body.insert(0, "pos", table["pos"].to_numpy())
        body.insert(0, "sid", sid)
        cols = {"sid": "id", "pos": "numerical"} | {self.alias[c]: t for c, t in self.sdtypes.items()}
        md = _metadata(cols, sequence_key="sid", sequence_index="pos")
        _seed_everything(seed)
        with _quiet():
            synth = PARSynthesizer(md, context_columns=[self.alias[c] for c in self.context],
                                   epochs=self.epochs, cuda=False, verbose=False)
            synth.fit({"t": body})
        self.synth = synth

    def sample(self, sessions: int, seed: int) -> pd.DataFrame:
        _seed_everything(seed)
        with _quiet():
            with contextlib.suppress(AttributeError):
                self.synth._context_synthesizer._set_random_state(seed)
            raw = self.synth.sample_sequences(sessions)
        t = raw["t"] if isinstance(raw, dict) else raw
        t = t.sort_values(["sid", "pos"], kind="mergesort").reset_index(drop=True)
        out = pd.DataFrame({"_sid": t["sid"].astype(str)})
        for c, a in self.alias.items():
            col = t[a]
            out[c] = pd.to_datetime(col).dt.tz_localize("UTC") if self.sdtypes[c] == "datetime" else col
        return out


@dataclass
class FittedModel:
    """Everything needed to sample again: saved as `synthesizer.pkl` (checksum in the manifest)."""

    format: str
    synthesizer: str
    plan: ColumnPlan
    sessions_model: StratifiedModel | None
    turns_model: StratifiedModel | None
    sequence_model: SequenceModel | None
    rare: dict[str, int]
    """Category values merged into `(other)`, per column: how many (never the values, which
    are the rare, identifying ones)."""
    seed: int
    k: int
    source_sample_sha256: str
    holdout: float
    max_sessions_per_user: int | None
    length_hint: float
    """Mean turns per training session (to size `rows:` requests)."""
    users_sessions: list[int]
    """Sessions per training user (capped), resampled to group synthetic sessions into users."""
    package_version: str = __version__
    sdv_version: str = ""
    fit_seconds: float = 0.0


def stratify_keys(spec: SdvSpec, plan: ColumnPlan) -> list[str]:
    """The spec's `stratify` columns, or by default intent and thumb for gaussian_copula."""
    if spec.stratify is None:
        wanted = ["intent", "feedback.thumb"] if spec.synthesizer == "gaussian_copula" else []
    else:
        wanted = list(spec.stratify)
    return [c for c in wanted if plan.sdtypes.get(c) in ("categorical", "boolean")]


def fit(train: pd.DataFrame, plan: ColumnPlan, spec: SdvSpec, *, seed: int,
        rare: dict[str, set[Any]], sample_sha: str) -> FittedModel:
    """Fit the session and turn models (or PAR) on the training rows."""
    import sdv

    t0 = time.perf_counter()
    sessions_model = turns_model = None
    sequence_model = None
    keys = stratify_keys(spec, plan)
    if spec.synthesizer == "par":
        sequence_model = SequenceModel(plan, spec)
        sequence_model.fit(train, seed)
    else:
        sess = session_table(train, plan)
        s_types = {c: plan.sdtypes[c] for c in plan.session_cols}
        if sess[N_TURNS].nunique() > 1:
            s_types[N_TURNS] = "numerical"
        if plan.has_timestamps:
            s_types[START] = "datetime"
        if s_types:
            sessions_model = StratifiedModel("sessions", s_types, spec,
                                             [k for k in keys if k in plan.session_cols])
            users = train.groupby("session_id", sort=False)["user_id"].first().reset_index(drop=True)
            sessions_model.fit(sess[list(s_types)], users, seed)
        if plan.turn_cols or (sess[N_TURNS].max() > 1):
            turns = turn_table(train, plan)
            t_types: dict[str, str] = {}
            if turns[POSITION].nunique() > 1:
                t_types[POSITION] = "numerical"
                t_types[IS_LAST] = "boolean"
            if plan.has_timestamps and turns[GAP].notna().any():
                t_types[GAP] = "numerical"
            if plan.persona_key:
                t_types["persona"] = "categorical"
            t_types.update({c: plan.sdtypes[c] for c in plan.turn_cols})
            if plan.turn_cols or GAP in t_types:
                turns_model = StratifiedModel("turns", t_types, spec,
                                              [k for k in keys if k in plan.turn_cols])
                turns_model.fit(turns[list(t_types)], _ordered(train)["user_id"], seed + 1)
    per_user = train.drop_duplicates(["user_id", "session_id"]).groupby("user_id").size()
    return FittedModel(
        format=MODEL_FORMAT, synthesizer=spec.synthesizer, plan=plan,
        sessions_model=sessions_model, turns_model=turns_model, sequence_model=sequence_model,
        rare={c: len(v) for c, v in rare.items()}, seed=seed, k=spec.k, source_sample_sha256=sample_sha, holdout=spec.holdout,
        max_sessions_per_user=spec.max_sessions_per_user,
        length_hint=float(train.groupby("session_id").size().mean()),
        users_sessions=sorted(per_user.astype(int).tolist()),
        sdv_version=getattr(sdv, "__version__", ""), fit_seconds=round(time.perf_counter() - t0, 3),
    )


# --------------------------------------------------------------------------- sampling
def _bucket(position: np.ndarray) -> np.ndarray:
    return np.minimum(position, _MATCH_POSITIONS)


def _assign_turns(slots: pd.DataFrame, pool: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """For each slot, the index of a distinct pool row matching on `keys`, relaxing the keys
    from the right when a bucket runs dry; -1 when the pool is exhausted."""
    chosen = np.full(len(slots), -1, dtype=np.int64)
    free = np.ones(len(pool), dtype=bool)
    for level in range(len(keys), -1, -1):
        ks = keys[:level]
        todo = np.flatnonzero(chosen < 0)
        if len(todo) == 0:
            break
        avail = np.flatnonzero(free)
        if len(avail) == 0:
            break
        if not ks:
            take = min(len(todo), len(avail))
            chosen[todo[:take]] = avail[:take]
            free[avail[:take]] = False
            break
        pk = pool.iloc[avail][ks].astype(str).agg("\x1f".join, axis=1).to_numpy()
        sk = slots.iloc[todo][ks].astype(str).agg("\x1f".join, axis=1).to_numpy()
        buckets: dict[str, list[int]] = {}
        for i, key in zip(avail.tolist(), pk.tolist(), strict=True):
            buckets.setdefault(key, []).append(i)
        cursor: dict[str, int] = {}
        for s, key in zip(todo.tolist(), sk.tolist(), strict=True):
            rows = buckets.get(key)
            if not rows:
                continue
            j = cursor.get(key, 0)
            if j < len(rows):
                chosen[s] = rows[j]
                free[rows[j]] = False
                cursor[key] = j + 1
    return chosen


def sample_sessions(model: FittedModel, *, sessions: int | None, rows: int | None, seed: int
                    ) -> pd.DataFrame:
    """Synthetic interactions: `_session` index, `_position`, timestamps and modelled columns."""
    plan = model.plan
    if model.sequence_model is not None:
        return _sample_par(model, sessions=sessions, rows=rows, seed=seed)
    want_rows = rows
    n_sess = sessions if sessions is not None else max(1, math.ceil((rows or 1) / model.length_hint * 1.25) + 5)
    sess = _sample_session_rows(model, n_sess, seed)
    while want_rows is not None and int(sess[N_TURNS].sum()) < want_rows:
        more = _sample_session_rows(model, max(10, n_sess // 2), seed + len(sess) + 7)
        sess = pd.concat([sess, more], ignore_index=True)
    if want_rows is not None:
        cum = np.cumsum(sess[N_TURNS].to_numpy())
        last = int(np.searchsorted(cum, want_rows))
        sess = sess.iloc[: last + 1].copy()
        sess.iloc[-1, sess.columns.get_loc(N_TURNS)] = want_rows - (int(cum[last - 1]) if last else 0)
    n_turns = sess[N_TURNS].to_numpy(dtype=np.int64)
    session_idx = np.repeat(np.arange(len(sess)), n_turns)
    starts = np.concatenate([[0], np.cumsum(n_turns)[:-1]])
    position = np.arange(int(n_turns.sum())) - np.repeat(starts, n_turns)
    slots = pd.DataFrame({"_session": session_idx, POSITION: position,
                          IS_LAST: position == np.repeat(n_turns, n_turns) - 1})
    for c in plan.session_cols:
        slots[c] = np.repeat(sess[c].to_numpy(dtype=object), n_turns)
    gap = np.zeros(len(slots))
    if model.turns_model is not None:
        need = len(slots)
        pool = model.turns_model.sample(need * 3 + 200, seed + 101)
        keys = ["_bucket"]
        if IS_LAST in pool.columns:
            keys.append(IS_LAST)
        if plan.persona_key:
            keys.append("persona")
        pool["_bucket"] = _bucket(pd.to_numeric(pool.get(POSITION, 0)).to_numpy(dtype=np.int64)
                                  if POSITION in pool.columns else np.zeros(len(pool), np.int64))
        slots["_bucket"] = _bucket(position)
        chosen = _assign_turns(slots, pool, keys)
        extra = 0
        while (chosen < 0).any():  # pool exhausted (rare): sample more and assign the rest
            extra += 1
            pool2 = model.turns_model.sample(int((chosen < 0).sum()) * 3 + 200, seed + 101 + extra)
            pool2["_bucket"] = _bucket(pd.to_numeric(pool2.get(POSITION, 0)).to_numpy(dtype=np.int64)
                                       if POSITION in pool2.columns else np.zeros(len(pool2), np.int64))
            offset = len(pool)
            pool = pd.concat([pool, pool2], ignore_index=True)
            rest = np.flatnonzero(chosen < 0)
            sub = _assign_turns(slots.iloc[rest].reset_index(drop=True),
                                pool2.reset_index(drop=True), keys)
            chosen[rest] = np.where(sub >= 0, sub + offset, -1)
        picked = pool.iloc[chosen].reset_index(drop=True)
        for c in plan.turn_cols:
            slots[c] = picked[c].to_numpy()
        if GAP in picked.columns:
            gap = pd.to_numeric(picked[GAP], errors="coerce").to_numpy(dtype="float64")
            fill = np.nanmedian(gap) if np.isfinite(gap).any() else 0.0
            gap = np.where(np.isfinite(gap), gap, fill)
        slots = slots.drop(columns=["_bucket"])
    if plan.has_timestamps and START in sess.columns:
        gap = np.where(position == 0, 0.0, np.maximum(gap, 0.0))
        offs = pd.Series(gap).groupby(session_idx).cumsum().to_numpy()
        start = pd.to_datetime(sess[START], utc=True).to_numpy()
        slots["timestamp"] = pd.to_datetime(np.repeat(start, n_turns), utc=True) + pd.to_timedelta(
            offs, unit="s")
    return slots


def _sample_session_rows(model: FittedModel, n: int, seed: int) -> pd.DataFrame:
    if model.sessions_model is not None:
        sess = model.sessions_model.sample(n, seed)
    else:
        sess = pd.DataFrame(index=range(n))
    if N_TURNS not in sess.columns:
        sess[N_TURNS] = int(round(model.length_hint)) or 1
    sess[N_TURNS] = pd.to_numeric(sess[N_TURNS], errors="coerce").fillna(1).round().clip(lower=1
                                                                                         ).astype("int64")
    return sess.reset_index(drop=True)


def _sample_par(model: FittedModel, *, sessions: int | None, rows: int | None, seed: int
                ) -> pd.DataFrame:
    seq = model.sequence_model
    assert seq is not None
    plan = model.plan
    n = sessions if sessions is not None else max(1, math.ceil((rows or 1) / model.length_hint * 1.25) + 5)
    t = seq.sample(n, seed)
    while rows is not None and len(t) < rows:
        more = seq.sample(max(10, n // 2), seed + len(t) + 7)
        more["_sid"] = "m" + more["_sid"]
        t = pd.concat([t, more], ignore_index=True)
    codes, _ = pd.factorize(t["_sid"])
    t["_session"] = codes
    t = t.sort_values(["_session"], kind="mergesort").reset_index(drop=True)
    if rows is not None:
        t = t.iloc[:rows].copy()
    t[POSITION] = t.groupby("_session").cumcount()
    size = t.groupby("_session")["_session"].transform("size")
    t[IS_LAST] = t[POSITION] == size - 1
    # context columns are constant per session by construction of PAR's context model
    for c in plan.session_cols:
        t[c] = t.groupby("_session")[c].transform("first")
    if plan.has_timestamps:
        gap = pd.to_numeric(t[GAP], errors="coerce").fillna(0.0).clip(lower=0).to_numpy()
        gap = np.where(t[POSITION].to_numpy() == 0, 0.0, gap)
        offs = pd.Series(gap).groupby(t["_session"].to_numpy()).cumsum().to_numpy()
        start = pd.to_datetime(t.groupby("_session")[START].transform("first"), utc=True)
        t["timestamp"] = start + pd.to_timedelta(offs, unit="s")
    return t.drop(columns=[c for c in ("_sid", START, GAP) if c in t.columns])


# --------------------------------------------------------------------------- text fill
@dataclass
class TextPool:
    """Real prompts written by at least k distinct users, per intent (normalised form)."""

    by_intent: dict[str, tuple[list[str], np.ndarray]]
    normalized: frozenset[str]
    private: list[str]
    """Real prompts outside the pool (fewer than k users): never reused, near-dup checked."""
    k: int

    @property
    def size(self) -> int:
        return len(self.normalized)


def build_pool(frame: pd.DataFrame, k: int, intent: bool) -> TextPool:
    if "input" not in frame.columns:
        return TextPool({}, frozenset(), [], k)
    f = frame[frame["input"].notna() & (frame["input"].astype(str).str.strip() != "")]
    if f.empty:
        return TextPool({}, frozenset(), [], k)
    texts = f["input"].astype(str)
    norm = texts.map(normalize_text)
    key = f["intent"].astype(object).where(f["intent"].notna(), "*").astype(str) if intent and "intent" in f.columns else pd.Series("*", index=f.index)
    users = pd.DataFrame({"norm": norm, "user": f["user_id"].astype(str), "key": key, "text": texts})
    n_users = users.groupby("norm")["user"].nunique()
    pooled = set(n_users.index[n_users >= k])
    private = sorted(set(norm[~norm.isin(pooled)]))
    by_intent: dict[str, tuple[list[str], np.ndarray]] = {}
    sub = users[users["norm"].isin(pooled)]
    if not sub.empty:
        # representative form: the raw text most users wrote for that normalised text
        rep = (sub.groupby(["norm", "text"])["user"].nunique().reset_index()
               .sort_values(["norm", "user", "text"], ascending=[True, False, True])
               .drop_duplicates("norm").set_index("norm")["text"])
        weights = sub.groupby(["key", "norm"])["user"].nunique().reset_index()
        for kk, g in weights.groupby("key", sort=True):
            g = g.sort_values("norm")
            w = g["user"].to_numpy(dtype="float64")
            by_intent[str(kk)] = ([str(rep[n]) for n in g["norm"]], w / w.sum())
    return TextPool(by_intent, frozenset(pooled), private, k)


def fill_texts(table: pd.DataFrame, pool: TextPool, spec: SdvSpec, plan: ColumnPlan, seed: int
               ) -> tuple[list[str], list[str]]:
    """Text of each synthetic turn and where it came from (pool / template / placeholder)."""
    from faker import Faker

    rng = np.random.default_rng([seed, 41])
    faker = Faker()
    faker.seed_instance(seed)
    env = _jinja()
    compiled = {k: [env.from_string(t) for t in v] for k, v in spec.templates.items()}
    placeholder = env.from_string(spec.placeholder) if spec.placeholder else None
    intents = table["intent"].astype(object).where(table["intent"].notna(), "*").astype(str).tolist() \
        if "intent" in table.columns else ["*"] * len(table)
    texts: list[str] = []
    sources: list[str] = []
    records = table.to_dict("records")
    for i, intent in enumerate(intents):
        done = False
        for src in spec.fill:
            if src == "pool":
                cands = pool.by_intent.get(intent) or (pool.by_intent.get("*") if "intent" not in table.columns else None)
                if cands:
                    j = int(rng.choice(len(cands[0]), p=cands[1]))
                    texts.append(cands[0][j])
                    sources.append("pool")
                    done = True
                    break
            elif src == "templates":
                options = compiled.get(intent) or compiled.get("*")
                if options:
                    tpl = options[int(rng.integers(len(options)))]
                    texts.append(_render(tpl, records[i], faker, plan, f"templates.{intent}"))
                    sources.append("template")
                    done = True
                    break
        if not done:
            texts.append(_render(placeholder, records[i], faker, plan, "placeholder")
                         if placeholder is not None else "")
            sources.append("placeholder")
    return texts, sources


def _render(tpl: Any, row: dict[str, Any], faker: Any, plan: ColumnPlan, where: str) -> str:
    fields = {k: (None if _isna(v) else v) for k, v in row.items() if not str(k).startswith("_")}
    extra = {k[len("extra."):]: v for k, v in fields.items() if k.startswith("extra.")}
    ctx = {"intent": fields.get("intent"), "persona": fields.get("persona"),
           "locale": fields.get("locale"), "turn": fields.get("turn"), "extra": extra,
           "fields": fields, "faker": faker}
    try:
        return str(tpl.render(**ctx))
    except Exception as e:  # jinja2 errors: undefined variables, sandbox violations
        raise ConfigError(f"{where}: template failed: {e.__class__.__name__}: {e}") from None


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- the run
@dataclass
class SdvResult:
    """A finished synthesis, before anything is written."""

    spec: SdvSpec
    loaded: LoadedSpec
    source: Source
    model: FittedModel
    synthetic: pd.DataFrame
    """Synthetic interactions: ids, turn, timestamp, modelled columns, input, text_source."""
    real_train: pd.DataFrame
    real_holdout: pd.DataFrame
    fidelity: dict[str, Any]
    privacy: PrivacyReport
    model_bytes: bytes | None
    model_sha256: str
    cap_stats: dict[str, int]
    seed: int
    timings: dict[str, float]
    notes: list[str]


def synthesize(loaded: LoadedSpec, *, seed: int | None = None, sessions: int | None = None,
               rows: int | None = None, progress: bool | None = None) -> SdvResult:
    """Fit (or load), sample, fill texts and measure; writes nothing."""
    spec = loaded.spec
    seed = spec.seed if seed is None else seed
    if sessions is None and rows is None:
        sessions, rows = spec.sessions, spec.rows
    where = str(loaded.path)
    timings: dict[str, float] = {}
    notes: list[str] = []
    with progress_bar(total=6, description="sdv", enabled=progress) as bar:
        t = time.perf_counter()
        source = load_source(_resolve(loaded.path, spec.source))
        frame, cap_stats = cap_users(source.frame, spec.max_sessions_per_user, seed)
        plan = plan_columns(frame, spec, source.mapped, where)
        if not plan.sdtypes and not plan.has_timestamps and frame.groupby("session_id").size().nunique() <= 1:
            raise DataError(f"{source.path}: nothing to model: every mapped column is empty or "
                            "constant", hint="map more log columns (or `extra: all`) at ingest")
        rare = merge_rare(frame, plan, spec.k) if spec.merge_rare_categories else {}
        plan.rare_merged = {c: len(v) for c, v in rare.items()}
        plan.constants.update({c: OTHER for c in rare if c in plan.constants})
        frame = apply_rare(frame, rare)
        timings["prepare_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="prepare")

        t = time.perf_counter()
        model_bytes: bytes | None
        if spec.load_synthesizer:
            model, blob, model_sha = _load_model(loaded)
            model_bytes = blob if spec.save_synthesizer else None
            if model.source_sample_sha256 != source.sample_sha256:
                notes.append("the loaded synthesizer was fitted on another sample: the holdout "
                             "split cannot be reproduced, holdout checks are not evaluated")
                train, holdout = frame, frame.iloc[0:0]
            else:
                train, holdout = split_holdout(frame, model.holdout, model.seed)
            plan = model.plan
        else:
            train, holdout = split_holdout(frame, spec.holdout, seed)
            if train.empty or len(train) < 2:
                raise DataError(f"{source.path}: too few consented rows to fit ({len(frame)})",
                                hint="ingest more data")
            model = fit(train, plan, spec, seed=seed, rare=rare, sample_sha=source.sample_sha256)
            model_bytes = _dump_model(model) if spec.save_synthesizer else None
            model_sha = hashlib.sha256(model_bytes).hexdigest() if model_bytes else ""
        timings["fit_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="fit")

        t = time.perf_counter()
        if sessions is None and rows is None:
            sessions = int(train["session_id"].nunique())
        slots = sample_sessions(model, sessions=sessions, rows=rows, seed=seed + 1000)
        synthetic = _finish_table(slots, model, seed)
        timings["sample_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="sample")

        t = time.perf_counter()
        pool = build_pool(frame, spec.k, "intent" in plan.sdtypes)
        texts, sources = fill_texts(synthetic, pool, spec, plan, seed)
        synthetic["input"] = texts
        synthetic["text_source"] = sources
        timings["fill_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="fill")

        t = time.perf_counter()
        sdtypes = compared_sdtypes(plan)
        real_train = interaction_table(train, plan)
        real_holdout = interaction_table(holdout, plan)
        fid = fidelity_report(real_train, synthetic, sdtypes,
                              reference=real_holdout if len(real_holdout) else None)
        timings["fidelity_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="fidelity")

        t = time.perf_counter()
        priv = privacy_report(_privacy_inputs(synthetic, real_train, real_holdout, sdtypes, pool,
                                              spec, source, seed), spec.privacy)
        timings["privacy_s"] = round(time.perf_counter() - t, 3)
        bar.advance(1, step="privacy")
    return SdvResult(spec=spec, loaded=loaded, source=source, model=model, synthetic=synthetic,
                     real_train=real_train, real_holdout=real_holdout, fidelity=fid, privacy=priv,
                     model_bytes=model_bytes, model_sha256=model_sha, cap_stats=cap_stats,
                     seed=seed, timings=timings, notes=notes)


def _finish_table(slots: pd.DataFrame, model: FittedModel, seed: int) -> pd.DataFrame:
    """Synthetic ids, turn numbers, constants; columns in a stable order."""
    plan = model.plan
    sess = slots["_session"].to_numpy()
    n_sessions = int(sess.max()) + 1 if len(sess) else 0
    users = _group_users(model, n_sessions, seed, slots)
    out = pd.DataFrame({
        "interaction_id": [f"sdv{seed}-s{s:06d}-t{p}" for s, p in zip(sess, slots[POSITION], strict=True)],
        "session_id": [f"sdv{seed}-s{s:06d}" for s in sess],
        "user_id": [f"sdv{seed}-u{users[s]:06d}" for s in sess],
        "turn": slots[POSITION].to_numpy(dtype=np.int64) + plan.turn_offset,
    })
    if "timestamp" in slots.columns:
        out["timestamp"] = pd.to_datetime(slots["timestamp"], utc=True).dt.floor("us")
    for c in plan.sdtypes:
        out[c] = slots[c].to_numpy() if c in slots.columns else None
    for c, v in plan.constants.items():
        if c not in out.columns and c not in ID_COLUMNS and c not in TEXT_COLUMNS:
            out[c] = v
    for c, t in plan.sdtypes.items():
        if t == "boolean":
            out[c] = out[c].map(lambda v: None if _isna(v) else bool(v == True or v == "True"))  # noqa: E712
    return out


def _group_users(model: FittedModel, n_sessions: int, seed: int, slots: pd.DataFrame) -> np.ndarray:
    """Assign synthetic sessions to synthetic users, with sessions-per-user drawn from the
    training users' (capped) distribution; sessions of one persona stay together."""
    rng = np.random.default_rng([seed, 53])
    sizes: list[int] = []
    counts = np.asarray(model.users_sessions or [1])
    while sum(sizes) < n_sessions:
        sizes.append(int(counts[rng.integers(len(counts))]))
    order = np.arange(n_sessions)
    if model.plan.persona_key and "persona" in slots.columns:
        persona = slots.groupby("_session")["persona"].first().astype(str).reindex(order).to_numpy()
        order = np.lexsort((order, persona))
    users = np.empty(n_sessions, dtype=np.int64)
    pos = 0
    for u, size in enumerate(sizes):
        users[order[pos:pos + size]] = u
        pos += size
        if pos >= n_sessions:
            break
    return users


def _privacy_inputs(synthetic: pd.DataFrame, real_train: pd.DataFrame, real_holdout: pd.DataFrame,
                    sdtypes: dict[str, str], pool: TextPool, spec: SdvSpec, source: Source,
                    seed: int) -> PrivacyInputs:
    from synthloop.privacy import Scrubber

    values: list[str] = []
    for c, t in sdtypes.items():
        if t == "categorical" and c in synthetic.columns:
            values.extend(str(v) for v in synthetic[c].dropna().unique())
    pii_replace = getattr(source.report, "pii_replace", "placeholder")
    finder = None
    note = ""
    if pii_replace == "placeholder":
        finder = Scrubber().find
    else:
        note = (f"the ingest replaced PII with `{pii_replace}` surrogates, which look like PII: "
                "the PII check cannot tell them apart and is not evaluated")
    return PrivacyInputs(
        training=real_train, synthetic=synthetic, holdout=real_holdout if len(real_holdout) else None,
        group_column="user_id",
        sdtypes=sdtypes, texts=synthetic["input"].astype(str).tolist(),
        pool_texts=pool.normalized, private_texts=pool.private, values=values,
        canaries=list(spec.canaries), pii_finder=finder, pii_note=note, seed=seed,
    )


# --------------------------------------------------------------------------- model files
def _dump_model(model: FittedModel) -> bytes:
    import cloudpickle

    with _quiet():
        return bytes(cloudpickle.dumps(model))


def _load_model(loaded: LoadedSpec) -> tuple[FittedModel, bytes, str]:
    spec = loaded.spec
    assert spec.load_synthesizer is not None
    path = _resolve(loaded.path, spec.load_synthesizer)
    where = f"{loaded.path}: load_synthesizer"
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.__class__.__name__}",
                          hint="check the path") from None
    expected = spec.checksum
    if expected is None:
        manifest = path.parent / "manifest.json"
        try:
            details = json.loads(manifest.read_text())["provenance"]["details"]
            expected = str(details["synthesizer_sha256"]).removeprefix("sha256:")
        except (OSError, KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: no checksum: give `checksum:` (sha256 of {path.name}) or "
                              f"keep the manifest.json that was written beside it") from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: checksum mismatch: the file's sha256 is {actual[:16]}..., the "
                        f"expected one {expected[:16]}...; refusing to load it",
                        hint="a pickle runs code when loaded: only load files you wrote")
    import pickle

    with _quiet():
        model = pickle.loads(blob)  # noqa: S301 - checksum verified above
    if not isinstance(model, FittedModel) or model.format != MODEL_FORMAT:
        raise DataError(f"{path}: not a synthloop sdv model ({MODEL_FORMAT})")
    return model, blob, actual


# --------------------------------------------------------------------------- writing
def _feedback(row: dict[str, Any]) -> dict[str, Any]:
    def num(name: str, lo: float = 0.0) -> float | None:
        v = row.get(name)
        if _isna(v) or v is None:
            return None
        return max(float(v), lo)

    def flag(name: str) -> bool:
        v = row.get(name)
        return bool(v) if not _isna(v) and v is not None else False

    thumb = row.get("feedback.thumb")
    thumb = thumb if thumb in ("up", "down") else "none"
    rating = row.get("feedback.rating")
    rating_v = None if _isna(rating) or rating is None else int(min(5, max(1, round(float(rating)))))
    clicks = row.get("feedback.clicks")
    return {
        "thumb": thumb,
        "rating": rating_v,
        "comment": None,
        "clicks": 0 if _isna(clicks) or clicks is None else max(0, int(round(float(clicks)))),
        "read_time_s": num("feedback.read_time_s"),
        "watch_time_s": num("feedback.watch_time_s"),
        "copied": flag("feedback.copied"),
        "regenerated": flag("feedback.regenerated"),
        "edited": flag("feedback.edited"),
        "abandoned": flag("feedback.abandoned"),
        "feedback_delay_s": num("feedback.feedback_delay_s"),
    }


def _tag_columns(result: SdvResult) -> list[str]:
    plan = result.model.plan
    cols = []
    for c, t in plan.sdtypes.items():
        if c.startswith("feedback."):
            continue
        if t in ("categorical", "boolean") or t == "numerical" and c.startswith("extra.") and result.synthetic[c].nunique() <= 20:
            cols.append(c)
    return cols


def _tag_value(v: Any) -> str | None:
    if _isna(v) or v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def to_batch(result: SdvResult) -> pa.RecordBatch:
    """The synthetic interactions as evalset rows."""
    syn = result.synthetic
    spec = result.spec
    plan = result.model.plan
    tag_cols = _tag_columns(result)
    rows = syn.to_dict("records")
    history: list[list[dict[str, str]]] = []
    prev_session = None
    running: list[dict[str, str]] = []
    for r in rows:
        if r["session_id"] != prev_session:
            running = []
            prev_session = r["session_id"]
        history.append(list(running))
        running.append({"role": "user", "content": r["input"]})
        if spec.history_reply is not None:
            running.append({"role": "assistant", "content": spec.history_reply})
    tags = []
    for r in rows:
        t = []
        for c in tag_cols:
            v = _tag_value(r.get(c))
            if v is not None:
                t.append({"key": c.removeprefix("extra."), "value": v})
        t.append({"key": "text_source", "value": r["text_source"]})
        tags.append(t)
    columns: dict[str, Any] = {
        "case_id": syn["interaction_id"].tolist(),
        "session_id": syn["session_id"].tolist(),
        "user_id": syn["user_id"].tolist(),
        "turn": syn["turn"].astype("int64").tolist(),
        "history": history,
        "input": syn["input"].tolist(),
        "tags": tags,
    }
    if "timestamp" in syn.columns:
        columns["timestamp"] = pa.array(pd.to_datetime(syn["timestamp"], utc=True)).cast(
            pa.timestamp("us", tz="UTC"))
    if "latency_ms" in syn.columns:
        lat = pd.to_numeric(syn["latency_ms"], errors="coerce").clip(lower=0)
        columns["reply_latency_ms"] = [None if pd.isna(v) else float(v) for v in lat]
    if plan.feedback:
        columns["expected_feedback"] = [_feedback(r) for r in rows]
    return columns_to_batch(columns)


def _synthetic_parquet(result: SdvResult) -> bytes:
    import pyarrow.parquet as pq

    frame = result.synthetic.copy()
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: None if _isna(v) else v)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def consent_summary(result: SdvResult, train_rows: int, holdout_rows: int) -> dict[str, Any]:
    rep = result.source.report
    return {
        "use": rep.consent.use,
        "basis": rep.consent.basis,
        "assumed": rep.consent.assumed,
        "excluded_reasons": dict(rep.consent.excluded_reasons),
        "counts": rep.counts.model_dump(),
        "user_cap": {"max_sessions_per_user": result.spec.max_sessions_per_user, **result.cap_stats},
        "fit": {"training_rows": train_rows, "holdout_rows": holdout_rows,
                "holdout_share_of_users": result.model.holdout},
    }


def write(result: SdvResult, out: Path, *, name: str | None = None,
          allow_privacy_failure: bool = False) -> EvalsetManifest:
    """Apply the privacy gate and write the evalset version (atomically)."""
    priv = result.privacy
    notes = list(result.notes)
    if not priv.passed:
        failed = "; ".join(f"{c.name} {_fmt(c.value)} (needs {c.op} {_fmt(c.threshold)})"
                           for c in priv.failed)
        if not allow_privacy_failure:
            raise PrivacyGateError(f"privacy gate failed: {failed}; nothing was written",
                                   hint="see the privacy: thresholds in docs/sdv.md, or pass "
                                        "--allow-privacy-failure to write it marked as failed")
        notes.append(f"PRIVACY GATE FAILED ({failed}); written because --allow-privacy-failure "
                     "was given")
    spec = result.spec
    plan = result.model.plan
    details: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "synthesizer": result.model.synthesizer,
        "marginals": spec.marginals if result.model.synthesizer == "gaussian_copula" else None,
        "epochs": spec.epochs if result.model.synthesizer != "gaussian_copula" else None,
        "max_sessions_per_user": spec.max_sessions_per_user,
        "k": spec.k,
        "holdout": result.model.holdout,
        "synthesizer_file": SYNTHESIZER_FILE if result.model_bytes else None,
        "synthesizer_sha256": result.model_sha256 or None,
        "synthesizer_loaded_from": spec.load_synthesizer,
        "source_dir": str(result.source.path),
        "source_log_sha256": result.source.report.source.sha256,
        "sample_sha256": result.source.sample_sha256,
        "columns": {"session": plan.session_cols, "turn": plan.turn_cols,
                    "constant": sorted(plan.constants), "dropped": plan.dropped,
                    "rare_categories_merged": plan.rare_merged},
        "sdv_version": result.model.sdv_version,
        "timings": result.timings,
        "text_sources": result.synthetic["text_source"].value_counts().to_dict(),
        "quality_score": result.fidelity["quality"]["score"],
    }
    prov = Provenance(generator="sdv", spec_path=str(result.loaded.path),
                      spec_hash=result.loaded.spec_hash, seed=result.seed,
                      source_data_hash=result.source.sample_sha256, details=details)
    privacy = priv.summary() | {"allowed_failure": (not priv.passed) and allow_privacy_failure,
                                "report": PRIVACY_FILE}
    with EvalsetWriter(out, provenance=prov, name=name or spec.name) as w:
        w.write_batch(to_batch(result))
        w.extra_files[FIDELITY_FILE] = result.fidelity
        w.extra_files[PRIVACY_FILE] = priv.model_dump(mode="json")
        w.extra_files[SYNTHETIC_FILE] = _synthetic_parquet(result)
        if result.model_bytes is not None:
            w.extra_files[SYNTHESIZER_FILE] = result.model_bytes
        return w.close(
            sessions=int(result.synthetic["session_id"].nunique()),
            interactions=len(result.synthetic),
            consent_summary=consent_summary(result, len(result.real_train), len(result.real_holdout)),
            privacy=privacy,
            notes=notes,
        )


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}"


def _print_summary(result: SdvResult, manifest: EvalsetManifest) -> None:
    q = result.fidelity["quality"]
    p = result.privacy
    hq = (result.fidelity.get("holdout_quality") or {}).get("score")
    parts = [f"quality {_fmt(q['score'])}" + (f" (held-out real: {_fmt(hq)})" if hq else "")]
    m = p.metrics
    parts.append(f"exact copies {_fmt(m['exact_copies']['rate'])}")
    over = (m.get("dcr_overfitting_protection") or {}).get("score")
    parts.append(f"DCR overfitting {_fmt(over)}")
    parts.append(f"DCR/holdout {_fmt(m.get('dcr_holdout_ratio'))}")
    print(f"sdv: {result.model.synthesizer} fit {result.timings.get('fit_s', 0):.1f}s, sample "
          f"{result.timings.get('sample_s', 0):.1f}s; " + ", ".join(parts)
          + f"; privacy gate {'passed' if p.passed else 'FAILED'}", file=sys.stderr)


def run_spec(spec_path: Path, data: dict[str, Any], out: Path, options: GenerateOptions
             ) -> EvalsetManifest | None:
    """`synthloop generate SPEC --out DIR` for `kind: sdv` specs."""
    loaded = load_spec(spec_path, data)
    spec = loaded.spec
    seed = spec.seed if options.seed is None else options.seed
    if seed < 0:
        raise ConfigError(f"--seed: must be 0 or more (got {seed})")
    sessions, rows = spec.sessions, spec.rows
    if options.sessions is not None:
        if options.sessions < 1:
            raise ConfigError(f"--sessions: must be 1 or more (got {options.sessions})")
        sessions, rows = options.sessions, None
    if options.n is not None:
        if options.n < 1:
            raise ConfigError(f"--n: must be 1 or more (got {options.n})")
        sessions, rows = None, options.n
    if options.dry_run:
        source = load_source(_resolve(loaded.path, spec.source))
        plan = plan_columns(source.frame, spec, source.mapped, str(loaded.path))
        print(f"{loaded.path}: valid sdv spec; source {source.path} "
              f"({len(source.frame):,} consented rows, {source.frame['user_id'].nunique():,} users)")
        print(f"  would fit {spec.synthesizer} on session columns {plan.session_cols or '-'} and "
              f"turn columns {plan.turn_cols or '-'}; sample "
              f"{f'{sessions:,} sessions' if sessions else f'{rows:,} rows' if rows else 'as many sessions as the sample'}"
              f" with seed {seed} to {out}")
        print(f"  spec_hash {loaded.spec_hash}")
        return None
    check_new_version(out)
    result = synthesize(loaded, seed=seed, sessions=sessions, rows=rows, progress=options.progress)
    manifest = write(result, out, name=options.name, allow_privacy_failure=options.allow_privacy_failure)
    _print_summary(result, manifest)
    return manifest


__all__ = [
    "FIDELITY_FILE",
    "PRIVACY_FILE",
    "SYNTHESIZER_FILE",
    "SYNTHETIC_FILE",
    "ColumnPlan",
    "FittedModel",
    "LoadedSpec",
    "Marginal",
    "SdvResult",
    "SdvSpec",
    "Source",
    "load_source",
    "load_spec",
    "plan_columns",
    "run_spec",
    "synthesize",
    "write",
]
