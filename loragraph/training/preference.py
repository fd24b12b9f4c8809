"""Preference accuracy: how often an adapter's implicit DPO reward prefers `chosen`.

What is computed, exactly
-------------------------
For one preference pair ``(x, y_chosen, y_rejected)`` the prompt ``x`` is the chat the
adapter is served with: an optional system message, then the user message rendered from
the pair's ``input`` by the adapter's own prompt template (``render_prompt``), then the
assistant header (``add_generation_prompt=True``). Each response is the assistant turn
as the chat template writes it, end-of-turn token included: the tokens where the
tokenized ``prompt + response`` stops agreeing with the tokenized prompt, exactly as
TRL's ``DPOTrainer`` splits them. Sequences longer than ``max_length`` tokens are
truncated at the end (TRL's ``keep_start``); a pair whose prompt alone fills
``max_length`` is skipped and counted in ``skipped``, as TRL drops it from training.

The log-probability of a response is the SUM over its tokens of ``log p(token | prefix)``
(teacher forcing, no length normalisation). The implicit DPO reward of a response under
the adapter, against a reference, is::

    r(y) = beta * (log p_adapter(y | x) - log p_reference(y | x))

where the reference is another adapter of the same model, or the base alone
(``reference=None``: every adapter disabled). A pair counts as preferred when
``r(y_chosen) > r(y_rejected)`` strictly (ties count as not preferred, like TRL's
``rewards/accuracies``). ``accuracy`` is the share of evaluated pairs that are preferred;
``mean_margin`` is the mean of ``r(y_chosen) - r(y_rejected)``. ``beta`` only scales the
margins; the accuracy does not depend on it.

Before/after a DPO run, ``loragraph.training.dpo`` reports both numbers against the SAME
reference, the base: SFT version vs base (before) and DPO version vs base (after), so they
are comparable; it also reports the DPO version against its SFT parent (the reference DPO
trained against).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from loragraph.errors import ConfigError
from loragraph.pipelines.templates import render_prompt

__all__ = [
    "ChatPair",
    "PreferenceResult",
    "chat_messages",
    "preference_accuracy",
    "render_pairs",
    "response_logps",
    "tokenize_pair",
    "using_adapter",
]

Message = dict[str, str]


def chat_messages(
    template: str, system: str | None, context: dict[str, Any], *, where: str | None = None
) -> list[Message]:
    """The prompt messages of a generate adapter: optional system, then the rendered user turn."""
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": render_prompt(template, context, where=where)})
    return messages


@dataclass(frozen=True)
class ChatPair:
    """One preference pair rendered for a chat model: prompt messages and two assistant replies."""

    prompt: list[Message]
    chosen: str
    rejected: str

    def as_trl_row(self) -> dict[str, list[Message]]:
        """The conversational row TRL's ``DPOTrainer`` expects (explicit prompt)."""
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


def _field(example: Any, name: str) -> Any:
    return example[name] if isinstance(example, dict) else getattr(example, name)


def render_pairs(examples: Any, template: str, system: str | None) -> list[ChatPair]:
    """Render preference examples as chat pairs with the adapter's template and system message.

    ``examples`` is a ``LoadedData`` of kind ``pairs`` (a template error then names its
    ``file.jsonl:LINE``) or a sequence of ``{"input", "chosen", "rejected"}`` dicts or objects.
    """
    items = list(examples.examples) if hasattr(examples, "examples") else list(examples)
    pairs = []
    for i, example in enumerate(items):
        where = examples.where(i) if hasattr(examples, "where") else f"pair {i}"
        context = dict(_field(example, "input"))
        pairs.append(
            ChatPair(
                prompt=chat_messages(template, system, context, where=where),
                chosen=str(_field(example, "chosen")),
                rejected=str(_field(example, "rejected")),
            )
        )
    return pairs


# --------------------------------------------------------------------------- tokenize


