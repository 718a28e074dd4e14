"""Targets: the model versions a replay runs against.

    from synthloop.targets import load_target

    target = load_target("configs/targets/support-v2.yaml")   # kind: openai | http | python
    target.fingerprint                                          # never holds an API key

Built-in kinds: `openai` (any OpenAI-compatible chat-completions endpoint), `http` (a generic
JSON endpoint) and `python` (`module:function`). Plugins register more through the
entry-point group `synthloop.targets` (an object with `from_config(data, source, base_dir)`).
"""

from synthloop.targets._base import (
    RETRY_STATUS,
    BaseTarget,
    Target,
    TargetCallError,
    TargetSettings,
    case_variables,
    default_should_retry,
    load_target,
    parse_retry_after,
)
from synthloop.targets._http import HTTPTarget, HTTPTargetConfig
from synthloop.targets._openai import OpenAITarget, OpenAITargetConfig
from synthloop.targets._python import PythonTarget, PythonTargetConfig

__all__ = [
    "RETRY_STATUS",
    "BaseTarget",
    "HTTPTarget",
    "HTTPTargetConfig",
    "OpenAITarget",
    "OpenAITargetConfig",
    "PythonTarget",
    "PythonTargetConfig",
    "Target",
    "TargetCallError",
    "TargetSettings",
    "case_variables",
    "default_should_retry",
    "load_target",
    "parse_retry_after",
]
