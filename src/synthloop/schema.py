"""The nouns of synthloop (see design.md), as pydantic v2 models, and nothing else.

Every model forbids unknown fields and carries (or is carried by a document with) a schema
version, so files written by one version are read or rejected clearly by another.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# --------------------------------------------------------------------------- feedback
class Thumb(StrEnum):
    """Explicit thumb feedback. Most users give none: `none` is the common case."""

    up = "up"
    down = "down"
    none = "none"


class Feedback(_Model):
    """Explicit and implicit feedback on one assistant reply."""

    thumb: Thumb = Thumb.none
    """Thumb up / down, or `none` when the user gave no thumb (the usual case)."""
    rating: int | None = Field(default=None, ge=1, le=5)
    """Optional 1-5 star rating."""
    comment: str | None = None
    """Optional free-text comment."""
    clicks: int = Field(default=0, ge=0)
    """Clicks on links or citations in the reply."""
    read_time_s: float | None = Field(default=None, ge=0)
    """Dwell / read time on the reply, seconds."""
    watch_time_s: float | None = Field(default=None, ge=0)
    """Watch time for media replies, seconds."""
    copied: bool = False
    """The user copied (part of) the reply."""
    regenerated: bool = False
    """The user asked for the reply to be regenerated."""
    edited: bool = False
    """The user edited their prompt after the reply."""
    abandoned: bool = False
    """The user left the session right after this reply."""
    feedback_delay_s: float | None = Field(default=None, ge=0)
    """Seconds from the reply to the explicit feedback, when there was any."""

    @property
    def explicit(self) -> bool:
        return self.thumb is not Thumb.none or self.rating is not None or bool(self.comment)


# --------------------------------------------------------------------------- consent
class Consent(_Model):
    """Which uses a user agreed to. Data without consent for a use never reaches it."""

    uses: list[str] = Field(default_factory=list)
    """Granted uses, e.g. `synthetic_fit`, `training`, `analytics`."""
    policy_version: str | None = None
    granted_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, use: str, at: datetime | None = None) -> bool:
        """True when `use` was granted and not revoked at time `at` (now if None)."""
        if use not in self.uses:
            return False
        if at is not None and self.granted_at is not None and at < self.granted_at:
            return False
        if self.revoked_at is None:
            return True
        if at is None:
            return False
        return at < self.revoked_at


# --------------------------------------------------------------------------- interactions
class Message(_Model):
    role: Literal["system", "user", "assistant"]
    content: str


class Interaction(_Model):
    """One user turn in a session, as logged (or synthesized)."""

    schema_version: str = SCHEMA_VERSION
    interaction_id: str
    session_id: str
    user_id: str
    """Pseudonymous user id."""
    turn: int = Field(default=0, ge=0)
    timestamp: datetime
    persona: str | None = None
    intent: str | None = None
    locale: str | None = None
    input: str
    context: str | None = None
    output: str | None = None
    model_version: str | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    feedback: Feedback = Field(default_factory=Feedback)
    consent: Consent = Field(default_factory=Consent)
    tags: dict[str, str] = Field(default_factory=dict)


class Session(_Model):
    """A user's session: ordered interactions sharing one session id."""

    schema_version: str = SCHEMA_VERSION
    session_id: str
    user_id: str
    persona: str | None = None
    locale: str | None = None
    interactions: list[Interaction] = Field(default_factory=list)


# --------------------------------------------------------------------------- eval cases
class References(_Model):
    """Reference outputs: `good` ones (e.g. thumbed up, answer key) and `bad` ones."""

    good: list[str] = Field(default_factory=list)
    bad: list[str] = Field(default_factory=list)


class EvalCase(_Model):
    """The replayable unit: prior turns, the current input, references, expected feedback."""

    schema_version: str = SCHEMA_VERSION
    case_id: str
    session_id: str | None = None
    user_id: str | None = None
    """Pseudonymous id of the (synthetic) user."""
    turn: int = Field(default=0, ge=0)
    timestamp: datetime | None = None
    history: list[Message] = Field(default_factory=list)
    """Prior turns, oldest first, sent to the target before `input`."""
    input: str
    context: str | None = None
    references: References = Field(default_factory=References)
    reply: str | None = None
    """The reply the (synthetic) user saw, to which `expected_feedback` applies."""
    reply_latency_ms: float | None = Field(default=None, ge=0)
    expected_feedback: Feedback | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    """Segment tags, e.g. `persona`, `intent`, `locale`, `cluster`."""


# --------------------------------------------------------------------------- evalsets
class Provenance(_Model):
    generator: str
    """Generator kind: `rules`, `sdv`, `llm`, `import`, ..."""
    spec_path: str | None = None
    spec_hash: str | None = None
    seed: int | None = None
    source_data_hash: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class EvalsetCounts(_Model):
    sessions: int = 0
    cases: int = 0
    interactions: int = 0


class EvalsetManifest(_Model):
    """`manifest.json` beside an evalset version's data."""

    schema_version: str = SCHEMA_VERSION
    name: str
    version: str
    content_hash: str
    created_at: datetime
    package_version: str
    provenance: Provenance
    counts: EvalsetCounts
    consent_summary: dict[str, Any] = Field(default_factory=dict)
    feedback_summary: dict[str, Any] = Field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    partial: bool = False
    """True when generation stopped early (e.g. a cost budget); the data is what was made."""
    shards: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- targets & runs
class TargetFingerprint(_Model):
    """What identifies a model version. Never holds an API key."""

    kind: str
    endpoint: str | None = None
    model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    system_prompt_hash: str | None = None

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Response(_Model):
    """One target's reply to one case (one sample of it)."""

    case_id: str
    sample: int = 0
    output: str | None = None
    error: str | None = None
    """Set when the case failed after its retry budget; `output` is then None."""
    error_kind: str | None = None
    latency_ms: float | None = None
    usage: Usage = Field(default_factory=Usage)
    attempts: int = 1
    cached: bool = False


class RunCounts(_Model):
    total: int = 0
    ok: int = 0
    error: int = 0
    cached: int = 0


class RunManifest(_Model):
    """`manifest.json` beside a run's responses."""

    schema_version: str = SCHEMA_VERSION
    evalset_hash: str
    evalset_path: str | None = None
    target: TargetFingerprint
    target_name: str | None = None
    package_version: str
    started_at: datetime
    finished_at: datetime | None = None
    repeats: int = 1
    seed: int | None = None
    counts: RunCounts = Field(default_factory=RunCounts)
    tokens: Usage = Field(default_factory=Usage)
    status: Literal["running", "complete", "interrupted"] = "running"


# --------------------------------------------------------------------------- scores
class Score(_Model):
    """One metric's value on one case (one sample). A scorer failure is data, not a crash."""

    case_id: str
    sample: int = 0
    metric: str
    value: float | None = None
    kind: Literal["binary", "continuous", "ordinal"] = "continuous"
    explanation: str | None = None
    error: str | None = None


# Comparison and Verdict live with their logic: synthloop.stats.Comparison, synthloop.gate.Verdict.
