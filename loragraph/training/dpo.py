"""Preference tuning of a generate adapter with DPO, published as a new version.

``align("reply", "pairs.jsonl", config)`` continues the adapter's promoted version (or a
pinned one, ``"reply@v2"``) with TRL's ``DPOTrainer`` on the same shared base with the
same quantization, and publishes the result as the next version of the same adapter:

1. the parent version is resolved and verified (checksums), the base it was trained on is
   loaded with ``load_base(..., trainable=True)`` and must have the parent's fingerprint;
2. the pairs are validated by ``load_examples(path, "pairs")`` (``file:line`` errors) and
   each ``input`` is rendered with the parent's trained prompt template and system
   message into TRL's conversational ``prompt`` / ``chosen`` / ``rejected`` rows;
3. the parent's LoRA is loaded as peft adapter ``"default"`` (trainable); TRL then adds a
   frozen copy named ``"ref"``. **The reference of DPO is the parent version itself** (the
   SFT adapter), not the bare base: DPO moves the adapter away from its own SFT behaviour
   only as far as the preferences ask (``beta``);
4. TRL keeps QLoRA adapter weights in bf16; here they are trained in fp32, because an Adam
   step of ~``learning_rate`` on a LoRA weight of ~1e-2 is below bf16's resolution and
   would be rounded away;
5. after training, evaluation runs on the same model object: the parent (``"ref"``), the
   new weights (``"default"``) and the base (adapters disabled) on held-out pairs
   (``preference.preference_accuracy``) and, when a test split is given, ROUGE-L of greedy
   replies decoded like ``AdapterHost.generate``;
6. only ``"default"`` is saved (standard PEFT folder) and published through
   ``Registry.publish`` with ``parent`` = the version it started from, ``method: dpo``, the
   pair data hash, the hyperparameters, the parent's ``prompt`` and ``system`` and the
   metrics. Nothing else in the registry is written. The new version is promoted only when
   ``promote: if_better`` and the promotion gate passes (see ``promotion_gate``).

Metrics in the manifest (see ``loragraph.training.preference`` for the exact definition):
``preference_accuracy_before`` (parent vs base), ``preference_accuracy_after`` (new vs
base, the same reference, so comparable), ``preference_accuracy_vs_parent`` (new vs the
parent: the implicit reward of DPO proper, against the reference it was trained with, which
TRL reports as reward accuracy) and the matching ``*_margin``; ``rougeL_before`` /
``rougeL_after`` (and ``rouge1``) on the test split; ``eval_pairs``, ``train_pairs``,
``train_loss``, ``train_seconds``, ``promotion_gate_passed`` (1.0 / 0.0).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loragraph.adapters.base import BaseSpec, keep_cpu_packed_4bit, load_base, loragraph_home
from loragraph.adapters.registry import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterVersion, Registry
from loragraph.errors import ConfigError, DataError, IntegrityError, ModelLoadError
from loragraph.training.config import config_error
from loragraph.training.preference import (
    ChatPair,
    chat_messages,
    preference_accuracy,
    render_pairs,
    response_logps,
    using_adapter,
)

__all__ = [
    "AlignConfig",
    "align",
    "generate_replies",
    "load_align_config",
    "promotion_gate",
]

log = logging.getLogger(__name__)

_REF_ADAPTER = "ref"
_POLICY_ADAPTER = "default"


class AlignConfig(BaseModel):
    """Settings of one DPO run (``loragraph align``); every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    beta: float = Field(
        0.1,
        gt=0.0,
        le=10.0,
        description="DPO temperature: how far the adapter may move from its reference (the parent)",
    )
    learning_rate: float = Field(
        5e-5,
        gt=0.0,
        le=1.0,
        description="peak AdamW learning rate of the LoRA weights (TRL's 1e-6 default is for full fine-tuning; "
        "LoRA needs more)",
    )
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="weight of an SFT loss on the chosen reply added to the DPO loss (RPO; TRL `loss_type` "
        "[sigmoid, sft]): keeps the adapter's own replies fluent while it learns the preference; 0: plain DPO",
    )
    epochs: int = Field(1, ge=1, le=100, description="passes over the training pairs")
    max_steps: int | None = Field(
        None,
        ge=1,
        description="stop after this many optimizer steps (caps CPU time); null: `epochs` decide",
    )
    batch_size: int = Field(4, ge=1, le=1024, description="pairs per forward pass")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="forward passes per optimizer step"
    )
    warmup_ratio: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the optimizer steps spent warming up"
    )
    max_length: int = Field(
        512,
        ge=16,
        le=32768,
        description="most tokens of prompt + response; longer sequences lose their end (TRL `keep_start`) and pairs "
        "whose prompt alone fills it are dropped",
    )
    seed: int = Field(
        0, description="seed of pair sampling, the hold-out split, shuffling and dropout"
    )
    max_pairs: int | None = Field(
        None, ge=1, description="train on at most this many pairs (seeded sample); null uses all"
    )
    eval_pairs: Path | None = Field(
        None,
        description="held-out preference pairs (JSONL) for preference accuracy; relative to the YAML file. "
        "When absent, `holdout_fraction` of the training pairs is held out",
    )
    holdout_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="share of the training pairs held out for evaluation when `eval_pairs` is absent "
        "(0: evaluate on the training pairs, reported as such)",
    )
    max_eval_pairs: int | None = Field(
        None, ge=1, description="evaluate at most this many pairs (the first ones); null uses all"
    )
    test: Path | None = Field(
        None,
        description='the stage\'s generate test split (`{"input", "target"}` JSONL) for ROUGE-L before/after; '
        "relative to the YAML file; null skips it",
    )
    max_eval_examples: int | None = Field(
        32,
        ge=1,
        description="decode at most this many test examples (the first ones); null uses all",
    )
    max_new_tokens: int = Field(96, ge=1, le=4096, description="tokens decoded per test example")
    eval_batch_size: int = Field(
        8, ge=1, le=1024, description="sequences per forward pass when evaluating"
    )
    promote: Literal["never", "if_better"] = Field(
        "never",
        description="`never`: publish without promoting; `if_better`: promote when the promotion gate passes",
    )
    min_preference_accuracy: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="gate: the new version's preference accuracy (against `gate_reference`) must reach this",
    )
    gate_reference: Literal["base", "parent"] = Field(
        "base",
        description="the reference of the implicit reward that `min_preference_accuracy` reads: `base` (the "
        "base alone, the reference the parent's accuracy is measured against, so the two compare: "
        "`preference_accuracy_after`) or `parent` (the DPO reference the version was trained against: "
        "`preference_accuracy_vs_parent`, TRL's reward accuracy; easier to reach)",
    )
    max_rouge_l_drop: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="gate: `rougeL_after` may be at most this much below `rougeL_before`",
    )
    output_dir: Path | None = Field(
        None,
        description="where the trainer's scratch files go; default `$LORAGRAPH_HOME/runs/<adapter>-dpo`",
    )

    def loss_types(self) -> list[str]:
        """TRL's `loss_type`: DPO's sigmoid loss, plus the SFT term when `sft_weight` > 0."""
        return ["sigmoid", "sft"] if self.sft_weight > 0 else ["sigmoid"]

    def hyperparameters(self) -> dict[str, Any]:
        """What shapes the weights, for the manifest."""
        return {
            "beta": self.beta,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "seed": self.seed,
            "max_pairs": self.max_pairs,
            "loss_type": self.loss_types(),
            "sft_weight": self.sft_weight,
            "reference": "parent",
        }


