from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from loragraph.adapters.base import BaseSpec, LoadedBase, load_base
from loragraph.adapters.heads import HeadConfig, body_hidden_states, build_head, encode, save_head
from loragraph.adapters.host import AdapterHost, Classification, Entity, Generation, tag_output
from loragraph.adapters.registry import AdapterVersion, Registry
from loragraph.errors import ConfigError, IntegrityError, NotFoundError

LABELS = ["refund_request", "order_status", "cancel_order"]
TYPES = ["EMAIL", "AMOUNT", "ORDER_ID"]
TEXTS = [
    "I want a refund for the blue kettle, I was charged $49.99 twice.",
    "Hi, where is my order #A-48213?",
    "Please cancel order ORD-2024-11873 before it ships. Thanks, Maria Lopez",
]


def _fresh_base(path: Path) -> LoadedBase:
    return load_base(BaseSpec(name=str(path), quantization="fp32"))


def _stage_adapter(
    base_path: Path, out: Path, *, seed: int, head: HeadConfig | None, head_seed: int | None = None
) -> Path:
    """A random LoRA (init_lora_weights=False, so adapters differ) + head, saved in PEFT format."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    peft = get_peft_model(model, config)
    with torch.no_grad():  # make the LoRA strong enough to matter on a random base
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft.save_pretrained(out)
    if head is not None:
        torch.manual_seed(seed if head_seed is None else head_seed)
        save_head(build_head(head), out)
    return out


def _fields(base: LoadedBase, kind: str, labels: list[str] | None = None, **over: Any) -> dict[str, Any]:
    head = HeadConfig(kind=kind, labels=labels, hidden_size=base.hidden_size) if kind in ("classify", "tag") else None  # type: ignore[arg-type]
    fields: dict[str, Any] = {
        "kind": kind,
        "labels": labels or [],
        "head": head,
        "base_name": base.spec.name,
        "base_fingerprint": base.fingerprint,
        "quantization": base.spec.quantization,
        "method": {"classify": "classify", "tag": "tag"}.get(kind, "sft"),
    }
    fields.update(over)
    return fields


@pytest.fixture(scope="module")
def world(tiny_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry with two classify adapters (same head weights, different LoRA), a tag and a generate adapter."""
    tmp = tmp_path_factory.mktemp("host")
    reg = Registry(tmp / "adapters")
    base = _fresh_base(tiny_base_path)
    cls_head = HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size)
    tag_head = HeadConfig(kind="tag", labels=TYPES, hidden_size=base.hidden_size)
    a = reg.publish("intent", _stage_adapter(tiny_base_path, tmp / "a", seed=1, head=cls_head, head_seed=7), _fields(base, "classify", LABELS))
    b = reg.publish("urgency", _stage_adapter(tiny_base_path, tmp / "b", seed=2, head=cls_head, head_seed=7), _fields(base, "classify", LABELS))
    t = reg.publish("entities", _stage_adapter(tiny_base_path, tmp / "t", seed=3, head=tag_head), _fields(base, "tag", TYPES))
    g = reg.publish(
        "reply",
        _stage_adapter(tiny_base_path, tmp / "g", seed=4, head=None),
        _fields(base, "generate", prompt="{{ text }}", system="You are a support agent."),
    )
    return {"reg": reg, "a": a, "b": b, "t": t, "g": g, "path": tiny_base_path, "tmp": tmp}


@pytest.fixture
def host(world: dict[str, Any]) -> AdapterHost:
    return AdapterHost(_fresh_base(world["path"]), world["reg"])


