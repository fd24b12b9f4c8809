"""Shared router fixtures: the tiny base with real (untrained) adapters in a real registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loragraph.adapters.registry import Registry
from loragraph.router.router import Router
from loragraph.testing import publish_random_adapter

INTENTS = ["order_status", "refund_request", "complaint", "other"]
TYPES = ["ORDER_ID", "EMAIL", "AMOUNT", "PERSON"]
SUMMARY_PROMPT = "Summarise this customer message:\n{{ text }}"
REPLY_PROMPT = (
    "Message: {{ text }}\nIntent: {{ intent.label }}\nEntities: {{ entities | entity_list }}\n"
    "Summary: {{ summary.text }}\nWrite the reply."
)
DOC = "Hi, I was charged $49.99 twice for order #A-48213. Please refund me. Maria Lopez, maria@example.com"


@pytest.fixture(scope="module")
def world(tiny_base: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("router")
    registry = Registry(root / "adapters")
    publish_random_adapter(registry, tiny_base, "intent", "classify", labels=INTENTS, seed=1)
    publish_random_adapter(registry, tiny_base, "entities", "tag", labels=TYPES, seed=2)
    publish_random_adapter(registry, tiny_base, "summary", "generate", prompt=SUMMARY_PROMPT, seed=3)
    publish_random_adapter(registry, tiny_base, "reply", "generate", prompt=REPLY_PROMPT, seed=4)
    return {"registry": registry, "base": tiny_base, "root": root}


def _yaml(base: Any, *, intent_ref: str = "intent", when: str = "", extra: str = "", limits: str = "") -> str:
    return f"""
name: test-pipeline
base:
  name: {base.path}
  quantization: fp32
stages:
  intent:
    kind: classify
    adapter: {intent_ref}
  entities:
    kind: tag
    adapter: entities
  summary:
    kind: generate
    adapter: summary
    inputs: [text]
    max_new_tokens: 8
  reply:
    kind: generate
    adapter: reply
    max_new_tokens: 8
  escalation:
    kind: generate
    adapter: summary
    prompt: "Hand-off note for {{{{ intent.label }}}}: {{{{ text }}}}"
    max_new_tokens: 6
{extra}
edges:
  - from: intent
    to: escalation
    when: {when or '{field: intent.label, op: in, value: [complaint]}'}
  - from: intent
    to: entities
    default: true
  - from: entities
    to: summary
  - from: summary
    to: reply
{limits}
"""


def _router(world: dict[str, Any], tmp_path: Path, **kw: Any) -> Router:
    path = tmp_path / "pipeline.yaml"
    path.write_text(_yaml(world["base"], **kw))
    return Router.from_yaml(path, registry=world["registry"], base=world["base"])


