"""Many adapters resident on ONE base: mount, switch, classify, tag, generate.

``AdapterHost(base)`` wraps the shared base in a ``PeftModel`` on the first mount and adds
every later adapter with peft's ``load_adapter``; all stay resident and ``set_adapter``
switches between them. A classify/tag adapter is its LoRA plus a small head
(``head.safetensors``) that reads the body's last hidden state: ONE forward pass, no
decoding. ``classify_mixed`` runs a batch whose rows use different adapters in one
forward pass through peft's ``adapter_names=`` (its ``_mixed_batch_forward``), applying
each row's own head. ``generate(None, ...)`` runs the base alone inside peft's
``disable_adapter()``.

Mounting verifies the version's checksums and that it was trained on this very base
(fingerprint and quantization); anything else is an ``IntegrityError``.

After the first mount the base's modules carry LoRA layers: run the base through the host
(``host.model``, or ``generate(None, ...)``) rather than ``base.model`` directly.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from loragraph.adapters.base import LoadedBase, keep_cpu_packed_4bit
from loragraph.adapters.heads import (
    HEAD_FILE,
    Head,
    body_hidden_states,
    encode,
    length_batches,
    load_head,
    tag_ids_to_spans,
)
from loragraph.adapters.registry import (
    ADAPTER_WEIGHTS,
    AdapterVersion,
    Registry,
    parse_ref,
    verify_version,
)
from loragraph.errors import ConfigError, InputError, IntegrityError, ModelLoadError, NotFoundError

__all__ = [
    "BASE_ADAPTER",
    "AdapterHost",
    "Classification",
    "Entity",
    "Generation",
    "adapter_name_for",
    "tag_output",
]

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed batch (``adapter_names``)."""

AdapterArg = AdapterVersion | str
_PEFT_KEY = "loragraph.host.peft_model"
_LOCK_KEY = "loragraph.host.lock"
_LOADED_KEY = "loragraph.host.loaded"


def _key(version: AdapterVersion) -> tuple[str, str]:
    return (version.ref, str(version.path))


def adapter_name_for(version: AdapterVersion) -> str:
    """The peft adapter name of a version inside the host: ``"intent__v3"``."""
    return f"{version.name}__v{version.version}"


class Classification(BaseModel):
    """The result of a classify adapter on one text."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="the most probable label")
    score: float = Field(description="its probability")
    scores: dict[str, float] = Field(description="probability of every label, in the head's label order")

    def to_output(self) -> dict[str, Any]:
        """The classify stage output: ``{"label", "score", "scores"}``."""
        return {"label": self.label, "score": self.score, "scores": dict(self.scores)}


class Entity(BaseModel):
    """One tagged span; ``text == document[start:end]`` (char offsets, end exclusive)."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(description="entity type, e.g. `EMAIL`")
    text: str = Field(description="the span's text, exactly as in the document")
    start: int = Field(ge=0, description="char offset of the first character")
    end: int = Field(ge=0, description="char offset after the last character")

    def to_output(self) -> dict[str, Any]:
        """One entry of the tag stage output: ``{"type", "text", "start", "end"}``."""
        return {"type": self.type, "text": self.text, "start": self.start, "end": self.end}


def tag_output(entities: Sequence[Entity]) -> dict[str, Any]:
    """The tag stage output: ``{"entities": [...]}``."""
    return {"entities": [e.to_output() for e in entities]}


