"""Train one adapter from its config and publish it as a new registry version.

``train(config)`` loads and validates the data, loads the base in the config's
quantization with exact gradients (``load_base(spec, trainable=True)``), runs the trainer
of the config's kind (``classify.py``, ``tag.py``, ``generate.py``), evaluates on the test
split, stages the PEFT folder (+ ``head.safetensors``) and publishes it with
``Registry.publish``. Only that adapter's folder in the registry changes.

This module also holds the few pieces the classify and tag trainers share: seeding,
adding the LoRA, the per-epoch checkpoint (LoRA + head + optimizer + scheduler + RNG +
epoch, so an interrupted run resumes), and the shared epoch loop over a head.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loragraph.adapters.base import LoadedBase, load_base
from loragraph.errors import ConfigError
from loragraph.training.config import LoraSettings, TrainAttention, TrainConfig, load_train_config

__all__ = [
    "HEADLINE_METRIC",
    "EpochReport",
    "FrozenStates",
    "HeadTask",
    "PromotionDecision",
    "TrainOutcome",
    "add_lora",
    "find_config",
    "fit_head",
    "frozen_states",
    "fused_lora_forward",
    "load_splits",
    "promote_if_better",
    "publish_outcome",
    "seed_everything",
    "train",
    "training_compute",
]

EpochCallback = Callable[["EpochReport"], None]

_STATE_FILE = "trainer_state.json"
_LORA_FILE = "lora.safetensors"
_OPTIM_FILE = "optimizer.pt"
_FROZEN_STATES_BYTES = 2 * 2**30
"""At most this much memory for the cached output of the layers below the lowest LoRA layer."""


@dataclass
class EpochReport:
    """What one finished epoch produced (passed to ``on_epoch_end``)."""

    epoch: int
    train_loss: float
    validation_loss: float
    metrics: dict[str, float]
    improved: bool
    seconds: float
    examples_per_second: float


@dataclass
class TrainOutcome:
    """A trained adapter staged on disk, ready to publish."""

    staged_dir: Path
    labels: list[str]
    head: Any  # HeadConfig | None
    metrics: dict[str, float]
    threshold: float | None = None  # classify with `choose_threshold`: the chosen guardrail threshold
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


# --------------------------------------------------------------------------- small shared pieces


def seed_everything(seed: int) -> None:
    """Seed python, numpy (when present) and torch."""
    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def fused_lora_forward(layer: Any) -> Callable[..., torch.Tensor]:
    """A forward for one peft LoRA layer that adds the LoRA to the base output in one ``addmm``.

    The same function as peft's ``base(x) + scaling * B(A(x))``, without its defensive copy of
    the base output and its two passes over the full-width output (``* scaling``, ``+``): the
    scaling multiplies the small ``B`` instead (r x out), and ``addmm`` accumulates into the
    base output. Falls back to peft's own forward whenever the layer is not one plain LoRA on a
    linear layer with matching dtypes: LoRA dropout, a variant (DoRA), a LoRA bias, merged or
    disabled adapters, several active adapters, mixed-adapter batches, fp32 LoRA math on a
    bf16 base (``mixed_precision: false``).
    """
    original = type(layer).forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active = layer.active_adapters
        name = active[0] if len(active) == 1 else None
        if (
            args
            or kwargs
            or name not in layer.lora_A
            or layer.merged
            or layer.disable_adapters
            or name in getattr(layer, "lora_variant", {})
            or layer.lora_bias.get(name, False)
            or not isinstance(layer.lora_dropout[name], torch.nn.Identity)
            or not isinstance(layer.lora_A[name], torch.nn.Linear)
        ):
            return original(layer, x, *args, **kwargs)
        down, up = layer.lora_A[name].weight, layer.lora_B[name].weight
        if not torch.is_autocast_enabled(x.device.type) and not (x.dtype == down.dtype == up.dtype):
            return original(layer, x, *args, **kwargs)
        result = layer.base_layer(x)
        if not torch.is_autocast_enabled(x.device.type) and result.dtype != x.dtype:
            return original(layer, x, *args, **kwargs)
        low = torch.nn.functional.linear(x, down)
        width = result.shape[-1]
        fused = torch.addmm(result.reshape(-1, width), low.reshape(-1, low.shape[-1]), (up * layer.scaling[name]).t())
        return fused.view(result.shape)

    return forward


@contextlib.contextmanager
def training_compute(
    base: LoadedBase, *, attention: TrainAttention = "auto", mixed_precision: bool = True, fuse_lora: bool = True
) -> Iterator[None]:
    """The kernels of the training steps (a config's ``attention`` and ``mixed_precision``).

    Inside, the base runs the attention kernel the config asks for (``auto``: ``eager`` on
    CPU, where torch's flash-attention backward for these short, masked batches costs more
    than the whole eager attention) and, on an ``nf4`` or ``bf16`` base (bf16 compute), every forward pass runs
    under ``torch.autocast``: the LoRA matmuls read the fp32 weights as bf16, so peft does
    not cast each layer's activations to fp32 and back (the weights, their gradients and the
    optimizer stay fp32). With ``fuse_lora`` every LoRA layer runs ``fused_lora_forward`` (the
    same function in fewer passes over the activations). All three are restored on exit, so
    evaluation and serving keep the base's own kernel and precision and peft's forward.
    ``benchmarks/training.py`` measures the difference.
    """
    from peft.tuners.lora import LoraLayer

    model = base.model
    device = base.device.type
    before = getattr(model.config, "_attn_implementation", None)
    wanted = attention if attention != "auto" else ("eager" if device == "cpu" else before)
    switch = wanted is not None and before is not None and wanted != before
    autocast = mixed_precision and base.spec.quantization in ("nf4", "bf16")  # bf16 compute (int8 and fp32: as is)
    fused = [m for m in model.modules() if isinstance(m, LoraLayer) and "forward" not in vars(m)] if fuse_lora else []
    if switch:
        model.set_attn_implementation(wanted)
    for layer in fused:
        layer.forward = fused_lora_forward(layer)
    try:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            yield
    finally:
        for layer in fused:
            del layer.forward
        if switch:
            model.set_attn_implementation(before)


def add_lora(model: Any, settings: LoraSettings, *, seed: int, depth: int | None = None) -> Any:
    """Wrap ``model`` in a causal-LM ``PeftModel`` with a fresh LoRA named ``default``.

    Task type CAUSAL_LM keeps the adapter a standard PEFT causal-LM adapter that other
    engines load; the head (classify/tag) is a separate module saved beside it. With
    ``depth`` (a head that reads layer N) the LoRA goes on layers below N only, and
    ``settings.last_layers`` counts down from there.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    from loragraph.adapters.heads import check_depth

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in settings.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"`lora.target_modules` {missing} are not modules of the base; "
            f"linear modules there include {sorted(n for n in names if n.endswith('_proj'))}"
        )
    total = int(getattr(model.config, "num_hidden_layers", 0))
    check_depth(depth, total)
    top = depth if depth is not None else total
    if settings.last_layers is not None and settings.last_layers > top:
        limit = f"`depth` ({depth})" if depth is not None else f"the base's {total} layers"
        raise ConfigError(f"`lora.last_layers` must be at most {limit}, got {settings.last_layers}")
    layers: dict[str, Any] = {}
    if settings.last_layers is not None or top != total:
        first = top - settings.last_layers if settings.last_layers is not None else 0
        layers = {"layers_to_transform": list(range(first, top)), "layers_pattern": "layers"}
    torch.manual_seed(seed)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type=TaskType.CAUSAL_LM,
        bias="none",
        **layers,
    )
    return get_peft_model(model, config)


