from __future__ import annotations

import json
from pathlib import Path

from loragraph.demo import ensure_data, stale_sample
from loragraph.training.sample import SampleSizes


def test_the_demo_regenerates_a_sample_written_with_other_sizes_or_seed(tmp_path: Path) -> None:
    """A sample left by an older loragraph (another generator, or other sizes: 1500 intent
    messages, which the shipped intent config would read once) is regenerated, with the
    guardrail data built from it; a current one is reused."""
    data = tmp_path / "data"
    assert stale_sample(data) == "no sample yet"
    ensure_data(data)
    assert stale_sample(data) is None
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["sizes"] == SampleSizes().model_dump()
    guard = data / "guardrails" / "input" / "test.jsonl"
    built = guard.stat().st_mtime_ns

    ensure_data(data)  # current: reused, nothing rebuilt
    assert guard.stat().st_mtime_ns == built

    manifest["sizes"]["intent"] = 1500
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert stale_sample(data) == f"it was written with other sizes (intent 1500 -> {SampleSizes().intent})"
    assert stale_sample(data, seed=1) == "it was written with seed 0, the demo uses 1"
    ensure_data(data)
    assert stale_sample(data) is None
    assert len((data / "intent" / "train.jsonl").read_text().splitlines()) == SampleSizes().intent
    assert guard.stat().st_mtime_ns != built  # the guardrail data was rebuilt from the new sample

    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(manifest | {"generator_digest": "0" * 64}))
    assert stale_sample(data) == "it was written by another version of the sample generator"
    (data / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "generator_digest"}))
    assert stale_sample(data) == "it was written by another version of the sample generator"  # an older loragraph's

    (data / "manifest.json").write_text("{not json")
    assert "is unreadable" in (stale_sample(data) or "")
