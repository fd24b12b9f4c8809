"""Mermaid text and PNG drawings, and the `loragraph pipeline` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loragraph.cli import main
from loragraph.pipelines.draw import draw_png, layers, to_mermaid, write_drawings
from loragraph.pipelines.spec import load_pipeline, parse_pipeline
from tests.pipelines.conftest import FINGERPRINT, line_of

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "customer_service" / "pipeline.yaml"

GUARDED = """\
name: guarded
entry: guard_in
stages:
  guard_in: {kind: guardrail, adapter: guard, policy: block, threshold: 0.7}
  intent: {kind: classify, adapter: intent}
  reply: {kind: generate, adapter: reply, prompt: "Say \\"hi\\" to {{ text }}"}
  end: {kind: generate, adapter: summary, prompt: "{{ text }}"}
edges:
  - {from: guard_in, to: intent, when: {field: guard_in.passed, value: true}}
  - {from: intent, to: reply, when: [{field: intent.score, op: ge, value: 0.5}, {field: intent.label, op: ne, value: other}]}
  - {from: intent, to: end, default: true}
"""


def test_mermaid_has_nodes_conditions_and_guardrail_style() -> None:
    text = to_mermaid(parse_pipeline(GUARDED))
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert "  start --> s_guard_in" in lines
    # guardrails are hexagons with their policy; other stages are boxes with kind and adapter
    assert (
        '  s_guard_in{{"<b>guard_in</b><br/>guardrail · guard<br/>checks input · block ≥ 0.7"}}'
        in lines
    )
    assert '  s_intent["<b>intent</b><br/>classify · intent"]' in lines
    # node ids are prefixed, so a stage called `end` (a Mermaid keyword) is safe
    assert '  s_end["<b>end</b><br/>generate · summary"]' in lines
    assert '  s_guard_in -->|"guard_in.passed == true"| s_intent' in lines
    assert '  s_intent -->|"intent.score >= 0.5 and intent.label != other"| s_reply' in lines
    assert '  s_intent -.->|"else"| s_end' in lines
    assert "  class s_guard_in guardrail" in lines
    assert any(line.startswith("  classDef guardrail fill:#fee2e2") for line in lines)


def test_a_review_band_is_drawn_with_the_guardrail() -> None:
    text = GUARDED.replace("threshold: 0.7}", "threshold: 0.7, review_threshold: 0.05}")
    assert "checks input · block ≥ 0.7 · escalate ≥ 0.05" in to_mermaid(parse_pipeline(text))
    stored = to_mermaid(load_pipeline(SAMPLE))  # the sample's guard_in: stored threshold + review band
    assert "block ≥ stored threshold · escalate ≥ 0.05" in stored


def test_mermaid_escapes_quotes_in_labels() -> None:
    text = GUARDED.replace("value: other}", 'value: "say \\"no\\" | <b>"}')
    out = to_mermaid(parse_pipeline(text))
    assert '|"intent.score >= 0.5 and intent.label != say #quot;no#quot; #124; #lt;b>"|' in out


def test_sample_mermaid_matches_the_file() -> None:
    spec = load_pipeline(SAMPLE)
    out = to_mermaid(spec)
    for name, stage in spec.stages.items():
        # guardrails are hexagons, the other stages boxes
        assert f"s_{name}{'{{' if stage.kind == 'guardrail' else '['}" in out
    assert (
        '  s_summary -->|"intent.label in [complaint, refund_request]"| s_escalation'
        in out.splitlines()
    )
    assert out.count("-->") + out.count("-.->") == len(spec.edges) + 1  # + start


def test_layers_follow_longest_path_and_keep_unreached_last() -> None:
    spec = parse_pipeline(GUARDED + "  - {from: guard_in, to: end}\n")
    assert layers(spec) == [["guard_in"], ["intent"], ["reply", "end"]]
    orphan = parse_pipeline(
        GUARDED.replace("edges:\n", "  orphan: {kind: classify, adapter: intent}\nedges:\n")
    )
    assert layers(orphan)[-1] == ["orphan"]


def test_png_is_written(tmp_path: Path) -> None:
    from PIL import Image

    path = draw_png(load_pipeline(SAMPLE), tmp_path / "sub" / "sample.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 600 and height > 800  # 4 layers, 2 wide: room for legible labels
        colours = {
            image.getpixel((x, y))[:3] for x in range(0, width, 7) for y in range(0, height, 7)
        }
    assert (0xFE, 0xF3, 0xC7) in colours  # generate stages are filled


def test_png_of_a_broken_pipeline_still_draws(tmp_path: Path) -> None:
    spec = parse_pipeline(
        GUARDED + "  - {from: reply, to: intent}\n  - {from: reply, to: nowhere}\n"
    )
    assert draw_png(spec, tmp_path / "broken.png").stat().st_size > 1000


def test_cli_draw_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "draw", str(SAMPLE), "--out", str(tmp_path / "out" / "cs")]) == 0
    assert (tmp_path / "out" / "cs.mmd").read_text().startswith("flowchart TD")
    assert (tmp_path / "out" / "cs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cs.png" in capsys.readouterr().out
    mmd, png = write_drawings(load_pipeline(SAMPLE), tmp_path / "again")
    assert mmd.name == "again.mmd" and png.name == "again.png"


def test_cli_validate_prints_every_problem_and_exits_2(
    write_pipeline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GUARDED + "  - {from: reply, to: replay}\n  - {from: end, to: guard_in}\n"
    path = write_pipeline(text)
    assert main(["pipeline", "validate", str(path), "--no-registry"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert f"{path}:{line_of(text, 'replay')}: `edges[3].to` names stage `replay`" in err
    assert f"{path}:{line_of(text, 'from: end, to: guard_in')}: `edges[4]` closes a cycle" in err


def test_cli_validate_ok_and_json(registry: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "validate", str(SAMPLE), "--no-registry"]) == 0
    assert "ok (structure only)" in capsys.readouterr().out
    args = [
        "pipeline",
        "validate",
        str(SAMPLE),
        "--registry",
        str(registry.root),
        "--base-fingerprint",
        FINGERPRINT,
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert main([*args[:-2], "sha256:other", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert len(report["problems"]) == len(load_pipeline(SAMPLE).stages)
    assert all(p["where"].startswith(f"{SAMPLE}:") for p in report["problems"])


def test_cli_validate_default_registry_is_the_home_one(
    write_pipeline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # the autouse fixture gives each test an empty $LORAGRAPH_HOME: every adapter is missing
    assert main(["pipeline", "validate", str(SAMPLE)]) == 2
    err = capsys.readouterr().err
    assert "against registry" in err and "no adapter named `intent`" in err
