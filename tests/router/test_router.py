"""The router on real components: the tiny base, real (untrained) adapters in a real registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loragraph.adapters.registry import Registry
from loragraph.errors import PipelineValidationError
from loragraph.router.router import Router, combine_classifications, split_chars, split_text
from loragraph.testing import publish_random_adapter
from tests.router.conftest import DOC, INTENTS, TYPES, _router, _yaml


def test_run_gives_every_stage_output_and_a_trace(world: dict[str, Any], tmp_path: Path) -> None:
    router = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}")
    result = router.run(DOC, run_id="r1")
    assert result.status == "ok", result.error
    assert result.id == "r1"
    assert result.path == ["intent", "entities", "summary", "reply"]
    assert result.outputs["intent"]["label"] in INTENTS
    assert abs(sum(result.outputs["intent"]["scores"].values()) - 1) < 1e-4
    for e in result.outputs["entities"]["entities"]:
        assert DOC[e["start"] : e["end"]] == e["text"] and e["type"] in TYPES
    assert isinstance(result.outputs["reply"]["text"], str)
    assert result.reply == result.outputs["reply"]["text"]
    by_stage = {t.stage: t for t in result.trace}
    assert by_stage["intent"].adapter == "intent@v1" and by_stage["intent"].next == ["entities"]
    assert by_stage["reply"].output_tokens > 0 and by_stage["reply"].input_tokens > 0
    assert by_stage["intent"].output_tokens == 0  # classify never decodes
    assert all(t.latency_ms > 0 for t in result.trace)


def test_conditional_edges_follow_the_classifier(world: dict[str, Any], tmp_path: Path) -> None:
    probe = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}").run(DOC)
    label = probe.outputs["intent"]["label"]
    taken = _router(world, tmp_path, when=f"{{field: intent.label, op: in, value: [{label}]}}").run(DOC)
    assert taken.path == ["intent", "escalation"]
    assert next(t for t in taken.trace if t.stage == "intent").next == ["escalation"]
    assert "reply" not in taken.outputs
    other = next(x for x in INTENTS if x != label)
    default = _router(world, tmp_path, when=f"{{field: intent.label, op: eq, value: {other}}}").run(DOC)
    assert default.path[:2] == ["intent", "entities"] and "escalation" not in default.path


def test_pinned_and_promoted_versions(world: dict[str, Any], tmp_path: Path) -> None:
    registry: Registry = world["registry"]
    v2 = publish_random_adapter(registry, world["base"], "intent", "classify", labels=INTENTS, seed=99)
    assert registry.promoted("intent").version == 1
    follows = _router(world, tmp_path)
    (tmp_path / "pinned").mkdir()
    pinned = _router(world, tmp_path / "pinned", intent_ref="intent@v2")
    assert next(t for t in follows.run(DOC).trace if t.stage == "intent").adapter == "intent@v1"
    assert next(t for t in pinned.run(DOC).trace if t.stage == "intent").adapter == "intent@v2"
    try:
        registry.promote("intent", v2.version)
        assert follows.refresh() == ["intent"]  # no restart: the next run uses v2
        assert next(t for t in follows.run(DOC).trace if t.stage == "intent").adapter == "intent@v2"
    finally:
        registry.promote("intent", 1)


def test_long_documents_are_chunked_not_truncated(world: dict[str, Any], tmp_path: Path) -> None:
    # the reply prompt carries every entity of the document: on the tiny base's 512-token
    # context that alone would not fit, so this pipeline stops after the summary
    path = tmp_path / "long.yaml"
    text = _yaml(world["base"], when="{field: intent.score, op: lt, value: 0}")
    path.write_text(text.replace("  - from: summary\n    to: reply\n", "  - from: summary\n    to: reply\n    when: {field: summary.text, op: contains, value: '@@never@@'}\n"))
    router = Router.from_yaml(path, registry=world["registry"], base=world["base"])
    long_doc = " ".join(f"Paragraph {i}: my order #A-{48213 + i} cost ${i}.99 and has not arrived." for i in range(120))
    assert router.host.count_tokens(long_doc) > router.host.context_length
    result = router.run(long_doc)
    assert result.status == "ok", result.error
    trace = {t.stage: t for t in result.trace}
    assert trace["intent"].chunks > 1 and trace["entities"].chunks > 1 and trace["summary"].chunks > 1
    for e in result.outputs["entities"]["entities"]:
        assert long_doc[e["start"] : e["end"]] == e["text"]


def test_declared_chunking_and_limits(world: dict[str, Any], tmp_path: Path) -> None:
    extra = "    chunking: {max_chars: 200, overlap: 20, combine: vote}"
    path = tmp_path / "c.yaml"
    text = _yaml(world["base"], when="{field: intent.score, op: lt, value: 0}", limits="limits: {max_document_chars: 5000, max_chunks: 4}")
    text = text.replace("  intent:\n    kind: classify\n    adapter: intent\n", "  intent:\n    kind: classify\n    adapter: intent\n" + extra + "\n")
    path.write_text(text)
    router = Router.from_yaml(path, registry=world["registry"], base=world["base"])
    result = router.run("x " * 300)
    assert next(t for t in result.trace if t.stage == "intent").chunks == 4
    too_many = router.run("y " * 1000)
    assert too_many.status == "error" and "max_chunks" in (too_many.error or "")
    too_long = router.run("z" * 6000)
    assert too_long.status == "error" and "at most 5000" in (too_long.error or "")


def test_a_failing_step_fails_its_run_not_the_process(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    router = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert")

    with monkeypatch.context() as m:
        m.setattr(router.host, "generate", broken)
        failed = router.run(DOC)
    assert failed.status == "error"
    assert "stage `summary`" in (failed.error or "") and "device-side assert" in (failed.error or "")
    assert [t.status for t in failed.trace] == ["ok", "ok", "error"]
    assert router.run(DOC).status == "ok"  # the next run is fine


def test_bad_input_and_deadline(world: dict[str, Any], tmp_path: Path) -> None:
    router = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}")
    empty = router.run("   ")
    assert empty.status == "error" and "`text`" in (empty.error or "") and empty.path == []
    late = router.run(DOC, deadline=time.monotonic() - 1)
    assert late.status == "error" and "deadline" in (late.error or "")


def test_run_many_batches_and_matches_single_runs(world: dict[str, Any], tmp_path: Path) -> None:
    router = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}")
    docs = [DOC, "where is my parcel ORD-2024-11873?", "you are the worst shop ever"]
    batched = router.run_many(docs)
    for doc, result in zip(docs, batched, strict=True):
        single = router.run(doc)
        assert result.outputs["intent"]["label"] == single.outputs["intent"]["label"]
        assert result.outputs["intent"]["score"] == pytest.approx(single.outputs["intent"]["score"], abs=1e-4)
        assert result.outputs["entities"] == single.outputs["entities"]


def test_validation_problems_stop_the_build(world: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_yaml(world["base"], intent_ref="intent@v9"))
    with pytest.raises(PipelineValidationError) as info:
        Router.from_yaml(path, registry=world["registry"], base=world["base"])
    assert "intent@v9" in str(info.value) or "v9" in str(info.value)


def test_chunk_helpers_cover_the_text_exactly() -> None:
    text = "one two three. four five six.\n\nseven eight nine ten " * 20
    pieces = split_text(text, 40, lambda t: len(t.split()))
    assert "".join(p for _, p in pieces) == text
    assert all(text[o : o + len(p)] == p for o, p in pieces)
    assert all(len(p.split()) <= 40 for _, p in pieces)
    windows = split_chars("a" * 450, 200, 50)
    assert [o for o, _ in windows] == [0, 150, 300]
    assert windows[-1][0] + len(windows[-1][1]) == 450


def test_combine_modes() -> None:
    from loragraph.adapters.host import Classification

    a = Classification(label="x", score=0.9, scores={"x": 0.9, "y": 0.1})
    b = Classification(label="y", score=0.6, scores={"x": 0.4, "y": 0.6})
    c = Classification(label="y", score=0.55, scores={"x": 0.45, "y": 0.55})
    assert combine_classifications([(10, a), (10, b), (10, c)], "vote")["label"] == "y"
    assert combine_classifications([(10, a), (10, b), (10, c)], "max")["label"] == "x"
    assert combine_classifications([(100, a), (1, b), (1, c)], "mean")["label"] == "x"
    assert combine_classifications([(1, b), (100, a)], "first")["label"] == "y"


def test_generate_stages_pass_their_repetition_settings(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rep.yaml"
    text = _yaml(world["base"], when="{field: intent.score, op: lt, value: 0}")
    text = text.replace("    inputs: [text]\n    max_new_tokens: 8\n", "    inputs: [text]\n    max_new_tokens: 8\n    no_repeat_ngram_size: 3\n    repetition_penalty: 1.2\n")
    path.write_text(text)
    router = Router.from_yaml(path, registry=world["registry"], base=world["base"])
    calls: dict[str, dict[str, Any]] = {}
    real = router.host.generate

    def spy(version: Any, prompts: Any, **kwargs: Any) -> Any:
        calls[version.ref.split("@")[0]] = kwargs
        return real(version, prompts, **kwargs)

    monkeypatch.setattr(router.host, "generate", spy)
    result = router.run(DOC)
    assert result.status == "ok", result.error
    assert calls["summary"]["no_repeat_ngram_size"] == 3 and calls["summary"]["repetition_penalty"] == 1.2
    assert calls["reply"]["no_repeat_ngram_size"] == 0 and calls["reply"]["repetition_penalty"] == 1.0  # defaults: off
