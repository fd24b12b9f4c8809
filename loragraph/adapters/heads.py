"""Small task heads on the transformer body, and the helpers trainers and the host share.

A classify or tag adapter is a causal-LM LoRA (PEFT format) plus its own small head,
stored beside it as ``head.safetensors``. The head reads the last hidden state of the
transformer body (no ``lm_head``, no decoding):

- ``ClassifyHead``: dropout + ``Linear`` on the pooled hidden state (last real token, mean,
  or a learned attention-weighted mean);
- ``TagHead``: ``Linear`` on every token's hidden state -> BIO tag logits.

Heads always compute in fp32, whatever the base's compute dtype.

The helpers below are used by BOTH the trainers and ``AdapterHost``, so an adapter sees
at run time exactly the inputs it was trained on:

- ``encode(tokenizer, texts, max_length)``: left-padded batch with char offsets;
- ``body_hidden_states(model, input_ids, attention_mask)``: ``[B, T, H]`` from the body,
  position ids from the mask (left padding), on a ``PeftModel`` (active LoRA, or a mixed
  batch with ``adapter_names=``) or a plain model; from ``layer_states(...)`` (the residual
  stream after the first N layers, which a trainer caches when nothing below N trains) with
  ``states=``, ``first_layer=N``;
- ``pool_last(hidden, mask)``: the hidden state of each row's last real token;
- ``pool_mean(hidden, mask)`` / ``pool_attention(hidden, weights)``: the (weighted) mean
  over each row's real tokens (``attention_weights(scores, mask)``: softmax over them);
- ``spans_to_tag_ids`` / ``tag_ids_to_spans``: char spans <-> BIO tag ids per token.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loragraph.adapters.head_config import HEAD_FILE, HeadConfig
from loragraph.errors import ConfigError, InputError, IntegrityError

__all__ = [
    "HEAD_FILE",
    "IGNORE_INDEX",
    "ClassifyHead",
    "Head",
    "HeadConfig",
    "TagHead",
    "attention_weights",
    "body_hidden_states",
    "build_head",
    "encode",
    "first_trainable_layer",
    "layer_states",
    "length_batches",
    "load_head",
    "pool_attention",
    "pool_last",
    "pool_mean",
    "position_ids_from_mask",
    "save_head",
    "spans_to_tag_ids",
    "tag_ids_to_spans",
]

IGNORE_INDEX = -100
"""Tag id of special and padding tokens (ignored by the loss, skipped when decoding)."""

# --------------------------------------------------------------------------- modules


class ClassifyHead(nn.Module):
    """Dropout + ``Linear`` on the pooled hidden state (``config.pooling``); fp32.

    ``attention`` pooling adds ``attend``, a ``Linear(hidden, 1)`` scoring each token; the
    softmax of the scores over the real tokens weights the mean. It starts at zero, so a
    new head pools exactly like ``mean`` and learns which tokens decide the label (in a
    message with two asks, the tokens of the main one)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        if config.kind != "classify":
            raise ConfigError(f"`head.kind` must be `classify` for a ClassifyHead, got `{config.kind}`")
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.linear = nn.Linear(config.hidden_size, config.num_outputs, dtype=torch.float32)
        self.attend: nn.Linear | None = None
        if config.pooling == "attention":
            self.attend = nn.Linear(config.hidden_size, 1, dtype=torch.float32)
            nn.init.zeros_(self.attend.weight)
            nn.init.zeros_(self.attend.bias)

    def token_weights(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``attention`` pooling: how much each token counts, ``[B, T]`` (rows sum to 1 over real tokens)."""
        if self.attend is None:
            raise ConfigError(f"`token_weights` needs `pooling: attention`, this head pools by `{self.config.pooling}`")
        # scaled like attention logits: hidden norms of a causal LM run to ~50, and an
        # unscaled score would turn one-hot after a few steps at the head's learning rate
        scores = self.attend(hidden.to(torch.float32)).squeeze(-1) / self.config.hidden_size**0.5
        return attention_weights(scores, attention_mask)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, H]``, ``attention_mask [B, T]`` -> logits ``[B, labels]``."""
        if self.attend is not None:
            pooled = pool_attention(hidden, self.token_weights(hidden, attention_mask))
        else:
            pool = pool_mean if self.config.pooling == "mean" else pool_last
            pooled = pool(hidden, attention_mask)
        return self.linear(self.dropout(pooled.to(self.linear.weight.dtype)))


class TagHead(nn.Module):
    """``Linear`` on each token's hidden state (and the next ``lookahead`` ones) -> BIO tag logits; fp32."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        if config.kind != "tag":
            raise ConfigError(f"`head.kind` must be `tag` for a TagHead, got `{config.kind}`")
        self.config = config
        self.linear = nn.Linear(config.hidden_size * (1 + config.lookahead), config.num_outputs, dtype=torch.float32)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden [B, T, H]`` -> logits ``[B, T, tags]`` (decode skips pads).

        With ``lookahead`` N, token t reads its own hidden state and those of tokens
        t+1..t+N (zeros past the end and on padding)."""
        hidden = hidden.to(self.linear.weight.dtype)
        if self.config.lookahead:
            if attention_mask is not None:
                hidden = hidden * attention_mask.to(hidden.dtype).unsqueeze(-1)
            parts = [hidden]
            for k in range(1, self.config.lookahead + 1):
                parts.append(torch.nn.functional.pad(hidden[:, k:], (0, 0, 0, k)))
            hidden = torch.cat(parts, dim=-1)
        return self.linear(hidden)


Head = ClassifyHead | TagHead


def build_head(config: HeadConfig) -> Head:
    """A freshly initialised head for ``config`` (fp32)."""
    return ClassifyHead(config) if config.kind == "classify" else TagHead(config)


def save_head(head: Head, folder: str | Path) -> Path:
    """Write ``head`` to ``folder/head.safetensors`` (config in the metadata); return the file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / HEAD_FILE
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(target), metadata={"loragraph_head": head.config.model_dump_json()})
    return target


def load_head(path: str | Path, config: HeadConfig | None = None) -> Head:
    """Load a head from ``head.safetensors`` (or the folder holding it); only safetensors.

    When ``config`` is given (the manifest's), the file's own config must equal it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / HEAD_FILE
    if path.suffix != ".safetensors":
        raise IntegrityError(f"heads load only from `.safetensors`, got `{path.name}`", where=str(path))
    if not path.is_file():
        raise IntegrityError(f"`{HEAD_FILE}` is missing", where=str(path.parent))
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    stored: HeadConfig | None = None
    if "loragraph_head" in meta:
        try:
            stored = HeadConfig.model_validate(json.loads(meta["loragraph_head"]))
        except ValueError as exc:
            raise IntegrityError(f"head metadata is not a valid HeadConfig: {exc}", where=str(path)) from exc
    if stored is not None and config is not None and stored != config:
        raise IntegrityError(
            f"head config in the file ({stored.model_dump()}) differs from the manifest's `head` ({config.model_dump()})",
            where=str(path),
        )
    cfg = config or stored
    if cfg is None:
        raise IntegrityError("head file carries no config and none was given", where=str(path))
    head = build_head(cfg)
    state = load_file(str(path))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"head weights do not fit `{cfg.kind}` head {cfg.model_dump()}: {exc}", where=str(path)) from exc
    head.eval()
    return head


# --------------------------------------------------------------------------- body


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only real tokens (left padding: pads get 0), as ``generate`` does."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def _peft_hooks(model: Any, adapter_names: Sequence[str] | None) -> contextlib.AbstractContextManager[Any]:
    if adapter_names is None:
        return contextlib.nullcontext()
    hooks = getattr(model, "_enable_peft_forward_hooks", None)
    if hooks is None:
        raise ConfigError("`adapter_names` needs a PeftModel (mixed-adapter batches run through peft's LoRA layers)")
    return hooks(adapter_names=list(adapter_names))  # type: ignore[no-any-return]


def _body(model: Any) -> nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if body is None or body is inner:
        raise ConfigError(f"`{type(inner).__name__}` has no transformer body (`get_decoder()`) to read hidden states from")
    return body  # type: ignore[no-any-return]


def body_hidden_states(
    model: Any,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    *,
    adapter_names: Sequence[str] | None = None,
    depth: int | None = None,
    states: torch.Tensor | None = None,
    first_layer: int = 0,
) -> torch.Tensor:
    """Run the transformer body WITHOUT ``lm_head``; return the final hidden states ``[B, T, H]``.

    Works on a ``PeftModel`` (its LoRA layers sit inside the body, so the active adapter
    applies; a disabled adapter context applies too) and on a plain causal LM. Position
    ids come from the mask because batches are left-padded. ``adapter_names`` (one per
    row, ``"__base__"`` for none) runs a mixed-adapter batch through peft's own hooks.
    ``depth`` (a head's ``depth``) runs only the body's first ``depth`` layers, then its
    final norm: the layers above are not computed at all, forward or backward.
    ``states`` (from ``layer_states(..., layers=first_layer)``, left-padded like the mask)
    starts the body at layer ``first_layer`` instead of at the token embeddings of ``input_ids``.
    """
    if (states is None) != (first_layer == 0):
        raise ConfigError(f"`states` and `first_layer` go together: got first_layer={first_layer} with{'out' if states is None else ''} states")
    if states is None and input_ids is None:
        raise ConfigError("`input_ids` is needed unless the body starts from `states`")
    body = _body(model)
    inputs = {"inputs_embeds": states} if states is not None else {"input_ids": input_ids}
    with _peft_hooks(model, adapter_names), _layer_range(body, first_layer, depth):
        return _run_body(body, attention_mask, **inputs)


def layer_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, layers: int) -> torch.Tensor:
    """The residual stream after the body's first ``layers`` layers, ``[B, T, H]`` (no final norm).

    ``body_hidden_states(model, None, attention_mask, states=..., first_layer=layers, depth=...)``
    continues from it: with no trainable parameter below ``layers``, a trainer computes this
    once per example instead of at every step.
    """
    body = _body(model)
    with _layer_range(body, 0, layers, norm=False):
        return _run_body(body, attention_mask, input_ids=input_ids)


