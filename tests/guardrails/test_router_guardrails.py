"""Guardrail steps inside a real pipeline run: the tiny base, untrained adapters, the router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DOC = "Hi, where is my order #A-48213? Mail me at maria@example.com"


@pytest.fixture(scope="module")
def world(tiny_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.registry import Registry
    from loragraph.testing import publish_random_adapter

    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    registry = Registry(tmp_path_factory.mktemp("registry"))
    publish_random_adapter(registry, base, "guard_input", "classify", labels=["safe", "attack"], seed=5)
    publish_random_adapter(registry, base, "intent", "classify", labels=["order_status", "other"], seed=6)
    return {"base": base, "registry": registry}


def _router(world: dict[str, Any], tmp_path: Path, guardrail: str) -> Any:
    from loragraph.router.router import Router

    text = f"""
name: guarded
base: {{name: {world["base"].path}, quantization: fp32}}
entry: guard_in
stages:
  guard_in:
    kind: guardrail
    adapter: guard_input
{guardrail}
  intent:
    kind: classify
    adapter: intent
edges:
  - {{from: guard_in, to: intent}}
"""
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return Router.from_yaml(path, registry=world["registry"], base=world["base"])


def test_passing_guardrail_lets_the_run_continue(world: dict[str, Any], tmp_path: Path) -> None:
    result = _router(world, tmp_path, "    threshold: 1.0").run(DOC)
    assert result.status == "ok", result.error
    assert result.path == ["guard_in", "intent"]
    assert result.verdicts[0].passed and result.outputs["guard_in"]["action"] == "none"


def test_block_stops_the_run_with_a_refusal(world: dict[str, Any], tmp_path: Path) -> None:
    result = _router(world, tmp_path, "    threshold: 0.0\n    policy: block\n    fallback: No.").run(DOC)
    assert result.status == "blocked" and result.path == ["guard_in"] and result.reply == "No."
    assert result.verdicts[0].action == "block" and not result.verdicts[0].passed


def test_redact_continues_with_the_redacted_document(world: dict[str, Any], tmp_path: Path) -> None:
    result = _router(world, tmp_path, "    threshold: 0.0\n    policy: redact").run(DOC)
    assert result.status == "ok" and result.path == ["guard_in", "intent"]
    assert result.outputs["guard_in"]["action"] == "redact"
    assert result.outputs["guard_in"]["text"] == "Hi, where is my order #A-48213? Mail me at [EMAIL]"


def test_escalate_marks_the_run_for_a_human(world: dict[str, Any], tmp_path: Path) -> None:
    result = _router(world, tmp_path, "    threshold: 0.0\n    policy: escalate").run(DOC)
    assert result.path == ["guard_in"] and result.verdicts[0].action == "escalate"
    assert result.status == "escalated"


def test_review_band_hands_the_run_to_a_human_before_any_other_stage(world: dict[str, Any], tmp_path: Path) -> None:
    top = 0.999
    score = _router(world, tmp_path, f"    threshold: {top}").run(DOC).verdicts[0].score
    assert 0.0 < score < top
    band = _router(world, tmp_path, f"    threshold: {top}\n    review_threshold: {score / 2}").run(DOC)
    assert band.path == ["guard_in"] and band.status == "escalated" and "intent" not in band.outputs
    assert band.verdicts[0].action == "escalate" and band.verdicts[0].review_threshold == pytest.approx(score / 2)
    above = _router(world, tmp_path, f"    threshold: {top}\n    review_threshold: {(score + top) / 2}").run(DOC)
    assert above.status == "ok" and above.path == ["guard_in", "intent"]


def test_batch_summary_counts_each_guardrails_failures(world: dict[str, Any], tmp_path: Path) -> None:
    """`loragraph run` prints per guardrail how often it failed: the flag-rate check of a new version."""
    import json

    from loragraph.router.batch import run_file

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": DOC}) + "\n" for i in range(3)))
    blocking = _router(world, tmp_path, "    threshold: 0.0\n    policy: block")
    summary = run_file(blocking, src, tmp_path / "out.jsonl", batch_size=2)
    assert summary.statuses == {"blocked": 3} and summary.guardrails == {"guard_in": [3, 3]}
    assert summary.lines() == ["3 blocked", "guardrail guard_in: failed 3 of 3 (100.0%)"]
    passing = _router(world, tmp_path, "    threshold: 1.0")
    summary = run_file(passing, src, tmp_path / "out.jsonl")
    assert summary.guardrails == {"guard_in": [0, 3]} and summary.statuses == {"ok": 3}


def test_a_step_without_threshold_uses_the_one_stored_with_the_version(world: dict[str, Any], tmp_path: Path) -> None:
    from loragraph.router.router import Router
    from loragraph.testing import publish_random_adapter

    router = _router(world, tmp_path, "    policy: block")
    assert router.spec.stages["guard_in"].threshold is None
    first = router.run(DOC)
    assert first.verdicts[0].threshold == 0.5  # the version stores none: the default
    # a new guardrail version, promoted, brings its own threshold: 0.0 flags everything
    stored = publish_random_adapter(world["registry"], world["base"], "guard_input", "classify", labels=["safe", "attack"], seed=5, threshold=0.0)
    world["registry"].promote("guard_input", stored.version)
    try:
        result = Router.from_yaml(tmp_path / "pipeline.yaml", registry=world["registry"], base=world["base"]).run(DOC)
        assert result.verdicts[0].threshold == 0.0 and result.status == "blocked"
        # a threshold in the step wins over the stored one
        given = _router(world, tmp_path, "    policy: block\n    threshold: 1.0").run(DOC)
        assert given.verdicts[0].threshold == 1.0 and given.status == "ok"
    finally:
        world["registry"].rollback("guard_input")
