"""The rules-generator spec: personas, intents, session structure, feedback behaviour, consent.

A spec is a YAML file (see `generators/support_assistant.yaml` and `docs/rules-generator.md`).
Field-level problems are reported by pydantic through `synthloop.config.validate_data`;
cross-field problems (an intent weight naming an unknown persona, a follow-up naming an
unknown intent, a template naming an undefined variable, an unreadable template file, ...)
are collected by `check_spec` so one `ConfigError` lists every problem with file and field.
"""

from __future__ import annotations

import difflib
from datetime import date
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# A working day: quiet at night, busy late morning and early afternoon, a second evening peak.
DEFAULT_HOUR_WEIGHTS = [
    0.15, 0.1, 0.07, 0.05, 0.05, 0.08, 0.2, 0.45, 0.8, 1.0, 1.1, 1.1,
    1.0, 1.05, 1.1, 1.0, 0.95, 0.85, 0.8, 0.85, 0.8, 0.65, 0.45, 0.25,
]
DEFAULT_WEEKDAY_WEIGHTS = [1.0, 1.0, 1.0, 0.95, 0.85, 0.5, 0.45]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known: {', '.join(choices)}" if choices else "none defined"


# --------------------------------------------------------------------------- small pieces
class CountSpec(_Spec):
    """A distribution over counts (turns per session, sessions per user).

    Give exactly one of `fixed`, `weights` or `continue_probability`.
    """

    fixed: int | None = Field(default=None, ge=1)
    """Always this count."""
    weights: dict[int, Weight] | None = None
    """Categorical: relative weight of each count, e.g. `{1: 5, 2: 3, 3: 2}`."""
    continue_probability: Probability | None = None
    """Geometric: after each item, another follows with this probability (from `min`, capped at `max`)."""
    min: int = Field(default=1, ge=1)
    """Smallest count (geometric only)."""
    max: int = Field(default=20, ge=1, le=1000)
    """Largest count (geometric only); the tail beyond it is cut off and renormalised."""

    @model_validator(mode="after")
    def _one_kind(self) -> CountSpec:
        given = [k for k in ("fixed", "weights", "continue_probability") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of fixed, weights or continue_probability"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.weights is not None:
            if any(k < 1 for k in self.weights):
                raise ValueError("weights: counts must be 1 or more")
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError("weights: every weight is 0 (give at least one count a positive weight)")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self

    def pmf(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, probabilities) of this distribution, probabilities summing to 1."""
        if self.fixed is not None:
            return np.array([self.fixed], dtype=np.int64), np.array([1.0])
        if self.weights is not None:
            items = sorted((k, w) for k, w in self.weights.items() if w > 0)
            values = np.array([k for k, _ in items], dtype=np.int64)
            probs = np.array([w for _, w in items], dtype=np.float64)
            return values, probs / probs.sum()
        c = float(self.continue_probability or 0.0)
        values = np.arange(self.min, self.max + 1, dtype=np.int64)
        probs = (1.0 - c) * c ** (values - self.min).astype(np.float64)
        if c >= 1.0:
            probs = np.zeros(len(values))
            probs[-1] = 1.0
        return values, probs / probs.sum()

    def mean(self) -> float:
        v, p = self.pmf()
        return float((v * p).sum())

    def variance(self) -> float:
        v, p = self.pmf()
        m = float((v * p).sum())
        return float((p * (v - m) ** 2).sum())


class LogNormal(_Spec):
    """A positive duration drawn from a log-normal distribution."""

    median: float = Field(gt=0)
    """Median value (the log-normal's exp(mu))."""
    sigma: float = Field(default=0.5, ge=0, le=5)
    """Spread: standard deviation of the logarithm (0 = always the median)."""


class ByQuality(_Spec):
    """A probability that depends on whether the reply the user saw was good or bad."""

    good: Probability
    """Probability after a good reply."""
    bad: Probability
    """Probability after a bad reply."""


class MeanByQuality(_Spec):
    """A mean count that depends on whether the reply the user saw was good or bad."""

    good: float = Field(ge=0)
    """Mean after a good reply."""
    bad: float = Field(ge=0)
    """Mean after a bad reply."""


class TemplateFile(_Spec):
    """A Jinja2 template read from a file, relative to the spec file's folder."""

    file: str = Field(min_length=1)
    """Path relative to the spec file, e.g. `templates/support/refund_answer.j2`."""


TemplateRef = str | TemplateFile
"""An inline Jinja2 template string, or `{file: templates/....j2}`."""


def _check_weights(values: list[float] | None, what: str) -> None:
    if values is not None and not any(v > 0 for v in values):
        raise ValueError(f"{what}: every weight is 0 (give at least one a positive weight)")


# --------------------------------------------------------------------------- slots
class DateRange(_Spec):
    """Dates drawn uniformly between `start` and `end` (inclusive)."""

    start: date
    """First possible date."""
    end: date
    """Last possible date."""
    format: str = "%Y-%m-%d"
    """`strftime` format of the rendered value."""

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class Slot(_Spec):
    """Where a template variable's values come from. Give exactly one source.

    Values are drawn once, at the start, into a pool per locale (`pool_size` values); templates
    are rendered against that pool, never per interaction.
    """

    faker: str | None = None
    """Faker provider method, e.g. `name`, `first_name`, `city`, `company`, `email`."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the Faker method (must not depend on today's date)."""
    pattern: str | None = None
    """Faker `bothify` pattern: `#` a digit, `?` a letter, e.g. `ORD-#####`."""
    values: list[str | int | float] | dict[str, Weight] | None = None
    """Fixed values: a list (equally likely) or a mapping value -> weight."""
    integers: tuple[int, int] | None = None
    """Integers drawn uniformly from `[low, high]` (both included)."""
    dates: DateRange | None = None
    """Dates drawn uniformly from a range."""

    @model_validator(mode="after")
    def _one_source(self) -> Slot:
        given = [k for k in ("faker", "pattern", "values", "integers", "dates")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of faker, pattern, values, integers or dates"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.args and self.faker is None:
            raise ValueError("args only applies to a faker slot")
        if self.values is not None:
            if len(self.values) == 0:
                raise ValueError("values: is empty")
            if isinstance(self.values, dict) and not any(w > 0 for w in self.values.values()):
                raise ValueError("values: every weight is 0 (give at least one a positive weight)")
        if self.integers is not None and self.integers[0] > self.integers[1]:
            raise ValueError(f"integers: low ({self.integers[0]}) is larger than high ({self.integers[1]})")
        return self


# --------------------------------------------------------------------------- personas & intents
class Persona(_Spec):
    """A kind of user: how common, where from, how they talk, how much feedback they give."""

    name: Name
    """Identifier, used in tags (`persona=<name>`) and in `intents[].persona_weights`."""
    description: str = ""
    """Free text for humans."""
    weight: Weight = 1.0
    """Relative share of users with this persona."""
    locales: dict[str, Weight] = Field(default_factory=lambda: {"en_US": 1.0})
    """Faker locale -> relative weight, e.g. `{en_US: 3, en_GB: 1}`; drives names, cities, ..."""
    traits: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Free-form traits visible to templates as `traits.<key>` (e.g. tone, expertise)."""
    turns: CountSpec | None = None
    """Turns per session for this persona (default: `session.turns`)."""
    hour_weights: list[Weight] | None = Field(default=None, min_length=24, max_length=24)
    """Activity by hour of day, 0-23 UTC (default: `calendar.hour_weights`)."""
    weekday_weights: list[Weight] | None = Field(default=None, min_length=7, max_length=7)
    """Activity by weekday, Monday first (default: `calendar.weekday_weights`)."""
    feedback_propensity: float = Field(default=1.0, ge=0)
    """Multiplier on `feedback.explicit_rate` for this persona (e.g. 0.5 = half as likely to thumb)."""
    reading_speed_wps: float = Field(default=4.0, gt=0)
    """Reading speed in words per second: read time is reply words / this, with noise."""

    @model_validator(mode="after")
    def _weights(self) -> Persona:
        if not self.locales:
            raise ValueError("locales: is empty (name at least one Faker locale, e.g. en_US)")
        _check_weights(list(self.locales.values()), "locales")
        _check_weights(self.hour_weights, "hour_weights")
        _check_weights(self.weekday_weights, "weekday_weights")
        return self


class Intent(_Spec):
    """Something a user wants: how they ask, the answer key, how good replies are, what follows."""

    name: Name
    """Identifier, used in tags (`intent=<name>`) and in `follow_ups`."""
    description: str = ""
    """Free text for humans."""
    weight: Weight = 1.0
    """Relative weight of this intent when a user starts a new topic."""
    persona_weights: dict[str, Weight] = Field(default_factory=dict)
    """Persona name -> weight for that persona, replacing `weight` (0 = never for that persona)."""
    templates: list[TemplateRef] = Field(min_length=1)
    """How users ask: Jinja2 templates (inline or `{file: ...}`) over slots, constants, `persona`,
    `traits`, `locale` and `intent`."""
    follow_up_templates: list[TemplateRef] = Field(default_factory=list)
    """How users ask when this intent follows another turn (default: `templates`)."""
    answers: list[TemplateRef] = Field(min_length=1)
    """Answer key: good reference answers (templates). A good reply shows one of them."""
    bad_answers: list[TemplateRef] = Field(default_factory=list)
    """Known-bad answers (templates). A bad reply shows one of them (default: `fallback_bad_replies`)."""
    reply_quality: Probability = 0.85
    """Probability that the reply the user saw was good."""
    thumb_up: ByQuality | None = None
    """P(thumb up | the user gave a thumb) by reply quality (default: `feedback.thumb_up`)."""
    copy_rate: ByQuality | None = None
    """P(user copies the reply) by reply quality (default: `feedback.copy_rate`)."""
    follow_ups: dict[str, Weight] = Field(default_factory=dict)
    """Intent name -> weight of the next turn's intent when the user follows up on this one."""
    follow_up_probability: Probability | None = None
    """P(the next turn follows up via `follow_ups` rather than a fresh intent) (default:
    `session.follow_up_probability`)."""
    reply_latency_ms: LogNormal | None = None
    """Assistant latency for this intent (default: `session.reply_latency_ms`)."""

    @model_validator(mode="after")
    def _weights(self) -> Intent:
        if self.follow_ups:
            _check_weights(list(self.follow_ups.values()), "follow_ups")
        return self


# --------------------------------------------------------------------------- sections
class SessionSpec(_Spec):
    """Session structure: how many turns, what follows what, how long users think."""

    turns: CountSpec = Field(default_factory=lambda: CountSpec(continue_probability=0.45, max=12))
    """Turns per session (personas may override)."""
    follow_up_probability: Probability = 0.6
    """P(a later turn follows up on the previous intent via its `follow_ups`) when it has any."""
    think_time_s: LogNormal = Field(default_factory=lambda: LogNormal(median=25.0, sigma=0.8))
    """Seconds between a reply and the user's next message (on top of reading)."""
    reply_latency_ms: LogNormal = Field(default_factory=lambda: LogNormal(median=1500.0, sigma=0.4))
    """Assistant reply latency in milliseconds (intents may override)."""


class UsersSpec(_Spec):
    """Synthetic users: each has one persona, one locale, consent, and one or more sessions."""

    sessions_per_user: CountSpec = Field(
        default_factory=lambda: CountSpec(continue_probability=0.35, max=15))
    """Sessions per user (returning users)."""


class CalendarSpec(_Spec):
    """When sessions happen: a date range with hour-of-day and weekday activity patterns (UTC).

    Sessions arrive as a non-homogeneous Poisson process whose intensity is
    weekday weight x hour weight; given the number of sessions, start times are independent
    draws from that intensity.
    """

    start: date = date(2025, 1, 6)
    """First day (UTC)."""
    days: int = Field(default=28, ge=1, le=3660)
    """Number of days."""
    hour_weights: list[Weight] = Field(default_factory=lambda: list(DEFAULT_HOUR_WEIGHTS),
                                       min_length=24, max_length=24)
    """Activity by hour of day, 0-23."""
    weekday_weights: list[Weight] = Field(default_factory=lambda: list(DEFAULT_WEEKDAY_WEIGHTS),
                                          min_length=7, max_length=7)
    """Activity by weekday, Monday first."""

    @model_validator(mode="after")
    def _weights(self) -> CalendarSpec:
        _check_weights(self.hour_weights, "hour_weights")
        _check_weights(self.weekday_weights, "weekday_weights")
        return self


class Ratings(_Spec):
    """Weights of 1..5 stars for users who rate, by the thumb they gave."""

    up: list[Weight] = Field(default_factory=lambda: [0.0, 0.02, 0.08, 0.35, 0.55],
                             min_length=5, max_length=5)
    """Weights of 1, 2, 3, 4, 5 stars with a thumb up."""
    down: list[Weight] = Field(default_factory=lambda: [0.45, 0.35, 0.15, 0.05, 0.0],
                               min_length=5, max_length=5)
    """Weights of 1, 2, 3, 4, 5 stars with a thumb down."""

    @model_validator(mode="after")
    def _weights(self) -> Ratings:
        _check_weights(self.up, "up")
        _check_weights(self.down, "down")
        return self


class Comments(_Spec):
    """Comment texts users leave with a thumb (plain strings)."""

    up: list[str] = Field(default_factory=lambda: ["Thanks, that helped!", "Perfect.", "Great answer."])
    """Comments with a thumb up."""
    down: list[str] = Field(default_factory=lambda: [
        "This didn't answer my question.", "Wrong information.", "Not helpful."])
    """Comments with a thumb down."""


class FeedbackSpec(_Spec):
    """Feedback behaviour: explicit (thumbs, ratings, comments) and implicit signals."""

    explicit_rate: Probability = 0.06
    """P(a user gives a thumb on a good reply) for a persona with `feedback_propensity` 1.
    Small, as in real products: most replies get no explicit feedback."""
    bad_reply_multiplier: float = Field(default=2.0, ge=0)
    """Users are this many times more likely to give a thumb after a bad reply."""
    thumb_up: ByQuality = Field(default_factory=lambda: ByQuality(good=0.9, bad=0.12))
    """P(thumb up | the user gave a thumb) by reply quality (intents may override)."""
    rating_rate: Probability = 0.25
    """P(a user who gave a thumb also gives a 1-5 star rating)."""
    ratings: Ratings = Field(default_factory=Ratings)
    """Star distribution by thumb."""
    comment_rate: Probability = 0.15
    """P(a user who gave a thumb also leaves a comment)."""
    comments: Comments = Field(default_factory=Comments)
    """Comment texts by thumb."""
    delay_s: LogNormal = Field(default_factory=lambda: LogNormal(median=4.0, sigma=0.9))
    """Seconds from the reply to the explicit feedback."""
    read_time_sigma: float = Field(default=0.45, ge=0, le=5)
    """Noise (log-normal sigma) around read time = reply words / persona reading speed."""
    clicks_mean: MeanByQuality = Field(default_factory=lambda: MeanByQuality(good=0.25, bad=0.08))
    """Mean clicks on links in a reply (Poisson) by reply quality."""
    copy_rate: ByQuality = Field(default_factory=lambda: ByQuality(good=0.2, bad=0.03))
    """P(user copies the reply) by reply quality (intents may override)."""
    regenerate_rate: ByQuality = Field(default_factory=lambda: ByQuality(good=0.02, bad=0.3))
    """P(user regenerates the reply) by reply quality; the next turn repeats the same input and
    the regenerated reply is dropped from later history. Never on a session's last turn."""
    edit_rate: ByQuality = Field(default_factory=lambda: ByQuality(good=0.03, bad=0.15))
    """P(user edits their prompt after the reply) by reply quality. Never on the last turn."""
    abandon_rate: ByQuality = Field(default_factory=lambda: ByQuality(good=0.05, bad=0.45))
    """P(user abandons the session, unsatisfied, after its last reply) by reply quality."""


class ConsentSpec(_Spec):
    """Consent: each synthetic user grants each use independently with the given rate."""

    policy_version: str = "1"
    """Consent policy version recorded in the manifest."""
    rates: dict[str, Probability] = Field(default_factory=lambda: {
        "analytics": 0.9, "synthetic_fit": 0.6, "training": 0.35})
    """Use -> share of users who grant it."""


# --------------------------------------------------------------------------- the spec
class RulesSpec(_Spec):
    """A rules-generator spec: realistic sessions with feedback from personas and intents, no data needed."""

    kind: Literal["rules"] = "rules"
    """Generator kind; `rules` is the default when a spec names none."""
    name: Name | None = None
    """Evalset name recorded in the manifest (default: `--name`, else the output's parent folder)."""
    description: str = ""
    """Free text for humans."""
    seed: int = Field(default=0, ge=0)
    """Random seed (`--seed` overrides). Same spec and seed give byte-identical data."""
    sessions: int = Field(default=1000, ge=0)
    """Number of sessions (`--sessions` overrides)."""
    pool_size: int = Field(default=128, ge=1, le=100_000)
    """Slot values drawn (per locale) and scenarios rendered (per persona, locale and intent)."""
    constants: dict[str, Any] = Field(default_factory=dict)
    """Values visible to every template, e.g. `product: Acme Cloud`."""
    slots: dict[str, Slot] = Field(default_factory=dict)
    """Template variables filled from Faker or fixed values. Each user gets one draw of every
    slot and keeps it in all their turns and sessions (same name, same order id)."""
    fallback_bad_replies: list[TemplateRef] = Field(
        default_factory=lambda: list[TemplateRef](["I'm sorry, I can't help with that right now."]),
        min_length=1)
    """Bad replies for intents that give no `bad_answers`."""
    personas: list[Persona] = Field(min_length=1)
    """The kinds of users."""
    intents: list[Intent] = Field(min_length=1)
    """What users want."""
    session: SessionSpec = Field(default_factory=SessionSpec)
    """Session structure."""
    users: UsersSpec = Field(default_factory=UsersSpec)
    """Users and returning sessions."""
    calendar: CalendarSpec = Field(default_factory=CalendarSpec)
    """When sessions happen."""
    feedback: FeedbackSpec = Field(default_factory=FeedbackSpec)
    """Feedback behaviour."""
    consent: ConsentSpec = Field(default_factory=ConsentSpec)
    """Consent rates."""

    @model_validator(mode="after")
    def _persona_weights(self) -> RulesSpec:
        _check_weights([p.weight for p in self.personas], "personas")
        return self

    # ----------------------------------------------------------------- derived values
    def persona_names(self) -> list[str]:
        return [p.name for p in self.personas]

    def intent_names(self) -> list[str]:
        return [i.name for i in self.intents]

    def intent_weight(self, intent: Intent, persona: str) -> float:
        return float(intent.persona_weights.get(persona, intent.weight))

    def turns_for(self, persona: Persona) -> CountSpec:
        return persona.turns or self.session.turns

    def thumb_up_for(self, intent: Intent) -> ByQuality:
        return intent.thumb_up or self.feedback.thumb_up

    def copy_rate_for(self, intent: Intent) -> ByQuality:
        return intent.copy_rate or self.feedback.copy_rate

    def follow_up_probability_for(self, intent: Intent) -> float:
        if not intent.follow_ups:
            return 0.0
        p = intent.follow_up_probability
        return float(self.session.follow_up_probability if p is None else p)

    def latency_for(self, intent: Intent) -> LogNormal:
        return intent.reply_latency_ms or self.session.reply_latency_ms


# --------------------------------------------------------------------------- cross-field checks
def check_references(spec: RulesSpec, source: str) -> list[str]:
    """Problems that involve more than one section: names, all-zero weights per persona."""
    problems: list[str] = []
    personas = spec.persona_names()
    intents = spec.intent_names()
    for kind, names in (("persona", personas), ("intent", intents)):
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                problems.append(f"{source}: {kind}s[{i}].name: duplicate {kind} name '{n}' "
                                f"(names must be unique)")
            seen.add(n)
    for i, intent in enumerate(spec.intents):
        for p in intent.persona_weights:
            if p not in personas:
                problems.append(f"{source}: intents[{i}].persona_weights.{p}: unknown persona "
                                f"'{p}' ({_did_you_mean(p, personas)})")
        for f in intent.follow_ups:
            if f not in intents:
                problems.append(f"{source}: intents[{i}].follow_ups.{f}: unknown intent "
                                f"'{f}' ({_did_you_mean(f, intents)})")
    for j, persona in enumerate(spec.personas):
        if persona.weight > 0 and not any(spec.intent_weight(it, persona.name) > 0
                                          for it in spec.intents):
            problems.append(f"{source}: personas[{j}]: every intent has weight 0 for persona "
                            f"'{persona.name}' (give one a positive weight or persona_weights "
                            f"entry)")
    return problems


def check_locales_and_slots(spec: RulesSpec, source: str) -> list[str]:
    """Faker locales and provider methods exist."""
    from faker import Faker
    from faker.config import AVAILABLE_LOCALES

    problems: list[str] = []
    locales = sorted(AVAILABLE_LOCALES)
    for j, persona in enumerate(spec.personas):
        for loc in persona.locales:
            if loc not in AVAILABLE_LOCALES:
                problems.append(f"{source}: personas[{j}].locales.{loc}: unknown Faker locale "
                                f"({_did_you_mean(loc, locales)})")
    fakers = {name: s.faker for name, s in spec.slots.items() if s.faker is not None}
    if fakers:
        fk = Faker("en_US")
        for name, method in fakers.items():
            attr = getattr(fk, method, None) if not method.startswith("_") else None
            if attr is None or not callable(attr) or method in ("seed", "seed_instance"):
                known = [m for m in dir(fk) if not m.startswith("_")]
                problems.append(f"{source}: slots.{name}.faker: unknown Faker provider "
                                f"'{method}' ({_did_you_mean(method, known)})")
    return problems
