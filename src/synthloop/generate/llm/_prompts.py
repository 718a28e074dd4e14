"""Prompt templates (Jinja2, sandboxed): the shipped defaults and how spec templates load.

A spec's template field is either inline Jinja text or the path of a `.j2` (`.jinja`,
`.jinja2`, `.txt`, `.md`) file relative to the spec. Templates render in a sandbox with
`StrictUndefined`, so a misspelt variable is a one-line error naming the template.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from synthloop.config import read_text
from synthloop.errors import ConfigError

TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2", ".txt", ".md")

DEFAULT_SYSTEM = """\
You write the messages that real users send to {{ product.name }}\
{% if product.description %} ({{ product.description }}){% endif %}.
You are not the assistant. You play one specific user and write only what that user would \
type. Real users are brief and informal, often vague, and rarely explain their whole \
situation; they do not sound like a polished writer unless their style says so.
Always answer with one JSON object and nothing else."""

DEFAULT_OPENER = """\
Play this user.
Persona: {{ persona.name }}{% if persona.description %}: {{ persona.description }}{% endif %}

Locale: {{ locale }}
{% for key, value in persona.traits.items() %}
- {{ key }}: {{ value }}
{% endfor %}
What they want ({{ intent.name }}): {{ intent.description or intent.name }}
{% if intent.examples %}
Messages other users sent about this (for tone and topic only, do not copy them):
{% for e in intent.examples %}
- {{ e }}
{% endfor %}
{% endif %}
Writing style ({{ style.name }}): {{ style_instruction }}
{% if avoid %}
These messages were already written by other users; write something clearly different \
in wording and detail:
{% for a in avoid %}
- {{ a }}
{% endfor %}
{% endif %}

Write the first message this user sends. Answer with JSON only: {"message": "..."}
(sample {{ sample_id }})"""

DEFAULT_REACTION = """\
Keep playing this user.
Persona: {{ persona.name }}{% if persona.description %}: {{ persona.description }}{% endif %}

Locale: {{ locale }}
What they want ({{ intent.name }}): {{ intent.description or intent.name }}
Writing style ({{ style.name }}): {{ style_instruction }}

The conversation so far:
{% for m in conversation %}
{{ "USER" if m.role == "user" else "ASSISTANT" }}: {{ m.content }}
{% endfor %}

{% if want_feedback %}
Would this user rate the assistant's last reply? Most users give no explicit feedback: use \
thumb "none" and rating null unless the reply clearly helped ("up") or clearly failed them \
("down"); a rating (1-5) is rarer still. A comment is rare and short.
{% else %}
Use thumb "none", rating null and comment null.
{% endif %}
{% if want_follow_up %}
Then write the user's next message in the same style, reacting to the reply (a follow-up \
question, a correction or a complaint), or null if this user would stop here.
{% else %}
Use follow_up null.
{% endif %}
Answer with JSON only: {"thumb": "up" | "down" | "none", "rating": 1-5 or null, \
"comment": "..." or null, "follow_up": "..." or null}
(sample {{ sample_id }})"""


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


@dataclass(frozen=True)
class Template:
    """A compiled template and where it came from (for error messages)."""

    where: str
    source: str
    template: jinja2.Template

    def render(self, **context: Any) -> str:
        try:
            return self.template.render(**context).strip()
        except jinja2.UndefinedError as e:
            raise ConfigError(f"{self.where}: {e.message}",
                              hint=f"variables: {', '.join(sorted(context))}") from None
        except jinja2.TemplateError as e:
            raise ConfigError(f"{self.where}: template error: {e}") from None


def check_variables(template: Template, known: Iterable[str]) -> None:
    """Raise the error a render would raise if `template` names a variable outside `known`,
    in any branch: found from the parsed template, before any request is sent."""
    names = set(known)
    used = jinja2.meta.find_undeclared_variables(_ENV.parse(template.source))
    unknown = sorted(used - names - set(_ENV.globals))
    if unknown:
        raise ConfigError(f"{template.where}: '{unknown[0]}' is undefined",
                          hint=f"variables: {', '.join(sorted(names))}")


def compile_template(source: str, where: str) -> Template:
    try:
        return Template(where, source, _ENV.from_string(source))
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{where}: line {e.lineno}: template syntax error: {e.message}") from None


def load_template(value: str | None, default: str, *, field: str, spec_path: Path) -> Template:
    """A spec field's template: inline text, a template file next to the spec, or the default."""
    if value is None:
        return compile_template(default, f"default {field}")
    if "\n" not in value and value.strip().endswith(TEMPLATE_SUFFIXES):
        path = (spec_path.parent / value.strip()).resolve()
        if not path.is_file():
            raise ConfigError(f"{spec_path}: {field}: template file {value!r} not found "
                              f"(looked in {path.parent}; paths are relative to the spec)")
        return compile_template(read_text(path, "template"), f"{path}")
    return compile_template(value, f"{spec_path}: {field}")

DEFAULT_SIM_TURN = """\
You are this user, talking to {{ product.name }}.
Persona: {{ persona.name }}{% if persona.description %}: {{ persona.description }}{% endif %}

Locale: {{ locale }}
{% for key, value in persona.traits.items() %}
- {{ key }}: {{ value }}
{% endfor %}
Your goal: {{ goal }}
Writing style ({{ style.name }}): {{ style_instruction }}

The chat so far:
{% for m in conversation %}
{{ "USER" if m.role == "user" else "ASSISTANT" }}: {{ m.content }}
{% endfor %}

That was turn {{ turn + 1 }} of at most {{ max_turns }}. Decide as this user would:
- goal_reached: true only if the assistant's replies have fully achieved your goal;
- give_up: true if you would give up now (the assistant does not help, repeats itself, or \
refuses);
- thumb: your thumb for the assistant's last reply, "up", "down" or "none" (most users give \
none);
- rating: 1-5 stars for the last reply, or null (usually null);
- message: your next message in your style if you continue, else null.
Answer with JSON only: {"goal_reached": true | false, "give_up": true | false, \
"thumb": "up" | "down" | "none", "rating": 1-5 or null, "message": "..." or null}
(sample {{ sample_id }})"""
