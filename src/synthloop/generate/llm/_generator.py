"""The `kind: llm` generator: plan a seeded persona x intent x style grid, prompt an
OpenAI-compatible endpoint for structured user messages (and replies, follow-ups and expected
feedback), deduplicate, refill dropped cells, and write an evalset version atomically.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from synthloop.config import file_hash, parse_document, validate_data
from synthloop.dedup import EXACT, NEAR, Deduplicator, diversity
from synthloop.errors import ConfigError, DataError, TargetError
from synthloop.evalsets import EvalsetWriter, check_new_version, open_evalset
from synthloop.generate import GenerateOptions
from synthloop.generate.llm._client import (
    Budget,
    BudgetExceeded,
    LLMClient,
    RequestFailed,
    estimate_prompt_tokens,
)
from synthloop.generate.llm._prompts import (
    DEFAULT_OPENER,
    DEFAULT_REACTION,
    DEFAULT_SYSTEM,
    Template,
    check_variables,
    compile_template,
    load_template,
)
from synthloop.generate.llm._spec import Intent, LLMSpec, Persona, Style
from synthloop.harness.cache import ResponseCache, make_key
from synthloop.progress import progress_bar
from synthloop.schema import (
    EvalCase,
    EvalsetManifest,
    Feedback,
    Message,
    Provenance,
    References,
    Thumb,
)

DEFAULT_CACHE = Path(".synthloop") / "cache.sqlite"
REACTION_VARIABLES = ("conversation", "want_feedback", "want_follow_up", "turn")
"""What `reaction_template` sees besides the opener's variables."""
DEDUP_REPORT = "dedup_report.json"


# --------------------------------------------------------------------------- structured outputs
class UserMessage(BaseModel):
    """What the model returns for an opening message."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True,
                              use_attribute_docstrings=True)

    message: str = Field(min_length=1, max_length=4000)
    """The user's message, exactly as typed."""


class Reaction(BaseModel):
    """What the model returns after a reply: expected feedback and the next message."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    thumb: Literal["up", "down", "none"]
    """Thumb the user would give the reply (`none` is the usual case)."""
    rating: int | None = Field(ge=1, le=5)
    """1-5 stars, or null."""
    comment: str | None = Field(max_length=1000)
    """A short comment, or null."""
    follow_up: str | None = Field(max_length=4000)
    """The user's next message, or null to stop."""


