"""The `kind: llm` generator spec (YAML), as pydantic models with a docstring under every field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthloop.dedup import DedupConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class EndpointConfig(_Config):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp, ...)."""

    base_url: str
    """Base URL of the API, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`."""
    model: str
    """Model name sent with every request."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key. The key is never logged, cached or written.
    When it is unset, local endpoints (127.0.0.1, localhost) get a dummy key; others fail."""
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    """Sampling temperature of the user-simulating requests."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling; omitted from requests when unset."""
    max_tokens: int = Field(default=256, ge=1)
    """Completion token limit per request (also the completion side of cost estimates)."""
    timeout_s: float = Field(default=60.0, gt=0.0)
    """Per-request timeout, seconds."""
    max_retries: int = Field(default=5, ge=0)
    """Retries of one request on transient errors (429, 5xx, timeouts, resets, garbled
    replies), with exponential backoff that honours `Retry-After`."""
    backoff_s: float = Field(default=0.5, ge=0.0)
    """First backoff wait, seconds (doubles per retry, capped at 30 s, with jitter)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (e.g. `${ENV}`-interpolated tokens); never logged or cached."""
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How JSON is requested: `json_schema` sends `response_format: {type: json_schema, ...}`
    (OpenAI, vLLM, Ollama, llama.cpp); `json_object` for servers without schema support;
    `none` sends no `response_format` (the prompt still asks for JSON). Replies are always
    validated against the schema."""
    send_seed: bool = True
    """Send a per-request `seed` derived from the spec seed, so repeated cells sample
    differently and reproducible servers reproduce."""


class Persona(_Config):
    """A kind of user."""

    name: str = Field(min_length=1)
    """Short identifier, recorded in the `persona` tag."""
    description: str = ""
    """Who this user is, in a sentence or two (goes into the prompt)."""
    weight: float = Field(default=1.0, gt=0.0)
    """Relative frequency in the grid."""
    locale: str = "en_US"
    """Locale (`de_DE`, `pt_BR`, ...), recorded in the `locale` tag and shown to the prompt."""
    traits: dict[str, str] = Field(default_factory=dict)
    """Free-form traits shown to the prompt (e.g. `tech_savvy: low`, `patience: short`)."""
    style_weights: dict[str, float] = Field(default_factory=dict)
    """Per-persona overrides of style weights, by style name (0 disables a style)."""


class Intent(_Config):
    """What a user wants."""

    name: str = Field(min_length=1)
    """Short identifier, recorded in the `intent` tag."""
    description: str = ""
    """What the user is trying to do (goes into the prompt)."""
    weight: float = Field(default=1.0, gt=0.0)
    """Relative frequency in the grid."""
    examples: list[str] = Field(default_factory=list)
    """Example messages for tone and topic (the prompt asks not to copy them)."""
    reference_answer: str | None = None
    """A good answer, stored as the case's `references.good`."""
    goal: str | None = None
    """The user's goal for simulated conversations (`synthloop simulate`); defaults to the
    description."""


class Style(_Config):
    """A writing style (realism control)."""

    name: str = Field(min_length=1)
    """Short identifier, recorded in the `style` tag."""
    instruction: str
    """How to write, told to the model (Jinja: may use `persona`, `intent`, `locale`)."""
    weight: float = Field(default=1.0, ge=0.0)
    """Relative frequency in the grid."""


DEFAULT_STYLES: list[Style] = [
    Style(name="terse", weight=0.30,
          instruction="Write like a busy person on a phone: short, lowercase is fine, no "
                      "greeting, no pleasantries, often one line."),
    Style(name="typos", weight=0.15,
          instruction="Type quickly and carelessly: include one to three realistic typos or "
                      "missing letters, little punctuation."),
    Style(name="non_native", weight=0.15,
          instruction="Write English as a non-native speaker from your locale would: small "
                      "grammar slips, literal phrasing, simple vocabulary."),
    Style(name="other_language", weight=0.05,
          instruction="Write in your own language (locale {{ locale }}); if that is English, "
                      "write in Spanish, as many real users do."),
    Style(name="search_box", weight=0.25,
          instruction="Type it like a search query: 2 to 6 keywords, no sentence, no "
                      "question mark."),
    Style(name="articulate", weight=0.10,
          instruction="Write a clear, complete question with the relevant details, as a "
                      "careful user would."),
]


class TurnsConfig(_Config):
    """Multi-turn sessions: follow-ups conditioned on the previous reply."""

    max: int = Field(default=1, ge=1, le=20)
    """Maximum user turns per session (1 = single messages)."""
    follow_up_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    """Chance (seeded) that the user writes another turn after a reply, up to `max`."""


class AssistantConfig(_Config):
    """The assistant that answers during generation (replies for follow-ups and feedback)."""

    system_prompt: str = ("You are a helpful assistant for {{ product.name }}. "
                          "{{ product.description }} Answer briefly.")
    """System prompt of the answering model (Jinja: may use `product`)."""
    model: str | None = None
    """Model for replies (default: the endpoint's model)."""
    max_tokens: int = Field(default=300, ge=1)
    """Completion token limit of a reply."""
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    """Sampling temperature of replies."""


class ProductConfig(_Config):
    """What the users are talking to (context for every prompt)."""

    name: str = "the assistant"
    """Product name, as users would call it."""
    description: str = ""
    """What it does, in a sentence or two."""


