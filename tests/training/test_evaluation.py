"""`loragraph eval` and `evaluate_adapter`: a published version scored through AdapterHost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from loragraph.adapters.registry import Registry
from loragraph.cli import main
from loragraph.training.evaluation import evaluate_adapter
from loragraph.training.train import train
from tests.training.test_trainers import make_config


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["classify", "tag"])
def test_eval_cli_json_matches_the_trainers_test_metrics(
    tmp_path: Path, tiny_base_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config(tmp_path, tiny_base_path, kind, epochs=2, learning_rate=1e-2)
    version = train(cfg)  # the default registry of the test's own $LORAGRAPH_HOME
    capsys.readouterr()
    assert main(["eval", f"{version.ref}", "--data", str(cfg.data.test), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapter"] == f"x{kind}@v1" and report["kind"] == kind and report["examples"] == 6
    # mounted through AdapterHost, the version scores exactly what the trainer measured in memory
    for key, value in report["metrics"].items():
        assert value == pytest.approx(version.manifest.metrics[key]), key
    assert "base" not in report  # only generate adapters are compared with the base
    # every mistake is listed with its file:line, consistent with the metrics
    test_rows = [json.loads(line) for line in Path(cfg.data.test).read_text().splitlines()]
    wrong = report["errors"]
    for err in wrong:
        line = int(err["where"].rsplit(":", 1)[1])
        assert err["where"] == f"{Path(cfg.data.test).name}:{line}" and test_rows[line - 1]["text"] == err["text"]
    if kind == "classify":
        assert len(wrong) == round((1 - report["metrics"]["accuracy"]) * 6)
        assert all(err["label"] != err["predicted"] for err in wrong)
        assert sum(c["count"] for c in report["confusions"]) == len(wrong)
    else:
        assert (len(wrong) == 0) == (report["metrics"]["f1"] == 1.0)
        for err in wrong:
            assert err["missed"] or err["spurious"]
            assert all(err["text"][x["start"] : x["end"]] == x["text"] for x in err["missed"] + err["spurious"])
    assert main(["eval", f"{version.ref}", "--data", str(cfg.data.test), "--errors", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{len(wrong)} of 6 examples wrong" in out
    assert sum(line.startswith("  test.jsonl:") for line in out.splitlines()) == min(2, len(wrong))


def test_eval_generate_compares_with_the_base(tmp_path: Path, tiny_base_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "generate", epochs=1)
    version = train(cfg)
    report = evaluate_adapter(version.ref, cfg.data.test, max_new_tokens=4)
    assert set(report["metrics"]) == {"rouge1", "rouge2", "rougeL"}
    assert set(report["base"]) == set(report["metrics"])
    for key in report["metrics"]:
        assert report["gain"][key] == pytest.approx(report["metrics"][key] - report["base"][key])
    assert report["samples"] and {"prompt", "target", "output", "base_output"} <= set(report["samples"][0])
    assert report["samples"][0]["prompt"].startswith("Summarise the message.")

    capsys.readouterr()
    assert main(["eval", "xgenerate", "--data", str(cfg.data.test), "--max-examples", "2", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "xgenerate@v1 (generate)" in out and "2 examples" in out
    assert "rougeL" in out and "base" in out and "gain" in out


def test_eval_cli_errors(tmp_path: Path, tiny_base_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "nothing@v1", "--data", str(tmp_path / "x.jsonl")]) == 2
    assert "nothing" in capsys.readouterr().err
    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1)
    train(cfg, registry=Registry())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "label": "order_status"}\n{"text": "x"}\n')
    assert main(["eval", "xclassify", "--data", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_train_cli(tmp_path: Path, tiny_base_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1)
    yaml_path = tmp_path / "intent.yaml"
    doc = json.loads(cfg.model_dump_json())
    yaml_path.write_text(json.dumps(doc))  # JSON is YAML
    assert main(["train", str(yaml_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["adapter"] == "xclassify@v1" and "accuracy" in out["metrics"]
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_promote_if_better_compares_both_versions_on_the_test_split(tmp_path: Path, tiny_base_path: Path) -> None:
    from loragraph.training.train import promote_if_better

    registry = Registry()
    weak = make_config(tmp_path, tiny_base_path, "classify", epochs=1, learning_rate=1e-7, head_learning_rate=1e-7)
    v1 = train(weak)
    first = promote_if_better(v1, weak)
    assert first.promoted and "first version" in first.reason and not first.scores
    strong = weak.model_copy(update={"epochs": 3, "learning_rate": 1e-2, "head_learning_rate": 5e-2})
    v2 = train(strong)
    assert registry.promoted("xclassify").version == 1  # publishing alone does not promote
    better = promote_if_better(v2, strong)
    assert better.scores[v2.ref] > better.scores[v1.ref], better.scores
    assert better.promoted and registry.promoted("xclassify").version == 2
    # the scores are the versions' own test metrics, measured again through one host
    assert better.scores[v2.ref] == pytest.approx(v2.manifest.metrics["accuracy"])
    v3 = train(weak.model_copy(update={"seed": 1}))
    worse = promote_if_better(v3, weak)
    assert not worse.promoted and "stays promoted" in worse.reason
    assert registry.promoted("xclassify").version == 2


def test_cli_train_promote_flag(tmp_path: Path, tiny_base_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = make_config(tmp_path, tiny_base_path, "classify", epochs=1)
    path = tmp_path / "xclassify.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    assert main(["train", str(path)]) == 0  # v1: the first version is promoted on publish
    capsys.readouterr()
    assert main(["train", str(path), "--no-resume", "--promote", "if_better", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the same config and seed train the same weights: a tie keeps v1
    assert report["adapter"] == "xclassify@v2" and report["promotion"]["promoted"] is False
    assert set(report["promotion"]["scores"]) == {"xclassify@v1", "xclassify@v2"}
    registry = Registry()
    assert registry.promoted("xclassify").version == 1
    assert main(["train", str(path), "--no-resume", "--promote", "always"]) == 0
    assert registry.promoted("xclassify").version == 3
