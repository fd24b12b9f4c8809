"""Fixtures of the pipelines tests: pipeline files on disk and a real registry (no weights loaded)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

INTENTS = [
    "order_status",
    "cancel_order",
    "refund_request",
    "return_item",
    "change_shipping_address",
    "billing_issue",
    "account_access",
    "product_question",
    "technical_support",
    "complaint",
    "other",
]
ENTITY_TYPES = ["ORDER_ID", "PERSON", "EMAIL", "PHONE", "DATE", "AMOUNT", "PRODUCT", "ADDRESS"]
FINGERPRINT = "sha256:" + "ab" * 16
SUMMARY_PROMPT = "Summarise the customer message:\n{{ text }}"
REPLY_PROMPT = (
    "Message: {{ text }}\nIntent: {{ intent.label }}\nEntities: {{ entities | entity_list }}\n"
    "Summary: {{ summary.text }}\nWrite the reply."
)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle`` (how tests know the expected line)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} occurs {len(hits)} times"
    return hits[nth - 1]


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to ``tmp_path/pipeline.yaml`` and return the path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def _stage(folder: Path, kind: str) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 2,
                "lora_alpha": 4,
                "target_modules": ["q_proj"],
                "task_type": "CAUSAL_LM",
            }
        )
    )
    save_file(
        {"base_model.model.q_proj.lora_A.weight": torch.zeros(2, 8)},
        str(folder / "adapter_model.safetensors"),
    )
    if kind in ("classify", "tag"):
        save_file({"weight": torch.zeros(2, 8)}, str(folder / "head.safetensors"))
    return folder


def _fields(kind: str, labels: list[str], **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "kind": kind,
        "labels": labels,
        "base_name": "smollm2-135m-instruct",
        "base_fingerprint": FINGERPRINT,
        "quantization": "nf4",
        "method": "sft" if kind == "generate" else kind,
    }
    if kind in ("classify", "tag"):
        fields["head"] = {"kind": kind, "labels": labels, "hidden_size": 8}
    fields.update(extra)
    return fields


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real registry with the sample adapters: intent, entities, summary, reply (v1 and v2),
    guard, guard_input (classify safe/attack), guard_output (safe/toxic/pii_leak) and a generate adapter `bf16gen` trained on bf16."""
    from loragraph.adapters.registry import Registry

    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root=root / "adapters")
    staging = root / "staging"

    def publish(name: str, kind: str, labels: list[str], **extra: Any) -> None:
        n = len(list(staging.glob(f"{name}-*")))
        reg.publish(name, _stage(staging / f"{name}-{n}", kind), _fields(kind, labels, **extra))

    publish("intent", "classify", INTENTS)
    publish("entities", "tag", ENTITY_TYPES)
    publish("summary", "generate", [], prompt=SUMMARY_PROMPT)
    publish("reply", "generate", [], prompt=REPLY_PROMPT)
    publish("reply", "generate", [], prompt=REPLY_PROMPT)
    publish("guard", "classify", ["safe", "attack"])
    publish("guard_input", "classify", ["safe", "attack"])
    publish("guard_output", "classify", ["safe", "toxic", "pii_leak"])
    publish("toxic", "classify", ["clean", "toxic"])
    publish("bf16gen", "generate", [], prompt=SUMMARY_PROMPT, quantization="bf16")
    publish(
        "otherbase", "generate", [], prompt=SUMMARY_PROMPT, base_fingerprint="sha256:" + "cd" * 16
    )
    publish("noprompt", "generate", [])
    return reg
