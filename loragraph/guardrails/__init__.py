"""loragraph.guardrails: guardrails backed by classifier adapters, redaction, on-fail policies.

- ``policy``: ``apply_guardrail(stage_name, stage_spec, text, classify_fn, source_text=...)``,
  what the router calls for a ``kind: guardrail`` step (block / redact / replace /
  escalate, threshold, fail-closed or fail-open);
- ``redact``: deterministic PII detection and redaction (emails, phones, Luhn-checked
  cards, IBANs, account numbers, postal addresses) and ``pii_not_in(reply, message)``;
- ``validators``: guardrails-ai validators (``loragraph/input_guardrail``,
  ``loragraph/output_guardrail``, ``loragraph/pii``, ``loragraph/echo_guardrail``) and
  ``make_guard``; imported lazily (guardrails-ai is heavy);
- ``data``: the guardrail data sets (``loragraph guardrails data``);
- ``evaluate``: TPR/FPR overall and per language (``loragraph guardrails eval``).
"""

from __future__ import annotations

from typing import Any

from loragraph.guardrails.policy import GuardrailOutcome, GuardrailSettings, apply_guardrail
from loragraph.guardrails.redact import PiiSpan, Redaction, find_pii, pii_not_in, redact

__all__ = [
    "EchoClassifier",
    "EchoGuardrail",
    "GuardrailOutcome",
    "GuardrailSettings",
    "InputGuardrail",
    "OutputGuardrail",
    "PiiGuardrail",
    "PiiSpan",
    "Redaction",
    "apply_guardrail",
    "find_pii",
    "make_guard",
    "pii_not_in",
    "redact",
]

_LAZY = {"EchoClassifier", "EchoGuardrail", "InputGuardrail", "OutputGuardrail", "PiiGuardrail", "make_guard"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from loragraph.guardrails import validators

        return getattr(validators, name)
    raise AttributeError(f"module 'loragraph.guardrails' has no attribute {name!r}")