def _chat_ids(tokenizer: Any, messages: list[Message], *, add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    ids = out["input_ids"]
    return [int(i) for i in ids]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tokenizer: Any, pair: ChatPair) -> tuple[list[int], list[int], list[int]]:
    """``(prompt_ids, chosen_ids, rejected_ids)`` split the way TRL's ``DPOTrainer`` splits them."""
    prompt = _chat_ids(tokenizer, pair.prompt, add_generation_prompt=True)
    chosen = _chat_ids(
        tokenizer,
        [*pair.prompt, {"role": "assistant", "content": pair.chosen}],
        add_generation_prompt=False,
    )
    rejected = _chat_ids(
        tokenizer,
        [*pair.prompt, {"role": "assistant", "content": pair.rejected}],
        add_generation_prompt=False,
    )
    n = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    return prompt[:n], chosen[n:], rejected[n:]


# --------------------------------------------------------------------------- log-probs


def _peft_model(model: Any) -> Any:
    from peft import PeftModel

    return model if isinstance(model, PeftModel) else None


@contextlib.contextmanager
def using_adapter(model: Any, adapter: str | None) -> Iterator[None]:
    """Run with only ``adapter`` active (``None``: the base alone); restore everything after.

    The active adapter and every parameter's ``requires_grad`` are restored, so this is safe
    between the construction of a trainer and its training.
    """
    peft = _peft_model(model)
    if peft is None:
        if adapter is not None:
            raise ConfigError(
                f"`adapter` {adapter!r} needs a PEFT model; this model has no adapters"
            )
        yield
        return
    if adapter is not None and adapter not in peft.peft_config:
        raise ConfigError(
            f"`adapter` {adapter!r} is not loaded; loaded adapters: {sorted(peft.peft_config)}"
        )
    grads = {name: p.requires_grad for name, p in peft.named_parameters()}
    previous = peft.active_adapter
    try:
        if adapter is None:
            with peft.disable_adapter():
                yield
        else:
            peft.set_adapter(adapter, inference_mode=True)
            yield
    finally:
        if adapter is not None:
            peft.set_adapter(previous)
        for name, p in peft.named_parameters():
            p.requires_grad_(grads.get(name, False))


