from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from loragraph.adapters.heads import (
    IGNORE_INDEX,
    ClassifyHead,
    HeadConfig,
    TagHead,
    body_hidden_states,
    build_head,
    encode,
    layer_states,
    load_head,
    pool_attention,
    pool_last,
    pool_mean,
    save_head,
    spans_to_tag_ids,
    tag_ids_to_spans,
)
from loragraph.errors import ConfigError, InputError, IntegrityError

TYPES = ["EMAIL", "AMOUNT", "ADDRESS", "ORDER_ID", "PHONE", "PERSON"]
TAG = HeadConfig(kind="tag", labels=TYPES, hidden_size=64)


def _ents(text: str, *pairs: tuple[str, str]) -> list[dict[str, Any]]:
    out = []
    for etype, span in pairs:
        start = text.index(span)
        out.append({"type": etype, "text": span, "start": start, "end": start + len(span)})
    return out


EXAMPLES = [
    (
        "My password reset email never arrives at maria.lopez@example.com, please help.",
        [("EMAIL", "maria.lopez@example.com")],
    ),
    ("I want a refund, I was charged $49.99 twice for order ORD-2024-11873.", [("AMOUNT", "$49.99"), ("ORDER_ID", "ORD-2024-11873")]),
    (
        "Change the delivery address to 221B Baker Street, London NW1 6XE. Thanks, Maria Lopez",
        [("ADDRESS", "221B Baker Street, London NW1 6XE"), ("PERSON", "Maria Lopez")],
    ),
    ("Call me at +1 415 555 0134 or write to jo@shop.example about €1.250,00", [("PHONE", "+1 415 555 0134"), ("EMAIL", "jo@shop.example"), ("AMOUNT", "€1.250,00")]),
]


def test_head_config_validation_and_tags() -> None:
    assert TAG.tags[:3] == ["O", "B-EMAIL", "I-EMAIL"] and len(TAG.tags) == 1 + 2 * len(TYPES)
    assert TAG.num_outputs == len(TAG.tags)
    cls = HeadConfig(kind="classify", labels=["a", "b"], hidden_size=8)
    assert cls.tags == [] and cls.num_outputs == 2
    with pytest.raises(ValidationError, match="at least 2 labels"):
        HeadConfig(kind="classify", labels=["a"], hidden_size=8)
    with pytest.raises(ValidationError, match="unique"):
        HeadConfig(kind="classify", labels=["a", "a"], hidden_size=8)
    with pytest.raises(ValidationError, match="entity type"):
        HeadConfig(kind="tag", labels=["O"], hidden_size=8)
    with pytest.raises(ValidationError):
        HeadConfig(kind="tag", labels=["EMAIL"], hidden_size=0)


def test_heads_shapes_dtype_and_pooling() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    cls = build_head(HeadConfig(kind="classify", labels=["a", "b", "c"], hidden_size=64, dropout=0.0))
    assert isinstance(cls, ClassifyHead)
    logits = cls(hidden, mask)
    assert logits.shape == (2, 3) and logits.dtype == torch.float32
    # pool_last picks the last real token, for left and right padding alike
    right = torch.tensor([[1, 1, 1, 0, 0]])
    assert torch.equal(pool_last(hidden[:1], right), hidden[0, 2].unsqueeze(0))
    assert torch.equal(pool_last(hidden, mask), hidden[:, 4])
    with pytest.raises(InputError):
        pool_last(hidden[:1], torch.zeros(1, 5, dtype=torch.long))
    tag = build_head(TAG)
    assert isinstance(tag, TagHead)
    assert tag(hidden, mask).shape == (2, 5, len(TAG.tags))
    with pytest.raises(ConfigError):
        ClassifyHead(TAG)


def test_mean_pooling_reads_real_tokens_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.allclose(pool_mean(hidden, mask), torch.stack([hidden[0, 2:].mean(0), hidden[1].mean(0)]))
    # padding never changes a row's result, whatever the padded positions hold
    noisy = hidden.clone()
    noisy[0, :2] = 1e4
    assert torch.allclose(pool_mean(noisy, mask), pool_mean(hidden, mask))
    with pytest.raises(InputError):
        pool_mean(hidden[:1], torch.zeros(1, 5, dtype=torch.long))
    config = HeadConfig(kind="classify", labels=["a", "b"], hidden_size=8, dropout=0.0, pooling="mean")
    head = build_head(config)
    assert torch.allclose(head(noisy, mask), head.linear(pool_mean(hidden, mask)))  # type: ignore[operator]
    loaded = load_head(save_head(head, tmp_path))
    assert loaded.config.pooling == "mean"
    assert torch.allclose(loaded(hidden, mask), head(hidden, mask))
    assert HeadConfig(kind="classify", labels=["a", "b"], hidden_size=8).pooling == "last"  # old manifests