def test_staged_folder_is_standard_peft(world: dict[str, Any]) -> None:
    a: AdapterVersion = world["a"]
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "manifest.json"} <= {p.name for p in a.path.iterdir()}
    assert json.loads((a.path / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_mount_is_idempotent_and_all_stay_resident(host: AdapterHost, world: dict[str, Any]) -> None:
    assert host.mount(world["a"]) == "intent__v1"
    assert host.mount("intent@v1") == "intent__v1"
    assert host.mount("intent__v1") == "intent__v1"  # the name mount returned is a valid argument too
    assert host.classify("intent__v1", TEXTS[:1]) == host.classify(world["a"], TEXTS[:1])
    assert host.mount("urgency") == "urgency__v1"
    assert set(host.model.peft_config) == {"intent__v1", "urgency__v1"}
    assert [v.ref for v in host.mounted()] == ["intent@v1", "urgency@v1"]


def test_classify_shapes_switching_and_isolation(host: AdapterHost, world: dict[str, Any]) -> None:
    out_a = host.classify("intent@v1", TEXTS)
    out_b = host.classify(world["b"], TEXTS)
    again_a = host.classify("intent", TEXTS)
    assert len(out_a) == 3 and all(isinstance(c, Classification) for c in out_a)
    for c in out_a:
        assert set(c.scores) == set(LABELS) and c.label in LABELS
        assert abs(sum(c.scores.values()) - 1.0) < 1e-5 and c.score == max(c.scores.values())
        assert c.to_output() == {"label": c.label, "score": c.score, "scores": c.scores}
    # same head weights, different LoRA: the scores differ, so the active LoRA is applied
    assert any(abs(x.scores[k] - y.scores[k]) > 1e-3 for x, y in zip(out_a, out_b, strict=True) for k in LABELS)
    # switching back reproduces the first result
    assert all(x.scores == pytest.approx(y.scores, abs=1e-6) for x, y in zip(again_a, out_a, strict=True))
    # each adapter matches itself mounted alone on a fresh base
    alone = AdapterHost(_fresh_base(world["path"]), world["reg"])
    for x, y in zip(alone.classify("urgency@v1", TEXTS), out_b, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-5)


def test_classify_single_text_equals_batched(host: AdapterHost) -> None:
    batched = host.classify("intent@v1", TEXTS)
    for text, expected in zip(TEXTS, batched, strict=True):
        assert host.classify("intent@v1", [text])[0].scores == pytest.approx(expected.scores, abs=1e-5)


def test_batches_of_similar_length_keep_the_input_order(host: AdapterHost, world: dict[str, Any]) -> None:
    """Rows are batched by length (less padding); each output still belongs to its own input."""
    texts = [TEXTS[2], "ok", TEXTS[0] * 3, TEXTS[1], "refund?", TEXTS[2] + " " + TEXTS[1]]
    small = AdapterHost(host.base, world["reg"], batch_size=2)  # three batches, none in input order
    for text, got in zip(texts, small.classify("intent@v1", texts), strict=True):
        assert got.scores == pytest.approx(host.classify("intent@v1", [text])[0].scores, abs=1e-5)
    for text, got in zip(texts, small.tag("entities@v1", texts), strict=True):
        assert got == host.tag("entities@v1", [text])[0]
        assert all(text[e.start : e.end] == e.text for e in got)


def test_classify_mixed_matches_per_adapter(host: AdapterHost, world: dict[str, Any]) -> None:
    pairs = [("intent@v1", TEXTS[0]), ("urgency@v1", TEXTS[1]), ("intent@v1", TEXTS[2]), (world["b"], TEXTS[0])]
    mixed = host.classify_mixed(pairs)
    for (adapter, text), got in zip(pairs, mixed, strict=True):
        expected = host.classify(adapter, [text])[0]
        assert got.label == expected.label
        assert got.scores == pytest.approx(expected.scores, abs=1e-5)
    with pytest.raises(ConfigError, match="classify needs"):
        host.classify_mixed([("entities@v1", TEXTS[0])])


def test_tag_shapes_and_offsets(host: AdapterHost, world: dict[str, Any]) -> None:
    out = host.tag("entities@v1", TEXTS)
    assert len(out) == len(TEXTS)
    for text, entities in zip(TEXTS, out, strict=True):
        for e in entities:
            assert isinstance(e, Entity) and e.type in TYPES
            assert text[e.start : e.end] == e.text and e.text == e.text.strip() and e.text
        assert tag_output(entities) == {"entities": [e.to_output() for e in entities]}
    # a random tag head on this text predicts at least one entity somewhere
    assert sum(len(e) for e in out) > 0
    with pytest.raises(ConfigError, match="tag needs"):
        host.tag("intent@v1", TEXTS)


def test_tag_matches_manual_forward(host: AdapterHost, world: dict[str, Any]) -> None:
    """The host's tag output equals body + head computed by hand through peft."""
    from loragraph.adapters.heads import load_head, tag_ids_to_spans

    got = host.tag("entities@v1", TEXTS[:2])
    head = load_head(world["t"].path)
    enc = encode(host.tokenizer, TEXTS[:2], 512)
    with torch.inference_mode():
        host.model.set_adapter("entities__v1")
        hidden = body_hidden_states(host.model, enc["input_ids"], enc["attention_mask"])
        ids = head(hidden, enc["attention_mask"]).argmax(-1)
    for row, text in enumerate(TEXTS[:2]):
        expected = tag_ids_to_spans(text, enc["offset_mapping"][row], ids[row], head.config)
        assert [e.to_output() for e in got[row]] == expected


def test_generate_shapes_and_base_equivalence(host: AdapterHost, world: dict[str, Any]) -> None:
    prompts = ["Where is my order?", "Refund please, I was charged twice for order ORD-2024-11873."]
    plain = AdapterHost(_fresh_base(world["path"])).generate(None, prompts, max_new_tokens=6)
    host.mount("intent@v1")
    host.mount("reply@v1")
    base_out = host.generate(None, prompts, max_new_tokens=6)
    adapted = host.generate("reply@v1", prompts, max_new_tokens=6)
    assert all(isinstance(g, Generation) for g in base_out) and len(base_out) == 2
    assert base_out == plain  # the adapter disabled reproduces the plain base exactly
    for g in adapted:
        assert 1 <= g.output_tokens <= 6 and g.input_tokens > 0 and g.to_output() == {"text": g.text}
    # the system message: explicit, or the adapter's trained one
    assert adapted[0].input_tokens == host.count_tokens(host._chat(prompts[0], "You are a support agent."))
    assert base_out[0].input_tokens == host.count_tokens(host._chat(prompts[0], None))
    # generate through the LoRA differs from the base (random LoRA, scaled up)
    long_base = host.generate(None, prompts, max_new_tokens=12)
    long_adapted = host.generate("reply@v1", prompts, max_new_tokens=12, system="")
    assert [g.text for g in long_base] != [g.text for g in long_adapted] or [g.output_tokens for g in long_base] != [
        g.output_tokens for g in long_adapted
    ]
    with pytest.raises(ConfigError, match="generate needs"):
        host.generate("intent@v1", prompts)


def test_wrong_fingerprint_is_refused(world: dict[str, Any], tiny_base_path: Path) -> None:
    reg: Registry = world["reg"]
    base = _fresh_base(tiny_base_path)
    staged = _stage_adapter(tiny_base_path, world["tmp"] / "other", seed=9, head=HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size))
    v = reg.publish("foreign", staged, _fields(base, "classify", LABELS, base_fingerprint="sha256:elsewhere", quantization="nf4"))
    host = AdapterHost(base, reg)
    with pytest.raises(IntegrityError) as info:
        host.mount(v)
    msg = str(info.value)
    assert "`foreign@v1`" in msg and "sha256:elsewhere" in msg and base.fingerprint in msg
    assert "`nf4`" in msg and "`fp32`" in msg
    assert host.mounted() == []


def test_heads_of_different_depth_share_a_mixed_batch(world: dict[str, Any], tiny_base_path: Path) -> None:
    """A head with `depth` reads an earlier layer; rows of such heads and full-depth heads can
    share one `classify_mixed` call and get what each adapter gives alone."""
    base = _fresh_base(tiny_base_path)
    reg = Registry(world["tmp"] / "depths")
    full = HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size)
    shallow = full.model_copy(update={"depth": 1})
    for name, head in (("deep", full), ("shallow", shallow)):  # the same LoRA and head weights
        staged = _stage_adapter(tiny_base_path, world["tmp"] / f"depth-{name}", seed=1, head=head, head_seed=7)
        reg.publish(name, staged, _fields(base, "classify", LABELS, head=head))
    host = AdapterHost(base, reg)
    deep_out, shallow_out = host.classify("deep", TEXTS), host.classify("shallow", TEXTS)
    assert any(abs(x.scores[k] - y.scores[k]) > 1e-3 for x, y in zip(deep_out, shallow_out, strict=True) for k in LABELS)
    pairs = [("shallow", TEXTS[0]), ("deep", TEXTS[1]), ("shallow", TEXTS[2]), ("deep", TEXTS[0])]
    for (adapter, text), got in zip(pairs, host.classify_mixed(pairs), strict=True):
        assert got.scores == pytest.approx(host.classify(adapter, [text])[0].scores, abs=1e-5)
    too_deep = full.model_copy(update={"depth": 5})
    staged = _stage_adapter(tiny_base_path, world["tmp"] / "depth-5", seed=1, head=too_deep)
    reg.publish("too_deep", staged, _fields(base, "classify", LABELS, head=too_deep))
    with pytest.raises(IntegrityError, match=r"`too_deep@v1`.*after layer 5 but the base has 2 layers"):
        host.mount("too_deep")


