"""The benchmark scripts still run: each on the tiny random base, in a few seconds (the figures
are meaningless there; the scripts' own runs on the bundled base make the README's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def test_guardrails_benchmark_runs_every_document_through_every_stage(tiny_base_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LORAGRAPH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    (tmp_path / "home" / "base").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "guardrails.py"), "--random-adapters", "--base", str(tiny_base_path),
         "--docs", "2", "--repeats", "1", "--max-new-tokens", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    # random guardrails get threshold 1.0 and no review band, so no run ends early
    assert result["statuses"] == {"ok": 2} and result["random_adapters"] is True
    assert 0.0 < result["guardrail_share_mean"] < 1.0
    checks = set(result["guardrail_ms_mean"])  # the input guardrail and an output one on every run
    assert "guard_in" in checks and checks & {"check_reply", "check_out_of_scope"}


def test_training_benchmark_times_every_variant_on_the_tiny_base(tiny_base_path: Path) -> None:
    """``benchmarks/training.py`` on the tiny base: nf4 vs bf16, the step kernels, the fused LoRA,
    `depth` and the frozen layers run once, each a positive time and ratio."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "training.py"), "--base", str(tiny_base_path), "--kinds", "classify,tag",
         "--steps", "1", "--batch", "2", "--depth", "2", "--frozen", "1", "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert {r["kind"] for r in result["ratios"]} == {"classify", "tag"}
    for ratio in result["ratios"]:
        for key in ("speed_kernels_over_plain", "speed_fused_over_peft_lora", "speed_depth_over_all_layers",
                    "speed_frozen_over_depth", "speed_nf4_over_bf16", "speed_nf4_over_nf4_with_dropout"):
            assert ratio[key] > 0, (ratio["kind"], key)
    compared = [r for r in result["results"] if r["compute"] == "compare"]
    assert all(r["frozen"] == 1 and r["frozen_seconds_per_step"] > 0 for r in compared)


def test_router_benchmark_replays_a_whole_pipeline_run(tiny_base_path: Path, tmp_path: Path) -> None:
    """``benchmarks/router.py`` on the tiny base with random adapters: the random guardrails let
    the runs through (threshold 1.0), so the replay goes past the input guardrail to the reply."""
    env = {**os.environ, "LORAGRAPH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    (tmp_path / "home" / "base").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "router.py"), "--random-adapters", "--base", str(tiny_base_path),
         "--max-new-tokens", "2", "--docs", "1", "--repeats", "1", "--skip-merged", "--json"],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result["random_adapters"]) == {"guard_input", "intent", "entities", "summary", "reply", "guard_output"}
    assert any(path.startswith("guard_in -> intent") and "reply" in path for path in result["paths"]), result["paths"]
    assert result["activations"] >= 2 and 0 < result["activation_s"] < result["pipeline_swaps_s"]
    assert result["swap_ratio"] >= 1.0 and result["classify_ratio"] > 0 and result["memory_ratio"] > 0


def test_intent_unseen_regenerates_the_test_split_and_reads_a_previous_generator(tmp_path: Path) -> None:
    """``benchmarks/intent_unseen.py`` matches messages to their templates by regenerating the
    split as ``loragraph data sample`` writes it, and reads a previous generator from git."""
    import runpy

    from loragraph.training import sample_text
    from loragraph.training.sample import generate_sample

    script = runpy.run_path(str(ROOT / "benchmarks" / "intent_unseen.py"))
    generate_sample(tmp_path, seed=1)
    written = [json.loads(line)["text"] for line in (tmp_path / "intent" / "test.jsonl").read_text().splitlines()]
    messages = script["test_messages"](1)
    assert [m.text for m in messages] == written
    assert all(m.template.split(":", 1)[1] in {a if isinstance(a, str) else a[0] for a in sample_text.ASKS[m.intent]}
               or m.intent == "other" for m in messages)
    if (ROOT / ".git").exists():
        assert script["previous_asks"]("HEAD")["order_status"] == tuple(sample_text.ASKS["order_status"])


