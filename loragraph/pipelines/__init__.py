"""loragraph.pipelines: the pipeline file (typed YAML), its graph, static validation, drawing.

- ``load_pipeline(path) -> PipelineSpec`` (``spec``): stages, edges, conditions, limits;
  every field problem with ``file:LINE``.
- ``build_graph(spec) -> networkx.DiGraph`` and ``successors(graph, stage, outputs)``
  (``graph``): which stages a run goes to next.
- ``evaluate_condition(cond, outputs)`` (``conditions``): conditions are data, never code.
- ``validate_pipeline(path, registry=...) -> list[Problem]`` / ``check_pipeline``
  (``validate``): every static problem at once, before any weights load.
- ``to_mermaid(spec)`` / ``draw_png(spec, path)`` (``draw``).
"""

from loragraph.pipelines.conditions import conditions_hold, evaluate_condition
from loragraph.pipelines.graph import always_before, build_graph, successors
from loragraph.pipelines.spec import (
    Condition,
    EdgeSpec,
    LimitsSpec,
    PipelineSpec,
    StageSpec,
    load_pipeline,
    parse_pipeline,
)
from loragraph.pipelines.validate import check_pipeline, validate_pipeline

__all__ = [
    "Condition",
    "EdgeSpec",
    "LimitsSpec",
    "PipelineSpec",
    "StageSpec",
    "always_before",
    "build_graph",
    "check_pipeline",
    "conditions_hold",
    "evaluate_condition",
    "load_pipeline",
    "parse_pipeline",
    "successors",
    "validate_pipeline",
]
