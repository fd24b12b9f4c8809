"""Fixtures of the API tests: real uvicorn servers on 127.0.0.1, a real registry on a tmp dir."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from loragraph.api import ApiSettings, create_app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    settings: ApiSettings
    routers: dict[str, Any]

    def client(self, key: str | None = None, timeout: float = 15.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


@contextlib.contextmanager
def serve(routers: dict[str, Any], settings: ApiSettings, *, registry: Any = None) -> Iterator[Server]:
    """Run the app under a real uvicorn server in a thread; always stopped on exit."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(routers, settings, registry=registry), host="127.0.0.1", port=port,
        log_level="warning", lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield Server(url=f"http://127.0.0.1:{port}", settings=settings, routers=routers)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def publish_generate(registry: Any, name: str, tmp: Path, *, marker: str) -> Any:
    """Publish a weightless generate version (files are checksummed, never loaded here)."""
    staged = tmp / f"staged-{name}-{marker}"
    staged.mkdir(parents=True)
    (staged / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "marker": marker}))
    (staged / "adapter_model.safetensors").write_bytes(marker.encode() * 8)
    return registry.publish(
        name,
        staged,
        {
            "kind": "generate", "base_name": "tiny", "base_fingerprint": "fp-test", "quantization": "fp32",
            "method": "sft", "metrics": {"rougeL": 0.1 * len(marker)}, "prompt": "{{ text }}",
        },
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from loragraph.adapters.registry import Registry

    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root / "adapters")
    for name in ("injection", "intent", "entities", "reply"):
        publish_generate(reg, name, root, marker="one")
    publish_generate(reg, "summary", root, marker="one")
    publish_generate(reg, "summary", root, marker="two")  # v2, not promoted
    return reg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, registry: Any) -> Iterator[Server]:
    """Open server (no keys): `echo` (with registry), `slow` (3 s runs, 1 s timeout), `broken`
    (a stage fails: an `error` result), `raising` (the router raises StepError)."""
    from loragraph.testing import EchoRouter

    db = tmp_path_factory.mktemp("db") / "loragraph.db"
    settings = ApiSettings(db_path=db, run_timeout_s=1.0, workers=3, max_body_bytes=64 * 1024)
    routers = {
        "echo": EchoRouter("echo", registry=registry, max_document_chars=5000),
        "slow": EchoRouter("slow", delay_s=3.0),
        "broken": EchoRouter("broken", fail_stage="summary"),
        "raising": EchoRouter("raising", fail_stage="summary", raise_errors=True),
    }
    with serve(routers, settings, registry=registry) as srv:
        yield srv