def test_evaluation_benchmark_compares_length_batches_with_input_order(tiny_base: Any, tmp_path: Path) -> None:
    from loragraph.adapters.registry import Registry
    from loragraph.testing import publish_random_adapter

    home = tmp_path / "home"
    publish_random_adapter(Registry(home / "adapters"), tiny_base, "intent", "classify", labels=["a", "b", "c"], seed=1)
    publish_random_adapter(Registry(home / "adapters"), tiny_base, "shallow", "classify", labels=["a", "b"], seed=2, depth=1)
    words = ["refund", "order", "where", "is", "my", "parcel", "please"]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(words[: 1 + i % 7] * (1 + i % 3))}) + "\n" for i in range(20)))
    env = {**os.environ, "LORAGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "evaluation.py"), "intent", "--data", str(data),
         "--repeats", "1", "--batch", "4", "--against", "shallow", "--json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["adapter"] == "intent@v1" and result["rows"] == 20 and result["batch"] == 4
    assert set(result["seconds"]) == {"in input order", "by length", "against, by length"} and result["by_length_vs_input_order"] > 0
    assert result["against"] == "shallow@v1" and result["against_vs_adapter"] > 0
    assert result["depths"] == {"adapter": None, "against": 1}
    assert result["labels_differ"] == 0 and result["max_score_difference"] < 1e-4  # fp32: padding is masked


def test_pipeline_adapters_copy_the_trained_ones_and_give_the_rest_their_configs_shape(
    tiny_base: Any, tiny_base_path: Path, tmp_path: Path
) -> None:
    """``publish_pipeline_adapters`` (the benchmarks' ``--random-adapters`` / ``--random-missing``):
    a trained adapter is copied byte for byte with its versions and promotion; a missing one is
    published random with its training config's labels, ``depth`` and ``lora``; a name is done once."""
    from loragraph.adapters.registry import Registry
    from loragraph.testing import publish_pipeline_adapters, publish_random_adapter

    trained = Registry(tmp_path / "trained")
    publish_random_adapter(trained, tiny_base, "intent", "classify", labels=["a", "b"], seed=1)
    publish_random_adapter(trained, tiny_base, "intent", "classify", labels=["a", "b"], seed=2)
    trained.promote("intent", 1)
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    (train_dir / "guard.yaml").write_text(
        "labels: [safe, attack, spam]\ndepth: 1\nlora: {r: 2, alpha: 4, target_modules: [q_proj, k_proj], last_layers: 1}\n"
    )
    (train_dir / "summary.yaml").write_text("prompt: 'Summarise: {{ text }}'\n")
    target = Registry(tmp_path / "target")
    base = {"name": str(tiny_base_path), "quantization": "fp32"}
    stages = [("intent", "classify"), ("guard", "guardrail"), ("summary", "generate"), ("intent@v2", "classify")]
    doc = {"base": base, "stages": {f"s{i}": {"adapter": a, "kind": k} for i, (a, k) in enumerate(stages)}}
    assert publish_pipeline_adapters(target, doc, train_dir, trained=trained) == ["guard", "summary"]
    for v in (1, 2):
        copied, original = target.get("intent", v), trained.get("intent", v)
        assert copied.manifest.files == original.manifest.files
        assert target.verify(copied.ref).ref == f"intent@v{v}"
    assert target.promoted("intent").version == 1
    guard = target.promoted("guard").manifest
    assert guard.labels == ["safe", "attack", "spam"] and guard.head is not None and guard.head.depth == 1
    lora = json.loads((target.promoted("guard").path / "adapter_config.json").read_text())
    assert (lora["r"], sorted(lora["target_modules"]), lora["layers_to_transform"]) == (2, ["k_proj", "q_proj"], [0])
    from safetensors.torch import load_file

    weights = load_file(str(target.promoted("guard").path / "adapter_model.safetensors"))
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # random, not the trainer's zero start
    assert target.promoted("summary").manifest.prompt == "Summarise: {{ text }}"
    # without a trained registry every name is random; a config-less guardrail gets safe/attack
    alone = Registry(tmp_path / "alone")
    alone_doc = {"base": base, "stages": {"g": {"adapter": "guard_x", "kind": "guardrail"}}}
    assert publish_pipeline_adapters(alone, alone_doc, train_dir) == ["guard_x"]
    assert alone.promoted("guard_x").manifest.labels == ["safe", "attack"]
