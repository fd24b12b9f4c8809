"""Loading pipeline files: field problems carry file:LINE and the field path; refs parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from loragraph.errors import ConfigError, NotFoundError, PipelineValidationError
from loragraph.pipelines.spec import (
    Condition,
    EdgeSpec,
    PipelineSpec,
    StageSpec,
    load_pipeline,
    parse_adapter_ref,
    parse_pipeline,
)
from tests.pipelines.conftest import line_of

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "customer_service" / "pipeline.yaml"

GOOD = """\
name: demo
stages:
  intent:
    kind: classify
    adapter: intent
  summary:
    kind: generate
    adapter: summary@v3
    prompt: "Summarise: {{ text }}"
edges:
  - from: intent
    to: summary
    when:
      field: intent.label
      op: in
      value: [complaint, refund_request]
"""


def _problems(text: str, file: str = "p.yaml") -> list[str]:
    with pytest.raises(PipelineValidationError) as info:
        parse_pipeline(text, file=file)
    return [str(p) for p in info.value.problems]


def test_good_file_loads_with_file_order_and_defaults(write_pipeline) -> None:
    spec = load_pipeline(write_pipeline(GOOD))
    assert list(spec.stages) == ["intent", "summary"]
    assert spec.entry_stage == "intent"
    assert spec.base.name == "smollm2-135m-instruct" and spec.base.quantization == "nf4"
    edge = spec.edges[0]
    assert (edge.from_, edge.to, edge.default) == ("intent", "summary", False)
    assert edge.when == [
        Condition(field="intent.label", op="in", value=["complaint", "refund_request"])
    ]
    assert spec.where(("edges", 0, "when", "op")).endswith(f":{line_of(GOOD, 'op: in')}")


def test_pinned_and_promoted_references_parse() -> None:
    assert parse_adapter_ref("intent") == ("intent", None)
    assert parse_adapter_ref("intent@v3") == ("intent", 3)
    spec = parse_pipeline(GOOD)
    assert (spec.stages["intent"].adapter_name, spec.stages["intent"].adapter_version) == (
        "intent",
        None,
    )
    assert not spec.stages["intent"].pinned
    assert (spec.stages["summary"].adapter_name, spec.stages["summary"].adapter_version) == (
        "summary",
        3,
    )
    assert spec.stages["summary"].pinned
    for bad in ("intent@", "intent@v0", "in tent", "@v2", "intent@latest"):
        with pytest.raises(ConfigError, match="`adapter`"):
            parse_adapter_ref(bad)


def test_bad_reference_names_line_and_field() -> None:
    text = GOOD.replace("adapter: summary@v3", "adapter: summary@latest")
    problems = _problems(text)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"p.yaml:{line_of(text, 'summary@latest')}: `stages.summary.adapter`"
    )


def test_unknown_field_names_line_field_and_suggestion() -> None:
    text = GOOD.replace('    prompt: "Summarise', '    promt: "Summarise')
    (problem,) = _problems(text)
    assert problem.startswith(
        f"p.yaml:{line_of(text, 'promt')}: `stages.summary.promt` is not a known field"
    )
    assert "did you mean `prompt`?" in problem


def test_every_problem_at_once_sorted_by_line() -> None:
    text = """\
name: demo
colour: blue
stages:
  intent:
    kind: clasify
    adapter: intent
  reply:
    kind: generate
    adapter: reply
    threshold: 0.3
edges:
  - from: intent
  - from: intent
    to: reply
    when: {field: intent.label, op: gt, value: high}
limits:
  max_document_chars: 0
