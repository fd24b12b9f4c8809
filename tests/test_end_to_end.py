"""The whole main job on real components, small enough for CI: the bundled base (nf4), the
sample data, every adapter the sample pipeline names trained for real (a small budget),
the pipeline run by the router, and the Litestar API called over HTTP on a real server.

The budgets here prove the wiring, not the quality; the quality figures come from
`make demo` / the shipped configs (see README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "customer_service"

pytestmark = pytest.mark.slow


def _small(config: Any, data: Path) -> Any:
    """The shipped config with its data moved to ``data`` and a CI-sized budget."""

    def moved(path: Path | None) -> Path | None:
        if path is None:
            return None
        parts = list(path.parts)
        at = len(parts) - 1 - parts[::-1].index("data")
        return data.joinpath(*parts[at + 1 :])

    paths = config.data.model_copy(
        update={"train": moved(config.data.train), "validation": moved(config.data.validation), "test": moved(config.data.test)}
    )
    return config.model_copy(
        update={
            "data": paths,
            "epochs": 1,
            "max_train_examples": 24,
            "max_eval_examples": 6,
            "max_test_examples": 6,
            "max_new_tokens": 16,
            "batch_size": 8,
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from loragraph.adapters.registry import Registry
    from loragraph.guardrails.data import build_input_rows, build_output_rows, write_dataset
    from loragraph.pipelines.spec import load_pipeline
    from loragraph.training.config import load_train_config
    from loragraph.training.sample import SIZE_PRESETS, generate_sample
    from loragraph.training.train import train

    tmp = tmp_path_factory.mktemp("e2e")
    data = tmp / "data"
    generate_sample(data, seed=0, sizes=SIZE_PRESETS["tiny"])
    write_dataset(build_input_rows(seed=0, sample_dir=data), data / "guardrails" / "input")
    write_dataset(build_output_rows(seed=0, sample_dir=data), data / "guardrails" / "output")
    spec = load_pipeline(EXAMPLE / "pipeline.yaml")
    registry = Registry(tmp / "adapters")  # never the user's registry
    names = list(dict.fromkeys(stage.adapter_name for stage in spec.stages.values()))
    for name in names:
        config = _small(load_train_config(EXAMPLE / "train" / f"{name}.yaml"), data)
        train(config, registry=registry)
    return {"data": data, "registry": registry, "names": names, "spec": spec}


def test_every_sample_adapter_trains_and_publishes(trained: dict[str, Any]) -> None:
    registry = trained["registry"]
    for name in trained["names"]:
        version = registry.resolve(name)
        assert version.version == 1
        assert version.manifest.metrics, name
        registry.verify(version)


def test_sample_pipeline_runs_on_the_bundled_base(trained: dict[str, Any]) -> None:
    from loragraph import Pipeline

    pipeline = Pipeline.from_yaml(EXAMPLE / "pipeline.yaml", registry=trained["registry"])
    docs = [json.loads(line)["text"] for line in (trained["data"] / "documents.jsonl").read_text().splitlines()[:3]]
    results = pipeline.run_many(docs)
    for doc, result in zip(docs, results, strict=True):
        assert result.status in ("ok", "blocked", "escalated"), result.error
        assert result.path and result.path[0] == pipeline.spec.entry_stage == "guard_in"
        assert result.verdicts and result.verdicts[0].guardrail == "guard_in"
        if result.status == "blocked":  # a blocked input never reaches a generate stage
            assert result.path == ["guard_in"] and result.reply
        elif result.path == ["guard_in"]:  # escalated by guard_in's review band: no generate stage either
            assert result.status == "escalated" and result.reply and result.verdicts[0].action == "escalate"
        else:
            assert result.path[-1] in ("check_reply", "check_out_of_scope", "escalation"), result.path
        for step in result.trace:
            assert step.status in ("ok", "blocked")
            assert step.adapter and step.adapter.endswith("@v1")
        for out in result.outputs.values():
            for e in out.get("entities", []):
                assert doc[e["start"] : e["end"]] == e["text"]


def test_the_api_serves_the_sample_pipeline_over_http(trained: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    from loragraph import Pipeline
    from loragraph.api.settings import ApiSettings
    from loragraph.api.store import Store
    from tests.api.conftest import serve

    router = Pipeline.from_yaml(EXAMPLE / "pipeline.yaml", registry=trained["registry"])
    settings = ApiSettings(db_path=tmp_path / "loragraph.db", run_timeout_s=600)
    text = "Hi, where is my order #A-48213? It was supposed to arrive last Tuesday. Maria Lopez"
    with (
        serve({router.name: router}, settings, registry=trained["registry"]) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        response = client.post(f"/v1/pipelines/{router.name}/runs", json={"text": text})
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["outputs"] and result["trace"]
        stored = client.get(f"/v1/runs/{result['id']}").json()
        assert stored["status"] == result["status"]
        # the reply stage when the run got that far; the input guardrail when it blocked
        # (adapters trained on 24 examples flag at random)
        stage = next((s for s in result["outputs"] if "text" in result["outputs"][s]), "guard_in")
        body: dict[str, Any] = {"stage": stage, "rating": -1}
        if stage != "guard_in":
            body["corrected"] = "A better answer."
        feedback = client.post(f"/v1/runs/{result['id']}/feedback", json=body)
        assert feedback.status_code == 201, feedback.text
        assert client.get("/ready").status_code == 200
    items = list(Store(tmp_path / "loragraph.db").iter_feedback(stage))
    assert items and items[0].rating == -1
    assert items[0].corrected == body.get("corrected")
