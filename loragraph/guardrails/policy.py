"""What a guardrail step does with a classifier verdict: the on-fail policies.

The router calls ``apply_guardrail(stage_name, stage_spec, text, classify_fn,
source_text=...)`` for every guardrail step. ``classify_fn(text)`` returns a
``Classification`` (``label``, ``score``, ``scores``) or raises.

Flagged score
    ``score`` of a verdict is the probability of a *flagged* label: the sum of the
    scores of ``stage_spec.flag_labels`` (default: every label except ``safe``). The
    guardrail fails when that score is at or above ``stage_spec.threshold``.

PII leaks (output guardrails)
    When ``source_text`` (the customer's message) is given and the checked text is not
    that message itself, PII in the text that does not occur in the message
    (``redact.pii_not_in``) is a leak found deterministically: the verdict's label becomes
    ``pii_leak`` with score 1.0, whatever the classifier said. The classifier still
    catches what the regexes cannot see (names, paraphrased data); the deterministic
    check catches exact values the classifier missed. Either one fails the guardrail.

Policies (what happens when the guardrail fails)
    - ``block``: the run ends (``stop``) with a refusal (``fallback`` or a default
      refusal) as the reply; the verdict's ``reason`` says why.
    - ``redact``: PII spans are replaced by ``[TYPE]`` placeholders and the run goes on
      with the redacted text (for a leak: the leaked spans only; otherwise every PII
      span). If the flagged text holds no redactable PII (an attack, an insult),
      redaction cannot make it safe and the step acts as ``block``.
    - ``replace``: the text is replaced by ``fallback`` and the run ends with ``fallback``
      as the reply (a replaced input or reply leaves nothing sensible for later stages).
    - ``escalate``: the run ends, marked for a human (``escalate``; run status
      ``escalated``), with ``fallback`` or a default hand-off message as the reply. The
      automated text is never sent.

Review band
    ``review_threshold`` (below ``threshold``) adds a second, lower line: a flagged score
    at or above it but below ``threshold`` does not apply the policy but hands the run to
    a human (``escalate``, run status ``escalated``, reply ``review_reply`` or the default
    hand-off message). So a pipeline can block what is surely an attack and keep what
    only might be one from being answered automatically, without refusing it. A band
    that is empty (``review_threshold`` at or above the threshold in use) does nothing.

Errors
    If ``classify_fn`` raises, ``on_error: fail_closed`` (default) treats the text as
    flagged with score 1.0 (label ``error``, ``failed_closed=True``) and applies the
    policy; ``fail_open`` lets the text through unchanged (``passed=True``) and says so
    in ``reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from loragraph.errors import ConfigError
from loragraph.guardrails.redact import PiiSpan, find_pii, pii_not_in, redact
from loragraph.router.result import GuardrailAction, GuardrailVerdict

__all__ = [
    "DEFAULT_ESCALATION_REPLY",
    "DEFAULT_REFUSAL",
    "ClassificationLike",
    "GuardrailOutcome",
    "GuardrailSettings",
    "apply_guardrail",
    "effective_threshold",
    "flagged_score",
]

DEFAULT_REFUSAL = "I'm sorry, but I can't help with that request."
"""Reply of a ``block`` policy when the stage has no ``fallback``."""

DEFAULT_THRESHOLD = 0.5
"""Threshold of a guardrail when neither the step nor the adapter version gives one."""

DEFAULT_ESCALATION_REPLY = "Thank you for your message. A member of our team will review it and get back to you."
"""Reply of an ``escalate`` policy when the stage has no ``fallback``."""

SAFE_LABEL = "safe"


class ClassificationLike(Protocol):
    """What ``classify_fn`` returns (``loragraph.adapters.host.Classification``)."""

    label: str
    score: float
    scores: Mapping[str, float]


class GuardrailSettings(BaseModel):
    """The guardrail fields of a stage spec (``loragraph.pipelines.spec.StageSpec``)."""

    model_config = ConfigDict(frozen=True)

    policy: Literal["block", "redact", "replace", "escalate"] = Field(
        "block", description="what to do when the guardrail fails: `block`, `redact`, `replace` or `escalate`"
    )
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0.0, le=1.0, description="fails when the flagged score is at or above this")
    review_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="a flagged score at or above this but below `threshold` escalates the run to a human instead",
    )
    review_reply: str | None = Field(None, description="reply of a run escalated by the review band (default: a hand-off message)")
    flag_labels: list[str] | None = Field(
        None, description="labels that count as a violation; default: every label except `safe`"
    )
    fallback: str | None = Field(None, description="reply used by `replace` (required) and `block`/`escalate` (optional)")
    on_error: Literal["fail_closed", "fail_open"] = Field(
        "fail_closed", description="when the check errors: `fail_closed` (treat as failed) or `fail_open`"
    )

    @classmethod
    def of(cls, spec: Any) -> GuardrailSettings:
        """Read the guardrail fields of a ``StageSpec`` (or any object or mapping having them)."""
        if isinstance(spec, GuardrailSettings):
            return spec
        fields = cls.model_fields
        if isinstance(spec, Mapping):
            values = {k: spec[k] for k in fields if k in spec and spec[k] is not None}
        else:
            values = {k: getattr(spec, k) for k in fields if getattr(spec, k, None) is not None}
        try:
            settings = cls(**values)
        except Exception as exc:  # pydantic.ValidationError
            raise ConfigError(f"invalid guardrail settings: {exc}") from exc
        if settings.policy == "replace" and not settings.fallback:
            raise ConfigError("`fallback` (the reply to send instead) is required for `policy: replace`")
        return settings

    @property
    def review_band(self) -> float | None:
        """The review threshold in effect: ``review_threshold`` when it lies below ``threshold``,
        else None (no band, or an empty one)."""
        review = self.review_threshold
        return review if review is not None and review < self.threshold else None

    def zone(self, score: float) -> Literal["flagged", "review", "passed"]:
        """Where a flagged score falls: at or above ``threshold`` it is ``flagged`` (the policy
        applies), in the review band ``review`` (a human reads it), else ``passed``."""
        if score >= self.threshold:
            return "flagged"
        review = self.review_band
        return "review" if review is not None and review <= score else "passed"


class GuardrailOutcome(BaseModel):
    """What a guardrail step decided, for the router."""

    verdict: GuardrailVerdict = Field(description="the verdict recorded in the run result")
    text: str = Field(description="the text after the policy: unchanged, redacted, or the fallback")
    stop: bool = Field(False, description="True when the run ends at this step")
    reply: str | None = Field(None, description="the reply for the customer when the run ends or the text is replaced")
    escalate: bool = Field(False, description="True when the run is handed to a human")
    spans: list[PiiSpan] = Field(default_factory=list, description="PII spans redacted (offsets in the checked text)")
    leaked: list[PiiSpan] = Field(
        default_factory=list, description="PII of the text not found in the source text (deterministic leak check)"
    )

    @property
    def run_status(self) -> Literal["ok", "blocked", "escalated"]:
        """The run status this outcome implies: ``escalated``, ``blocked`` (block, or a
        redact that could not redact) or ``ok`` (passed, redacted, replaced)."""
        if self.escalate:
            return "escalated"
        if self.stop and self.verdict.action == "block":
            return "blocked"
        return "ok"

    def output(self) -> dict[str, Any]:
        """The stage output stored under the stage name: ``{label, score, passed, action}``."""
        v = self.verdict
        return {"label": v.label, "score": v.score, "passed": v.passed, "action": v.action}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def effective_threshold(given: float | None, version: Any) -> float:
    """The threshold a guardrail uses: ``given`` (the step's or validator's own), else the one
    stored with the adapter version (``Manifest.threshold``, chosen on validation at training),
    else ``DEFAULT_THRESHOLD``. A promoted guardrail version so brings its own threshold."""
    if given is not None:
        return float(given)
    stored = getattr(getattr(version, "manifest", None), "threshold", None)
    return float(stored) if stored is not None else DEFAULT_THRESHOLD


def flagged_score(classification: Any, flag_labels: list[str] | None = None) -> tuple[str, float]:
    """``(flagged label, flagged probability)`` of a classification.

    The probability is the sum of the scores of the flagged labels (default: all labels
    but ``safe``); the label is the most probable flagged label, or the predicted label
    when nothing is flagged.
    """
    label = str(_get(classification, "label", ""))
    score = float(_get(classification, "score", 0.0))
    scores: Mapping[str, float] = _get(classification, "scores", None) or {}
    if not scores:
        scores = {label: score}
    if flag_labels is None and SAFE_LABEL not in scores and len(scores) > 1:
        raise ConfigError(
            f"the adapter's labels {sorted(scores)} have no `safe` label; set `flag_labels` to the labels that count as a violation"
        )
    flagged = [k for k in scores if (k in flag_labels if flag_labels is not None else k != SAFE_LABEL)]
    if not flagged:
        if flag_labels is None and label == SAFE_LABEL and len(scores) == 1:
            return label, max(0.0, 1.0 - score)
        return label, 0.0
    total = float(sum(float(scores[k]) for k in flagged))
    top = max(flagged, key=lambda k: float(scores[k]))
    return top, min(1.0, max(0.0, total))


def _verdict(
    stage: str,
    settings: GuardrailSettings,
    *,
    label: str,
    score: float,
    passed: bool,
    action: GuardrailAction,
    reason: str,
    failed_closed: bool = False,
) -> GuardrailVerdict:
    return GuardrailVerdict(
        guardrail=stage,
        label=label,
        score=round(float(score), 6),
        threshold=settings.threshold,
        review_threshold=settings.review_band,
        passed=passed,
        action=action,
        failed_closed=failed_closed,
        reason=reason,
    )


def apply_guardrail(
    stage_name: str,
    stage_spec: Any,
    text: str,
    classify_fn: Callable[[str], Any],
    *,
    source_text: str | None = None,
) -> GuardrailOutcome:
    """Check ``text`` with ``classify_fn`` and apply the stage's policy (see the module doc)."""
    settings = GuardrailSettings.of(stage_spec)
    leaked: list[PiiSpan] = []
    failed_closed = False
    try:
        classification = classify_fn(text)
        label, score = flagged_score(classification, settings.flag_labels)
        reason = f"`{label}` scored {score:.3f} (threshold {settings.threshold:.3f})"
    except Exception as exc:  # any failure of the check itself
        error = f"{type(exc).__name__}: {exc}"
        if settings.on_error == "fail_open":
            verdict = _verdict(
                stage_name, settings, label="error", score=0.0, passed=True, action="none",
                reason=f"the guardrail errored ({error}); failed open, text let through",
            )
            return GuardrailOutcome(verdict=verdict, text=text)
        label, score, failed_closed = "error", 1.0, True
        reason = f"the guardrail errored ({error}); failed closed"

    if source_text is not None and source_text != text:
        leaked = pii_not_in(text, source_text)
        if leaked and not failed_closed:
            kinds = ", ".join(sorted({s.type for s in leaked}))
            reason = f"the text holds personal data not in the customer's message ({kinds}); " + reason
            label, score = "pii_leak", 1.0

    zone = "flagged" if failed_closed else settings.zone(score)
    if zone == "passed":
        verdict = _verdict(stage_name, settings, label=label, score=score, passed=True, action="none", reason=reason)
        return GuardrailOutcome(verdict=verdict, text=text, leaked=leaked)
    if zone == "review":
        verdict = _verdict(
            stage_name, settings, label=label, score=score, passed=False, action="escalate",
            reason=f"{reason}; at or above the review threshold {settings.review_band:.3f}: handed to a human",
        )
        reply = settings.review_reply or DEFAULT_ESCALATION_REPLY
        return GuardrailOutcome(verdict=verdict, text=text, stop=True, reply=reply, escalate=True, leaked=leaked)

    policy = settings.policy
    if policy == "redact":
        spans = leaked or find_pii(text)
        if spans:
            redaction = redact(text, spans=spans)
            verdict = _verdict(
                stage_name, settings, label=label, score=score, passed=False, action="redact",
                reason=f"{reason}; redacted {len(redaction.spans)} span(s)", failed_closed=failed_closed,
            )
            return GuardrailOutcome(verdict=verdict, text=redaction.text, spans=redaction.spans, leaked=leaked)
        policy = "block"
        reason = f"{reason}; nothing to redact, blocked instead"
    if policy == "block":
        reply = settings.fallback or DEFAULT_REFUSAL
        verdict = _verdict(
            stage_name, settings, label=label, score=score, passed=False, action="block",
            reason=reason, failed_closed=failed_closed,
        )
        return GuardrailOutcome(verdict=verdict, text=text, stop=True, reply=reply, leaked=leaked)
    if policy == "replace":
        fallback = settings.fallback or DEFAULT_REFUSAL
        verdict = _verdict(
            stage_name, settings, label=label, score=score, passed=False, action="replace",
            reason=f"{reason}; replaced by the fallback reply", failed_closed=failed_closed,
        )
        return GuardrailOutcome(verdict=verdict, text=fallback, stop=True, reply=fallback, leaked=leaked)
    reply = settings.fallback or DEFAULT_ESCALATION_REPLY
    verdict = _verdict(
        stage_name, settings, label=label, score=score, passed=False, action="escalate",
        reason=f"{reason}; handed to a human", failed_closed=failed_closed,
    )
    return GuardrailOutcome(verdict=verdict, text=text, stop=True, reply=reply, escalate=True, leaked=leaked)