def test_tampered_adapter_is_refused(world: dict[str, Any], tiny_base_path: Path) -> None:
    reg: Registry = world["reg"]
    base = _fresh_base(tiny_base_path)
    staged = _stage_adapter(tiny_base_path, world["tmp"] / "tamper", seed=11, head=HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size))
    v = reg.publish("tampered", staged, _fields(base, "classify", LABELS))
    head = v.path / "head.safetensors"
    os.chmod(head, 0o644)
    data = bytearray(head.read_bytes())
    data[-1] ^= 0x01
    head.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"head\.safetensors"):
        AdapterHost(base, reg).mount("tampered@v1")


def test_unknown_adapters(world: dict[str, Any], tiny_base_path: Path) -> None:
    host = AdapterHost(_fresh_base(tiny_base_path))  # no registry
    with pytest.raises(NotFoundError, match="not mounted"):
        host.classify("intent@v1", TEXTS)
    host.mount(world["a"])
    assert host.classify("intent@v1", TEXTS[:1])[0].label in LABELS
    with pytest.raises(NotFoundError):
        AdapterHost(_fresh_base(tiny_base_path), world["reg"]).classify("nope", TEXTS)
    with pytest.raises(ConfigError):
        host.classify("intent@", TEXTS)


def test_two_hosts_share_one_peft_model(world: dict[str, Any]) -> None:
    base = _fresh_base(world["path"])
    first, second = AdapterHost(base, world["reg"]), AdapterHost(base, world["reg"])
    expected = first.classify("intent@v1", TEXTS)
    assert second.classify("intent@v1", TEXTS) == expected  # no second wrapping of the base
    second.mount("urgency@v1")
    assert first.model is second.model and set(first.model.peft_config) == {"intent__v1", "urgency__v1"}
    assert [v.ref for v in first.mounted()] == ["intent@v1"]
    assert first.classify("intent@v1", TEXTS) == expected


