"""Compare two intent adapters on the test messages whose phrasing neither was trained on.

Adding ask phrasings to the sample generator re-shuffles which phrasings each seed holds out,
so a new sample's test split is a new draw: its accuracy is not comparable with the previous
sample's. This script regenerates the intent splits of ``--seed`` (default sizes, as
``loragraph data sample --seed N`` writes them) with the template of every message, reads the
previous generator's phrasings from a git revision (``--previous-ref``), and scores two
adapters on ``--data`` (that seed's intent test split): the current generator's and the
previous one's. Messages are grouped by whether the previous generator trained on their
phrasing (the current one never did: they are its test split); the row that counts is
"neither trained on it".

    python benchmarks/intent_unseen.py --seed 0 --previous-ref f77b79f \\
        --data examples/customer_service/data/intent/test.jsonl \\
        --current intent@v7 --previous intent@v6 \\
        [--current-registry DIR] [--previous-registry DIR] [--json]

A registry is the ``adapters`` folder of a ``LORAGRAPH_HOME`` (default ``~/.loragraph/adapters``).
Needs git (for ``--previous-ref``) and a prepared base.
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

from loragraph.adapters.registry import Registry
from loragraph.training import sample_text
from loragraph.training.data import load_examples
from loragraph.training.evaluation import evaluate_adapter
from loragraph.training.sample import SampleSizes, generate_messages, load_templates

ROOT = Path(__file__).resolve().parents[1]


def previous_asks(ref: str) -> dict[str, Any]:
    """The ``ASKS`` of ``loragraph/training/sample_text.py`` at git revision ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:loragraph/training/sample_text.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample_text.py"
        path.write_text(source, encoding="utf-8")
        return dict(runpy.run_path(str(path))["ASKS"])


def test_messages(seed: int) -> list[Any]:
    """The intent test split of ``seed`` as ``generate_sample`` composes it (intent is its first data set)."""
    templates = load_templates(seed)
    seen: set[str] = set()
    sizes = SampleSizes()
    out: list[Any] = []
    for split, n in sizes.split_sizes(sizes.intent).items():
        msgs = generate_messages(n, seed=seed, split=split, stream="intent", templates=templates, seen=seen)
        if split == "test":
            out = msgs
    return out


def wrong_lines(ref: str, data: Path, registry: Path | None) -> set[int]:
    report = evaluate_adapter(ref, data, registry=Registry(registry) if registry else None)
    return {int(re.sub(r".*:", "", e["where"])) for e in report["errors"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--previous-ref", required=True, help="git revision of the previous generator")
    ap.add_argument("--data", type=Path, required=True, help="the seed's intent test split (JSONL)")
    ap.add_argument("--current", required=True, help="adapter trained on the current generator's sample, e.g. intent@v7")
    ap.add_argument("--previous", required=True, help="adapter trained on the previous generator's sample")
    ap.add_argument("--current-registry", type=Path, default=None)
    ap.add_argument("--previous-registry", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    messages = test_messages(args.seed)
    rows = list(load_examples(args.data, "classify", min_per_label=0).examples)
    if [m.text for m in messages] != [r.text for r in rows]:
        sys.exit(f"{args.data}: not the intent test split of seed {args.seed} at default sizes (regenerate it with `loragraph data sample --seed {args.seed}`)")
    with mock.patch.object(sample_text, "ASKS", previous_asks(args.previous_ref)):
        previous_train = {i: {a for a, _ in pool} for i, pool in load_templates(args.seed).train.items()}

    groups: list[str] = []
    for m in messages:
        ask = m.template.split(":", 1)[1]
        groups.append("previous trained on it" if ask in previous_train[m.intent] else "neither trained on it")
    wrong = {
        "current": wrong_lines(args.current, args.data, args.current_registry),
        "previous": wrong_lines(args.previous, args.data, args.previous_registry),
    }
    result: dict[str, dict[str, int]] = {}
    for group in ("neither trained on it", "previous trained on it", "all"):
        lines = [i for i, g in enumerate(groups, 1) if group in ("all", g)]
        result[group] = {"messages": len(lines)} | {who: sum(i not in bad for i in lines) for who, bad in wrong.items()}
    if args.json:
        print(json.dumps({"seed": args.seed, "current": args.current, "previous": args.previous, "groups": result}, indent=2))
        return 0
    print(f"seed {args.seed}: {args.current} (current generator) vs {args.previous} (generator at {args.previous_ref})")
    print(f"{'test messages':<26}{'n':>5}{'current right':>16}{'previous right':>16}")
    for group, r in result.items():
        n = r["messages"]
        print(f"{group:<26}{n:>5}{r['current']:>10} ({r['current'] / n:.3f}){r['previous']:>10} ({r['previous'] / n:.3f})")
    print("counts per intent of the 'neither' row:", dict(Counter(m.intent for m, g in zip(messages, groups, strict=True) if g.startswith("neither"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
