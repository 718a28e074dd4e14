"""The feedback model: predict P(thumb up | input, reply) from interactions with thumbs.

This is the flywheel's turn from feedback to evaluation. Train on any evalset whose cases carry
`expected_feedback.thumb` in {up, down} and the `reply` the user saw (synthetic, or consented
real logs imported as an evalset); the model then scores any run as the metric
`thumb_up_pred` (the predicted probability that a user would give the reply a thumb up).

Features (all stateless, so the model file holds only numbers):

- hashed word 1-2 grams of the user's input and of the reply, hashed character 3-5 grams of
  the reply (sklearn `HashingVectorizer`: no vocabulary to store);
- hashed segment tags (`intent=refund`, `persona=novice`, ...) and coarse buckets of reply
  length and latency, so a linear model can learn non-linear effects;
- standardised numbers: reply and input length, latency (with a missing flag), word overlap
  between input and reply, turn index, history length.

A logistic regression on those features is calibrated on its own out-of-fold scores
(isotonic or Platt), then refitted on all rows. `model.json` holds the coefficients (sparse),
the hashing parameters, the calibration map, the training evalset's content hash and the
cross-validated metrics, plus a sha256 of the parameters so an edited or truncated file is
refused. No pickle.

    model = train_feedback_model(open_evalset("evalsets/support/v1"), FeedbackTrainConfig())
    model.save("models/thumbs")
    p = FeedbackModel.load("models/thumbs").predict(cases, replies, latencies)
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from synthloop import __version__
from synthloop.config import validate_data
from synthloop.errors import ConfigError, DataError
from synthloop.schema import EvalCase, Response, Score, Thumb

FORMAT = "synthloop-feedback-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
METRIC = "thumb_up_pred"
ECE_BINS = 15

_WORD_RE = re.compile(r"[a-z0-9']+")
LATENCY_EDGES_MS = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
LENGTH_EDGES_WORDS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
NUMERIC_FEATURES = (
    "log_reply_chars",
    "log_reply_words",
    "log_input_words",
    "log_latency_ms",
    "latency_missing",
    "input_coverage",
    "reply_jaccard",
    "turn",
    "history_turns",
    "reply_empty",
    "content_coverage",
    "context_coverage",
    "context_cosine",
)


# --------------------------------------------------------------------------- configuration
class HashedBlock(BaseModel):
    """One hashed text block of the feature vector."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """Block name (also the key of its coefficients in `model.json`)."""
    field: Literal["input", "reply", "tags", "tag_x_reply", "input_x_reply"]
    """Which text the block hashes: the user's input, the reply, the tag/bucket tokens, or
    tag x reply-word pairs (`intent=refund|refund`: lets a linear model learn which replies
    suit which segment), or pairs of content words of the input (with the previous user
    message) and of the reply (`refund|refund`: relevance of the reply to the question)."""
    analyzer: Literal["word", "char_wb"] = "word"
    """sklearn HashingVectorizer analyzer."""
    ngram_min: int = Field(default=1, ge=1, le=8)
    """Smallest n-gram length."""
    ngram_max: int = Field(default=2, ge=1, le=8)
    """Largest n-gram length."""
    n_features_log2: int = Field(default=16, ge=8, le=22)
    """The block has 2**n_features_log2 hashed columns."""


def default_blocks() -> list[HashedBlock]:
    return [
        HashedBlock(name="input_words", field="input", analyzer="word", ngram_min=1, ngram_max=2),
        HashedBlock(name="reply_words", field="reply", analyzer="word", ngram_min=1, ngram_max=2),
        HashedBlock(name="tags", field="tags", analyzer="word", ngram_min=1, ngram_max=1,
                    n_features_log2=12),
        HashedBlock(name="tag_x_reply", field="tag_x_reply", analyzer="word", ngram_min=1,
                    ngram_max=1, n_features_log2=16),
        HashedBlock(name="input_x_reply", field="input_x_reply", analyzer="word", ngram_min=1,
                    ngram_max=1, n_features_log2=18),
    ]


class FeedbackTrainConfig(BaseModel):
    """How to train a feedback model (`synthloop feedback train --config FILE`)."""

    model_config = ConfigDict(extra="forbid")

    C: float = Field(default=1.0, gt=0)
    """Inverse L2 regularisation strength of the logistic regression."""
    calibration: Literal["isotonic", "sigmoid", "auto"] = "auto"
    """Calibration map fitted on out-of-fold scores; `auto` = isotonic from 1,000 labelled
    rows, Platt (sigmoid) below."""
    folds: int = Field(default=5, ge=2, le=20)
    """Cross-validation folds for the out-of-fold scores the calibration is fitted on."""
    seed: int = 0
    """Seed of the fold split (recorded in `model.json`)."""
    use_tags: bool = True
    """Use the cases' segment tags (intent, persona, ...) as features."""
    ignore_tags: list[str] = Field(default_factory=lambda: ["quality", "consent"])
    """Tag keys never used as features. `quality` describes the logged reply, not the reply
    being scored (the rules generator sets it), so using it would leak the label."""
    use_latency: bool = True
    """Use reply latency as a feature. Turn off when the latencies you will score (e.g. a local
    reference model's) come from a different distribution than the training data's."""
    blocks: list[HashedBlock] = Field(default_factory=default_blocks)
    """Hashed text blocks (see `default_blocks`)."""
    min_rows: int = Field(default=50, ge=10)
    """Refuse to train on fewer labelled rows (thumb up/down with a reply) than this."""
    max_iter: int = Field(default=2000, ge=50)
    """Iteration cap of the logistic-regression solver."""