class Pricing(_Config):
    """Prices used for cost accounting and `--max-cost` (USD per 1,000 tokens)."""

    prompt_per_1k: float = Field(default=0.0, ge=0.0)
    """USD per 1,000 prompt tokens."""
    completion_per_1k: float = Field(default=0.0, ge=0.0)
    """USD per 1,000 completion tokens."""

    def cost(self, prompt_tokens: int | float, completion_tokens: int | float) -> float:
        return (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k) / 1000


class SimulateConfig(_Config):
    """`synthloop simulate`: the endpoint plays a user against a target, turn by turn."""

    max_turns: int = Field(default=6, ge=1, le=50)
    """Most user turns per conversation (`--max-turns` overrides)."""
    turn_template: str | None = None
    """Prompt that asks the simulated user to judge the last reply and write the next message
    (Jinja text or a `.j2` file; default shipped)."""
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Conversations in flight at once (default: the spec's `concurrency`)."""


class LLMDedupConfig(DedupConfig):
    """Dedup of generated opening messages (see `synthloop.dedup`)."""

    enabled: bool = True
    """Remove exact and near duplicates (and refill their cells)."""


class LLMSpec(_Config):
    """`kind: llm`: user messages (and feedback) written by an LLM over a persona x intent x
    style grid."""

    kind: Literal["llm"] = "llm"
    """Generator kind."""
    name: str | None = None
    """Evalset name recorded in the manifest (default: the output's parent folder)."""
    description: str = ""
    """Free text for humans."""
    endpoint: EndpointConfig
    """The OpenAI-compatible endpoint that writes the messages."""
    n: int = Field(default=100, ge=1)
    """Number of sessions (= cases when `turns.max` is 1). `-n` overrides."""
    seed: int = 0
    """Seed of every draw (grid cells, follow-up decisions, per-request seeds). `--seed`
    overrides."""
    concurrency: int = Field(default=8, ge=1, le=1024)
    """Requests in flight at once."""
    product: ProductConfig = Field(default_factory=ProductConfig)
    """What the simulated users are talking to."""
    personas: list[Persona] = Field(default_factory=list)
    """Persona catalog (or use `personas_from`)."""
    personas_from: str | None = None
    """Grounded mode: draw (persona, intent, locale) skeletons from an evalset (path or
    NAME@VERSION, e.g. one made by the rules or SDV generator) or from a rules spec (run
    in a temporary folder), so the grid follows their joint distribution. Personas and
    intents listed here supply descriptions for the names found there."""
    intents: list[Intent] = Field(default_factory=list)
    """Intent catalog."""
    styles: list[Style] = Field(default_factory=lambda: [s.model_copy() for s in DEFAULT_STYLES])
    """Writing styles (default: terse, typos, non_native, other_language, search_box,
    articulate)."""
    turns: TurnsConfig = Field(default_factory=TurnsConfig)
    """Multi-turn settings."""
    feedback: bool = False
    """Ask, per reply, whether this persona would give a thumb up/down and a rating (stored
    as the case's `expected_feedback`; needs a reply, so it adds two requests per turn)."""
    assistant: AssistantConfig = Field(default_factory=AssistantConfig)
    """The answering model used for replies (multi-turn or feedback)."""
    system_prompt: str | None = None
    """System prompt of the user-simulating requests (Jinja text or a `.j2` file relative to
    the spec; default shipped)."""
    prompt_template: str | None = None
    """Prompt that asks for an opening message (Jinja text or a `.j2` file; default shipped)."""
    reaction_template: str | None = None
    """Prompt that asks for feedback on a reply and the next message (Jinja text or a `.j2`
    file; default shipped)."""
    max_repairs: int = Field(default=2, ge=0, le=10)
    """Re-asks after an invalid structured reply, each telling the model the validation
    error (counted apart from transport retries)."""
    refill_rounds: int = Field(default=2, ge=0, le=10)
    """Rounds that regenerate cells whose message was dropped (duplicate, refusal, invalid)."""
    pricing: Pricing = Field(default_factory=Pricing)
    """Token prices for cost accounting and budgets."""
    max_cost: float | None = Field(default=None, gt=0.0)
    """Budget in USD (`--max-cost` overrides): no request starts that could exceed it."""
    dedup: LLMDedupConfig = Field(default_factory=LLMDedupConfig)
    """Duplicate removal of opening messages."""
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    """Settings of `synthloop simulate` (simulated users against a target)."""

    @model_validator(mode="after")
    def _check(self) -> LLMSpec:
        problems: list[str] = []
        if not self.personas and not self.personas_from:
            problems.append("personas: list at least one persona, or set personas_from")
        if not self.intents and not self.personas_from:
            problems.append("intents: list at least one intent, or set personas_from")
        if not self.styles:
            problems.append("styles: list at least one style (or omit it for the defaults)")
        elif not any(s.weight > 0 for s in self.styles):
            problems.append("styles: at least one style needs a weight above 0")
        for field, items in (("personas", self.personas), ("intents", self.intents),
                             ("styles", self.styles)):
            names = [x.name for x in items]
            dups = sorted({x for x in names if names.count(x) > 1})
            if dups:
                problems.append(f"{field}: duplicate names {dups} (names must be unique)")
        style_names = {s.name for s in self.styles}
        for i, p in enumerate(self.personas):
            unknown = sorted(set(p.style_weights) - style_names)
            if unknown:
                problems.append(f"personas[{i}].style_weights: unknown styles {unknown} "
                                f"(known: {sorted(style_names)})")
            elif p.style_weights and not any(
                    p.style_weights.get(s.name, s.weight) > 0 for s in self.styles):
                problems.append(f"personas[{i}].style_weights: every style has weight 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self
