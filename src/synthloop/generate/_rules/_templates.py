"""Jinja2 templates of a rules spec: sandboxed, strict, checked statically before any work.

Every template is parsed once; `jinja2.meta.find_undeclared_variables` on the AST is checked
against the names a template may use (slots, constants, `persona`, `traits`, `locale`,
`intent`), and rendering uses `StrictUndefined`, so a typo is an error, never an empty string.
"""

from __future__ import annotations

import difflib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from synthloop.errors import ConfigError
from synthloop.generate._rules._spec import RulesSpec, TemplateFile, TemplateRef

BUILTIN_VARIABLES = ("persona", "traits", "locale", "intent")
"""Names every template may use besides slots and constants."""


class _Environment(SandboxedEnvironment):
    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A plain dict, not jinja's ChainMap over `self.globals`: every render copies a
        # template's globals into its context, and copying a ChainMap costs more than the
        # render of a short template. Globals are never changed after templates are compiled.
        return dict(super().make_globals(d))


def make_environment() -> SandboxedEnvironment:
    env = _Environment(undefined=StrictUndefined, autoescape=False)
    # `random` and `lipsum` draw from Python's global RNG: not reproducible from the seed
    env.filters.pop("random", None)
    env.globals.pop("lipsum", None)
    return env


def tidy(text: str) -> str:
    """Strip every line and drop blank ones, so block tags on their own lines leave no gaps."""
    if "\n" not in text:
        return text.strip()
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


UNKEYABLE = -1
"""`value_id` of a value with no hashable stand-in: a render that uses it is never cached."""


@dataclass
class CompiledTemplates:
    """Every template of a spec, compiled, by field path (e.g. `intents[2].answers[0]`)."""

    templates: dict[str, Template] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """Template file path (as written in the spec) -> its text, for the spec hash."""
    where: dict[str, str] = field(default_factory=dict)
    """Field path -> human location: the field path, plus the file when the template is one."""

    used: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Field path -> the context names the template reads (renders are cached on their values)."""
    _cache: dict[tuple[Any, ...], str] = field(default_factory=dict)
    """(field path, `value_id` of each name in `used[path]`, None when absent) -> rendered text."""
    _ids: dict[Any, int] = field(default_factory=dict)
    """Frozen value -> small int, so cache keys are short tuples of ints (a large constant, e.g.
    a whole knowledge base, is hashed once per `value_id` call, never once per render)."""

    def value_id(self, value: Any) -> int:
        """A small int standing for `value` by content (`UNKEYABLE` if it cannot be frozen)."""
        try:
            frozen = _freeze(value)
        except TypeError:
            return UNKEYABLE
        got = self._ids.get(frozen)
        if got is None:
            got = self._ids[frozen] = len(self._ids)
        return got

    def cache_key(self, path: str, ids: dict[str, int]) -> tuple[Any, ...] | None:
        """The render-cache key of `path` given the `value_id` of each context name."""
        key = (path, *(ids.get(n) for n in self.used[path]))
        return None if UNKEYABLE in key else key

    def render(self, path: str, context: dict[str, Any], source: str,
               frozen: dict[str, Any] | None = None) -> str:
        """Render one template; identical inputs (the names it uses) are rendered once.

        `frozen` may hold `freeze_context(context)`, computed once for many renders.
        """
        if frozen is not None:
            ids = {n: self._ids.setdefault(f, len(self._ids)) for n, f in frozen.items()
                   if n in self.used[path]}
        else:
            ids = {n: self.value_id(context[n]) for n in self.used[path] if n in context}
        key = self.cache_key(path, ids)
        return self.render_keyed(path, key, context, source)

    def render_keyed(self, path: str, key: tuple[Any, ...] | None, context: dict[str, Any],
                     source: str, persona: str | None = None, locale: str | None = None) -> str:
        """Render with a precomputed `cache_key` (None: do not cache). `context` needs only the
        names the template uses; `persona` and `locale` name the case in an error message."""
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        text = self._render(path, context, source, persona, locale)
        if key is not None:
            self._cache[key] = text
        return text

    def _render(self, path: str, context: dict[str, Any], source: str,
                persona: str | None = None, locale: str | None = None) -> str:
        try:
            return tidy(self.templates[path].render(context))
        except UndefinedError as e:
            raise ConfigError(f"{source}: {self.where[path]}: {e.message} "
                              f"(for persona '{persona or context.get('persona')}', locale "
                              f"'{locale or context.get('locale')}')") from None
        except SecurityError as e:
            raise ConfigError(f"{source}: {self.where[path]}: not allowed in a sandboxed "
                              f"template: {e}") from None
        except Exception as e:  # a template's own runtime error, e.g. a bad filter argument
            raise ConfigError(f"{source}: {self.where[path]}: template failed: "
                              f"{e.__class__.__name__}: {e}") from None


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a context value (dicts and lists by content)."""
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("__list__", tuple(_freeze(v) for v in value))
    hash(value)
    return (type(value).__name__, value)


