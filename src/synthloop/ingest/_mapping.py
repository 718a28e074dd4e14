"""The mapping file: how a log's columns become Interaction fields, and what may be used.

    format: csv                              # csv / jsonl / parquet (default: from the extension)
    columns:                                 # Interaction field <- log column
      user_id: uid
      session_id: sid
      timestamp: ts
      input: prompt
      feedback.thumb: thumb
      consent.synthetic_fit: consent_synth   # or consent.uses / consent.revoked_at / ...
    consent: {use: synthetic_fit}            # or {assume: true, basis: "..."} for logs without one
    extra: [country]                         # or `all`: keep other columns as extra.<name>
    pii: {names_file: names.txt, replace: placeholder}
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthloop.privacy import PII_TYPES

TEXT = "text"
CATEGORY = "category"
ID = "id"
TIMESTAMP = "timestamp"
FLOAT = "float"
INT = "int"
RATING = "rating"
THUMB = "thumb"
BOOL = "bool"

FIELDS: dict[str, str] = {
    "interaction_id": ID,
    "session_id": ID,
    "user_id": ID,
    "turn": INT,
    "timestamp": TIMESTAMP,
    "persona": CATEGORY,
    "intent": CATEGORY,
    "locale": CATEGORY,
    "input": TEXT,
    "context": TEXT,
    "output": TEXT,
    "model_version": CATEGORY,
    "latency_ms": FLOAT,
    "feedback.thumb": THUMB,
    "feedback.rating": RATING,
    "feedback.comment": TEXT,
    "feedback.clicks": INT,
    "feedback.read_time_s": FLOAT,
    "feedback.watch_time_s": FLOAT,
    "feedback.feedback_delay_s": FLOAT,
    "feedback.copied": BOOL,
    "feedback.regenerated": BOOL,
    "feedback.edited": BOOL,
    "feedback.abandoned": BOOL,
}
"""Every sample column that a log column can be mapped to, with its kind."""

CONSENT_META = ("consent.uses", "consent.revoked_at", "consent.granted_at",
                "consent.policy_version")
"""Consent columns other than per-use flags (`consent.<use>`)."""

_USE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}


def format_from_path(path: Path) -> str | None:
    """`csv` / `jsonl` / `parquet` from a file name (`.gz` is looked through), else None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


PiiKind = Literal["email", "phone", "card", "iban", "ip", "url_token", "name"]
_ALL_PII: list[PiiKind] = ["email", "phone", "card", "iban", "ip", "url_token", "name"]
assert tuple(_ALL_PII) == PII_TYPES


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_strings(value: Any) -> Any:
    # YAML reads `yes`, `1`, `true` as non-strings; values here are always compared as text.
    if isinstance(value, list):
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]
    return value


class ConsentOptions(_Model):
    """Which use rows must be consented for, or the stated basis when logs carry no consent."""

    use: str = "synthetic_fit"
    """The use each row must be consented for; its flag column is `consent.<use>`."""
    assume: bool = False
    """Treat every row as consented (only for logs with no consent column); needs `basis`."""
    basis: str | None = None
    """Why consent may be assumed (e.g. "public dataset, CC BY 4.0"); recorded in the report."""

    @field_validator("use")
    @classmethod
    def _use_name(cls, v: str) -> str:
        if not _USE_NAME.match(v):
            raise ValueError("must be a plain name such as synthetic_fit, training or analytics")
        return v

    @model_validator(mode="after")
    def _basis_with_assume(self) -> ConsentOptions:
        if self.assume and not (self.basis and self.basis.strip()):
            raise ValueError("consent.assume: true needs consent.basis (why consent may be "
                             "assumed, e.g. \"public dataset, CC BY 4.0\")")
        if self.basis and not self.assume:
            raise ValueError("consent.basis is only used with consent.assume: true "
                             "(remove basis, or set assume: true)")
        return self


class PiiOptions(_Model):
    """PII scrubbing of every free-text value before anything is written."""

    names: list[str] = Field(default_factory=list)
    """Names to scrub (whole words, case-insensitive; multi-word names allowed)."""
    names_file: Path | None = None
    """A text file with one name a line (relative to the mapping file); adds to `names`."""
    replace: Literal["placeholder", "faker"] = "placeholder"
    """`placeholder`: `<EMAIL>`, `<PHONE>`, ...; `faker`: realistic surrogates, consistent for
    one user within a session."""
    seed: int = 0
    """Seed of the Faker surrogates (recorded in the report)."""
    detect: list[PiiKind] = Field(default_factory=lambda: list(_ALL_PII))
    """PII types to detect (default: all)."""
    locale: str = "en_US"
    """Faker locale of the surrogates."""


