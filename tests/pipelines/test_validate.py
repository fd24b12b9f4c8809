"""Static validation: every problem, each with the file:LINE of the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loragraph.errors import NotFoundError, PipelineValidationError
from loragraph.pipelines.spec import PipelineSpec, StageSpec, parse_pipeline
from loragraph.pipelines.validate import check_pipeline, validate_pipeline
from tests.pipelines.conftest import FINGERPRINT, line_of

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "customer_service" / "pipeline.yaml"

BASE = """\
name: demo
stages:
  intent:
    kind: classify
    adapter: intent
  entities:
    kind: tag
    adapter: entities
  summary:
    kind: generate
    adapter: summary
  reply:
    kind: generate
    adapter: reply
edges:
  - {from: intent, to: entities}
  - {from: entities, to: summary}
  - {from: summary, to: reply}
"""


def check(write_pipeline: Any, text: str, **kwargs: Any) -> tuple[Path, list[str]]:
    path = write_pipeline(text)
    return path, [str(p) for p in validate_pipeline(path, **kwargs)]


def assert_one(problems: list[str], path: Path, line: int, *parts: str) -> None:
    """Exactly one problem, at ``path:line``, containing every part."""
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: "), (problems[0], line)
    for part in parts:
        assert part in problems[0], (problems[0], part)


def test_base_pipeline_is_valid(write_pipeline: Any, registry: Any) -> None:
    assert check(write_pipeline, BASE)[1] == []
    assert check(write_pipeline, BASE, registry=registry, base_fingerprint=FINGERPRINT)[1] == []


def test_loading_problems_are_returned_not_raised(write_pipeline: Any) -> None:
    text = BASE.replace("    adapter: reply\n", "    adapter: reply\n    max_tokens: 3\n")
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "max_tokens"),
        "`stages.reply.max_tokens` is not a known field",
        "`max_new_tokens`",
    )
    path = write_pipeline("name: [unclosed\n")
    (problem,) = validate_pipeline(path)
    assert problem.where == f"{path}:2" and "not valid YAML" in problem.message
    with pytest.raises(NotFoundError):
        validate_pipeline(path.with_name("missing.yaml"))


def test_edge_to_unknown_stage(write_pipeline: Any) -> None:
    text = BASE + "  - {from: reply, to: replay}\n"
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "to: replay"),
        "`edges[3].to` names stage `replay`, which does not exist",
    )


def test_unknown_entry(write_pipeline: Any) -> None:
    text = "entry: intnet\n" + BASE
    path, problems = check(write_pipeline, text)
    assert_one(problems, path, 1, "`entry` names stage `intnet`")


def test_cycle(write_pipeline: Any) -> None:
    text = BASE + "  - {from: reply, to: entities}\n"
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "from: reply, to: entities"),
        "`edges[3]` closes a cycle",
        "`entities` -> `summary`",
    )


def test_unreachable_stage(write_pipeline: Any) -> None:
    text = BASE.replace("edges:\n", "  orphan:\n    kind: classify\n    adapter: intent\nedges:\n")
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "orphan:"),
        "`stages.orphan` is never reached from the entry stage `intent`",
    )


def test_input_not_produced_before(write_pipeline: Any) -> None:
    text = BASE.replace(
        "    adapter: summary\n", "    adapter: summary\n    inputs: [text, reply]\n"
    )
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "inputs: [text, reply]"),
        "`stages.summary.inputs[1]` reads `reply`",
        "no stage before `summary` produces it",
    )


def test_input_produced_only_on_some_paths(write_pipeline: Any) -> None:
    text = """\
name: demo
stages:
  intent: {kind: classify, adapter: intent}
  entities: {kind: tag, adapter: entities}
  reply:
    kind: generate
    adapter: reply
    prompt: "{{ text }} {{ entities | entity_list }}"
edges:
  - {from: intent, to: entities, when: {field: intent.label, value: order_status}}
  - {from: intent, to: reply, default: true}
  - {from: entities, to: reply}
