"""Trainers on the tiny base: adapters change, the base does not; resume; early stopping; isolation."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from loragraph.adapters.base import BaseSpec, load_base
from loragraph.adapters.registry import Registry
from loragraph.errors import ConfigError, DataError
from loragraph.training.config import TrainConfig
from loragraph.training.train import EpochReport, train


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Tiny models train fastest on one thread, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PRODUCTS = ["blue kettle", "AeroPress Go", "Model X200 router", "red shoes", "desk lamp", "phone case"]
PROMPT = "Summarise the message.\n{{ text }}"


def _classify_row(rng: random.Random, i: int) -> dict[str, Any]:
    label = rng.choice(["refund_request", "order_status"])
    product = rng.choice(PRODUCTS)
    text = (
        f"I want a refund for the {product}, ticket {i}"
        if label == "refund_request"
        else f"Where is my order #A-{10000 + i}? It has the {product}."
    )
    return {"text": text, "label": label}


def _tag_row(rng: random.Random, i: int) -> dict[str, Any]:
    product, order = rng.choice(PRODUCTS), f"#A-{10000 + i}"
    text = f"My {product} from order {order} broke"
    return {
        "text": text,
        "entities": [
            {"type": "PRODUCT", "start": 3, "end": 3 + len(product)},
            {"type": "ORDER_ID", "start": text.index(order), "end": text.index(order) + len(order)},
        ],
    }


def _generate_row(rng: random.Random, i: int) -> dict[str, Any]:
    product = rng.choice(PRODUCTS)
    return {"input": {"text": f"My {product} broke, case {i}."}, "target": f"Broken {product}."}


ROWS = {"classify": _classify_row, "tag": _tag_row, "generate": _generate_row}


def write_data(folder: Path, kind: str, *, n_train: int = 16, n_eval: int = 6, seed: int = 0) -> dict[str, Path]:
    """Write train/validation/test JSONL of ``kind`` with distinct texts; returns the paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    offset = 0
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        rows = [ROWS[kind](rng, offset + i) for i in range(n)]
        offset += n
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def make_config(tmp_path: Path, tiny_base_path: Path, kind: str, name: str | None = None, **overrides: Any) -> TrainConfig:
    paths = write_data(tmp_path / "data" / (name or kind), kind)
    fields: dict[str, Any] = {
        "adapter": name or f"x{kind}",
        "kind": kind,
        "data": paths,
        "base": {"name": str(tiny_base_path), "quantization": "fp32"},
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 5e-3,
        "max_length": 64,
        "output_dir": tmp_path / "runs" / (name or kind),
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    if kind == "generate":
        fields.update(prompt=PROMPT, system="Be brief.", max_new_tokens=4, max_length=160)
    fields.update(overrides)
    return TrainConfig.model_validate(fields)


def _base_snapshot(base: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in base.model.state_dict().items()}


def _lora_b_norm(version: Any) -> float:
    from safetensors.torch import load_file

    tensors = load_file(str(version.path / "adapter_model.safetensors"))
    b = [v for k, v in tensors.items() if "lora_B" in k]
    assert b, "adapter has no lora_B weights"
    return float(sum(t.float().norm() for t in b))


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.parametrize("kind", ["classify", "tag", "generate"])
def test_training_changes_the_adapter_not_the_base(tmp_path: Path, tiny_base_path: Path, kind: str) -> None:
    cfg = make_config(tmp_path, tiny_base_path, kind)
    base = load_base(cfg.base, trainable=True)
    before = _base_snapshot(base)
    registry = Registry(tmp_path / "registry")
    version = train(cfg, registry=registry, base=base)

    # the base object is as it was: same weights, no LoRA layers left behind
    after = base.model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in n for n, _ in base.model.named_modules())
    # LoRA B starts at zero: a non-zero B proves the adapter was trained
    assert _lora_b_norm(version) > 0

    m = version.manifest
    assert version.ref == f"x{kind}@v1" and registry.promoted(f"x{kind}").version == 1
    assert m.kind == kind and m.method == ("sft" if kind == "generate" else kind)
    assert m.base_name == str(tiny_base_path) and m.base_fingerprint == base.fingerprint
    assert m.quantization == "fp32"
    assert m.data_hash == cfg.data_hash()
    assert m.hyperparameters["lora"]["r"] == 4 and m.hyperparameters["epochs"] == 2
    assert m.hyperparameters["epochs_trained"] == 2
    files = set(m.files)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    adapter_config = json.loads((version.path / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "CAUSAL_LM" and adapter_config["r"] == 4
    if kind == "classify":
        assert m.labels == ["order_status", "refund_request"]  # inferred from the data, sorted
        assert m.head is not None and m.head.labels == m.labels and "head.safetensors" in files
        assert {"accuracy", "macro_f1", "f1.order_status", "validation_macro_f1"} <= set(m.metrics)
    elif kind == "tag":
        assert m.labels == ["ORDER_ID", "PRODUCT"] and m.head is not None and m.head.kind == "tag"
        assert {"precision", "recall", "f1", "validation_f1"} <= set(m.metrics)
    else:
        assert m.prompt == PROMPT and m.system == "Be brief." and m.head is None and m.labels == []
        assert {"rougeL", "base_rougeL", "validation_loss"} <= set(m.metrics)
    # a finished run leaves nothing to resume
    assert not (cfg.run_dir / cfg.run_hash()).exists()


class _Interrupt(Exception):
    pass


def _stop_after(epoch: int) -> Any:
    def callback(report: EpochReport) -> None:
        if report.epoch >= epoch:
            raise _Interrupt(f"stopped after epoch {report.epoch}")

    return callback


@pytest.mark.parametrize("last_layers", [None, 1])  # 1: layer 0 frozen, its output cached again on resume
def test_classify_resume_continues_from_the_checkpoint_and_matches(tmp_path: Path, tiny_base_path: Path, last_layers: int | None) -> None:
    from safetensors.torch import load_file

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "last_layers": last_layers}
    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=3, early_stopping_patience=None, lora=lora)
    registry = Registry(tmp_path / "registry")
    with pytest.raises(_Interrupt):
        train(cfg, registry=registry, on_epoch_end=_stop_after(1))
    run = cfg.run_dir / cfg.run_hash()
    assert (run / "epoch-1" / "trainer_state.json").is_file()
    assert registry.names() == []  # nothing published by the interrupted run

    seen: list[int] = []
    resumed = train(cfg, registry=registry, on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [2, 3]  # continued after the checkpoint epoch
    assert resumed.manifest.hyperparameters["resumed_from_epoch"] == 1
    assert resumed.manifest.hyperparameters["epochs_trained"] == 3

    # the same config without interruption ends with the same weights
    straight = train(cfg.model_copy(update={"output_dir": tmp_path / "runs2"}), registry=registry, resume=False)
    a = load_file(str(resumed.path / "adapter_model.safetensors"))
    b = load_file(str(straight.path / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert torch.allclose(load_file(str(resumed.path / "head.safetensors"))["linear.weight"],
                          load_file(str(straight.path / "head.safetensors"))["linear.weight"], atol=1e-6)


def test_no_resume_starts_over(tmp_path: Path, tiny_base_path: Path) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "tag", epochs=2, early_stopping_patience=None)
    with pytest.raises(_Interrupt):
        train(cfg, registry=Registry(tmp_path / "r"), on_epoch_end=_stop_after(1))
    seen: list[int] = []
    version = train(cfg, registry=Registry(tmp_path / "r"), resume=False, on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [1, 2]
    assert version.manifest.hyperparameters["resumed_from_epoch"] == 0


def test_generate_resume_uses_the_trainer_checkpoint(tmp_path: Path, tiny_base_path: Path) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "generate", epochs=2, early_stopping_patience=None)
    registry = Registry(tmp_path / "registry")
    with pytest.raises(_Interrupt):
        train(cfg, registry=registry, on_epoch_end=_stop_after(1))
    checkpoints = list((cfg.run_dir / cfg.run_hash() / "trainer").glob("checkpoint-*"))
    assert len(checkpoints) == 1
    seen: list[int] = []
    version = train(cfg, registry=registry, on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [2]
    assert version.manifest.hyperparameters["resumed_from_epoch"] == 1


def test_early_stopping(tmp_path: Path, tiny_base_path: Path) -> None:
    # a learning rate this small cannot change the validation metric: no epoch improves on the first
    cfg = make_config(
        tmp_path, tiny_base_path, "classify", epochs=6, early_stopping_patience=2, learning_rate=1e-12, head_learning_rate=1e-12
    )
    seen: list[EpochReport] = []
    version = train(cfg, registry=Registry(tmp_path / "r"), on_epoch_end=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert [r.improved for r in seen] == [True, False, False]
    h = version.manifest.hyperparameters
    assert h["stopped_early"] is True and h["epochs_trained"] == 3
    assert version.manifest.metrics["best_epoch"] == 1.0


def test_generate_early_stopping(tmp_path: Path, tiny_base_path: Path) -> None:
    # no epoch can lower the validation loss by more than the threshold (1e-4) at this learning rate
    cfg = make_config(tmp_path, tiny_base_path, "generate", epochs=4, early_stopping_patience=1, learning_rate=1e-12)
    seen: list[int] = []
    version = train(cfg, registry=Registry(tmp_path / "r"), on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [1, 2]
    h = version.manifest.hyperparameters
    assert h["stopped_early"] is True and h["epochs_trained"] == 2


def test_retraining_one_adapter_leaves_every_other_byte_identical(tmp_path: Path, tiny_base_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    intent = make_config(tmp_path, tiny_base_path, "classify", name="intent", epochs=1)
    entities = make_config(tmp_path, tiny_base_path, "tag", name="entities", epochs=1)
    summary = make_config(tmp_path, tiny_base_path, "generate", name="summary", epochs=1)
    for cfg in (intent, entities, summary):
        train(cfg, registry=registry)
    before = _checksums(registry.root)

    v2 = train(entities.model_copy(update={"learning_rate": 1e-3}), registry=registry)
    assert v2.ref == "entities@v2"
    after = _checksums(registry.root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith("entities/v2/") or k == "entities/state.json" for k in changed)
    for name in ("intent", "summary"):
        assert {k: v for k, v in after.items() if k.startswith(name)} == {k: v for k, v in before.items() if k.startswith(name)}
    assert all(after[k] == v for k, v in before.items() if k.startswith("entities/v1/"))


def test_bad_data_line_is_named(tmp_path: Path, tiny_base_path: Path) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "classify")
    with open(cfg.data.train, "a") as fh:
        fh.write('{"text": "no label here"}\n')
    with pytest.raises(DataError) as info:
        train(cfg, registry=Registry(tmp_path / "r"))
    assert info.value.where == "train.jsonl:17"


def test_unknown_target_module_is_a_config_error(tmp_path: Path, tiny_base_path: Path) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "classify", lora={"target_modules": ["qkv"]})
    with pytest.raises(ConfigError, match=r"`lora\.target_modules`"):
        train(cfg, registry=Registry(tmp_path / "r"))


def test_base_quantization_must_match(tmp_path: Path, tiny_base_path: Path) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "classify")
    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    with pytest.raises(ConfigError, match=r"`base\.quantization`"):
        train(cfg.model_copy(update={"base": BaseSpec(name=str(tiny_base_path), quantization="bf16")}), base=base)



def test_a_4bit_base_loaded_for_inference_is_refused(tmp_path: Path, tiny_base_path: Path) -> None:
    """``train(base=...)`` on an nf4 base loaded without ``trainable=True``: its inference kernel
    gives wrong LoRA gradients (``make_trainable``), so the run is refused before it starts."""
    cfg = make_config(tmp_path, tiny_base_path, "classify")
    cfg = cfg.model_copy(update={"base": BaseSpec(name=str(tiny_base_path), quantization="nf4")})
    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="nf4"))
    with pytest.raises(ConfigError, match=r"trainable=True"):
        train(cfg, registry=Registry(tmp_path / "r"), base=base)
    assert not (tmp_path / "r").exists()  # nothing published
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_pooling_is_trained_stored_and_served(tmp_path: Path, tiny_base_path: Path, pooling: str) -> None:
    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.host import AdapterHost

    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1, pooling=pooling)
    registry = Registry(tmp_path / "r")
    version = train(cfg, registry=registry)
    assert version.manifest.head is not None and version.manifest.head.pooling == pooling
    assert version.manifest.hyperparameters["pooling"] == pooling
    if pooling == "attention":  # the scorer was trained: it no longer weights every token alike
        from loragraph.adapters.heads import load_head

        attend = load_head(version.path, version.manifest.head).attend
        assert attend is not None and float(attend.weight.abs().sum()) > 0
    host = AdapterHost(load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32")), registry)
    text = "where is my order"
    padded = host.classify(version, [text, text + " please, it has been two weeks and nothing came"])[0]
    alone = host.classify(version, [text])[0]
    assert padded.label == alone.label and abs(padded.score - alone.score) < 1e-4  # padding is not read


def test_tag_lookahead_is_trained_stored_and_served(tmp_path: Path, tiny_base_path: Path) -> None:
    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.host import AdapterHost

    cfg = make_config(tmp_path, tiny_base_path, "tag", epochs=1, lookahead=1)
    registry = Registry(tmp_path / "r")
    version = train(cfg, registry=registry)
    assert version.manifest.head is not None and version.manifest.head.lookahead == 1
    host = AdapterHost(load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32")), registry)
    text = "mail maria@example.com about order A-48213"
    alone = host.tag(version, [text])[0]
    batched = host.tag(version, [text, text + " and also the second parcel from last week please"])[0]
    assert alone == batched  # left padding is never read ahead
    for e in alone:
        assert text[e.start : e.end] == e.text


def test_lora_on_the_last_layers_only(tmp_path: Path, tiny_base_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1, lora={"target_modules": ["q_proj"], "last_layers": 1})
    version = train(cfg, registry=Registry(tmp_path / "r"))
    keys = list(load_file(str(version.path / "adapter_model.safetensors")))
    assert keys and all(".layers.1." in k for k in keys)  # the tiny base has layers 0 and 1
    too_many = make_config(tmp_path, tiny_base_path, "classify", name="y", lora={"last_layers": 3})
    with pytest.raises(ConfigError, match=r"`lora\.last_layers` must be at most the base's 2 layers"):
        train(too_many, registry=Registry(tmp_path / "r"))


@pytest.mark.parametrize("kind", ["classify", "tag"])
def test_frozen_layers_are_computed_once_and_train_the_same(
    tmp_path: Path, tiny_base_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LoRA on layer 1 only: layer 0's output per training text is cached before the first step,
    and the adapter comes out as it does when every step runs layer 0 (the cache turned off)."""
    from safetensors.torch import load_file

    import loragraph.training.train as trainer

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "down_proj"], "last_layers": 1}
    cached = train(make_config(tmp_path, tiny_base_path, kind, name="cached", lora=lora), registry=Registry(tmp_path / "a"))
    assert "layers 0-0 carry no LoRA: their output for the 16 training texts is computed once" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "_FROZEN_STATES_BYTES", 0)
    every = train(make_config(tmp_path, tiny_base_path, kind, name="every", lora=lora), registry=Registry(tmp_path / "b"))
    assert "every step runs them" in capsys.readouterr().err
    for name in ("adapter_model.safetensors", "head.safetensors"):
        a, b = load_file(str(cached.path / name)), load_file(str(every.path / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)
    assert cached.manifest.metrics == pytest.approx(every.manifest.metrics, abs=1e-4)
    assert _lora_b_norm(cached) > 0


@pytest.mark.slow
def test_qlora_classify_on_the_bundled_nf4_base(tmp_path: Path) -> None:
    """One short QLoRA run on the real 4-bit base: the adapter trains, the 4-bit base stays as it was."""
    from loragraph.adapters.base import DEFAULT_BASE

    paths = write_data(tmp_path / "data", "classify", n_train=8, n_eval=4)
    cfg = TrainConfig.model_validate(
        {
            "adapter": "qlora",
            "kind": "classify",
            "data": paths,
            "base": {"name": DEFAULT_BASE, "quantization": "nf4"},
            "epochs": 1,
            "batch_size": 8,
            "max_length": 32,
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "last_layers": 2},
            "output_dir": tmp_path / "runs",
        }
    )
    base = load_base(cfg.base, trainable=True)
    before = _base_snapshot(base)
    version = train(cfg, registry=Registry(tmp_path / "registry"), base=base)
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _lora_b_norm(version) > 0
    assert version.manifest.quantization == "nf4" and version.manifest.base_fingerprint == base.fingerprint


def test_classify_chooses_its_guardrail_threshold_on_the_whole_validation_split(tmp_path: Path, tiny_base_path: Path) -> None:
    from loragraph.adapters.host import AdapterHost
    from loragraph.guardrails.evaluate import choose_threshold, score_rows

    cfg = make_config(
        tmp_path, tiny_base_path, "classify", epochs=1, max_eval_examples=2,
        choose_threshold={"max_fpr": 0.2, "flag_labels": ["refund_request"]},
    )
    registry = Registry(tmp_path / "r")
    version = train(cfg, registry=registry)
    stored = version.manifest.threshold
    assert stored is not None and 0.0 <= stored <= 1.0
    assert version.manifest.hyperparameters["choose_threshold"] == {"max_fpr": 0.2, "flag_labels": ["refund_request"]}
    assert version.manifest.metrics["threshold_validation_fpr"] <= 0.2
    # the served adapter, scored on all 6 validation rows (not the 2 of `max_eval_examples`), gives the same threshold
    host = AdapterHost(load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32")), registry)
    rows = [json.loads(line) for line in cfg.data.validation.read_text().splitlines()]  # type: ignore[union-attr]
    scores, _ = score_rows(lambda t: host.classify(version, list(t)), [r["text"] for r in rows], flag_labels=["refund_request"])
    again = choose_threshold(scores, [r["label"] for r in rows], max_fpr=0.2, flag_labels=["refund_request"])
    assert again == pytest.approx(stored, abs=1e-4)


def test_choose_threshold_is_only_for_classify(tmp_path: Path, tiny_base_path: Path) -> None:
    with pytest.raises(ValueError, match="`choose_threshold` is only for `kind: classify`"):
        make_config(tmp_path, tiny_base_path, "tag", choose_threshold={"max_fpr": 0.03})
    with pytest.raises(ValueError, match=r"`choose_threshold.flag_labels` \['spam'\] are not in `labels`"):
        make_config(tmp_path, tiny_base_path, "classify", labels=["refund_request", "order_status"], choose_threshold={"flag_labels": ["spam"]})


def test_training_compute_switches_the_step_kernels_and_restores_them(tiny_base_path: Path) -> None:
    from loragraph.training.train import training_compute

    bf16 = load_base(BaseSpec(name=str(tiny_base_path), quantization="bf16"), trainable=True)
    assert bf16.model.config._attn_implementation == "sdpa"
    with training_compute(bf16):  # the config defaults: `attention: auto`, `mixed_precision: true`
        assert bf16.model.config._attn_implementation == "eager"  # `auto` on CPU
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert bf16.model.config._attn_implementation == "sdpa" and not torch.is_autocast_enabled("cpu")
    with pytest.raises(RuntimeError, match="boom"), training_compute(bf16):
        raise RuntimeError("boom")
    assert bf16.model.config._attn_implementation == "sdpa" and not torch.is_autocast_enabled("cpu")
    with training_compute(bf16, attention="sdpa", mixed_precision=False):
        assert bf16.model.config._attn_implementation == "sdpa" and not torch.is_autocast_enabled("cpu")
    fp32 = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"), trainable=True)
    with training_compute(fp32):  # an fp32 base computes in fp32: no autocast
        assert fp32.model.config._attn_implementation == "eager" and not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("quantization", ["fp32", "bf16"])
def test_fused_lora_gives_peft_outputs_and_gradients_and_is_removed_after(tiny_base_path: Path, quantization: str) -> None:
    from peft.tuners.lora import LoraLayer

    from loragraph.adapters.heads import body_hidden_states
    from loragraph.training.config import LoraSettings
    from loragraph.training.train import add_lora, training_compute

    base = load_base(BaseSpec(name=str(tiny_base_path), quantization=quantization), trainable=True)
    model = add_lora(base.model, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]), seed=0)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:  # peft starts B at zero, which would hide the LoRA term
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    ids = torch.randint(5, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # one left-padded row

    def run(fuse: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with training_compute(base, fuse_lora=fuse):
            out = body_hidden_states(model, ids, mask).float()
            assert all(("forward" in vars(m)) is fuse for m in layers)
        out[mask.bool()].square().sum().backward()
        grads = [p.grad.detach().float().clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return out, grads

    (plain, plain_grads), (fused, fused_grads) = run(False), run(True)
    assert len(plain_grads) == len(fused_grads) == 2 * len(layers)
    if quantization == "fp32":
        torch.testing.assert_close(fused[mask.bool()], plain[mask.bool()], atol=1e-5, rtol=1e-4)
        for a, b in zip(fused_grads, plain_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    else:  # bf16 autocast: the same math rounded in another order. (The gradients of this tiny random
        # model in bf16 are rounding noise: peft's own fp32 and bf16 LoRA math disagree on them as much.)
        assert float((fused - plain)[mask.bool()].norm() / plain[mask.bool()].norm()) < 0.02
    assert not any("forward" in vars(m) for m in layers)  # peft's own forward again (evaluation, serving)
    with training_compute(base), model.disable_adapter():  # a disabled adapter falls back to peft: the base alone
        off = body_hidden_states(model, ids, mask).float()
    with training_compute(base, fuse_lora=False), model.disable_adapter():
        alone = body_hidden_states(model, ids, mask).float()
    assert torch.equal(off, alone)
    model.unload()


def test_evaluation_batches_by_length_and_returns_rows_in_input_order(tiny_base_path: Path) -> None:
    from loragraph.adapters.heads import HeadConfig, build_head
    from loragraph.training.classify import predict_classify
    from loragraph.training.config import LoraSettings
    from loragraph.training.tag import predict_tag
    from loragraph.training.train import add_lora

    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"), trainable=True)
    model = add_lora(base.model, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), seed=0).eval()
    rng = random.Random(3)
    words = ["refund", "order", "kettle", "where", "is", "my", "parcel", "please", "thanks", "the"]
    # lengths in no order, more rows than one evaluation batch (32)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(45)]
    labels = ["a", "b", "c"]
    torch.manual_seed(0)
    classify = build_head(HeadConfig(kind="classify", labels=labels, hidden_size=base.hidden_size, pooling="attention")).eval()
    predicted, logits = predict_classify(model, classify, base.tokenizer, texts, max_length=64, labels=labels)
    alone = torch.cat([predict_classify(model, classify, base.tokenizer, [t], max_length=64, labels=labels)[1] for t in texts])
    torch.testing.assert_close(logits, alone, atol=1e-4, rtol=1e-4)
    assert predicted == [labels[i] for i in alone.argmax(-1).tolist()]

    tag_config = HeadConfig(kind="tag", labels=["PRODUCT", "ORDER_ID"], hidden_size=base.hidden_size)
    tagger = build_head(tag_config).eval()
    for p in tagger.parameters():  # a random head that tags some tokens
        torch.nn.init.normal_(p, std=0.5)
    spans, batches = predict_tag(model, tagger, base.tokenizer, texts, max_length=64, head_config=tag_config)
    order = [i for rows, _, _ in batches for i in rows]
    assert sorted(order) == list(range(len(texts))) and [len(texts[i]) for i in order] == sorted(map(len, texts))
    assert any(spans) and spans == [predict_tag(model, tagger, base.tokenizer, [t], max_length=64, head_config=tag_config)[0][0] for t in texts]
    model.unload()


@pytest.mark.parametrize(("kind", "fast"), [("classify", True), ("generate", True), ("classify", False)])
def test_training_steps_run_with_the_configured_kernels_and_evaluation_without(
    tmp_path: Path, tiny_base_path: Path, kind: str, fast: bool
) -> None:
    """Gradient steps see the config's kernels; evaluation and test decoding see the base's own."""
    overrides: dict[str, Any] = {"epochs": 1, "base": {"name": str(tiny_base_path), "quantization": "bf16"}}
    if not fast:
        overrides.update(attention="sdpa", mixed_precision=False)
    cfg = make_config(tmp_path, tiny_base_path, kind, **overrides)
    base = load_base(cfg.base, trainable=True)
    seen: set[tuple[bool, bool, str]] = set()

    def record(module: Any, args: Any) -> None:
        seen.add((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), base.model.config._attn_implementation))

    hook = base.model.get_decoder().layers[0].register_forward_pre_hook(record)
    try:
        version = train(cfg, registry=Registry(tmp_path / "registry"), base=base)
    finally:
        hook.remove()
    steps = {(autocast, attention) for grad, autocast, attention in seen if grad}
    assert steps == ({(True, "eager")} if fast else {(False, "sdpa")})
    assert (False, False, "sdpa") in seen  # evaluation / test decoding: as served
    assert version.manifest.hyperparameters["mixed_precision"] is fast
    assert version.manifest.hyperparameters["attention"] == ("auto" if fast else "sdpa")
    assert base.model.config._attn_implementation == "sdpa"


def test_depth_trains_and_serves_the_first_layers_only(tmp_path: Path, tiny_base_path: Path) -> None:
    """`depth: 1`: LoRA only on layer 0, the head reads layer 1's input (then the final norm),
    the manifest says so, and the host serves it the way the trainer evaluated it."""
    from safetensors.torch import load_file

    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.host import AdapterHost
    from loragraph.training.classify import predict_classify

    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1, depth=1, lora={"target_modules": ["q_proj", "down_proj"]})
    registry = Registry(tmp_path / "r")
    version = train(cfg, registry=registry)
    keys = list(load_file(str(version.path / "adapter_model.safetensors")))
    assert keys and all(".layers.0." in k for k in keys)  # the layer above is never run: no LoRA there
    assert version.manifest.head is not None and version.manifest.head.depth == 1
    assert version.manifest.hyperparameters["depth"] == 1
    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    host = AdapterHost(base, registry)
    texts = ["where is my order", "please cancel order A-48213, it has been two weeks"]
    served = host.classify(version, texts)
    mounted, head = host._head_of(version, "classify")
    host._activate(mounted)
    labels, logits = predict_classify(host.model, head, base.tokenizer, texts, max_length=64, labels=head.config.labels)
    assert [c.label for c in served] == labels
    for c, row in zip(served, logits.softmax(-1), strict=True):
        assert c.scores == pytest.approx(dict(zip(head.config.labels, row.tolist(), strict=True)), abs=1e-5)
    assert base.model.config.num_hidden_layers == 2  # restored after every truncated forward
    with pytest.raises(ConfigError, match=r"`depth` must be between 1 and the base's 2 layers, got 3"):
        train(make_config(tmp_path, tiny_base_path, "classify", name="deep", depth=3), registry=registry)
    with pytest.raises(ValueError, match=r"`lora\.last_layers` \(2\) must be at most `depth` \(1\)"):
        make_config(tmp_path, tiny_base_path, "classify", name="z", depth=1, lora={"last_layers": 2})
