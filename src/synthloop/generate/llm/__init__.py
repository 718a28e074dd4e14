"""`kind: llm`: user messages (follow-ups, expected feedback) written by an OpenAI-compatible
LLM over a seeded persona x intent x style grid, with structured output, bounded repair,
retries, the shared response cache, cost accounting and budgets, and duplicate removal.

See docs/llm-generator.md. `run_spec` is what `synthloop generate SPEC.yaml` calls.
"""

from synthloop.generate.llm._client import (
    Budget,
    BudgetExceeded,
    LLMClient,
    RequestFailed,
    Stats,
    StructuredResult,
    api_key_for,
    estimate_prompt_tokens,
    looks_like_refusal,
    parse_structured,
    strict_schema,
)
from synthloop.generate.llm._generator import (
    DEDUP_REPORT,
    DEFAULT_CACHE,
    Cell,
    Reaction,
    SessionMaker,
    UserMessage,
    derive_seed,
    dry_run_plan,
    load_prompts,
    load_spec,
    plan_cells,
    run_spec,
)
from synthloop.generate.llm._spec import (
    DEFAULT_STYLES,
    AssistantConfig,
    EndpointConfig,
    Intent,
    LLMDedupConfig,
    LLMSpec,
    Persona,
    Pricing,
    ProductConfig,
    SimulateConfig,
    Style,
    TurnsConfig,
)

LlmSpec = LLMSpec
"""Alias of `LLMSpec` (the spelling `scripts/config_reference.py` looks up)."""

__all__ = [
    "DEDUP_REPORT",
    "DEFAULT_CACHE",
    "DEFAULT_STYLES",
    "AssistantConfig",
    "Budget",
    "BudgetExceeded",
    "Cell",
    "EndpointConfig",
    "Intent",
    "LLMClient",
    "LLMDedupConfig",
    "LLMSpec",
    "LlmSpec",
    "Persona",
    "Pricing",
    "ProductConfig",
    "SimulateConfig",
    "Reaction",
    "SessionMaker",
    "RequestFailed",
    "Stats",
    "Style",
    "StructuredResult",
    "TurnsConfig",
    "UserMessage",
    "api_key_for",
    "derive_seed",
    "dry_run_plan",
    "estimate_prompt_tokens",
    "load_prompts",
    "load_spec",
    "looks_like_refusal",
    "parse_structured",
    "plan_cells",
    "run_spec",
    "strict_schema",
]
