"""The pipeline file: a typed YAML spec of stages, edges and conditions.

```yaml
name: customer-service
base: {name: smollm2-135m-instruct, quantization: nf4}
stages:
  intent: {kind: classify, adapter: intent}          # promoted version
  summary: {kind: generate, adapter: summary@v3}     # pinned version
edges:
  - {from: intent, to: summary, when: {field: intent.label, op: ne, value: other}}
```

``load_pipeline(path)`` checks the shape of every field (unknown keys, wrong types, bad
values, duplicate keys) and raises ``PipelineValidationError`` listing every problem with
its ``file:LINE`` and field path in backticks. Cross-references (edges to unknown stages,
cycles, data flow, the registry) are checked by ``loragraph.pipelines.validate``.
A loaded spec remembers where each field was written (``spec.where(loc)``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from loragraph.adapters.base import BaseSpec
from loragraph.errors import ConfigError, PipelineValidationError, Problem
from loragraph.pipelines.source import Loc, SourceMap, format_loc, load_yaml, parse_yaml
from loragraph.pipelines.templates import template_variables

__all__ = [
    "ADAPTER_KINDS",
    "COMBINE_MODES",
    "GENERATE_ONLY_FIELDS",
    "GUARDRAIL_ONLY_FIELDS",
    "RESERVED_NAMES",
    "SAFE_LABEL",
    "STAGE_OUTPUTS",
    "ChunkingSpec",
    "CombineMode",
    "Condition",
    "ConditionOp",
    "EdgeSpec",
    "GuardrailPolicy",
    "LimitsSpec",
    "OnError",
    "PipelineSpec",
    "StageKind",
    "StageSpec",
    "load_pipeline",
    "parse_adapter_ref",
    "parse_pipeline",
]

StageKind = Literal["classify", "tag", "generate", "guardrail"]
ConditionOp = Literal["eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "contains"]
GuardrailPolicy = Literal["block", "redact", "replace", "escalate"]
OnError = Literal["fail_closed", "fail_open"]
CombineMode = Literal["vote", "max", "concat", "first"]

STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classify": ("label", "score", "scores"),
    "tag": ("entities",),
    "generate": ("text",),
    "guardrail": ("label", "score", "passed", "action"),
}
"""The keys of each stage kind's output (see ``loragraph.router.result``)."""

ADAPTER_KINDS: dict[str, tuple[str, ...]] = {
    "classify": ("classify",),
    "tag": ("tag",),
    "generate": ("generate",),
    "guardrail": ("classify",),
}
"""Which adapter kinds (manifest ``kind``) can back a stage of each kind."""

COMBINE_MODES: dict[str, tuple[str, ...]] = {
    "classify": ("vote", "max", "first"),
    "guardrail": ("max", "vote", "first"),
    "tag": ("concat", "first"),
    "generate": ("concat", "first"),
}
"""Allowed ``chunking.combine`` per stage kind; the first one is the default."""

GENERATE_ONLY_FIELDS = ("prompt", "system", "max_new_tokens", "repetition_penalty", "no_repeat_ngram_size")
GUARDRAIL_ONLY_FIELDS = ("target", "policy", "threshold", "review_threshold", "review_reply", "flag_labels", "fallback", "on_error")

_STAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$")

RESERVED_NAMES = frozenset({"text", "input", "true", "false", "none", "loop", "self"})
"""Names a stage cannot take: ``text`` is the document, ``input`` a guardrail target,
the rest mean something else inside a prompt template."""

SAFE_LABEL = "safe"
"""The guardrail label that passes when a stage sets no ``flag_labels``."""

_SCALARS = (str, int, float, bool, type(None))


def _fail(message: str, at: str | None = None) -> PydanticCustomError:
    """A validation error whose message is final; ``at`` is a sub-field to point at."""
    ctx: dict[str, Any] = {"message": message}
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError("loragraph", "{message}", ctx)


def parse_adapter_ref(ref: str) -> tuple[str, int | None]:
    """``"intent"`` -> ``("intent", None)`` (promoted); ``"intent@v3"`` -> ``("intent", 3)`` (pinned).

    The same grammar as the registry (``loragraph.adapters.registry.parse_ref``), which also
    accepts ``intent@3``.
    """
    from loragraph.adapters.registry import parse_ref

    try:
        return parse_ref(ref)
    except ConfigError as exc:
        raise ConfigError(
            "`adapter` must be `name` (the promoted version) or `name@vN` (pinned version N), "
            f"where a name is letters, digits, `_`, `-` or `.`; got {ref!r}"
        ) from exc


