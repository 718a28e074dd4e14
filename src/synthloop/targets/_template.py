"""Sandboxed Jinja2 templates rendered with a case's fields (system prompts, request bodies)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from synthloop.errors import ConfigError


class _CaseUndefined(Undefined):
    """Strict for unknown variables (a typo such as `{{ inptu }}` fails at load time) but
    lenient for a key a case lacks (`{{ tags.locale }}` is empty, `| default(...)` works)."""

    @property
    def lenient(self) -> bool:
        return self._undefined_obj is not missing

    def _check(self) -> None:
        if not self.lenient:
            self._fail_with_undefined_error()

    def __str__(self) -> str:
        self._check()
        return ""

    def __bool__(self) -> bool:
        self._check()
        return False

    def __iter__(self) -> Iterator[Any]:
        self._check()
        return iter(())

    def __len__(self) -> int:
        self._check()
        return 0


def _finalize(value: Any) -> Any:
    """A missing value (a case without `context`, say) renders as empty text, not "None"."""
    return "" if value is None else value


_ENV = SandboxedEnvironment(undefined=_CaseUndefined, autoescape=False,
                            keep_trailing_newline=True, finalize=_finalize)
_ENV.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def compile_text(source: str, where: str) -> Callable[[dict[str, Any]], str]:
    """A renderer for a text template (a constant when it has no Jinja markup)."""
    if not is_template(source):
        return lambda _vars: source
    try:
        template = _ENV.from_string(source)
    except TemplateError as e:
        raise ConfigError(f"{where}: invalid template: {e}") from None

    def render(variables: dict[str, Any]) -> str:
        try:
            return template.render(variables)
        except TemplateError as e:
            raise ConfigError(f"{where}: template failed: {e}",
                              hint="variables: case_id, input, context, history, tags, "
                                   "references, turn, session_id, user_id") from None

    return render


def compile_value(value: Any, where: str) -> Callable[[dict[str, Any]], Any]:
    """A renderer for a JSON-like value whose strings are templates.

    A string that is exactly one `{{ expression }}` yields the expression's value unchanged
    (so `"{{ history }}"` becomes a list); other strings render to text.
    """
    if isinstance(value, dict):
        parts = {k: compile_value(v, f"{where}.{k}") for k, v in value.items()}
        return lambda variables: {k: f(variables) for k, f in parts.items()}
    if isinstance(value, list):
        items = [compile_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return lambda variables: [f(variables) for f in items]
    if isinstance(value, str) and is_template(value):
        m = _SINGLE_EXPR.match(value)
        if m is not None and "{%" not in value:
            try:
                expr = _ENV.compile_expression(m.group("expr"), undefined_to_none=False)
            except TemplateError as e:
                raise ConfigError(f"{where}: invalid template expression: {e}") from None

            def evaluate(variables: dict[str, Any]) -> Any:
                try:
                    result = expr(**variables)
                except TemplateError as e:
                    raise ConfigError(f"{where}: template failed: {e}") from None
                if isinstance(result, Undefined):
                    if isinstance(result, _CaseUndefined) and result.lenient:
                        return None
                    raise ConfigError(f"{where}: template uses an undefined variable",
                                      hint="variables: case_id, input, context, history, tags, "
                                           "references, turn, session_id, user_id")
                return result

            return evaluate
        return compile_text(value, where)
    return lambda _vars: value