def _run_body(body: nn.Module, attention_mask: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
    """One forward of ``body`` (``input_ids=`` or ``inputs_embeds=``), position ids from the mask, no cache."""
    out = body(**inputs, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def first_trainable_layer(model: Any) -> int:
    """Index of the lowest body layer holding a trainable parameter (0 when the embeddings
    train; the number of layers when none does)."""
    body = _body(model)
    embed = getattr(body, "embed_tokens", None)
    if embed is not None and any(p.requires_grad for p in embed.parameters()):
        return 0
    for index, layer in enumerate(getattr(body, "layers", ())):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(getattr(body, "layers", ()))


def check_depth(depth: int | None, layers: int) -> None:
    """A head's ``depth`` must name one of the base's ``layers`` (``ConfigError`` otherwise; None: all)."""
    if depth is not None and not 1 <= depth <= layers:
        raise ConfigError(f"`depth` must be between 1 and the base's {layers} layers, got {depth}")


@contextlib.contextmanager
def _layer_range(body: nn.Module, start: int, stop: int | None, *, norm: bool = True) -> Iterator[None]:
    """Inside, ``body`` runs its layers ``start`` to ``stop - 1`` (transformers' decoders run
    ``layers[: config.num_hidden_layers]``), then its final norm unless ``norm`` is False;
    callers hold the host's lock, as for adapters."""
    config = getattr(body, "config", None)
    total = getattr(config, "num_hidden_layers", None)
    if start == 0 and (stop is None or stop == total) and norm:
        yield
        return
    layers, final = getattr(body, "layers", ()), getattr(body, "norm", None)
    if not isinstance(total, int) or len(layers) != total or final is None:
        raise ConfigError(
            f"`depth` {stop} needs a decoder with `layers`, `norm` and `config.num_hidden_layers`; `{type(body).__name__}` lacks one"
        )
    stop = total if stop is None else stop
    check_depth(stop, total)
    if not 0 <= start < stop:
        raise ConfigError(f"the body's first layer must be between 0 and {stop - 1} (the layer below `depth` {stop}), got {start}")
    config.num_hidden_layers = stop - start
    if start:
        body.layers = nn.ModuleList(list(layers)[start:stop])
    if not norm:
        body.norm = nn.Identity()
    try:
        yield
    finally:
        config.num_hidden_layers = total
        body.layers = layers
        body.norm = final


def _require_tokens(attention_mask: torch.Tensor) -> None:
    """Every pooling needs at least one real token per row."""
    if bool((~attention_mask.bool().any(dim=1)).any()):
        raise InputError("a row of the batch has no tokens (empty text)")


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token: ``[B, T, H]`` -> ``[B, H]`` (left or right padding)."""
    _require_tokens(attention_mask)
    batch, length = attention_mask.shape
    positions = torch.arange(length, device=attention_mask.device).expand(batch, length)
    last = torch.where(attention_mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    return hidden[torch.arange(batch, device=hidden.device), last]


def pool_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean hidden state over each row's real tokens: ``[B, T, H]`` -> ``[B, H]`` (fp32 sums)."""
    _require_tokens(attention_mask)
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    counts = mask.sum(dim=1)
    return (hidden.to(torch.float32) * mask).sum(dim=1) / counts


def attention_weights(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Softmax of per-token ``scores [B, T]`` over each row's real tokens (pads get 0)."""
    _require_tokens(attention_mask)
    real = attention_mask.bool()
    return torch.softmax(scores.to(torch.float32).masked_fill(~real, float("-inf")), dim=-1)


def pool_attention(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each row's hidden states: ``[B, T, H]`` x ``weights [B, T]`` -> ``[B, H]`` (fp32).

    ``weights`` must be 0 on padding (``attention_weights`` makes them so)."""
    return torch.einsum("bt,bth->bh", weights.to(torch.float32), hidden.to(torch.float32))


def length_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Row indices of ``texts`` for each forward pass: sorted by length, ``batch_size`` a batch.

    Less padding than batches in input order (half the time of the sample's intent test split,
    which mixes one-line chats with long emails); every row is masked to its own tokens, so its
    batch moves its output by float rounding only. Callers put the outputs back in input order."""
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    """Tokenize ``texts`` as one left-padded batch with char offsets.

    Returns the tokenizer's ``BatchEncoding`` with ``input_ids``, ``attention_mask`` and
    ``offset_mapping`` tensors (``[B, T]``, ``[B, T]``, ``[B, T, 2]``). Texts longer than
    ``max_length`` tokens are truncated at the end. An empty text is an ``InputError``.
    """
    if isinstance(texts, str):
        raise InputError("`texts` must be a list of strings, got one string")
    if not texts:
        raise InputError("`texts` must hold at least one text, got 0")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"`texts[{i}]` must be a non-empty string, got {text!r}"[:200])
    if max_length < 1:
        raise ConfigError(f"`max_length` must be at least 1, got {max_length}")
    return tokenizer(
        list(texts),
        padding=True,
        padding_side="left",
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )


# --------------------------------------------------------------------------- spans


def _pairs(offsets: Any) -> list[tuple[int, int]]:
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.tolist()
    return [(int(s), int(e)) for s, e in offsets]


def spans_to_tag_ids(
    offsets: Any, entities: Sequence[Mapping[str, Any]], config: HeadConfig
) -> list[int]:
    """Char spans -> one BIO tag id per token of ONE text (``IGNORE_INDEX`` for special/pad tokens).

    ``offsets``: the text's ``offset_mapping`` rows (``(start, end)`` per token, ``(0, 0)``
    for special and pad tokens). ``entities``: ``{"type", "start", "end"}`` char spans
    (end exclusive). A token belongs to an entity when their char ranges overlap; the
    first such token gets ``B-TYPE``, the following ones ``I-TYPE``.
    """
    if config.kind != "tag":
        raise ConfigError(f"`head.kind` must be `tag` to build tag ids, got `{config.kind}`")
    index = {tag: i for i, tag in enumerate(config.tags)}
    pairs = _pairs(offsets)
    ids = [IGNORE_INDEX if s == e else 0 for s, e in pairs]
    spans = sorted(entities, key=lambda e: (int(e["start"]), int(e["end"])))
    prev_end = -1
    for ent in spans:
        etype, start, end = ent.get("type"), int(ent["start"]), int(ent["end"])
        if etype not in config.labels:
            raise ConfigError(f"entity `type` {etype!r} is not one of the head's `labels` {config.labels}")
        if end <= start:
            raise ConfigError(f"entity span `start`={start} `end`={end} is empty")
        if start < prev_end:
            raise ConfigError(f"entity spans overlap at char {start} (previous ends at {prev_end})")
        prev_end = end
        first = True
        for i, (s, e) in enumerate(pairs):
            if s == e or e <= start or s >= end:
                continue
            ids[i] = index[f"{'B' if first else 'I'}-{etype}"]
            first = False
    return ids


def _iter_spans(pairs: list[tuple[int, int]], tags: list[str], ids: list[int]) -> Iterator[tuple[str, int, int]]:
    current: tuple[str, int, int] | None = None
    for (s, e), tid in zip(pairs, ids, strict=False):
        if s == e or tid == IGNORE_INDEX:
            continue  # special or pad token: neither starts nor ends a span
        tag = tags[tid] if 0 <= tid < len(tags) else "O"
        if tag == "O":
            if current:
                yield current
            current = None
            continue
        prefix, etype = tag.split("-", 1)
        if prefix == "I" and current is not None and current[0] == etype:
            current = (etype, current[1], max(current[2], e))
        else:  # B-, or an I- that does not continue a span: start a new one
            if current:
                yield current
            current = (etype, s, e)
    if current:
        yield current


_SENTENCE_PUNCT = ",;:!?"
_CLOSERS = {")": "(", "]": "[", '"': '"', "'": "'"}
_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Z][a-z]{0,2}|Ave|Blvd|Apt)\.$")


def _opened(span: str, closer: str) -> bool:
    """Whether ``span`` left a bracket or quote open that ``closer`` closes."""
    opener = _CLOSERS[closer]
    if opener == closer:
        return span.count(closer) % 2 == 1
    return span.count(opener) > span.count(closer)


def _trim_end(text: str, start: int, end: int) -> int:
    """End of a decoded span without what a token glued to it from the sentence around it.

    A byte-level BPE token can cover an entity's last characters and the punctuation after
    it (``com.``, ``0134,``, ``thermostat).``); its tag then stretches the span. Trailing
    whitespace, sentence punctuation, a closing bracket or quote that the span did not open,
    and a full stop are cut, except the stop of an abbreviation (``Baker St.``, ``Jr.``).
    """
    while end > start and _glued(text[start:end]):
        end -= 1
    return end


def _glued(span: str) -> bool:
    """Whether the last character of ``span`` is punctuation from the sentence, not the entity."""
    ch = span[-1]
    if ch.isspace() or ch in _SENTENCE_PUNCT:
        return True
    if ch in _CLOSERS:
        return not _opened(span[:-1], ch)
    return ch == "." and not _ABBREVIATION.search(span)


def _snap_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span that starts or ends inside a word (a run of letters and digits) to the
    whole word: an entity never begins or ends mid-word, but a tagger that missed one
    sub-word token (`m|ichael.wolf@...`, `5|46 William Forges`) would cut it there."""
    while 0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return start, end


def _merge_adjacent(spans: list[tuple[str, int, int]], text: str) -> list[tuple[str, int, int]]:
    """Join spans of one type that touch, overlap or are apart by spaces only (`(` + `646) 555`,
    `Georgia` + `Simmons`: the tagger began the entity twice); of overlapping spans of
    different types the longer one stays."""
    out: list[tuple[str, int, int]] = []
    for etype, start, end in sorted(spans, key=lambda sp: (sp[1], sp[2])):
        if out:
            ptype, pstart, pend = out[-1]
            gap = text[pend:start] if start > pend else ""
            if ptype == etype and (start <= pend or gap.strip(" ") == ""):
                out[-1] = (etype, pstart, max(pend, end))
                continue
            if start < pend:  # different types overlap
                if end - start > pend - pstart:
                    out[-1] = (etype, start, end)
                continue
        out.append((etype, start, end))
    return out


def tag_ids_to_spans(text: str, offsets: Any, tag_ids: Any, config: HeadConfig) -> list[dict[str, Any]]:
    """BIO tag ids per token of ONE text -> ``[{"type", "text", "start", "end"}]``.

    Offsets are exact char offsets into ``text`` (end exclusive) and
    ``text[start:end] == entity["text"]``. Spans are cleaned the way entities are written:
    the leading space a byte-level BPE token carries (``"Ġmaria"``) and surrounding
    whitespace are stripped, punctuation a token glued to the end is cut (``_trim_end``),
    a span cut inside a word is widened to the word (``_snap_to_words``), and pieces of
    one entity that the tagger began twice are joined (``_merge_adjacent``). Spans never
    overlap.
    """
    if config.kind != "tag":
        raise ConfigError(f"`head.kind` must be `tag` to decode tag ids, got `{config.kind}`")
    ids = tag_ids.tolist() if isinstance(tag_ids, torch.Tensor) else [int(t) for t in tag_ids]
    spans: list[tuple[str, int, int]] = []
    for etype, start, end in _iter_spans(_pairs(offsets), config.tags, ids):
        end = min(end, len(text))
        while start < end and text[start].isspace():
            start += 1
        end = _trim_end(text, start, end)
        if end > start:
            spans.append((etype, *_snap_to_words(text, start, end)))
    # ends are trimmed, and snapping only adds letters and digits: merged spans need no new trim
    return [
        {"type": etype, "text": text[start:end], "start": start, "end": end}
        for etype, start, end in _merge_adjacent(spans, text)
    ]
