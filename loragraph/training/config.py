"""The training config of one adapter: a typed YAML file, one per stage adapter.

```yaml
adapter: intent
kind: classify
data: {train: data/intent/train.jsonl, validation: data/intent/validation.jsonl, test: data/intent/test.jsonl}
lora: {r: 8, alpha: 16}
epochs: 3
```

Data paths are relative to the YAML file. Every error names the YAML file and the field in
backticks: ``intent.yaml: `lora.r` must be >= 1, got 0``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loragraph.adapters.base import BaseSpec, loragraph_home
from loragraph.adapters.head_config import Lookahead, Pooling
from loragraph.errors import ConfigError

__all__ = [
    "DataPaths",
    "LoraSettings",
    "ThresholdChoice",
    "TrainAttention",
    "TrainConfig",
    "TrainKind",
    "config_error",
    "load_train_config",
]

TrainKind = Literal["classify", "tag", "generate"]
TrainAttention = Literal["auto", "eager", "sdpa"]

_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


class DataPaths(BaseModel):
    """Where the JSONL splits of one adapter live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: Path = Field(description="training split (JSONL); relative to the YAML file")
    validation: Path | None = Field(
        None,
        description="validation split used for early stopping and per-epoch metrics; "
        "when absent, the last 10% of `train` (after the seeded shuffle) is held out",
    )
    test: Path | None = Field(
        None, description="held-out test split evaluated after training; its metrics go into the manifest"
    )

    def files(self) -> list[Path]:
        """The split files that exist in this config, in a fixed order."""
        return [p for p in (self.train, self.validation, self.test) if p is not None]


class LoraSettings(BaseModel):
    """LoRA hyperparameters (the peft ``LoraConfig`` subset loragraph exposes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(8, ge=1, le=256, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (`lora_alpha`); the update is scaled by alpha/r")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the LoRA input; off by default: on CPU its mask (a random draw per input element "
        "of every LoRA layer) makes a classify or tag training step about 1.3x slower (`benchmarks/training.py`)",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the linear modules that get LoRA matrices (e.g. `q_proj`, `v_proj`, `up_proj`)",
    )
    last_layers: int | None = Field(
        None,
        ge=1,
        description="put LoRA only on the last N transformer layers (null: all layers); backpropagation then "
        "stops at the first adapted layer, and classify/tag trainers compute the layers below it once per "
        "example (kept in memory up to 2 GiB) instead of at every step, so training costs less",
    )


class ThresholdChoice(BaseModel):
    """How a classify adapter used as a guardrail chooses its threshold after training.

    On every row of the validation split: the flagged-probability threshold with the highest
    TPR whose false-positive rate stays within ``max_fpr`` (``guardrails.evaluate.choose_threshold``).
    The manifest stores it; a guardrail step or validator without its own ``threshold``
    uses it, so a retrained guardrail brings its own threshold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_fpr: float = Field(0.03, ge=0.0, lt=1.0, description="largest false-positive rate allowed on the validation split")
    flag_labels: list[str] | None = Field(
        None, description="labels that count as flagged; default: every label except `safe`"
    )