"""
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "prompt:"),
        "`stages.reply.prompt` reads `entities`",
        "runs only on some paths to `reply`",
    )


def test_prompt_reads_unknown_name_or_name_outside_inputs(write_pipeline: Any) -> None:
    text = BASE.replace(
        "    adapter: reply\n",
        '    adapter: reply\n    inputs: [text, summary]\n    prompt: "{{ summary.text }} {{ intent.label }} {{ customer }}"\n',
    )
    path, problems = check(write_pipeline, text)
    line = line_of(text, "prompt:")
    assert len(problems) == 2, problems
    assert all(p.startswith(f"{path}:{line}: `stages.reply.prompt` reads") for p in problems)
    assert "`customer`, which is not in this stage's `inputs`" in problems[0]
    assert "`intent`, which is not in this stage's `inputs`" in problems[1]


def test_prompt_reads_a_field_the_kind_does_not_output(write_pipeline: Any) -> None:
    text = BASE.replace(
        "    adapter: reply\n",
        '    adapter: reply\n    prompt: "{{ intent.lable }} {{ summary.text }}"\n',
    )
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "prompt:"),
        "reads `intent.lable`, but a `classify` stage outputs only `label`, `score`, `scores`",
    )


def test_condition_on_stage_not_run_before_the_edge(write_pipeline: Any) -> None:
    text = BASE.replace(
        "  - {from: intent, to: entities}\n",
        "  - from: intent\n    to: entities\n    when:\n      - field: summary.text\n        op: contains\n        value: refund\n",
    )
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "field: summary.text"),
        "`edges[0].when[0]` reads `summary.text`",
        "does not run before `intent`",
    )


def test_condition_field_the_kind_does_not_output(write_pipeline: Any) -> None:
    text = BASE.replace(
        "  - {from: entities, to: summary}\n",
        "  - from: entities\n    to: summary\n    when: {field: intent.lable, value: complaint}\n",
    )
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "intent.lable"),
        "reads `intent.lable`, but a `classify` stage outputs only `label`, `score`, `scores`",
    )


def test_condition_operator_and_value_type_must_fit_the_field(write_pipeline: Any) -> None:
    text = BASE.replace(
        "  - {from: entities, to: summary}\n",
        "  - from: entities\n    to: summary\n    when:\n      - {field: intent.label, op: gt, value: 3}\n"
        "      - {field: intent.score, op: eq, value: high}\n      - {field: intent.scores, op: gt, value: 0.5}\n",
    )
    path, problems = check(write_pipeline, text)
    assert len(problems) == 3, problems
    assert problems[0].startswith(
        f"{path}:{line_of(text, 'op: gt, value: 3')}: `edges[1].when[0]`: `op: gt` does not apply to `intent.label` (a string)"
    )
    assert problems[1].startswith(
        f"{path}:{line_of(text, 'value: high')}: `edges[1].when[1]`: `intent.score` is a number; `value` 'high' is a string"
    )
    assert problems[2].startswith(
        f"{path}:{line_of(text, 'field: intent.scores,')}: `edges[1].when[2]` reads `intent.scores`, a mapping"
    )


def test_condition_on_a_label_the_adapter_does_not_have(write_pipeline: Any, registry: Any) -> None:
    text = BASE.replace(
        "  - {from: entities, to: summary}\n",
        "  - from: entities\n    to: summary\n    when:\n      - field: intent.label\n        op: in\n        value: [complaint, refund]\n"
        "      - {field: entities.entities, op: contains, value: IBAN}\n",
    )
    path, problems = check(write_pipeline, text)
    assert problems == []  # structurally fine: labels need the registry
    path, problems = check(write_pipeline, text, registry=registry)
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        f"{path}:{line_of(text, 'value: [complaint, refund]')}: `edges[1].when[0]`: adapter `intent` has no label `refund`"
    )
    assert "order_status" in problems[0]  # lists the labels it has
    assert problems[1].startswith(
        f"{path}:{line_of(text, 'value: IBAN')}: `edges[1].when[1]`: adapter `entities` has no entity type `IBAN`"
    )


def test_missing_adapter_and_missing_version(write_pipeline: Any, registry: Any) -> None:
    text = BASE.replace("adapter: summary", "adapter: summarizer").replace(
        "adapter: reply", "adapter: reply@v7"
    )
    path, problems = check(write_pipeline, text, registry=registry)
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        f"{path}:{line_of(text, 'summarizer')}: `stages.summary.adapter`: adapter `summarizer` cannot be used: no adapter named `summarizer`"
    )
    assert problems[1].startswith(
        f"{path}:{line_of(text, 'reply@v7')}: `stages.reply.adapter`: adapter `reply@v7` cannot be used"
    )
    assert "has no version v7; published versions: v1, v2" in problems[1]


def test_pinned_version_resolves(write_pipeline: Any, registry: Any) -> None:
    assert (
        check(
            write_pipeline, BASE.replace("adapter: reply", "adapter: reply@v2"), registry=registry
        )[1]
        == []
    )


def test_adapter_kind_must_match_stage_kind(write_pipeline: Any, registry: Any) -> None:
    text = (
        BASE.replace("    adapter: entities", "    adapter: intent").replace(
            "edges:\n",
            "  guard:\n    kind: guardrail\n    adapter: summary\n    target: reply\nedges:\n",
        )
        + "  - {from: reply, to: guard}\n"
    )
    path, problems = check(write_pipeline, text, registry=registry)
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        f"{path}:{line_of(text, 'adapter: intent', 2)}: `stages.entities.adapter`: `intent@v1` is a `classify` adapter, but a `tag` stage needs a `tag` adapter"
    )
    assert problems[1].startswith(
        f"{path}:{line_of(text, 'adapter: summary', 2)}: `stages.guard.adapter`: `summary@v1` is a `generate` adapter, but a `guardrail` stage needs a `classify` adapter"
    )


def test_quantization_and_fingerprint_must_match_the_base(
    write_pipeline: Any, registry: Any
) -> None:
    text = BASE.replace("adapter: summary", "adapter: bf16gen")
    path, problems = check(write_pipeline, text, registry=registry)
    assert_one(
        problems,
        path,
        line_of(text, "bf16gen"),
        "`bf16gen@v1` was trained on `bf16`, but `base.quantization` is `nf4`",
    )

    path, problems = check(
        write_pipeline, BASE, registry=registry, base_fingerprint="sha256:" + "00" * 16
    )
    assert len(problems) == 4 and all(
        "was trained on a base with fingerprint" in p for p in problems
    ), problems
    assert problems[0].startswith(
        f"{path}:{line_of(BASE, 'adapter: intent')}: `stages.intent.adapter`"
    )

    text = BASE.replace("adapter: summary", "adapter: otherbase")
    path, problems = check(write_pipeline, text, registry=registry)
    assert_one(
        problems, path, line_of(text, "otherbase"), "all adapters of a pipeline must share one base"
    )


def test_generate_stage_needs_some_prompt(write_pipeline: Any, registry: Any) -> None:
    text = BASE.replace("adapter: summary", "adapter: noprompt")
    path, problems = check(write_pipeline, text, registry=registry)
    assert_one(
        problems,
        path,
        line_of(text, "noprompt"),
        "records no trained prompt; give the stage a `prompt`",
    )
    assert (
        check(
            write_pipeline,
            text.replace("adapter: noprompt", 'adapter: noprompt\n    prompt: "{{ text }}"'),
            registry=registry,
        )[1]
        == []
    )


def test_trained_prompt_is_checked_against_the_context(write_pipeline: Any, registry: Any) -> None:
    # the reply adapter's trained prompt reads intent, entities and summary: without a
    # summary stage before it, the registry check finds the gap at the adapter line
    text = BASE.replace(
        "  - {from: entities, to: summary}\n  - {from: summary, to: reply}\n",
        "  - {from: entities, to: reply}\n  - {from: reply, to: summary}\n",
    )
    path, problems = check(write_pipeline, text)
    assert problems == []
    path, problems = check(write_pipeline, text, registry=registry)
    assert_one(
        problems,
        path,
        line_of(text, "adapter: reply"),
        "`stages.reply` (the trained prompt of `reply`) reads `summary`",
    )


def test_guardrail_target_and_labels(write_pipeline: Any, registry: Any) -> None:
    text = (
        BASE.replace(
            "edges:\n",
            "  guard_out:\n    kind: guardrail\n    adapter: guard\n    target: intent\n    flag_labels: [attack, jailbreak]\n"
            "  toxicity:\n    kind: guardrail\n    adapter: toxic\n    target: reply\nedges:\n",
        )
        + "  - {from: reply, to: guard_out}\n  - {from: guard_out, to: toxicity}\n"
    )
    path, problems = check(write_pipeline, text, registry=registry)
    assert len(problems) == 3, problems
    assert problems[0].startswith(
        f"{path}:{line_of(text, 'target: intent')}: `stages.guard_out.target` must be `input` or a generate stage"
    )
    assert problems[1].startswith(
        f"{path}:{line_of(text, 'flag_labels')}: `stages.guard_out.flag_labels[1]`: adapter `guard@v1` has no label `jailbreak`"
    )
    assert problems[2].startswith(
        f"{path}:{line_of(text, 'toxicity:')}: `stages.toxicity`: adapter `toxic@v1` has no `safe` label"
    )


def test_reply_from_names_generate_stages(write_pipeline: Any) -> None:
    text = BASE + "reply_from: [reply, intent, nope]\n"
    path, problems = check(write_pipeline, text)
    line = line_of(text, "reply_from")
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:{line}: `reply_from[1]` must name a generate stage")
    assert problems[1].startswith(f"{path}:{line}: `reply_from[2]` names stage `nope`")


def test_many_problems_at_once_sorted_by_line(write_pipeline: Any) -> None:
    text = (
        BASE.replace("    adapter: summary\n", "    adapter: summary\n    inputs: [text, reply]\n")
        + "  - {from: reply, to: replay}\n"
    )
    _, problems = check(write_pipeline, text)
    assert [int(p.split(":")[1]) for p in problems] == [
        line_of(text, "inputs:"),
        line_of(text, "replay"),
    ]


def test_check_pipeline_raises_with_all_problems(write_pipeline: Any, registry: Any) -> None:
    text = (
        BASE.replace("adapter: summary", "adapter: summarizer") + "  - {from: reply, to: replay}\n"
    )
    path = write_pipeline(text)
    with pytest.raises(PipelineValidationError) as info:
        check_pipeline(path, registry=registry)
    assert len(info.value.problems) == 2 and info.value.where == str(path)
    spec = check_pipeline(write_pipeline(BASE), registry=registry, base_fingerprint=FINGERPRINT)
    assert isinstance(spec, PipelineSpec) and list(spec.stages) == [
        "intent",
        "entities",
        "summary",
        "reply",
    ]


def test_specs_built_in_code(registry: Any) -> None:
    spec = PipelineSpec(
        name="code",
        stages={
            "intent": StageSpec(kind="classify", adapter="intent"),
            "summary": StageSpec(kind="generate", adapter="summary", inputs=["reply"]),
        },
        edges=[{"from": "intent", "to": "summary"}],
    )
    problems = validate_pipeline(spec, registry=registry)
    assert [p.where for p in problems] == ["pipeline `code`"] * 2
    assert (
        "`stages.summary.inputs[0]` reads `reply`, which is neither `text` nor a stage"
        in problems[0].message
    )
    # the trained prompt of `summary` reads `text`, which `inputs` leaves out
    assert (
        "(the trained prompt of `summary`) reads `text`, which is not in this stage's `inputs`"
        in problems[1].message
    )


def test_shipped_sample_validates(registry: Any) -> None:
    assert validate_pipeline(SAMPLE) == []
    assert validate_pipeline(SAMPLE, registry=registry, base_fingerprint=FINGERPRINT) == []
    spec = parse_pipeline(SAMPLE.read_text(), file=str(SAMPLE))
    assert (
        spec.stages["escalation"].adapter == "summary"
        and spec.stages["out_of_scope"].adapter == "reply"
    )


def test_single_condition_mapping_points_at_its_own_keys(write_pipeline: Any) -> None:
    text = BASE.replace(
        "  - {from: entities, to: summary}\n",
        "  - from: entities\n    to: summary\n    when:\n      field: intent.label\n      op: ge\n      value: 0.5\n",
    )
    path, problems = check(write_pipeline, text)
    assert_one(
        problems,
        path,
        line_of(text, "op: ge"),
        "`edges[1].when[0]`: `op: ge` does not apply to `intent.label` (a string)",
    )