def load_splits(config: TrainConfig, *, cap_validation: bool = True) -> tuple[Any, Any, Any, list[str] | None]:
    """Load and validate train/validation/test (``DataError`` names file:line); no leakage.

    Returns ``(train, validation, test, labels)`` as lists of examples; validation is
    carved from train (the last 10% after a seeded shuffle) when the config has none; the
    train split is capped by ``max_train_examples``, validation by ``max_eval_examples``
    unless ``cap_validation`` is false; labels are the config's or inferred.
    """
    from loragraph.training.data import check_splits, load_examples

    kind = config.kind
    train_data = load_examples(config.data.train, kind, labels=config.labels)
    labels = config.labels or (train_data.labels() if kind != "generate" else None)
    val_data = load_examples(config.data.validation, kind, labels=labels, min_per_label=0) if config.data.validation else None
    test_data = load_examples(config.data.test, kind, labels=labels, min_per_label=0) if config.data.test else None
    check_splits(train_data, val_data, test_data)
    rng = random.Random(config.seed)
    train = list(train_data.examples)
    if val_data is None:
        rng.shuffle(train)
        n_val = max(1, len(train) // 10)
        if len(train) - n_val < 1:
            raise ConfigError("`data.train` has too few examples to hold out a validation split; add `data.validation`")
        train, validation = train[:-n_val], train[-n_val:]
    else:
        validation = list(val_data.examples)
    if config.max_train_examples is not None and len(train) > config.max_train_examples:
        train = rng.sample(train, config.max_train_examples)
    test = list(test_data.examples) if test_data is not None else None
    if cap_validation and config.max_eval_examples is not None:
        validation = validation[: config.max_eval_examples]
    max_test = config.max_test_examples or config.max_eval_examples
    if max_test is not None and test is not None:
        test = test[:max_test]
    if kind == "tag" and labels is not None and not labels:
        raise ConfigError("`labels` could not be inferred: the training data has no entities; list the entity types")
    if kind == "classify" and labels is not None and len(labels) < 2:
        raise ConfigError(f"`labels` must list at least 2 labels, the training data has {labels}", where=str(config.data.train))
    return train, validation, test, labels


def _batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within windows of 8 batches, shuffle batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 8
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


@dataclass
class FrozenStates:
    """The residual stream after the body's first ``layers`` layers, per training example.

    Nothing below the lowest LoRA layer trains, so its output for an example never changes:
    ``fit_head`` computes it once (``layer_states``) and every step runs only the layers
    from ``layers`` up (``body_hidden_states(..., states=..., first_layer=layers)``).
    ``states[i]`` holds example ``i``'s real tokens, ``[T_i, H]``.
    """

    layers: int
    states: list[torch.Tensor]

    def batch(self, rows: Sequence[int], width: int) -> torch.Tensor:
        """Rows ``rows`` left-padded with zeros to ``width`` tokens, as ``encode`` pads the batch."""
        first = self.states[rows[0]]
        out = first.new_zeros(len(rows), width, first.shape[-1])
        for row, i in enumerate(rows):
            tokens = self.states[i]
            if tokens.shape[0] > width:
                raise ConfigError(f"cached example {i} has {tokens.shape[0]} tokens, more than its batch's {width}")
            out[row, width - tokens.shape[0] :] = tokens
        return out


def frozen_states(
    config: TrainConfig, base: LoadedBase, model: Any, texts: Sequence[str], lengths: Sequence[int], *, depth: int | None
) -> FrozenStates | None:
    """``FrozenStates`` for ``texts`` when layers below the lowest LoRA layer (``lora.last_layers``) are frozen.

    None when LoRA starts at layer 0, or when the cache would exceed ``_FROZEN_STATES_BYTES``
    (then every step runs the whole body, as without the cache).
    """
    from loragraph.adapters.heads import encode, first_trainable_layer, layer_states, length_batches

    top = depth if depth is not None else int(base.model.config.num_hidden_layers)
    layers = min(first_trainable_layer(model), top - 1)
    if layers <= 0:
        return None
    size = sum(lengths) * base.hidden_size * torch.finfo(base.compute_dtype).bits // 8
    if size > _FROZEN_STATES_BYTES:
        print(
            f"{config.adapter}: layers 0-{layers - 1} carry no LoRA, but their output for {len(texts)} texts "
            f"({size / 2**20:.0f} MB) is over {_FROZEN_STATES_BYTES / 2**20:.0f} MB: every step runs them",
            file=sys.stderr,
        )
        return None
    states: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    bar = _progress(len(texts), f"{config.adapter}: layers 0-{layers - 1} (no LoRA), once", unit="text")
    was_training = model.training
    model.eval()
    with torch.no_grad(), training_compute(base, attention=config.attention, mixed_precision=config.mixed_precision):
        for rows in length_batches(texts, 32):
            enc = encode(base.tokenizer, [texts[i] for i in rows], config.max_length)
            out = layer_states(model, enc["input_ids"], enc["attention_mask"], layers=layers)
            for row, i in enumerate(rows):
                real = int(enc["attention_mask"][row].sum())
                states[i] = out[row, out.shape[1] - real :].clone()
            bar.update(len(rows))
    bar.close()
    model.train(was_training)
    print(
        f"{config.adapter}: layers 0-{layers - 1} carry no LoRA: their output for the {len(texts)} training texts "
        f"is computed once ({size / 2**20:.0f} MB) and each step runs layers {layers}-{top - 1}",
        file=sys.stderr,
    )
    return FrozenStates(layers=layers, states=states)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(total: int, desc: str, unit: str = "batch") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=10.0, file=sys.stderr)


