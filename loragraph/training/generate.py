"""The generate trainer: supervised fine-tuning of a causal-LM LoRA with TRL's ``SFTTrainer``.

Each example ``{"input": {...}, "target": str}`` becomes conversational prompt-completion
data built from the base's chat template: the optional ``system`` message, then the user
message rendered by ``render_prompt(config.prompt, input)`` (the same renderer the router
uses at run time), then the assistant ``target``. The loss is on the completion only
(``completion_only_loss=True``). The Trainer evaluates the validation loss every epoch,
saves a checkpoint every epoch (resume picks up the last one of the same config + data
hash), stops early on the validation loss and loads the best epoch at the end. On CPU it
runs with ``use_cpu=True, bf16=False`` (the Trainer keeps the fp32 LoRA weights) inside
``training_compute``, which runs the forward passes under bf16 autocast, with eager attention
on CPU (``mixed_precision``, ``attention``); gradient checkpointing is off (TRL's default is on;
these models are small and it only costs time here).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from loragraph.adapters.base import LoadedBase
from loragraph.errors import ConfigError
from loragraph.training.config import TrainConfig
from loragraph.training.train import (
    EpochCallback,
    EpochReport,
    TrainOutcome,
    add_lora,
    seed_everything,
    training_compute,
)

__all__ = ["chat_prompt", "generate_texts", "train_generate"]

_GEN_BATCH = 8
_MIN_IMPROVEMENT = 1e-4
"""A validation loss must fall by more than this to count as an improvement (early stopping)."""


def chat_prompt(tokenizer: Any, prompt: str, system: str | None) -> str:
    """The chat-template text the model sees before it answers (system, user, assistant header)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


@torch.no_grad()
def generate_texts(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, system: str | None, max_new_tokens: int, max_length: int
) -> list[str]:
    """Greedy completions of rendered ``prompts`` by ``model`` as it is (adapter on or off)."""
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(prompts), _GEN_BATCH):
        chunk = [chat_prompt(tokenizer, p, system) for p in prompts[start : start + _GEN_BATCH]]
        enc = tokenizer(
            chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False,
            truncation=True, max_length=max_length,
        )
        enc = {k: v.to(model.device) for k, v in enc.items()}
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def _fits(tokenizer: Any, config: TrainConfig, examples: Sequence[Any], split: str) -> list[Any]:
    """Drop examples whose prompt leaves no room for the completion within ``max_length``."""
    from loragraph.pipelines.templates import render_prompt

    kept = []
    for ex in examples:
        prompt = chat_prompt(tokenizer, render_prompt(config.prompt or "", ex.input), config.system)
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 8 <= config.max_length:
            kept.append(ex)
    if len(kept) < len(examples):
        print(
            f"{config.adapter}: {len(examples) - len(kept)} of {len(examples)} {split} examples have prompts longer "
            f"than `max_length` {config.max_length} - 8 tokens and are skipped",
            file=sys.stderr,
        )
    if not kept:
        raise ConfigError(f"`max_length` {config.max_length} is too small: no {split} example's prompt fits")
    return kept


def _checkpoint_epoch(checkpoint: str) -> int:
    """The epoch a Trainer checkpoint was saved at (its ``trainer_state.json``)."""
    import json

    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return round(float(state.get("epoch") or 0))