# --------------------------------------------------------------------------- conditions


class Condition(BaseModel):
    """One test on an earlier output, e.g. ``{field: intent.label, op: in, value: [complaint]}``.

    Data, never code: the router evaluates it with ``evaluate_condition``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(
        description="dotted path into the run context: `<stage>.<key>` such as `intent.label`, "
        "`intent.score`, `intent.scores.refund_request`, `guard_in.passed`, `entities.entities`; "
        "or `text` (the document)",
    )
    op: ConditionOp = Field(
        "eq",
        description="`eq`, `ne`, `in`, `not_in` (value is a list), `gt`, `ge`, `lt`, `le` (value is a "
        "number), `contains` (substring of a text, or member of a list; for tag output, "
        "an entity of that type)",
    )
    value: Any = Field(
        description="what the field is compared with: a string, number or boolean; a list for `in`/`not_in`"
    )

    @field_validator("field")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not _FIELD_PATTERN.match(value):
            raise _fail(
                f"`field` must be a dotted path such as `intent.label` or `text`, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _value_matches_op(self) -> Condition:
        value = self.value
        if self.op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise _fail(
                    f"`value` must be a non-empty list for `op: {self.op}`, got {value!r}", "value"
                )
            bad = [v for v in value if not isinstance(v, _SCALARS)]
            if bad:
                raise _fail(
                    f"`value` must list strings, numbers or booleans, got {bad[0]!r}", "value"
                )
        elif self.op in ("gt", "ge", "lt", "le"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _fail(f"`value` must be a number for `op: {self.op}`, got {value!r}", "value")
        elif not isinstance(value, _SCALARS):
            raise _fail(
                f"`value` must be a string, number or boolean for `op: {self.op}`, got {value!r} "
                "(use `op: in` to compare with a list)",
                "value",
            )
        return self

    @property
    def stage(self) -> str:
        """The first segment of ``field``: the stage (or ``text``) the condition reads."""
        return self.field.split(".", 1)[0]

    @property
    def key(self) -> tuple[str, ...]:
        """The segments of ``field`` after the stage name (``("label",)`` for ``intent.label``)."""
        return tuple(self.field.split(".")[1:])

    def __str__(self) -> str:
        def show(v: Any) -> str:
            return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

        value = (
            "[" + ", ".join(map(show, self.value)) + "]"
            if isinstance(self.value, list)
            else show(self.value)
        )
        symbol = {"eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}.get(
            self.op, self.op.replace("_", " ")
        )
        return f"{self.field} {symbol} {value}"


class EdgeSpec(BaseModel):
    """A connection ``from`` -> ``to``: unconditional, conditional (``when``) or ``default``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description="name of the stage this edge leaves")
    to: str = Field(description="name of the stage this edge enters")
    when: list[Condition] = Field(
        default_factory=list,
        description="a condition or a list of conditions that must ALL hold for the edge to be taken; "
        "absent = unconditional (always taken)",
    )
    default: bool = Field(
        False,
        description="taken only when no conditional edge leaving the same stage is taken "
        "(the `else` branch); cannot be combined with `when`",
    )

    @field_validator("when", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _default_xor_when(self) -> EdgeSpec:
        if self.default and self.when:
            raise _fail(
                "`default: true` cannot be combined with `when`: a default edge is the else-branch",
                "default",
            )
        return self

    @property
    def conditional(self) -> bool:
        """True when the edge has conditions."""
        return bool(self.when)

    def label(self) -> str:
        """Short human text for drawings: ``intent.label in [a, b]``, ``else`` or ``""``."""
        if self.default:
            return "else"
        return " and ".join(str(c) for c in self.when)


# --------------------------------------------------------------------------- stages


class ChunkingSpec(BaseModel):
    """How a stage handles documents longer than it should read at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_chars: int = Field(2000, ge=100, le=1_000_000, description="characters per chunk")
    overlap: int = Field(
        200, ge=0, description="characters shared by consecutive chunks (less than `max_chars`)"
    )
    combine: CombineMode | None = Field(
        None,
        description="how chunk results become one output: classify/guardrail `vote` (majority label), "
        "`max` (the highest-scoring chunk) or `first`; tag/generate `concat` (entities with offsets in "
        "the whole document / texts joined) or `first`. Default: the first listed for the kind",
    )

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingSpec:
        if self.overlap >= self.max_chars:
            raise _fail(
                f"`overlap` must be less than `max_chars` ({self.max_chars}), got {self.overlap}",
                "overlap",
            )
        return self


class StageSpec(BaseModel):
    """One node of the pipeline: a stage kind backed by one adapter version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: StageKind = Field(
        description="`classify` (label + scores), `tag` (entity spans), `generate` (text) or "
        "`guardrail` (a classify adapter whose verdict applies a policy)"
    )
    adapter: str = Field(
        description="adapter reference: `name` uses the promoted version (follows promotions), "
        "`name@vN` pins version N"
    )
    description: str = Field("", description="what this stage is for (shown in drawings and docs)")
    prompt: str | None = Field(
        None,
        description="generate: jinja template over the run context (`text` plus earlier outputs by stage "
        "name, e.g. `{{ intent.label }}`); default: the prompt the adapter was trained with",
    )
    system: str | None = Field(
        None,
        description="generate: system message before the prompt; default: the adapter's own, if any",
    )
    inputs: list[str] | None = Field(
        None,
        min_length=1,
        description="names this stage reads: `text` or earlier stage names. generate: the template "
        "context is limited to these; classify/tag: at most one, the text to read (`text` or a "
        "generate stage). Default: generate reads everything before it, classify/tag read `text`",
    )
    max_new_tokens: int = Field(128, ge=1, le=4096, description="generate: most tokens to decode")
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description="generate: divides the score of every token already generated (1.0: off; 1.1-1.3 "
        "curbs loops). Only the generated text counts: copying from the prompt is never penalised",
    )
    no_repeat_ngram_size: int = Field(
        0,
        ge=0,
        le=32,
        description="generate: never generate the same n tokens twice (0: off; 3-4 stops a looping "
        "line). Only the generated text counts: the prompt's n-grams can still be copied once",
    )
    chunking: ChunkingSpec | None = Field(
        None,
        description="split long documents into chunks and combine the results; absent = one pass",
    )
    target: str = Field(
        "input",
        description="guardrail: what it checks: `input` (the document) or the name of an earlier "
        "generate stage whose text it checks",
    )
    policy: GuardrailPolicy = Field(
        "block",
        description="guardrail: on failure `block` (stop the run), `redact` (mask the flagged text and "
        "go on), `replace` (answer `fallback` instead) or `escalate` (hand to a human)",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="guardrail: fails when a flagged label scores at or above this; absent: the threshold "
        "stored with the adapter version (chosen at training), else 0.5",
    )
    review_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="guardrail: a second, lower line: a flagged score at or above this but below the "
        "threshold hands the run to a human (escalated, nothing automated is sent) instead of passing; "
        "absent: no review band",
    )
    review_reply: str | None = Field(
        None,
        description="guardrail: the reply of a run the review band escalated (default: a hand-off message)",
    )
    flag_labels: list[str] | None = Field(
        None,
        description="guardrail: adapter labels that count as a violation; default: every label except "
        "`safe`",
    )
    fallback: str | None = Field(
        None,
        description="guardrail: the reply used instead of the flagged text (required for `replace`)",
    )
    on_error: OnError = Field(
        "fail_closed",
        description="guardrail: when the check itself errors, `fail_closed` (treat as failed, default) "
        "or `fail_open` (let the text through)",
    )

    @field_validator("adapter")
    @classmethod
    def _adapter_ref(cls, value: str) -> str:
        try:
            parse_adapter_ref(value)
        except ConfigError as exc:
            raise _fail(exc.message) from None
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> StageSpec:
        given = self.model_fields_set
        if self.kind != "generate":
            for name in GENERATE_ONLY_FIELDS:
                if name in given:
                    raise _fail(
                        f"`{name}` is only for `kind: generate`, not `kind: {self.kind}`", name
                    )
        if self.kind != "guardrail":
            for name in GUARDRAIL_ONLY_FIELDS:
                if name in given:
                    raise _fail(
                        f"`{name}` is only for `kind: guardrail`, not `kind: {self.kind}`", name
                    )
        if self.kind == "guardrail" and self.inputs is not None:
            raise _fail(
                "`inputs` is not for `kind: guardrail`; use `target` to name what it checks",
                "inputs",
            )
        if self.kind in ("classify", "tag") and self.inputs is not None and len(self.inputs) != 1:
            raise _fail(
                f"`inputs` of a `{self.kind}` stage names the one text it reads (`text` or a generate "
                f"stage), got {len(self.inputs)} names",
                "inputs",
            )
        if self.inputs is not None and len(set(self.inputs)) != len(self.inputs):
            raise _fail(f"`inputs` must not repeat names, got {self.inputs}", "inputs")
        if (
            self.kind == "guardrail"
            and self.review_threshold is not None
            and self.threshold is not None
            and self.review_threshold >= self.threshold
        ):
            raise _fail(
                f"`review_threshold` {self.review_threshold:g} must be below `threshold` {self.threshold:g}: "
                "scores from the review threshold up to the threshold go to a human",
                "review_threshold",
            )
        if self.review_reply is not None and self.review_threshold is None:
            raise _fail("`review_reply` needs `review_threshold` (the band whose runs it answers)", "review_reply")
        if self.kind == "guardrail" and self.policy == "replace" and not self.fallback:
            raise _fail(
                "`fallback` (the reply to send instead) is required for `policy: replace`",
                "fallback",
            )
        if self.prompt is not None:
            if not self.prompt.strip():
                raise _fail(
                    "`prompt` must not be empty; leave it out to use the adapter's trained prompt",
                    "prompt",
                )
            try:
                template_variables(self.prompt)
            except ConfigError as exc:
                raise _fail(exc.message, "prompt") from None
        if self.chunking is not None and self.chunking.combine is not None:
            allowed = COMBINE_MODES[self.kind]
            if self.chunking.combine not in allowed:
                raise _fail(
                    f"`chunking.combine` must be one of {', '.join(f'`{m}`' for m in allowed)} for "
                    f"`kind: {self.kind}`, got `{self.chunking.combine}`",
                    "chunking",
                )
        return self

    @property
    def adapter_name(self) -> str:
        """The adapter's registry name (``intent`` for ``intent@v3``)."""
        return parse_adapter_ref(self.adapter)[0]

    @property
    def adapter_version(self) -> int | None:
        """The pinned version number, or None for the promoted version."""
        return parse_adapter_ref(self.adapter)[1]

    @property
    def pinned(self) -> bool:
        """True when ``adapter`` names a version (``name@vN``)."""
        return self.adapter_version is not None

    @property
    def text_source(self) -> str:
        """classify/tag/guardrail: ``text`` (the document) or the generate stage whose text it reads."""
        if self.kind == "guardrail":
            return "text" if self.target == "input" else self.target
        if self.kind in ("classify", "tag") and self.inputs:
            return self.inputs[0]
        return "text"

    @property
    def combine(self) -> str:
        """The chunk-combining mode in effect (explicit or the kind's default)."""
        if self.chunking is not None and self.chunking.combine is not None:
            return self.chunking.combine
        return COMBINE_MODES[self.kind][0]

    def select_context(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The part of the run context this stage may read: everything, or only ``inputs``
        (names not in the context are left out; validation makes sure they are there)."""
        if self.inputs is None:
            return dict(context)
        return {name: context[name] for name in self.inputs if name in context}

    def flagged_labels(self, adapter_labels: Sequence[str]) -> list[str]:
        """guardrail: the adapter labels that count as a violation (``flag_labels``, or
        every label except ``safe``)."""
        if self.flag_labels is not None:
            return list(self.flag_labels)
        return [label for label in adapter_labels if label != SAFE_LABEL]


class LimitsSpec(BaseModel):
    """Limits on what one run may read and do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_document_chars: int = Field(
        50_000,
        ge=1,
        description="longest document accepted (characters); longer ones are an input error",
    )
    max_chunks: int = Field(
        16, ge=1, le=1024, description="most chunks a chunked stage splits a document into"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one run in seconds; absent = none"
    )


# --------------------------------------------------------------------------- pipeline


class PipelineSpec(BaseModel):
    """A pipeline: stages (each one adapter on the shared base) joined by edges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="pipeline name (lowercase letters, digits, `_`, `-`), e.g. `customer-service`",
    )
    description: str = Field("", description="what the pipeline does, for people")
    base: BaseSpec = Field(
        default_factory=BaseSpec,
        description="the ONE shared base every adapter mounts on, and its quantization (adapters must "
        "have been trained on the same)",
    )
    entry: str | None = Field(
        None, description="the stage a run starts at; default: the first stage"
    )
    stages: dict[str, StageSpec] = Field(
        min_length=1,
        description="stage name -> stage, in file order; names are identifiers (letters, digits, `_`) "
        "because prompt templates read outputs by stage name",
    )
    edges: list[EdgeSpec] = Field(
        default_factory=list, description="connections between stages, tried in file order"
    )
    reply_from: list[str] | None = Field(
        None,
        description="generate (or guardrail-checked) stages whose text is the reply to the customer, in "
        "priority order: the first that ran gives `RunResult.reply`. Default: the last generate stage "
        "that ran",
    )
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="document size, chunk and time limits"
    )

    _source: SourceMap | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _pipeline_name(cls, value: str) -> str:
        if not _PIPELINE_NAME.match(value):
            raise _fail(
                "`name` must be lowercase letters, digits, `_` or `-`, starting with a letter "
                f"(at most 64), got {value!r}"
            )
        return value

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: dict[str, StageSpec]) -> dict[str, StageSpec]:
        for name in value:
            if not isinstance(name, str) or not _STAGE_NAME.match(name):
                raise _fail(
                    f"stage name {name!r} must be an identifier (a letter or `_`, then letters, digits "
                    "or `_`; at most 64) so prompt templates can read its output",
                    str(name),
                )
            if name.lower() in RESERVED_NAMES:
                raise _fail(
                    f"stage name `{name}` is reserved (`text` is the document, `input` a guardrail "
                    "target); choose another name",
                    name,
                )
        return value

    @property
    def entry_stage(self) -> str:
        """The stage a run starts at: ``entry`` or the first stage."""
        return self.entry if self.entry is not None else next(iter(self.stages))

    @property
    def source(self) -> SourceMap | None:
        """Where each field was written, when the spec was loaded from YAML."""
        return self._source

    def where(self, loc: Sequence[str | int] = ()) -> str:
        """``"file:LINE"`` of a field path; ``"pipeline `name`"`` for specs built in code."""
        if self._source is not None:
            return self._source.where(loc)
        return f"pipeline `{self.name}`"

    def with_adapters(self, adapters: Mapping[str, str]) -> PipelineSpec:
        """A copy whose stages in ``adapters`` use another adapter reference (``{"reply": "reply@v2"}``).

        For trying a version without editing the file (``loragraph run --adapter``); the copy keeps
        the source map, so problems still point at the file. Unknown stages raise ``ConfigError``.
        """
        stages = dict(self.stages)
        for stage, ref in adapters.items():
            if stage not in stages:
                close = difflib.get_close_matches(stage, list(stages), n=1)
                hint = f"; did you mean `{close[0]}`?" if close else f"; stages: {', '.join(stages)}"
                raise ConfigError(f"adapter override for unknown stage `{stage}`{hint}", where=self.where())
            try:
                stages[stage] = StageSpec.model_validate({**stages[stage].model_dump(exclude_unset=True), "adapter": ref})
            except ValidationError as exc:
                raise ConfigError(
                    f"adapter override `{stage}={ref}`: {exc.errors()[0]['msg']}", where=self.where()
                ) from exc
        copy = self.model_copy(update={"stages": stages})
        copy._source = self._source
        return copy

    def edges_from(self, stage: str) -> list[EdgeSpec]:
        """The edges leaving ``stage``, in file order."""
        return [e for e in self.edges if e.from_ == stage]

    def reply_stage(self, path: Sequence[str]) -> str | None:
        """Which executed stage's text is the customer reply, given the stages a run
        executed in order: the first of ``reply_from`` that ran, else the last generate
        stage that ran, else None."""
        ran = set(path)
        if self.reply_from is not None:
            return next((name for name in self.reply_from if name in ran), None)
        generated = [
            name for name in path if name in self.stages and self.stages[name].kind == "generate"
        ]
        return generated[-1] if generated else None


# --------------------------------------------------------------------------- loading

_MODEL_AT: list[tuple[tuple[str, ...], type[BaseModel]]] = [
    ((), PipelineSpec),
    (("base",), BaseSpec),
    (("limits",), LimitsSpec),
    (("stages", "*"), StageSpec),
    (("stages", "*", "chunking"), ChunkingSpec),
    (("edges", "#"), EdgeSpec),
    (("edges", "#", "when"), Condition),
    (("edges", "#", "when", "#"), Condition),
]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    for pattern, model in _MODEL_AT:
        if len(pattern) == len(loc) and all(
            p == part
            or (p == "*" and isinstance(part, str))
            or (p == "#" and isinstance(part, int))
            for p, part in zip(pattern, loc, strict=True)
        ):
            return model
    return None


def _known_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _resolve_loc(data: Any, loc: Sequence[Any]) -> Loc:
    """Map a pydantic error location onto the data: drop segments that are not keys/indexes
    (union tags, a single condition written without a list) and keep the rest."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        present = (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        )
        if present:
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and part != "[key]" and (isinstance(cur, dict) or cur is None):
            # a missing key (the line of its parent is used): keep it in the path
            out.append(part)
            cur = None
    return tuple(out)


def _qualify(loc: Loc, message: str) -> str:
    """Name the field by its full path: at ``stages.guard``, "`fallback` is required"
    becomes "`stages.guard.fallback` is required"; other messages get a `path`: prefix."""
    match = re.match(r"`([A-Za-z_][A-Za-z0-9_.]*)`", message)
    if match is not None:
        parts = match.group(1).split(".")
        parent = loc[:-1] if loc and str(loc[-1]) == parts[0] else loc
        return f"`{format_loc((*parent, *parts))}`{message[match.end() :]}"
    return f"`{format_loc(loc) or 'pipeline'}`: {message}"


def _problem(err: dict[str, Any], data: Any, source: SourceMap) -> Problem:
    loc = _resolve_loc(data, err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] == "loragraph":
        line_loc = loc
        if ctx.get("at") is not None:
            sub = _resolve_loc(data, (*loc, ctx["at"]))
            line_loc = sub if len(sub) > len(loc) else loc
        return Problem(source.where(line_loc), _qualify(loc, str(err["msg"])))
    path = format_loc(loc) or "pipeline"
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = _known_fields(model) if model else []
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean `{guess[0]}`?" if guess else ""
        listing = f" Known fields: {', '.join(f'`{k}`' for k in known)}." if known else ""
        return Problem(source.where(loc), f"`{path}` is not a known field{hint}{listing}")
    if kind == "missing":
        return Problem(source.where(loc), f"`{path}` is required")
    msg = str(err["msg"]).removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    msg = msg.removeprefix("input ")
    msg = re.sub(r" or instance of \w+", "", msg)
    return Problem(source.where(loc), f"`{path}` {msg}, got {err.get('input')!r}")


def _build(data: Any, source: SourceMap, problems: list[Problem]) -> PipelineSpec:
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"a pipeline file must be a YAML mapping of fields, got {got}", where=source.where(())
        )
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems + [_problem(dict(e), data, source) for e in exc.errors()]
        spec = None
    if problems:
        problems.sort(
            key=lambda p: source.line(()) if ":" not in p.where else int(p.where.rsplit(":", 1)[1])
        )
        raise PipelineValidationError(problems, where=source.file)
    assert spec is not None
    spec._source = source
    return spec


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read a pipeline YAML file into a ``PipelineSpec``.

    Raises ``NotFoundError`` (no file), ``ConfigError`` (not YAML, or not a mapping; with
    ``file:LINE``) or ``PipelineValidationError`` listing every field problem, each with the
    ``file:LINE`` of the offending key and the field path in backticks.
    """
    data, source, problems = load_yaml(path)
    return _build(data, source, problems)


def parse_pipeline(text: str, *, file: str = "<pipeline>") -> PipelineSpec:
    """Like ``load_pipeline`` for YAML text (an upload, a test); ``file`` names it in problems."""
    data, source, problems = parse_yaml(text, file)
    return _build(data, source, problems)
