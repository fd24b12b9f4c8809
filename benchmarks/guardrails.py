"""Benchmark the cost of the two guardrails as a fraction of a sample pipeline run (goal < 15%).

The sample pipeline (``examples/customer_service/pipeline.yaml``) has an input guardrail
first (``guard_in``: adapter ``guard_input``, policy ``block``) and an output guardrail on
each customer-facing reply (``check_reply`` / ``check_out_of_scope``: adapter
``guard_output``, policy ``replace``); a pipeline without guardrails gets ``guard_in`` and a
``guard_out`` after ``reply``. Benign customer messages are run through it and, from each
run's trace,

    guardrail share = (latency of the guardrail steps) / (latency of the whole run)

is reported (mean and per guardrail); the same documents also run through the same pipeline
with its guardrail stages removed (same base, same resident adapters), and the relative
slowdown is reported beside it.

    python benchmarks/guardrails.py [--pipeline examples/customer_service/pipeline.yaml]
        [--docs 6] [--repeats 2] [--input-adapter guard_input] [--output-adapter guard_output]
        [--threshold T] [--random-adapters] [--json]

``--random-adapters`` publishes untrained adapters (every adapter of the pipeline and the
two guardrails) into a temporary registry on the bundled base, so the benchmark runs before
the adapters are trained: the timings have the same shape, the outputs are meaningless
(the guardrail threshold is then 1.0 so that every run goes through every stage). Only
runs that end `ok` count in the share (a blocked run is all guardrail by construction).
``--base DIR`` swaps in another base (e.g. ``loragraph.testing.tiny_base_dir``) for a
quick smoke run.
Needs the router (``loragraph.router.router.Router``) and a prepared base
(``loragraph base prepare``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "examples" / "customer_service" / "pipeline.yaml"
DOCS = [
    "Hi, I was charged $49.99 twice for order #A-48213 last Tuesday. Please refund the extra charge. Maria Lopez",
    "where is my order ORD-2024-11873?? it was supposed to arrive on March 3rd",
    "I want to return the blue kettle, it leaks. Can you email me a label at maria.lopez@example.com?",
    "Please change the delivery address for order 5512-993 to 221B Baker Street, London NW1 6XE.",
    "I can't log in, the password reset email never arrives. My phone is +1 415 555 0134.",
    "Is the AeroPress Go compatible with paper filters from other brands?",
]


def guarded_pipeline(pipeline: Path, *, input_adapter: str, output_adapter: str, threshold: float | None) -> dict[str, Any]:
    """The pipeline's YAML document with guardrails: as it is when it declares some (the
    sample does: ``guard_in`` first, ``check_reply`` / ``check_out_of_scope`` last), else with
    an input guardrail added first and an output guardrail after ``reply``. ``threshold``
    (when given) replaces every guardrail's threshold and drops their review bands (a band
    below the new threshold would escalate the runs it was meant to let through)."""
    import yaml

    from loragraph.testing import set_guardrail_threshold

    doc = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    stages = doc["stages"]
    if not any(stage.get("kind") == "guardrail" for stage in stages.values()):
        if "reply" not in stages:
            raise SystemExit(f"{pipeline}: no guardrail stage, and no `reply` stage to guard")
        old_entry = doc.get("entry") or next(iter(stages))
        guard_in = {"kind": "guardrail", "adapter": input_adapter, "target": "input", "policy": "block"}
        guard_out = {
            "kind": "guardrail", "adapter": output_adapter, "target": "reply", "policy": "replace",
            "fallback": "A member of our team will get back to you shortly.",
        }
        doc["stages"] = {"guard_in": guard_in, **stages, "guard_out": guard_out}
        doc["entry"] = "guard_in"
        doc["edges"] = [{"from": "guard_in", "to": old_entry}, *doc.get("edges", []), {"from": "reply", "to": "guard_out"}]
    if threshold is not None:
        set_guardrail_threshold(doc, threshold)
    return doc


def plain_pipeline(guarded: dict[str, Any]) -> dict[str, Any]:
    """The same pipeline without its guardrail stages (the baseline)."""
    import copy

    doc = copy.deepcopy(guarded)
    guards = {name for name, stage in doc["stages"].items() if stage.get("kind") == "guardrail"}
    entry = doc.get("entry") or next(iter(doc["stages"]))
    while entry in guards:  # the stage the input guardrail hands over to
        entry = next(e["to"] for e in doc.get("edges", []) if e["from"] == entry)
    doc["stages"] = {name: stage for name, stage in doc["stages"].items() if name not in guards}
    doc["entry"] = entry
    doc["edges"] = [e for e in doc.get("edges", []) if e["from"] not in guards and e["to"] not in guards]
    doc["name"] = f"{doc.get('name', 'pipeline')}-plain"
    return doc


def _run(router: Any, docs: list[str], repeats: int) -> list[Any]:
    results = []
    for _ in range(repeats):
        for doc in docs:
            results.append(router.run(doc))
    return results


def measure(plain: Path, guarded: Path, docs: list[str], repeats: int) -> dict[str, Any]:
    """Run both pipelines (sharing one base and host) and compute the guardrail share."""
    from loragraph.router.router import Router

    router = Router.from_yaml(guarded)
    plain_router = Router.from_yaml(plain, base=router.host.base)  # same base, same resident adapters
    _run(router, docs[:1], 1)  # warm-up: first forward passes, repacking
    _run(plain_router, docs[:1], 1)

    # alternate the two, document by document, so that a change of the machine's speed during
    # the benchmark weighs on both sides alike
    guarded_results = []
    guarded_s = plain_s = 0.0
    for _ in range(repeats):
        for doc in docs:
            started = time.perf_counter()
            guarded_results.append(router.run(doc))
            guarded_s += time.perf_counter() - started
            started = time.perf_counter()
            plain_router.run(doc)
            plain_s += time.perf_counter() - started

    shares: list[float] = []
    per_guardrail: dict[str, list[float]] = {}
    statuses: dict[str, int] = {}
    errors: list[str] = []
    for r in guarded_results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.error and r.error not in errors:
            errors.append(r.error)
        total = sum(t.latency_ms for t in r.trace) or r.latency_ms
        guard_ms = 0.0
        for t in r.trace:
            if t.kind == "guardrail":
                guard_ms += t.latency_ms
                per_guardrail.setdefault(t.stage, []).append(t.latency_ms)
        if total > 0 and r.status == "ok":  # a blocked run is all guardrail by construction
            shares.append(guard_ms / total)
    return {
        "runs": len(guarded_results),
        "statuses": statuses,
        "errors": errors[:3],
        "guardrail_share_mean": statistics.fmean(shares) if shares else None,
        "guardrail_share_max": max(shares) if shares else None,
        "guardrail_ms_mean": {k: statistics.fmean(v) for k, v in per_guardrail.items() if v},
        "guarded_s": guarded_s,
        "plain_s": plain_s,
        "slowdown": guarded_s / plain_s - 1.0 if plain_s > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=PIPELINE)
    parser.add_argument("--docs", type=int, default=6, help="documents per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--input-adapter", default="guard_input")
    parser.add_argument("--output-adapter", default="guard_output")
    parser.add_argument("--threshold", type=float, default=None, help="threshold of every guardrail (default: the file's)")
    parser.add_argument("--random-adapters", action="store_true", help="untrained adapters in a temporary registry")
    parser.add_argument("--base", default=None, help="override the pipeline's base (a model folder; e.g. a tiny test base)")
    parser.add_argument("--quantization", default=None, help="override the base quantization (with --base: default fp32)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap every generate stage's max_new_tokens (quick runs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import yaml

    from loragraph.adapters.registry import Registry
    from loragraph.testing import cap_max_new_tokens, publish_pipeline_adapters

    # random guardrails flag at random: threshold 1.0 lets every document through all stages
    threshold = 1.0 if args.random_adapters else args.threshold
    doc = guarded_pipeline(args.pipeline, input_adapter=args.input_adapter, output_adapter=args.output_adapter, threshold=threshold)
    plain_doc = plain_pipeline(doc)
    if args.base is not None:
        override = {"name": str(Path(args.base).resolve()), "quantization": args.quantization or "fp32"}
        doc["base"] = plain_doc["base"] = override
    elif args.quantization is not None:
        doc["base"] = plain_doc["base"] = {**plain_doc.get("base", {}), "quantization": args.quantization}
    if args.max_new_tokens is not None:
        for d in (doc, plain_doc):
            cap_max_new_tokens(d, args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain = tmp / "plain.yaml"
        plain.write_text(yaml.safe_dump(plain_doc, sort_keys=False), encoding="utf-8")
        guarded = tmp / "guarded.yaml"
        guarded.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        if args.random_adapters:
            home = Path(os.environ.get("LORAGRAPH_HOME") or Path.home() / ".loragraph")
            (tmp / "home").mkdir()
            (tmp / "home" / "base").symlink_to(home / "base")
            os.environ["LORAGRAPH_HOME"] = str(tmp / "home")
            publish_pipeline_adapters(Registry(tmp / "home" / "adapters"), doc, args.pipeline.parent / "train", shapes=args.base is None)
        result = measure(plain, guarded, (DOCS * 4)[: args.docs], args.repeats)
    result["random_adapters"] = args.random_adapters
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    share = result["guardrail_share_mean"]
    if share is None:
        print(f"no run ended `ok` (statuses {result['statuses']}; errors {result['errors']})")
        return 1
    print(f"{result['runs']} runs of {args.pipeline.name} with its guardrails"
          f"{'  (RANDOM adapters)' if args.random_adapters else ''}; statuses {result['statuses']}")
    print(f"guardrail share of a run   mean {share:.3%}  max {result['guardrail_share_max']:.3%}  (goal < 15%)")
    for name, ms in result["guardrail_ms_mean"].items():
        print(f"  {name:<10} {ms:8.1f} ms per run")
    print(f"wall time guarded {result['guarded_s']:.2f}s vs plain {result['plain_s']:.2f}s: slowdown {result['slowdown']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
