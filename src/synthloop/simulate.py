"""Simulated users: an LLM plays a persona with a goal against a target, turn by turn.

    from synthloop.simulate import simulate

    manifest = simulate("generators/llm_support.yaml", "configs/targets/v2.yaml", "runs/sim-v2",
                        evalset="evalsets/support-llm/v1")

For each scenario (a session opener of `evalset`, or a cell of the spec's persona x intent
grid) the target answers the user's message; the user LLM (the spec's `endpoint`, structured
output) then judges the reply as that persona, giving per-turn synthetic feedback (thumb,
rating) and deciding whether the goal is reached, to give up, or to write the next message, up
to `max_turns`. The target is called like the replay harness calls it: its timeout, retry and
fatal-error settings, and the same response-cache keys, so a target reply is never paid twice.

The output is a run directory (see `synthloop.runs`) that `synthloop score` and
`synthloop compare` accept, so a simulation is a replay mode to run against each model version:

    RUNDIR/
      manifest.json       RunManifest (scenario evalset hash and path, target fingerprint, ...)
      responses.parquet   one row per scenario (case_id = the scenario's case id): the target's
      responses.jsonl     last reply, summed latency and tokens, first error
      scores.parquet      per-scenario simulation metrics: sim_goal_reached, sim_gave_up,
      scores.json         sim_turns, sim_thumb_up_share, sim_thumb_down_share, sim_mean_rating
      transcripts.jsonl   one line per scenario: every turn's user message, reply, latency,
                          synthetic feedback and the user's decisions
      simulation.json     outcome counts and the user LLM's requests, tokens and cost
      scenarios/          (only without --evalset) the scenario evalset the run refers to

Scenarios from an evalset start with the evalset's message, so two model versions are compared
on the same openings; `compare` pairs them on scenario case ids. A run is written to a
temporary sibling directory and renamed into place when complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from synthloop import __version__
from synthloop.config import parse_document
from synthloop.errors import ConfigError, DataError, SynthloopError, TargetError
from synthloop.evalsets import Evalset, EvalsetWriter, open_evalset
from synthloop.generate.llm import (
    Budget,
    BudgetExceeded,
    Cell,
    Intent,
    LLMClient,
    LLMSpec,
    Persona,
    RequestFailed,
    SessionMaker,
    Style,
    UserMessage,
    derive_seed,
    load_prompts,
    load_spec,
    plan_cells,
)
from synthloop.generate.llm._prompts import DEFAULT_SIM_TURN, Template, load_template
from synthloop.harness._limits import RateLimiter
from synthloop.harness.cache import ResponseCache, make_key
from synthloop.progress import progress_bar
from synthloop.runs import SCORES_SCHEMA, RunDir, write_atomic
from synthloop.schema import (
    SCHEMA_VERSION,
    EvalCase,
    Feedback,
    Message,
    Provenance,
    Response,
    RunCounts,
    RunManifest,
    Thumb,
    Usage,
)

DEFAULT_CACHE = Path(".synthloop") / "cache.sqlite"
TARGET_CACHE_NAMESPACE = "synthloop-response/1"
"""The replay harness's cache namespace: target replies are shared with `synthloop replay`."""
TRANSCRIPTS = "transcripts.jsonl"
SUMMARY = "simulation.json"
SCENARIOS_DIR = "scenarios"

METRICS: dict[str, tuple[str, bool]] = {
    "sim_goal_reached": ("binary", True),
    "sim_gave_up": ("binary", False),
    "sim_turns": ("continuous", False),
    "sim_thumb_up_share": ("continuous", True),
    "sim_thumb_down_share": ("continuous", False),
    "sim_mean_rating": ("ordinal", True),
}
"""Per-scenario metrics written to scores.parquet: name -> (kind, higher is better)."""


class UserTurn(BaseModel):
    """What the simulated user returns after each reply."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    goal_reached: bool
    """The goal is fully achieved."""
    give_up: bool
    """The user gives up now."""
    thumb: Literal["up", "down", "none"]
    """Thumb for the last reply."""
    rating: int | None = Field(ge=1, le=5)
    """1-5 stars for the last reply, or null."""
    message: str | None = Field(max_length=4000)
    """The next message, or null to stop."""


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    """Case id the run's responses and scores use."""
    session_id: str
    persona: Persona
    intent: Intent
    style: Style
    locale: str
    goal: str
    opener: str | None
    """The first user message (from the evalset), or None to have the user LLM write it."""
    tags: dict[str, str]