class ThumbValues(_Model):
    """Log values (case-insensitive) meaning thumb up / down / none."""

    up: list[str] = Field(default_factory=lambda: [
        "up", "1", "+1", "true", "yes", "y", "like", "liked", "positive", "thumbs_up",
        "thumbs-up", "thumb_up", "\U0001f44d", "+"])
    """Values meaning thumb up."""
    down: list[str] = Field(default_factory=lambda: [
        "down", "-1", "0", "false", "no", "n", "dislike", "disliked", "negative", "thumbs_down",
        "thumbs-down", "thumb_down", "\U0001f44e", "-"])
    """Values meaning thumb down."""
    none: list[str] = Field(default_factory=lambda: ["", "none", "null", "nan", "na", "n/a"])
    """Values meaning no thumb (an empty cell always does)."""

    @field_validator("up", "down", "none", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return _as_strings(v)


class BoolValues(_Model):
    """Log values (case-insensitive) read as true / false for boolean fields and consent flags."""

    true: list[str] = Field(default_factory=lambda: ["true", "t", "yes", "y", "1", "on"])
    """Values meaning true."""
    false: list[str] = Field(default_factory=lambda: ["false", "f", "no", "n", "0", "off"])
    """Values meaning false (an empty cell is missing; for consent, missing is no consent)."""

    @field_validator("true", "false", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return _as_strings(v)

    @model_validator(mode="before")
    @classmethod
    def _yaml_bool_keys(cls, data: Any) -> Any:
        # YAML reads the keys `true:` / `false:` as booleans.
        if isinstance(data, dict):
            return {str(k).lower() if isinstance(k, bool) else k: v for k, v in data.items()}
        return data


class LogMapping(_Model):
    """A mapping file: log columns -> Interaction fields, consent, extras and PII options."""

    format: Literal["csv", "jsonl", "parquet"] | None = None
    """Log format; default from the file extension (.csv/.tsv, .jsonl/.ndjson, .parquet; .gz ok)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Interaction field (dotted for `feedback.*` and `consent.*`) <- log column. Nested YAML
    (`feedback: {thumb: col}`) works too. For JSONL, nested objects are reachable as `a.b`."""
    consent: ConsentOptions = Field(default_factory=ConsentOptions)
    """The use to filter for, or `{assume: true, basis: ...}` for logs without consent."""
    extra: list[str] | Literal["all"] = Field(default_factory=list)
    """Other log columns to keep as `extra.<name>` (their dtype inferred), or `all` (every
    unmapped column except those whose name contains `consent`)."""
    pii: PiiOptions = Field(default_factory=PiiOptions)
    """PII scrubbing options."""
    timestamp_format: str | None = None
    """strftime format of the timestamp columns, or `epoch_s` / `epoch_ms`. Default: ISO 8601
    (naive times are UTC) and plain numbers as epoch seconds."""
    thumb_values: ThumbValues = Field(default_factory=ThumbValues)
    """Which log values mean thumb up / down / none."""
    bool_values: BoolValues = Field(default_factory=BoolValues)
    """Which log values mean true / false."""
    rating_range: tuple[int, int] = (1, 5)
    """Inclusive range of valid ratings."""
    max_invalid: float = Field(default=0.1, ge=0, le=1)
    """Largest share of (consented) rows that may be invalid and quarantined; above it the log
    is refused (a wrong mapping or format), and nothing is written."""
    delimiter: str | None = None
    """CSV delimiter (default `,`; tab for .tsv files)."""
    encoding: str = "utf-8"
    """Text encoding of CSV/JSONL logs."""

    @field_validator("columns", mode="before")
    @classmethod
    def _flatten(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        flat: dict[str, Any] = {}

        def walk(prefix: str, node: dict[Any, Any]) -> None:
            for key, value in node.items():
                name = f"{prefix}{key}"
                if isinstance(value, dict):
                    walk(name + ".", value)
                else:
                    flat[name] = str(value) if isinstance(value, int | float) else value

        walk("", v)
        return flat

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        problems: list[str] = []
        known = [*FIELDS, *CONSENT_META, "consent.synthetic_fit"]
        for key, col in v.items():
            if not col.strip():
                problems.append(f"`{key}` maps to an empty column name")
            if key in FIELDS or key in CONSENT_META:
                continue
            if key.startswith("consent.") and _USE_NAME.match(key[len("consent."):]):
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else (
                "known: " + ", ".join(FIELDS) + ", consent.<use>, " + ", ".join(CONSENT_META))
            problems.append(f"`{key}` is not an Interaction field ({hint})")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 1:
            raise ValueError("must be a single character, e.g. ',' or ';' (write '\\t' for tab)")
        return v

    @model_validator(mode="after")
    def _consent_coherent(self) -> LogMapping:
        flags = self.consent_flag_fields()
        wrong = [f for f in flags if f != f"consent.{self.consent.use}"]
        if wrong:
            raise ValueError(
                f"columns.{wrong[0]}: a consent flag for another use than consent.use "
                f"`{self.consent.use}` (map consent.{self.consent.use}, or set consent.use)")
        if self.consent.assume and self.consent_columns_mapped():
            raise ValueError("consent.assume: true but consent columns are mapped; "
                             "remove the consent.* columns or the assume")
        if not self.field_columns() and not self.extra:
            raise ValueError("columns: map at least one Interaction field (e.g. `input: prompt`), "
                             "or keep log columns with `extra: all`")
        timed = [k for k in ("consent.revoked_at", "consent.granted_at") if k in self.columns]
        if timed and "timestamp" not in self.columns:
            raise ValueError(f"columns.{timed[0]} needs each row's time: map `timestamp` too")
        if self.rating_range[0] > self.rating_range[1]:
            raise ValueError("rating_range: the low end must not exceed the high end")
        return self

    # ------------------------------------------------------------------ helpers
    def consent_flag_fields(self) -> list[str]:
        return [k for k in self.columns if k.startswith("consent.") and k not in CONSENT_META]

    def consent_columns_mapped(self) -> bool:
        return any(k.startswith("consent.") for k in self.columns)

    def grants_mapped(self) -> bool:
        """True when some column says whether the use was granted (flag or uses list)."""
        return f"consent.{self.consent.use}" in self.columns or "consent.uses" in self.columns

    def field_columns(self) -> dict[str, str]:
        """Mapped sample fields (not consent) -> log column."""
        return {k: v for k, v in self.columns.items() if k in FIELDS}

    def digest(self, names_file_hash: str | None = None) -> str:
        """sha256 of the canonical mapping (the names file by content, not by path)."""
        data = self.model_dump(mode="json")
        data["pii"]["names_file"] = names_file_hash
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()
