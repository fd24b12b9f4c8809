"""Benchmark training on the bundled base: QLoRA (nf4 base) vs LoRA (bf16 base), per stage kind.

For each stage kind the benchmark runs the training step of its trainer: classify and tag
(``body_hidden_states`` -> head -> cross-entropy; no ``lm_head``) and generate (the full
causal LM with a completion-only loss), with AdamW, on a fixed batch of synthetic token
ids, for a few steps, and reports examples/s and peak memory for:

- ``nf4``:  QLoRA, the 4-bit base loaded with ``trainable=True`` (the path the trainers use);
- ``bf16``: plain LoRA on the bf16 base;

both with LoRA dropout ``--lora-dropout`` (default 0, as the sample configs), plus ``nf4``
with LoRA dropout ``--compare-dropout`` (default 0.05, peft's common setting): on CPU the
dropout mask (one Bernoulli draw per input element of every LoRA layer) is a large part
of a step, and the ratio shows how large.

Everything runs from this one command; each (kind, quantization) is measured in its own
child process so that the peak resident memory (``ru_maxrss``; CUDA: max allocated) belongs
to that configuration alone. Printed ratios are nf4 / bf16, and nf4 without / with dropout. The peak includes loading (the
4-bit base is quantized from the bf16 folder at load time, so its load peak is not smaller);
``RSS after steps`` is the resident memory while training, and ``base MB`` the weights alone.

    nice python benchmarks/training.py [--steps 4] [--batch 8] [--kinds classify,tag,generate]
                                       [--lora-dropout 0] [--compare-dropout 0.05] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("classify", "tag", "generate")
QUANTIZATIONS = ("nf4", "bf16")
SEQ_LEN = {"classify": 64, "tag": 96, "generate": 224}
"""Tokens per example, close to the sample data: intent median 46 / p90 94, entities p90 112,
reply prompt+target median ~220."""


def _current_rss_mb() -> float:
    """Resident memory now (``VmRSS``), in MB; 0 where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _child(kind: str, quantization: str, steps: int, batch: int, threads: int, dropout: float) -> dict[str, Any]:
    import torch

    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.heads import HeadConfig, body_hidden_states, build_head
    from loragraph.training.config import LoraSettings
    from loragraph.training.train import add_lora

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    base = load_base(BaseSpec(quantization=quantization), trainable=True)
    load_s = time.perf_counter() - started
    rss_loaded = _current_rss_mb()
    model = add_lora(base.model, LoraSettings(r=8, alpha=16, dropout=dropout, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
    model.train()
    length = SEQ_LEN[kind]
    vocab = int(base.model.config.vocab_size)
    ids = torch.randint(100, vocab - 100, (batch, length), device=base.device)
    mask = torch.ones_like(ids)
    head = None
    if kind == "classify":
        head = build_head(HeadConfig(kind="classify", labels=[f"l{i}" for i in range(11)], hidden_size=base.hidden_size)).to(base.device)
        target = torch.randint(0, 11, (batch,), device=base.device)
    elif kind == "tag":
        head = build_head(HeadConfig(kind="tag", labels=[f"T{i}" for i in range(8)], hidden_size=base.hidden_size)).to(base.device)
        target = torch.randint(0, 17, (batch, length), device=base.device)
    else:
        target = ids.clone()
        target[:, : length * 2 // 3] = -100  # loss on the completion only (last third)
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> float:
        if head is not None:
            hidden = body_hidden_states(model, ids, mask)
            logits = head(hidden, mask).float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up (kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "kind": kind,
        "quantization": quantization,
        "lora_dropout": dropout,
        "tokens_per_example": length,
        "batch": batch,
        "steps": steps,
        "threads": threads,
        "device": str(base.device),
        "load_seconds": round(load_s, 2),
        "seconds_per_step": round(sum(times) / len(times), 4),
        "examples_per_second": round(batch * len(times) / sum(times), 3),
        "peak_rss_mb": round(rss / 2**20, 1),
        "rss_after_load_mb": rss_loaded,
        "rss_after_steps_mb": _current_rss_mb(),
        "rss_before_load_mb": round(rss0 * 1024 / 2**20, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "base_footprint_mb": round(base.memory_bytes / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="measured optimizer steps per configuration (after 1 warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="examples per step")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated stage kinds")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")), help="torch threads")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout of the nf4 and bf16 runs")
    parser.add_argument("--compare-dropout", type=float, default=0.05,
                        help="also measure nf4 with this LoRA dropout (skipped when equal to --lora-dropout)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "QUANTIZATION", "DROPOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(args.child[0], args.child[1], args.steps, args.batch, args.threads, float(args.child[2]))), flush=True)
        return 0

    results: list[dict[str, Any]] = []
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        runs = [(q, args.lora_dropout) for q in QUANTIZATIONS]
        if args.compare_dropout != args.lora_dropout:
            runs.append(("nf4", args.compare_dropout))
        for quantization, dropout in runs:
            cmd = [sys.executable, __file__, "--child", kind, quantization, str(dropout), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{kind}/{quantization} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(line.removeprefix("RESULT ")))
            print(f"measured {kind}/{quantization}/dropout {dropout}: {results[-1]['examples_per_second']} ex/s", file=sys.stderr)

    ratios = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        nf4 = next(r for r in results if r["kind"] == kind and r["quantization"] == "nf4" and r["lora_dropout"] == args.lora_dropout)
        bf16 = next(r for r in results if r["kind"] == kind and r["quantization"] == "bf16")
        dropped = next((r for r in results if r["kind"] == kind and r["lora_dropout"] != args.lora_dropout), None)
        ratios.append(
            {
                "kind": kind,
                "speed_nf4_over_nf4_with_dropout": (
                    round(nf4["examples_per_second"] / dropped["examples_per_second"], 3) if dropped else None
                ),
                "speed_nf4_over_bf16": round(nf4["examples_per_second"] / bf16["examples_per_second"], 3),
                "peak_rss_nf4_over_bf16": round(nf4["peak_rss_mb"] / bf16["peak_rss_mb"], 3),
                "rss_after_steps_nf4_over_bf16": round(nf4["rss_after_steps_mb"] / bf16["rss_after_steps_mb"], 3),
                "base_footprint_nf4_over_bf16": round(nf4["base_footprint_mb"] / bf16["base_footprint_mb"], 3),
            }
        )
    if args.json:
        print(json.dumps({"results": results, "ratios": ratios}, indent=2))
        return 0
    print(f"{'kind':<10}{'quant':<7}{'dropout':>8}{'tokens':>7}{'ex/s':>9}{'s/step':>9}{'peak RSS MB':>13}{'RSS after MB':>14}{'base MB':>9}")
    for r in results:
        print(
            f"{r['kind']:<10}{r['quantization']:<7}{r['lora_dropout']:>8.2f}{r['tokens_per_example']:>7}{r['examples_per_second']:>9.2f}"
            f"{r['seconds_per_step']:>9.2f}{r['peak_rss_mb']:>13.0f}{r['rss_after_steps_mb']:>14.0f}{r['base_footprint_mb']:>9.0f}"
        )
    print("\nratios nf4 / bf16 (QLoRA vs LoRA):")
    for q in ratios:
        print(
            f"  {q['kind']:<10} speed {q['speed_nf4_over_bf16']:.2f}x   peak RSS {q['peak_rss_nf4_over_bf16']:.2f}x   "
            f"RSS after steps {q['rss_after_steps_nf4_over_bf16']:.2f}x   "
            f"base weights {q['base_footprint_nf4_over_bf16']:.2f}x"
        )
    if any(q["speed_nf4_over_nf4_with_dropout"] for q in ratios):
        print(f"\nratios nf4 without / with LoRA dropout {args.compare_dropout} (speed):")
        for q in ratios:
            print(f"  {q['kind']:<10} {q['speed_nf4_over_nf4_with_dropout']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
