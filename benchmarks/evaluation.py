"""Evaluation batches by length vs in input order, one classify adapter, measured in one run.

The trainer's validation and test metrics, ``loragraph eval`` and the adapter host all batch
rows of similar length together (``loragraph.adapters.heads.length_batches``): a batch is
padded to its longest row, and the sample's intent test split mixes one-line chats with long
emails. This script mounts the adapter on an ``AdapterHost`` (as ``loragraph eval`` and the
server do) and scores a data file both ways, alternating: ``host.classify`` over all rows
(batches of similar length), and ``host.classify`` per consecutive slice of ``--batch`` rows
(one batch each, in input order). It prints the seconds of each, the ratio, how many labels
differ and the largest difference of a label's probability (padding is masked, so only float
rounding may move a row).

``--against REF`` also mounts a second classify adapter on the same host and scores the file
with it by length, alternated with the first: the ratio of their times is what serving one
costs against the other (e.g. a head reading layer 15, ``depth: 15``, against one reading the
last layer).

    python benchmarks/evaluation.py intent --data examples/customer_service/data/intent/test.jsonl \\
        [--against intent@v1] [--repeats 2] [--batch 32] [--json]

Needs a prepared base and the adapter in the registry (``$LORAGRAPH_HOME``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loragraph.adapters.base import BaseSpec, load_base
from loragraph.adapters.host import AdapterHost, Classification
from loragraph.adapters.registry import Registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="a classify adapter, NAME or NAME@vN (default version: the promoted one)")
    parser.add_argument("--data", type=Path, required=True, help="JSONL with a `text` per line")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="rows per forward pass (the trainer's and host's 32)")
    parser.add_argument("--against", help="a second classify adapter on the same base, timed by length beside the first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    registry = Registry()
    version = registry.resolve(args.adapter)
    manifest = version.manifest
    if manifest.kind != "classify":
        parser.error(f"`{args.adapter}` is a {manifest.kind} adapter; this script measures classify adapters")
    host = AdapterHost(load_base(BaseSpec(name=manifest.base_name, quantization=manifest.quantization)),
                       registry, batch_size=args.batch)
    name = host.mount(version)  # checksums and base fingerprint, as serving checks them
    texts = [json.loads(line)["text"] for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    ways: dict[str, Callable[[], list[Classification]]] = {
        "in input order": lambda: [r for i in range(0, len(texts), args.batch) for r in host.classify(name, texts[i:i + args.batch])],
        "by length": lambda: host.classify(name, texts),
    }
    other = against = None
    if args.against:
        against = registry.resolve(args.against)
        if against.manifest.kind != "classify":
            parser.error(f"`{args.against}` is a {against.manifest.kind} adapter; --against needs a classify adapter")
        other = host.mount(against)
        ways["against, by length"] = lambda: host.classify(other, texts)

    seconds: dict[str, list[float]] = {way: [] for way in ways}
    results: dict[str, list[Classification]] = {}
    host.classify(name, texts[: args.batch])  # warm-up
    for _ in range(args.repeats):
        for way, run in ways.items():
            started = time.perf_counter()
            results[way] = run()
            seconds[way].append(time.perf_counter() - started)
    best = {way: min(s) for way, s in seconds.items()}
    pairs = list(zip(results["in input order"], results["by length"], strict=True))
    differ = sum(a.label != b.label for a, b in pairs)
    report = {
        "adapter": version.ref,
        "rows": len(texts),
        "batch": args.batch,
        "seconds": best,
        "by_length_vs_input_order": best["in input order"] / best["by length"],
        "labels_differ": differ,
        "max_score_difference": max((abs(a.scores[k] - b.scores[k]) for a, b in pairs for k in a.scores), default=0.0),
        "against": against.ref if against else None,
        "against_vs_adapter": best["against, by length"] / best["by length"] if against else None,
        "depths": {"adapter": manifest.head and manifest.head.depth,
                   "against": against.manifest.head and against.manifest.head.depth if against else None},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{version.ref} on {len(texts)} rows of {args.data}, {args.batch} a batch (best of {args.repeats}):")
    for way, s in best.items():
        print(f"  {way:15s} {s:7.1f} s  {len(texts) / s:6.1f} rows/s")
    print(f"  by length vs in input order: {report['by_length_vs_input_order']:.2f}x; "
          f"labels that differ: {differ}; largest probability difference {report['max_score_difference']:.2g}")
    if against:
        depths = report["depths"]
        print(f"  {report['against']} (depth {depths['against'] or 'all'}) vs {version.ref} (depth {depths['adapter'] or 'all'}), "
              f"both by length: {report['against_vs_adapter']:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
