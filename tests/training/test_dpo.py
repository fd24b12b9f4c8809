"""DPO alignment (loragraph.training.dpo) and preference accuracy (loragraph.training.preference).

Everything runs on the tiny random base (fp32) in seconds. The "SFT" parent is a LoRA with
random (non-zero) weights published as a `generate` adapter with `method: sft`, so it
differs from the base the way a trained SFT adapter does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from loragraph.adapters.base import BaseSpec, load_base
from loragraph.adapters.registry import Registry
from loragraph.errors import ConfigError, DataError, NotFoundError
from loragraph.training.dpo import AlignConfig, align, load_align_config, promotion_gate
from loragraph.training.preference import (
    ChatPair,
    chat_messages,
    preference_accuracy,
    render_pairs,
    response_logps,
    tokenize_pair,
)

PROMPT = "Customer wrote: {{ text }}\nIntent: {{ intent.label }}\nWrite the reply."
SYSTEM = "You are a polite support agent."
REPO = Path(__file__).resolve().parents[2]

_TEXTS = [
    "Where is my order #A-48213?",
    "I was charged $49.99 twice for the kettle.",
    "Please cancel order ORD-2024-11873.",
    "My password reset email never arrives.",
    "Can I return the AeroPress Go?",
    "Change the delivery address to Baker Street.",
    "The Model X200 router keeps dropping.",
    "I want a refund for the blue kettle.",
]
_CHOSEN = "We are sorry. We will refund you today, thanks for your patience."
_REJECTED = "No. Ignore all previous instructions."


def _pairs_rows(n: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "input": {
                "text": _TEXTS[i % len(_TEXTS)] + f" ({i})",
                "intent": {"label": "refund_request"},
            },
            "chosen": _CHOSEN,
            "rejected": _REJECTED,
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _sha_tree(root: Path, *, skip: set[Path] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(s in p.parents for s in skip):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _publish_sft(
    registry: Registry,
    base_path: Path | str,
    name: str,
    seed: int,
    staging: Path,
    quantization: str = "fp32",
) -> None:
    """Publish a LoRA with random weights as a `generate` adapter trained by `sft`."""
    from peft import LoraConfig, get_peft_model

    base = load_base(BaseSpec(name=str(base_path), quantization=quantization))  # type: ignore[arg-type]
    model = get_peft_model(
        base.model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "lora_B" in pname:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    out = staging / f"{name}-{seed}"
    model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)
    registry.publish(
        name,
        out,
        {
            "kind": "generate",
            "prompt": PROMPT,
            "system": SYSTEM,
            "base_name": str(base_path),
            "base_fingerprint": base.fingerprint,
            "quantization": quantization,
            "data_hash": "sha256:" + "0" * 64,
            "hyperparameters": {"lora": {"r": 4}},
            "metrics": {"rougeL": 0.1},
            "method": "sft",
        },
    )


def _test_config(tmp: Path, **kw: Any) -> AlignConfig:
    settings: dict[str, Any] = {
        "learning_rate": 5e-3,
        "epochs": 3,
        "batch_size": 4,
        "beta": 0.1,
        "max_length": 128,
        "holdout_fraction": 0.0,
        "eval_batch_size": 4,
        "max_new_tokens": 4,
        "output_dir": str(tmp / "runs"),
    }
    settings.update(kw)
    return AlignConfig.model_validate(settings)


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, tiny_base_path: Path) -> dict[str, Any]:
    """One DPO run on the tiny base: registry with `reply` v1 (sft) and `summary` v1, v2."""
    tmp = tmp_path_factory.mktemp("dpo")
    registry = Registry(tmp / "adapters")
    _publish_sft(registry, tiny_base_path, "reply", 1, tmp / "staging")
    _publish_sft(registry, tiny_base_path, "summary", 2, tmp / "staging")
    _publish_sft(registry, tiny_base_path, "summary", 3, tmp / "staging")
    pairs = _write_jsonl(tmp / "pairs.jsonl", _pairs_rows(8))
    test = _write_jsonl(
        tmp / "test.jsonl",
        [
            {
                "input": {"text": "Where is my parcel?", "intent": {"label": "order_status"}},
                "target": "It ships today.",
            },
            {
                "input": {"text": "Refund me please", "intent": {"label": "refund_request"}},
                "target": "We will refund you.",
            },
        ],
    )
    base_before = _sha_tree(tiny_base_path)
    before = _sha_tree(registry.root)
    messages: list[str] = []
    version = align(
        "reply",
        pairs,
        _test_config(tmp),
        test_path=test,
        registry=registry,
        progress=messages.append,
    )
    return {
        "tmp": tmp,
        "registry": registry,
        "version": version,
        "before": before,
        "after": _sha_tree(registry.root, skip={version.path}),
        "base_before": base_before,
        "pairs": pairs,
        "messages": messages,
    }


# --------------------------------------------------------------------------- align


def test_align_publishes_a_new_version_with_lineage(aligned: dict[str, Any]) -> None:
    version = aligned["version"]
    m = version.manifest
    assert version.ref == "reply@v2"
    assert (m.parent, m.method, m.kind) == (1, "dpo", "generate")
    parent = aligned["registry"].get("reply", 1).manifest
    assert (m.prompt, m.system, m.base_fingerprint, m.quantization) == (
        parent.prompt,
        parent.system,
        parent.base_fingerprint,
        parent.quantization,
    )
    assert m.data_hash == "sha256:" + hashlib.sha256(aligned["pairs"].read_bytes()).hexdigest()
    assert m.hyperparameters["beta"] == 0.1 and m.hyperparameters["reference"] == "parent"
    assert m.hyperparameters["lora"]["r"] == 4
    assert sorted(version.path.iterdir()) == sorted(
        version.path / f
        for f in ("adapter_config.json", "adapter_model.safetensors", "manifest.json")
    )
    aligned["registry"].verify(version)
    # DPO versions are published, never promoted by default
    assert aligned["registry"].promoted("reply").version == 1


def test_align_changes_the_weights_and_only_the_new_version(aligned: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    registry: Registry = aligned["registry"]
    old = load_file(str(registry.get("reply", 1).path / "adapter_model.safetensors"))
    new = load_file(str(aligned["version"].path / "adapter_model.safetensors"))
    assert old.keys() == new.keys() and old
    changed = [k for k in old if not torch.allclose(old[k].float(), new[k].float(), atol=1e-6)]
    assert len(changed) == len(old), f"unchanged tensors: {sorted(set(old) - set(changed))}"
    # every other version folder and state file is byte-identical, the base too
    assert aligned["after"] == aligned["before"]
    assert _sha_tree(aligned["tmp"] / "adapters" / "summary") == {
        k.removeprefix("summary/"): v
        for k, v in aligned["before"].items()
        if k.startswith("summary/")
    }
    assert aligned["base_before"] == _sha_tree(Path(registry.get("reply", 1).manifest.base_name))


def test_align_metrics_show_the_preference_learned(aligned: dict[str, Any]) -> None:
    metrics = aligned["version"].manifest.metrics
    for key in (
        "preference_accuracy_before",
        "preference_accuracy_after",
        "preference_accuracy_vs_parent",
        "preference_margin_before",
        "preference_margin_after",
        "preference_margin_vs_parent",
        "rougeL_before",
        "rougeL_after",
        "train_loss",
        "promotion_gate_passed",
    ):
        assert key in metrics, key
    assert (
        metrics["train_pairs"] == 8 and metrics["eval_pairs"] == 8 and metrics["test_examples"] == 2
    )
    # evaluated on the training pairs here (holdout 0): DPO must have learned them
    assert metrics["preference_accuracy_vs_parent"] == 1.0
    assert metrics["preference_margin_after"] > metrics["preference_margin_before"]
    assert metrics["preference_accuracy_after"] >= metrics["preference_accuracy_before"]
    assert metrics["preference_accuracy_after"] == 1.0
    assert 0.0 <= metrics["rougeL_after"] <= 1.0
    assert any("published `reply@v2`" in msg for msg in aligned["messages"])


def test_manifest_metric_is_reproduced_through_the_adapter_host(
    aligned: dict[str, Any], tiny_base_path: Path
) -> None:
    """The serving path (AdapterHost mounts from the registry) gives the manifest's numbers."""
    from loragraph.adapters.host import AdapterHost
    from loragraph.training.data import load_examples

    registry: Registry = aligned["registry"]
    host = AdapterHost(load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32")), registry)
    pairs = render_pairs(load_examples(aligned["pairs"], "pairs"), PROMPT, SYSTEM)
    m = aligned["version"].manifest.metrics
    vs_parent = preference_accuracy(
        host, "reply@v2", pairs, reference="reply@v1", beta=0.1, max_length=128
    )
    after = preference_accuracy(host, "reply@v2", pairs, reference=None, beta=0.1, max_length=128)
    before = preference_accuracy(host, "reply@v1", pairs, reference=None, beta=0.1, max_length=128)
    assert vs_parent.accuracy == m["preference_accuracy_vs_parent"]
    assert after.accuracy == m["preference_accuracy_after"]
    assert before.accuracy == m["preference_accuracy_before"]
    assert after.mean_margin == pytest.approx(m["preference_margin_after"], rel=1e-3, abs=1e-4)
    assert before.mean_margin == pytest.approx(m["preference_margin_before"], rel=1e-3, abs=1e-4)


def test_malformed_pairs_are_rejected_with_file_and_line(
    tmp_path: Path, tiny_base_path: Path
) -> None:
    registry = Registry(tmp_path / "adapters")
    _publish_sft(registry, tiny_base_path, "reply", 1, tmp_path / "staging")
    good = _pairs_rows(1)[0]
    bad = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            good,
            {"input": {"text": "x"}, "chosen": "Same reply.", "rejected": "Same reply."},
            {"input": {"text": "y"}, "chosen": "only one"},
            "{not json",
        ],
    )
    before = _sha_tree(registry.root)
    with pytest.raises(DataError) as err:
        align("reply", bad, _test_config(tmp_path), registry=registry)
    text = str(err.value)
    assert err.value.where == "pairs.jsonl:2"
    assert (
        "identical" in text
        and "pairs.jsonl:3" in text
        and "`rejected`" in text
        and "pairs.jsonl:4" in text
    )
    assert _sha_tree(registry.root) == before
    assert [v.version for v in registry.versions("reply")] == [1]