def test_same_ref_from_two_registries_on_one_base(world: dict[str, Any], tmp_path: Path) -> None:
    """Two registries each holding a different `intent@v1`, mounted on the same base, stay apart."""
    other_reg = Registry(tmp_path / "other")
    base = _fresh_base(world["path"])
    head = HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size)
    other = other_reg.publish(
        "intent", _stage_adapter(world["path"], tmp_path / "o", seed=5, head=head, head_seed=7), _fields(base, "classify", LABELS)
    )
    first, second = AdapterHost(base, world["reg"]), AdapterHost(base, other_reg)
    got_first = first.classify("intent@v1", TEXTS)
    got_second = second.classify("intent@v1", TEXTS)
    assert second.mount(other) == f"intent__v1__{other.manifest.files['adapter_model.safetensors'][:8]}"
    alone = AdapterHost(_fresh_base(world["path"]), other_reg).classify("intent@v1", TEXTS)
    for x, y in zip(got_second, alone, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-5)
    assert any(abs(x.scores[k] - y.scores[k]) > 1e-3 for x, y in zip(got_first, got_second, strict=True) for k in LABELS)
    assert first.classify("intent@v1", TEXTS) == got_first


def test_unmount(host: AdapterHost, world: dict[str, Any]) -> None:
    host.mount("intent@v1")
    host.mount("urgency@v1")
    before = host.classify("intent@v1", TEXTS)
    other = AdapterHost(host.base, world["reg"])  # shares the base's PeftModel
    other_before = other.classify("urgency@v1", TEXTS)
    host.unmount("urgency@v1")
    assert [v.ref for v in host.mounted()] == ["intent@v1"] and "urgency__v1" not in host.model.peft_config
    after = host.classify("intent@v1", TEXTS)
    assert all(x.scores == pytest.approx(y.scores, abs=1e-6) for x, y in zip(before, after, strict=True))
    # the other host still uses urgency: it is loaded again on its next call
    assert other.classify("urgency@v1", TEXTS) == other_before
    with pytest.raises(NotFoundError, match="not mounted"):
        host.unmount("urgency@v1")