class FeedbackScorerConfig(BaseModel):
    """Scorer config for kind `feedback_model` (an entry of SCORERS.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = METRIC
    """Metric name written to the scores (default `thumb_up_pred`)."""
    kind: Literal["feedback_model"] = "feedback_model"
    """Scorer kind."""
    description: str | None = None
    """Free text recorded with the scorer's config in scores.json."""
    model: str
    """Model directory written by `synthloop feedback train` (relative to the config file)."""
    expect_evalset_hash: str | None = None
    """Refuse the model unless it was trained on the evalset with this content hash."""
    use_latency: bool | None = None
    """Override the model's latency feature: false scores every reply as if its latency were
    unknown (None = use what the model was trained with)."""


# --------------------------------------------------------------------------- features
def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _bucket(value: float, edges: Sequence[float]) -> int:
    for i, e in enumerate(edges):
        if value < e:
            return i
    return len(edges)


@dataclass
class FeatureRows:
    """Raw per-row inputs of the feature map."""

    inputs: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    latencies: list[float | None] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    history_turns: list[int] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    """The previous user message of the session ("" on a first turn)."""

    def __len__(self) -> int:
        return len(self.inputs)

    def without_tags(self, keys: Sequence[str]) -> FeatureRows:
        """The same rows with the tag keys `keys` removed."""
        if not keys:
            return self
        drop = set(keys)
        return FeatureRows(inputs=self.inputs, replies=self.replies,
                           tags=[{k: v for k, v in t.items() if k not in drop} for t in self.tags],
                           latencies=self.latencies, turns=self.turns,
                           history_turns=self.history_turns, previous=self.previous)

    def add(self, case: EvalCase, reply: str, latency_ms: float | None) -> None:
        prev = next((m.content for m in reversed(case.history) if m.role == "user"), "")
        self.previous.append(prev)
        self.inputs.append(case.input)
        self.replies.append(reply)
        self.tags.append(dict(case.tags))
        self.latencies.append(latency_ms)
        self.turns.append(case.turn)
        self.history_turns.append(sum(1 for m in case.history if m.role == "user"))


def _tag_text(tags: dict[str, str], reply: str, latency: float | None, use_tags: bool,
              use_latency: bool) -> str:
    toks: list[str] = []
    if use_tags:
        toks.extend(f"tag_{k}={v}".replace(" ", "_") for k, v in sorted(tags.items()))
    toks.append(f"reply_len_bucket={_bucket(float(len(reply.split())), LENGTH_EDGES_WORDS)}")
    if use_latency:
        if latency is None:
            toks.append("latency_bucket=missing")
        else:
            toks.append(f"latency_bucket={_bucket(latency, LATENCY_EDGES_MS)}")
    return " ".join(toks)


def _tag_reply_text(tags: dict[str, str], reply: str) -> str:
    words = sorted(set(_words(reply)))
    return " ".join(f"{k}={v}|{w}".replace(" ", "_") for k, v in sorted(tags.items())
                    for w in words)


MAX_PAIR_WORDS = 256
"""`input_x_reply` pairs at most this many distinct content words of each side (the first
ones, in order of appearance): the pairs grow with the product of the two sides, so two
3,000-word texts would make 9 million pairs (a 170 MB string and a 1 GB, 14 s prediction
for one row). Texts under the cap are unaffected."""


def _pair_text(previous: str, inp: str, reply: str) -> str:
    q = sorted(_first_content(f"{inp}\n{previous}", MAX_PAIR_WORDS))
    r = sorted(_first_content(reply, MAX_PAIR_WORDS))
    return " ".join(f"{a}|{b}" for a in q for b in r)


