"""Static validation of a pipeline, before any weights load: every problem at once.

``validate_pipeline(path_or_spec, registry=..., base_fingerprint=...)`` returns a list of
``Problem(where="file:LINE", message="`field` ...")``, sorted by line:

- the file's shape: unknown or repeated keys, wrong types and values (from loading);
- the graph: an unknown entry, edges naming unknown stages, repeated edges, cycles,
  stages never reached from the entry;
- data flow: a stage reading (through ``inputs``, its prompt template, its guardrail
  ``target``, or a condition on an edge) an output that is not produced on EVERY path
  before it; fields a stage kind does not output (``intent.lable``); operators that do
  not fit the field (``gt`` on a label);
- with a registry: a missing adapter or version, an adapter of the wrong kind, condition
  values or guardrail labels the adapter does not have, a quantization or base
  fingerprint other than the pipeline's, a generate stage with no prompt at all.

``check_pipeline`` raises ``PipelineValidationError`` with all of them, or returns the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

import networkx as nx

from loragraph.errors import ConfigError, LoragraphError, PipelineValidationError, Problem
from loragraph.pipelines.graph import always_before, structure_problems
from loragraph.pipelines.spec import (
    ADAPTER_KINDS,
    SAFE_LABEL,
    STAGE_OUTPUTS,
    Condition,
    PipelineSpec,
    StageSpec,
    load_pipeline,
)
from loragraph.pipelines.templates import template_fields, template_variables
from loragraph.router.result import GuardrailAction

__all__ = ["RegistryLike", "check_pipeline", "validate_pipeline", "validate_spec"]


class RegistryLike(Protocol):
    """What validation needs of ``loragraph.adapters.registry.Registry``."""

    def resolve(self, ref: str) -> Any:  # -> AdapterVersion
        """The ``AdapterVersion`` of ``name`` (promoted) or ``name@vN``; ``NotFoundError`` if missing."""
        ...


# field type of each output key, for operator checks
_FIELD_TYPES: dict[str, str] = {
    "label": "string",
    "action": "string",
    "text": "string",
    "score": "number",
    "scores": "number",
    "passed": "boolean",
    "entities": "list",
}
_OPS_FOR_TYPE: dict[str, tuple[str, ...]] = {
    "string": ("eq", "ne", "in", "not_in", "contains"),
    "number": ("eq", "ne", "in", "not_in", "gt", "ge", "lt", "le"),
    "boolean": ("eq", "ne"),
    "list": ("contains",),
}
_GUARDRAIL_ACTIONS = get_args(GuardrailAction)


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


@dataclass
class _Context:
    spec: PipelineSpec
    problems: list[Problem]
    graph: nx.DiGraph  # stages + the well-formed edges only
    before: dict[str, set[str]]  # reachable stage -> stages on every path before it
    manifests: dict[str, Any]  # stage -> manifest (registry checks only)

    def add(self, loc: Sequence[str | int], message: str) -> None:
        self.problems.append(Problem(self.spec.where(loc), message))

    def ancestors(self, stage: str) -> set[str]:
        return set(nx.ancestors(self.graph, stage)) if stage in self.graph else set()


def _cond_loc(
    spec: PipelineSpec, edge: int, cond: int, key: str | None = None
) -> tuple[str | int, ...]:
    """Location of a condition's key, whether ``when`` was written as a list or one mapping."""
    source = spec.source
    listed = ("edges", edge, "when", cond)
    base: tuple[str | int, ...] = listed
    if source is not None and listed not in source.lines:
        base = ("edges", edge, "when")
    return (*base, key) if key else base


# --------------------------------------------------------------------------- graph


def _lenient_graph(spec: PipelineSpec) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(spec.stages)
    for edge in spec.edges:
        if edge.from_ in spec.stages and edge.to in spec.stages:
            graph.add_edge(edge.from_, edge.to)
    return graph


def _reachability(ctx: _Context) -> None:
    spec = ctx.spec
    entry = spec.entry_stage
    if entry not in spec.stages:
        return
    reached = {entry} | nx.descendants(ctx.graph, entry)
    for name in spec.stages:
        if name not in reached:
            ctx.add(
                ("stages", name),
                f"`stages.{name}` is never reached from the entry stage `{entry}`; "
                "add an edge to it or remove it",
            )