def _sequence_logps(model: Any, sequences: list[tuple[list[int], int]], pad_id: int) -> list[float]:
    """Sum of log p over the completion of each ``(ids, prompt_len)``; one padded batch."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (ids, prompt_len) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        completion[row, prompt_len : len(ids)] = True
    input_ids, attention, completion = (
        input_ids.to(device),
        attention.to(device),
        completion.to(device),
    )
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
    sums = []
    for row in range(len(sequences)):  # one row at a time in fp32: full-vocab fp32 logits are large
        row_logits = logits[row, :-1].float()
        targets = input_ids[row, 1:]
        token_logps = row_logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(
            row_logits, dim=-1
        )
        sums.append(float(token_logps.masked_fill(~completion[row, 1:], 0.0).sum()))
    return sums


def response_logps(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[ChatPair],
    *,
    adapter: str | None,
    max_length: int | None = 512,
    batch_size: int = 4,
) -> tuple[list[float | None], list[float | None]]:
    """Summed log-probs of every pair's chosen and rejected response under ``adapter``.

    ``adapter=None`` runs the base alone. Entries are ``None`` for pairs whose prompt alone
    fills ``max_length`` (no response token left).
    """
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be >= 1, got {batch_size}")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    items: list[
        tuple[int, list[int], int]
    ] = []  # (pair index * 2 + {0 chosen, 1 rejected}, ids, prompt_len)
    for i, pair in enumerate(pairs):
        prompt, chosen, rejected = tokenize_pair(tokenizer, pair)
        if max_length is not None and len(prompt) >= max_length:
            continue
        for j, response in enumerate((chosen, rejected)):
            ids = (prompt + response)[:max_length] if max_length is not None else prompt + response
            items.append((2 * i + j, ids, len(prompt)))
    out: list[float | None] = [None] * (2 * len(pairs))
    was_training = model.training
    model.eval()
    try:
        with using_adapter(model, adapter), torch.no_grad():
            for start in range(0, len(items), 2 * batch_size):
                chunk = items[start : start + 2 * batch_size]
                values = _sequence_logps(model, [(ids, n) for _, ids, n in chunk], pad_id)
                for (slot, _, _), value in zip(chunk, values, strict=True):
                    out[slot] = value
    finally:
        model.train(was_training)
    return out[0::2], out[1::2]


@dataclass(frozen=True)
class PreferenceResult:
    """Preference accuracy of one adapter against one reference on a set of pairs."""

    accuracy: float
    mean_margin: float
    pairs: int
    skipped: int
    adapter: str | None
    reference: str | None
    beta: float
    margins: list[float] = field(default_factory=list, repr=False)


def _resolve_target(
    target: Any, adapter: Any, reference: Any, tokenizer: Any
) -> tuple[Any, Any, str | None, str | None]:
    """Accept a model (+ tokenizer) or an ``AdapterHost`` (duck-typed: ``mount`` and ``base``)."""
    if hasattr(target, "mount") and hasattr(target, "base"):
        host = target
        names = [
            None
            if a is None
            else (a if isinstance(a, str) and a in _loaded(host) else host.mount(a))
            for a in (adapter, reference)
        ]
        model = getattr(host, "model", None) or host.base.model
        return model, tokenizer or host.base.tokenizer, names[0], names[1]
    if tokenizer is None:
        raise ConfigError(
            "`tokenizer` is required when scoring a model (an `AdapterHost` brings its own)"
        )
    return target, tokenizer, adapter, reference


def _loaded(host: Any) -> set[str]:
    model = getattr(host, "model", None) or host.base.model
    return set(getattr(model, "peft_config", {}) or {})


def preference_accuracy(
    target: Any,
    adapter: Any,
    pairs: Sequence[ChatPair],
    *,
    reference: Any = None,
    tokenizer: Any = None,
    beta: float = 0.1,
    max_length: int | None = 512,
    batch_size: int = 4,
    reference_logps: tuple[list[float | None], list[float | None]] | None = None,
    adapter_logps: tuple[list[float | None], list[float | None]] | None = None,
) -> PreferenceResult:
    """Share of ``pairs`` where ``adapter``'s implicit DPO reward prefers ``chosen`` (see module doc).

    ``target`` is a PEFT model (pass ``tokenizer``) or an ``AdapterHost``; ``adapter`` and
    ``reference`` are adapter names loaded in the model (for a host: versions or refs it
    mounts), ``None`` for the base alone. ``reference_logps`` / ``adapter_logps`` reuse
    log-probs from ``response_logps`` on the same pairs (same ``max_length``).
    """
    if beta <= 0:
        raise ConfigError(f"`beta` must be > 0, got {beta}")
    if not pairs:
        raise ConfigError("`pairs` must hold at least 1 preference pair, got 0")
    model, tokenizer, adapter_name, reference_name = _resolve_target(
        target, adapter, reference, tokenizer
    )
    if adapter_name == reference_name:
        raise ConfigError(
            f"`adapter` and `reference` are both {adapter_name or 'the base'!r}; every reward would be 0"
        )
    policy = adapter_logps or response_logps(
        model, tokenizer, pairs, adapter=adapter_name, max_length=max_length, batch_size=batch_size
    )
    ref = reference_logps or response_logps(
        model,
        tokenizer,
        pairs,
        adapter=reference_name,
        max_length=max_length,
        batch_size=batch_size,
    )
    margins: list[float] = []
    skipped = 0
    for pc, pr, rc, rr in zip(policy[0], policy[1], ref[0], ref[1], strict=True):
        if pc is None or pr is None or rc is None or rr is None:
            skipped += 1
            continue
        margins.append(beta * (pc - rc) - beta * (pr - rr))
    n = len(margins)
    return PreferenceResult(
        accuracy=sum(m > 0 for m in margins) / n if n else math.nan,
        mean_margin=sum(margins) / n if n else math.nan,
        pairs=n,
        skipped=skipped,
        adapter=adapter_name,
        reference=reference_name,
        beta=beta,
        margins=margins,
    )