def test_attention_pooling_starts_as_mean_and_learns_which_tokens_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    config = HeadConfig(kind="classify", labels=["a", "b"], hidden_size=8, dropout=0.0, pooling="attention")
    head = build_head(config)
    assert isinstance(head, ClassifyHead) and head.attend is not None
    # a new head weights every real token alike: exactly mean pooling
    assert torch.allclose(head(hidden, mask), head.linear(pool_mean(hidden, mask)), atol=1e-6)
    # a scorer that prefers one token makes the pooled state lean to it; pads get no weight
    with torch.no_grad():
        head.attend.weight.copy_(hidden[0, 3] * 50)
    weights = head.token_weights(hidden, mask)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    assert torch.equal(weights[0, :2], torch.zeros(2))
    assert int(weights[0].argmax()) == 3 and float(weights[0, 3]) > 0.5
    noisy = hidden.clone()
    noisy[0, :2] = 1e4
    assert torch.allclose(head(noisy, mask), head(hidden, mask))  # padding is never read
    assert torch.allclose(pool_attention(hidden, weights)[1], (weights[1].unsqueeze(-1) * hidden[1]).sum(0))
    loaded = load_head(save_head(head, tmp_path))
    assert loaded.config.pooling == "attention"
    assert torch.allclose(loaded(hidden, mask), head(hidden, mask))
    with pytest.raises(InputError):
        head(hidden[:1], torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match="pooling: attention"):
        build_head(config.model_copy(update={"pooling": "mean"})).token_weights(hidden, mask)  # type: ignore[union-attr]


def test_tag_lookahead_reads_the_next_tokens_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = HeadConfig(kind="tag", labels=["EMAIL"], hidden_size=8, lookahead=1)
    head = build_head(config)
    assert head.linear.in_features == 16
    hidden = torch.randn(1, 4, 8)
    mask = torch.ones(1, 4, dtype=torch.long)
    base = head(hidden, mask)
    # token 1 reads tokens 1 and 2; changing token 3 changes tokens 2 and 3 only
    changed = hidden.clone()
    changed[0, 3] += 5.0
    out = head(changed, mask)
    assert torch.equal(out[0, :2], base[0, :2]) and not torch.allclose(out[0, 2:], base[0, 2:])
    # the last token reads zeros past the end; padding (left) is never read
    w = head.linear.weight
    assert torch.allclose(base[0, 3], hidden[0, 3] @ w[:, :8].T + head.linear.bias)
    padded = torch.cat([torch.full((1, 2, 8), 1e3), hidden], dim=1)
    out = head(padded, torch.tensor([[0, 0, 1, 1, 1, 1]]))
    assert torch.allclose(out[0, 2:], base[0], atol=1e-5)
    loaded = load_head(save_head(head, tmp_path), config)
    assert torch.allclose(loaded(hidden, mask), base)
    with pytest.raises(ValidationError, match="only for tag heads"):
        HeadConfig(kind="classify", labels=["a", "b"], hidden_size=8, lookahead=1)


def test_save_and_load_head_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    head = build_head(TAG)
    path = save_head(head, tmp_path)
    assert path.name == "head.safetensors"
    loaded = load_head(tmp_path, TAG)
    for key, value in head.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert load_head(path).config == TAG  # config from the file's metadata
    with pytest.raises(IntegrityError, match="differs from the manifest"):
        load_head(path, HeadConfig(kind="tag", labels=["EMAIL"], hidden_size=64))
    bad = tmp_path / "head.bin"
    bad.write_bytes(b"x")
    with pytest.raises(IntegrityError, match="safetensors"):
        load_head(bad)


