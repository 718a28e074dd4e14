"""The rules generator: vectorised sampling of users, sessions, turns and feedback.

Work is done in batches of users (about 20,000 interactions each): personas, locales,
consent, sessions per user, start times, turns, intents, reply quality, timings and feedback
are drawn for a whole batch with numpy; text comes from pools rendered once at the start
(Faker fills slot pools, Jinja2 renders a pool of scenarios per persona, locale and intent),
so no Faker call or template render happens per interaction. Arrow columns are built with
`take` on the pools and streamed into an `EvalsetWriter`; nothing accumulates across batches.

Random streams (all from `np.random.SeedSequence(seed)` spawn keys, so they are independent
and reproducible): `(0, locale)` seeds Faker for a locale, `(1, ...)` non-Faker slot pools,
`(2,)` scenario rendering choices, `(3, batch)` each batch of users.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synthloop.config import validate_data
from synthloop.errors import ConfigError
from synthloop.evalsets import (
    FEEDBACK_TYPE,
    MESSAGE_TYPE,
    TAG_TYPE,
    EvalsetWriter,
    columns_to_batch,
)
from synthloop.generate._rules._spec import (
    CountSpec,
    Intent,
    Persona,
    RulesSpec,
    check_locales_and_slots,
    check_references,
)
from synthloop.generate._rules._templates import (
    UNKEYABLE,
    CompiledTemplates,
    compile_templates,
)
from synthloop.progress import progress_bar
from synthloop.schema import EvalsetManifest, Provenance

GENERATOR_VERSION = "1"
"""Bumped whenever the same spec and seed would give different data."""
TARGET_BATCH_ROWS = 20_000
TAG_KEYS = ("persona", "intent", "locale", "quality", "consent")
NO_CONSENT = "none"


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedSpec:
    """A validated spec with its compiled templates and hash."""

    spec: RulesSpec
    path: Path
    source: str
    templates: CompiledTemplates
    spec_hash: str


def spec_hash(spec: RulesSpec, templates: CompiledTemplates) -> str:
    """sha256 over the canonical spec and the text of every template file it names."""
    h = hashlib.sha256()
    h.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True,
                        separators=(",", ":")).encode())
    for name in sorted(templates.files):
        h.update(b"\0" + name.encode() + b"\0" + templates.files[name].encode())
    return "sha256:" + h.hexdigest()


def load_spec(spec_path: str | Path, data: dict[str, Any] | None = None) -> LoadedSpec:
    """Validate a rules spec (file, or already-parsed `data` from it) and compile its templates.

    Raises one `ConfigError` listing every problem, each naming the file and the field.
    """
    from synthloop.config import interpolate_env, parse_document

    p = Path(spec_path)
    source = str(p)
    if data is None:
        data = parse_document(p)
    missing: list[str] = []
    data = interpolate_env(data, missing=missing)
    if missing:
        _raise(source, [f"{source}: {m}" for m in missing])
    spec = validate_data(data, RulesSpec, source)
    problems = check_references(spec, source) + check_locales_and_slots(spec, source)
    templates, tproblems = compile_templates(spec, p, source)
    problems += tproblems
    if problems:
        _raise(source, problems)
    return LoadedSpec(spec=spec, path=p, source=source, templates=templates,
                      spec_hash=spec_hash(spec, templates))


def _raise(source: str, problems: list[str]) -> None:
    head = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} problems"
    raise ConfigError(head, problems=problems)


# --------------------------------------------------------------------------- helpers
def _cdf(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w / w.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: index i with cdf[i-1] <= u < cdf[i] (cdf 1-D)."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _pick_rows(cdfs: np.ndarray, which: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw with a different distribution per element (`cdfs[which[j]]`)."""
    rows = cdfs[which]
    return np.minimum((rows <= u[:, None]).sum(axis=1), cdfs.shape[1] - 1)