class Generation(BaseModel):
    """The result of a generate call on one prompt."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="the generated text, special tokens removed, stripped")
    input_tokens: int = Field(ge=0, description="tokens of the chat-formatted prompt")
    output_tokens: int = Field(ge=0, description="tokens generated (up to and including end-of-turn)")

    def to_output(self) -> dict[str, Any]:
        """The generate stage output: ``{"text"}``."""
        return {"text": self.text}


@dataclass(frozen=True)
class _Mounted:
    version: AdapterVersion
    adapter_name: str
    head: Head | None


class AdapterHost:
    """Adapters mounted on one resident base; thread-safe (one forward at a time).

    An ``adapter`` argument is an ``AdapterVersion``, a reference (``"intent@v3"``, or
    ``"intent"`` for the promoted version, which needs ``registry``) or the name ``mount``
    returned (``"intent__v3"``). ``registry`` resolves references not mounted yet;
    ``batch_size`` caps the rows of one forward pass.

    Several hosts on the same ``LoadedBase`` share its one ``PeftModel`` and one lock
    (kept in ``base.extra``), so the base is never wrapped twice.
    """

    def __init__(self, base: LoadedBase, registry: Registry | None = None, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
        self.base = base
        self.registry = registry
        self.batch_size = batch_size
        self._mounted: dict[tuple[str, str], _Mounted] = {}
        self._lock: threading.RLock = base.extra.setdefault(_LOCK_KEY, threading.RLock())
        try:
            from peft import PeftModel
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise ModelLoadError("mounting adapters needs `peft`: `pip install peft`") from exc
        if base.extra.get(_PEFT_KEY) is None and isinstance(base.model, PeftModel):
            base.extra[_PEFT_KEY] = base.model

    @property
    def _peft(self) -> Any:
        """The base's one ``PeftModel`` (None before the first mount), shared by its hosts."""
        return self.base.extra.get(_PEFT_KEY)

    # ------------------------------------------------------------------ info

    @property
    def model(self) -> Any:
        """The ``PeftModel`` once an adapter is mounted, else the plain base model."""
        return self._peft if self._peft is not None else self.base.model

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def context_length(self) -> int:
        """Most tokens the base attends to (prompt + generated)."""
        return self.base.context_length

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens."""
        return len(self.base.tokenizer(text, add_special_tokens=False)["input_ids"])

    def mounted(self) -> list[AdapterVersion]:
        """Versions mounted by this host, in mount order."""
        return [m.version for m in self._mounted.values()]

    # ------------------------------------------------------------------ mount

    def _check_compatible(self, version: AdapterVersion) -> None:
        m = version.manifest
        base = self.base
        if m.base_fingerprint != base.fingerprint or m.quantization != base.spec.quantization:
            raise IntegrityError(
                f"was trained on base fingerprint `{m.base_fingerprint}` (`{m.base_name}`, quantization "
                f"`{m.quantization}`) but the loaded base is `{base.fingerprint}` (`{base.spec.name}`, "
                f"quantization `{base.spec.quantization}`); retrain it on this base or load that base",
                where=f"`{version.ref}`",
            )
        if m.head is not None and m.head.hidden_size != base.hidden_size:
            raise IntegrityError(
                f"head reads hidden size {m.head.hidden_size} but the base has {base.hidden_size}",
                where=f"`{version.ref}`",
            )
        layers = int(getattr(base.model.config, "num_hidden_layers", 0))
        if m.head is not None and m.head.depth is not None and m.head.depth > layers:
            raise IntegrityError(
                f"head reads the hidden states after layer {m.head.depth} but the base has {layers} layers",
                where=f"`{version.ref}`",
            )

    def _loaded(self) -> dict[str, str]:
        """peft adapter name -> sha256 of its LoRA weights, for every adapter on this base."""
        loaded: dict[str, str] = self.base.extra.setdefault(_LOADED_KEY, {})
        return loaded

    def _load_lora(self, version: AdapterVersion, name: str) -> None:
        # peft lists the model's state to map keys, which would unpack (and break) 4-bit
        # weights that CPU inference has repacked: `keep_cpu_packed_4bit` keeps them as they are
        try:
            with keep_cpu_packed_4bit(self.base.model):
                if self._peft is None:
                    from peft import PeftModel

                    self.base.extra[_PEFT_KEY] = PeftModel.from_pretrained(
                        self.base.model, str(version.path), adapter_name=name, is_trainable=False
                    )
                else:
                    self._peft.load_adapter(str(version.path), adapter_name=name, is_trainable=False)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"peft could not load the adapter: {exc}", where=f"`{version.ref}`") from exc
        self._peft.eval()
        self._loaded()[name] = version.manifest.files[ADAPTER_WEIGHTS]

    def mount(self, version: AdapterArg) -> str:
        """Verify and load a version (LoRA + head) onto the base; return its peft adapter name.

        Idempotent: mounting a mounted version does nothing. All mounted versions stay
        resident. The peft name is ``"intent__v3"``; only when another registry already put
        different weights under that name on this same base is the weights digest appended.
        """
        with self._lock:
            resolved = self.resolve(version)
            key = _key(resolved)
            if key in self._mounted:
                return self._mounted[key].adapter_name
            verify_version(resolved)
            self._check_compatible(resolved)
            head = load_head(resolved.path / HEAD_FILE, resolved.manifest.head) if resolved.manifest.head else None
            if head is not None:
                head.to(self.base.device)
            digest = resolved.manifest.files[ADAPTER_WEIGHTS]
            name = adapter_name_for(resolved)
            resident = set(self._peft.peft_config) if self._peft is not None else set()
            if name in resident and self._loaded().get(name) != digest:
                name = f"{name}__{digest[:8]}"
            if name not in resident or self._loaded().get(name) != digest:
                self._load_lora(resolved, name)
            self._mounted[key] = _Mounted(version=resolved, adapter_name=name, head=head)
            return name

    def unmount(self, version: AdapterArg) -> None:
        """Forget a mounted version and free its LoRA (peft ``delete_adapter``).

        The LoRA lives on the shared base: another host on the same base that still uses
        it loads it again on its next call. peft keeps the last adapter of a model.
        """
        with self._lock:
            mounted = self._lookup(version, mount=False)
            del self._mounted[_key(mounted.version)]
            peft = self._peft
            if len(peft.peft_config) > 1 and mounted.adapter_name in peft.peft_config:
                if peft.active_adapter == mounted.adapter_name:
                    other = next(n for n in peft.peft_config if n != mounted.adapter_name)
                    peft.set_adapter(other, inference_mode=True)
                peft.delete_adapter(mounted.adapter_name)
                self._loaded().pop(mounted.adapter_name, None)

    def _find(self, predicate: Any) -> _Mounted | None:
        found = [m for m in self._mounted.values() if predicate(m)]
        return found[-1] if found else None

    def resolve(self, adapter: AdapterArg) -> AdapterVersion:
        """The version ``adapter`` names: an ``AdapterVersion`` as is, a peft name ``mount``
        returned, a mounted ``name@vN``, else the registry's (``name``: its promoted version)."""
        if isinstance(adapter, AdapterVersion):
            return adapter
        if not isinstance(adapter, str):
            raise ConfigError(f"`adapter` must be an AdapterVersion or a reference like `intent@v3`, got {adapter!r}")
        by_name = self._find(lambda m: m.adapter_name == adapter)  # the name `mount` returned
        if by_name is not None:
            return by_name.version
        name, number = parse_ref(adapter)
        if number is not None:
            pinned = self._find(lambda m: m.version.name == name and m.version.version == number)
            if pinned is not None and (self.registry is None or pinned.version.path.parent.parent == self.registry.root):
                return pinned.version
        if self.registry is None:
            have = ", ".join(f"`{m.version.ref}`" for m in self._mounted.values()) or "none"
            raise NotFoundError(f"adapter `{adapter}` is not mounted and the host has no registry; mounted: {have}")
        return self.registry.resolve(adapter)

    def _lookup(self, adapter: AdapterArg, *, mount: bool = True) -> _Mounted:
        version = self.resolve(adapter)
        key = _key(version)
        if key not in self._mounted:
            if not mount:
                have = ", ".join(f"`{m.version.ref}`" for m in self._mounted.values()) or "none"
                raise NotFoundError(f"adapter `{version.ref}` is not mounted; mounted: {have}")
            self.mount(version)
        return self._mounted[key]

    def _activate(self, mounted: _Mounted) -> None:
        peft = self._peft
        if mounted.adapter_name not in peft.peft_config:  # unmounted by another host on this base
            self._load_lora(mounted.version, mounted.adapter_name)
        if peft.active_adapter != mounted.adapter_name:
            peft.set_adapter(mounted.adapter_name, inference_mode=True)

    def _head_of(self, adapter: AdapterArg, kind: str) -> tuple[_Mounted, Head]:
        mounted = self._lookup(adapter)
        if mounted.version.kind != kind or mounted.head is None:
            raise ConfigError(
                f"`{mounted.version.ref}` is a `{mounted.version.kind}` adapter; {kind} needs a `{kind}` adapter"
            )
        return mounted, mounted.head

    # ------------------------------------------------------------------ heads

    def _encode(self, texts: Sequence[str], max_length: int | None) -> Any:
        return encode(self.base.tokenizer, texts, max_length or self.context_length)

    def _forward_heads(
        self, texts: Sequence[str], heads: Sequence[Head], adapter_names: Sequence[str] | None, max_length: int | None
    ) -> tuple[Any, list[torch.Tensor]]:
        """One body forward over ``texts`` per head ``depth`` among ``heads`` (one in the usual case);
        row i goes through ``heads[i]``. Returns (encoding, logits per row)."""
        enc = self._encode(texts, max_length)
        device = self.base.device
        ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device)
        rows: list[torch.Tensor | None] = [None] * len(texts)
        by_depth: dict[int | None, list[int]] = {}
        for i, head in enumerate(heads):
            by_depth.setdefault(head.config.depth, []).append(i)
        with torch.inference_mode():
            for depth, part in by_depth.items():
                whole = len(part) == len(texts)
                sel = torch.tensor(part, device=device)
                part_ids, part_mask = (ids, mask) if whole else (ids.index_select(0, sel), mask.index_select(0, sel))
                names = None if adapter_names is None else [adapter_names[i] for i in part]
                hidden = body_hidden_states(self._peft, part_ids, part_mask, adapter_names=names, depth=depth)
                groups: dict[int, list[int]] = {}  # positions within `part`, per head
                for j, i in enumerate(part):
                    groups.setdefault(id(heads[i]), []).append(j)
                for index in groups.values():
                    head = heads[part[index[0]]]
                    at = torch.tensor(index, device=device)
                    logits = head(hidden.index_select(0, at), part_mask.index_select(0, at)).float().cpu()
                    for j, row in zip(index, logits, strict=True):
                        rows[part[j]] = row
        return enc, [r for r in rows if r is not None]

    @staticmethod
    def _classification(head: Head, logits: torch.Tensor) -> Classification:
        probs = logits.softmax(-1).tolist()
        labels = head.config.labels
        best = max(range(len(labels)), key=lambda k: probs[k])
        return Classification(
            label=labels[best], score=float(probs[best]), scores={lab: float(p) for lab, p in zip(labels, probs, strict=True)}
        )

    def _chunks(self, n: int, texts: Sequence[str] | None = None) -> Sequence[Sequence[int]]:
        """Row indices per batch; given ``texts``, batches of similar length (``length_batches``)."""
        if texts is not None:
            return length_batches(texts, self.batch_size)
        return [range(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def classify(self, adapter: AdapterArg, texts: Sequence[str], *, max_length: int | None = None) -> list[Classification]:
        """Label each text with a classify adapter: one forward pass per batch, no decoding."""
        texts = _as_texts(texts)
        out: dict[int, Classification] = {}
        with self._lock:
            mounted, head = self._head_of(adapter, "classify")
            self._activate(mounted)
            for chunk in self._chunks(len(texts), texts):
                part = [texts[i] for i in chunk]
                _, logits = self._forward_heads(part, [head] * len(part), None, max_length)
                for i, row in zip(chunk, logits, strict=True):
                    out[i] = self._classification(head, row)
        return [out[i] for i in range(len(texts))]

    def tag(self, adapter: AdapterArg, texts: Sequence[str], *, max_length: int | None = None) -> list[list[Entity]]:
        """Entities of each text with a tag adapter: one forward pass per batch, exact char offsets."""
        texts = _as_texts(texts)
        out: list[list[Entity]] = [[] for _ in texts]
        with self._lock:
            mounted, head = self._head_of(adapter, "tag")
            self._activate(mounted)
            for chunk in self._chunks(len(texts), texts):
                part = [texts[i] for i in chunk]
                enc, logits = self._forward_heads(part, [head] * len(part), None, max_length)
                for row, (i, row_logits) in enumerate(zip(chunk, logits, strict=True)):
                    spans = tag_ids_to_spans(texts[i], enc["offset_mapping"][row], row_logits.argmax(-1), head.config)
                    out[i] = [Entity(**s) for s in spans]
        return out

    def classify_mixed(
        self, pairs: Sequence[tuple[AdapterArg, str]], *, max_length: int | None = None
    ) -> list[Classification]:
        """Classify ``(adapter, text)`` rows that use different adapters in one forward pass.

        The LoRA of each row is applied by peft's ``adapter_names=`` (mixed batch); each
        row then goes through its own adapter's head. Results keep the input order.
        """
        if not pairs:
            return []
        texts = _as_texts([text for _, text in pairs])
        out: list[Classification] = []
        with self._lock:
            resolved = [self._head_of(adapter, "classify") for adapter, _ in pairs]
            for mounted, _ in resolved:
                if mounted.adapter_name not in self._peft.peft_config:  # unmounted by another host
                    self._load_lora(mounted.version, mounted.adapter_name)
            for chunk in self._chunks(len(pairs)):
                names = [resolved[i][0].adapter_name for i in chunk]
                heads = [resolved[i][1] for i in chunk]
                _, logits = self._forward_heads([texts[i] for i in chunk], heads, names, max_length)
                out += [self._classification(h, row) for h, row in zip(heads, logits, strict=True)]
        return out

    # ------------------------------------------------------------------ generate

    def _chat(self, prompt: str, system: str | None) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return str(self.base.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (getattr(self.base.model, "generation_config", None), self.base.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and v not in ids:
                    ids.append(v)
        tok_eos = self.base.tokenizer.eos_token_id
        if isinstance(tok_eos, int) and tok_eos not in ids:
            ids.append(tok_eos)
        return ids

    def generate(
        self,
        adapter: AdapterArg | None,
        prompts: Sequence[str],
        *,
        system: str | None = None,
        max_new_tokens: int = 128,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> list[Generation]:
        """Greedy chat completion of each prompt (the user message), batched with left padding.

        ``adapter=None`` runs the base alone (peft's ``disable_adapter``). ``system``
        defaults to the adapter's trained system message, if any. ``repetition_penalty``
        (> 1 penalises tokens already generated) and ``no_repeat_ngram_size`` (> 0 bans
        repeating an n-gram) look at the generated tokens only, never the prompt: a summary
        may copy an order number from the document, but not loop on its own output.
        """
        from transformers import GenerationConfig

        prompts = _as_texts(prompts, field="prompts")
        if max_new_tokens < 1:
            raise ConfigError(f"`max_new_tokens` must be at least 1, got {max_new_tokens}")
        if repetition_penalty < 1.0:
            raise ConfigError(f"`repetition_penalty` must be at least 1.0 (1.0 is off), got {repetition_penalty}")
        if no_repeat_ngram_size < 0:
            raise ConfigError(f"`no_repeat_ngram_size` must be at least 0 (0 is off), got {no_repeat_ngram_size}")
        tok = self.base.tokenizer
        eos = self._eos_ids()
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        out: list[Generation] = []
        with self._lock:
            mounted = None
            if adapter is not None:
                mounted = self._lookup(adapter)
                if mounted.version.kind != "generate":
                    raise ConfigError(
                        f"`{mounted.version.ref}` is a `{mounted.version.kind}` adapter; generate needs a `generate` adapter"
                    )
                if system is None:
                    system = mounted.version.manifest.system
            chats = [self._chat(p, system) for p in prompts]
            for chunk in self._chunks(len(chats)):
                part = [chats[i] for i in chunk]
                enc = tok(part, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
                ids = enc["input_ids"].to(self.base.device)
                mask = enc["attention_mask"].to(self.base.device)
                longest = int(mask.sum(-1).max())
                if longest + max_new_tokens > self.context_length:
                    raise InputError(
                        f"prompt of {longest} tokens + `max_new_tokens` {max_new_tokens} exceeds the base's "
                        f"context length {self.context_length}"
                    )
                processors = repetition_processors(ids.shape[1], repetition_penalty, no_repeat_ngram_size)
                kwargs = {"input_ids": ids, "attention_mask": mask, "generation_config": config, "logits_processor": processors}
                with torch.inference_mode():
                    if mounted is not None:
                        self._activate(mounted)
                        generated = self._peft.generate(**kwargs)
                    elif self._peft is not None:
                        with self._peft.disable_adapter():
                            generated = self._peft.generate(**kwargs)
                    else:
                        generated = self.base.model.generate(**kwargs)
                new = generated[:, ids.shape[1] :].cpu()
                for row in range(new.shape[0]):
                    tokens = new[row].tolist()
                    stop = next((k for k, t in enumerate(tokens) if t in eos), None)
                    body = tokens if stop is None else tokens[:stop]
                    out.append(
                        Generation(
                            text=tok.decode(body, skip_special_tokens=True).strip(),
                            input_tokens=int(mask[row].sum()),
                            output_tokens=len(tokens) if stop is None else stop + 1,
                        )
                    )
        return out


def repetition_processors(prompt_length: int, repetition_penalty: float, no_repeat_ngram_size: int) -> Any:
    """transformers logits processors that curb repetition in the generated tokens only.

    transformers' own ``repetition_penalty``/``no_repeat_ngram_size`` of ``GenerationConfig``
    also count the prompt (a decoder-only model's ``input_ids`` hold it), so a summary could
    not repeat an order number it read; here both see the ``input_ids`` after the
    ``prompt_length`` (left-padded) prompt positions only."""
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
    )

    class _GeneratedNGrams(LogitsProcessor):
        def __init__(self) -> None:
            self.ngrams = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            return self.ngrams(input_ids[:, prompt_length:], scores)

    processors = LogitsProcessorList()
    if repetition_penalty > 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty, prompt_ignore_length=prompt_length))
    if no_repeat_ngram_size > 0:
        processors.append(_GeneratedNGrams())
    return processors


def _as_texts(texts: Sequence[str], *, field: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise InputError(f"`{field}` must be a list of strings, got one string")
    out = list(texts)
    if not out:
        raise InputError(f"`{field}` must hold at least one entry, got 0")
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise InputError(f"`{field}[{i}]` must be a non-empty string, got {t!r}"[:200])
    return out

