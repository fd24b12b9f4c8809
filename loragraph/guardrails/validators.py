"""guardrails-ai validators backed by loragraph classifier adapters (and test doubles).

Registered names (usable with ``guardrails.Guard`` on their own, outside any pipeline):

- ``loragraph/input_guardrail`` (``InputGuardrail``): a classify adapter (``safe``/``attack``)
  on an ``AdapterHost``; fails when the flagged probability reaches ``threshold`` (given,
  else the one stored with the adapter version: ``policy.effective_threshold``).
- ``loragraph/output_guardrail`` (``OutputGuardrail``): a classify adapter (``safe``/
  ``toxic``/``pii_leak``); also fails on PII not found in ``metadata["source_text"]`` (the
  customer's message), and offers the redacted text as ``fix_value`` (``on_fail="fix"``).
- ``loragraph/pii``: ``PiiGuardrail``, deterministic, fails on any personal data and
  offers the redacted text as ``fix_value``.
- ``loragraph/echo_guardrail``: ``EchoGuardrail``, a keyword test double with no weights.

The host and the adapter reference are passed in; nothing loads at import. A Guard with
several validators must get them in ONE call (``Guard().use(A, B)``: a second ``.use``
replaces the first). ``make_guard(*validators)`` does that and switches guardrails-ai
telemetry off (it is on by default and exports over the network); importing this module
never triggers guardrails-ai's ``nltk.download("punkt")``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from loragraph.guardrails.policy import effective_threshold, flagged_score
from loragraph.guardrails.redact import find_pii, pii_not_in, redact

__all__ = [
    "ECHO_KEYWORDS",
    "EchoClassifier",
    "EchoGuardrail",
    "InputGuardrail",
    "OutputGuardrail",
    "PiiGuardrail",
    "import_guardrails",
    "make_guard",
]


@contextlib.contextmanager
def _no_nltk_download() -> Iterator[None]:
    """guardrails-ai calls ``nltk.download("punkt")`` at import when nltk is installed and
    punkt is not: make that a no-op for the import so it neither hangs nor fails offline."""
    try:
        import nltk
    except ImportError:
        yield
        return
    original = nltk.download
    nltk.download = lambda *args, **kwargs: False  # type: ignore[assignment]
    try:
        yield
    finally:
        nltk.download = original  # type: ignore[assignment]


def import_guardrails() -> Any:
    """Import ``guardrails`` (guardrails-ai) offline-safely and return the module."""
    if "guardrails" in sys.modules:
        return sys.modules["guardrails"]
    with _no_nltk_download():
        return importlib.import_module("guardrails")


_gr = import_guardrails()
from guardrails.validators import (  # noqa: E402
    FailResult,
    PassResult,
    ValidationResult,
    Validator,
    register_validator,
)


def make_guard(*validators: Any, name: str | None = None, allow_metrics_collection: bool = False) -> Any:
    """A ``guardrails.Guard`` using all ``validators`` (one ``.use`` call), telemetry off."""
    kwargs = {"name": name} if name else {}
    guard = _gr.Guard(**kwargs).use(*validators)
    guard.configure(allow_metrics_collection=allow_metrics_collection)
    return guard


class _AdapterGuardrail(Validator):
    """A validator that classifies the value with a classify adapter on an ``AdapterHost``."""

    def __init__(
        self,
        host: Any,
        adapter: Any,
        *,
        threshold: float | None = None,
        flag_labels: Sequence[str] | None = None,
        on_fail: Callable[..., Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        ref = getattr(adapter, "ref", adapter)
        super().__init__(on_fail=on_fail, adapter=str(ref), threshold=threshold, flag_labels=flag_labels, **kwargs)
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            from loragraph.errors import ConfigError

            raise ConfigError(f"`threshold` must be between 0 and 1, got {threshold}")
        self._host = host
        self._adapter = adapter
        self._threshold = float(threshold) if threshold is not None else None
        self.flag_labels = list(flag_labels) if flag_labels is not None else None

    @property
    def threshold(self) -> float:
        """The threshold given, else the one stored with the adapter version it classifies with
        now (a promoted version brings its own), else 0.5 (``policy.effective_threshold``)."""
        resolve = getattr(self._host, "resolve", None)
        version = resolve(self._adapter) if self._threshold is None and resolve is not None else None
        return effective_threshold(self._threshold, version)

    def classify(self, text: str) -> Any:
        """The adapter's ``Classification`` of ``text``."""
        return self._host.classify(self._adapter, [text])[0]

    def _verdict(self, value: str) -> tuple[str, float]:
        return flagged_score(self.classify(value), self.flag_labels)

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        text = str(value)
        label, score = self._verdict(text)
        threshold = self.threshold
        if score >= threshold:
            return FailResult(
                error_message=f"`{label}` scored {score:.3f} (threshold {threshold:.3f})",
                fix_value=redact(text).text,
                metadata={"label": label, "score": score},
            )
        return PassResult(metadata={"label": label, "score": score})