def _content_words(text: str) -> Iterable[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    for w in _words(text):
        if w in ENGLISH_STOP_WORDS or len(w) < 2:
            continue
        yield w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def _content(text: str) -> set[str]:
    """Content words (no stop words), lightly stemmed, for relevance features."""
    return set(_content_words(text))


def _first_content(text: str, limit: int) -> set[str]:
    """The first `limit` distinct content words of `text`."""
    out: dict[str, None] = {}
    for w in _content_words(text):
        if len(out) >= limit:
            break
        out.setdefault(w)
    return set(out)


def _numeric(rows: FeatureRows, use_latency: bool) -> np.ndarray:
    out = np.zeros((len(rows), len(NUMERIC_FEATURES)), dtype=np.float64)
    for i in range(len(rows)):
        inp, rep = rows.inputs[i], rows.replies[i]
        iw, rw = _words(inp), _words(rep)
        si, sr = set(iw), set(rw)
        ci, cr = _content(inp), _content(rep)
        cx = ci | _content(rows.previous[i]) if rows.previous else ci
        lat = rows.latencies[i] if use_latency else None
        out[i] = (
            math.log1p(len(rep)),
            math.log1p(len(rw)),
            math.log1p(len(iw)),
            math.log1p(lat) if lat is not None else 0.0,
            1.0 if lat is None else 0.0,
            len(si & sr) / len(si) if si else 0.0,
            len(si & sr) / len(si | sr) if si | sr else 0.0,
            float(rows.turns[i]),
            float(rows.history_turns[i]),
            1.0 if not rep.strip() else 0.0,
            len(ci & cr) / len(ci) if ci else 0.0,
            len(cx & cr) / len(cx) if cx else 0.0,
            len(cx & cr) / math.sqrt(len(cx) * len(cr)) if cx and cr else 0.0,
        )
    return out


def _vectorizer(block: HashedBlock) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    kwargs: dict[str, Any] = {
        "n_features": 2 ** block.n_features_log2,
        "analyzer": block.analyzer,
        "ngram_range": (block.ngram_min, block.ngram_max),
        "alternate_sign": False,
        "norm": "l2",
        "lowercase": True,
        "dtype": np.float64,
    }
    if block.field in ("tags", "tag_x_reply", "input_x_reply"):
        kwargs["token_pattern"] = r"\S+"
    return HashingVectorizer(**kwargs)


def _hashed(block: HashedBlock, rows: FeatureRows, use_tags: bool, use_latency: bool
            ) -> sp.csr_matrix:
    if block.field == "input":
        texts = rows.inputs
    elif block.field == "reply":
        texts = rows.replies
    elif block.field == "input_x_reply":
        texts = [_pair_text(p, i, r) for p, i, r in zip(rows.previous, rows.inputs, rows.replies,
                                                        strict=True)]
    elif block.field == "tag_x_reply":
        texts = [_tag_reply_text(t, r) if use_tags else "" for t, r in zip(
            rows.tags, rows.replies, strict=True)]
    else:
        texts = [_tag_text(t, r, lat, use_tags, use_latency)
                 for t, r, lat in zip(rows.tags, rows.replies, rows.latencies, strict=True)]
    return sp.csr_matrix(_vectorizer(block).transform(texts))


# --------------------------------------------------------------------------- metrics
@dataclass
class ReliabilityBin:
    lo: float
    hi: float
    count: int
    mean_pred: float
    mean_outcome: float


def reliability_bins(pred: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS
                     ) -> list[ReliabilityBin]:
    """Equal-width bins of predicted probability with their mean prediction and outcome.

    `outcome` may be 0/1 labels or true probabilities (then the bins compare with those)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(pred, edges[1:-1], right=False), 0, bins - 1)
    out: list[ReliabilityBin] = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append(ReliabilityBin(
            lo=float(edges[b]), hi=float(edges[b + 1]), count=n,
            mean_pred=float(pred[m].mean()) if n else float("nan"),
            mean_outcome=float(outcome[m].mean()) if n else float("nan"),
        ))
    return out


def expected_calibration_error(pred: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS
                               ) -> float:
    """ECE: the count-weighted mean |mean prediction - mean outcome| over equal-width bins."""
    pred = np.asarray(pred, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if pred.size == 0:
        return float("nan")
    total = 0.0
    for b in reliability_bins(pred, outcome, bins):
        if b.count:
            total += b.count * abs(b.mean_pred - b.mean_outcome)
    return total / pred.size


def brier_score(pred: np.ndarray, outcome: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred) - np.asarray(outcome)) ** 2))


def _auc(pred: np.ndarray, y: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, pred))


def _log_loss(pred: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(pred, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_metrics(pred: np.ndarray, y: np.ndarray, bins: int = ECE_BINS
                           ) -> dict[str, Any]:
    """Brier, ECE, AUC, log loss, base rate and mean prediction of predictions vs labels."""
    return {
        "n": int(pred.size),
        "base_rate": float(y.mean()) if y.size else None,
        "mean_pred": float(pred.mean()) if pred.size else None,
        "brier": brier_score(pred, y) if y.size else None,
        "ece": expected_calibration_error(pred, y, bins) if y.size else None,
        "ece_bins": bins,
        "auc": _auc(pred, y),
        "log_loss": _log_loss(pred, y) if y.size else None,
    }


# --------------------------------------------------------------------------- calibration
def _fit_calibration(scores: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        iso.fit(scores, y)
        # Each isotonic block's rate is k/n of its rows; a block of all-down (or all-up)
        # rows would predict exactly 0 (or 1). Shrink every block to (k + 0.5) / (n + 1)
        # (the Jeffreys estimate), then restore monotonicity.
        fitted = iso.predict(scores)
        ys = np.asarray(iso.y_thresholds_, dtype=np.float64)
        smoothed = ys.copy()
        for v in np.unique(ys):
            block = fitted == v
            n_b = int(block.sum())
            if n_b:
                smoothed[ys == v] = (float(y[block].sum()) + 0.5) / (n_b + 1.0)
        smoothed = np.maximum.accumulate(smoothed)
        return {"method": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in smoothed]}
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(scores.reshape(-1, 1), y)
    return {"method": "sigmoid", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def _apply_calibration(cal: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    if cal["method"] == "isotonic":
        x = np.asarray(cal["x"], dtype=np.float64)
        yv = np.asarray(cal["y"], dtype=np.float64)
        return np.clip(np.interp(scores, x, yv), 0.0, 1.0)
    z = cal["a"] * scores + cal["b"]
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- the model
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.8g}") for v in values]


@dataclass
class FeedbackModel:
    """A trained, calibrated feedback model (pure numbers; predicting needs no pickle)."""

    blocks: list[HashedBlock]
    use_tags: bool
    use_latency: bool
    ignore_tags: list[str]
    weights: dict[str, np.ndarray]
    """Dense coefficient vector per hashed block."""
    numeric_weights: np.ndarray
    numeric_mean: np.ndarray
    numeric_scale: np.ndarray
    intercept: float
    calibration: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    train_config: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    path: Path | None = None

    # -- prediction
    def _design(self, rows: FeatureRows, use_latency: bool) -> tuple[sp.csr_matrix, np.ndarray]:
        rows = rows.without_tags(self.ignore_tags)
        mats = [_hashed(b, rows, self.use_tags, use_latency) for b in self.blocks]
        num = (_numeric(rows, use_latency) - self.numeric_mean) / self.numeric_scale
        return sp.hstack(mats, format="csr") if mats else sp.csr_matrix((len(rows), 0)), num

    def decision(self, rows: FeatureRows, *, use_latency: bool | None = None) -> np.ndarray:
        """The uncalibrated linear score of each row."""
        lat = self.use_latency if use_latency is None else (use_latency and self.use_latency)
        X, num = self._design(rows, lat)
        w = np.concatenate([self.weights[b.name] for b in self.blocks]) if self.blocks else (
            np.zeros(0))
        out: np.ndarray = np.asarray(X @ w).ravel() + num @ self.numeric_weights + self.intercept
        return out

    def predict_rows(self, rows: FeatureRows, *, use_latency: bool | None = None) -> np.ndarray:
        """Calibrated P(thumb up) for each row."""
        if len(rows) == 0:
            return np.zeros(0)
        return _apply_calibration(self.calibration, self.decision(rows, use_latency=use_latency))

    def predict(self, cases: Sequence[EvalCase], replies: Sequence[str | None] | None = None,
                latencies: Sequence[float | None] | None = None) -> np.ndarray:
        """P(thumb up) for each case with the given replies (default: each case's `reply`)."""
        rows = FeatureRows()
        for i, c in enumerate(cases):
            reply = replies[i] if replies is not None else c.reply
            lat = latencies[i] if latencies is not None else c.reply_latency_ms
            rows.add(c, reply or "", lat)
        return self.predict_rows(rows)

    # -- persistence
    def params(self) -> dict[str, Any]:
        """Everything predictions depend on, as plain JSON data (hashed into the file)."""
        coef: dict[str, Any] = {}
        for b in self.blocks:
            w = self.weights[b.name]
            nz = np.flatnonzero(w)
            coef[b.name] = {"indices": [int(i) for i in nz], "values": _rounded(w[nz])}
        return {
            "blocks": [b.model_dump() for b in self.blocks],
            "use_tags": self.use_tags,
            "ignore_tags": list(self.ignore_tags),
            "use_latency": self.use_latency,
            "numeric_features": list(NUMERIC_FEATURES),
            "numeric_mean": _rounded(self.numeric_mean),
            "numeric_scale": _rounded(self.numeric_scale),
            "numeric_weights": _rounded(self.numeric_weights),
            "intercept": float(f"{self.intercept:.8g}"),
            "coefficients": coef,
            "calibration": self.calibration,
            "latency_edges_ms": list(LATENCY_EDGES_MS),
            "length_edges_words": list(LENGTH_EDGES_WORDS),
        }

    def to_json(self) -> dict[str, Any]:
        params = self.params()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metric": METRIC,
            "created_at": self.created_at,
            "package_version": __version__,
            "sklearn_version": _sklearn_version(),
            "training": self.training,
            "train_config": self.train_config,
            "metrics": self.metrics,
            "params_sha256": hashlib.sha256(_canonical(params)).hexdigest(),
            "params": params,
        }

    def save(self, model_dir: str | Path) -> Path:
        """Write `model_dir/model.json` atomically; returns its path."""
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / MODEL_FILE
        tmp = d / f".{MODEL_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
        self.path = d
        return path

    @classmethod
    def load(cls, model_dir: str | Path, *, expect_evalset_hash: str | None = None
             ) -> FeedbackModel:
        """Read and verify a model directory (format, version, parameter hash)."""
        d = Path(model_dir)
        path = d / MODEL_FILE if d.is_dir() or not d.suffix else d
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: feedback model not found",
                            hint="train one with `synthloop feedback train EVALSET --out DIR`"
                            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a feedback model (invalid JSON: {e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"{path}: not a synthloop feedback model (format is "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path}: feedback model format_version {doc.get('format_version')!r}"
                            f" is not supported (this synthloop reads {FORMAT_VERSION})",
                            hint="retrain it with this version: `synthloop feedback train`")
        params = doc.get("params")
        if not isinstance(params, dict) or hashlib.sha256(_canonical(params)).hexdigest() != doc.get(
                "params_sha256"):
            raise DataError(f"{path}: feedback model parameters do not match params_sha256 "
                            "(the file was edited or corrupted)", hint="retrain the model")
        training = doc.get("training") or {}
        if expect_evalset_hash is not None and training.get("evalset_hash") != expect_evalset_hash:
            raise DataError(f"{path}: feedback model was trained on evalset "
                            f"{training.get('evalset_hash')}, not {expect_evalset_hash}",
                            hint="retrain it on that evalset or drop expect_evalset_hash")
        try:
            blocks = [HashedBlock.model_validate(b) for b in params["blocks"]]
            weights: dict[str, np.ndarray] = {}
            for b in blocks:
                w = np.zeros(2 ** b.n_features_log2)
                c = params["coefficients"][b.name]
                w[np.asarray(c["indices"], dtype=np.int64)] = np.asarray(c["values"], dtype=float)
                weights[b.name] = w
            if list(params["numeric_features"]) != list(NUMERIC_FEATURES):
                raise ValueError("numeric feature list differs from this synthloop's")
            model = cls(
                blocks=blocks,
                use_tags=bool(params["use_tags"]),
                ignore_tags=[str(t) for t in params["ignore_tags"]],
                use_latency=bool(params["use_latency"]),
                weights=weights,
                numeric_weights=np.asarray(params["numeric_weights"], dtype=float),
                numeric_mean=np.asarray(params["numeric_mean"], dtype=float),
                numeric_scale=np.asarray(params["numeric_scale"], dtype=float),
                intercept=float(params["intercept"]),
                calibration=dict(params["calibration"]),
                training=dict(training),
                metrics=dict(doc.get("metrics") or {}),
                train_config=dict(doc.get("train_config") or {}),
                created_at=str(doc.get("created_at", "")),
                path=path.parent,
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"{path}: malformed feedback model: {e}",
                            hint="retrain the model") from None
        return model


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


# --------------------------------------------------------------------------- training
@dataclass
class LabelledRows:
    rows: FeatureRows
    y: np.ndarray
    skipped_no_thumb: int = 0
    skipped_no_reply: int = 0


def labelled_rows(cases: Iterable[EvalCase]) -> LabelledRows:
    """Cases with a thumb up/down and the reply the user saw, as feature rows and labels."""
    rows = FeatureRows()
    y: list[float] = []
    no_thumb = no_reply = 0
    for c in cases:
        fb = c.expected_feedback
        if fb is None or fb.thumb is Thumb.none:
            no_thumb += 1
            continue
        if c.reply is None:
            no_reply += 1
            continue
        rows.add(c, c.reply, c.reply_latency_ms)
        y.append(1.0 if fb.thumb is Thumb.up else 0.0)
    return LabelledRows(rows=rows, y=np.asarray(y), skipped_no_thumb=no_thumb,
                        skipped_no_reply=no_reply)


def evalset_rows(evalset: Any) -> LabelledRows:
    """`labelled_rows` of an evalset, filtered in Arrow first: most cases carry no thumb, so
    most rows never become pydantic objects."""
    import pyarrow.compute as pc

    from synthloop.evalsets import row_to_case

    cases: list[EvalCase] = []
    no_thumb = no_reply = 0
    for batch in evalset.iter_batches():
        fb = batch.column(batch.schema.get_field_index("expected_feedback"))
        thumb = pc.struct_field(fb, "thumb")
        labelled = pc.fill_null(pc.is_in(thumb, value_set=pa.array(["up", "down"])), False)
        has_reply = batch.column(batch.schema.get_field_index("reply")).is_valid()
        keep = pc.and_(labelled, has_reply)
        n_labelled = int(pc.sum(labelled).as_py() or 0)
        n_keep = int(pc.sum(keep).as_py() or 0)
        no_thumb += batch.num_rows - n_labelled
        no_reply += n_labelled - n_keep
        cases.extend(row_to_case(row) for row in batch.filter(keep).to_pylist())
    data = labelled_rows(cases)
    data.skipped_no_thumb += no_thumb
    data.skipped_no_reply += no_reply
    return data


def _design_train(rows: FeatureRows, cfg: FeedbackTrainConfig
                  ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rows = rows.without_tags(cfg.ignore_tags)
    mats = [_hashed(b, rows, cfg.use_tags, cfg.use_latency) for b in cfg.blocks]
    num = _numeric(rows, cfg.use_latency)
    mean = num.mean(axis=0)
    scale = num.std(axis=0)
    scale[scale < 1e-9] = 1.0
    numz = (num - mean) / scale
    X = sp.hstack([*mats, sp.csr_matrix(numz)], format="csr")
    return X, mean, scale


def _fit_lr(X: sp.csr_matrix, y: np.ndarray, cfg: FeedbackTrainConfig) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # liblinear is much faster than lbfgs on wide hashed features, and its dual solver is
    # the fast one when there are fewer rows than columns (templated replies make the primal
    # Newton steps badly conditioned). Its intercept is regularised, which does not matter:
    # predictions go through the calibration map fitted on out-of-fold scores.
    lr = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, solver="liblinear",
                            dual=X.shape[0] < X.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(X, y)
    return lr


def train_on_rows(data: LabelledRows, cfg: FeedbackTrainConfig, training: dict[str, Any],
                  *, progress: bool | None = None) -> FeedbackModel:
    """Fit, calibrate on out-of-fold scores, refit on everything; returns the model."""
    from sklearn.model_selection import StratifiedKFold

    from synthloop.progress import progress_bar

    rows, y = data.rows, data.y
    n = len(rows)
    where = training.get("evalset_path") or "the training data"
    if n < cfg.min_rows:
        raise DataError(
            f"{where}: only {n} cases have a thumb up/down and a reply; the feedback model "
            f"needs at least {cfg.min_rows}",
            hint="generate more sessions or lower min_rows in the training config")
    n_up = int(y.sum())
    if n_up == 0 or n_up == n:
        raise DataError(f"{where}: every labelled case is a thumb {'up' if n_up else 'down'}; "
                        "the feedback model needs both", hint="use an evalset with both thumbs")
    folds = min(cfg.folds, n_up, n - n_up)
    if folds < 2:
        raise DataError(f"{where}: too few thumbs of one kind to cross-validate "
                        f"({n_up} up, {n - n_up} down)", hint="use more labelled cases")
    X, mean, scale = _design_train(rows, cfg)
    oof = np.zeros(n)
    fold_of = np.zeros(n, dtype=np.int64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    method = cfg.calibration
    if method == "auto":
        method = "isotonic" if n >= 1000 else "sigmoid"
    with progress_bar(folds + 1, "feedback model", enabled=progress) as bar:
        for k, (tr, te) in enumerate(skf.split(np.zeros(n), y)):
            lr = _fit_lr(X[tr], y[tr], cfg)
            oof[te] = lr.decision_function(X[te])
            fold_of[te] = k
            bar.advance(1)
        cal = _fit_calibration(oof, y, method)
        final = _fit_lr(X, y, cfg)
        bar.advance(1)
    # Honest cross-validated figures: each fold is calibrated by a map fitted on the others'
    # out-of-fold scores (the shipped map is fitted on all of them).
    cv_pred = np.zeros(n)
    for k in range(folds):
        m = fold_of == k
        cv_pred[m] = _apply_calibration(_fit_calibration(oof[~m], y[~m], method), oof[m])
    coef = final.coef_.ravel()
    weights: dict[str, np.ndarray] = {}
    off = 0
    for b in cfg.blocks:
        size = 2 ** b.n_features_log2
        weights[b.name] = coef[off:off + size].copy()
        off += size
    numeric_w = coef[off:off + len(NUMERIC_FEATURES)].copy()
    metrics = {"cross_validated": classification_metrics(cv_pred, y),
               "folds": folds, "calibration": method}
    training = {**training, "n": n, "n_up": n_up, "n_down": n - n_up,
                "skipped_no_thumb": data.skipped_no_thumb,
                "skipped_no_reply": data.skipped_no_reply}
    model = FeedbackModel(
        blocks=list(cfg.blocks), use_tags=cfg.use_tags, ignore_tags=list(cfg.ignore_tags),
        use_latency=cfg.use_latency,
        weights=weights, numeric_weights=numeric_w, numeric_mean=mean, numeric_scale=scale,
        intercept=float(final.intercept_[0]), calibration=cal, training=training,
        metrics=metrics, train_config=cfg.model_dump(mode="json"),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # Round-trip through the stored precision so in-memory and loaded models agree exactly.
    return _reload_params(model)


def _reload_params(model: FeedbackModel) -> FeedbackModel:
    p = model.params()
    for b in model.blocks:
        w = np.zeros(2 ** b.n_features_log2)
        c = p["coefficients"][b.name]
        w[np.asarray(c["indices"], dtype=np.int64)] = np.asarray(c["values"], dtype=float)
        model.weights[b.name] = w
    model.numeric_weights = np.asarray(p["numeric_weights"], dtype=float)
    model.numeric_mean = np.asarray(p["numeric_mean"], dtype=float)
    model.numeric_scale = np.asarray(p["numeric_scale"], dtype=float)
    model.intercept = float(p["intercept"])
    return model


def train_feedback_model(evalset: Any, config: FeedbackTrainConfig | None = None, *,
                         progress: bool | None = None) -> FeedbackModel:
    """Train on an evalset (an `Evalset`, a path or `name@version`).

    Uses the cases with `expected_feedback.thumb` up/down and a `reply`; records the
    evalset's content hash in the model."""
    from synthloop.evalsets import Evalset, open_evalset

    es: Evalset = evalset if isinstance(evalset, Evalset) else open_evalset(evalset)
    cfg = config or FeedbackTrainConfig()
    data = evalset_rows(es)
    training = {
        "evalset_hash": es.content_hash,
        "evalset_name": es.manifest.name,
        "evalset_version": es.manifest.version,
        "evalset_path": str(es.path),
        "generator": es.manifest.provenance.generator,
        "seed": cfg.seed,
    }
    return train_on_rows(data, cfg, training, progress=progress)


def load_train_config(path: str | Path | None) -> FeedbackTrainConfig:
    if path is None:
        return FeedbackTrainConfig()
    from synthloop.config import load_model

    return load_model(path, FeedbackTrainConfig)


# --------------------------------------------------------------------------- report
@dataclass
class FeedbackReport:
    """How well a feedback model predicts the thumbs of an evalset."""

    model_dir: str
    evalset_path: str
    evalset_hash: str
    in_sample: bool
    """True when the evalset is the one the model was trained on (optimistic figures)."""
    metrics: dict[str, Any]
    bins: list[ReliabilityBin]
    training: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "model_dir": self.model_dir,
            "evalset_path": self.evalset_path,
            "evalset_hash": self.evalset_hash,
            "in_sample": self.in_sample,
            "metrics": self.metrics,
            "reliability": [{"lo": b.lo, "hi": b.hi, "count": b.count,
                             "mean_pred": clean(b.mean_pred),
                             "mean_outcome": clean(b.mean_outcome)} for b in self.bins],
            "training": self.training,
        }

    def summary_lines(self) -> list[str]:
        m = self.metrics
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        lines = [
            f"feedback model {self.model_dir} on {self.evalset_path}"
            + ("  (IN-SAMPLE: this is the training evalset)" if self.in_sample else ""),
            f"  n {m['n']:,}  thumb-up rate {m['base_rate']:.3f}  mean prediction "
            f"{m['mean_pred']:.3f}",
            f"  Brier {m['brier']:.4f}  ECE ({m['ece_bins']} bins) {m['ece']:.4f}  AUC {auc}"
            f"  log loss {m['log_loss']:.4f}",
        ]
        return lines


def feedback_report(model_dir: str | Path, evalset: Any, *, bins: int = ECE_BINS
                    ) -> FeedbackReport:
    """Score a model on an evalset's thumbs: Brier, ECE, AUC, log loss, reliability bins."""
    from synthloop.evalsets import Evalset, open_evalset

    model = FeedbackModel.load(model_dir)
    es: Evalset = evalset if isinstance(evalset, Evalset) else open_evalset(evalset)
    data = evalset_rows(es)
    if len(data.rows) == 0:
        raise DataError(f"{es.path}: no case has a thumb up/down and a reply to evaluate on",
                        hint="pass an evalset with feedback")
    pred = model.predict_rows(data.rows)
    return FeedbackReport(
        model_dir=str(model_dir), evalset_path=str(es.path), evalset_hash=es.content_hash,
        in_sample=es.content_hash == model.training.get("evalset_hash"),
        metrics=classification_metrics(pred, data.y, bins),
        bins=reliability_bins(pred, data.y, bins), training=model.training,
    )


def reliability_svg(bins: Sequence[ReliabilityBin], *, size: int = 360) -> str:
    """A reliability diagram (mean outcome vs mean prediction per bin) as inline SVG."""
    pad = 52
    inner = size - 2 * pad

    def px(v: float) -> float:
        return pad + v * inner

    def py(v: float) -> float:
        return size - pad - v * inner

    total = sum(b.count for b in bins) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" role="img" aria-label="reliability diagram">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="#fafafa" '
             'stroke="#999"/>']
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{px(t):.1f}" y="{size - pad + 16}" font-size="11" '
                     f'text-anchor="middle">{t:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{py(t) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{t:g}</text>')
    parts.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#888" '
                 'stroke-dasharray="4 4"/>')
    for b in bins:  # histogram of predictions along the bottom
        if b.count:
            h = 0.25 * inner * b.count / total
            parts.append(f'<rect x="{px(b.lo):.1f}" y="{py(0) - h:.1f}" '
                         f'width="{px(b.hi) - px(b.lo):.1f}" height="{h:.1f}" fill="#cfe0f3"/>')
    pts = [(b.mean_pred, b.mean_outcome, b.count) for b in bins if b.count]
    if pts:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
        for x, y, c in pts:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="#1f5fa8">'
                         f'<title>pred {x:.3f}, observed {y:.3f}, n={c}</title></circle>')
    parts.append(f'<text x="{size / 2}" y="{size - 8}" font-size="12" text-anchor="middle">'
                 'predicted P(thumb up)</text>')
    parts.append(f'<text x="12" y="{size / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 12 {size / 2})">observed thumb-up rate</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_html(report: FeedbackReport) -> str:
    """A self-contained HTML page: metrics table, reliability diagram and bin table."""
    m = report.metrics
    esc = html.escape

    def fmt(v: Any, digits: int = 4) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}"

    rows = "".join(
        f"<tr><td>{b.lo:.2f}–{b.hi:.2f}</td><td>{b.count:,}</td><td>{fmt(b.mean_pred, 3)}</td>"
        f"<td>{fmt(b.mean_outcome, 3)}</td></tr>" for b in report.bins)
    warn = ('<p class="warn">In-sample: this evalset is the one the model was trained on, so '
            "these figures are optimistic. Evaluate on a held-out evalset.</p>"
            if report.in_sample else "")
    t = report.training
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>synthloop feedback model report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 60rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }}
th {{ background: #f0f0f0; }}
.warn {{ background: #fff4d6; padding: .5rem; border-left: 4px solid #e0a800; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style></head><body>
<h1>Feedback model report</h1>
<p>Model <code>{esc(report.model_dir)}</code> (trained on <code>{esc(str(t.get("evalset_name")))}@{esc(str(t.get("evalset_version")))}</code>,
{fmt(t.get("n"), 0)} labelled cases) evaluated on <code>{esc(report.evalset_path)}</code>
(<code>{esc(report.evalset_hash)}</code>).</p>
{warn}
<table>
<tr><th>n</th><th>thumb-up rate</th><th>mean prediction</th><th>Brier</th>
<th>ECE ({m["ece_bins"]} bins)</th><th>AUC</th><th>log loss</th></tr>
<tr><td>{fmt(m["n"])}</td><td>{fmt(m["base_rate"], 3)}</td><td>{fmt(m["mean_pred"], 3)}</td>
<td>{fmt(m["brier"])}</td><td>{fmt(m["ece"])}</td><td>{fmt(m["auc"], 3)}</td>
<td>{fmt(m["log_loss"])}</td></tr>
</table>
<h2>Reliability</h2>
<p>Each point is one bin of predictions: its mean prediction (x) against the observed
thumb-up rate (y). A calibrated model lies on the diagonal. Bars: share of cases per bin.</p>
{reliability_svg(report.bins)}
<table><tr><th>predicted</th><th>cases</th><th>mean prediction</th><th>observed rate</th></tr>
{rows}</table>
</body></html>
"""


def write_report_html(report: FeedbackReport, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(report_html(report), encoding="utf-8")
        os.replace(tmp, p)
    except BaseException:  # no temporary file left behind (a folder at `path`, Ctrl-C, ...)
        tmp.unlink(missing_ok=True)
        raise
    return p


# --------------------------------------------------------------------------- scorer
class FeedbackScorer:
    """Scores a response with the model's calibrated P(thumb up) (metric `thumb_up_pred`)."""

    kind: Literal["continuous"] = "continuous"
    higher_is_better = True

    def __init__(self, model: FeedbackModel, *, name: str = METRIC,
                 use_latency: bool | None = None, config: FeedbackScorerConfig | None = None
                 ) -> None:
        self.model = model
        self.name = name
        self.use_latency = use_latency
        self.config = config

    def describe(self) -> dict[str, Any]:
        """The scorer's config plus the model's identity, recorded in scores.json."""
        d: dict[str, Any] = (self.config.model_dump(mode="json", exclude_none=True)
                             if self.config else {"name": self.name, "kind": "feedback_model"})
        d["model_evalset_hash"] = self.model.training.get("evalset_hash")
        d["model_created_at"] = self.model.created_at
        return d

    def score(self, case: EvalCase, response: Response) -> Score:
        return self.score_many([case], [response])[0]

    def score_many(self, cases: Sequence[EvalCase], responses: Sequence[Response]
                   ) -> list[Score]:
        if len(cases) != len(responses):
            raise ValueError("score_many needs one response per case")
        rows = FeatureRows()
        keep: list[int] = []
        for i, (c, r) in enumerate(zip(cases, responses, strict=True)):
            if r.output is not None and r.error is None:
                rows.add(c, r.output, r.latency_ms)
                keep.append(i)
        pred = self.model.predict_rows(rows, use_latency=self.use_latency)
        out: list[Score] = []
        k = 0
        for i, (c, r) in enumerate(zip(cases, responses, strict=True)):
            if k < len(keep) and keep[k] == i:
                out.append(Score(case_id=c.case_id, sample=r.sample, metric=self.name,
                                 value=float(pred[k]), kind="continuous"))
                k += 1
            else:
                out.append(Score(case_id=c.case_id, sample=r.sample, metric=self.name,
                                 value=None, kind="continuous",
                                 error="no output to score (the target failed on this case)"))
        return out


def factory(config: Any, *, base_dir: str | Path | None = None) -> FeedbackScorer:
    """Build the `feedback_model` scorer from its config (a dict or FeedbackScorerConfig).

    `model` is resolved relative to `base_dir` (the scorers file's folder)."""
    if isinstance(config, FeedbackScorerConfig):
        cfg = config
    else:
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
        data.setdefault("kind", "feedback_model")
        cfg = _parse_scorer_options(data)
    p = Path(cfg.model).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.exists():
        raise ConfigError(f"feedback_model scorer: model directory {p} not found",
                          hint="train one with `synthloop feedback train EVALSET --out DIR`")
    model = FeedbackModel.load(p, expect_evalset_hash=cfg.expect_evalset_hash)
    return FeedbackScorer(model, name=cfg.name, use_latency=cfg.use_latency, config=cfg)


def _parse_scorer_options(data: dict[str, Any]) -> FeedbackScorerConfig:
    try:
        from synthloop.scorers._base import parse_options
    except ImportError:  # the scorer framework is optional for this module
        return validate_data(data, FeedbackScorerConfig, "feedback_model scorer")
    return parse_options(data, FeedbackScorerConfig)
