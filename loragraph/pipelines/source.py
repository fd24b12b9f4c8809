"""YAML with line numbers: every mapping key and list item remembers its ``file:LINE``.

``load_yaml(path)`` returns the plain data (dicts, lists, scalars, as ``yaml.safe_load``
gives them) plus a ``SourceMap`` from field paths (``("stages", "intent", "adapter")``,
``("edges", 2, "when", 0, "op")``) to 1-based line numbers, so a validation problem found
long after parsing can still point at the offending line. Duplicate keys, which PyYAML
silently collapses to the last one, are reported as problems with both lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loragraph.errors import ConfigError, NotFoundError, Problem

__all__ = ["Loc", "SourceMap", "format_loc", "load_yaml", "parse_yaml"]

Loc = tuple[str | int, ...]
"""A field path inside a document: mapping keys (str) and list indexes (int)."""


def format_loc(loc: Sequence[str | int]) -> str:
    """``("edges", 2, "when", 0, "op")`` -> ``edges[2].when[0].op``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Where each field of a YAML document was written: ``file`` and 1-based lines by path."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Sequence[str | int]) -> int:
        """Line of ``loc``, or of its nearest ancestor that has one (a missing key -> its parent)."""
        parts = tuple(loc)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Sequence[str | int]) -> str:
        """``"file:LINE"`` of ``loc`` (see ``line``)."""
        return f"{self.file}:{self.line(loc)}"


def _key(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            return node.value
    return None  # complex keys are not addressable; pydantic rejects them anyway


def _walk(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    loc: Loc,
    source: SourceMap,
    problems: list[Problem],
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for knode, vnode in node.value:
            key = _key(loader, knode)
            if key is None or key == "<<":
                continue
            line = knode.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        f"{source.file}:{line}",
                        f"`{format_loc((*loc, key))}` is written twice (lines {seen[key]} and {line}); "
                        "YAML keeps only the last one, so remove or rename one of them",
                    )
                )
            seen[key] = line
            sub = (*loc, key)
            source.lines[sub] = line
            _walk(loader, vnode, sub, source, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sub = (*loc, index)
            source.lines[sub] = item.start_mark.line + 1
            _walk(loader, item, sub, source, problems)


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML document; return (data, source map, duplicate-key problems).

    A syntax error raises ``ConfigError`` with ``where="file:LINE"``.
    """
    source = SourceMap(file=file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, source, []
        data = loader.construct_document(node)
        problems: list[Problem] = []
        source.lines[()] = node.start_mark.line + 1
        _walk(loader, node, (), source, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"is not valid YAML: {problem}", where=where) from exc
    finally:
        loader.dispose()
    return data, source, problems


def load_yaml(path: str | Path) -> tuple[Any, SourceMap, list[Problem]]:
    """Read and parse a YAML file (see ``parse_yaml``); a missing file is ``NotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("pipeline file does not exist", where=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read as UTF-8 text: {exc}", where=str(path)) from exc
    return parse_yaml(text, str(path))
