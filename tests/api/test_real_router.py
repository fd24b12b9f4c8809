"""The API over the REAL router on the tiny random base (untrained adapters in a real registry):
the seam `create_app(routers, settings)` works with `Router.from_yaml`, concurrent runs are
batched through `run_many`, and a promotion reaches the next run without a restart."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from loragraph.api import ApiSettings, Store
from tests.api.conftest import serve

INTENTS = ["order_status", "refund_request", "complaint", "other"]
DOC = "Hi, I was charged $49.99 twice for order #A-48213. Please refund me."


def _yaml(base_path: Path) -> str:
    return f"""
name: support
base: {{name: {base_path}, quantization: fp32}}
stages:
  intent: {{kind: classify, adapter: intent}}
  summary:
    kind: generate
    adapter: summary
    inputs: [text]
    max_new_tokens: 4
edges:
  - {{from: intent, to: summary}}
"""


@pytest.fixture(scope="module")
def real(tiny_base: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from loragraph.adapters.registry import Registry
    from loragraph.router.router import Router
    from loragraph.testing import publish_random_adapter

    root = tmp_path_factory.mktemp("real")
    registry = Registry(root / "adapters")
    publish_random_adapter(registry, tiny_base, "intent", "classify", labels=INTENTS, seed=1)
    publish_random_adapter(registry, tiny_base, "summary", "generate", prompt="Summarise:\n{{ text }}", seed=3)
    path = root / "support.yaml"
    path.write_text(_yaml(Path(tiny_base.path)))
    router = Router.from_yaml(path, registry=registry, base=tiny_base)
    return {"registry": registry, "router": router, "root": root, "base": tiny_base}


def test_real_router_runs_jobs_feedback_and_promotion(real: dict[str, Any], tmp_path: Path) -> None:
    from loragraph.testing import publish_random_adapter

    router, registry = real["router"], real["registry"]
    batches: list[int] = []
    original = router.run_many

    def run_many(texts: list[str], *, run_ids: Any = None, deadlines: Any = None) -> Any:  # a spy
        batches.append(len(texts))
        return original(texts, run_ids=run_ids, deadlines=deadlines)

    router.run_many = run_many
    settings = ApiSettings(db_path=tmp_path / "real.db", admin_keys=["admin"], workers=1, run_timeout_s=60)
    with serve({"support": router}, settings, registry=registry) as srv, srv.client() as client:
        resp = client.post("/v1/pipelines/support/runs", json={"text": DOC})
        assert resp.status_code == 201, resp.text
        run = resp.json()
        assert run["status"] == "ok" and run["path"] == ["intent", "summary"]
        assert run["outputs"]["intent"]["label"] in INTENTS
        assert isinstance(run["outputs"]["summary"]["text"], str)
        assert [s["adapter"] for s in run["trace"]] == ["intent@v1", "summary@v1"]

        pipes = client.get("/v1/pipelines").json()
        assert pipes[0]["stages"] == [
            {"name": "intent", "kind": "classify", "adapter": "intent"},
            {"name": "summary", "kind": "generate", "adapter": "summary"},
        ]
        assert sorted(pipes[0]["adapters"]) == ["intent@v1", "summary@v1"]

        fb = client.post(f"/v1/runs/{run['id']}/feedback", json={"stage": "summary", "rating": -1, "corrected": "Refund."})
        assert fb.status_code == 201

        # concurrent documents: one worker, so waiting runs go through run_many together
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda i: client.post("/v1/pipelines/support/runs", json={"text": f"{DOC} {i}"}).status_code, range(6)))
        assert codes == [201] * 6
        assert batches and max(batches) >= 2, f"waiting runs were not batched: {batches}"

        # promotion reaches the next run without a restart
        publish_random_adapter(registry, real["base"], "intent", "classify", labels=INTENTS, seed=7)
        promoted = client.post("/v1/adapters/intent/promote", json={"version": 2}, headers={"Authorization": "Bearer admin"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["changed"] == {"support": ["intent"]}
        after = client.post("/v1/pipelines/support/runs", json={"text": DOC}).json()
        assert [s["adapter"] for s in after["trace"]] == ["intent@v2", "summary@v1"]

    store = Store(settings.resolved_db_path)
    try:
        items = list(store.iter_feedback("summary"))
        assert store.count_runs() == {"ok": 8}
    finally:
        store.close()
    assert items[0].input == {"text": DOC, "intent": run["outputs"]["intent"]}
    assert items[0].output == run["outputs"]["summary"]

    # with the pipeline, the export gives exactly the context the template saw (`inputs: [text]`)
    import json

    from loragraph.cli import main

    out = tmp_path / "export"
    code = main(["feedback", "export", "--stage", "summary", "--out", str(out), "--db", str(settings.resolved_db_path),
                 "--pipeline", str(real["root"] / "support.yaml")])
    assert code == 0
    assert [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()] == [
        {"input": {"text": DOC}, "target": "Refund."}]
    assert main(["feedback", "export", "--stage", "nosuch", "--out", str(out), "--db", str(settings.resolved_db_path),
                 "--pipeline", str(real["root"] / "support.yaml")]) == 2


def test_serve_command_builds_real_routers_sharing_one_base(real: dict[str, Any], tmp_path: Path) -> None:
    from loragraph.cli import _build_routers, build_parser

    second = tmp_path / "support2.yaml"
    second.write_text((real["root"] / "support.yaml").read_text().replace("name: support", "name: support2"))
    args = build_parser().parse_args(
        ["serve", str(real["root"] / "support.yaml"), str(second), "--registry", str(real["registry"].root)]
    )
    routers = _build_routers(args)
    assert sorted(routers) == ["support", "support2"]
    assert routers["support"].host is routers["support2"].host, "one base, one host for both pipelines"
    assert routers["support2"].run(DOC).status == "ok"