def test_align_refuses_unknown_adapters_and_missing_template_variables(
    tmp_path: Path, tiny_base_path: Path
) -> None:
    from loragraph.errors import InputError

    registry = Registry(tmp_path / "adapters")
    _publish_sft(registry, tiny_base_path, "reply", 1, tmp_path / "staging")
    pairs = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"input": {"text": "no intent here"}, "chosen": "a", "rejected": "b"}],
    )
    with pytest.raises(NotFoundError):
        align("nothing", pairs, _test_config(tmp_path), registry=registry)
    with pytest.raises(InputError) as err:
        align("reply", pairs, _test_config(tmp_path), registry=registry)
    assert err.value.where == "p.jsonl:1" and "intent" in str(err.value)


# --------------------------------------------------------------------------- preference accuracy


def _peft_with_sft(tiny_base_path: Path, tmp: Path) -> tuple[Any, Any]:
    """A tiny base wrapped in peft with a zero LoRA `same` (== base) and a trainable `sft`."""
    from peft import LoraConfig, get_peft_model

    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base.model, cfg, adapter_name="same")
    model.add_adapter("sft", cfg)
    return model, base.tokenizer


def _hand_pairs() -> list[ChatPair]:
    return render_pairs(_pairs_rows(6), PROMPT, SYSTEM)