def test_body_hidden_states_left_padding_matches_unpadded(tiny_base: Any) -> None:
    tok, model = tiny_base.tokenizer, tiny_base.model
    texts = ["Where is my order?", "I want a refund for the blue kettle, I was charged twice."]
    enc = encode(tok, texts, 64)
    assert enc["attention_mask"][0, 0] == 0  # left padding
    with torch.inference_mode():
        batch = body_hidden_states(model, enc["input_ids"], enc["attention_mask"])
        single = encode(tok, texts[:1], 64)
        alone = body_hidden_states(model, single["input_ids"], single["attention_mask"])
        full = model(**single, output_hidden_states=True)
    n = alone.shape[1]
    assert batch.shape == (2, enc["input_ids"].shape[1], tiny_base.hidden_size)
    assert torch.allclose(batch[0, -n:], alone[0], atol=1e-5)
    # the body's output is the final (normed) hidden state the lm_head reads
    assert torch.allclose(full.hidden_states[-1], alone, atol=1e-5)


def test_body_hidden_states_depth_runs_only_the_first_layers(tiny_base: Any) -> None:
    tok, model = tiny_base.tokenizer, tiny_base.model
    enc = encode(tok, ["Where is my order?", "Refund the blue kettle, I was charged twice."], 64)
    layers = model.config.num_hidden_layers
    body = model.get_decoder()
    calls: list[int] = []
    hooks = [layer.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, layer in enumerate(body.layers)]
    try:
        with torch.inference_mode():
            full = model(**enc, output_hidden_states=True, position_ids=enc["attention_mask"].long().cumsum(-1).clamp(min=1) - 1)
            calls.clear()
            shallow = body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=1)
            assert calls == [0]  # the layers above are not run at all
            whole = body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=layers)
    finally:
        for hook in hooks:
            hook.remove()
    mask = enc["attention_mask"].bool()
    # layer 1's output, through the final norm, at every real token
    assert torch.allclose(shallow[mask], body.norm(full.hidden_states[1])[mask], atol=1e-5)
    assert torch.allclose(whole[mask], full.hidden_states[-1][mask], atol=1e-5)
    assert model.config.num_hidden_layers == layers  # restored
    with pytest.raises(ConfigError, match=rf"`depth` must be between 1 and the base's {layers} layers, got {layers + 1}"):
        body_hidden_states(model, enc["input_ids"], enc["attention_mask"], depth=layers + 1)
    assert model.config.num_hidden_layers == layers


def test_body_continues_from_cached_layer_states(tiny_base: Any) -> None:
    """`layer_states` (the residual stream after layer 0, computed row by row, unpadded) left-padded
    into a batch and continued from layer 1 gives the whole body's output at every real token."""
    tok, model = tiny_base.tokenizer, tiny_base.model
    body = model.get_decoder()
    texts = ["Where is my order?", "Refund the blue kettle, I was charged twice."]
    enc = encode(tok, texts, 64)
    mask = enc["attention_mask"]
    width = enc["input_ids"].shape[1]
    layers, norm = body.layers, body.norm
    with torch.inference_mode():
        whole = body_hidden_states(model, enc["input_ids"], mask)
        rows = []
        for text in texts:
            single = encode(tok, [text], 64)
            state = layer_states(model, single["input_ids"], single["attention_mask"], layers=1)[0]
            rows.append(torch.cat([state.new_zeros(width - state.shape[0], state.shape[1]), state]))
        continued = body_hidden_states(model, None, mask, states=torch.stack(rows), first_layer=1)
        # no final norm on the cached states: layer 0's output as the body's hidden_states[1]
        single = encode(tok, texts[:1], 64)
        raw = model(**single, output_hidden_states=True, position_ids=single["attention_mask"].long().cumsum(-1) - 1)
        assert torch.allclose(layer_states(model, single["input_ids"], single["attention_mask"], layers=1), raw.hidden_states[1], atol=1e-5)
    assert torch.allclose(continued[mask.bool()], whole[mask.bool()], atol=1e-5)
    assert body.layers is layers and body.norm is norm and model.config.num_hidden_layers == 2  # restored
    with pytest.raises(ConfigError, match=r"`states` and `first_layer` go together"):
        body_hidden_states(model, enc["input_ids"], mask, first_layer=1)
    with pytest.raises(ConfigError, match=r"first layer must be between 0 and 0 \(the layer below `depth` 1\), got 1"):
        body_hidden_states(model, None, mask, states=torch.stack(rows), first_layer=1, depth=1)
    assert body.layers is layers and model.config.num_hidden_layers == 2