def _goal(intent: Intent, fallback: str) -> str:
    return intent.goal or intent.description or fallback


def scenarios_from_evalset(spec: LLMSpec, es: Evalset, seed: int, n: int | None
                           ) -> list[Scenario]:
    """One scenario per session opener (turn 0) of the evalset, in evalset order."""
    personas = {p.name: p for p in spec.personas}
    intents = {i.name: i for i in spec.intents}
    styles = {s.name: s for s in spec.styles}
    out: list[Scenario] = []
    for case in es.iter_cases():
        if case.turn:
            continue
        tags = dict(case.tags)
        pname = tags.get("persona") or "user"
        persona = personas.get(pname) or Persona(name=pname)
        iname = tags.get("intent")
        intent = intents.get(iname or "") or Intent(name=iname or "ask",
                                                    description=f"get help with: {case.input}")
        style = styles.get(tags.get("style") or "")
        if style is None:
            rng = random.Random(f"synthloop.simulate.style:{seed}:{case.case_id}")
            weights = [persona.style_weights.get(s.name, s.weight) for s in spec.styles]
            if not any(w > 0 for w in weights):
                weights = [s.weight for s in spec.styles]
            style = rng.choices(spec.styles, weights=weights, k=1)[0]
        out.append(Scenario(case.case_id, case.session_id or case.case_id, persona, intent,
                            style, tags.get("locale") or persona.locale,
                            _goal(intent, case.input), case.input, tags))
        if n is not None and len(out) >= n:
            break
    if not out:
        raise DataError(f"{es.path}: the evalset has no session openers (cases with turn 0)")
    return out


def scenarios_from_grid(spec: LLMSpec, seed: int, n: int) -> list[Scenario]:
    out = []
    for cell in plan_cells(spec, n, seed):
        sid = f"sim-{seed}-{cell.index:06d}"
        tags = {"persona": cell.persona.name, "intent": cell.intent.name,
                "style": cell.style.name, "locale": cell.locale}
        out.append(Scenario(sid, sid, cell.persona, cell.intent, cell.style, cell.locale,
                            _goal(cell.intent, cell.intent.name), None, tags))
    return out