def load_align_config(path: str | Path) -> AlignConfig:
    """Read a DPO YAML; `eval_pairs`, `test` and `output_dir` are resolved relative to it."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError("DPO config file does not exist", where=where)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"{path}:{mark.line + 1}"
        raise ConfigError(
            f"is not valid YAML: {getattr(exc, 'problem', exc)}", where=where
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"must be a YAML mapping of fields, got {type(raw).__name__}", where=where
        )
    base_dir = path.resolve().parent
    for key in ("eval_pairs", "test", "output_dir"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            p = Path(value).expanduser()
            raw[key] = str(p if p.is_absolute() else (base_dir / p).resolve())
    try:
        return AlignConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, where=where) from exc


# --------------------------------------------------------------------------- gate


def promotion_gate(metrics: dict[str, float], config: AlignConfig) -> list[str]:
    """Why the new version must not be promoted; empty when it may be.

    It may when its preference accuracy against ``gate_reference`` (``base``:
    ``preference_accuracy_after``; ``parent``: ``preference_accuracy_vs_parent``) reaches ``min_preference_accuracy``, when it prefers the chosen
    replies more often than its parent did, both against the base alone (``preference_accuracy_after``
    > ``preference_accuracy_before``, the one comparison with a common reference), and (when ROUGE-L
    was measured) ``rougeL_after`` is at most ``max_rouge_l_drop`` below ``rougeL_before``.
    """
    reasons = []
    before = metrics.get("preference_accuracy_before", math.nan)
    after = metrics.get("preference_accuracy_after", math.nan)
    key = "preference_accuracy_after" if config.gate_reference == "base" else "preference_accuracy_vs_parent"
    reached = metrics.get(key, math.nan)
    if not reached >= config.min_preference_accuracy:
        reasons.append(f"`{key}` {reached:.3f} < `min_preference_accuracy` {config.min_preference_accuracy}")
    if not after > before:
        reasons.append(
            f"`preference_accuracy_after` {after:.3f} is not above `preference_accuracy_before` {before:.3f}"
        )
    if "rougeL_before" in metrics and "rougeL_after" in metrics:
        drop = metrics["rougeL_before"] - metrics["rougeL_after"]
        if drop > config.max_rouge_l_drop:
            reasons.append(
                f"`rougeL` fell by {drop:.3f} > `max_rouge_l_drop` {config.max_rouge_l_drop}"
            )
    return reasons


# --------------------------------------------------------------------------- generation


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    if isinstance(tokenizer.eos_token_id, int) and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate_replies(
    model: Any,
    tokenizer: Any,
    chats: Sequence[list[dict[str, str]]],
    *,
    adapter: str | None,
    max_new_tokens: int = 96,
    batch_size: int = 8,
) -> list[str]:
    """Greedy replies to chat prompts with one adapter of a PEFT model (``None``: the base).

    Decodes the way ``AdapterHost.generate`` does: chat template with the generation prompt,
    left padding, greedy, stop at end-of-turn, special tokens removed, stripped.
    """
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    texts = [
        str(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False))
        for c in chats
    ]
    device = next(model.parameters()).device
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with using_adapter(model, adapter), torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    padding_side="left",
                    add_special_tokens=False,
                    return_tensors="pt",
                )
                ids = enc["input_ids"].to(device)
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=enc["attention_mask"].to(device),
                    generation_config=config,
                )
                for row in generated[:, ids.shape[1] :].cpu().tolist():
                    stop = next((k for k, t in enumerate(row) if t in eos), None)
                    out.append(
                        tokenizer.decode(
                            row if stop is None else row[:stop], skip_special_tokens=True
                        ).strip()
                    )
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------- align


def _allow_inference_repack(model: Any) -> None:
    """After training: let 4-bit layers take the fast AVX512-BF16 inference kernel again."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return
    fast = bool(has_avx512bf16())
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = fast