def test_body_hidden_states_uses_active_lora(tiny_base_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_path).eval()
    enc = encode(tok, ["Cancel order ORD-2024-11873 please"], 32)
    with torch.inference_mode():
        plain = body_hidden_states(model, enc["input_ids"], enc["attention_mask"])
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    with torch.inference_mode():
        adapted = body_hidden_states(peft, enc["input_ids"], enc["attention_mask"])
        with peft.disable_adapter():
            disabled = body_hidden_states(peft, enc["input_ids"], enc["attention_mask"])
        mixed = body_hidden_states(peft, enc["input_ids"], enc["attention_mask"], adapter_names=["__base__"])
    assert not torch.allclose(adapted, plain, atol=1e-4)
    assert torch.allclose(disabled, plain, atol=1e-6)
    assert torch.allclose(mixed, plain, atol=1e-6)
    with pytest.raises(ConfigError, match="adapter_names"):
        plain_model = AutoModelForCausalLM.from_pretrained(tiny_base_path)
        body_hidden_states(plain_model, enc["input_ids"], enc["attention_mask"], adapter_names=["x"])


def test_encode_rejects_empty_input(tiny_base: Any) -> None:
    with pytest.raises(InputError, match=r"`texts\[1\]`"):
        encode(tiny_base.tokenizer, ["ok", "  "], 16)
    with pytest.raises(InputError):
        encode(tiny_base.tokenizer, "one string", 16)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "pairs"), EXAMPLES)
def test_spans_roundtrip_exact_offsets(tiny_base: Any, text: str, pairs: list[tuple[str, str]]) -> None:
    entities = _ents(text, *pairs)
    # batch with a shorter text so this row carries no padding and the other one does
    enc = encode(tiny_base.tokenizer, [text, "hi"], 256)
    offsets = enc["offset_mapping"][0]
    ids = spans_to_tag_ids(offsets, entities, TAG)
    assert len(ids) == enc["input_ids"].shape[1]
    assert ids.count(TAG.tags.index(f"B-{pairs[0][0]}")) >= 1
    spans = tag_ids_to_spans(text, offsets, ids, TAG)
    assert spans == entities
    for span in spans:
        assert text[span["start"] : span["end"]] == span["text"]
    # the padded row: pads are IGNORE_INDEX, and decoding them yields nothing
    pad_ids = spans_to_tag_ids(enc["offset_mapping"][1], [], TAG)
    assert pad_ids[0] == IGNORE_INDEX and set(pad_ids) <= {IGNORE_INDEX, 0}


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("Mail maria@example.com.", "maria@example.com.", "maria@example.com"),  # `com.` is one token
        ("Call +1 415 555 0134, thanks", "+1 415 555 0134,", "+1 415 555 0134"),
        ("It works with the (smart thermostat).", "smart thermostat).", "smart thermostat"),
        ("Refund #A-48213?!", "#A-48213?!", "#A-48213"),
        ("Ship to 221B Baker St. please", "221B Baker St.", "221B Baker St."),  # an abbreviation keeps its stop
        ("Ask Tom Smith Jr.", "Tom Smith Jr.", "Tom Smith Jr."),
        ("Is the Model (X200) in stock", "Model (X200)", "Model (X200)"),  # a bracket the span opened stays
        ("Send it to London NW1 6XE.\n", "London NW1 6XE.\n", "London NW1 6XE"),
    ],
)
def test_decoded_spans_drop_punctuation_a_token_glued_to_them(tiny_base: Any, text: str, entity: str, expected: str) -> None:
    """A token that covers an entity's end and the punctuation after it must not stretch the span."""
    start = text.index(entity)
    enc = encode(tiny_base.tokenizer, [text], 64)
    offsets = enc["offset_mapping"][0]
    # tag every token overlapping the over-long span, as a model that learnt the gold spans would
    ids = spans_to_tag_ids(offsets, [{"type": "ADDRESS", "start": start, "end": start + len(entity)}], TAG)
    [span] = tag_ids_to_spans(text, offsets, ids, TAG)
    assert span["text"] == expected == text[span["start"] : span["end"]]
    assert span["start"] == start


def _email_ids(tiny_base: Any, text: str, entity: str) -> tuple[Any, list[int], list[int]]:
    """Offsets, tag ids of ``entity`` as an EMAIL span, and the indices of its tokens."""
    start = text.index(entity)
    offsets = encode(tiny_base.tokenizer, [text], 64)["offset_mapping"][0]
    ids = spans_to_tag_ids(offsets, [{"type": "EMAIL", "start": start, "end": start + len(entity)}], TAG)
    inside = [i for i, t in enumerate(ids) if t not in (0, IGNORE_INDEX)]
    assert len(inside) >= 3, "the email must span several tokens for this test"
    return offsets, ids, inside


