"""The pipeline as a networkx graph, and which way a run goes from each stage.

``build_graph(spec)`` returns a ``networkx.DiGraph``:

- graph attributes: ``name``, ``entry`` (the start stage), ``spec`` (the ``PipelineSpec``);
- node = stage name, attributes ``stage`` (``StageSpec``), ``kind``, ``adapter``;
- edge = ``from -> to``, attributes ``edge`` (``EdgeSpec``), ``index`` (position in the
  file), ``when`` (list of ``Condition``), ``default`` (bool).

It refuses (``PipelineValidationError``) what would make routing ill-defined: an unknown
entry, edges naming unknown stages, the same edge twice, and cycles. The rest of static
validation (reachability, data flow, the registry) is ``loragraph.pipelines.validate``.

Routing (``successors``): after a stage ran, the run goes to

1. every unconditional edge's target (no ``when``, not ``default``);
2. every conditional edge's target whose conditions all hold;
3. the ``default`` edges' targets, only when no conditional edge of that stage was taken;

in file order, without repeats. No successor = the run ends on that branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from loragraph.errors import PipelineValidationError, Problem
from loragraph.pipelines.conditions import conditions_hold
from loragraph.pipelines.spec import EdgeSpec, PipelineSpec

__all__ = ["always_before", "build_graph", "out_edges", "structure_problems", "successors"]


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def structure_problems(spec: PipelineSpec) -> list[Problem]:
    """Unknown entry, edges naming unknown stages, repeated edges and cycles, with lines."""
    problems: list[Problem] = []
    stages = list(spec.stages)
    if spec.entry is not None and spec.entry not in spec.stages:
        problems.append(
            Problem(
                spec.where(("entry",)),
                f"`entry` names stage `{spec.entry}`, which does not exist; stages are {_names(stages)}",
            )
        )
    seen: dict[tuple[str, str], int] = {}
    graph = nx.DiGraph()
    graph.add_nodes_from(stages)
    for i, edge in enumerate(spec.edges):
        ok = True
        for key, name in (("from", edge.from_), ("to", edge.to)):
            if name not in spec.stages:
                ok = False
                problems.append(
                    Problem(
                        spec.where(("edges", i, key)),
                        f"`edges[{i}].{key}` names stage `{name}`, which does not exist; stages are {_names(stages)}",
                    )
                )
        pair = (edge.from_, edge.to)
        if pair in seen:
            ok = False
            problems.append(
                Problem(
                    spec.where(("edges", i)),
                    f"`edges[{i}]` repeats the edge `{edge.from_}` -> `{edge.to}` of `edges[{seen[pair]}]`; "
                    "put all its conditions on one edge (`when` is a list; all must hold)",
                )
            )
        else:
            seen[pair] = i
        if ok:
            graph.add_edge(edge.from_, edge.to, index=i)
    reported: set[frozenset[str]] = set()
    for cycle in nx.simple_cycles(graph):
        key = frozenset(cycle)
        if key in reported:
            continue
        reported.add(key)
        # blame the edge written last in the file; start the loop printout at its target
        pairs = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        closing = max(graph.edges[a, b]["index"] for a, b in pairs)
        start = (
            next(i for i, (a, b) in enumerate(pairs) if graph.edges[a, b]["index"] == closing) + 1
        )
        rotated = cycle[start:] + cycle[:start]
        loop = [*rotated, rotated[0]]
        problems.append(
            Problem(
                spec.where(("edges", closing)),
                f"`edges[{closing}]` closes a cycle {' -> '.join(f'`{n}`' for n in loop)}; "
                "a pipeline must be acyclic (each stage runs at most once per document)",
            )
        )
    return problems


def build_graph(spec: PipelineSpec) -> nx.DiGraph:
    """The pipeline as a ``networkx.DiGraph`` (see the module doc for its attributes).

    Raises ``PipelineValidationError`` when ``structure_problems`` finds anything.
    """
    problems = structure_problems(spec)
    if problems:
        raise PipelineValidationError(
            problems, where=spec.source.file if spec.source else f"pipeline `{spec.name}`"
        )
    graph = nx.DiGraph(name=spec.name, entry=spec.entry_stage, spec=spec)
    for name, stage in spec.stages.items():
        graph.add_node(name, stage=stage, kind=stage.kind, adapter=stage.adapter)
    for i, edge in enumerate(spec.edges):
        graph.add_edge(
            edge.from_, edge.to, edge=edge, index=i, when=list(edge.when), default=edge.default
        )
    return graph


def out_edges(graph: nx.DiGraph, stage: str) -> list[EdgeSpec]:
    """The edges leaving ``stage``, in file order."""
    data = sorted(graph.out_edges(stage, data=True), key=lambda e: e[2]["index"])
    return [d["edge"] for _, _, d in data]


def successors(graph: nx.DiGraph, stage: str, outputs: Mapping[str, Any]) -> list[str]:
    """The stages a run goes to after ``stage``, given the run context ``outputs``.

    ``outputs`` is ``{"text": ..., "<stage>": <output>, ...}``; see the module doc for the rules.
    """
    if stage not in graph:
        raise KeyError(f"`{stage}` is not a stage of pipeline `{graph.graph.get('name')}`")
    edges = out_edges(graph, stage)
    chosen: list[str] = []
    conditional_taken = False
    for edge in edges:
        if edge.conditional:
            if conditions_hold(edge.when, outputs):
                conditional_taken = True
                chosen.append(edge.to)
        elif not edge.default:
            chosen.append(edge.to)
    if not conditional_taken:
        chosen.extend(edge.to for edge in edges if edge.default)
    order = {edge.to: i for i, edge in enumerate(edges)}
    return sorted(dict.fromkeys(chosen), key=order.__getitem__)


def always_before(graph: nx.DiGraph, entry: str | None = None) -> dict[str, set[str]]:
    """For each stage reachable from the entry: the stages that run before it on EVERY path
    (its strict dominators). Outputs of these stages are sure to exist when it runs."""
    start = entry if entry is not None else graph.graph["entry"]
    idom = nx.immediate_dominators(graph, start)
    result: dict[str, set[str]] = {start: set()}
    for node in idom:
        if node == start:
            continue
        before: set[str] = set()
        current = node
        while current != start:
            current = idom[current]
            before.add(current)
        result[node] = before
    return result