# --------------------------------------------------------------------------- target calls
class TargetCaller:
    """Calls a target the way the replay harness does: timeout, retries honouring
    Retry-After, fatal errors, its `rpm`/`tpm` limits, and the harness's response-cache
    keys."""

    def __init__(self, target: Any, cache: ResponseCache | None, concurrency: int) -> None:
        from synthloop.targets import TargetSettings

        self.target = target
        self.cache = cache
        settings = getattr(target, "settings", None)
        self.settings = settings if isinstance(settings, TargetSettings) else TargetSettings(
            kind=target.fingerprint.kind)
        self._sem = asyncio.Semaphore(concurrency)
        self._digest = target.fingerprint.digest()
        self.requests = 0
        self.retries = 0
        self.cache_hits = 0
        self._rng = random.Random(0)  # backoff jitter only
        self.rpm = RateLimiter(self.settings.rpm) if self.settings.rpm else None
        self.tpm = RateLimiter(self.settings.tpm) if self.settings.tpm else None

    def key(self, case: EvalCase, sample: int = 0) -> str:
        identity_fn = getattr(self.target, "request_identity", None)
        identity = identity_fn(case, sample) if identity_fn is not None else {
            "history": [m.model_dump() for m in case.history], "input": case.input,
            "context": case.context, "sample": sample}
        return make_key(TARGET_CACHE_NAMESPACE, self._digest, identity)

    def _estimate(self, case: EvalCase) -> int:
        estimate = getattr(self.target, "estimate_tokens", None)
        return int(estimate(case)) if estimate is not None else 1

    def _fatal(self, e: BaseException) -> bool:
        is_fatal = getattr(self.target, "is_fatal", None)
        if is_fatal is not None:
            return bool(is_fatal(e))
        status = getattr(e, "status", None)
        return status in self.settings.fatal_status

    def _should_retry(self, e: BaseException) -> bool:
        if isinstance(e, SynthloopError) or self._fatal(e):
            return False
        if isinstance(e, TimeoutError):
            return True
        should = getattr(self.target, "should_retry", None)
        return bool(should(e)) if should is not None else False

    async def complete(self, case: EvalCase) -> Response:
        key = self.key(case) if self.cache is not None else None
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                usage = hit.get("usage") or {}
                return Response(case_id=case.case_id, output=hit.get("output"),
                                latency_ms=hit.get("latency_ms"), attempts=0, cached=True,
                                usage=Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                            completion_tokens=int(
                                                usage.get("completion_tokens") or 0)))
        s = self.settings
        attempts = 0
        async with self._sem:
            estimate = 0
            while True:
                if self.rpm is not None:  # the target's limits, as in `replay`
                    await self.rpm.acquire(1)
                if self.tpm is not None:
                    estimate = self._estimate(case)
                    await self.tpm.acquire(estimate)
                attempts += 1
                self.requests += 1
                try:
                    async with asyncio.timeout(s.timeout_s):
                        resp: Response = await self.target.complete(case, sample=0)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if self._fatal(e):
                        raise TargetError(f"target {getattr(self.target, 'name', '?')}: "
                                          f"{getattr(e, 'message', None) or e}",
                                          hint="check the target's URL, model and key") from None
                    if attempts > s.max_retries or not self._should_retry(e):
                        kind = getattr(e, "kind", None) or (
                            "timeout" if isinstance(e, TimeoutError) else "exception")
                        msg = getattr(e, "message", None) or (
                            f"no reply within {s.timeout_s:g} s" if isinstance(e, TimeoutError)
                            else f"{type(e).__name__}: {e}")
                        return Response(case_id=case.case_id, error=str(msg)[:300],
                                        error_kind=kind, attempts=attempts)
                    self.retries += 1
                    ra = getattr(e, "retry_after", None)
                    if isinstance(ra, int | float):
                        wait = min(float(ra), s.retry_after_max_s)
                    else:
                        wait = min(s.retry_max_s, s.retry_initial_s * 2 ** (attempts - 1)) * (
                            0.5 + self._rng.random())
                    await asyncio.sleep(wait)
        if self.tpm is not None:
            actual = resp.usage.prompt_tokens + resp.usage.completion_tokens
            if actual:
                self.tpm.adjust(actual - estimate)
        resp = resp.model_copy(update={"case_id": case.case_id, "attempts": attempts,
                                       "cached": False})
        if key is not None and self.cache is not None and resp.error is None:
            self.cache.put(key, {"output": resp.output, "latency_ms": resp.latency_ms,
                                 "usage": resp.usage.model_dump()})
        return resp


# --------------------------------------------------------------------------- conversations
@dataclass
class TurnRecord:
    turn: int
    user: str
    reply: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    cached: bool = False
    feedback: Feedback | None = None
    goal_reached: bool = False
    give_up: bool = False
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "user": self.user, "reply": self.reply,
                "latency_ms": self.latency_ms, "error": self.error, "cached": self.cached,
                "feedback": None if self.feedback is None else self.feedback.model_dump(
                    mode="json", exclude_defaults=True),
                "goal_reached": self.goal_reached, "give_up": self.give_up,
                "usage": self.usage.model_dump()}


@dataclass
class Conversation:
    scenario: Scenario
    outcome: str = "max_turns"
    """`goal_reached`, `gave_up`, `max_turns`, `stopped` (no next message), `target_error`,
    `user_error` (the user LLM failed or refused) or `budget`."""
    turns: list[TurnRecord] = field(default_factory=list)
    error: str | None = None


TURN_VARIABLES = ("goal", "conversation", "turn", "max_turns")
"""What `simulate.turn_template` sees besides the opener prompt's variables."""


