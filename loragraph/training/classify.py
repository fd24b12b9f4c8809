"""The classify trainer: a causal-LM LoRA + a ``ClassifyHead`` on the last token, one label per text.

A plain torch loop (``train.fit_head``) over ``heads.body_hidden_states`` (the transformer
body, no ``lm_head``): cross-entropy on the head's logits, AdamW with linear warmup/decay,
validation loss + accuracy/macro-F1 each epoch, early stopping on validation macro-F1, a
checkpoint every epoch. Data: ``{"text": str, "label": str}`` lines.
"""

from __future__ import annotations

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

__all__ = ["choose_threshold_on", "predict_classify", "train_classify"]

_EVAL_BATCH = 32


@torch.no_grad()
def predict_classify(
    model: Any, head: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int, labels: Sequence[str]
) -> tuple[list[str], torch.Tensor]:
    """Labels and logits ``[N, labels]`` for ``texts`` (the trained model in memory), in the
    order of ``texts``; batched by length like the adapter host, so ``loragraph eval`` of the
    published adapter sees the same batches."""
    from loragraph.adapters.heads import body_hidden_states, encode, length_batches

    logits = torch.zeros(len(texts), len(labels))
    for rows in length_batches(texts, _EVAL_BATCH):
        enc = encode(tokenizer, [texts[i] for i in rows], max_length)
        hidden = body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=head.config.depth)
        logits[rows] = head(hidden, enc["attention_mask"]).float()
    return [labels[i] for i in logits.argmax(-1).tolist()], logits


def choose_threshold_on(
    predicted: Sequence[str],
    logits: torch.Tensor,
    gold: Sequence[str],
    labels: Sequence[str],
    *,
    max_fpr: float,
    flag_labels: Sequence[str] | None,
) -> tuple[float, dict[str, float]]:
    """The guardrail threshold chosen on these rows (``guardrails.evaluate.choose_threshold``)
    and its rates there: ``(threshold, {"threshold_validation_fpr", "threshold_validation_tpr"})``
    (no TPR when the rows have no flagged label). ``predicted``/``logits``: ``predict_classify``."""
    from loragraph.guardrails.evaluate import choose_threshold, rates
    from loragraph.guardrails.policy import flagged_score

    flags = list(flag_labels) if flag_labels is not None else None
    probs = logits.float().softmax(-1).tolist()
    scores = [
        flagged_score({"label": label, "scores": dict(zip(labels, p, strict=True))}, flags)[1]
        for label, p in zip(predicted, probs, strict=True)
    ]
    threshold = choose_threshold(scores, gold, max_fpr=max_fpr, flag_labels=flags)  # raises without safe rows
    at = rates(scores, gold, threshold, flag_labels=flags)
    measured = {"threshold_validation_fpr": float(at.fpr or 0.0)}
    if at.tpr is not None:
        measured["threshold_validation_tpr"] = float(at.tpr)
    return threshold, measured


def train_classify(
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
    threshold_set: Sequence[Any] | None = None,
) -> TrainOutcome:
    """Train, evaluate on ``test_set`` (else validation) and stage the adapter under ``run/staged``.

    With ``config.choose_threshold``, the guardrail threshold is chosen on ``threshold_set``
    (the whole validation split; default ``validation_set``) and returned in the outcome."""
    from loragraph.adapters.heads import HeadConfig, build_head, save_head
    from loragraph.training.evaluation import score_classify

    index = {label: i for i, label in enumerate(labels)}
    seed_everything(config.seed)
    head_config = HeadConfig(kind="classify", labels=labels, hidden_size=base.hidden_size, pooling=config.pooling, depth=config.depth)
    head = build_head(head_config)
    # start from (almost) uniform predictions, as transformers' sequence-classification heads do
    # (normal, std 0.02, no bias): the default init gives confident random logits on hidden states
    # with norms around 50, and the first steps are spent undoing them
    torch.nn.init.normal_(head.linear.weight, std=0.02)  # type: ignore[union-attr]
    torch.nn.init.zeros_(head.linear.bias)  # type: ignore[union-attr]
    model = add_lora(base.model, config.lora, seed=config.seed, depth=config.depth)
    tokenizer = base.tokenizer

    def evaluate(m: Any, h: torch.nn.Module, examples: Sequence[Any]) -> dict[str, float]:
        m.eval()
        h.eval()
        predictions, logits = predict_classify(m, h, tokenizer, [e.text for e in examples], max_length=config.max_length, labels=labels)
        gold = torch.tensor([index[e.label] for e in examples])
        metrics = score_classify(predictions, [e.label for e in examples], labels)
        metrics["loss"] = float(F.cross_entropy(logits, gold)) if len(examples) else float("nan")
        return metrics

    task = HeadTask(
        texts=lambda batch: [e.text for e in batch],
        targets=lambda batch, enc: torch.tensor([index[e.label] for e in batch]),
        loss=lambda logits, targets: F.cross_entropy(logits.float(), targets),
        evaluate=evaluate,
        key="macro_f1",
    )
    try:
        history, resumed, stopped = fit_head(
            config, base, model, head, task, train_set, validation_set, run=run, resume=resume, on_epoch_end=on_epoch_end
        )
        final = evaluate(model, head, test_set) if test_set else {}
        best = max(history, key=lambda r: r["metrics"][task.key]) if history else None
        metrics = {k: v for k, v in final.items() if k != "loss"}
        if best is not None:
            metrics["validation_macro_f1"] = float(best["metrics"]["macro_f1"])
            metrics["best_epoch"] = float(best["epoch"])
        threshold = None
        if config.choose_threshold is not None:
            rows = list(threshold_set if threshold_set is not None else validation_set)
            predicted, logits = predict_classify(model, head, tokenizer, [e.text for e in rows], max_length=config.max_length, labels=labels)
            threshold, measured = choose_threshold_on(
                predicted, logits, [e.label for e in rows], labels,
                max_fpr=config.choose_threshold.max_fpr, flag_labels=config.choose_threshold.flag_labels,
            )
            metrics.update(measured)
        staged = run / "staged"
        import shutil

        shutil.rmtree(staged, ignore_errors=True)
        model.save_pretrained(str(staged), safe_serialization=True)
        save_head(head, staged)  # type: ignore[arg-type]
    finally:
        model.unload()  # remove the LoRA layers again: the base object is left as it was
    return TrainOutcome(
        staged_dir=staged,
        labels=labels,
        head=head_config,
        metrics=metrics,
        threshold=threshold,
        history=history,
        resumed_from_epoch=resumed,
        stopped_early=stopped,
    )
