"""The shape of a classify or tag head: light (no torch), read by the registry and the
pipelines room; ``loragraph.adapters.heads`` builds the modules from it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["HEAD_FILE", "HeadConfig", "Lookahead", "Pooling"]

HEAD_FILE = "head.safetensors"
"""File name of a head inside an adapter folder."""

Pooling = Literal["last", "mean", "attention"]
"""What a classify head reads: the last real token's hidden state, the mean over the real tokens,
or an attention-weighted mean whose per-token weights the head learns."""

Lookahead = Annotated[int, Field(ge=0, le=4)]
"""How many following tokens' hidden states a tag head reads beside each token's own."""

_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")


class HeadConfig(BaseModel):
    """Shape of a classify or tag head; stored in the manifest and in ``head.safetensors``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["classify", "tag"] = Field(
        description="`classify`: one label per text; `tag`: a BIO tag per token (entities)."
    )
    labels: list[str] = Field(
        description="classify: the class labels, in logit order; tag: the entity types (BIO tags derive from them)."
    )
    hidden_size: int = Field(gt=0, description="hidden size of the base the head reads (`base.hidden_size`).")
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="dropout before the classify `Linear` (training only; unused by tag heads)."
    )
    pooling: Pooling = Field(
        "last",
        description="classify: what the `Linear` reads: the hidden state of the last real token (`last`), "
        "the mean over the real tokens (`mean`), or a mean weighted by a learned score per token "
        "(`attention`); unused by tag heads.",
    )
    lookahead: Lookahead = Field(
        0,
        description="tag: also read the hidden states of the next N tokens (a causal base sees no right "
        "context; one token of it settles where a span ends); unused by classify heads.",
    )
    depth: int | None = Field(
        None,
        ge=1,
        description="read the hidden states after the base's first N layers (then its final norm) instead of "
        "after all of them (null); the layers above are never run for this head, in training or serving.",
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        seen: set[str] = set()
        for label in labels:
            if not label or label != label.strip():
                raise ValueError(f"`labels` entries must be non-empty without surrounding spaces, got {label!r}")
            if label in seen:
                raise ValueError(f"`labels` must be unique, {label!r} appears twice")
            seen.add(label)
        return labels

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> HeadConfig:
        if self.kind == "classify" and self.lookahead:
            raise ValueError("`lookahead` is only for tag heads")
        if self.kind == "classify" and len(self.labels) < 2:
            raise ValueError(f"`labels` must list at least 2 labels for a classify head, got {len(self.labels)}")
        if self.kind == "tag":
            if not self.labels:
                raise ValueError("`labels` must list at least 1 entity type for a tag head, got 0")
            for label in self.labels:
                if not _TYPE_RE.match(label) or label == "O":
                    raise ValueError(
                        f"`labels` entity type {label!r} must be a word like `EMAIL` or `ORDER_ID` (not `O`)"
                    )
        return self

    @property
    def tags(self) -> list[str]:
        """BIO tags of a tag head: ``["O", "B-T1", "I-T1", "B-T2", ...]`` (empty for classify)."""
        if self.kind != "tag":
            return []
        out = ["O"]
        for label in self.labels:
            out += [f"B-{label}", f"I-{label}"]
        return out

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: number of labels (classify) or BIO tags (tag)."""
        return len(self.labels) if self.kind == "classify" else len(self.tags)