class Simulator:
    def __init__(self, spec: LLMSpec, spec_path: Path, maker: SessionMaker, turn_tmpl: Template,
                 client: LLMClient, caller: TargetCaller, seed: int, max_turns: int) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.maker = maker
        self.turn_tmpl = turn_tmpl
        self.client = client
        self.caller = caller
        self.seed = seed
        self.max_turns = max_turns

    async def opener(self, sc: Scenario) -> str:
        """The first message: the evalset's, or written by the user LLM (like `generate`)."""
        if sc.opener is not None:
            return sc.opener
        cell = _cell_of(sc)
        res = await self.client.structured(
            self.maker.opener_messages(cell, 0), UserMessage, schema_name="user_message",
            sample=("sim-opener", self.seed, sc.scenario_id), max_repairs=self.spec.max_repairs,
            seed=derive_seed(self.seed, sc.scenario_id, "sim-opener"),
            refusal_fields=("message",))
        if res.status != "ok" or res.value is None:
            raise _UserFailed(res.error or res.status)
        return res.value.message.strip()

    def turn_messages(self, sc: Scenario, conversation: list[dict[str, str]], turn: int
                      ) -> list[dict[str, str]]:
        ctx = self.maker.context(_cell_of(sc), 0)
        ctx.update(goal=sc.goal, conversation=conversation, turn=turn,  # TURN_VARIABLES
                   max_turns=self.max_turns, sample_id=f"{self.seed}-{sc.scenario_id}-{turn}")
        return [{"role": "system", "content": self.maker.prompts.system.render(**ctx)},
                {"role": "user", "content": self.turn_tmpl.render(**ctx)}]

    async def run(self, sc: Scenario, opener: str) -> Conversation:
        conv = Conversation(sc)
        history: list[Message] = []
        user = opener
        try:
            for t in range(self.max_turns):
                case = EvalCase(case_id=f"{sc.scenario_id}#t{t}", session_id=sc.session_id,
                                turn=t, history=list(history), input=user,
                                tags={**sc.tags, "scenario": sc.scenario_id})
                resp = await self.caller.complete(case)
                rec = TurnRecord(t, user, resp.output, resp.latency_ms, resp.error, resp.cached,
                                 usage=resp.usage, attempts=resp.attempts)
                conv.turns.append(rec)
                if resp.error is not None:
                    conv.outcome, conv.error = "target_error", resp.error
                    return conv
                history += [Message(role="user", content=user),
                            Message(role="assistant", content=resp.output or "")]
                res = await self.client.structured(
                    self.turn_messages(sc, [m.model_dump() for m in history], t), UserTurn,
                    schema_name="simulated_user_turn",
                    sample=("sim-turn", self.seed, sc.scenario_id, t),
                    max_repairs=self.spec.max_repairs,
                    seed=derive_seed(self.seed, sc.scenario_id, "sim-turn", t),
                    refusal_fields=("message",))
                if res.status != "ok" or res.value is None:
                    conv.outcome, conv.error = "user_error", res.error or res.status
                    return conv
                v = res.value
                rec.feedback = Feedback(thumb=Thumb(v.thumb), rating=v.rating)
                rec.goal_reached, rec.give_up = v.goal_reached, v.give_up
                if v.goal_reached:
                    conv.outcome = "goal_reached"
                    return conv
                if v.give_up:
                    conv.outcome = "gave_up"
                    return conv
                nxt = (v.message or "").strip()
                if t + 1 >= self.max_turns:
                    conv.outcome = "max_turns"
                    return conv
                if not nxt:
                    conv.outcome = "stopped"
                    return conv
                user = nxt
        except BudgetExceeded:
            conv.outcome, conv.error = "budget", "the user LLM's cost budget was reached"
        except RequestFailed as e:
            conv.outcome, conv.error = "user_error", f"user LLM: {e}"
        return conv


class _UserFailed(Exception):
    pass


def _cell_of(sc: Scenario) -> Cell:
    return Cell(0, sc.persona, sc.intent, sc.style, sc.locale)


# --------------------------------------------------------------------------- outputs
def conversation_response(conv: Conversation) -> Response:
    """The run's row for a scenario: last reply, summed latency/tokens, first error."""
    turns = conv.turns
    err = next((t for t in turns if t.error is not None), None)
    ok_turns = [t for t in turns if t.error is None]
    latency = sum(t.latency_ms or 0.0 for t in ok_turns) if ok_turns else None
    usage = Usage(prompt_tokens=sum(t.usage.prompt_tokens for t in ok_turns),
                  completion_tokens=sum(t.usage.completion_tokens for t in ok_turns))
    sid = conv.scenario.scenario_id
    if not turns:
        return Response(case_id=sid, error=conv.error or conv.outcome, error_kind=conv.outcome,
                        attempts=0)
    if err is not None:
        return Response(case_id=sid, output=None, error=f"turn {err.turn}: {err.error}",
                        error_kind="target_error", latency_ms=latency, usage=usage,
                        attempts=sum(t.attempts for t in turns))
    return Response(case_id=sid, output=ok_turns[-1].reply, latency_ms=latency, usage=usage,
                    attempts=sum(t.attempts for t in turns),
                    cached=all(t.cached for t in turns))


