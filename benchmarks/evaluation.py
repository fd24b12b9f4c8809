"""Evaluation batches by length vs in input order, one classify adapter, measured in one run.

The trainer's validation and test metrics, ``loragraph eval`` and the adapter host all batch
rows of similar length together (``loragraph.adapters.heads.length_batches``): a batch is
padded to its longest row, and the sample's intent test split mixes one-line chats with long
emails. This script runs the same forward passes over a data file both ways, alternating,
and prints the seconds of each, the ratio, and how many labels differ (padding is masked, so
only float rounding may move a row).

    python benchmarks/evaluation.py intent --data examples/customer_service/data/intent/test.jsonl \\
        [--repeats 2] [--batch 32] [--json]

Needs a prepared base and the adapter in the registry (``$LORAGRAPH_HOME``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from loragraph.adapters.base import BaseSpec, load_base
from loragraph.adapters.heads import body_hidden_states, encode, length_batches, load_head
from loragraph.adapters.registry import Registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="a classify adapter, NAME or NAME@vN (default version: the promoted one)")
    parser.add_argument("--data", type=Path, required=True, help="JSONL with a `text` per line")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="rows per forward pass (the trainer's and host's 32)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from peft import PeftModel

    registry = Registry()
    version = registry.verify(registry.resolve(args.adapter))  # checksums, as mounting checks them
    manifest = version.manifest
    if manifest.kind != "classify":
        parser.error(f"`{args.adapter}` is a {manifest.kind} adapter; this script measures classify adapters")
    base = load_base(BaseSpec(name=manifest.base_name, quantization=manifest.quantization))
    if base.fingerprint != manifest.base_fingerprint:
        parser.error(f"`{version.ref}` was trained on another base (fingerprint {manifest.base_fingerprint}, loaded {base.fingerprint})")
    model = PeftModel.from_pretrained(base.model, str(version.path)).eval()
    head = load_head(version.path).eval()
    max_length = int(manifest.hyperparameters.get("max_length", 256))
    texts = [json.loads(line)["text"] for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    ways = {
        "in input order": [list(range(i, min(i + args.batch, len(texts)))) for i in range(0, len(texts), args.batch)],
        "by length": length_batches(texts, args.batch),
    }

    @torch.inference_mode()
    def logits_of(batches: list[list[int]]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(manifest.labels))
        for rows in batches:
            enc = encode(base.tokenizer, [texts[i] for i in rows], max_length)
            hidden = body_hidden_states(model, enc["input_ids"], enc["attention_mask"])
            out[rows] = head(hidden, enc["attention_mask"]).float()
        return out

    seconds: dict[str, list[float]] = {name: [] for name in ways}
    results: dict[str, torch.Tensor] = {}
    logits_of(ways["by length"][:1])  # warm-up
    for _ in range(args.repeats):
        for name, batches in ways.items():
            started = time.perf_counter()
            results[name] = logits_of(batches)
            seconds[name].append(time.perf_counter() - started)
    best = {name: min(s) for name, s in seconds.items()}
    differ = int((results["in input order"].argmax(-1) != results["by length"].argmax(-1)).sum())
    report = {
        "adapter": version.ref,
        "rows": len(texts),
        "batch": args.batch,
        "seconds": best,
        "by_length_vs_input_order": best["in input order"] / best["by length"],
        "labels_differ": differ,
        "max_logit_difference": float((results["in input order"] - results["by length"]).abs().max()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{version.ref} on {len(texts)} rows of {args.data}, {args.batch} a batch (best of {args.repeats}):")
    for name, s in best.items():
        print(f"  {name:15s} {s:7.1f} s  {len(texts) / s:6.1f} rows/s")
    print(f"  by length vs in input order: {report['by_length_vs_input_order']:.2f}x; "
          f"labels that differ: {differ}; largest logit difference {report['max_logit_difference']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