def _split_pairs(
    pairs: list[ChatPair], config: AlignConfig, have_eval: bool
) -> tuple[list[ChatPair], list[ChatPair] | None]:
    """``(train, holdout)``; holdout is None when evaluating on a separate file or on train."""
    rng = random.Random(config.seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    holdout: list[ChatPair] | None = None
    if not have_eval and config.holdout_fraction > 0 and len(pairs) >= 2:
        n_eval = max(1, round(len(pairs) * config.holdout_fraction))
        holdout = [pairs[i] for i in sorted(order[:n_eval])]
        order = order[n_eval:]
    train = [pairs[i] for i in sorted(order)]
    if config.max_pairs is not None and len(train) > config.max_pairs:
        keep = sorted(random.Random(config.seed + 1).sample(range(len(train)), config.max_pairs))
        train = [train[i] for i in keep]
    return train, holdout


def _resolve_parent(registry: Registry, adapter_ref: str | AdapterVersion) -> AdapterVersion:
    parent = registry.resolve(adapter_ref)
    registry.verify(parent)
    m = parent.manifest
    if m.kind != "generate":
        raise ConfigError(
            f"`align` tunes generate adapters on preference pairs; `{parent.ref}` is a `{m.kind}` adapter"
        )
    if not m.prompt:
        raise ConfigError(
            f"`{parent.ref}` has no `prompt` template in its manifest; retrain it with `kind: generate`"
        )
    return parent


def align(
    adapter_ref: str | AdapterVersion,
    pairs_path: str | Path,
    config: AlignConfig | None = None,
    *,
    eval_pairs_path: str | Path | None = None,
    test_path: str | Path | None = None,
    registry: Registry | None = None,
    progress: Callable[[str], None] | None = None,
) -> AdapterVersion:
    """Continue ``adapter_ref`` with DPO on ``pairs_path`` and publish the next version.

    ``eval_pairs_path`` / ``test_path`` override the config's ``eval_pairs`` / ``test``.
    Returns the published version (promoted only with ``promote: if_better`` and a passing
    gate). See the module doc for every step and metric.
    """
    config = config or AlignConfig()
    registry = registry or Registry()
    say = progress or (lambda msg: log.info(msg))
    parent = _resolve_parent(registry, adapter_ref)
    manifest = parent.manifest
    prompt = str(manifest.prompt)

    from loragraph.training.data import load_examples

    pairs_path = Path(pairs_path)
    data = load_examples(pairs_path, "pairs")
    pairs = render_pairs(data, prompt, manifest.system)
    eval_file = Path(eval_pairs_path) if eval_pairs_path is not None else config.eval_pairs
    test_file = Path(test_path) if test_path is not None else config.test
    eval_data = load_examples(eval_file, "pairs") if eval_file is not None else None
    train_pairs, holdout = _split_pairs(pairs, config, have_eval=eval_data is not None)
    if eval_data is not None:
        eval_pairs, eval_source = render_pairs(eval_data, prompt, manifest.system), "file"
    elif holdout is not None:
        eval_pairs, eval_source = holdout, "holdout"
    else:
        eval_pairs, eval_source = train_pairs, "train"
    if config.max_eval_pairs is not None:
        eval_pairs = eval_pairs[: config.max_eval_pairs]
    test_examples = []
    if test_file is not None:
        test_data = load_examples(test_file, "generate")
        test_examples = list(test_data.examples)[: config.max_eval_examples]
        for i, ex in enumerate(
            test_examples
        ):  # fail on a template error before training, not after
            chat_messages(prompt, manifest.system, dict(ex.input), where=test_data.where(i))

    # ------------------------------------------------------------ base + parent adapter
    say(f"loading base `{manifest.base_name}` ({manifest.quantization}) for `{parent.ref}`")
    base = load_base(
        BaseSpec(name=manifest.base_name, quantization=manifest.quantization), trainable=True
    )
    if base.fingerprint != manifest.base_fingerprint:
        raise IntegrityError(
            f"was trained on base fingerprint `{manifest.base_fingerprint}` but `{manifest.base_name}` now has "
            f"`{base.fingerprint}`; DPO must continue on the same base",
            where=f"`{parent.ref}`",
        )
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    try:
        model = PeftModel.from_pretrained(
            base.model, str(parent.path), adapter_name=_POLICY_ADAPTER, is_trainable=True
        )
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"peft could not load the adapter: {exc}", where=f"`{parent.ref}`"
        ) from exc
    lora = model.peft_config[_POLICY_ADAPTER]

    run_dir = (
        Path(config.output_dir)
        if config.output_dir is not None
        else loragraph_home() / "runs" / f"{parent.name}-dpo"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dpo-", dir=run_dir))
    try:
        from datasets import Dataset

        use_cpu = not torch.cuda.is_available()
        args = DPOConfig(
            output_dir=str(scratch / "trainer"),
            use_cpu=use_cpu,
            bf16=False,
            learning_rate=config.learning_rate,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps or -1,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            warmup_steps=config.warmup_ratio,
            lr_scheduler_type="linear",
            beta=config.beta,
            loss_type=config.loss_types(),
            loss_weights=[1.0, config.sft_weight] if config.sft_weight > 0 else None,
            max_length=config.max_length,
            seed=config.seed,
            data_seed=config.seed,
            activation_checkpointing=False,  # 135M params: memory is no issue, speed is
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list([p.as_trl_row() for p in train_pairs]),
            processing_class=base.tokenizer,
        )
        from transformers import PrinterCallback, TrainerCallback

        class _Progress(TrainerCallback):  # trainer logs go to `progress`, never to stdout
            def on_log(
                self,
                args: Any,
                state: Any,
                control: Any,
                logs: dict[str, Any] | None = None,
                **_: Any,
            ) -> None:
                if logs and "loss" in logs:
                    say(
                        f"step {state.global_step}/{state.max_steps} loss {float(logs['loss']):.4f} "
                        f"reward accuracy {float(logs.get('rewards/accuracies', math.nan)):.2f} "
                        f"margin {float(logs.get('rewards/margins', math.nan)):.3f}"
                    )

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_Progress())
        if _REF_ADAPTER not in model.peft_config:
            raise ModelLoadError(
                f"TRL did not add the frozen `{_REF_ADAPTER}` copy of the parent adapter; the DPO reference would be wrong",
                where=f"`{parent.ref}`",
            )
        # see the module doc, step 4: train in fp32, starting exactly from the parent's weights
        # (TRL copied them into "ref" before rounding "default" to bf16)
        for name, param in model.named_parameters():
            if param.requires_grad:
                ref_name = name.replace(f".{_POLICY_ADAPTER}.", f".{_REF_ADAPTER}.")
                param.data = model.get_parameter(ref_name).data.detach().float().clone()
        n_train = len(trainer.train_dataset)
        if n_train == 0:
            raise DataError(
                f"no training pair has a prompt shorter than `max_length` {config.max_length} tokens",
                where=data.name,
            )
        say(
            f"DPO on {n_train} pairs of `{data.name}` (reference: `{parent.ref}`), beta {config.beta}, lr {config.learning_rate}"
        )
        started = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - started
        say(f"trained in {train_seconds:.0f}s, loss {result.training_loss:.4f}")

        # -------------------------------------------------------- evaluate
        model.eval()
        _allow_inference_repack(model)
        metrics: dict[str, float] = {
            "train_pairs": float(n_train),
            "train_loss": float(result.training_loss),
            "train_seconds": round(train_seconds, 1),
            "eval_pairs": float(len(eval_pairs)),
        }
        kw: dict[str, Any] = {
            "tokenizer": base.tokenizer,
            "beta": config.beta,
            "max_length": config.max_length,
            "batch_size": config.eval_batch_size,
        }
        say(f"preference accuracy on {len(eval_pairs)} {eval_source} pairs")
        logps: dict[str | None, tuple[list[float | None], list[float | None]]] = {}
        for label, name in (
            ("base", None),
            (f"`{parent.ref}`", _REF_ADAPTER),
            ("DPO", _POLICY_ADAPTER),
        ):
            t0 = time.perf_counter()
            logps[name] = response_logps(
                model,
                base.tokenizer,
                eval_pairs,
                adapter=name,
                max_length=config.max_length,
                batch_size=config.eval_batch_size,
            )
            say(f"log-probs under {label}: {time.perf_counter() - t0:.0f}s")
        base_lp, parent_lp, new_lp = logps[None], logps[_REF_ADAPTER], logps[_POLICY_ADAPTER]
        before = preference_accuracy(
            model,
            _REF_ADAPTER,
            eval_pairs,
            reference=None,
            adapter_logps=parent_lp,
            reference_logps=base_lp,
            **kw,
        )
        after = preference_accuracy(
            model,
            _POLICY_ADAPTER,
            eval_pairs,
            reference=None,
            adapter_logps=new_lp,
            reference_logps=base_lp,
            **kw,
        )
        vs_parent = preference_accuracy(
            model,
            _POLICY_ADAPTER,
            eval_pairs,
            reference=_REF_ADAPTER,
            adapter_logps=new_lp,
            reference_logps=parent_lp,
            **kw,
        )
        if after.pairs == 0:
            raise DataError(
                f"no evaluation pair has a prompt shorter than `max_length` {config.max_length} tokens",
                where=eval_data.name if eval_data is not None else data.name,
            )
        for when, res in (("before", before), ("after", after), ("vs_parent", vs_parent)):
            metrics[f"preference_accuracy_{when}"] = res.accuracy
            metrics[f"preference_margin_{when}"] = res.mean_margin
        say(
            f"preference accuracy vs base: {before.accuracy:.3f} (`{parent.ref}`) -> {after.accuracy:.3f} (DPO); "
            f"DPO vs `{parent.ref}`: {vs_parent.accuracy:.3f}"
        )
        if test_examples:
            from loragraph.training.metrics import load_metric

            chats = [chat_messages(prompt, manifest.system, dict(ex.input)) for ex in test_examples]
            refs = [ex.target for ex in test_examples]
            rouge = load_metric("rouge")
            for label, adapter in (("before", _REF_ADAPTER), ("after", _POLICY_ADAPTER)):
                say(f"ROUGE-L {label}: decoding {len(chats)} test examples")
                preds = generate_replies(
                    model,
                    base.tokenizer,
                    chats,
                    adapter=adapter,
                    max_new_tokens=config.max_new_tokens,
                    batch_size=config.eval_batch_size,
                )
                scores = rouge.compute(predictions=preds, references=refs)
                metrics[f"rougeL_{label}"] = float(scores["rougeL"])
                metrics[f"rouge1_{label}"] = float(scores["rouge1"])
            metrics["test_examples"] = float(len(chats))
        reasons = promotion_gate(metrics, config)
        metrics["promotion_gate_passed"] = 0.0 if reasons else 1.0

        # -------------------------------------------------------- publish
        staged = scratch / "staged"
        with keep_cpu_packed_4bit(model):  # saving lists the state: keep repacked 4-bit weights intact
            model.save_pretrained(
                str(staged), selected_adapters=[_POLICY_ADAPTER], safe_serialization=True
            )
        for extra in staged.iterdir():
            if extra.name not in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                extra.unlink()
        hyper = {
            **config.hyperparameters(),
            "lora": {
                "r": int(lora.r),
                "alpha": int(lora.lora_alpha),
                "dropout": float(lora.lora_dropout),
                "target_modules": sorted(lora.target_modules) if lora.target_modules else [],
            },
            "eval_source": eval_source,
            "pairs_file": pairs_path.name,
        }
        version = registry.publish(
            parent.name,
            staged,
            {
                "kind": "generate",
                "prompt": prompt,
                "system": manifest.system,
                "base_name": manifest.base_name,
                "base_fingerprint": base.fingerprint,
                "quantization": manifest.quantization,
                "data_hash": "sha256:" + data.data_hash,
                "hyperparameters": json.loads(json.dumps(hyper, default=str)),
                "metrics": metrics,
                "parent": parent.version,
                "method": "dpo",
            },
            promote=False,
        )
        say(f"published `{version.ref}` (parent `{parent.ref}`)")
        if config.promote == "if_better":
            if reasons:
                say("not promoted: " + "; ".join(reasons))
            else:
                registry.promote(version.name, version.version)
                say(f"promoted `{version.ref}`")
        return version
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty
