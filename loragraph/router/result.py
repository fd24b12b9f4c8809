"""What a pipeline run returns: every stage's output, the path taken, and a trace.

These models cross rooms: the router builds them, the API stores and returns them as
they are, feedback refers to them. Stage outputs are plain dicts keyed by stage name:

- classify: ``{"label": str, "score": float, "scores": {label: float}}``
- tag: ``{"entities": [{"type", "text", "start", "end"}]}``
- generate: ``{"text": str}``
- guardrail: ``{"label": str, "score": float, "passed": bool, "action": str}``
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["GuardrailAction", "GuardrailVerdict", "RunResult", "RunStatus", "StepStatus", "StepTrace"]

RunStatus = Literal["ok", "blocked", "escalated", "error"]
StepStatus = Literal["ok", "error", "blocked", "skipped"]
GuardrailAction = Literal["none", "block", "redact", "replace", "escalate"]


class GuardrailVerdict(BaseModel):
    """The decision of one guardrail step."""

    guardrail: str = Field(description="stage name of the guardrail")
    label: str = Field(description="the classifier's label, e.g. `attack` or `safe`")
    score: float = Field(description="probability of the flagged label")
    threshold: float = Field(description="score at or above which the guardrail fails")
    review_threshold: float | None = Field(
        None, description="score at or above which (below `threshold`) the run goes to a human; None: no review band"
    )
    passed: bool = Field(description="True when the text is allowed through unchanged")
    action: GuardrailAction = Field("none", description="what the policy did")
    failed_closed: bool = Field(False, description="the guardrail errored and its policy failed closed")
    reason: str = Field("", description="human-readable reason")


class StepTrace(BaseModel):
    """One executed (or skipped) step of a run."""

    stage: str
    kind: str
    adapter: str | None = Field(None, description="`name@vN` of the adapter used, None for steps without one")
    status: StepStatus = "ok"
    next: list[str] = Field(default_factory=list, description="stages this step routed to (the branch taken)")
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    chunks: int = Field(1, description="how many chunks a long document was split into for this step")
    verdict: GuardrailVerdict | None = None
    error: str | None = None


class RunResult(BaseModel):
    """The result of running a pipeline over one document."""

    id: str
    pipeline: str
    status: RunStatus = "ok"
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    path: list[str] = Field(default_factory=list, description="stages executed, in order")
    trace: list[StepTrace] = Field(default_factory=list)
    verdicts: list[GuardrailVerdict] = Field(default_factory=list)
    reply: str | None = Field(None, description="the final text for the customer, if any")
    error: str | None = None
    error_kind: Literal["input", "step", "timeout"] | None = Field(
        None, description="why a run with status `error` failed: bad `input`, a failing `step`, or a `timeout`"
    )
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    latency_ms: float = 0.0