# --------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Cell:
    """One grid cell: which user (persona, locale) wants what (intent), written how (style)."""

    index: int
    persona: Persona
    intent: Intent
    style: Style
    locale: str


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from parts (stable across runs and platforms)."""
    return int(make_key("synthloop.llm.seed", *parts)[:8], 16) & 0x7FFFFFFF


def _weighted(rng: random.Random, items: Sequence[Any], weights: Sequence[float]) -> Any:
    return rng.choices(items, weights=weights, k=1)[0]


def _style_for(rng: random.Random, styles: Sequence[Style], persona: Persona) -> Style:
    weights = [persona.style_weights.get(s.name, s.weight) for s in styles]
    if not any(w > 0 for w in weights):
        weights = [s.weight for s in styles]
    return _weighted(rng, styles, weights)


def plan_cells(spec: LLMSpec, n: int, seed: int,
               skeleton: Sequence[dict[str, str]] | None = None) -> list[Cell]:
    """The seeded grid: `n` cells drawn from the catalogs (or from skeleton rows)."""
    rng = random.Random(f"synthloop.llm.grid:{seed}")
    cells: list[Cell] = []
    if skeleton is None:
        pw = [p.weight for p in spec.personas]
        iw = [i.weight for i in spec.intents]
        for idx in range(n):
            persona = _weighted(rng, spec.personas, pw)
            intent = _weighted(rng, spec.intents, iw)
            style = _style_for(rng, spec.styles, persona)
            cells.append(Cell(idx, persona, intent, style, persona.locale))
        return cells
    personas = {p.name: p for p in spec.personas}
    intents = {i.name: i for i in spec.intents}
    for idx in range(n):
        row = skeleton[rng.randrange(len(skeleton))]
        pname, iname = row["persona"], row["intent"]
        persona = personas.get(pname) or Persona(name=pname, description="")
        intent = intents.get(iname) or Intent(name=iname, description=iname.replace("_", " "))
        locale = row.get("locale") or persona.locale
        style = _style_for(rng, spec.styles, persona)
        cells.append(Cell(idx, persona, intent, style, locale))
    return cells


def load_skeleton(spec: LLMSpec, spec_path: Path, seed: int) -> tuple[list[dict[str, str]], str]:
    """Grounded mode: (persona, intent, locale) rows of an evalset's session openers, or of an
    evalset made on the fly from a rules (or other non-llm) spec. Returns rows and a hash."""
    ref = spec.personas_from
    assert ref is not None
    candidates = [spec_path.parent / ref, Path(ref)]
    path = next((c for c in candidates if c.exists()), None)
    if path is not None and path.is_file():
        from synthloop.generate import generators, spec_kind

        data = parse_document(path)
        kind = spec_kind(path, data)
        if kind == "llm":
            raise ConfigError(f"{spec_path}: personas_from: {ref} is an llm spec; point it at a "
                              "rules or sdv spec, or at an evalset")
        runner = generators.get(kind)
        with tempfile.TemporaryDirectory(prefix="synthloop-skeleton-") as td:
            out = Path(td) / "skeleton"
            runner(path, data, out, GenerateOptions(seed=seed, progress=False))
            return _skeleton_rows(out, spec_path, ref)
    return _skeleton_rows(path if path is not None else ref, spec_path, ref)


def _skeleton_rows(where: str | Path, spec_path: Path, ref: str) -> tuple[list[dict[str, str]], str]:
    try:
        es = open_evalset(where)
    except DataError as e:
        raise ConfigError(f"{spec_path}: personas_from: {e}") from None
    table = es.table().select(["turn", "tags"])
    rows: list[dict[str, str]] = []
    for turn, tags in zip(table.column("turn").to_pylist(), table.column("tags").to_pylist(),
                          strict=True):
        if turn:
            continue
        t = {x["key"]: x["value"] for x in (tags or [])}
        if t.get("persona") and t.get("intent"):
            rows.append({"persona": t["persona"], "intent": t["intent"],
                         **({"locale": t["locale"]} if t.get("locale") else {})})
    if not rows:
        raise ConfigError(f"{spec_path}: personas_from: {ref} has no session openers tagged "
                          "with persona and intent", hint="use an evalset from the rules or sdv "
                          "generator, whose cases carry persona/intent tags")
    return rows, es.content_hash


# --------------------------------------------------------------------------- sessions
@dataclass
class Turn:
    user: str
    reply: str | None = None
    feedback: Feedback | None = None


@dataclass
class SessionOutcome:
    cell: Cell
    variant: int
    status: str
    """`ok`, `refusal`, `invalid_output`, `transport_error` or `budget`."""
    turns: list[Turn] = field(default_factory=list)
    error: str | None = None
    raw: str | None = None


@dataclass
class Prompts:
    system: Template
    opener: Template
    reaction: Template
    assistant_system: Template


def load_prompts(spec: LLMSpec, spec_path: Path) -> Prompts:
    return Prompts(
        system=load_template(spec.system_prompt, DEFAULT_SYSTEM, field="system_prompt",
                             spec_path=spec_path),
        opener=load_template(spec.prompt_template, DEFAULT_OPENER, field="prompt_template",
                             spec_path=spec_path),
        reaction=load_template(spec.reaction_template, DEFAULT_REACTION,
                               field="reaction_template", spec_path=spec_path),
        assistant_system=load_template(spec.assistant.system_prompt, "",
                                       field="assistant.system_prompt", spec_path=spec_path),
    )


def spec_hash(spec_path: Path, prompts: Prompts) -> str:
    """The spec's hash for provenance and the pipeline's stage cache: the spec file's bytes
    and the text of every prompt template it uses (the `.j2` files it names, or the shipped
    defaults), so editing a template file changes it like editing the spec does."""
    h = hashlib.sha256(file_hash(spec_path).encode())
    for name in ("system", "opener", "reaction", "assistant_system"):
        h.update(b"\0" + name.encode() + b"\0" + getattr(prompts, name).source.encode())
    return "sha256:" + h.hexdigest()


class SessionMaker:
    """Renders prompts and runs one session (opener, then replies/reactions per turn)."""

    def __init__(self, spec: LLMSpec, prompts: Prompts, client: LLMClient | None, seed: int,
                 spec_path: Path) -> None:
        self.spec = spec
        self.prompts = prompts
        self.client = client
        self.seed = seed
        self.spec_path = spec_path
        self._style_cache: dict[tuple[str, str, str, str], str] = {}
        self._style_templates: dict[str, Template] = {}

    def context(self, cell: Cell, variant: int, avoid: Sequence[str] = ()) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "product": self.spec.product.model_dump(),
            "persona": cell.persona.model_dump(),
            "intent": cell.intent.model_dump(),
            "style": cell.style.model_dump(),
            "locale": cell.locale,
            "avoid": list(avoid),
            "sample_id": f"{self.seed}-{cell.index}-{variant}",
            "variant": variant,
            "cell_index": cell.index,
        }
        key = (cell.style.name, cell.persona.name, cell.intent.name, cell.locale)
        if key not in self._style_cache:
            tmpl = self._style_templates.get(cell.style.name)
            if tmpl is None:
                tmpl = compile_template(cell.style.instruction,
                                        f"{self.spec_path}: styles[{cell.style.name}].instruction")
                self._style_templates[cell.style.name] = tmpl
            self._style_cache[key] = tmpl.render(**ctx)
        ctx["style_instruction"] = self._style_cache[key]
        return ctx

    def check_templates(self, cell: Cell, extra: Sequence[Template] = (),
                        extra_names: Sequence[str] = ()) -> None:
        """Every prompt template (and `extra` ones, which also see `extra_names`) may name
        only the variables it is rendered with: a typo in the reaction prompt, which is first
        rendered after paid requests, stops the command before any request (and in
        `--dry-run`)."""
        base = set(self.context(cell, 0))
        check_variables(self.prompts.system, base)
        check_variables(self.prompts.opener, base)
        check_variables(self.prompts.reaction, base | set(REACTION_VARIABLES))
        check_variables(self.prompts.assistant_system, {"product"})
        for style in self.spec.styles:
            check_variables(compile_template(
                style.instruction, f"{self.spec_path}: styles[{style.name}].instruction"),
                base - {"style_instruction"})
        for tmpl in extra:
            check_variables(tmpl, base | set(extra_names))

    def opener_messages(self, cell: Cell, variant: int, avoid: Sequence[str] = ()
                        ) -> list[dict[str, str]]:
        ctx = self.context(cell, variant, avoid)
        return [{"role": "system", "content": self.prompts.system.render(**ctx)},
                {"role": "user", "content": self.prompts.opener.render(**ctx)}]

    def reaction_messages(self, cell: Cell, variant: int, conversation: list[dict[str, str]],
                          want_feedback: bool, want_follow_up: bool) -> list[dict[str, str]]:
        ctx = self.context(cell, variant)
        ctx.update(conversation=conversation, want_feedback=want_feedback,  # REACTION_VARIABLES
                   want_follow_up=want_follow_up, turn=len(conversation) // 2)
        return [{"role": "system", "content": self.prompts.system.render(**ctx)},
                {"role": "user", "content": self.prompts.reaction.render(**ctx)}]

    def assistant_messages(self, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
        system = self.prompts.assistant_system.render(product=self.spec.product.model_dump())
        return [{"role": "system", "content": system}, *conversation]

    def wants_follow_up(self, cell: Cell, variant: int, turn: int) -> bool:
        if turn + 1 >= self.spec.turns.max:
            return False
        rng = random.Random(f"synthloop.llm.turns:{self.seed}:{cell.index}:{variant}:{turn}")
        return rng.random() < self.spec.turns.follow_up_prob

    async def run(self, cell: Cell, variant: int, avoid: Sequence[str] = ()) -> SessionOutcome:
        try:
            return await self._run(cell, variant, avoid)
        except BudgetExceeded:
            return SessionOutcome(cell, variant, "budget", error="cost budget reached")
        except RequestFailed as e:
            return SessionOutcome(cell, variant, "transport_error", error=str(e))

    async def _run(self, cell: Cell, variant: int, avoid: Sequence[str]) -> SessionOutcome:
        client = self.client
        assert client is not None
        spec = self.spec
        res = await client.structured(
            self.opener_messages(cell, variant, avoid), UserMessage, schema_name="user_message",
            sample=("opener", self.seed, cell.index, variant), max_repairs=spec.max_repairs,
            seed=derive_seed(self.seed, cell.index, variant, "opener"),
            refusal_fields=("message",))
        if res.status != "ok" or res.value is None:
            status = "refusal" if res.status == "refusal" else "invalid_output"
            return SessionOutcome(cell, variant, status, error=res.error, raw=res.content)
        user = res.value.message.strip()
        turns: list[Turn] = []
        conversation: list[dict[str, str]] = []
        for t in range(spec.turns.max):
            want_follow_up = self.wants_follow_up(cell, variant, t)
            if not (spec.feedback or want_follow_up):
                turns.append(Turn(user))
                break
            conversation.append({"role": "user", "content": user})
            reply = await client.chat(
                self.assistant_messages(conversation),
                params=client.request_params(
                    temperature=spec.assistant.temperature, max_tokens=spec.assistant.max_tokens,
                    seed=derive_seed(self.seed, cell.index, variant, "reply", t)),
                sample=("reply", self.seed, cell.index, variant, t), model=spec.assistant.model)
            reply_text = (reply.content or reply.refusal or "").strip()
            conversation.append({"role": "assistant", "content": reply_text})
            react = await client.structured(
                self.reaction_messages(cell, variant, conversation, spec.feedback, want_follow_up),
                Reaction, schema_name="user_reaction",
                sample=("reaction", self.seed, cell.index, variant, t),
                max_repairs=spec.max_repairs,
                seed=derive_seed(self.seed, cell.index, variant, "reaction", t),
                refusal_fields=("follow_up",) if want_follow_up else ())
            if react.status != "ok" or react.value is None:
                status = "refusal" if react.status == "refusal" else "invalid_output"
                return SessionOutcome(cell, variant, status, turns=turns,
                                      error=f"turn {t}: {react.error}", raw=react.content)
            r = react.value
            fb = Feedback(thumb=Thumb(r.thumb), rating=r.rating, comment=r.comment or None) \
                if spec.feedback else None
            turns.append(Turn(user, reply_text, fb))
            nxt = (r.follow_up or "").strip()
            if not want_follow_up or not nxt:
                break
            user = nxt
        return SessionOutcome(cell, variant, "ok", turns=turns)


# --------------------------------------------------------------------------- orchestration
@dataclass
class GenerationResult:
    accepted: dict[int, SessionOutcome]
    dropped: list[dict[str, Any]]
    reasons: Counter[str]
    budget_stopped: bool
    unfilled: list[int]
    rounds: int


def session_id(seed: int, index: int) -> str:
    return f"llm-{seed}-{index:06d}"


async def generate_sessions(maker: SessionMaker, cells: Sequence[Cell], *, dedup_enabled: bool,
                            deduper: Deduplicator, refill_rounds: int,
                            progress: bool | None = None) -> GenerationResult:
    client = maker.client
    assert client is not None
    accepted: dict[int, SessionOutcome] = {}
    dropped: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    kept_text: dict[str, str] = {}
    pending: list[tuple[Cell, int, list[str]]] = [(c, 0, []) for c in cells]
    rounds = 0
    budget_stopped = False
    attempts = 0
    with progress_bar(len(cells), "generate (llm)", enabled=progress) as bar:
        for rnd in range(refill_rounds + 1):
            if not pending:
                break
            rounds = rnd + 1
            attempts += len(pending)
            bar.set_total(attempts)            # refill rounds add their sessions

            async def one(item: tuple[Cell, int, list[str]]) -> SessionOutcome:
                out = await maker.run(*item)
                bar.advance(1, retries=client.stats.retries,
                            cost=f"${client.stats.cost_usd:.4f}")
                return out

            outcomes = await asyncio.gather(*(one(p) for p in pending))
            if rnd == 0 and outcomes and all(o.status == "transport_error" for o in outcomes):
                raise TargetError(f"{client.endpoint.base_url}: every request failed "
                                  f"({outcomes[0].error})",
                                  hint="check that the server is running and endpoint.base_url")
            nxt: list[tuple[Cell, int, list[str]]] = []
            for o in sorted(outcomes, key=lambda o: o.cell.index):
                base = {"cell": o.cell.index, "variant": o.variant,
                        "persona": o.cell.persona.name, "intent": o.cell.intent.name,
                        "style": o.cell.style.name}
                if o.status == "budget":
                    budget_stopped = True
                    continue
                if o.status != "ok":
                    reasons[o.status] += 1
                    dropped.append({**base, "reason": o.status, "error": o.error,
                                    "text": (o.raw or "")[:500] or None})
                    nxt.append((o.cell, o.variant + 1, []))
                    continue
                opener = o.turns[0].user
                sid = session_id(maker.seed, o.cell.index)
                if dedup_enabled:
                    d = deduper.add(sid, opener)
                    if not d.kept:
                        reasons[d.reason or NEAR] += 1
                        dup_text = kept_text.get(d.duplicate_of or "")
                        dropped.append({**base, "reason": d.reason, "text": opener,
                                        "similarity": round(d.similarity or 0.0, 4),
                                        "duplicate_of": d.duplicate_of,
                                        "duplicate_of_text": dup_text})
                        nxt.append((o.cell, o.variant + 1, [dup_text] if dup_text else []))
                        continue
                kept_text[sid] = opener
                accepted[o.cell.index] = o
            bar.advance(0, dropped=len(dropped))
            if budget_stopped or client.budget.exhausted:
                budget_stopped = True
                break
            pending = nxt
    unfilled = sorted(c.index for c in cells if c.index not in accepted)
    return GenerationResult(accepted, dropped, reasons, budget_stopped, unfilled, rounds)


def outcome_cases(o: SessionOutcome, seed: int) -> list[EvalCase]:
    cell = o.cell
    sid = session_id(seed, cell.index)
    uid = "u-" + make_key("synthloop.llm.user", seed, cell.index)[:12]
    refs = References(good=[cell.intent.reference_answer] if cell.intent.reference_answer else [])
    tags = {"persona": cell.persona.name, "intent": cell.intent.name, "style": cell.style.name,
            "locale": cell.locale}
    history: list[Message] = []
    cases = []
    for t, turn in enumerate(o.turns):
        cases.append(EvalCase(case_id=f"{sid}-t{t}", session_id=sid, user_id=uid, turn=t,
                              history=list(history), input=turn.user, references=refs,
                              reply=turn.reply, expected_feedback=turn.feedback, tags=tags))
        history.append(Message(role="user", content=turn.user))
        if turn.reply is not None:
            history.append(Message(role="assistant", content=turn.reply))
    return cases


# --------------------------------------------------------------------------- dry run
def expected_turns(spec: LLMSpec) -> float:
    """Expected user turns per session: 1 + p + p^2 + ... up to `turns.max`."""
    p = spec.turns.follow_up_prob
    return sum(p ** t for t in range(spec.turns.max))


def dry_run_plan(spec: LLMSpec, maker: SessionMaker, cells: Sequence[Cell],
                 budget: float | None) -> dict[str, Any]:
    """Counts per persona/intent/style and an estimated token count, without any call."""
    ep = spec.endpoint
    opener_prompt = sum(estimate_prompt_tokens(maker.opener_messages(c, 0)) for c in cells)
    et = expected_turns(spec)
    # follow-up turns: each needs a reply and a reaction; feedback adds them to every turn
    reacted_turns = et if spec.feedback else et - 1
    n = len(cells)
    replies = n * reacted_turns
    reactions = n * reacted_turns
    sys_ctx_chars = len(maker.assistant_messages([])[0]["content"])
    avg_msg = ep.max_tokens * 3  # a worst-case message length in characters
    conv_chars = (avg_msg + spec.assistant.max_tokens * 3) * max(1.0, et) / 2
    reply_prompt = replies * ((sys_ctx_chars + conv_chars) / 3 + 8)
    reaction_prompt = reactions * (opener_prompt / max(1, n) + conv_chars / 3 + 8)
    prompt_tokens = int(opener_prompt + reply_prompt + reaction_prompt)
    completion_tokens = int(n * ep.max_tokens + replies * spec.assistant.max_tokens
                            + reactions * ep.max_tokens)
    cost = spec.pricing.cost(prompt_tokens, completion_tokens)
    return {
        "sessions": n,
        "personas": dict(Counter(c.persona.name for c in cells).most_common()),
        "intents": dict(Counter(c.intent.name for c in cells).most_common()),
        "styles": dict(Counter(c.style.name for c in cells).most_common()),
        "locales": dict(Counter(c.locale for c in cells).most_common()),
        "expected_turns_per_session": round(et, 3),
        "requests": {"openers": n, "replies": round(replies), "reactions": round(reactions)},
        "estimated_prompt_tokens": prompt_tokens,
        "max_completion_tokens": completion_tokens,
        "estimated_cost_usd": round(cost, 6),
        "budget_usd": budget,
    }


def print_plan(plan: dict[str, Any], spec: LLMSpec, seed: int) -> None:
    ep = spec.endpoint
    print(f"dry run: llm generator, {plan['sessions']:,} sessions (seed {seed}) from "
          f"{ep.model} at {ep.base_url}")
    for key in ("personas", "intents", "styles", "locales"):
        counts = plan[key]
        total = sum(counts.values()) or 1
        cells = ", ".join(f"{k} {v:,} ({v / total:.0%})" for k, v in counts.items())
        print(f"  {key:<9} {cells}")
    r = plan["requests"]
    print(f"  turns     max {spec.turns.max}, expected {plan['expected_turns_per_session']} per "
          f"session; feedback {'on' if spec.feedback else 'off'}")
    print(f"  requests  about {r['openers'] + r['replies'] + r['reactions']:,} (openers "
          f"{r['openers']:,}, replies {r['replies']:,}, reactions {r['reactions']:,}), plus "
          f"retries, repairs and up to {spec.refill_rounds} refill rounds")
    print(f"  tokens    prompt ~{plan['estimated_prompt_tokens']:,} (estimate: characters / 3), "
          f"completion <= {plan['max_completion_tokens']:,} (max_tokens)")
    pr = spec.pricing
    print(f"  cost      <= ${plan['estimated_cost_usd']:.4f} at ${pr.prompt_per_1k}/1k prompt, "
          f"${pr.completion_per_1k}/1k completion"
          + (f"; budget ${plan['budget_usd']}" if plan["budget_usd"] is not None else ""))
    print("  nothing was called and nothing was written")


# --------------------------------------------------------------------------- entry point
def load_spec(spec_path: Path, data: dict[str, Any]) -> LLMSpec:
    from synthloop.config import interpolate_env

    missing: list[str] = []
    data = interpolate_env(data, missing=missing)
    if missing:
        problems = [f"{spec_path}: {m}" for m in missing]
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{spec_path}: {len(problems)} problems", problems=problems)
    return validate_data(data, LLMSpec, str(spec_path))


def run_spec(spec_path: Path, data: dict[str, Any], out: Path, options: GenerateOptions
             ) -> EvalsetManifest | None:
    """Generate an evalset version from a `kind: llm` spec (None on `--dry-run`)."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path, data)
    seed = spec.seed if options.seed is None else options.seed
    # n counts sessions, so --sessions is accepted as a synonym of -n
    n = options.n if options.n is not None else (
        options.sessions if options.sessions is not None else spec.n)
    if n < 1:
        raise ConfigError(f"-n/--sessions must be at least 1 (got {n})")
    budget_usd = options.max_cost if options.max_cost is not None else spec.max_cost
    if budget_usd is not None and budget_usd <= 0:
        raise ConfigError(f"--max-cost must be above 0 (got {budget_usd})")
    if budget_usd is not None and spec.pricing.prompt_per_1k == 0 and \
            spec.pricing.completion_per_1k == 0:
        raise ConfigError(f"{spec_path}: --max-cost needs token prices",
                          hint="set pricing.prompt_per_1k and pricing.completion_per_1k")
    prompts = load_prompts(spec, spec_path)
    skeleton: list[dict[str, str]] | None = None
    skeleton_hash: str | None = None
    if spec.personas_from:
        skeleton, skeleton_hash = load_skeleton(spec, spec_path, seed)
    cells = plan_cells(spec, n, seed, skeleton)
    maker = SessionMaker(spec, prompts, None, seed, spec_path)
    maker.check_templates(cells[0])
    if options.dry_run:
        print_plan(dry_run_plan(spec, maker, cells, budget_usd), spec, seed)
        return None
    check_new_version(out)
    cache = ResponseCache(options.cache or DEFAULT_CACHE)
    budget = Budget(budget_usd)
    client = LLMClient(spec.endpoint, pricing=spec.pricing, concurrency=spec.concurrency,
                       cache=cache, budget=budget, source=str(spec_path))
    # fail before any request when the key is missing
    from synthloop.generate.llm._client import api_key_for

    api_key_for(spec.endpoint, str(spec_path))
    if budget_usd is not None:
        first = client.worst_case_cost(maker.opener_messages(cells[0], 0), spec.endpoint.max_tokens)
        if first > budget_usd:
            raise ConfigError(f"--max-cost ${budget_usd} is below the worst-case cost of one "
                              f"request (${first:.6f}); nothing was generated",
                              hint="raise --max-cost or lower endpoint.max_tokens")
    maker.client = client
    deduper = Deduplicator(spec.dedup)

    async def main() -> GenerationResult:
        try:
            return await generate_sessions(maker, cells, dedup_enabled=spec.dedup.enabled,
                                           deduper=deduper, refill_rounds=spec.refill_rounds,
                                           progress=options.progress)
        finally:
            await client.aclose()

    try:
        result = asyncio.run(main())
    finally:
        cache.close()
    stats = client.stats
    cases: list[EvalCase] = []
    for idx in sorted(result.accepted):
        cases.extend(outcome_cases(result.accepted[idx], seed))
    if not cases:
        if result.budget_stopped:
            raise ConfigError(f"--max-cost ${budget_usd} ran out before one session was "
                              f"complete (spent ${stats.cost_usd:.6f}); nothing was written",
                              hint="raise --max-cost")
        raise DataError(f"{spec_path}: no usable message was generated "
                        f"({dict(result.reasons)}); nothing was written",
                        hint="check the endpoint's replies and the prompt templates")
    openers = [c.input for c in cases if c.turn == 0]
    all_inputs = [c.input for c in cases]
    div_openers = diversity(openers, seed=seed)
    div_all = diversity(all_inputs, seed=seed) if len(all_inputs) != len(openers) else div_openers
    notes: list[str] = []
    if result.budget_stopped:
        notes.append(f"stopped by the cost budget: spent ${stats.cost_usd:.6f} of "
                     f"${budget_usd}; {len(result.accepted):,} of {n:,} sessions written "
                     f"(the next request could have exceeded the budget)")
    elif result.unfilled:
        notes.append(f"{len(result.unfilled):,} of {n:,} grid cells could not be filled after "
                     f"{spec.refill_rounds} refill rounds (see {DEDUP_REPORT})")
    details: dict[str, Any] = {
        "endpoint": {"base_url": spec.endpoint.base_url, "model": spec.endpoint.model},
        "sessions_requested": n,
        "sessions_written": len(result.accepted),
        "refill_rounds_used": max(0, result.rounds - 1),
        "budget_usd": budget_usd,
        "budget_stopped": result.budget_stopped,
        **stats.as_dict(),
        "dropped": dict(sorted(result.reasons.items())),
        "diversity": div_openers,
    }
    if skeleton_hash:
        details["grounded_on"] = spec.personas_from
    provenance = Provenance(generator="llm", spec_path=str(spec_path),
                            spec_hash=spec_hash(spec_path, prompts), seed=seed,
                            source_data_hash=skeleton_hash, details=details)
    report = {
        "config": spec.dedup.model_dump(),
        "counts": {"generated_ok": len(result.accepted) + result.reasons[EXACT] +
                   result.reasons[NEAR], "kept": len(result.accepted),
                   **{r: result.reasons.get(r, 0) for r in
                      (EXACT, NEAR, "refusal", "invalid_output", "transport_error")}},
        "unfilled_cells": result.unfilled,
        "budget_stopped": result.budget_stopped,
        "diversity": {"openers": div_openers, "all_inputs": div_all},
        "dropped": result.dropped,
    }
    name = options.name or spec.name
    with EvalsetWriter(out, provenance=provenance, name=name) as writer:
        writer.write_cases(cases)
        writer.extra_files[DEDUP_REPORT] = report
        manifest = writer.close(interactions=len(cases), partial=result.budget_stopped,
                                notes=notes)
    _print_summary(stats.as_dict(), result, manifest, spec)
    return manifest


def _print_summary(stats: dict[str, Any], result: GenerationResult, manifest: EvalsetManifest,
                   spec: LLMSpec) -> None:
    tok = stats["tokens"]
    print(f"llm: {stats['requests']:,} requests ({stats['retries']:,} retries, "
          f"{stats['repairs']:,} repairs, {stats['cache_hits']:,} cache hits); tokens "
          f"{tok['prompt']:,} prompt + {tok['completion']:,} completion; cost "
          f"${stats['cost_usd']:.4f}")
    drops = ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items())) or "none"
    print(f"  dropped: {drops} (see {DEDUP_REPORT}); unfilled cells {len(result.unfilled)}")