@register_validator(name="loragraph/input_guardrail", data_type="string")
class InputGuardrail(_AdapterGuardrail):
    """Input guardrail: fails on attacks (prompt injection, jailbreaks, data theft)."""


@register_validator(name="loragraph/output_guardrail", data_type="string")
class OutputGuardrail(_AdapterGuardrail):
    """Output guardrail: fails on toxic replies and on replies leaking personal data.

    With ``metadata={"source_text": <customer message>}`` PII of the reply not found in
    the message fails the check too (label ``pii_leak``), and ``fix_value`` redacts
    exactly those spans.
    """

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        text = str(value)
        source = (metadata or {}).get("source_text")
        leaked = pii_not_in(text, str(source)) if source is not None else []
        if leaked:
            kinds = ", ".join(sorted({s.type for s in leaked}))
            return FailResult(
                error_message=f"the reply holds personal data not in the customer's message ({kinds})",
                fix_value=redact(text, spans=leaked).text,
                metadata={"label": "pii_leak", "score": 1.0},
            )
        return super()._validate(value, metadata)


@register_validator(name="loragraph/pii", data_type="string")
class PiiGuardrail(Validator):
    """Deterministic PII check: fails on any personal data; ``fix_value`` is the redacted text."""

    def __init__(self, types: Sequence[str] | None = None, on_fail: Callable[..., Any] | str | None = None, **kwargs: Any) -> None:
        super().__init__(on_fail=on_fail, types=list(types) if types is not None else None, **kwargs)
        self.types = list(types) if types is not None else None

    def _validate(self, value: Any, metadata: dict[str, Any]) -> ValidationResult:
        text = str(value)
        spans = find_pii(text, types=self.types)
        if not spans:
            return PassResult()
        kinds = ", ".join(sorted({s.type for s in spans}))
        return FailResult(error_message=f"personal data found ({kinds})", fix_value=redact(text, spans=spans).text)


ECHO_KEYWORDS: tuple[str, ...] = (
    "ignore all previous instructions",
    "ignore previous instructions",
    "ignore your instructions",
    "system prompt",
    "developer mode",
    "you are now dan",
    "no restrictions",
    "jailbreak",
)
"""Default phrases the ``EchoGuardrail`` flags (case-insensitive substring match)."""


class EchoClassifier:
    """A keyword classifier with the ``AdapterHost.classify`` surface, no weights.

    ``classify(adapter, texts)`` returns ``Classification``-like objects: label ``flag``
    (default ``attack``) with score 1.0 when a keyword occurs, else ``safe`` with 1.0. Use
    it as a ``classify_fn`` (``EchoClassifier().classify_one``) or as a fake host.
    """

    def __init__(self, keywords: Sequence[str] = ECHO_KEYWORDS, *, flag: str = "attack") -> None:
        self.keywords = [k.lower() for k in keywords]
        self.flag = flag
        self.calls = 0

    def classify_one(self, text: str) -> Any:
        from types import SimpleNamespace

        self.calls += 1
        hit = any(k in text.lower() for k in self.keywords)
        label = self.flag if hit else "safe"
        return SimpleNamespace(label=label, score=1.0, scores={"safe": 0.0 if hit else 1.0, self.flag: 1.0 if hit else 0.0})

    def classify(self, adapter: Any, texts: Sequence[str]) -> list[Any]:
        return [self.classify_one(t) for t in texts]


@register_validator(name="loragraph/echo_guardrail", data_type="string")
class EchoGuardrail(_AdapterGuardrail):
    """Test double: an input guardrail flagging fixed keywords, no weights, no host."""

    def __init__(
        self,
        keywords: Sequence[str] = ECHO_KEYWORDS,
        *,
        threshold: float | None = None,
        on_fail: Callable[..., Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(EchoClassifier(keywords), "echo", threshold=threshold, on_fail=on_fail, **kwargs)
        self._kwargs["keywords"] = list(keywords)
