"""Benchmark training on the bundled base: QLoRA (nf4 base) vs LoRA (bf16 base), per stage kind.

For each stage kind the benchmark runs the training step of its trainer: classify and tag
(``body_hidden_states`` -> head -> cross-entropy; no ``lm_head``) and generate (the full
causal LM with a completion-only loss), with AdamW, on a fixed batch of synthetic token
ids, for a few steps, and reports examples/s and peak memory for:

- ``nf4``:  QLoRA, the 4-bit base loaded with ``trainable=True`` (the path the trainers use);
- ``bf16``: plain LoRA on the bf16 base;

both with LoRA dropout ``--lora-dropout`` (default 0, as the sample configs) and the
trainers' default step kernels (``training_compute``: eager attention on CPU, bf16 autocast
over fp32 LoRA weights), plus two more ``nf4`` runs that each change one thing:

- ``compare``: steps with the trainers' kernels, steps with the kernels a step gets
  without ``training_compute`` (``attention: sdpa``, ``mixed_precision: false``: peft casts
  each LoRA layer's activations to fp32 and back, peft's own LoRA forward) and steps with
  the trainers' kernels but peft's own LoRA forward instead of ``fused_lora_forward`` (one
  ``addmm`` per LoRA layer), alternated in the same process so that a busy or throttled CPU
  slows all alike; the ratios of their times are the kernels' gain and the fused LoRA's;
  for classify and tag also steps whose head reads layer ``--depth`` (default 15; a config's
  ``depth``: the layers above are not run), and steps that read the same layer with the layers
  below ``--frozen`` (default 5; a config's ``lora.last_layers: depth - N``) frozen, which the
  trainers run once per example and then start from their cached output (``FrozenStates``),
  alternated with the others;
- LoRA dropout ``--compare-dropout`` (default 0.05, peft's common setting): on CPU the
  dropout mask (one Bernoulli draw per input element of every LoRA layer) is a large part
  of a step.

The batch is left-padded like the trainers' batches (lengths spread between 60% and 100% of
the kind's tokens per example), so the attention mask is a real one.

Everything runs from this one command; each (kind, quantization) is measured in its own
child process so that the peak resident memory (``ru_maxrss``; CUDA: max allocated) belongs
to that configuration alone. Printed ratios are nf4 / bf16, the kernels' gain, and nf4 without /
with dropout. The peak includes loading (the
4-bit base is quantized from the bf16 folder at load time, so its load peak is not smaller);
``RSS after steps`` is the resident memory while training, and ``base MB`` the weights alone.

    nice python benchmarks/training.py [--steps 4] [--batch 8] [--kinds classify,tag,generate]
                                       [--targets q_proj,k_proj,v_proj,o_proj] [--lora-dropout 0]
                                       [--compare-dropout 0.05] [--no-compare] [--depth 15] [--frozen 5]
                                       [--base DIR] [--json]
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


def _child(
    kind: str, quantization: str, steps: int, batch: int, threads: int, dropout: float, compute: str, targets: list[str],
    depth: int | None = None,
    frozen: int | None = None,
    base_dir: str | None = None,
) -> dict[str, Any]:
    import torch

    from loragraph.adapters.base import BaseSpec, load_base
    from loragraph.adapters.heads import HeadConfig, body_hidden_states, build_head, layer_states
    from loragraph.training.config import LoraSettings
    from loragraph.training.train import add_lora, training_compute

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    spec = BaseSpec(quantization=quantization) if base_dir is None else BaseSpec(name=base_dir, quantization=quantization)
    base = load_base(spec, trainable=True)
    load_s = time.perf_counter() - started
    rss_loaded = _current_rss_mb()
    model = add_lora(base.model, LoraSettings(r=8, alpha=16, dropout=dropout, target_modules=targets), seed=0)
    model.train()
    length = SEQ_LEN[kind]
    vocab = int(base.model.config.vocab_size)
    ids = torch.randint(100, vocab - 100, (batch, length), device=base.device)
    mask = torch.ones_like(ids)
    for row in range(batch):  # left padding, as the trainers' batches: real lengths 60%..100% of `length`
        pad = (length * 2 // 5) * (batch - 1 - row) // max(batch - 1, 1)
        ids[row, :pad] = base.tokenizer.pad_token_id
        mask[row, :pad] = 0
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
    plain = {"attention": "sdpa", "mixed_precision": False, "fuse_lora": False}
    unfused = {"fuse_lora": False}
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    timed_depth = compute == "compare" and head is not None and depth is not None
    timed_frozen = timed_depth and bool(frozen)
    cached = None
    if timed_frozen:
        with torch.no_grad(), training_compute(base):  # once, as the trainers do before the first step
            cached = layer_states(model, ids, mask, layers=frozen)

    def step(kernels: dict[str, Any]) -> float:
        kernels = dict(kernels)
        layers = kernels.pop("depth", None)
        start = kernels.pop("frozen", 0)
        if head is not None:
            with training_compute(base, **kernels):
                if start:
                    hidden = body_hidden_states(model, None, mask, states=cached, first_layer=start, depth=layers)
                else:
                    hidden = body_hidden_states(model, ids, mask, depth=layers)
            logits = head(hidden, mask).float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        else:
            with training_compute(base, **kernels):
                loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    variants: list[dict[str, Any]] = [{}, plain, unfused] if compute == "compare" else [{}]
    if timed_depth:
        variants.append({"depth": depth})  # the trainers' kernels, the head reading layer `depth`
    if timed_frozen:
        variants.append({"depth": depth, "frozen": frozen})  # ... and layers below `frozen` from their cached output
    for kernels in variants:
        step(kernels)  # warm-up (kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed: list[list[float]] = [[] for _ in variants]
    for i in range(steps):
        for j in range(len(variants)):  # alternate which variant goes first
            k = (i + j) % len(variants)
            t = time.perf_counter()
            step(variants[k])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timed[k].append(time.perf_counter() - t)
    times = timed[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "kind": kind,
        "quantization": quantization,
        "lora_dropout": dropout,
        "compute": compute,
        "tokens_per_example": length,
        "batch": batch,
        "steps": steps,
        "threads": threads,
        "device": str(base.device),
        "load_seconds": round(load_s, 2),
        "seconds_per_step": round(sum(times) / len(times), 4),
        "plain_seconds_per_step": round(sum(timed[1]) / len(timed[1]), 4) if compute == "compare" else None,
        "unfused_seconds_per_step": round(sum(timed[2]) / len(timed[2]), 4) if compute == "compare" else None,
        "depth": depth if timed_depth else None,
        "depth_seconds_per_step": round(sum(timed[3]) / len(timed[3]), 4) if timed_depth else None,
        "frozen": frozen if timed_frozen else None,
        "frozen_seconds_per_step": round(sum(timed[4]) / len(timed[4]), 4) if timed_frozen else None,
        "layers": int(base.model.config.num_hidden_layers),
        "lora_targets": targets,
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
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj",
                        help="comma-separated LoRA target modules (the intent config: q,k,v,o,gate,up,down _proj)")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout of the nf4 and bf16 runs")
    parser.add_argument("--compare-dropout", type=float, default=0.05,
                        help="also measure nf4 with this LoRA dropout (skipped when equal to --lora-dropout)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the nf4 run that alternates steps with and without the trainers' step kernels")
    parser.add_argument("--depth", type=int, default=15,
                        help="classify/tag: the compare run also times steps whose head reads layer N (`depth: N`); 0: skip")
    parser.add_argument("--frozen", type=int, default=5,
                        help="classify/tag: the compare run also times steps at `depth` with layers below N frozen and"
                             " cached (`lora.last_layers: depth - N`); 0: skip")
    parser.add_argument("--base", default=None, help="a base model folder instead of the bundled base (the tests' tiny one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "QUANTIZATION", "DROPOUT", "COMPUTE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, quantization, dropout, compute = args.child
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        result = _child(
            kind, quantization, args.steps, args.batch, args.threads, float(dropout), compute, targets, args.depth or None,
            args.frozen or None, args.base,
        )
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    results: list[dict[str, Any]] = []
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        runs = [(q, args.lora_dropout, "default") for q in QUANTIZATIONS]
        if not args.no_compare:
            runs.append(("nf4", args.lora_dropout, "compare"))
        if args.compare_dropout != args.lora_dropout:
            runs.append(("nf4", args.compare_dropout, "default"))
        for quantization, dropout, compute in runs:
            cmd = [sys.executable, __file__, "--child", kind, quantization, str(dropout), compute, "--steps", str(args.steps),
                   "--batch", str(args.batch), "--threads", str(args.threads), "--targets", args.targets, "--depth", str(args.depth),
                   "--frozen", str(args.frozen)] + (["--base", args.base] if args.base else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{kind}/{quantization} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(line.removeprefix("RESULT ")))
            print(f"measured {kind}/{quantization}/dropout {dropout}/{compute}: {results[-1]['examples_per_second']} ex/s", file=sys.stderr)

    ratios = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        mine = [r for r in results if r["kind"] == kind]
        nf4 = next(r for r in mine if r["quantization"] == "nf4" and r["lora_dropout"] == args.lora_dropout and r["compute"] == "default")
        bf16 = next(r for r in mine if r["quantization"] == "bf16")
        compared = next((r for r in mine if r["compute"] == "compare"), None)
        dropped = next((r for r in mine if r["lora_dropout"] != args.lora_dropout), None)
        ratios.append(
            {
                "kind": kind,
                "speed_kernels_over_plain": (
                    round(compared["plain_seconds_per_step"] / compared["seconds_per_step"], 3) if compared else None
                ),
                "speed_fused_over_peft_lora": (
                    round(compared["unfused_seconds_per_step"] / compared["seconds_per_step"], 3) if compared else None
                ),
                "speed_depth_over_all_layers": (
                    round(compared["seconds_per_step"] / compared["depth_seconds_per_step"], 3)
                    if compared and compared["depth_seconds_per_step"] else None
                ),
                "speed_frozen_over_depth": (
                    round(compared["depth_seconds_per_step"] / compared["frozen_seconds_per_step"], 3)
                    if compared and compared["frozen_seconds_per_step"] else None
                ),
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
    print(f"{'kind':<10}{'quant':<7}{'kernels':<9}{'dropout':>8}{'tokens':>7}{'ex/s':>9}{'s/step':>9}{'peak RSS MB':>13}{'RSS after MB':>14}{'base MB':>9}")
    for r in results:
        print(
            f"{r['kind']:<10}{r['quantization']:<7}{r['compute']:<9}{r['lora_dropout']:>8.2f}{r['tokens_per_example']:>7}{r['examples_per_second']:>9.2f}"
            f"{r['seconds_per_step']:>9.2f}{r['peak_rss_mb']:>13.0f}{r['rss_after_steps_mb']:>14.0f}{r['base_footprint_mb']:>9.0f}"
        )
    print("\nratios nf4 / bf16 (QLoRA vs LoRA):")
    for q in ratios:
        print(
            f"  {q['kind']:<10} speed {q['speed_nf4_over_bf16']:.2f}x   peak RSS {q['peak_rss_nf4_over_bf16']:.2f}x   "
            f"RSS after steps {q['rss_after_steps_nf4_over_bf16']:.2f}x   "
            f"base weights {q['base_footprint_nf4_over_bf16']:.2f}x"
        )
    if any(q["speed_kernels_over_plain"] for q in ratios):
        print("\nratios nf4 with / without the trainers' step kernels (eager attention on CPU, bf16 autocast; speed,"
              " steps alternated in one process):")
        for q in ratios:
            c = next(r for r in results if r["kind"] == q["kind"] and r["compute"] == "compare")
            print(f"  {q['kind']:<10} {q['speed_kernels_over_plain']:.2f}x  ({c['seconds_per_step']:.2f} vs {c['plain_seconds_per_step']:.2f} s/step)")
        print("\nratios nf4 with fused_lora_forward / with peft's LoRA forward (the rest of the kernels the same; speed,"
              " alternated in the same process):")
        for q in ratios:
            c = next(r for r in results if r["kind"] == q["kind"] and r["compute"] == "compare")
            print(f"  {q['kind']:<10} {q['speed_fused_over_peft_lora']:.2f}x  ({c['seconds_per_step']:.2f} vs {c['unfused_seconds_per_step']:.2f} s/step)")
    if any(q["speed_depth_over_all_layers"] for q in ratios):
        print("\nratios nf4, head reading layer `depth` / head reading the last layer (speed, alternated in the same process):")
        for q in ratios:
            c = next((r for r in results if r["kind"] == q["kind"] and r["compute"] == "compare"), None)
            if c and c["depth_seconds_per_step"]:
                print(f"  {q['kind']:<10} depth {c['depth']} of {c['layers']}: {q['speed_depth_over_all_layers']:.2f}x"
                      f"  ({c['depth_seconds_per_step']:.2f} vs {c['seconds_per_step']:.2f} s/step)")
    if any(q["speed_frozen_over_depth"] for q in ratios):
        print("\nratios nf4 at `depth`, layers below `frozen` run once (cached) / every layer trained every step"
              " (speed, alternated in the same process):")
        for q in ratios:
            c = next((r for r in results if r["kind"] == q["kind"] and r["compute"] == "compare"), None)
            if c and c["frozen_seconds_per_step"]:
                print(f"  {q['kind']:<10} LoRA on layers {c['frozen']}-{c['depth'] - 1}: {q['speed_frozen_over_depth']:.2f}x"
                      f"  ({c['frozen_seconds_per_step']:.2f} vs {c['depth_seconds_per_step']:.2f} s/step)")
    if any(q["speed_nf4_over_nf4_with_dropout"] for q in ratios):
        print(f"\nratios nf4 without / with LoRA dropout {args.compare_dropout} (speed):")
        for q in ratios:
            print(f"  {q['kind']:<10} {q['speed_nf4_over_nf4_with_dropout']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