# --------------------------------------------------------------------------- data flow


def _check_read(ctx: _Context, stage: str, name: str, loc: Sequence[str | int], what: str) -> bool:
    """``stage`` reads ``name``; report when it is not produced on every path before it."""
    spec = ctx.spec
    if name == "text":
        return True
    if name not in spec.stages:
        ctx.add(
            loc,
            f"{what} reads `{name}`, which is neither `text` nor a stage; stages are {_names(list(spec.stages))}",
        )
        return False
    if name == stage:
        ctx.add(loc, f"{what} reads `{name}`, its own output, which does not exist before it runs")
        return False
    if stage not in ctx.before:  # unreachable: reported already
        return True
    if name in ctx.before[stage]:
        return True
    if name in ctx.ancestors(stage):
        ctx.add(
            loc,
            f"{what} reads `{name}`, but `{name}` runs only on some paths to `{stage}`; "
            f"route every path through `{name}` or stop reading it",
        )
    else:
        ctx.add(
            loc,
            f"{what} reads `{name}`, but no stage before `{stage}` produces it (`{name}` never runs before `{stage}`)",
        )
    return False


def _check_key(
    ctx: _Context, producer: str, key: Sequence[str], loc: Sequence[str | int], what: str
) -> str | None:
    """``producer.key...`` must be an output of the producer's kind; return the field type."""
    kind = ctx.spec.stages[producer].kind
    outputs = STAGE_OUTPUTS[kind]
    if not key:
        return None
    if key[0] not in outputs:
        ctx.add(
            loc,
            f"{what} reads `{producer}.{key[0]}`, but a `{kind}` stage outputs only {_names(outputs)}",
        )
        return None
    depth = 2 if key[0] == "scores" else 1
    if len(key) > depth:
        ctx.add(
            loc,
            f"{what} reads `{producer}.{'.'.join(key)}`, but `{key[0]}` has no field `{key[depth]}`",
        )
        return None
    if key[0] == "scores" and len(key) == 1:
        return "mapping"
    return _FIELD_TYPES[key[0]]


def _check_template(
    ctx: _Context,
    stage: str,
    spec_stage: StageSpec,
    template: str,
    loc: Sequence[str | int],
    what: str,
) -> None:
    try:
        variables = template_variables(template)
        fields = template_fields(template)
    except ConfigError as exc:
        ctx.add(loc, f"{what}: {exc.message}")
        return
    allowed = set(spec_stage.inputs) if spec_stage.inputs is not None else None
    for name in sorted(variables):
        if allowed is not None and name not in allowed:
            ctx.add(
                loc,
                f"{what} reads `{name}`, which is not in this stage's `inputs` ({_names(spec_stage.inputs or [])})",
            )
            continue
        _check_read(ctx, stage, name, loc, what)
    for name, key in sorted(fields):
        if name in ctx.spec.stages and name != stage:
            _check_key(ctx, name, (key,), loc, what)


def _data_flow(ctx: _Context) -> None:
    spec = ctx.spec
    for name, stage in spec.stages.items():
        where = ("stages", name)
        if stage.inputs is not None:
            for k, read in enumerate(stage.inputs):
                ok = _check_read(
                    ctx, name, read, (*where, "inputs", k), f"`stages.{name}.inputs[{k}]`"
                )
                if (
                    ok
                    and stage.kind in ("classify", "tag")
                    and read != "text"
                    and spec.stages[read].kind != "generate"
                ):
                    ctx.add(
                        (*where, "inputs", k),
                        f"`stages.{name}.inputs[{k}]` must be `text` or a generate stage (a `{stage.kind}` "
                        f"stage reads one text), got `{read}` of kind `{spec.stages[read].kind}`",
                    )
        if stage.kind == "guardrail" and stage.target != "input":
            target = stage.target
            ok = _check_read(ctx, name, target, (*where, "target"), f"`stages.{name}.target`")
            if ok and spec.stages[target].kind != "generate":
                ctx.add(
                    (*where, "target"),
                    f"`stages.{name}.target` must be `input` or a generate stage, got `{target}` of kind "
                    f"`{spec.stages[target].kind}`",
                )
        if stage.kind == "generate":
            if stage.prompt is not None:
                _check_template(
                    ctx, name, stage, stage.prompt, (*where, "prompt"), f"`stages.{name}.prompt`"
                )
            elif name in ctx.manifests:
                trained = getattr(ctx.manifests[name], "prompt", None)
                if trained:
                    _check_template(
                        ctx,
                        name,
                        stage,
                        trained,
                        (*where, "adapter"),
                        f"`stages.{name}` (the trained prompt of `{stage.adapter}`)",
                    )


