"""The tag trainer: a causal-LM LoRA + a ``TagHead`` giving one BIO tag per token -> entity spans.

A plain torch loop (``train.fit_head``) over ``heads.body_hidden_states`` (no ``lm_head``):
char spans become BIO tag ids per token (``heads.spans_to_tag_ids``; special and pad
tokens are ignored by the loss), token cross-entropy, AdamW with linear warmup/decay,
validation loss + entity-level F1 each epoch (predicted tags decoded back to char spans
by ``heads.tag_ids_to_spans`` exactly as the host does, then exact span matching),
early stopping on validation F1, a checkpoint every epoch.
Data: ``{"text": str, "entities": [{"type", "start", "end"}]}`` lines.

Note: a causal body sees only the tokens to the LEFT of each token, so the tag of a token
is decided without its right context.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loragraph.adapters.base import LoadedBase
from loragraph.training.config import TrainConfig
from loragraph.training.train import (
    EpochCallback,
    HeadTask,
    TrainOutcome,
    add_lora,
    fit_head,
    seed_everything,
)

__all__ = ["predict_tag", "train_tag"]

_EVAL_BATCH = 32


def _spans(example: Any) -> list[dict[str, Any]]:
    return [{"type": e.type, "start": e.start, "end": e.end} for e in example.entities]


@torch.no_grad()
def predict_tag(
    model: Any, head: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int, head_config: Any
) -> tuple[list[list[dict[str, Any]]], list[tuple[list[int], torch.Tensor, Any]]]:
    """Entity spans per text (in the order of ``texts``), plus each batch's row indices, logits
    and encoding (for the validation loss). Batched by length like the adapter host."""
    from loragraph.adapters.heads import (
        body_hidden_states,
        encode,
        length_batches,
        tag_ids_to_spans,
    )

    spans: list[list[dict[str, Any]]] = [[] for _ in texts]
    batches: list[tuple[list[int], torch.Tensor, Any]] = []
    for rows in length_batches(texts, _EVAL_BATCH):
        enc = encode(tokenizer, [texts[i] for i in rows], max_length)
        hidden = body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=head.config.depth)
        logits = head(hidden, enc["attention_mask"]).float()
        ids = logits.argmax(-1)
        for j, i in enumerate(rows):
            spans[i] = tag_ids_to_spans(texts[i], enc["offset_mapping"][j], ids[j], head_config)
        batches.append((rows, logits, enc))
    return spans, batches


def _tag_targets(batch: Sequence[Any], enc: Any, head_config: Any) -> torch.Tensor:
    from loragraph.adapters.heads import spans_to_tag_ids

    return torch.tensor([spans_to_tag_ids(enc["offset_mapping"][i], _spans(e), head_config) for i, e in enumerate(batch)])


def _token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from loragraph.adapters.heads import IGNORE_INDEX

    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def train_tag(
    config: TrainConfig,
    base: LoadedBase,
    train_set: Sequence[Any],
    validation_set: Sequence[Any],
    test_set: Sequence[Any] | None,
    labels: list[str],
    *,
    run: Path,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainOutcome:
    """Train, evaluate on ``test_set`` (else validation) and stage the adapter under ``run/staged``."""
    from loragraph.adapters.heads import HeadConfig, build_head, save_head
    from loragraph.training.evaluation import score_tag

    seed_everything(config.seed)
    head_config = HeadConfig(kind="tag", labels=labels, hidden_size=base.hidden_size, lookahead=config.lookahead, depth=config.depth)
    head = build_head(head_config)
    model = add_lora(base.model, config.lora, seed=config.seed, depth=config.depth)
    tokenizer = base.tokenizer

    def evaluate(m: Any, h: torch.nn.Module, examples: Sequence[Any]) -> dict[str, float]:
        m.eval()
        h.eval()
        texts = [e.text for e in examples]
        predicted, batches = predict_tag(m, h, tokenizer, texts, max_length=config.max_length, head_config=head_config)
        metrics = score_tag(texts, predicted, [_spans(e) for e in examples])
        losses = [_token_loss(lg, _tag_targets([examples[i] for i in rows], enc, head_config)) for rows, lg, enc in batches]
        metrics["loss"] = float(torch.stack(losses).mean()) if losses else float("nan")
        return metrics

    task = HeadTask(
        texts=lambda batch: [e.text for e in batch],
        targets=lambda batch, enc: _tag_targets(batch, enc, head_config),
        loss=_token_loss,
        evaluate=evaluate,
        key="f1",
    )
    try:
        history, resumed, stopped = fit_head(
            config, base, model, head, task, train_set, validation_set, run=run, resume=resume, on_epoch_end=on_epoch_end
        )
        final = evaluate(model, head, test_set) if test_set else {}
        metrics = {k: v for k, v in final.items() if k != "loss"}
        best = max(history, key=lambda r: r["metrics"][task.key]) if history else None
        if best is not None:
            metrics["validation_f1"] = float(best["metrics"]["f1"])
            metrics["best_epoch"] = float(best["epoch"])
        staged = run / "staged"
        shutil.rmtree(staged, ignore_errors=True)
        model.save_pretrained(str(staged), safe_serialization=True)
        save_head(head, staged)  # type: ignore[arg-type]
    finally:
        model.unload()
    return TrainOutcome(
        staged_dir=staged,
        labels=labels,
        head=head_config,
        metrics=metrics,
        history=history,
        resumed_from_epoch=resumed,
        stopped_early=stopped,
    )