class TrainConfig(BaseModel):
    """Everything needed to train one adapter and publish it as a new version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(
        pattern=_NAME_PATTERN,
        description="adapter name in the registry (lowercase letters, digits, `_`, `-`), e.g. `intent`",
    )
    kind: TrainKind = Field(
        description="`classify` (one label per text), `tag` (entity spans) or `generate` (text from a prompt)"
    )
    data: DataPaths = Field(description="the JSONL splits; paths relative to the YAML file")
    base: BaseSpec = Field(
        default_factory=BaseSpec,
        description="the shared base and its quantization; `nf4` (default) trains QLoRA",
    )
    labels: list[str] | None = Field(
        None,
        description="classify: the class labels; tag: the entity types; inferred from the training data when absent "
        "(generate: must be absent)",
    )
    prompt: str | None = Field(
        None,
        description="generate: jinja template rendered on each example's `input` (e.g. `Summarise:\\n{{ text }}`); "
        "the adapter is served with the same template",
    )
    system: str | None = Field(None, description="generate: optional system message placed before the prompt")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA rank, alpha, dropout and target modules")
    epochs: int = Field(3, ge=1, le=100, description="passes over the training split")
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="peak learning rate of AdamW (linear warmup, linear decay)")
    head_learning_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="classify/tag: learning rate of the new head (default: 5x `learning_rate`)"
    )
    pooling: Pooling = Field(
        "last",
        description="classify: the head reads the last real token's hidden state (`last`), the mean "
        "over the real tokens (`mean`), or a mean weighted by a score per token the head learns "
        "(`attention`: starts as `mean`, learns which part of a message decides the label)",
    )
    lookahead: Lookahead = Field(
        0,
        description="tag: the head also reads the next N tokens' hidden states (right context a causal "
        "base lacks; 1 settles most span ends)",
    )
    depth: int | None = Field(
        None,
        ge=1,
        description="classify/tag: the head reads the hidden states after the base's first N layers (null: all); "
        "the layers above are never run, so a step costs about N / (the base's layers) of a full one, and "
        "serving the adapter too; LoRA goes on those N layers (`lora.last_layers` counts down from layer N)",
    )
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="fraction of the optimizer steps spent warming up")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    batch_size: int = Field(8, ge=1, le=1024, description="examples per optimizer step")
    max_length: int = Field(256, ge=8, le=32768, description="maximum tokens per example (longer inputs are truncated)")
    mixed_precision: bool = Field(
        True,
        description="run each training step's forward pass under `torch.autocast` in the base's compute dtype "
        "(bf16), with the LoRA weights, head and optimizer kept in fp32; off, peft casts every LoRA layer's input "
        "and output between bf16 and fp32 (slower steps, `benchmarks/training.py`). For `nf4` and `bf16` bases",
    )
    attention: TrainAttention = Field(
        "auto",
        description="attention kernel of the training steps: `eager`, `sdpa`, or `auto` (`eager` on CPU, where "
        "torch's flash-attention backward is slow on these short batches; the base's own elsewhere). "
        "Evaluation and serving keep the base's own kernel",
    )
    seed: int = Field(0, description="seed of shuffling, dropout and head initialisation")
    early_stopping_patience: int | None = Field(
        2,
        ge=1,
        description="stop after this many epochs without improvement of the validation metric; null disables it",
    )
    max_train_examples: int | None = Field(
        None, ge=1, description="use at most this many training examples (seeded sample); null uses all"
    )
    max_eval_examples: int | None = Field(
        None,
        ge=1,
        description="evaluate at most this many validation/test examples (the first ones); null uses all. "
        "Useful for generate, where evaluation decodes",
    )
    max_test_examples: int | None = Field(
        None,
        ge=1,
        description="evaluate at most this many test examples (the first ones); null: as `max_eval_examples`",
    )
    max_new_tokens: int = Field(96, ge=1, le=4096, description="generate: tokens decoded per example when evaluating")
    choose_threshold: ThresholdChoice | None = Field(
        None,
        description="classify used as a guardrail: choose its threshold on the whole validation split after "
        "training and store it with the version (`max_fpr`, `flag_labels`)",
    )
    output_dir: Path | None = Field(
        None,
        description="where checkpoints and the staged adapter go; default `$LORAGRAPH_HOME/runs/<adapter>`",
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        seen: set[str] = set()
        dupes = [x for x in value if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
        if dupes:
            raise ValueError(f"must not repeat labels, repeated: {sorted(set(dupes))}")
        if any(not x.strip() for x in value):
            raise ValueError("must not contain empty labels")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> TrainConfig:
        if self.kind != "classify" and self.pooling != "last":
            raise ValueError(f"`pooling` is only for `kind: classify`, not `kind: {self.kind}`")
        if self.kind != "tag" and self.lookahead:
            raise ValueError(f"`lookahead` is only for `kind: tag`, not `kind: {self.kind}`")
        if self.kind == "generate" and self.depth is not None:
            raise ValueError("`depth` is only for `kind: classify` and `kind: tag` (a generate stage decodes through every layer)")
        if self.depth is not None and self.lora.last_layers is not None and self.lora.last_layers > self.depth:
            raise ValueError(f"`lora.last_layers` ({self.lora.last_layers}) must be at most `depth` ({self.depth})")
        if self.kind != "classify" and self.choose_threshold is not None:
            raise ValueError(f"`choose_threshold` is only for `kind: classify`, not `kind: {self.kind}`")
        if self.choose_threshold is not None and self.choose_threshold.flag_labels is not None and self.labels is not None:
            unknown = sorted(set(self.choose_threshold.flag_labels) - set(self.labels))
            if unknown:
                raise ValueError(f"`choose_threshold.flag_labels` {unknown} are not in `labels` {self.labels}")
        if self.kind == "generate":
            if not self.prompt:
                raise ValueError("`prompt` is required for `kind: generate` (a jinja template over the example `input`)")
            if self.labels:
                raise ValueError("`labels` must be absent for `kind: generate`")
            from loragraph.pipelines.templates import template_variables

            template_variables(self.prompt)  # syntax check, raises ConfigError naming `prompt`
        else:
            if self.prompt is not None or self.system is not None:
                raise ValueError(f"`prompt` and `system` are only for `kind: generate`, not `kind: {self.kind}`")
            if self.kind == "classify" and self.labels is not None and len(self.labels) < 2:
                raise ValueError(f"`labels` must list at least 2 labels, got {len(self.labels)}")
            if self.kind == "tag" and self.labels is not None and len(self.labels) < 1:
                raise ValueError("`labels` must list at least 1 entity type, got 0")
        return self

    # ------------------------------------------------------------------ derived

    @property
    def run_dir(self) -> Path:
        """Folder of this adapter's checkpoints and staging area."""
        return Path(self.output_dir) if self.output_dir is not None else loragraph_home() / "runs" / self.adapter

    @property
    def method(self) -> str:
        """The manifest `method`: `classify`, `tag` or `sft`."""
        return "sft" if self.kind == "generate" else self.kind

    def hyperparameters(self) -> dict[str, Any]:
        """What the manifest records as hyperparameters (everything that shapes the weights)."""
        return {
            "lora": self.lora.model_dump(),
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "head_learning_rate": self.effective_head_learning_rate,
            "pooling": self.pooling,
            "lookahead": self.lookahead,
            "depth": self.depth,
            "warmup_ratio": self.warmup_ratio,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "mixed_precision": self.mixed_precision,
            "attention": self.attention,
            "seed": self.seed,
            "early_stopping_patience": self.early_stopping_patience,
            "max_train_examples": self.max_train_examples,
            **({"max_new_tokens": self.max_new_tokens} if self.kind == "generate" else {}),
            **({"choose_threshold": self.choose_threshold.model_dump()} if self.choose_threshold else {}),
        }

    @property
    def effective_head_learning_rate(self) -> float:
        return self.head_learning_rate if self.head_learning_rate is not None else self.learning_rate * 5

    def data_hash(self) -> str:
        """sha256 over the data files (split name, then content), ``sha256:<hex>``."""
        digest = hashlib.sha256()
        for split in ("train", "validation", "test"):
            path = getattr(self.data, split)
            if path is None:
                continue
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"`data.{split}` file does not exist", where=str(p))
            digest.update(split.encode())
            with open(p, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()

    def run_hash(self) -> str:
        """Identifies config + data: a checkpoint is resumed only by a run with the same hash."""
        cfg = self.model_dump(mode="json", exclude={"output_dir", "max_test_examples", "max_new_tokens", "choose_threshold"})
        blob = json.dumps({"config": cfg, "data": self.data_hash()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def config_error(exc: ValidationError, *, where: str | None) -> ConfigError:
    """Turn a pydantic ValidationError into a ConfigError naming the first bad field."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"`{loc}` is not a known field")
        elif err["type"] == "missing":
            problems.append(f"`{loc}` is required")
        elif loc:
            problems.append(f"`{loc}` {msg}, got {err.get('input')!r}")
        else:
            problems.append(msg)
    return ConfigError("; ".join(problems), where=where)


def _resolve(base_dir: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        return str((base_dir / value).resolve())
    if isinstance(value, str):
        return str(Path(value).expanduser())
    return value


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML; data paths and `output_dir` are resolved relative to it."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError("training config file does not exist", where=where)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"{path}:{mark.line + 1}"
        raise ConfigError(f"is not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a YAML mapping of fields, got {type(raw).__name__}", where=where)
    base_dir = path.resolve().parent
    data = raw.get("data")
    if isinstance(data, dict):
        raw["data"] = {k: _resolve(base_dir, v) for k, v in data.items()}
    if "output_dir" in raw:
        raw["output_dir"] = _resolve(base_dir, raw["output_dir"])
    base = raw.get("base")
    if isinstance(base, dict) and isinstance(base.get("name"), str) and base["name"].startswith((".", "~")):
        raw["base"] = {**base, "name": _resolve(base_dir, base["name"])}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, where=where) from exc
    except ConfigError as exc:  # a bad prompt template
        raise ConfigError(exc.message, where=where) from exc
