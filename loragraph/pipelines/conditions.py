"""Evaluating edge conditions on a run's outputs: plain data comparisons, never ``eval``.

The run context is a mapping ``{"text": <document>, "<stage>": <that stage's output>, ...}``
(see ``loragraph.router.result`` for the output shapes). A condition's ``field`` is a dotted
path into it: ``intent.label``, ``intent.scores.refund_request``, ``guard_in.passed``.

Semantics, fixed here for the router and the docs:

- A field that is absent (its stage did not run, or the key does not exist) makes the
  condition false, whatever the operator (``ne`` and ``not_in`` included).
- ``eq``/``ne``/``in``/``not_in`` compare exactly; numbers compare by value (``1 == 1.0``)
  but booleans are not numbers (``true`` never equals ``1``).
- ``gt``/``ge``/``lt``/``le`` need a number on both sides; anything else is false.
- ``contains``: a string field contains the value as a substring; a list field contains it
  as an item, or (tag output) holds an entity whose ``type`` equals it, so
  ``{field: entities.entities, op: contains, value: ORDER_ID}`` asks "was an order id found?".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loragraph.pipelines.spec import Condition

__all__ = ["MISSING", "conditions_hold", "evaluate_condition", "lookup_field"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Returned by ``lookup_field`` when the path does not exist in the context."""


def lookup_field(field: str, context: Mapping[str, Any]) -> Any:
    """The value at dotted ``field`` in ``context``, or ``MISSING``."""
    current: Any = context
    for part in field.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return MISSING
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return float(left) == float(right)
    return type(left) is type(right) and left == right


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, str):
        return isinstance(value, str) and value in container
    if isinstance(container, list | tuple):
        for item in container:
            if _equal(item, value):
                return True
            if isinstance(item, Mapping) and "type" in item and _equal(item["type"], value):
                return True
        return False
    if isinstance(container, Mapping):
        return value in container
    return False


def evaluate_condition(cond: Condition, outputs: Mapping[str, Any]) -> bool:
    """Whether ``cond`` holds on the run context ``outputs`` (see the module doc for the rules)."""
    actual = lookup_field(cond.field, outputs)
    if actual is MISSING:
        return False
    value = cond.value
    op = cond.op
    if op == "eq":
        return _equal(actual, value)
    if op == "ne":
        return not _equal(actual, value)
    if op == "in":
        return any(_equal(actual, v) for v in value)
    if op == "not_in":
        return not any(_equal(actual, v) for v in value)
    if op in ("gt", "ge", "lt", "le"):
        if not (_is_number(actual) and _is_number(value)):
            return False
        a, b = float(actual), float(value)
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    if op == "contains":
        return _contains(actual, value)
    raise AssertionError(f"unknown op {op!r}")  # pragma: no cover - the spec forbids it


def conditions_hold(conditions: Iterable[Condition], outputs: Mapping[str, Any]) -> bool:
    """True when every condition holds (an empty list holds)."""
    return all(evaluate_condition(c, outputs) for c in conditions)
