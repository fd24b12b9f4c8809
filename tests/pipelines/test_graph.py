"""The networkx graph and the routing rule: conditional edges that hold, else defaults;
unconditional edges always."""

from __future__ import annotations

import pytest

from loragraph.errors import PipelineValidationError
from loragraph.pipelines.graph import always_before, build_graph, out_edges, successors
from loragraph.pipelines.spec import parse_pipeline
from tests.pipelines.conftest import line_of

ROUTED = """\
name: routed
stages:
  intent: {kind: classify, adapter: intent}
  out_of_scope: {kind: generate, adapter: reply, prompt: "{{ text }}"}
  entities: {kind: tag, adapter: entities}
  audit: {kind: generate, adapter: summary, prompt: "{{ text }}"}
  summary: {kind: generate, adapter: summary}
  reply: {kind: generate, adapter: reply}
  escalation: {kind: generate, adapter: summary}
edges:
  - {from: intent, to: out_of_scope, when: {field: intent.label, value: other}}
  - {from: intent, to: entities, default: true}
  - {from: intent, to: audit}
  - {from: entities, to: summary}
  - {from: summary, to: reply}
  - from: summary
    to: escalation
    when:
      - {field: intent.label, op: in, value: [complaint, refund_request]}
      - {field: intent.score, op: ge, value: 0.5}
"""


@pytest.fixture
def graph():  # type: ignore[no-untyped-def]
    return build_graph(parse_pipeline(ROUTED))


def test_nodes_and_edges_carry_the_spec(graph) -> None:  # type: ignore[no-untyped-def]
    assert graph.graph["entry"] == "intent" and graph.graph["name"] == "routed"
    assert (
        graph.nodes["entities"]["stage"].kind == "tag"
        and graph.nodes["entities"]["adapter"] == "entities"
    )
    data = graph.edges["summary", "escalation"]
    assert data["index"] == 5 and len(data["when"]) == 2 and data["default"] is False
    assert [e.to for e in out_edges(graph, "intent")] == ["out_of_scope", "entities", "audit"]


def test_conditional_edge_taken_suppresses_default(graph) -> None:  # type: ignore[no-untyped-def]
    assert successors(graph, "intent", {"intent": {"label": "other", "score": 0.9}}) == [
        "out_of_scope",
        "audit",
    ]


def test_default_taken_when_no_conditional_holds(graph) -> None:  # type: ignore[no-untyped-def]
    assert successors(graph, "intent", {"intent": {"label": "order_status", "score": 0.9}}) == [
        "entities",
        "audit",
    ]
    assert successors(graph, "intent", {}) == ["entities", "audit"]  # nothing known: defaults


def test_all_conditions_of_an_edge_must_hold(graph) -> None:  # type: ignore[no-untyped-def]
    sure = {"intent": {"label": "complaint", "score": 0.9}}
    unsure = {"intent": {"label": "complaint", "score": 0.3}}
    assert successors(graph, "summary", sure) == ["reply", "escalation"]
    assert successors(graph, "summary", unsure) == ["reply"]
    assert successors(graph, "reply", sure) == []
    with pytest.raises(KeyError):
        successors(graph, "nope", sure)


def test_always_before_is_every_path(graph) -> None:  # type: ignore[no-untyped-def]
    before = always_before(graph)
    assert before["intent"] == set()
    assert before["reply"] == {"intent", "entities", "summary"}
    assert before["out_of_scope"] == {"intent"}


def test_build_graph_refuses_unknown_stages_repeats_and_cycles() -> None:
    text = (
        ROUTED
        + "  - {from: reply, to: entities}\n  - {from: summary, to: reply}\n  - {from: reply, to: sumary}\n"
    )
    with pytest.raises(PipelineValidationError) as info:
        build_graph(parse_pipeline(text, file="r.yaml"))
    problems = [str(p) for p in info.value.problems]
    assert any(
        p.startswith(f"r.yaml:{line_of(text, 'to: sumary')}: `edges[8].to` names stage `sumary`")
        for p in problems
    )
    assert any(
        p.startswith(
            f"r.yaml:{line_of(text, 'from: summary, to: reply', 2)}: `edges[7]` repeats the edge"
        )
        for p in problems
    )
    assert any(
        "closes a cycle" in p
        and p.startswith(f"r.yaml:{line_of(text, 'from: reply, to: entities')}:")
        for p in problems
    )