def _reply_from(ctx: _Context) -> None:
    spec = ctx.spec
    for k, name in enumerate(spec.reply_from or []):
        loc = ("reply_from", k)
        if name not in spec.stages:
            ctx.add(
                loc,
                f"`reply_from[{k}]` names stage `{name}`, which does not exist; stages are {_names(list(spec.stages))}",
            )
        elif spec.stages[name].kind != "generate":
            ctx.add(
                loc,
                f"`reply_from[{k}]` must name a generate stage (its text is the reply), got `{name}` of kind `{spec.stages[name].kind}`",
            )


# --------------------------------------------------------------------------- conditions


def _check_condition(ctx: _Context, i: int, j: int, cond: Condition) -> None:
    spec = ctx.spec
    source = spec.edges[i].from_
    loc = _cond_loc(spec, i, j, "field")
    what = f"`edges[{i}].when[{j}]`"
    producer = cond.stage
    if producer == "text":
        if cond.key:
            ctx.add(loc, f"{what} reads `{cond.field}`, but `text` (the document) has no fields")
        elif cond.op not in _OPS_FOR_TYPE["string"]:
            ctx.add(
                _cond_loc(spec, i, j, "op"),
                f"{what}: `op: {cond.op}` does not apply to `text` (a string); use {_names(_OPS_FOR_TYPE['string'])}",
            )
        return
    if producer not in spec.stages:
        ctx.add(
            loc,
            f"{what} reads `{cond.field}`, but `{producer}` is neither `text` nor a stage; stages are {_names(list(spec.stages))}",
        )
        return
    if producer != source and source in ctx.before and producer not in ctx.before[source]:
        if producer in ctx.ancestors(source):
            ctx.add(
                loc,
                f"{what} reads `{cond.field}`, but `{producer}` runs only on some paths to `{source}` (the edge's `from`)",
            )
        else:
            ctx.add(
                loc,
                f"{what} reads `{cond.field}`, but `{producer}` does not run before `{source}` (the edge's `from`)",
            )
    if not cond.key:
        ctx.add(
            loc,
            f"{what} reads the whole output of `{producer}`; name one of its fields: "
            f"{_names([f'{producer}.{k}' for k in STAGE_OUTPUTS[spec.stages[producer].kind]])}",
        )
        return
    ftype = _check_key(ctx, producer, cond.key, loc, what)
    if ftype is None:
        return
    if ftype == "mapping":
        ctx.add(
            loc,
            f"{what} reads `{cond.field}`, a mapping of label -> score; name one label: `{cond.field}.<label>`",
        )
        return
    op_loc = _cond_loc(spec, i, j, "op")
    if cond.op not in _OPS_FOR_TYPE[ftype]:
        ctx.add(
            op_loc,
            f"{what}: `op: {cond.op}` does not apply to `{cond.field}` (a {ftype}); use {_names(_OPS_FOR_TYPE[ftype])}",
        )
        return
    values = cond.value if isinstance(cond.value, list) else [cond.value]
    value_loc = _cond_loc(spec, i, j, "value")
    if ftype != "list":
        expected = "string" if cond.op == "contains" else ftype
        wrong = [v for v in values if _value_type(v) != expected]
        if wrong:
            ctx.add(
                value_loc,
                f"{what}: `{cond.field}` is a {ftype}; `value` {wrong[0]!r} is a {_value_type(wrong[0])}",
            )
            return
    if cond.key[0] == "action":
        unknown = [v for v in values if v not in _GUARDRAIL_ACTIONS]
        if unknown:
            ctx.add(
                value_loc,
                f"{what}: `{unknown[0]}` is not a guardrail action; actions are {_names(_GUARDRAIL_ACTIONS)}",
            )
        return
    manifest = ctx.manifests.get(producer)
    if manifest is None:
        return
    labels = list(getattr(manifest, "labels", None) or [])
    adapter = spec.stages[producer].adapter
    checked: list[Any] = []
    if cond.key[0] == "label" and cond.op in ("eq", "ne", "in", "not_in"):
        checked = values
    elif cond.key[0] == "scores" and len(cond.key) == 2:
        checked, value_loc = [cond.key[1]], loc
    elif cond.key[0] == "entities":
        checked = values
    for value in checked:
        if value not in labels:
            noun = "entity type" if cond.key[0] == "entities" else "label"
            ctx.add(
                value_loc,
                f"{what}: adapter `{adapter}` has no {noun} `{value}`; its {noun}s are {_names(labels)}",
            )