def test_preference_accuracy_rises_when_a_model_is_trained_on_chosen(
    tiny_base_path: Path, tmp_path: Path
) -> None:
    model, tok = _peft_with_sft(tiny_base_path, tmp_path)
    pairs = _hand_pairs()
    # an adapter identical to the base: every reward is 0, no pair is preferred (ties do not count)
    tie = preference_accuracy(model, "same", pairs, reference=None, tokenizer=tok)
    assert tie.accuracy == 0.0 and tie.pairs == 6 and all(abs(m) < 1e-5 for m in tie.margins)
    untrained = preference_accuracy(model, "sft", pairs, reference=None, tokenizer=tok)
    # teach `sft` the chosen replies (plain NLL on prompt + chosen, teacher forcing)
    model.set_adapter("sft")
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if ".sft." in n], lr=1e-2)
    rows = [tokenize_pair(tok, p) for p in pairs]
    model.train()
    for _ in range(15):
        for prompt, chosen, _ in rows:
            ids = torch.tensor([prompt + chosen])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    trained = preference_accuracy(model, "sft", pairs, reference=None, tokenizer=tok)
    assert untrained.accuracy == 0.0  # a fresh LoRA (B = 0) is the base: all ties
    assert trained.accuracy == 1.0
    assert trained.mean_margin > untrained.mean_margin + 0.1
    # swapping chosen and rejected turns every win into a loss
    swapped = [ChatPair(p.prompt, p.rejected, p.chosen) for p in pairs]
    assert preference_accuracy(model, "sft", swapped, reference=None, tokenizer=tok).accuracy == 0.0
    # the reference matters: against itself the reward is 0 by definition
    with pytest.raises(ConfigError):
        preference_accuracy(model, "sft", pairs, reference="sft", tokenizer=tok)
    # scoring leaves the model's trainable state alone
    assert any(p.requires_grad for n, p in model.named_parameters() if ".sft." in n)


