"""Prompt templates for generate stages, rendered in a jinja2 sandbox.

One renderer serves training and serving, so a generate adapter sees at run time exactly
the prompt shape it was trained on. The context is the document (``text``) plus earlier
stages' outputs by stage name, e.g. ``{{ intent.label }}`` or ``{{ summary.text }}``.
Templates cannot reach Python: the sandbox refuses attribute tricks and there is no eval.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loragraph.errors import ConfigError, InputError

__all__ = ["entity_list", "render_prompt", "template_fields", "template_variables"]


def entity_list(entities: Any) -> str:
    """Render tag output (``{"entities": [...]}`` or a list) as ``TYPE: text; ...``."""
    items = entities.get("entities", []) if isinstance(entities, dict) else entities or []
    return "; ".join(f"{e['type']}: {e['text']}" for e in items if "type" in e and "text" in e) or "none"


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["entity_list"] = entity_list
    return env


@lru_cache(maxsize=256)
def _compile(template: str) -> Any:
    try:
        return _env().from_string(template)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"`prompt` is not a valid template: {exc.message} (template line {exc.lineno})") from exc


def template_variables(template: str) -> set[str]:
    """Top-level names a template reads (``text``, ``intent``, ...)."""
    try:
        return set(meta.find_undeclared_variables(_env().parse(template)))
    except TemplateSyntaxError as exc:
        raise ConfigError(f"`prompt` is not a valid template: {exc.message} (template line {exc.lineno})") from exc


def template_fields(template: str) -> set[tuple[str, str]]:
    """``(name, key)`` pairs a template reads from its context: ``{{ intent.label }}`` and
    ``{{ intent['label'] }}`` give ``("intent", "label")`` (static validation of outputs)."""
    try:
        parsed = _env().parse(template)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"`prompt` is not a valid template: {exc.message} (template line {exc.lineno})") from exc
    free = set(meta.find_undeclared_variables(parsed))
    found: set[tuple[str, str]] = set()
    for node in parsed.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not isinstance(base, nodes.Name) or base.name not in free:
            continue
        if isinstance(node, nodes.Getattr):
            found.add((base.name, node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add((base.name, node.arg.value))
    return found


def render_prompt(template: str, context: dict[str, Any], *, where: str | None = None) -> str:
    """Render ``template`` with ``context``; a missing variable names itself."""
    compiled = _compile(template)
    try:
        return str(compiled.render(**context)).strip()
    except UndefinedError as exc:
        raise InputError(f"prompt template needs {exc.message}; context has {sorted(context)}", where=where) from exc
    except SecurityError as exc:
        raise ConfigError(f"prompt template tried an unsafe operation: {exc}", where=where) from exc