def _conditions(ctx: _Context) -> None:
    for i, edge in enumerate(ctx.spec.edges):
        for j, cond in enumerate(edge.when):
            _check_condition(ctx, i, j, cond)


# --------------------------------------------------------------------------- registry


def _open_registry(registry: RegistryLike | str | Path | None) -> RegistryLike | None:
    if isinstance(registry, str | Path):
        from loragraph.adapters.registry import Registry

        return Registry(root=Path(registry))
    return registry


def _registry_checks(ctx: _Context, registry: RegistryLike, base_fingerprint: str | None) -> None:
    spec = ctx.spec
    resolved: dict[str, Any] = {}
    failed: dict[str, LoragraphError] = {}
    first_fingerprint: tuple[str, str] | None = None  # (fingerprint, ref)
    for name, stage in spec.stages.items():
        loc = ("stages", name, "adapter")
        field = f"`stages.{name}.adapter`"
        ref = stage.adapter
        if ref not in resolved and ref not in failed:
            try:
                resolved[ref] = registry.resolve(ref)
            except LoragraphError as exc:
                failed[ref] = exc
        if ref in failed:
            ctx.add(loc, f"{field}: adapter `{ref}` cannot be used: {failed[ref]}")
            continue
        version = resolved[ref]
        manifest = version.manifest
        used = getattr(version, "ref", ref)
        mkind = getattr(manifest, "kind", None)
        if mkind not in ADAPTER_KINDS[stage.kind]:
            ctx.add(
                loc,
                f"{field}: `{used}` is a `{mkind}` adapter, but a `{stage.kind}` stage needs a "
                f"{' or '.join(f'`{k}`' for k in ADAPTER_KINDS[stage.kind])} adapter",
            )
            continue
        ctx.manifests[name] = manifest
        quant = getattr(manifest, "quantization", None)
        if quant and quant != spec.base.quantization:
            ctx.add(
                loc,
                f"{field}: `{used}` was trained on `{quant}`, but `base.quantization` is "
                f"`{spec.base.quantization}` ({spec.where(('base', 'quantization'))}); an adapter mounts only "
                "on the quantization it was trained on",
            )
        base_name = getattr(manifest, "base_name", None)
        if base_name and base_name != spec.base.name:
            ctx.add(
                loc,
                f"{field}: `{used}` was trained on base `{base_name}`, but `base.name` is `{spec.base.name}`",
            )
        fingerprint = getattr(manifest, "base_fingerprint", None)
        if fingerprint and base_fingerprint is not None and fingerprint != base_fingerprint:
            ctx.add(
                loc,
                f"{field}: `{used}` was trained on a base with fingerprint `{fingerprint}`, "
                f"but the pipeline's base has `{base_fingerprint}`; retrain it on this base",
            )
        elif fingerprint and base_fingerprint is None:
            if first_fingerprint is None:
                first_fingerprint = (fingerprint, used)
            elif fingerprint != first_fingerprint[0]:
                ctx.add(
                    loc,
                    f"{field}: `{used}` was trained on a base with fingerprint `{fingerprint}`, but "
                    f"`{first_fingerprint[1]}` on `{first_fingerprint[0]}`; all adapters of a pipeline "
                    "must share one base",
                )
        labels = list(getattr(manifest, "labels", None) or [])
        if (
            stage.kind == "generate"
            and stage.prompt is None
            and not getattr(manifest, "prompt", None)
        ):
            ctx.add(loc, f"{field}: `{used}` records no trained prompt; give the stage a `prompt`")
        if stage.kind == "guardrail":
            if stage.flag_labels is not None:
                for k, label in enumerate(stage.flag_labels):
                    if label not in labels:
                        ctx.add(
                            ("stages", name, "flag_labels", k),
                            f"`stages.{name}.flag_labels[{k}]`: adapter `{used}` has no label `{label}`; its labels are {_names(labels)}",
                        )
            elif SAFE_LABEL not in labels:
                ctx.add(
                    ("stages", name),
                    f"`stages.{name}`: adapter `{used}` has no `{SAFE_LABEL}` label, so every label would "
                    f"count as a violation; list the failing labels in `flag_labels` (labels: {_names(labels)})",
                )