def conversation_scores(conv: Conversation) -> list[dict[str, Any]]:
    sid = conv.scenario.scenario_id
    if conv.outcome in ("target_error", "user_error", "budget"):
        return [{"case_id": sid, "sample": 0, "metric": m, "value": None, "kind": k,
                 "explanation": None, "error": f"{conv.outcome}: {conv.error}"}
                for m, (k, _) in METRICS.items()]
    judged = [t for t in conv.turns if t.feedback is not None]
    ups = sum(1 for t in judged if t.feedback is not None and t.feedback.thumb is Thumb.up)
    downs = sum(1 for t in judged if t.feedback is not None and t.feedback.thumb is Thumb.down)
    ratings = [t.feedback.rating for t in judged
               if t.feedback is not None and t.feedback.rating is not None]
    values: dict[str, float | None] = {
        "sim_goal_reached": float(conv.outcome == "goal_reached"),
        "sim_gave_up": float(conv.outcome == "gave_up"),
        "sim_turns": float(len(conv.turns)),
        "sim_thumb_up_share": ups / len(judged) if judged else None,
        "sim_thumb_down_share": downs / len(judged) if judged else None,
        "sim_mean_rating": sum(ratings) / len(ratings) if ratings else None,
    }
    rows = []
    for m, (kind, _) in METRICS.items():
        v = values[m]
        if v is None:      # no thumbs / ratings given: no row (missing, not a failure)
            continue
        rows.append({"case_id": sid, "sample": 0, "metric": m, "value": v, "kind": kind,
                     "explanation": f"outcome {conv.outcome} after {len(conv.turns)} turns",
                     "error": None})
    return rows


def _metric_summary(rows: list[dict[str, Any]], kind: str, hib: bool) -> dict[str, Any]:
    vals = [r["value"] for r in rows if r["value"] is not None]
    return {"kind": kind, "higher_is_better": hib, "n": len(vals),
            "failures": sum(1 for r in rows if r["error"] is not None),
            "mean": round(sum(vals) / len(vals), 6) if vals else None}


# --------------------------------------------------------------------------- entry point
@dataclass
class SimulationResult:
    manifest: RunManifest
    summary: dict[str, Any]


