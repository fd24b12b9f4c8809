"""Conditions are data evaluated by fixed rules; absent fields never hold."""

from __future__ import annotations

from typing import Any

import pytest

from loragraph.pipelines.conditions import (
    MISSING,
    conditions_hold,
    evaluate_condition,
    lookup_field,
)
from loragraph.pipelines.spec import Condition

CONTEXT: dict[str, Any] = {
    "text": "Where is order #A-48213?",
    "intent": {
        "label": "refund_request",
        "score": 0.82,
        "scores": {"refund_request": 0.82, "other": 0.03},
    },
    "entities": {"entities": [{"type": "ORDER_ID", "text": "#A-48213", "start": 15, "end": 23}]},
    "guard_in": {"label": "safe", "score": 0.1, "passed": True, "action": "none"},
    "summary": {"text": "The customer wants a refund."},
}


def holds(field: str, op: str, value: Any) -> bool:
    return evaluate_condition(Condition(field=field, op=op, value=value), CONTEXT)


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("intent.label", "eq", "refund_request", True),
        ("intent.label", "eq", "complaint", False),
        ("intent.label", "ne", "complaint", True),
        ("intent.label", "ne", "refund_request", False),
        ("intent.label", "in", ["complaint", "refund_request"], True),
        ("intent.label", "in", ["complaint", "other"], False),
        ("intent.label", "not_in", ["complaint", "other"], True),
        ("intent.label", "not_in", ["refund_request"], False),
        ("intent.score", "gt", 0.8, True),
        ("intent.score", "gt", 0.82, False),
        ("intent.score", "ge", 0.82, True),
        ("intent.score", "lt", 0.9, True),
        ("intent.score", "le", 0.5, False),
        ("intent.scores.other", "lt", 0.05, True),
        ("guard_in.passed", "eq", True, True),
        ("guard_in.passed", "eq", False, False),
        ("guard_in.passed", "eq", 1, False),  # booleans are not numbers
        ("summary.text", "contains", "refund", True),
        ("summary.text", "contains", "cancel", False),
        ("text", "contains", "#A-48213", True),
        ("entities.entities", "contains", "ORDER_ID", True),  # an entity of that type
        ("entities.entities", "contains", "EMAIL", False),
        ("intent.label", "gt", 1, False),  # ordering a string: false, never an exception
    ],
)
def test_operators(field: str, op: str, value: Any, expected: bool) -> None:
    assert holds(field, op, value) is expected


def test_numbers_compare_by_value() -> None:
    ctx = {"n": {"score": 1}}
    assert evaluate_condition(Condition(field="n.score", op="eq", value=1.0), ctx)
    assert evaluate_condition(Condition(field="n.score", op="in", value=[2, 1.0]), ctx)


@pytest.mark.parametrize("op", ["eq", "ne", "not_in", "in", "lt", "contains"])
def test_a_missing_field_never_holds(op: str) -> None:
    value: Any = ["x"] if op in ("in", "not_in") else (1 if op == "lt" else "x")
    assert (
        evaluate_condition(Condition(field="escalation.text", op=op, value=value), CONTEXT) is False
    )
    assert (
        evaluate_condition(Condition(field="intent.nothing", op=op, value=value), CONTEXT) is False
    )


def test_lookup_and_all_must_hold() -> None:
    assert lookup_field("intent.scores.other", CONTEXT) == 0.03
    assert lookup_field("intent.label.x", CONTEXT) is MISSING
    both = [
        Condition(field="intent.label", value="refund_request"),
        Condition(field="intent.score", op="ge", value=0.5),
    ]
    assert conditions_hold(both, CONTEXT)
    assert not conditions_hold([*both, Condition(field="guard_in.passed", value=False)], CONTEXT)
    assert conditions_hold([], CONTEXT)