# --------------------------------------------------------------------------- entry points


def _line(problem: Problem) -> tuple[str, int]:
    file, _, line = problem.where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (problem.where, 0)


def validate_spec(
    spec: PipelineSpec,
    *,
    registry: RegistryLike | str | Path | None = None,
    base_fingerprint: str | None = None,
) -> list[Problem]:
    """Every static problem of a loaded spec, sorted by line (see the module doc)."""
    problems = structure_problems(spec)
    graph = _lenient_graph(spec)
    entry = spec.entry_stage
    before = always_before(graph, entry) if entry in spec.stages else {}
    ctx = _Context(spec=spec, problems=problems, graph=graph, before=before, manifests={})
    _reachability(ctx)
    reg = _open_registry(registry)
    if reg is not None:
        _registry_checks(ctx, reg, base_fingerprint)
    _data_flow(ctx)
    _reply_from(ctx)
    _conditions(ctx)
    unique = list(dict.fromkeys(ctx.problems))
    return sorted(unique, key=_line)


def validate_pipeline(
    spec_or_path: PipelineSpec | str | Path,
    *,
    registry: RegistryLike | str | Path | None = None,
    base_fingerprint: str | None = None,
) -> list[Problem]:
    """Every static problem of a pipeline file or spec, each with ``file:LINE`` and the field.

    ``registry`` (a ``Registry``, or its root folder) enables the adapter checks; without it
    only the file itself is checked. ``base_fingerprint`` is the loaded base's fingerprint,
    when known. An empty list means the pipeline is valid. A missing file raises
    ``NotFoundError``; problems found while loading are returned, not raised.
    """
    if isinstance(spec_or_path, PipelineSpec):
        spec = spec_or_path
    else:
        try:
            spec = load_pipeline(spec_or_path)
        except PipelineValidationError as exc:
            return exc.problems
        except ConfigError as exc:
            return [Problem(exc.where or str(spec_or_path), exc.message)]
    return validate_spec(spec, registry=registry, base_fingerprint=base_fingerprint)


def check_pipeline(
    spec_or_path: PipelineSpec | str | Path,
    *,
    registry: RegistryLike | str | Path | None = None,
    base_fingerprint: str | None = None,
) -> PipelineSpec:
    """Load and validate; return the spec, or raise ``PipelineValidationError`` with all problems.

    Loading problems raise as ``load_pipeline`` raises them (all of them at once).
    """
    spec = spec_or_path if isinstance(spec_or_path, PipelineSpec) else load_pipeline(spec_or_path)
    problems = validate_spec(spec, registry=registry, base_fingerprint=base_fingerprint)
    if problems:
        where = spec.source.file if spec.source else f"pipeline `{spec.name}`"
        raise PipelineValidationError(problems, where=where)
    return spec