# --------------------------------------------------------------------------- checkpoints


def _lora_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu").clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def _set_lora_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"checkpoint LoRA does not fit the model: unexpected keys {unexpected[:3]}")


def _save_weights(folder: Path, model: Any, head: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    from loragraph.adapters.heads import save_head

    folder.mkdir(parents=True, exist_ok=True)
    save_file(_lora_state(model), str(folder / _LORA_FILE))
    save_head(head, folder)  # type: ignore[arg-type]


def _load_weights(folder: Path, model: Any, head: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    from loragraph.adapters.heads import HEAD_FILE

    _set_lora_state(model, load_file(str(folder / _LORA_FILE)))
    head.load_state_dict(load_file(str(folder / HEAD_FILE)), strict=True)


def _latest_checkpoint(run: Path) -> Path | None:
    found = []
    for path in run.glob("epoch-*"):
        state = path / _STATE_FILE
        if state.is_file():
            with contextlib.suppress(ValueError, KeyError, OSError):
                found.append((int(json.loads(state.read_text())["epoch"]), path))
    return max(found)[1] if found else None


def _write_checkpoint(
    run: Path,
    epoch: int,
    model: Any,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> None:
    """Write ``run/epoch-N`` atomically (temp folder + rename), then drop older epochs."""
    tmp = run / f".tmp-epoch-{epoch}"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_weights(tmp, model, head)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()},
        tmp / _OPTIM_FILE,
    )
    (tmp / _STATE_FILE).write_text(json.dumps({**state, "epoch": epoch}, indent=2))
    final = run / f"epoch-{epoch}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in run.glob("epoch-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- the head loop


@dataclass
class HeadTask:
    """What differs between the classify and the tag trainer (the loop is shared).

    ``targets(batch_examples, encoding)`` -> target tensor; ``loss(logits, targets)`` -> loss;
    ``evaluate(model, head, examples)`` -> metrics (higher ``key`` is better).
    """

    texts: Callable[[Sequence[Any]], list[str]]
    targets: Callable[[Sequence[Any], Any], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[[Any, torch.nn.Module, Sequence[Any]], dict[str, float]]
    key: str


def fit_head(
    config: TrainConfig,
    base: LoadedBase,
    model: Any,
    head: torch.nn.Module,
    task: HeadTask,
    train_examples: Sequence[Any],
    validation_examples: Sequence[Any],
    *,
    run: Path,
    resume: bool,
    on_epoch_end: EpochCallback | None = None,
) -> tuple[list[dict[str, Any]], int, bool]:
    """Train LoRA + head with AdamW (linear warmup/decay), checkpoint every epoch, stop early.

    Returns ``(history, resumed_from_epoch, stopped_early)``. At the end ``model`` and
    ``head`` hold the weights of the best validation epoch.
    """
    from loragraph.adapters.heads import body_hidden_states, encode

    tokenizer = base.tokenizer
    texts = task.texts(train_examples)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]]
    steps_per_epoch = math.ceil(len(train_examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    lora_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": config.learning_rate},
            {"params": list(head.parameters()), "lr": config.effective_head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    scheduler = _linear_schedule(optimizer, int(total * config.warmup_ratio), total)

    history: list[dict[str, Any]] = []
    best = -math.inf
    best_epoch = 0
    stale = 0
    start_epoch = 0
    run.mkdir(parents=True, exist_ok=True)
    latest = _latest_checkpoint(run) if resume else None
    if latest is not None:
        _load_weights(latest, model, head)
        saved = torch.load(latest / _OPTIM_FILE, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = json.loads((latest / _STATE_FILE).read_text())
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best, best_epoch, stale = float(state["best"]), int(state["best_epoch"]), int(state["stale"])
        print(f"resuming `{config.adapter}` from epoch {start_epoch} ({latest})", file=sys.stderr)
    elif not resume:
        for old in run.glob("epoch-*"):
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(run / "best", ignore_errors=True)

    stopped_early = False
    patience = config.early_stopping_patience
    if patience is not None and stale >= patience:
        stopped_early = True
    frozen = None  # built only when an epoch is left to run (a resumed run that had finished needs none)
    if not stopped_early and start_epoch < config.epochs:
        frozen = frozen_states(config, base, model, texts, lengths, depth=head.config.depth)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter()
        model.train()
        head.train()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        running, seen = 0.0, 0
        bar = _progress(steps_per_epoch, f"{config.adapter} epoch {epoch}/{config.epochs}")
        for batch_ids in _batches(lengths, config.batch_size, generator):
            batch = [train_examples[i] for i in batch_ids]
            enc = encode(tokenizer, task.texts(batch), config.max_length)
            with training_compute(base, attention=config.attention, mixed_precision=config.mixed_precision):
                if frozen is None:
                    hidden = body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=head.config.depth)
                else:
                    states = frozen.batch(batch_ids, enc["input_ids"].shape[1])
                    hidden = body_hidden_states(
                        model, None, enc["attention_mask"], states=states, first_layer=frozen.layers, depth=head.config.depth
                    )
            logits = head(hidden, enc["attention_mask"])
            loss = task.loss(logits, task.targets(batch, enc))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + list(head.parameters()), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += float(loss.detach()) * len(batch)
            seen += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        bar.close()
        train_seconds = time.perf_counter() - started
        metrics = task.evaluate(model, head, validation_examples)
        value = float(metrics[task.key])
        improved = value > best + 1e-9
        if improved:
            best, best_epoch, stale = value, epoch, 0
            shutil.rmtree(run / "best", ignore_errors=True)
            _save_weights(run / "best", model, head)
        else:
            stale += 1
        report = EpochReport(
            epoch=epoch,
            train_loss=running / max(seen, 1),
            validation_loss=float(metrics.get("loss", float("nan"))),
            metrics=metrics,
            improved=improved,
            seconds=time.perf_counter() - started,
            examples_per_second=seen / max(train_seconds, 1e-9),
        )
        history.append({**report.__dict__})
        print(
            f"{config.adapter} epoch {epoch}: train_loss {report.train_loss:.4f} "
            f"validation {task.key} {value:.4f}{' *' if improved else ''} ({report.seconds:.1f}s, "
            f"{report.examples_per_second:.1f} ex/s)",
            file=sys.stderr,
        )
        _write_checkpoint(
            run,
            epoch,
            model,
            head,
            optimizer,
            scheduler,
            {"history": history, "best": best, "best_epoch": best_epoch, "stale": stale},
        )
        if patience is not None and stale >= patience and epoch < config.epochs:
            stopped_early = True
            print(f"{config.adapter}: early stop after epoch {epoch} (best epoch {best_epoch})", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(report)
    if (run / "best").is_dir():
        _load_weights(run / "best", model, head)
    model.eval()
    head.eval()
    return history, start_epoch, stopped_early


# --------------------------------------------------------------------------- dispatch + publish


def find_config(name_or_path: str | Path) -> Path:
    """A YAML path as given, or ``examples/customer_service/train/<name>.yaml`` for a bare adapter name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / "examples" / "customer_service" / "train" / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"`{name_or_path}` is neither a YAML file nor a shipped adapter config "
        "(expected `examples/customer_service/train/<adapter>.yaml`)"
    )


def publish_outcome(config: TrainConfig, base: LoadedBase, outcome: TrainOutcome, *, registry: Any = None) -> Any:
    """Publish a staged adapter with its full manifest; returns the ``AdapterVersion``."""
    from loragraph.adapters.registry import Registry

    registry = registry or Registry()
    hyper = config.hyperparameters()
    hyper.update(
        {
            "epochs_trained": len(outcome.history),
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "stopped_early": outcome.stopped_early,
            "train_seconds": round(outcome.seconds, 1),
        }
    )
    fields = {
        "kind": config.kind,
        "labels": list(outcome.labels) if config.kind != "generate" else [],
        "head": outcome.head,
        "prompt": config.prompt,
        "system": config.system,
        "base_name": config.base.name,
        "base_fingerprint": base.fingerprint,
        "quantization": config.base.quantization,
        "data_hash": config.data_hash(),
        "hyperparameters": hyper,
        "metrics": outcome.metrics,
        "threshold": outcome.threshold,
        "parent": None,
        "method": config.method,
    }
    return registry.publish(config.adapter, outcome.staged_dir, fields)


def train(
    config: TrainConfig | str | Path,
    *,
    registry: Any = None,
    resume: bool = True,
    base: LoadedBase | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> Any:
    """Train the adapter of ``config`` and publish it; returns the new ``AdapterVersion``.

    ``resume=True`` continues the last checkpoint of the same config + data hash (an
    interrupted run); ``base`` reuses a base loaded with ``trainable=True`` (its LoRA is
    removed again afterwards, the base weights are never changed); ``on_epoch_end`` sees
    every finished epoch (raising there interrupts the run; its checkpoint stays).
    """
    if not isinstance(config, TrainConfig):
        config = load_train_config(find_config(config))
    started = time.perf_counter()
    # a guardrail's threshold (classify only) is chosen on the whole validation split, early stopping reads the capped one
    train_set, validation_set, test_set, labels = load_splits(config, cap_validation=config.choose_threshold is None)
    threshold_set = None
    if config.choose_threshold is not None:
        threshold_set, validation_set = validation_set, validation_set[: config.max_eval_examples]
    if base is None:
        base = load_base(config.base, trainable=True)
    elif base.spec.quantization != config.base.quantization:
        raise ConfigError(
            f"`base.quantization` is `{config.base.quantization}` but the given base is `{base.spec.quantization}`"
        )
    elif base.spec.quantization == "nf4" and not base.trainable:
        raise ConfigError(
            "the given `base` (nf4) was loaded for inference: train on `load_base(spec, trainable=True)` "
            "(the 4-bit inference kernel gives wrong LoRA gradients, see `make_trainable`)"
        )
    run = config.run_dir / config.run_hash()
    if config.kind == "classify":
        from loragraph.training.classify import train_classify

        outcome = train_classify(
            config, base, train_set, validation_set, test_set, labels or [],
            run=run, resume=resume, on_epoch_end=on_epoch_end, threshold_set=threshold_set,
        )
    elif config.kind == "tag":
        from loragraph.training.tag import train_tag

        outcome = train_tag(config, base, train_set, validation_set, test_set, labels or [], run=run, resume=resume, on_epoch_end=on_epoch_end)
    else:
        from loragraph.training.generate import train_generate

        outcome = train_generate(config, base, train_set, validation_set, test_set, run=run, resume=resume, on_epoch_end=on_epoch_end)
    outcome.seconds = time.perf_counter() - started
    version = publish_outcome(config, base, outcome, registry=registry)
    shutil.rmtree(run, ignore_errors=True)  # finished: nothing left to resume
    print(f"published {version.ref} ({outcome.seconds:.0f}s): {json.dumps(outcome.metrics)}", file=sys.stderr)
    return version


HEADLINE_METRIC: dict[str, str] = {"classify": "accuracy", "tag": "f1", "generate": "rougeL"}
"""The test metric ``promote_if_better`` compares, per stage kind."""


@dataclass
class PromotionDecision:
    """What ``promote_if_better`` did and why."""

    promoted: bool
    reason: str
    metric: str
    scores: dict[str, float] = field(default_factory=dict)  # `name@vN` -> score on the test split


def promote_if_better(version: Any, config: TrainConfig, *, registry: Any = None) -> PromotionDecision:
    """Promote a freshly trained ``version`` only when it beats the promoted one.

    Both versions are scored now, through one ``AdapterHost``, on ``config``'s test split
    (its first ``max_test_examples``) with the kind's ``HEADLINE_METRIC``, so the comparison
    uses the same data even when the promoted version was trained on other data. Strictly
    higher promotes; a tie keeps the promoted version.
    """
    from loragraph.adapters.base import BaseSpec
    from loragraph.adapters.host import AdapterHost
    from loragraph.adapters.registry import Registry
    from loragraph.training.evaluation import evaluate_adapter

    registry = registry or Registry()
    metric = HEADLINE_METRIC[config.kind]
    current = registry.promoted(version.name)
    if current.version == version.version:
        return PromotionDecision(True, f"`{version.ref}` is the first version: promoted when published", metric)
    if config.data.test is None:
        raise ConfigError("promoting `if_better` compares test scores: the config has no `data.test`")
    manifest = version.manifest
    host = AdapterHost(load_base(BaseSpec(name=manifest.base_name, quantization=manifest.quantization)), registry)
    scores = {
        v.ref: float(
            evaluate_adapter(
                v.ref, config.data.test, registry=registry, host=host, max_examples=config.max_test_examples, compare_base=False
            )["metrics"][metric]
        )
        for v in (current, version)
    }
    new, old = scores[version.ref], scores[current.ref]
    if new > old:
        registry.promote(version.name, version.version)
        return PromotionDecision(True, f"`{version.ref}` {metric} {new:.4f} > `{current.ref}` {old:.4f}: promoted", metric, scores)
    return PromotionDecision(
        False, f"`{version.ref}` {metric} {new:.4f} <= `{current.ref}` {old:.4f}: `{current.ref}` stays promoted", metric, scores
    )
