"""Benchmark the router on the bundled base with the sample adapters, in one run:

(a) the host calls of one sample-pipeline run (recorded from a real run), replayed with
    their adapter swaps: the replay's time against the same time less the time spent inside
    the adapter activations (the cost of swapping; goal <= 1.05x). Decoding is forced to the
    full max_new_tokens so replays do identical work whatever the adapters would route. For
    reference the same calls are also replayed with one adapter kept active: not the same
    work when the adapters' LoRA shapes differ (ranks, modules, layers), so not the goal's measure;
(b) one classify step vs one plain base forward on the same tokens (goal <= 1.2x);
(c) peak memory: all pipeline adapters resident vs the base alone (goal <= 1.10x), and vs
    one merged model per adapter (the layout loragraph replaces). Each layout is measured in
    its own child process (peak RSS); all in this one run.

    python benchmarks/router.py [--pipeline examples/customer_service/pipeline.yaml]
                                [--docs 6] [--repeats 3] [--random-adapters | --random-missing]
                                [--base DIR [--max-new-tokens N]] [--skip-merged] [--json]

``--random-adapters`` publishes untrained adapters with the sample pipeline's names into a
temporary registry (for trying the benchmark before the sample adapters are trained), each
classify or tag head reading as many layers as its training config's ``depth``; the timings
are the same shape, the outputs meaningless. ``--random-missing`` copies your trained
adapters into that registry and publishes untrained ones only for the names you have not
trained (after the README's four adapters: the two guardrails); the header names them. A
guardrail served by a random adapter never flags (threshold 1.0, no review band), so the runs
take the paths they take with trained ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
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
    "Your delivery driver was rude and the parcel was late again. Not happy.",
    "Please change the delivery address for order 5512-993 to 221B Baker Street, London NW1 6XE.",
    "I can't log in, the password reset email never arrives. My phone is +1 415 555 0134.",
    "What's the weather like in Paris tomorrow?",
    "Is the AeroPress Go compatible with paper filters from other brands?",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _untrained_copy(pipeline: Path, home: Path, args: argparse.Namespace) -> tuple[Path, list[str]]:
    """Fill the temporary home ``home``: your prepared base linked in, its registry by
    ``loragraph.testing.publish_pipeline_adapters`` (with ``--random-missing`` your trained
    adapters are copied, the rest are untrained with their configs' shapes), and the pipeline
    the children run: on ``--base`` (fp32, generate stages capped at ``--max-new-tokens``) when
    given, each guardrail served by a random adapter never flagging (threshold 1.0, no review
    band), so the runs go past it as with a trained one. Returns that pipeline and the names
    published random."""
    import yaml

    from loragraph.adapters.registry import Registry
    from loragraph.testing import (
        cap_max_new_tokens,
        publish_pipeline_adapters,
        set_guardrail_threshold,
    )

    doc = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    if args.base is not None:
        doc["base"] = {"name": str(args.base.resolve()), "quantization": "fp32"}
        if args.max_new_tokens is not None:
            cap_max_new_tokens(doc, args.max_new_tokens)
    user_home = Path(os.environ.get("LORAGRAPH_HOME") or Path.home() / ".loragraph")
    (home / "base").symlink_to(user_home / "base")
    trained = Registry(user_home / "adapters") if args.random_missing else None
    random_names = publish_pipeline_adapters(
        Registry(home / "adapters"), doc, pipeline.parent / "train", trained=trained, shapes=args.base is None
    )
    set_guardrail_threshold(doc, 1.0, adapters=random_names)
    out = home / pipeline.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out, random_names


def _fixed_length(host: Any) -> None:
    """Make every generate call decode exactly max_new_tokens (no early EOS)."""
    peft = host._peft
    original = peft.generate

    def generate(**kw: Any) -> Any:
        return original(**kw, min_new_tokens=kw["generation_config"].max_new_tokens)

    peft.generate = generate


def child_timing(pipeline: Path, docs: list[str], repeats: int) -> dict[str, Any]:
    import torch

    from loragraph.router.router import Router

    router = Router.from_yaml(pipeline)
    host = router.host
    _fixed_length(host)
    router.run_many(docs[:1])  # warm-up (4-bit CPU repack, first mounts)

    # Record the host calls of one pipeline run (which adapter, which inputs), so that both
    # arms below make exactly the same calls: a real run with its adapter swaps, and a replay
    # with activation turned off (one adapter stays active; outputs differ, work does not,
    # because decoding is forced to max_new_tokens).
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    originals = {name: getattr(host, name) for name in ("classify", "tag", "generate", "classify_mixed")}

    def recorder(name: str) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            calls.append((name, a, kw))
            return originals[name](*a, **kw)

        return call

    for name in originals:
        setattr(host, name, recorder(name))
    results = router.run_many(docs)
    for name, fn in originals.items():
        setattr(host, name, fn)
    assert all(r.status != "error" for r in results), [r.error for r in results]
    paths = sorted({" -> ".join(r.path) for r in results})

    def replay() -> float:
        t = time.perf_counter()
        for name, a, kw in calls:
            originals[name](*a, **kw)
        return time.perf_counter() - t

    original_activate = host._activate
    activations = [0]
    activation_s = [0.0]

    def counting(mounted: Any) -> None:
        activations[0] += 1
        t = time.perf_counter()
        original_activate(mounted)
        activation_s[0] += time.perf_counter() - t

    host._activate = counting  # type: ignore[method-assign]
    swaps = [replay() for _ in range(repeats)]
    host._activate = lambda mounted: None  # type: ignore[method-assign]
    single = [replay() for _ in range(repeats)]
    host._activate = original_activate  # type: ignore[method-assign]

    # (b) a classify step vs one plain base forward on the same tokens
    classify_stage = next(n for n, s in router.spec.stages.items() if s.kind == "classify")
    version = router._versions[classify_stage]
    text = docs[0]
    enc = host.tokenizer([text], return_tensors="pt")
    cls_t, fwd_t = [], []
    with torch.inference_mode():
        for _ in range(max(repeats, 5)):
            t = time.perf_counter()
            host.classify(version, [text])
            cls_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            with host._peft.disable_adapter():
                host._peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            fwd_t.append(time.perf_counter() - t)
    return {
        "docs": len(docs),
        "stages": len(router.spec.stages),
        "adapters": len(router.adapters()),
        "host_calls": len(calls),
        "activations": activations[0] // repeats,  # per replay
        "paths": paths,
        "pipeline_swaps_s": statistics.median(swaps),
        "activation_s": activation_s[0] / repeats,  # per replay, inside host._activate
        "pipeline_single_adapter_s": statistics.median(single),
        "classify_ms": statistics.median(cls_t) * 1000,
        "base_forward_ms": statistics.median(fwd_t) * 1000,
        "tokens": int(enc["input_ids"].shape[1]),
    }


def child_memory(pipeline: Path, layout: str) -> dict[str, Any]:
    from loragraph.adapters.base import load_base
    from loragraph.pipelines.spec import load_pipeline

    spec = load_pipeline(pipeline)
    if layout == "base":
        base = load_base(spec.base)
        enc = base.tokenizer([DOCS[0]], return_tensors="pt")
        base.model(**enc)
        return {"peak_rss_mb": _rss_mb()}
    if layout == "resident":
        from loragraph.router.router import Router

        router = Router.from_yaml(pipeline)
        router.run_many(DOCS[:2])
        return {"peak_rss_mb": _rss_mb(), "adapters": len(router.adapters())}
    # one merged model per adapter: the base loaded once per adapter, LoRA merged in
    from peft import PeftModel

    from loragraph.adapters.registry import Registry

    registry = Registry()
    refs = list(dict.fromkeys(s.adapter for s in spec.stages.values()))
    models = []
    for ref in refs:
        version = registry.resolve(ref)
        base = load_base(spec.base)
        merged = PeftModel.from_pretrained(base.model, str(version.path)).merge_and_unload()
        enc = base.tokenizer([DOCS[0]], return_tensors="pt")
        merged(**enc)
        models.append(merged)
    return {"peak_rss_mb": _rss_mb(), "models": len(models)}


def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=False, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the {' '.join(args[:2])} child failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=PIPELINE)
    parser.add_argument("--docs", type=int, default=6, help="documents per pipeline run")
    parser.add_argument("--repeats", type=int, default=3)
    untrained = parser.add_mutually_exclusive_group()
    untrained.add_argument("--random-adapters", action="store_true", help="untrained adapters in a temporary registry")
    untrained.add_argument("--random-missing", action="store_true",
                        help="your trained adapters, and untrained ones for those you have not trained (a temporary registry)")
    parser.add_argument("--skip-merged", action="store_true", help="skip the merged-models memory layout")
    parser.add_argument("--base", type=Path, help="another base folder (fp32), e.g. loragraph.testing.tiny_base_dir, "
                        "for a quick smoke run with --random-adapters (its adapters then take no shape from the configs)")
    parser.add_argument("--max-new-tokens", type=int, help="with --base: cap the generate stages' max_new_tokens")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    docs = (DOCS * 4)[: args.docs]
    if args.child == "timing":
        print(json.dumps(child_timing(args.pipeline, docs, args.repeats)))
        return
    if args.child:
        print(json.dumps(child_memory(args.pipeline, args.child)))
        return

    env = dict(os.environ)
    tmp = None
    random_names: list[str] = []
    if args.random_adapters or args.random_missing:
        tmp = tempfile.TemporaryDirectory()
        args.pipeline, random_names = _untrained_copy(args.pipeline, Path(tmp.name), args)
        env["LORAGRAPH_HOME"] = os.environ["LORAGRAPH_HOME"] = tmp.name
    elif args.base is not None:
        parser.error("--base needs --random-adapters or --random-missing (adapters trained on that base)")
    common = ["--pipeline", str(args.pipeline), "--docs", str(args.docs), "--repeats", str(args.repeats)]
    timing = _child(["--child", "timing", *common], env)
    memory = {layout: _child(["--child", layout, *common], env) for layout in ("base", "resident")}
    if not args.skip_merged:
        memory["merged"] = _child(["--child", "merged", *common], env)

    swaps_s, activation_s = timing["pipeline_swaps_s"], timing["activation_s"]
    swap_ratio = swaps_s / (swaps_s - activation_s)
    cls_ratio = timing["classify_ms"] / timing["base_forward_ms"]
    mem_ratio = memory["resident"]["peak_rss_mb"] / memory["base"]["peak_rss_mb"]
    if args.json:
        print(json.dumps({**timing, "random_adapters": random_names, "swap_ratio": swap_ratio,
                          "one_adapter_ratio": swaps_s / timing["pipeline_single_adapter_s"],
                          "classify_ratio": cls_ratio, "memory_ratio": mem_ratio, "memory": memory}, indent=2))
    else:
        print(f"pipeline: {args.pipeline.name}  stages: {timing['stages']}  adapters: {timing['adapters']}  "
              f"docs per run: {timing['docs']}{'  (RANDOM: ' + ', '.join(random_names) + ')' if random_names else ''}")
        print(f"    paths taken: {'; '.join(timing['paths'])}")
        print(f"(a) pipeline calls with swaps    {swaps_s:8.2f} s   "
              f"({timing['host_calls']} host calls, {timing['activations']} adapter activations)")
        print(f"    of which in activations       {activation_s * 1000:8.1f} ms  ratio {swap_ratio:.4f}x  (goal <= 1.05x)")
        print(f"    same calls, one adapter       {timing['pipeline_single_adapter_s']:8.2f} s   "
              f"(reference: the kept adapter's LoRA shape runs every call)")
        print(f"(b) classify step                 {timing['classify_ms']:8.1f} ms")
        print(f"    plain base forward            {timing['base_forward_ms']:8.1f} ms   ratio {cls_ratio:.3f}x  (goal <= 1.2x; {timing['tokens']} tokens)")
        print(f"(c) peak RSS, base alone          {memory['base']['peak_rss_mb']:8.0f} MB")
        print(f"    all adapters resident         {memory['resident']['peak_rss_mb']:8.0f} MB   ratio {mem_ratio:.3f}x  (goal <= 1.10x)")
        if "merged" in memory:
            merged = memory["merged"]
            print(f"    one merged model per adapter  {merged['peak_rss_mb']:8.0f} MB   ratio "
                  f"{merged['peak_rss_mb'] / memory['base']['peak_rss_mb']:.3f}x  ({merged['models']} models)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