def _report_callback(on_epoch_end: EpochCallback | None, n_train: int) -> Any:
    from transformers import TrainerCallback

    class _Report(TrainerCallback):  # type: ignore[misc]
        """Print one line per epoch and hand it to ``on_epoch_end`` after the checkpoint is saved."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.best = math.inf

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            evals = [h for h in state.log_history if "eval_loss" in h]
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            if not evals:
                return
            val = float(evals[-1]["eval_loss"])
            improved = val < self.best
            self.best = min(self.best, val)
            seconds = time.perf_counter() - self.started
            report = EpochReport(
                epoch=round(state.epoch or 0),
                train_loss=float(losses[-1]) if losses else float("nan"),
                validation_loss=val,
                metrics={"loss": val},
                improved=improved,
                seconds=seconds,
                examples_per_second=n_train / max(seconds, 1e-9),
            )
            print(
                f"epoch {report.epoch}: train_loss {report.train_loss:.4f} validation loss {val:.4f}"
                f"{' *' if improved else ''} ({seconds:.1f}s)",
                file=sys.stderr,
            )
            if on_epoch_end is not None:
                on_epoch_end(report)

    return _Report()


def train_generate(
    config: TrainConfig,
    base: LoadedBase,
    train_set: Sequence[Any],
    validation_set: Sequence[Any],
    test_set: Sequence[Any] | None,
    *,
    run: Path,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainOutcome:
    """SFT the LoRA, evaluate adapter AND base on ``test_set`` (ROUGE), stage under ``run/staged``."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    from loragraph.pipelines.templates import render_prompt
    from loragraph.training.data import to_dataset
    from loragraph.training.evaluation import score_generate

    tokenizer = base.tokenizer
    train_set = _fits(tokenizer, config, train_set, "train")
    validation_set = _fits(tokenizer, config, validation_set, "validation")
    seed_everything(config.seed)
    model = add_lora(base.model, config.lora, seed=config.seed)
    out_dir = run / "trainer"
    if not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
    checkpoint = get_last_checkpoint(str(out_dir)) if resume and out_dir.is_dir() else None
    if checkpoint:
        print(f"resuming `{config.adapter}` from {checkpoint}", file=sys.stderr)
    cpu = not torch.cuda.is_available()
    steps = math.ceil(len(train_set) / config.batch_size) * config.epochs
    args = SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(steps * config.warmup_ratio),
        weight_decay=config.weight_decay,
        max_grad_norm=1.0,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        use_cpu=cpu,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=None,
    )
    callbacks = [_report_callback(on_epoch_end, len(train_set))]
    if config.early_stopping_patience is not None:
        callbacks.insert(0, EarlyStoppingCallback(
                early_stopping_patience=config.early_stopping_patience, early_stopping_threshold=_MIN_IMPROVEMENT
            ))
    kw = {"prompt_template": config.prompt, "system": config.system, "conversational": True}
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=to_dataset(list(train_set), **kw),
            eval_dataset=to_dataset(list(validation_set), **kw),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        # eager attention on CPU and bf16 autocast for the steps (and the Trainer's eval loss)
        with training_compute(base, attention=config.attention, mixed_precision=config.mixed_precision):
            trainer.train(resume_from_checkpoint=checkpoint)
        model = trainer.model
        history = [
            {"epoch": round(h["epoch"]), "validation_loss": float(h["eval_loss"])}
            for h in trainer.state.log_history
            if "eval_loss" in h
        ]
        stopped = bool(history) and history[-1]["epoch"] < config.epochs
        metrics: dict[str, float] = {}
        if history:
            best = min(history, key=lambda h: h["validation_loss"])
            metrics["validation_loss"] = best["validation_loss"]
            metrics["best_epoch"] = float(best["epoch"])
        if test_set:
            prompts = [render_prompt(config.prompt or "", e.input) for e in test_set]
            targets = [e.target for e in test_set]
            gen = {"system": config.system, "max_new_tokens": config.max_new_tokens, "max_length": config.max_length}
            adapted = generate_texts(model, tokenizer, prompts, **gen)
            with model.disable_adapter():
                plain = generate_texts(model, tokenizer, prompts, **gen)
            metrics.update(score_generate(adapted, targets))
            metrics.update({f"base_{k}": v for k, v in score_generate(plain, targets).items()})
        staged = run / "staged"
        shutil.rmtree(staged, ignore_errors=True)
        model.save_pretrained(str(staged), safe_serialization=True)
        resumed = _checkpoint_epoch(checkpoint) if checkpoint else 0
    finally:
        model.unload()
    return TrainOutcome(
        staged_dir=staged,
        labels=[],
        head=None,
        metrics=metrics,
        history=history,
        resumed_from_epoch=resumed,
        stopped_early=stopped,
    )
