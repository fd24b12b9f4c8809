from __future__ import annotations

from pathlib import Path

import pytest

from loragraph.training.config import load_train_config

TRAIN = Path(__file__).resolve().parents[2] / "examples" / "customer_service" / "train"


@pytest.mark.parametrize(
    ("name", "labels", "folder"),
    [("guard_input", ["safe", "attack"], "input"), ("guard_output", ["safe", "toxic", "pii_leak"], "output")],
)
def test_shipped_guardrail_configs_load(name: str, labels: list[str], folder: str) -> None:
    config = load_train_config(TRAIN / f"{name}.yaml")
    assert config.adapter == name and config.kind == "classify" and config.labels == labels
    assert config.base.quantization == "nf4"
    for split, path in (("train", config.data.train), ("validation", config.data.validation), ("test", config.data.test)):
        assert path is not None
        assert path.parts[-3:] == ("guardrails", folder, f"{split}.jsonl")