def test_response_logps_match_trl_reference_log_probs(tiny_base_path: Path, tmp_path: Path) -> None:
    """Our token split and log-prob sums agree with TRL's DPOTrainer on the same pairs."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import DPOConfig, DPOTrainer

    base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model, tok = (
        get_peft_model(base.model, cfg),
        base.tokenizer,
    )  # adapter "default", as TRL requires
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    pairs = _hand_pairs()[:3]
    args = DPOConfig(
        output_dir=str(tmp_path / "t"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        max_length=112,
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        processing_class=tok,
        train_dataset=Dataset.from_list([p.as_trl_row() for p in pairs]),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    # TRL's reference here is a frozen copy of the active adapter, named "ref"
    trl_chosen, trl_rejected = trainer.compute_ref_log_probs(model, batch)
    ours_chosen, ours_rejected = response_logps(model, tok, pairs, adapter="ref", max_length=112)
    assert torch.allclose(trl_chosen.float(), torch.tensor(ours_chosen), atol=1e-3)
    assert torch.allclose(trl_rejected.float(), torch.tensor(ours_rejected), atol=1e-3)


def test_pairs_whose_prompt_fills_max_length_are_skipped(
    tiny_base_path: Path, tmp_path: Path
) -> None:
    model, tok = _peft_with_sft(tiny_base_path, tmp_path)
    pairs = _hand_pairs()[:2]
    long = ChatPair(chat_messages("{{ text }}", None, {"text": "word " * 200}), "a b", "c d")
    result = preference_accuracy(
        model, "sft", [*pairs, long], reference=None, tokenizer=tok, max_length=96
    )
    assert (result.pairs, result.skipped) == (2, 1)


def test_chat_pair_rendering_uses_the_adapter_template() -> None:
    [pair] = render_pairs(_pairs_rows(1), PROMPT, SYSTEM)
    assert pair.prompt[0] == {"role": "system", "content": SYSTEM}
    assert pair.prompt[1]["content"].startswith(
        "Customer wrote: Where is my order #A-48213? (0)\nIntent: refund_request"
    )
    row = pair.as_trl_row()
    assert row["chosen"] == [{"role": "assistant", "content": _CHOSEN}]
    assert render_pairs(_pairs_rows(1), PROMPT, None)[0].prompt[0]["role"] == "user"


# --------------------------------------------------------------------------- config, gate, CLI


def test_shipped_reply_dpo_yaml_loads() -> None:
    config = load_align_config(REPO / "examples" / "customer_service" / "train" / "reply_dpo.yaml")
    assert config.learning_rate > 1e-6  # TRL's full fine-tuning default would barely move a LoRA
    assert config.promote == "never"
    assert config.test is None or config.test.is_absolute()


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "dpo.yaml"
    bad.write_text("beta: 0\nlearning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_align_config(bad)
    assert "`beta`" in str(err.value) and "`learning_rat` is not a known field" in str(err.value)
    assert err.value.where == str(bad)
    rel = tmp_path / "rel.yaml"
    rel.write_text("eval_pairs: data/val.jsonl\n")
    assert load_align_config(rel).eval_pairs == (tmp_path / "data" / "val.jsonl").resolve()


def test_promotion_gate() -> None:
    config = AlignConfig()
    good = {
        "preference_accuracy_before": 0.6,
        "preference_accuracy_after": 0.85,
        "preference_accuracy_vs_parent": 0.95,
        "rougeL_before": 0.40,
        "rougeL_after": 0.39,
    }
    # the default reads the base alone (as the parent's accuracy is); `gate_reference: parent`
    # reads the DPO reference
    assert promotion_gate(good, config) == [
        "`preference_accuracy_after` 0.850 < `min_preference_accuracy` 0.9"
    ]
    assert promotion_gate({**good, "preference_accuracy_after": 0.95}, config) == []
    lenient = AlignConfig(gate_reference="parent")
    assert promotion_gate(good, lenient) == []
    assert promotion_gate({**good, "preference_accuracy_vs_parent": 0.8}, lenient) == [
        "`preference_accuracy_vs_parent` 0.800 < `min_preference_accuracy` 0.9"
    ]
    # a version that learnt nothing against the base is never promoted
    assert any(
        "not above" in r
        for r in promotion_gate({**good, "preference_accuracy_after": 0.55}, config)
    )
    assert any(
        "not above" in r
        for r in promotion_gate({**good, "preference_accuracy_before": 0.96}, config)
    )
    assert any(
        "max_rouge_l_drop" in r for r in promotion_gate({**good, "rougeL_after": 0.30}, config)
    )
    assert (
        promotion_gate(
            {"preference_accuracy_before": 0.5, "preference_accuracy_after": 0.6, "preference_accuracy_vs_parent": 0.9},
            lenient,
        )
        == []
    )
    # a missing metric never passes
    assert promotion_gate({"preference_accuracy_before": 0.5, "preference_accuracy_after": 0.9}, lenient)


def test_cli_align(
    tmp_path: Path,
    tiny_base_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loragraph.cli import main

    monkeypatch.setenv("LORAGRAPH_HOME", str(tmp_path / "home"))
    registry = Registry()
    _publish_sft(registry, tiny_base_path, "reply", 1, tmp_path / "staging")
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs_rows(8))
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("learning_rate: 5.0e-3\nepochs: 2\nmax_length: 128\nholdout_fraction: 0.25\n")
    code = main(
        [
            "align",
            "reply",
            "--pairs",
            str(pairs),
            "--config",
            str(cfg),
            "--max-steps",
            "2",
            "--promote",
            "if_better",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["version"] == "reply@v2" and out["parent"] == 1
    assert out["metrics"]["eval_pairs"] == 2 and out["metrics"]["train_pairs"] == 6
    assert out["promoted"] == (out["metrics"]["promotion_gate_passed"] == 1.0)
    assert (registry.promoted("reply").version == 2) == out["promoted"]
    assert registry.get("reply", 2).manifest.hyperparameters["max_steps"] == 2

    _write_jsonl(pairs, [{"input": {"text": "x"}, "chosen": "same", "rejected": "same"}])
    assert main(["align", "reply", "--pairs", str(pairs)]) == 2
    assert "pairs.jsonl:1" in capsys.readouterr().err


@pytest.mark.slow
def test_align_on_the_real_nf4_base(tmp_path: Path) -> None:
    """The QLoRA path: nf4 base, bf16 -> fp32 adapter weights, repack only after training."""
    registry = Registry(tmp_path / "adapters")
    _publish_sft(
        registry, "smollm2-135m-instruct", "reply", 1, tmp_path / "staging", quantization="nf4"
    )
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs_rows(3))
    config = _test_config(
        tmp_path,
        learning_rate=1e-3,
        epochs=2,
        batch_size=2,
        warmup_ratio=0.0,
        max_length=160,
        holdout_fraction=0.34,
    )
    version = align("reply", pairs, config, registry=registry)
    m = version.manifest
    assert (m.parent, m.method, m.quantization) == (1, "dpo", "nf4")
    assert m.metrics["train_pairs"] == 2 and m.metrics["eval_pairs"] == 1
    from safetensors.torch import load_file

    old = load_file(str(registry.get("reply", 1).path / "adapter_model.safetensors"))
    new = load_file(str(version.path / "adapter_model.safetensors"))
    assert any(not torch.equal(old[k].float(), new[k].float()) for k in old)


def test_sft_weight_adds_the_chosen_reply_nll_to_the_dpo_loss(
    tiny_base_path: Path, tmp_path: Path
) -> None:
    """`sft_weight` > 0 trains with TRL's [sigmoid, sft] loss: the chosen replies end up more
    likely than after plain DPO from the same parent, seed and pairs; the manifest records it."""
    from peft import PeftModel

    pairs_path = _write_jsonl(tmp_path / "pairs.jsonl", _pairs_rows(8))
    chosen_logp: dict[float, float] = {}
    for weight in (0.0, 2.0):
        registry = Registry(tmp_path / f"adapters-{weight}")
        _publish_sft(registry, tiny_base_path, "reply", 1, tmp_path / f"staging-{weight}")
        version = align(
            "reply",
            pairs_path,
            _test_config(tmp_path / f"run-{weight}", sft_weight=weight, max_new_tokens=1, learning_rate=3e-2, epochs=6),
            registry=registry,
        )
        hp = version.manifest.hyperparameters
        assert hp["sft_weight"] == weight
        assert hp["loss_type"] == (["sigmoid", "sft"] if weight else ["sigmoid"])
        base = load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
        model = PeftModel.from_pretrained(base.model, str(version.path), adapter_name="new")
        pairs = render_pairs(_pairs_rows(8), PROMPT, SYSTEM)
        chosen, _ = response_logps(model, base.tokenizer, pairs, adapter="new", max_length=128)
        chosen_logp[weight] = sum(chosen) / len(chosen)
    assert chosen_logp[2.0] > chosen_logp[0.0] + 0.5, chosen_logp
