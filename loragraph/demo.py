"""The main job, end to end on the bundled base (`make demo` / `python -m loragraph.demo`).

1. prepare the bundled base (once);
2. generate the sample customer-service data and the guardrail data (once);
3. train every adapter the sample pipeline names that is not in the registry yet (cached
   afterwards: a second run trains nothing);
4. start the API server on the sample pipeline (`loragraph serve`);
5. send the sample documents through the API over HTTP and print what each stage said;
6. print where the playground is, and keep serving until Ctrl-C when run from a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "customer_service"


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stale_sample(data_dir: Path, seed: int = 0) -> str | None:
    """Why the sample in ``data_dir`` must be (re)generated for the demo, or None when it can be reused:
    missing, written by another version of the generator, or with another seed or other sizes
    than ``generate_sample``'s defaults (the shipped training configs expect those: the intent
    config reads its 3000 messages once)."""
    from loragraph.training.sample import SampleSizes, generator_digest

    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        return "no sample yet"
    try:
        written = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{manifest} is unreadable ({exc})"
    if written.get("generator_digest") != generator_digest():
        return "it was written by another version of the sample generator"
    if written.get("seed") != seed:
        return f"it was written with seed {written.get('seed')}, the demo uses {seed}"
    wanted, sizes = SampleSizes().model_dump(), written.get("sizes") or {}
    if sizes != wanted:
        changed = ", ".join(f"{k} {sizes.get(k)} -> {v}" for k, v in wanted.items() if sizes.get(k) != v)
        return f"it was written with other sizes ({changed})"
    return None


def ensure_data(data_dir: Path, seed: int = 0) -> None:
    from loragraph.guardrails.data import build_input_rows, build_output_rows, write_dataset
    from loragraph.training.sample import generate_sample

    reason = stale_sample(data_dir, seed)
    if reason is not None:
        print(f"generating the sample customer-service data in {data_dir}: {reason}")
        generate_sample(data_dir, seed=seed)
    else:
        print(f"sample data: {data_dir} (cached)")
    guard = data_dir / "guardrails"
    # the guardrail data is built from the sample: a new sample means new guardrail data
    if reason is not None or not (guard / "input" / "test.jsonl").is_file() or not (guard / "output" / "test.jsonl").is_file():
        print(f"building the guardrail data in {guard}")
        write_dataset(build_input_rows(seed=seed, sample_dir=data_dir), guard / "input")
        write_dataset(build_output_rows(seed=seed, sample_dir=data_dir), guard / "output")
    else:
        print(f"guardrail data: {guard} (cached)")


def ensure_adapters(pipeline: Path) -> list[str]:
    """Train what the pipeline needs and the registry lacks; return what was trained."""
    from loragraph.adapters.registry import Registry
    from loragraph.pipelines.spec import load_pipeline
    from loragraph.training.train import train

    spec = load_pipeline(pipeline)
    registry = Registry()
    trained: list[str] = []
    names = list(dict.fromkeys(stage.adapter_name for stage in spec.stages.values()))
    for name in names:
        if name in registry.names():
            version = registry.resolve(name)
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(version.manifest.metrics.items())[:4])
            print(f"{name:<14} {version.ref} (cached) {metrics}")
            continue
        config = pipeline.parent / "train" / f"{name}.yaml"
        print(f"{name:<14} training from {config.relative_to(ROOT) if config.is_relative_to(ROOT) else config} ...", flush=True)
        started = time.perf_counter()
        version = train(config, registry=registry)
        print(f"{name:<14} published {version.ref} in {time.perf_counter() - started:.0f}s")
        trained.append(name)
    return trained


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see its log above")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server was not ready after {timeout:.0f}s")


def _show(doc_id: str, text: str, result: dict[str, Any]) -> None:
    outputs = result.get("outputs", {})
    print(f"\n--- {doc_id}: {text[:90].replace(chr(10), ' ')}{'...' if len(text) > 90 else ''}")
    print(f"    status {result.get('status')}   path {' -> '.join(result.get('path', []))}   "
          f"{result.get('latency_ms', 0) / 1000:.1f}s")
    for stage, out in outputs.items():
        if "label" in out and "passed" in out:
            print(f"    {stage:<13} guardrail {out['label']} ({out['score']:.2f}) -> {out['action']}")
        elif "label" in out:
            print(f"    {stage:<13} {out['label']} ({out['score']:.2f})")
        elif "entities" in out:
            ents = "; ".join(f"{e['type']}={e['text']}" for e in out["entities"]) or "none"
            print(f"    {stage:<13} {ents}")
        elif "text" in out:
            print(f"    {stage:<13} {out['text'].strip()[:300]}")
    if result.get("reply"):
        print(f"    {'reply to send':<13} {result['reply'].strip()[:300]}")
    if result.get("error"):
        print(f"    error         {result['error']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=EXAMPLE / "pipeline.yaml")
    parser.add_argument("--data", type=Path, default=EXAMPLE / "data", help="sample data folder")
    parser.add_argument("--docs", type=int, default=8, help="sample documents to send (default 8)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--serve", choices=["auto", "yes", "no"], default="auto",
                        help="keep serving after the documents (auto: when run from a terminal)")
    args = parser.parse_args(argv)

    from loragraph.adapters.base import loragraph_home, prepare_base

    _say("1/5 the shared base")
    print(f"bundled base: {prepare_base()}")
    _say("2/5 sample data")
    ensure_data(args.data)
    _say("3/5 adapters (trained once, then cached in the registry)")
    ensure_adapters(args.pipeline)

    _say("4/5 serving the sample pipeline")
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "loragraph.cli", "serve", str(args.pipeline), "--port", str(port), "--log-level", "warning"]
    print(" ".join(["loragraph", *cmd[3:]]))
    server = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        _wait_ready(url, server, timeout=600)
        print(f"ready at {url}   (home {loragraph_home()})")

        import httpx

        from loragraph.pipelines.spec import load_pipeline

        name = load_pipeline(args.pipeline).name
        _say(f"5/5 sample documents through POST {url}/v1/pipelines/{name}/runs")
        docs = [json.loads(line) for line in (args.data / "documents.jsonl").read_text().splitlines() if line.strip()]
        with httpx.Client(base_url=url, timeout=600) as client:
            for doc in docs[: args.docs]:
                response = client.post(f"/v1/pipelines/{name}/runs", json={"text": doc["text"]})
                if response.status_code >= 400:
                    print(f"\n--- {doc['id']}: HTTP {response.status_code} {response.text[:300]}")
                    continue
                _show(doc["id"], doc["text"], response.json())
        print(f"\nplayground: {url}/   API docs: {url}/schema   metrics: {url}/metrics")
        keep = args.serve == "yes" or (args.serve == "auto" and sys.stdin.isatty() and not os.environ.get("CI"))
        if keep:
            print("serving; press Ctrl-C to stop")
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