def _pick_grouped(cdfs: np.ndarray, which: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Like `_pick_rows` for long CDFs: one `searchsorted` per distinct group."""
    out = np.zeros(len(u), dtype=np.int64)
    for g in np.unique(which):
        m = which == g
        out[m] = _pick(cdfs[g], u[m])
    return out


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: np.ndarray | float,
               n: int) -> np.ndarray:
    return np.asarray(median) * np.exp(np.asarray(sigma) * rng.standard_normal(n))


def _count_sampler(spec: CountSpec) -> tuple[np.ndarray, np.ndarray]:
    values, probs = spec.pmf()
    return values, _cdf(probs)


def _word_count(text: str) -> int:
    return max(1, len(text.split()))


# --------------------------------------------------------------------------- pools
@dataclass
class Pools:
    """Everything rendered once at the start and indexed with numpy afterwards."""

    locales: list[str]
    texts: pa.Array
    """Every rendered string; the columns index into it."""
    words: np.ndarray
    """Word count of each text (for read time)."""
    combo: np.ndarray
    """(persona, locale, intent) -> combo index, -1 where the persona never uses the locale."""
    input_tid: np.ndarray
    """Per scenario (combo * pool_size + k): text id of the first-ask input."""
    follow_tid: np.ndarray
    """Per scenario: text id of the follow-up input."""
    good_off: np.ndarray
    good_n: np.ndarray
    good_tids: np.ndarray
    bad_off: np.ndarray
    bad_n: np.ndarray
    bad_tids: np.ndarray
    """Reply candidates per scenario: good answers, and bad answers (or fallbacks)."""
    refs_good: pa.ListArray
    refs_bad: pa.ListArray
    """Reference lists per scenario."""
    comments: pa.Array
    comments_up_n: int
    comments_down_n: int


def _faker_seed(seed: int, key: tuple[int, ...]) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)[0]
               % (2**63))


def build_slot_columns(loaded: LoadedSpec, seed: int, locales: list[str]
                       ) -> list[dict[str, list[Any]]]:
    """Per locale, `pool_size` values of every slot (slot -> list of values)."""
    spec = loaded.spec
    k_n = spec.pool_size
    needs_faker = any(s.faker is not None or s.pattern is not None for s in spec.slots.values())
    if needs_faker:
        from faker import Faker
    out: list[dict[str, list[Any]]] = []
    for li, loc in enumerate(locales):
        fk: Any = None
        if needs_faker:  # a Faker per locale costs tens of ms: only when a slot calls it
            fk = Faker(loc)
            fk.seed_instance(_faker_seed(seed, (0, li)))
        columns: dict[str, list[Any]] = {}
        for si, (name, slot) in enumerate(sorted(spec.slots.items())):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, li, si)))
            where = f"{loaded.source}: slots.{name}"
            if slot.faker is not None:
                fn = getattr(fk, slot.faker)
                args = slot.args
                try:
                    columns[name] = [fn(**args) for _ in range(k_n)]
                except Exception as e:
                    raise ConfigError(f"{where}.args: Faker '{slot.faker}' failed: "
                                      f"{e.__class__.__name__}: {e}") from None
            elif slot.pattern is not None:
                bothify, pattern = fk.bothify, slot.pattern
                columns[name] = [bothify(pattern) for _ in range(k_n)]
            elif slot.values is not None:
                if isinstance(slot.values, dict):
                    keys = list(slot.values)
                    idx = _pick(_cdf(np.array(list(slot.values.values()))), rng.random(k_n))
                    columns[name] = [keys[i] for i in idx.tolist()]
                else:
                    vals = list(slot.values)
                    columns[name] = [vals[i] for i in rng.integers(0, len(vals), k_n).tolist()]
            elif slot.integers is not None:
                lo, hi = slot.integers
                columns[name] = rng.integers(lo, hi + 1, k_n).tolist()
            elif slot.dates is not None:
                d = slot.dates
                span = (d.end - d.start).days
                offs = rng.integers(0, span + 1, k_n)
                base = np.datetime64(d.start.isoformat(), "D")
                days, inverse = np.unique(offs, return_inverse=True)  # format each date once
                text = [(base + o).astype(datetime).strftime(d.format) for o in days.tolist()]
                columns[name] = [text[i] for i in np.asarray(inverse).reshape(-1).tolist()]
        out.append(columns)
    return out


def build_slot_pools(loaded: LoadedSpec, seed: int, locales: list[str]) -> list[list[dict[str, Any]]]:
    """Per locale, `pool_size` slot assignments (dicts slot -> value)."""
    out = []
    for columns in build_slot_columns(loaded, seed, locales):
        names = list(columns)
        out.append([dict(zip(names, row, strict=True))
                    for row in zip(*columns.values(), strict=True)] if names
                   else [{} for _ in range(loaded.spec.pool_size)])
    return out


class _ScenarioTexts:
    """Renders scenario texts for one run and numbers the distinct ones (text ids).

    A context value is frozen to a small int once (`CompiledTemplates.value_id`), so the
    render-cache key of a template at scenario k is a short tuple of ints, built for every k
    of a (persona, locale, intent) at once; the render context holds only the names the
    template reads. Same texts as rendering `{**constants, **slots at k, persona, traits,
    locale, intent}` in full, without copying that context per scenario.
    """

    def __init__(self, loaded: LoadedSpec, slot_cols: list[dict[str, list[Any]]]) -> None:
        self.tpl = loaded.templates
        self.source = loaded.source
        self.k_n = loaded.spec.pool_size
        self.constants = loaded.spec.constants
        vid = self.tpl.value_id
        self.const_ids = {n: vid(v) for n, v in self.constants.items()}
        self.slot_cols = slot_cols
        self.slot_ids = [{n: [vid(v) for v in col] for n, col in cols.items()}
                         for cols in slot_cols]
        self.texts: list[str] = []
        self._index: dict[str, int] = {}
        self._known: dict[tuple[Any, ...], int] = {}
        """Render-cache key -> text id."""

    def start(self, persona: Persona, li: int, locale: str, intent: Intent) -> None:
        """Render the next texts for this persona, locale (index `li`) and intent."""
        vid = self.tpl.value_id
        self.persona, self.locale = persona.name, locale
        self.builtin = {"persona": persona.name, "traits": persona.traits, "locale": locale,
                        "intent": intent.name}
        self.builtin_ids = {n: vid(v) for n, v in self.builtin.items()}
        self.cols, self.col_ids = self.slot_cols[li], self.slot_ids[li]
        self._keys: dict[str, list[tuple[Any, ...]]] = {}

    def _path_keys(self, path: str) -> list[tuple[Any, ...]]:
        """The cache key of `path` at every k (see `CompiledTemplates.cache_key`)."""
        parts: list[Any] = []
        for n in self.tpl.used[path]:  # builtins override slots, slots override constants
            if n in self.builtin_ids:
                parts.append(repeat(self.builtin_ids[n], self.k_n))
            elif n in self.col_ids:
                parts.append(self.col_ids[n])
            else:
                parts.append(repeat(self.const_ids.get(n), self.k_n))
        keys = self._keys[path] = list(zip(repeat(path, self.k_n), *parts, strict=True))
        return keys

    def tid(self, path: str, k: int) -> int:
        """Text id of template `path` rendered for scenario k."""
        keys = self._keys.get(path)
        key = (keys if keys is not None else self._path_keys(path))[k]
        got = self._known.get(key)
        if got is not None:
            return got
        ctx: dict[str, Any] = {}
        for n in self.tpl.used[path]:
            if n in self.builtin:
                ctx[n] = self.builtin[n]
            elif n in self.cols:
                ctx[n] = self.cols[n][k]
            elif n in self.constants:
                ctx[n] = self.constants[n]
        cacheable = UNKEYABLE not in key
        text = self.tpl.render_keyed(path, key if cacheable else None, ctx, self.source,
                                     self.persona, self.locale)
        got = self._index.get(text)
        if got is None:
            got = self._index[text] = len(self.texts)
            self.texts.append(text)
        if cacheable:
            self._known[key] = got
        return got


def build_pools(loaded: LoadedSpec, seed: int) -> Pools:
    spec = loaded.spec
    k_n = spec.pool_size
    locales = sorted({loc for p in spec.personas for loc in p.locales})
    scenes = _ScenarioTexts(loaded, build_slot_columns(loaded, seed, locales))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    n_p, n_l, n_i = len(spec.personas), len(locales), len(spec.intents)
    combo = np.full((n_p, n_l, n_i), -1, dtype=np.int64)
    input_tid: list[int] = []
    follow_tid: list[int] = []
    good_lists: list[list[int]] = []
    bad_lists: list[list[int]] = []
    reply_bad_lists: list[list[int]] = []
    fallback = [f"fallback_bad_replies[{k}]" for k in range(len(spec.fallback_bad_replies))]
    tid = scenes.tid
    n_combo = 0
    for pi, persona in enumerate(spec.personas):
        for li, loc in enumerate(locales):
            if loc not in persona.locales or persona.locales[loc] <= 0:
                continue
            for ii, intent in enumerate(spec.intents):
                combo[pi, li, ii] = n_combo
                n_combo += 1
                n_t = len(intent.templates)
                n_f = len(intent.follow_up_templates)
                v_in = rng.integers(0, n_t, k_n).tolist()
                v_fu = rng.integers(0, max(n_f, 1), k_n).tolist()
                v_fb = rng.integers(0, len(spec.fallback_bad_replies), k_n).tolist()
                scenes.start(persona, li, loc, intent)
                in_paths = [f"intents[{ii}].templates[{t}]" for t in range(n_t)]
                fu_paths = [f"intents[{ii}].follow_up_templates[{t}]" for t in range(n_f)]
                good_paths = [f"intents[{ii}].answers[{a}]" for a in range(len(intent.answers))]
                bad_paths = [f"intents[{ii}].bad_answers[{a}]"
                             for a in range(len(intent.bad_answers))]
                for k in range(k_n):
                    t_in = tid(in_paths[v_in[k]], k)
                    input_tid.append(t_in)
                    follow_tid.append(tid(fu_paths[v_fu[k]], k) if n_f else t_in)
                    good = [tid(p, k) for p in good_paths]
                    bad = [tid(p, k) for p in bad_paths]
                    good_lists.append(good)
                    bad_lists.append(bad)
                    reply_bad_lists.append(bad or [tid(fallback[v_fb[k]], k)])
    texts = scenes.texts

    def flat(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.array([len(x) for x in lists], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        ids = np.array([t for x in lists for t in x], dtype=np.int64)
        return off, n, ids

    comments = list(spec.feedback.comments.up) + list(spec.feedback.comments.down)
    text_arr = pa.array(texts, type=pa.string())

    def ref_lists(lists: list[list[int]]) -> pa.ListArray:
        off, n, ids = flat(lists)
        offsets = pa.array(np.concatenate([off, [off[-1] + n[-1] if len(n) else 0]])
                           .astype(np.int32), type=pa.int32())
        values = text_arr.take(pa.array(ids, type=pa.int64()))
        return pa.ListArray.from_arrays(offsets, values)

    g_off, g_n, g_ids = flat(good_lists)
    b_off, b_n, b_ids = flat(reply_bad_lists)
    return Pools(
        locales=locales, texts=text_arr,
        words=np.array([_word_count(t) for t in texts], dtype=np.float64),
        combo=combo, input_tid=np.array(input_tid, dtype=np.int64),
        follow_tid=np.array(follow_tid, dtype=np.int64),
        good_off=g_off, good_n=g_n, good_tids=g_ids,
        bad_off=b_off, bad_n=b_n, bad_tids=b_ids,
        refs_good=ref_lists(good_lists), refs_bad=ref_lists(bad_lists),
        comments=pa.array(comments, type=pa.string()),
        comments_up_n=len(spec.feedback.comments.up),
        comments_down_n=len(spec.feedback.comments.down),
    )


# --------------------------------------------------------------------------- the model, as arrays
@dataclass
class Model:
    """The spec as numpy arrays indexed by persona / intent / quality (0 = bad, 1 = good)."""

    persona_cdf: np.ndarray
    locale_cdf: np.ndarray          # (P, L)
    time_cdf: np.ndarray            # (P, days * 24)
    intent_cdf: np.ndarray          # (P, I) fresh-topic intent
    follow_cdf: np.ndarray          # (I, I)
    follow_p: np.ndarray            # (I,)
    reply_quality: np.ndarray       # (I,)
    turn_values: list[np.ndarray]
    turn_cdf: list[np.ndarray]      # per persona
    spu_values: np.ndarray
    spu_cdf: np.ndarray
    consent_uses: list[str]
    consent_rates: np.ndarray
    latency_median: np.ndarray      # (I,)
    latency_sigma: np.ndarray
    propensity: np.ndarray          # (P,)
    reading_wps: np.ndarray         # (P,)
    thumb_up: np.ndarray            # (I, 2)
    copy_rate: np.ndarray           # (I, 2)
    regen_rate: np.ndarray          # (2,)
    edit_rate: np.ndarray
    abandon_rate: np.ndarray
    clicks_mean: np.ndarray
    rating_cdf: np.ndarray          # (2, 5): 0 = down, 1 = up
    start_epoch_s: float
    max_turns: int
    mean_rows_per_user: float


def build_model(spec: RulesSpec, locales: list[str]) -> Model:
    fb = spec.feedback
    cal = spec.calendar
    n_i = len(spec.intents)
    intents = spec.intent_names()
    locale_w = np.zeros((len(spec.personas), len(locales)))
    time_w = []
    for pi, p in enumerate(spec.personas):
        for li, loc in enumerate(locales):
            locale_w[pi, li] = p.locales.get(loc, 0.0)
        hours = np.array(p.hour_weights or cal.hour_weights, dtype=np.float64)
        week = np.array(p.weekday_weights or cal.weekday_weights, dtype=np.float64)
        dow = (cal.start.weekday() + np.arange(cal.days)) % 7
        cells = week[dow][:, None] * hours[None, :]
        if cells.sum() <= 0:  # a persona active only on weekdays the range does not contain
            cells = np.ones_like(cells)
        time_w.append(cells.ravel())
    intent_w = np.array([[spec.intent_weight(it, p.name) for it in spec.intents]
                         for p in spec.personas])
    for pi in range(len(spec.personas)):
        if intent_w[pi].sum() <= 0:  # persona with weight 0: never drawn; keep the CDF valid
            intent_w[pi] = 1.0
    follow_w = np.zeros((n_i, n_i))
    for ii, it in enumerate(spec.intents):
        for name, w in it.follow_ups.items():
            follow_w[ii, intents.index(name)] = w
        if follow_w[ii].sum() <= 0:
            follow_w[ii, ii] = 1.0
    turn_values, turn_cdf = [], []
    means = []
    for p in spec.personas:
        v, c = _count_sampler(spec.turns_for(p))
        turn_values.append(v)
        turn_cdf.append(c)
        means.append(spec.turns_for(p).mean())
    pw = np.array([p.weight for p in spec.personas], dtype=np.float64)
    mean_turns = float((np.array(means) * pw / pw.sum()).sum())
    spu_v, spu_c = _count_sampler(spec.users.sessions_per_user)
    uses = sorted(spec.consent.rates)
    thumb = np.array([[spec.thumb_up_for(it).bad, spec.thumb_up_for(it).good]
                      for it in spec.intents])
    copy = np.array([[spec.copy_rate_for(it).bad, spec.copy_rate_for(it).good]
                     for it in spec.intents])
    start = datetime.combine(cal.start, time(0, 0), tzinfo=UTC).timestamp()
    return Model(
        persona_cdf=_cdf(pw), locale_cdf=_cdf(locale_w), time_cdf=_cdf(np.array(time_w)),
        intent_cdf=_cdf(intent_w), follow_cdf=_cdf(follow_w),
        follow_p=np.array([spec.follow_up_probability_for(it) for it in spec.intents]),
        reply_quality=np.array([it.reply_quality for it in spec.intents]),
        turn_values=turn_values, turn_cdf=turn_cdf, spu_values=spu_v, spu_cdf=spu_c,
        consent_uses=uses, consent_rates=np.array([spec.consent.rates[u] for u in uses]),
        latency_median=np.array([spec.latency_for(it).median for it in spec.intents]),
        latency_sigma=np.array([spec.latency_for(it).sigma for it in spec.intents]),
        propensity=np.array([p.feedback_propensity for p in spec.personas]),
        reading_wps=np.array([p.reading_speed_wps for p in spec.personas]),
        thumb_up=thumb, copy_rate=copy,
        regen_rate=np.array([fb.regenerate_rate.bad, fb.regenerate_rate.good]),
        edit_rate=np.array([fb.edit_rate.bad, fb.edit_rate.good]),
        abandon_rate=np.array([fb.abandon_rate.bad, fb.abandon_rate.good]),
        clicks_mean=np.array([fb.clicks_mean.bad, fb.clicks_mean.good]),
        rating_cdf=_cdf(np.array([fb.ratings.down, fb.ratings.up])),
        start_epoch_s=start,
        max_turns=int(max(int(v.max()) for v in turn_values)),
        mean_rows_per_user=max(spec.users.sessions_per_user.mean() * mean_turns, 1.0),
    )


# --------------------------------------------------------------------------- tallies
@dataclass
class Tally:
    """Counts for the manifest summary, accumulated per batch (small, fixed size)."""

    n_intents: int
    n_uses: int
    users: int = 0
    sessions: int = 0
    rows: int = 0
    consent_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    intent_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    intent_good: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    intent_up: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    intent_down: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    copied: int = 0
    regenerated: int = 0
    edited: int = 0
    abandoned: int = 0
    clicks: int = 0
    read_time: float = 0.0

    def __post_init__(self) -> None:
        self.consent_users = np.zeros(self.n_uses, dtype=np.int64)
        for name in ("intent_rows", "intent_good", "intent_up", "intent_down"):
            setattr(self, name, np.zeros(self.n_intents, dtype=np.int64))


# --------------------------------------------------------------------------- one batch
@dataclass
class BatchState:
    next_user: int = 0
    next_session: int = 0
    sessions_left: int = 0


def generate_batch(spec: RulesSpec, model: Model, pools: Pools, rng: np.random.Generator,
                   n_users: int, state: BatchState, tally: Tally) -> pa.RecordBatch:
    """Draw `n_users` users (fewer when the session budget runs out) and all their sessions."""
    k_n = spec.pool_size
    # ---- users: persona, locale, consent, sessions per user
    persona_u = _pick(model.persona_cdf, rng.random(n_users))
    locale_u = _pick_rows(model.locale_cdf, persona_u, rng.random(n_users))
    consent_u = rng.random((n_users, len(model.consent_uses))) < model.consent_rates
    spu = model.spu_values[_pick(model.spu_cdf, rng.random(n_users))]
    cum = np.cumsum(spu)
    if cum[-1] >= state.sessions_left:
        last = int(np.searchsorted(cum, state.sessions_left, side="left"))
        n_users = last + 1
        spu = spu[:n_users].copy()
        spu[-1] -= int(cum[last] - state.sessions_left)
        persona_u, locale_u, consent_u = persona_u[:n_users], locale_u[:n_users], consent_u[:n_users]
    n_s = int(spu.sum())
    # ---- sessions: owner, start time (by persona's hour x weekday pattern), turns, scenario
    sess_user = np.repeat(np.arange(n_users), spu)
    sess_persona = persona_u[sess_user]
    cell = _pick_grouped(model.time_cdf, sess_persona, rng.random(n_s))
    start_s = model.start_epoch_s + (cell + rng.random(n_s)) * 3600.0
    order = np.lexsort((start_s, sess_user))  # each user's sessions in time order
    start_s = start_s[order]
    u_turns = rng.random(n_s)
    turns = np.empty(n_s, dtype=np.int64)
    for pi in range(len(model.turn_cdf)):
        m = sess_persona == pi
        if m.any():
            turns[m] = model.turn_values[pi][_pick(model.turn_cdf[pi], u_turns[m])]
    scen_k = rng.integers(0, k_n, n_users)[sess_user]  # a returning user keeps their name
    sess_locale = locale_u[sess_user]
    # ---- rows (one per turn)
    n_r = int(turns.sum())
    first = np.concatenate([[0], np.cumsum(turns)[:-1]]).astype(np.int64)
    row_sess = np.repeat(np.arange(n_s), turns)
    turn = np.arange(n_r) - first[row_sess]
    is_last = turn == turns[row_sess] - 1
    row_persona = sess_persona[row_sess]
    intent = np.zeros(n_r, dtype=np.int64)
    good = np.zeros(n_r, dtype=bool)
    regen = np.zeros(n_r, dtype=bool)
    via_follow = np.zeros(n_r, dtype=bool)
    input_tid = np.zeros(n_r, dtype=np.int64)
    for t in range(int(turns.max()) if n_s else 0):
        rows = first[turns > t] + t
        n = len(rows)
        u_fresh, u_fu, u_pick, u_q, u_rg = rng.random((5, n))
        fresh = _pick_rows(model.intent_cdf, row_persona[rows], u_fresh)
        if t == 0:
            it = fresh
            fu = np.zeros(n, dtype=bool)
            repeat = np.zeros(n, dtype=bool)
        else:
            prev = rows - 1
            repeat = regen[prev]
            fu = u_fu < model.follow_p[intent[prev]]
            followed = _pick_rows(model.follow_cdf, intent[prev], u_pick)
            it = np.where(fu, followed, fresh)
            it = np.where(repeat, intent[prev], it)
            fu = np.where(repeat, via_follow[prev], fu)
        intent[rows] = it
        via_follow[rows] = fu
        q = u_q < model.reply_quality[it]
        good[rows] = q
        regen[rows] = (u_rg < model.regen_rate[q.astype(np.int64)]) & ~is_last[rows]
        s = rows_scenario(pools, row_persona[rows], sess_locale[row_sess[rows]], it,
                          scen_k[row_sess[rows]], k_n)
        tids = np.where(fu, pools.follow_tid[s], pools.input_tid[s])
        if t > 0:
            tids = np.where(repeat, input_tid[rows - 1], tids)
        input_tid[rows] = tids
    scen = rows_scenario(pools, row_persona, sess_locale[row_sess], intent, scen_k[row_sess], k_n)
    q_i = good.astype(np.int64)
    # ---- the reply shown: one of the good answers, or one of the bad ones
    u_reply = rng.random(n_r)
    g_pick = pools.good_off[scen] + np.minimum((u_reply * pools.good_n[scen]).astype(np.int64),
                                               pools.good_n[scen] - 1)
    b_pick = pools.bad_off[scen] + np.minimum((u_reply * pools.bad_n[scen]).astype(np.int64),
                                              pools.bad_n[scen] - 1)
    reply_tid = np.where(good, pools.good_tids[g_pick], pools.bad_tids[b_pick])
    # ---- timings
    latency = _lognormal(rng, model.latency_median[intent], model.latency_sigma[intent], n_r)
    latency = np.round(latency, 1)
    think = _lognormal(rng, spec.session.think_time_s.median, spec.session.think_time_s.sigma, n_r)
    delta = np.zeros(n_r)
    later = turn > 0
    delta[later] = latency[np.flatnonzero(later) - 1] / 1000.0 + think[later]
    csum = np.cumsum(delta)
    ts_s = start_s[row_sess] + (csum - csum[first[row_sess]])
    ts_us = np.floor(ts_s * 1e6).astype(np.int64)
    # ---- feedback
    p_explicit = np.minimum(
        spec.feedback.explicit_rate * model.propensity[row_persona]
        * np.where(good, 1.0, spec.feedback.bad_reply_multiplier), 1.0)
    u_fb = rng.random((8, n_r))
    explicit = u_fb[0] < p_explicit
    up = explicit & (u_fb[1] < model.thumb_up[intent, q_i])
    down = explicit & ~up
    rated = explicit & (u_fb[2] < spec.feedback.rating_rate)
    stars = np.zeros(n_r, dtype=np.int8)
    if rated.any():
        stars[rated] = 1 + _pick_rows(model.rating_cdf, up[rated].astype(np.int64), u_fb[3][rated])
    commented = explicit & (u_fb[4] < spec.feedback.comment_rate)
    c_up = (u_fb[5] * pools.comments_up_n).astype(np.int64)
    c_down = pools.comments_up_n + (u_fb[5] * pools.comments_down_n).astype(np.int64)
    comment_idx = np.where(up, c_up, c_down)
    commented &= np.where(up, pools.comments_up_n > 0, pools.comments_down_n > 0)
    delay = np.round(_lognormal(rng, spec.feedback.delay_s.median, spec.feedback.delay_s.sigma,
                                n_r), 2)
    read = pools.words[reply_tid] / model.reading_wps[row_persona]
    read = np.round(read * np.exp(spec.feedback.read_time_sigma * rng.standard_normal(n_r)), 2)
    clicks = rng.poisson(model.clicks_mean[q_i]).astype(np.int32)
    copied = u_fb[6] < model.copy_rate[intent, q_i]
    edited = (u_fb[7] < model.edit_rate[q_i]) & ~is_last & ~regen
    abandoned = (rng.random(n_r) < model.abandon_rate[q_i]) & is_last
    # ---- history: prior turns of the session, without replies that were regenerated
    kept = ~regen
    kept_rows = np.flatnonzero(kept)
    kept_before = np.cumsum(kept) - kept  # kept rows before each row (global)
    sess_kept_start = kept_before[first]
    n_hist = 2 * (kept_before - sess_kept_start[row_sess])
    h_off = np.concatenate([[0], np.cumsum(n_hist)]).astype(np.int64)
    n_msg = int(h_off[-1])
    msg_row = np.repeat(np.arange(n_r), n_hist)
    j = np.arange(n_msg) - h_off[msg_row]
    src = kept_rows[sess_kept_start[row_sess[msg_row]] + j // 2]
    msg_tid = np.where(j % 2 == 0, input_tid[src], reply_tid[src])
    roles = pa.array(["user", "assistant"], type=pa.string()).take(pa.array(j % 2))
    history = pa.ListArray.from_arrays(
        pa.array(h_off.astype(np.int32), type=pa.int32()),
        pa.StructArray.from_arrays([roles, pools.texts.take(pa.array(msg_tid))],
                                   fields=list(MESSAGE_TYPE)))
    # ---- ids and tags
    sess_ids = [f"s{x:07d}" for x in range(state.next_session, state.next_session + n_s)]
    user_ids = [f"u{x:07d}" for x in range(state.next_user, state.next_user + n_users)]
    sess_arr = pa.array(sess_ids, type=pa.string())
    case_ids = [f"{sess_ids[s]}-t{t}" for s, t in zip(row_sess.tolist(), turn.tolist(), strict=True)]
    mask_bits = (consent_u.astype(np.int64) << np.arange(consent_u.shape[1])).sum(axis=1)
    masks, mask_idx = np.unique(mask_bits, return_inverse=True)
    consent_strs = [",".join(u for b, u in enumerate(model.consent_uses) if m >> b & 1) or NO_CONSENT
                    for m in masks.tolist()]
    tag_values = (list(spec.persona_names()) + list(spec.intent_names()) + list(pools.locales)
                  + ["bad", "good"] + consent_strs)
    o_i = len(spec.personas)
    o_l = o_i + len(spec.intents)
    o_q = o_l + len(pools.locales)
    o_c = o_q + 2
    tag_idx = np.stack([row_persona, o_i + intent, o_l + sess_locale[row_sess], o_q + q_i,
                        o_c + np.asarray(mask_idx).reshape(-1)[sess_user[row_sess]]], axis=1).ravel()
    n_tags = len(TAG_KEYS)
    tags = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n_tags * n_r + 1, n_tags, dtype=np.int32), type=pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(list(TAG_KEYS), type=pa.string()).take(
                pa.array(np.tile(np.arange(n_tags), n_r))),
             pa.array(tag_values, type=pa.string()).take(pa.array(tag_idx))],
            fields=list(TAG_TYPE)))
    feedback = pa.StructArray.from_arrays(
        [
            pa.array(["none", "up", "down"], type=pa.string()).take(
                pa.array(np.where(up, 1, np.where(down, 2, 0)))),
            pa.array(stars, type=pa.int8(), mask=~rated),
            pools.comments.take(pa.array(comment_idx, mask=~commented)),
            pa.array(clicks, type=pa.int32()),
            pa.array(read, type=pa.float64()),
            pa.nulls(n_r, type=pa.float64()),
            pa.array(copied),
            pa.array(regen),
            pa.array(edited),
            pa.array(abandoned),
            pa.array(delay, type=pa.float64(), mask=~explicit),
        ],
        fields=list(FEEDBACK_TYPE))
    batch = columns_to_batch({
        "case_id": pa.array(case_ids, type=pa.string()),
        "session_id": sess_arr.take(pa.array(row_sess)),
        "user_id": pa.array(user_ids, type=pa.string()).take(pa.array(sess_user[row_sess])),
        "turn": pa.array(turn.astype(np.int32), type=pa.int32()),
        "timestamp": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        "history": history,
        "input": pools.texts.take(pa.array(input_tid)),
        "references_good": pools.refs_good.take(pa.array(scen)),
        "references_bad": pools.refs_bad.take(pa.array(scen)),
        "reply": pools.texts.take(pa.array(reply_tid)),
        "reply_latency_ms": pa.array(latency, type=pa.float64()),
        "expected_feedback": feedback,
        "tags": tags,
    })
    # ---- bookkeeping
    state.next_user += n_users
    state.next_session += n_s
    state.sessions_left -= n_s
    tally.users += n_users
    tally.sessions += n_s
    tally.rows += n_r
    tally.consent_users += consent_u.sum(axis=0)
    n_i = tally.n_intents
    tally.intent_rows += np.bincount(intent, minlength=n_i)
    tally.intent_good += np.bincount(intent[good], minlength=n_i)
    tally.intent_up += np.bincount(intent[up], minlength=n_i)
    tally.intent_down += np.bincount(intent[down], minlength=n_i)
    tally.copied += int(copied.sum())
    tally.regenerated += int(regen.sum())
    tally.edited += int(edited.sum())
    tally.abandoned += int(abandoned.sum())
    tally.clicks += int(clicks.sum())
    tally.read_time += float(read.sum())
    return batch


def rows_scenario(pools: Pools, persona: np.ndarray, locale: np.ndarray, intent: np.ndarray,
                  k: np.ndarray, k_n: int) -> np.ndarray:
    return pools.combo[persona, locale, intent] * k_n + k


# --------------------------------------------------------------------------- the whole run
@dataclass
class RulesRun:
    """A prepared generation: spec, pools and model, ready to stream batches."""

    loaded: LoadedSpec
    seed: int
    sessions: int
    pools: Pools
    model: Model
    tally: Tally

    @property
    def users_per_batch(self) -> int:
        return max(1, int(TARGET_BATCH_ROWS / self.model.mean_rows_per_user))

    def batches(self) -> Iterator[pa.RecordBatch]:
        state = BatchState(sessions_left=self.sessions)
        b = 0
        while state.sessions_left > 0:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(3, b)))
            yield generate_batch(self.loaded.spec, self.model, self.pools, rng,
                                 self.users_per_batch, state, self.tally)
            b += 1


def prepare(loaded: LoadedSpec, seed: int, sessions: int) -> RulesRun:
    pools = build_pools(loaded, seed)
    model = build_model(loaded.spec, pools.locales)
    tally = Tally(n_intents=len(loaded.spec.intents), n_uses=len(model.consent_uses))
    return RulesRun(loaded=loaded, seed=seed, sessions=sessions, pools=pools, model=model,
                    tally=tally)


def summaries(run: RulesRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """(consent_summary, extra feedback_summary) for the manifest."""
    t = run.tally
    spec = run.loaded.spec
    consent = {
        "policy_version": spec.consent.policy_version,
        "users": t.users,
        "uses": {u: int(n) for u, n in zip(run.model.consent_uses, t.consent_users, strict=True)},
    }
    by_intent: dict[str, Any] = {}
    for i, name in enumerate(spec.intent_names()):
        rows, up, down = int(t.intent_rows[i]), int(t.intent_up[i]), int(t.intent_down[i])
        by_intent[name] = {
            "cases": rows,
            "good_reply_rate": round(int(t.intent_good[i]) / rows, 6) if rows else None,
            "thumbs_up": up,
            "thumbs_down": down,
            "thumb_up_rate": round(up / (up + down), 6) if up + down else None,
        }
    n = max(t.rows, 1)
    feedback = {
        "by_intent": by_intent,
        "implicit": {
            "copied_share": round(t.copied / n, 6),
            "regenerated_share": round(t.regenerated / n, 6),
            "edited_share": round(t.edited / n, 6),
            "abandoned_session_share": round(t.abandoned / max(t.sessions, 1), 6),
            "mean_clicks": round(t.clicks / n, 6),
            "mean_read_time_s": round(t.read_time / n, 4),
        },
    }
    return consent, feedback


def provenance(run: RulesRun) -> Provenance:
    import faker

    return Provenance(
        generator="rules",
        spec_path=str(run.loaded.path),
        spec_hash=run.loaded.spec_hash,
        seed=run.seed,
        details={
            "sessions": run.sessions,
            "pool_size": run.loaded.spec.pool_size,
            "generator_version": GENERATOR_VERSION,
            "faker_version": faker.VERSION,
            "numpy_version": np.__version__,
            "python": ".".join(map(str, sys.version_info[:2])),
        },
    )


def write(run: RulesRun, out: Path, *, name: str | None, progress: bool | None
          ) -> EvalsetManifest:
    """Stream every batch into a new evalset version at `out` (atomic)."""
    with EvalsetWriter(out, provenance=provenance(run), name=name, count_sessions=False) as w, \
            progress_bar(run.sessions, "generate", enabled=progress) as bar:
        done = 0
        pool = pa.default_memory_pool()
        for batch in run.batches():
            w.write_batch(batch)
            del batch
            pool.release_unused()  # keeps peak memory flat however many batches follow
            bar.advance(run.tally.sessions - done, interactions=f"{run.tally.rows:,}")
            done = run.tally.sessions
        consent, feedback = summaries(run)
        return w.close(sessions=run.tally.sessions, interactions=run.tally.rows,
                       consent_summary=consent, feedback_summary=feedback)
