"""Benchmark the bundled base in each quantization: load time, peak memory, one forward
pass on a 128-token input, and generation tokens/s, each with its ratio to bf16.

    python benchmarks/base.py [--base NAME] [--new-tokens 32] [--repeats 3] [--json]

Each quantization is measured in a fresh child process (so peak RSS belongs to that
quantization alone); all of them, bf16 included, in one run of this script.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

QUANTIZATIONS = ("bf16", "fp32", "nf4", "int8")


def measure(name: str, quantization: str, new_tokens: int, repeats: int) -> dict[str, float]:
    import torch

    from loragraph.adapters.base import BaseSpec, load_base

    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    base = load_base(BaseSpec(name=name, quantization=quantization))
    load_s = time.perf_counter() - started
    tok, model = base.tokenizer, base.model
    text = "Hello, my order #A-48213 has not arrived and I would like a refund please. " * 12
    ids = tok(text, return_tensors="pt")["input_ids"][:, :128]
    assert ids.shape[1] == 128
    with torch.inference_mode():
        model(input_ids=ids)  # warm-up (and the 4-bit CPU repack)
        forward = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids)
            forward.append(time.perf_counter() - t)
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "Write a short apology for a late order."}],
            add_generation_prompt=True,
            tokenize=False,
        )
        inputs = tok([prompt], return_tensors="pt", add_special_tokens=False)
        gen = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            produced = out.shape[1] - inputs["input_ids"].shape[1]
            gen.append(produced / (time.perf_counter() - t))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "load_s": load_s,
        "peak_rss_mb": peak_kb / 1024,
        "rss_growth_mb": (peak_kb - before) / 1024,
        "weights_mb": base.memory_bytes / 2**20,
        "forward_128_ms": statistics.median(forward) * 1000,
        "generate_tok_s": statistics.median(gen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m-instruct", help="bundled name or local folder")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.base, args.child, args.new_tokens, args.repeats)))
        return

    from loragraph.adapters.base import DEFAULT_BASE, prepare_base

    if args.base == DEFAULT_BASE:
        prepare_base()
    rows: dict[str, dict[str, float]] = {}
    for q in QUANTIZATIONS:
        cmd = [sys.executable, __file__, "--child", q, "--base", args.base,
               "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[q] = json.loads(out.strip().splitlines()[-1])
    ref = rows["bf16"]
    if args.json:
        print(json.dumps({"base": args.base, "results": rows}, indent=2))
        return
    print(f"base: {args.base}   (ratio = value / bf16 value; measured in this run)")
    header = f"{'quant':<6} {'load s':>8} {'x':>6} {'peak RSS MB':>12} {'x':>6} {'fwd128 ms':>10} {'x':>6} {'gen tok/s':>10} {'x':>6}"
    print(header)
    print("-" * len(header))
    for q, r in rows.items():
        print(
            f"{q:<6} {r['load_s']:>8.2f} {r['load_s'] / ref['load_s']:>6.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] / ref['peak_rss_mb']:>6.2f} "
            f"{r['forward_128_ms']:>10.1f} {r['forward_128_ms'] / ref['forward_128_ms']:>6.2f} "
            f"{r['generate_tok_s']:>10.1f} {r['generate_tok_s'] / ref['generate_tok_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