"""
    problems = _problems(text)
    expected = [
        (line_of(text, "colour"), "`colour` is not a known field"),
        (
            line_of(text, "clasify"),
            "`stages.intent.kind` should be 'classify', 'tag', 'generate' or 'guardrail', got 'clasify'",
        ),
        (
            line_of(text, "threshold"),
            "`stages.reply.threshold` is only for `kind: guardrail`, not `kind: generate`",
        ),
        (line_of(text, "- from: intent"), "`edges[0].to` is required"),
        (
            line_of(text, "op: gt"),
            "`edges[1].when.value` must be a number for `op: gt`, got 'high'",
        ),
        (
            line_of(text, "max_document_chars"),
            "`limits.max_document_chars` should be greater than or equal to 1",
        ),
    ]
    assert len(problems) == len(expected), problems
    for problem, (line, start) in zip(problems, expected, strict=True):
        assert problem.startswith(f"p.yaml:{line}: ") and start in problem, (problem, line, start)


def test_duplicate_keys_are_problems_with_both_lines() -> None:
    text = GOOD + "  - {from: intent, to: summary}\n"
    text = text.replace(
        "  summary:\n", "  intent:\n    kind: tag\n    adapter: entities\n  summary:\n", 1
    )
    (problem,) = _problems(text)
    first, second = line_of(text, "  intent:"), line_of(text, "  intent:", 2)
    assert problem.startswith(
        f"p.yaml:{second}: `stages.intent` is written twice (lines {first} and {second})"
    )


def test_yaml_syntax_error_names_the_line(write_pipeline) -> None:
    text = "name: demo\nstages:\n  intent: {kind: classify, adapter: intent\n  x: 1\n"
    path = write_pipeline(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert info.value.where is not None and info.value.where.startswith(f"{path}:")
    assert int(info.value.where.rsplit(":", 1)[1]) in (3, 4)
    assert "not valid YAML" in info.value.message


def test_not_a_mapping_and_missing_file(write_pipeline, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_pipeline(write_pipeline("- a\n- b\n"))
    with pytest.raises(ConfigError, match="an empty file"):
        load_pipeline(write_pipeline(""))
    with pytest.raises(NotFoundError):
        load_pipeline(tmp_path / "nope.yaml")


def test_stage_names_must_be_template_identifiers() -> None:
    text = "name: demo\nstages:\n  text: {kind: classify, adapter: intent}\n"
    (problem,) = _problems(text)
    assert problem.startswith("p.yaml:3: `stages`: stage name `text` is reserved")
    (problem,) = _problems("name: demo\nstages:\n  bad-name: {kind: classify, adapter: intent}\n")
    assert problem.startswith("p.yaml:3: `stages`:") and "identifier" in problem


def test_kind_specific_fields_point_at_their_own_line() -> None:
    text = """\
name: demo
stages:
  guard:
    kind: guardrail
    adapter: guard
    policy: replace
  intent:
    kind: classify
    adapter: intent
    max_new_tokens: 12
"""
    problems = _problems(text)
    assert problems[0].startswith(
        f"p.yaml:{line_of(text, 'guard:')}: `stages.guard.fallback` (the reply to send instead) is required"
    )
    assert problems[1].startswith(
        f"p.yaml:{line_of(text, 'max_new_tokens')}: `stages.intent.max_new_tokens` is only for `kind: generate`"
    )


def test_review_threshold_lies_below_the_threshold_and_review_reply_needs_it() -> None:
    text = """\
name: demo
stages:
  guard:
    kind: guardrail
    adapter: guard
    threshold: 0.4
    review_threshold: 0.4
  other_guard:
    kind: guardrail
    adapter: guard
    review_reply: A colleague will reply.
  intent:
    kind: classify
    adapter: intent
    review_threshold: 0.1
