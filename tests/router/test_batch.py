"""`loragraph run`: a JSONL file through the pipeline; bad lines become error results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loragraph.cli import main
from loragraph.router.batch import run_file
from tests.router.conftest import DOC, _router


def test_run_file_keeps_order_and_reports_bad_lines(world: dict[str, Any], tmp_path: Path) -> None:
    router = _router(world, tmp_path, when="{field: intent.score, op: lt, value: 0}")
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"id": "a", "text": DOC}) + "\n"
        + "{not json\n"
        + "\n"
        + json.dumps({"id": "c", "text": ""}) + "\n"
        + json.dumps({"id": "d", "text": "where is ORD-2024-11873?"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    summary = run_file(router, src, out, batch_size=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "", "c", "d"]
    assert [r["status"] for r in rows] == ["ok", "error", "error", "ok"]
    assert "in.jsonl:2" in rows[1]["error"] and "not valid JSON" in rows[1]["error"]
    assert "in.jsonl:4" in rows[2]["error"] and "`text`" in rows[2]["error"]
    assert rows[0]["outputs"]["intent"]["label"] and rows[0]["trace"][0]["adapter"] == "intent@v1"
    assert summary.statuses == {"ok": 2, "error": 2}
    assert summary.guardrails == {}  # this pipeline has no guardrail stage
    assert summary.lines() == ["2 error, 2 ok"]


def test_cli_run(world: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    from tests.router.conftest import _yaml

    monkeypatch.setenv("LORAGRAPH_HOME", str(world["root"]))  # the registry is <home>/adapters
    path = tmp_path / "p.yaml"
    path.write_text(_yaml(world["base"]))
    code = main(["run", str(path), "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "missing.jsonl" in capsys.readouterr().err
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "text": DOC}) + "\n")
    assert main(["run", str(path), "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 0
    assert "1 ok" in capsys.readouterr().out
    assert json.loads((tmp_path / "o.jsonl").read_text())["outputs"]["intent"]["label"]


def test_cli_run_overrides_a_stage_adapter(world: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    """`--adapter STAGE=REF` runs another version for this run only; the file is untouched."""
    from tests.router.conftest import _yaml

    monkeypatch.setenv("LORAGRAPH_HOME", str(world["root"]))
    path = tmp_path / "p.yaml"
    path.write_text(_yaml(world["base"]))
    before = path.read_bytes()
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "text": DOC}) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["run", str(path), "-i", str(src), "-o", str(out), "--adapter", "intent=intent@v1"]) == 0
    trace = json.loads(out.read_text())["trace"]
    assert trace[0]["stage"] == "intent" and trace[0]["adapter"] == "intent@v1"
    assert path.read_bytes() == before
    capsys.readouterr()
    # an unknown stage, a malformed option and a missing version: exit 2, nothing written
    out.unlink()
    assert main(["run", str(path), "-i", str(src), "-o", str(out), "--adapter", "intnet=intent@v1"]) == 2
    assert "unknown stage `intnet`; did you mean `intent`?" in capsys.readouterr().err
    assert main(["run", str(path), "-i", str(src), "-o", str(out), "--adapter", "intent"]) == 2
    assert "STAGE=ADAPTER" in capsys.readouterr().err
    assert main(["run", str(path), "-i", str(src), "-o", str(out), "--adapter", "intent=intent@v9"]) == 2
    assert "intent@v9" in capsys.readouterr().err
    assert not out.exists()