def simulate(spec_path: str | Path, target: Any, out: str | Path, *,
             evalset: str | Path | None = None, n: int | None = None, seed: int | None = None,
             max_turns: int | None = None, concurrency: int | None = None,
             cache: str | Path | None = DEFAULT_CACHE, max_cost: float | None = None,
             progress: bool | None = None) -> SimulationResult:
    """Run simulated users from a `kind: llm` spec against `target` into run directory `out`.

    `target`: a target YAML path, mapping or target object. `evalset`: scenario source (its
    session openers); without it, scenarios are `n` cells of the spec's grid (default the
    spec's `n`) and their evalset is written to `out/scenarios/`. `cache`: response cache
    file (user LLM and target replies), None for no cache.
    """
    from synthloop.targets import load_target

    spec_path = Path(spec_path)
    data = parse_document(spec_path)
    kind = data.get("kind", "llm") if isinstance(data, dict) else "llm"
    if kind != "llm":  # else every key of a rules/sdv spec is listed as unknown
        raise ConfigError(f"{spec_path}: kind: {kind!r}: simulate needs a `kind: llm` spec "
                          "(the user LLM's endpoint, personas and intents)",
                          hint="see generators/llm_support.yaml and docs/llm-generator.md")
    spec = load_spec(spec_path, data)
    seed = spec.seed if seed is None else seed
    turns_max = spec.simulate.max_turns if max_turns is None else max_turns
    if turns_max < 1:
        raise ConfigError(f"--max-turns must be at least 1 (got {turns_max})")
    if n is not None and n < 1:
        raise ConfigError(f"-n must be at least 1 (got {n})")
    budget_usd = max_cost if max_cost is not None else spec.max_cost
    if budget_usd is not None and spec.pricing.prompt_per_1k == 0 and \
            spec.pricing.completion_per_1k == 0:
        raise ConfigError(f"{spec_path}: --max-cost needs token prices",
                          hint="set pricing.prompt_per_1k and pricing.completion_per_1k")
    rundir = RunDir(Path(out))
    if rundir.path.exists() and (not rundir.path.is_dir() or any(rundir.path.iterdir())):
        raise DataError(f"{rundir.path}: already exists", hint="choose a new --out directory")
    tgt = target if hasattr(target, "complete") else load_target(target)
    prompts = load_prompts(spec, spec_path)
    turn_tmpl = load_template(spec.simulate.turn_template, DEFAULT_SIM_TURN,
                              field="simulate.turn_template", spec_path=spec_path)
    es: Evalset | None = None
    if evalset is not None:
        es = open_evalset(evalset)
        scenarios = scenarios_from_evalset(spec, es, seed, n)
    else:
        scenarios = scenarios_from_grid(spec, seed, n if n is not None else spec.n)
    conc = concurrency or spec.simulate.concurrency or spec.concurrency
    from synthloop.generate.llm import api_key_for

    api_key_for(spec.endpoint, str(spec_path))
    cache_obj = ResponseCache(cache) if cache is not None else None
    client = LLMClient(spec.endpoint, pricing=spec.pricing, concurrency=conc, cache=cache_obj,
                       budget=Budget(budget_usd), source=str(spec_path))
    caller = TargetCaller(tgt, cache_obj, conc)
    maker = SessionMaker(spec, prompts, client, seed, spec_path)
    if scenarios:  # a template typo stops here, before any target or user-LLM request
        maker.check_templates(_cell_of(scenarios[0]), extra=[turn_tmpl],
                              extra_names=TURN_VARIABLES)
    sim = Simulator(spec, spec_path, maker, turn_tmpl, client, caller, seed, turns_max)

    tmp = rundir.path.parent / f".{rundir.path.name}.tmp-{time.time_ns()}"
    rundir.path.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    try:
        tmp.mkdir()
        openers, conversations = asyncio.run(_run_all(sim, scenarios, tgt, client, conc,
                                                      progress))
        finished = datetime.now(UTC)
        if es is None:
            es = _write_scenarios(tmp / SCENARIOS_DIR, scenarios, openers, spec_path, seed)
            evalset_path = str((rundir.path / SCENARIOS_DIR).resolve())
        else:
            evalset_path = str(es.path.resolve())
        result = _write_run(RunDir(tmp), rundir.path, conversations, es, evalset_path, tgt,
                            client, caller, seed, started, finished, budget_usd, turns_max)
        if rundir.path.exists():
            rundir.path.rmdir()
        tmp.rename(rundir.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if cache_obj is not None:
            cache_obj.close()
    return result


async def _run_all(sim: Simulator, scenarios: Sequence[Scenario], target: Any,
                   client: LLMClient, conc: int, progress: bool | None
                   ) -> tuple[dict[str, str], list[Conversation]]:
    start = getattr(target, "start", None)
    if start is not None:
        await start()
    sem = asyncio.Semaphore(conc)
    openers: dict[str, str] = {}
    try:
        with progress_bar(len(scenarios), "simulate", enabled=progress) as bar:
            outcomes: Counter[str] = Counter()

            async def one(sc: Scenario) -> Conversation:
                async with sem:
                    try:
                        opener = await sim.opener(sc)
                    except BudgetExceeded:
                        conv = Conversation(sc, "budget", error="cost budget reached")
                    except (_UserFailed, RequestFailed) as e:
                        conv = Conversation(sc, "user_error", error=f"opener: {e}")
                    else:
                        openers[sc.scenario_id] = opener
                        conv = await sim.run(sc, opener)
                outcomes[conv.outcome] += 1
                bar.advance(1, **{k: v for k, v in sorted(outcomes.items())})
                return conv

            convs = await asyncio.gather(*(one(sc) for sc in scenarios))
    finally:
        await client.aclose()
        aclose = getattr(target, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    if convs and all(c.outcome == "user_error" and not c.turns for c in convs):
        raise TargetError(f"{client.endpoint.base_url}: the user LLM failed on every scenario "
                          f"({convs[0].error})", hint="check the spec's endpoint")
    return openers, list(convs)


def _write_scenarios(path: Path, scenarios: Sequence[Scenario], openers: dict[str, str],
                     spec_path: Path, seed: int) -> Evalset:
    cases = [EvalCase(case_id=sc.scenario_id, session_id=sc.session_id,
                      input=openers.get(sc.scenario_id) or sc.goal, tags=sc.tags)
             for sc in scenarios]
    with EvalsetWriter(path, provenance=Provenance(generator="simulate",
                                                   spec_path=str(spec_path), seed=seed),
                       name="scenarios") as w:
        w.write_cases(cases)
        w.close()
    return open_evalset(path)


def _write_run(run: RunDir, final: Path, convs: list[Conversation], es: Evalset,
               evalset_path: str,
               target: Any, client: LLMClient, caller: TargetCaller, seed: int,
               started: datetime, finished: datetime, budget_usd: float | None,
               max_turns: int) -> SimulationResult:
    responses = [conversation_response(c) for c in convs]
    run.write_responses(responses)
    score_rows = [row for c in convs for row in conversation_scores(c)]
    ordered = sorted(score_rows, key=lambda r: list(METRICS).index(r["metric"]))
    run.write_scores(pa.Table.from_pylist(ordered, schema=SCORES_SCHEMA))
    now = finished.isoformat()
    metrics = {}
    for m, (kind, hib) in METRICS.items():
        rows = [r for r in score_rows if r["metric"] == m]
        metrics[m] = {**_metric_summary(rows, kind, hib), "scored_at": now}
    write_atomic(run.scores_summary_path, json.dumps({
        "schema_version": SCHEMA_VERSION, "package_version": __version__, "scored_at": now,
        "run": {"path": str(final), "evalset_hash": es.content_hash,
                "target": getattr(target, "name", None), "responses": len(responses)},
        "scorers": {m: {"name": m, "kind": "simulated_user",
                        "description": "synthloop simulate: per-scenario outcome"}
                    for m in METRICS},
        "metrics": metrics, "usage": {},
    }, indent=2) + "\n")
    with open(run.path / TRANSCRIPTS, "w", encoding="utf-8") as f:
        for c in convs:
            sc = c.scenario
            f.write(json.dumps({
                "scenario_id": sc.scenario_id, "session_id": sc.session_id,
                "persona": sc.persona.name, "intent": sc.intent.name, "style": sc.style.name,
                "locale": sc.locale, "goal": sc.goal, "outcome": c.outcome, "error": c.error,
                "turns": [t.to_dict() for t in c.turns],
            }, ensure_ascii=False) + "\n")
    ok = [r for r in responses if r.error is None]
    counts = RunCounts(total=len(responses), ok=len(ok), error=len(responses) - len(ok),
                       cached=sum(1 for r in ok if r.cached))
    tokens = Usage(prompt_tokens=sum(r.usage.prompt_tokens for r in ok),
                   completion_tokens=sum(r.usage.completion_tokens for r in ok))
    budget_stop = any(c.outcome == "budget" for c in convs)
    manifest = RunManifest(
        evalset_hash=es.content_hash, evalset_path=evalset_path, target=target.fingerprint,
        target_name=getattr(target, "name", None), package_version=__version__,
        started_at=started, finished_at=finished, repeats=1, seed=seed, counts=counts,
        tokens=tokens, status="interrupted" if budget_stop else "complete")
    outcomes = Counter(c.outcome for c in convs)
    n_turns = [len(c.turns) for c in convs]
    summary = {
        "mode": "simulate",
        "scenarios": len(convs),
        "max_turns": max_turns,
        "outcomes": dict(sorted(outcomes.items())),
        "goal_reached_rate": round(outcomes["goal_reached"] / len(convs), 6) if convs else None,
        "mean_turns": round(sum(n_turns) / len(n_turns), 4) if n_turns else None,
        "target_turns": sum(n_turns),
        "target": {"requests": caller.requests, "retries": caller.retries,
                   "cache_hits": caller.cache_hits},
        "user_llm": {"endpoint": {"base_url": client.endpoint.base_url,
                                  "model": client.endpoint.model},
                     **client.stats.as_dict(), "budget_usd": budget_usd,
                     "budget_stopped": budget_stop},
    }
    write_atomic(run.path / SUMMARY, json.dumps(summary, indent=2) + "\n")
    run.write_manifest(manifest)
    return SimulationResult(manifest, summary)
