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