def test_decoding_repairs_an_entity_begun_twice_or_cut_inside_a_word(tiny_base: Any) -> None:
    text = "Mail michael.wolf@outlook.com now"
    email = {"type": "EMAIL", "text": "michael.wolf@outlook.com", "start": 5, "end": 29}
    offsets, ids, inside = _email_ids(tiny_base, text, email["text"])
    b_email = TAG.tags.index("B-EMAIL")
    # the tagger began the entity again on its second token: one span, not two
    twice = list(ids)
    twice[inside[1]] = b_email
    assert tag_ids_to_spans(text, offsets, twice, TAG) == [email]
    # the tagger missed the first sub-word token: the span still covers the whole word
    missed = list(ids)
    missed[inside[0]], missed[inside[1]] = 0, b_email
    assert tag_ids_to_spans(text, offsets, missed, TAG) == [email]
    # two entities of one type apart by a space are one entity begun twice...
    names = "Hi Georgia Simmons here"
    offsets = encode(tiny_base.tokenizer, [names], 64)["offset_mapping"][0]
    first = spans_to_tag_ids(offsets, [{"type": "PERSON", "start": 3, "end": 10}], TAG)
    second = spans_to_tag_ids(offsets, [{"type": "PERSON", "start": 11, "end": 18}], TAG)
    both = [a if a not in (0, IGNORE_INDEX) else b for a, b in zip(first, second, strict=True)]
    assert tag_ids_to_spans(names, offsets, both, TAG) == [
        {"type": "PERSON", "text": "Georgia Simmons", "start": 3, "end": 18}
    ]
    # ...but not across punctuation, and never across types
    listed = "Georgia, Simmons"
    offsets = encode(tiny_base.tokenizer, [listed], 64)["offset_mapping"][0]
    ids = spans_to_tag_ids(
        offsets, [{"type": "PERSON", "start": 0, "end": 7}, {"type": "PERSON", "start": 9, "end": 16}], TAG
    )
    assert [e["text"] for e in tag_ids_to_spans(listed, offsets, ids, TAG)] == ["Georgia", "Simmons"]


def test_tag_ids_decoding_rules() -> None:
    text = "ab cd ef"
    offsets = [(0, 0), (0, 2), (2, 5), (5, 8)]  # special token first; byte-level tokens carry their leading space
    b_email, i_email, b_amount = TAG.tags.index("B-EMAIL"), TAG.tags.index("I-EMAIL"), TAG.tags.index("B-AMOUNT")
    assert tag_ids_to_spans(text, offsets, [IGNORE_INDEX, b_email, i_email, 0], TAG) == [
        {"type": "EMAIL", "text": "ab cd", "start": 0, "end": 5}
    ]
    # an I- that does not continue a span starts one; a B- right after a span starts a new one
    assert tag_ids_to_spans(text, offsets, [0, i_email, b_amount, b_email], TAG) == [
        {"type": "EMAIL", "text": "ab", "start": 0, "end": 2},
        {"type": "AMOUNT", "text": "cd", "start": 3, "end": 5},
        {"type": "EMAIL", "text": "ef", "start": 6, "end": 8},
    ]
    # ...except that two pieces of one type apart by spaces only are one entity begun twice
    assert tag_ids_to_spans(text, offsets, [0, i_email, b_amount, b_amount], TAG) == [
        {"type": "EMAIL", "text": "ab", "start": 0, "end": 2},
        {"type": "AMOUNT", "text": "cd ef", "start": 3, "end": 8},
    ]
    with pytest.raises(ConfigError, match="not one of"):
        spans_to_tag_ids(offsets, [{"type": "NOPE", "start": 0, "end": 2}], TAG)
    with pytest.raises(ConfigError, match="overlap"):
        spans_to_tag_ids(offsets, [{"type": "EMAIL", "start": 0, "end": 4}, {"type": "EMAIL", "start": 3, "end": 5}], TAG)


def test_length_batches_cover_every_row_once_shortest_first() -> None:
    from loragraph.adapters.heads import length_batches

    texts = ["a much longer message than the rest", "hi", "where is it", "x" * 80, "refund", "ok"]
    batches = length_batches(texts, 4)
    assert [len(b) for b in batches] == [4, 2]
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    lengths = [len(texts[i]) for b in batches for i in b]
    assert lengths == sorted(lengths)
    assert batches[0][:2] == [1, 5]  # equal lengths keep their input order
    assert length_batches([], 4) == []
    with pytest.raises(ConfigError, match="batch_size"):
        length_batches(texts, 0)