@pytest.mark.slow
def test_mount_on_real_nf4_base(tmp_path: Path) -> None:
    """One classify adapter on the real bundled base in nf4: mounts, classifies, tags offsets stay exact."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    from loragraph.adapters.heads import spans_to_tag_ids, tag_ids_to_spans

    base = load_base(BaseSpec())
    # stage a random adapter on a second, plain copy of the same weights (no 4-bit in the saved LoRA)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.bfloat16)
    torch.manual_seed(0)
    peft = get_peft_model(plain, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    staged = tmp_path / "staged"
    peft.save_pretrained(staged)
    head_cfg = HeadConfig(kind="classify", labels=LABELS, hidden_size=base.hidden_size)
    save_head(build_head(head_cfg), staged)
    reg = Registry(tmp_path / "adapters")
    reg.publish("intent", staged, _fields(base, "classify", LABELS))
    host = AdapterHost(base, reg)
    out = host.classify("intent", TEXTS)
    assert len(out) == 3 and all(abs(sum(c.scores.values()) - 1) < 1e-4 for c in out)
    # the real tokenizer keeps exact char offsets through the BIO round trip
    text = "Refund $49.99 to maria.lopez@example.com for ORD-2024-11873, 221B Baker Street."
    cfg = HeadConfig(kind="tag", labels=["AMOUNT", "EMAIL", "ORDER_ID"], hidden_size=base.hidden_size)
    ents = [
        {"type": t, "text": s, "start": text.index(s), "end": text.index(s) + len(s)}
        for t, s in [("AMOUNT", "$49.99"), ("EMAIL", "maria.lopez@example.com"), ("ORDER_ID", "ORD-2024-11873")]
    ]
    enc = encode(base.tokenizer, [text], 128)
    ids = spans_to_tag_ids(enc["offset_mapping"][0], ents, cfg)
    assert tag_ids_to_spans(text, enc["offset_mapping"][0], ids, cfg) == ents


@pytest.mark.skipif(
    "avx512_bf16" not in Path("/proc/cpuinfo").read_text(), reason="the CPU repack exists only on AVX512-BF16 CPUs"
)
def test_mounting_after_inference_leaves_the_4bit_base_intact(tmp_path: Path) -> None:
    """Mount, classify (4-bit weights get repacked), mount another version: the first one's
    results do not change (peft's load_adapter used to break repacked weights)."""
    from loragraph.testing import publish_random_adapter, tiny_base_dir

    base = load_base(BaseSpec(name=str(tiny_base_dir(tmp_path / "b", hidden_size=128)), quantization="nf4"))
    registry = Registry(tmp_path / "adapters")
    for seed in (1, 2):
        publish_random_adapter(registry, base, f"a{seed}", "classify", labels=LABELS, seed=seed)
    host = AdapterHost(base, registry)
    before = host.classify("a1", TEXTS)
    host.mount("a2")
    host.classify("a2", TEXTS)
    after = host.classify("a1", TEXTS)
    assert [c.scores for c in after] == [c.scores for c in before]


def test_repetition_processors_count_the_generated_tokens_only() -> None:
    from transformers import NoRepeatNGramLogitsProcessor

    from loragraph.adapters.host import repetition_processors

    vocab = 12
    prompt = [7, 8, 3, 7]  # the prompt says the bigram (7, 8) and token 3
    # the answer so far ends on 7: transformers' own processor (prompt included) bans 8 after it
    ids = torch.tensor([[*prompt, 9, 7]])
    assert NoRepeatNGramLogitsProcessor(2)(ids, torch.zeros(1, vocab))[0, 8] == -float("inf")
    scores = repetition_processors(len(prompt), 1.0, 2)(ids, torch.zeros(1, vocab))
    assert torch.isfinite(scores).all()  # copying "7 8" from the prompt once is allowed
    # once the answer itself said "7 8", saying it again is banned
    again = torch.tensor([[*prompt, 7, 8, 9, 7]])
    banned = repetition_processors(len(prompt), 1.0, 2)(again, torch.zeros(1, vocab))
    assert banned[0, 8] == -float("inf") and torch.isfinite(banned[0, [i for i in range(vocab) if i != 8]]).all()
    # the penalty divides (positive) scores of generated tokens only: 3 is in the prompt, 9 generated
    penalised = repetition_processors(len(prompt), 2.0, 0)(torch.tensor([[*prompt, 9]]), torch.ones(1, vocab))
    assert penalised[0, 9] == 0.5 and penalised[0, 3] == 1.0 and penalised[0, 7] == 1.0
    assert len(repetition_processors(len(prompt), 1.0, 0)) == 0  # both off: nothing added


def test_generate_with_repetition_settings(host: AdapterHost) -> None:
    prompt = ["Where is my order? " * 3]
    plain = host.generate(None, prompt, max_new_tokens=24)[0]
    same = host.generate(None, prompt, max_new_tokens=24, repetition_penalty=1.0, no_repeat_ngram_size=0)[0]
    assert same == plain  # off is off: exactly greedy decoding
    # the random tiny base loops greedily on one (special) token, which decodes to nothing
    assert plain.output_tokens == 24 and plain.text == ""
    for curbing in ({"no_repeat_ngram_size": 1}, {"repetition_penalty": 2.0}):
        curbed = host.generate(None, prompt, max_new_tokens=24, **curbing)[0]
        assert curbed.text != "", curbing  # the loop is broken: other tokens come out
    with pytest.raises(ConfigError, match=r"`repetition_penalty` must be at least 1\.0"):
        host.generate(None, prompt, repetition_penalty=0.9)
    with pytest.raises(ConfigError, match="`no_repeat_ngram_size` must be at least 0"):
        host.generate(None, prompt, no_repeat_ngram_size=-1)