"""
    problems = _problems(text)
    assert problems[0].startswith(
        f"p.yaml:{line_of(text, 'review_threshold: 0.4')}: `stages.guard.review_threshold` 0.4 must be below `threshold` 0.4"
    )
    assert problems[1].startswith(
        f"p.yaml:{line_of(text, 'review_reply')}: `stages.other_guard.review_reply` needs `review_threshold`"
    )
    assert problems[2].startswith(
        f"p.yaml:{line_of(text, 'review_threshold: 0.1')}: `stages.intent.review_threshold` is only for `kind: guardrail`"
    )


def test_condition_value_shapes() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        Condition(field="intent.label", op="in", value="complaint")
    with pytest.raises(ValueError, match="a number"):
        Condition(field="intent.score", op="ge", value=True)
    with pytest.raises(ValueError, match="use `op: in`"):
        Condition(field="intent.label", op="eq", value=["a"])
    with pytest.raises(ValueError):
        Condition(field="intent..label", op="eq", value="a")
    assert str(Condition(field="intent.score", op="ge", value=0.5)) == "intent.score >= 0.5"


def test_edge_default_and_when_exclude_each_other_and_alias_works() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        EdgeSpec.model_validate(
            {"from": "a", "to": "b", "default": True, "when": {"field": "a.label", "value": "x"}}
        )
    edge = EdgeSpec.model_validate(
        {"from": "a", "to": "b", "when": {"field": "a.label", "value": "x"}}
    )
    assert edge.conditional and edge.label() == "a.label == x"
    assert EdgeSpec(from_="a", to="b").model_dump(by_alias=True)["from"] == "a"


def test_bad_prompt_template_is_a_field_problem() -> None:
    text = GOOD.replace('"Summarise: {{ text }}"', '"Summarise: {{ text "')
    (problem,) = _problems(text)
    assert problem.startswith(
        f"p.yaml:{line_of(text, 'prompt:')}: `stages.summary.prompt` is not a valid template"
    )


def test_chunking_combine_must_fit_the_kind() -> None:
    text = GOOD.replace(
        "    adapter: intent\n",
        "    adapter: intent\n    chunking: {max_chars: 500, combine: concat}\n",
    )
    (problem,) = _problems(text)
    assert (
        "`stages.intent.chunking.combine` must be one of `vote`, `max`, `first` for `kind: classify`, got `concat`"
        in problem
    )
    ok = parse_pipeline(
        GOOD.replace(
            "    adapter: intent\n", "    adapter: intent\n    chunking: {max_chars: 500}\n"
        )
    )
    assert ok.stages["intent"].combine == "vote" and ok.stages["summary"].combine == "concat"


def test_specs_built_in_code_validate_too() -> None:
    spec = PipelineSpec(name="code", stages={"a": StageSpec(kind="classify", adapter="intent")})
    assert spec.entry_stage == "a" and spec.where(("stages", "a")) == "pipeline `code`"
    with pytest.raises(ValueError, match="at least 1"):
        PipelineSpec(name="code", stages={})


def test_shipped_sample_loads() -> None:
    spec = load_pipeline(SAMPLE)
    assert spec.base.name == "smollm2-135m-instruct" and spec.base.quantization == "nf4"
    kinds = {name: stage.kind for name, stage in spec.stages.items()}
    assert kinds == {
        "guard_in": "guardrail",
        "intent": "classify",
        "out_of_scope": "generate",
        "entities": "tag",
        "summary": "generate",
        "reply": "generate",
        "escalation": "generate",
        "check_reply": "guardrail",
        "check_out_of_scope": "guardrail",
    }
    assert spec.entry_stage == "guard_in"
    assert (spec.stages["guard_in"].target, spec.stages["guard_in"].policy) == ("input", "block")
    assert (spec.stages["check_reply"].target, spec.stages["check_reply"].policy) == ("reply", "replace")
    assert spec.stages["check_out_of_scope"].target == "out_of_scope"
    assert spec.stages["summary"].inputs == ["text"]
    assert spec.stages["reply"].inputs == ["text", "intent", "entities", "summary"]
    assert spec.reply_from == ["reply", "out_of_scope"]


def test_stage_helpers_for_the_router() -> None:
    spec = load_pipeline(SAMPLE)
    context = {
        "text": "t",
        "intent": {"label": "other"},
        "entities": {"entities": []},
        "summary": {"text": "s"},
    }
    assert spec.stages["summary"].select_context(context) == {"text": "t"}
    assert spec.stages["escalation"].select_context(context) == {
        "text": "t",
        "intent": {"label": "other"},
        "entities": {"entities": []},
    }
    assert StageSpec(kind="generate", adapter="x").select_context(context) == context
    assert spec.reply_stage(["intent", "entities", "summary", "reply", "escalation"]) == "reply"
    assert spec.reply_stage(["intent", "out_of_scope"]) == "out_of_scope"
    assert spec.reply_stage(["intent"]) is None
    plain = parse_pipeline(GOOD)
    assert (
        plain.reply_stage(["intent", "summary"]) == "summary"
        and plain.reply_stage(["intent"]) is None
    )
    guard = StageSpec(kind="guardrail", adapter="guard")
    assert guard.flagged_labels(["safe", "attack", "pii"]) == ["attack", "pii"]
    assert StageSpec(kind="guardrail", adapter="guard", flag_labels=["pii"]).flagged_labels(
        ["safe", "pii"]
    ) == ["pii"]
    assert (
        guard.text_source == "text"
        and StageSpec(kind="guardrail", adapter="g", target="reply").text_source == "reply"
    )


def test_empty_when_is_unconditional_and_empty_inputs_are_refused() -> None:
    text = "name: x\nstages:\n  a: {kind: classify, adapter: s}\n  b: {kind: classify, adapter: s}\nedges:\n  - {from: a, to: b, when: null}\n"
    assert not parse_pipeline(text).edges[0].conditional
    (problem,) = _problems(text.replace("adapter: s}\n  b", "adapter: s, inputs: []}\n  b", 1))
    assert problem.startswith("p.yaml:3: `stages.a.inputs` list should have at least 1 item")


def test_repetition_settings_are_generate_fields_with_bounds() -> None:
    ok = "name: demo\nstages:\n  summary: {kind: generate, adapter: summary, no_repeat_ngram_size: 3, repetition_penalty: 1.2}\n"
    stage = parse_pipeline(ok, file="p.yaml").stages["summary"]
    assert (stage.no_repeat_ngram_size, stage.repetition_penalty) == (3, 1.2)
    (problem,) = _problems("name: demo\nstages:\n  intent: {kind: classify, adapter: intent, no_repeat_ngram_size: 3}\n")
    assert problem.startswith("p.yaml:3: `stages.intent.no_repeat_ngram_size` is only for `kind: generate`")
    (problem,) = _problems("name: demo\nstages:\n  summary: {kind: generate, adapter: summary, repetition_penalty: 0.5}\n")
    assert problem.startswith("p.yaml:3: `stages.summary.repetition_penalty`") and "1" in problem
    (problem,) = _problems("name: demo\nstages:\n  summary: {kind: generate, adapter: summary, no_repeat_ngram_size: -2}\n")
    assert problem.startswith("p.yaml:3: `stages.summary.no_repeat_ngram_size`")