def freeze_context(context: dict[str, Any]) -> dict[str, Any]:
    """Hashable stand-ins for every value of a render context (raises TypeError if impossible)."""
    return {k: _freeze(v) for k, v in context.items()}


def template_locations(spec: RulesSpec) -> list[tuple[str, TemplateRef]]:
    """(field path, template) for every template in the spec, in a fixed order."""
    out: list[tuple[str, TemplateRef]] = []
    for k, t in enumerate(spec.fallback_bad_replies):
        out.append((f"fallback_bad_replies[{k}]", t))
    for i, intent in enumerate(spec.intents):
        for attr in ("templates", "follow_up_templates", "answers", "bad_answers"):
            for k, t in enumerate(getattr(intent, attr)):
                out.append((f"intents[{i}].{attr}[{k}]", t))
    return out


def known_variables(spec: RulesSpec, env: SandboxedEnvironment) -> set[str]:
    return set(spec.slots) | set(spec.constants) | set(BUILTIN_VARIABLES) | set(env.globals)


def compile_templates(spec: RulesSpec, spec_path: Path, source: str
                      ) -> tuple[CompiledTemplates, list[str]]:
    """Read, parse and statically check every template; returns (compiled, problems)."""
    env = make_environment()
    known = known_variables(spec, env)
    user_names = sorted(set(spec.slots) | set(spec.constants) | set(BUILTIN_VARIABLES))
    out = CompiledTemplates()
    problems: list[str] = []
    base = spec_path.parent
    # the same text (e.g. one template file named by every intent) is parsed and compiled once;
    # a compiled `Template` holds no render state, so paths can share it
    by_text: dict[str, tuple[Template, frozenset[str]] | TemplateSyntaxError] = {}
    for path, ref in template_locations(spec):
        if isinstance(ref, TemplateFile):
            where = f"{path} ({ref.file})"
            fpath = base / ref.file
            try:
                text = out.files.get(ref.file) or fpath.read_text(encoding="utf-8")
            except FileNotFoundError:
                problems.append(f"{source}: {path}.file: template file {fpath} not found "
                                f"(paths are relative to the spec file)")
                continue
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"{source}: {path}.file: cannot read template file {fpath}: "
                                f"{e.__class__.__name__}: {e}")
                continue
            out.files[ref.file] = text
        else:
            where, text = path, ref
        out.where[path] = where
        got = by_text.get(text)
        if got is None:
            try:
                ast = env.parse(text)
                got = (env.from_string(text), frozenset(meta.find_undeclared_variables(ast)))
            except TemplateSyntaxError as e:  # also an unknown filter (TemplateAssertionError)
                got = e
            by_text[text] = got
        if isinstance(got, TemplateSyntaxError):
            problems.append(f"{source}: {where}: template syntax error on line {got.lineno}: "
                            f"{got.message}")
            continue
        compiled, names = got
        out.used[path] = tuple(sorted(names))
        out.templates[path] = compiled
        for name in sorted(names - known):
            close = difflib.get_close_matches(name, user_names, n=1, cutoff=0.6)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"define it under slots or constants; known: {', '.join(user_names)}")
            problems.append(f"{source}: {where}: undefined variable '{name}' ({hint})")
    return out, problems
