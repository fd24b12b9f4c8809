from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from loragraph.adapters import registry as registry_module
from loragraph.adapters.heads import HeadConfig, build_head, save_head
from loragraph.adapters.registry import (
    AdapterVersion,
    Manifest,
    Registry,
    parse_ref,
    verify_version,
)
from loragraph.errors import ConfigError, IntegrityError, NotFoundError

LABELS = ["refund_request", "order_status", "other"]


def _fields(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "kind": "classify",
        "labels": LABELS,
        "head": HeadConfig(kind="classify", labels=LABELS, hidden_size=8),
        "base_name": "tiny",
        "base_fingerprint": "sha256:abc",
        "quantization": "fp32",
        "method": "classify",
        "metrics": {"accuracy": 0.9},
        "hyperparameters": {"lr": 1e-3},
    }
    fields.update(over)
    return fields


def _stage(path: Path, seed: int = 0, *, head: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "seed": seed}))
    save_file({"w": torch.randn(4, 4)}, str(path / "adapter_model.safetensors"))
    if head:
        save_head(build_head(HeadConfig(kind="classify", labels=LABELS, hidden_size=8)), path)
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "adapters")


def test_default_root_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAGRAPH_HOME", str(tmp_path / "h"))
    assert Registry().root == tmp_path / "h" / "adapters"


def test_publish_list_resolve_promote_rollback(reg: Registry, tmp_path: Path) -> None:
    v1 = reg.publish("intent", _stage(tmp_path / "s1", 1), _fields())
    v2 = reg.publish("intent", _stage(tmp_path / "s2", 2), _fields(parent=1))
    v3 = reg.publish("intent", _stage(tmp_path / "s3", 3), _fields(parent=2))
    assert (v1.version, v2.version, v3.version) == (1, 2, 3)
    assert v3.ref == "intent@v3" and v3.path == reg.root / "intent" / "v3"
    assert reg.names() == ["intent"]
    assert [v.version for v in reg.versions("intent")] == [1, 2, 3]
    # the first version is promoted; later ones are not, until promoted
    assert reg.promoted("intent").version == 1
    assert reg.resolve("intent").version == 1
    assert reg.resolve("intent@v3").version == 3
    assert reg.resolve("intent@2").version == 2
    got = reg.get("intent", 2)
    assert got.manifest.parent == 1 and got.manifest.metrics == {"accuracy": 0.9}
    assert got.manifest.head == HeadConfig(kind="classify", labels=LABELS, hidden_size=8)
    assert set(got.manifest.files) == {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"}

    reg.promote("intent", 2)
    reg.promote("intent", 3)
    assert reg.resolve("intent").version == 3
    assert reg.rollback("intent").version == 2
    assert reg.resolve("intent").version == 2
    assert reg.rollback("intent").version == 1
    with pytest.raises(ConfigError, match="roll back"):
        reg.rollback("intent")
    state = json.loads((reg.root / "intent" / "state.json").read_text())
    assert state["promoted"] == 1
    assert [e["action"] for e in state["history"]] == ["publish", "promote", "promote", "rollback", "rollback"]
    # the staged folder is copied, not consumed
    assert (tmp_path / "s1" / "adapter_model.safetensors").is_file()


def test_publish_with_promote_flag(reg: Registry, tmp_path: Path) -> None:
    reg.publish("intent", _stage(tmp_path / "s1", 1), _fields())
    reg.publish("intent", _stage(tmp_path / "s2", 2), _fields(), promote=True)
    assert reg.promoted("intent").version == 2
    assert reg.rollback("intent").version == 1


@pytest.mark.parametrize("ref", ["", "intent@", "intent@vx", "intent@v0", "in tent", "a@v1@v2", "../x", "intent@-1"])
def test_bad_reference_is_config_error(reg: Registry, ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        reg.resolve(ref)
    assert repr(ref) in str(info.value)


def test_parse_ref() -> None:
    assert parse_ref("intent") == ("intent", None)
    assert parse_ref("intent@v3") == ("intent", 3)
    assert parse_ref("pii-guard@12") == ("pii-guard", 12)


def test_missing_adapter_and_version_list_what_exists(reg: Registry, tmp_path: Path) -> None:
    reg.publish("intent", _stage(tmp_path / "s1"), _fields())
    with pytest.raises(NotFoundError, match=r"`intent`"):
        reg.resolve("summary")
    with pytest.raises(NotFoundError, match=r"no version v7; published versions: v1"):
        reg.resolve("intent@v7")
    with pytest.raises(NotFoundError):
        reg.promote("intent", 4)


def test_versions_are_read_only(reg: Registry, tmp_path: Path) -> None:
    v = reg.publish("intent", _stage(tmp_path / "s1"), _fields())
    for path in v.path.iterdir():
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path.name
    if os.geteuid() != 0:  # root ignores file modes
        with pytest.raises(PermissionError):
            (v.path / "adapter_model.safetensors").write_bytes(b"x")
    # publish never overwrites: a second publish gets a new folder, v1 is unchanged
    before = (v.path / "manifest.json").read_bytes()
    assert reg.publish("intent", _stage(tmp_path / "s2", 2), _fields()).version == 2
    assert (v.path / "manifest.json").read_bytes() == before


def test_failure_mid_publish_leaves_nothing(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.publish("intent", _stage(tmp_path / "s1"), _fields())
    calls = {"n": 0}
    real = registry_module.sha256_file

    def flaky(path: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 2:  # after the first file was copied and checksummed
            raise OSError("disk full (injected)")
        return real(path)

    monkeypatch.setattr(registry_module, "sha256_file", flaky)
    with pytest.raises(OSError, match="injected"):
        reg.publish("intent", _stage(tmp_path / "s2", 2), _fields())
    assert sorted(p.name for p in (reg.root / "intent").iterdir() if not p.name.startswith(".lock")) == [
        "state.json",
        "v1",
    ]

    def failing_rename(src: Any, dst: Any) -> None:
        raise OSError("rename failed (injected)")

    monkeypatch.setattr(registry_module, "sha256_file", real)
    monkeypatch.setattr(registry_module.os, "rename", failing_rename)
    with pytest.raises(OSError, match="injected"):
        reg.publish("intent", _stage(tmp_path / "s3", 3), _fields())
    monkeypatch.undo()
    assert sorted(p.name for p in (reg.root / "intent").iterdir() if p.name != ".lock") == ["state.json", "v1"]
    assert [v.version for v in reg.versions("intent")] == [1]
    # and the next publish still gets v2
    assert reg.publish("intent", _stage(tmp_path / "s4", 4), _fields()).version == 2


def _publish_worker(args: tuple[str, str, int]) -> int:
    root, staged, seed = args
    return Registry(root).publish("intent", Path(staged), _fields(data_hash=str(seed))).version


def test_concurrent_publishes_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    jobs = [(str(root), str(_stage(tmp_path / f"s{i}", i)), i) for i in range(6)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        got = pool.map(_publish_worker, jobs)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    reg = Registry(root)
    assert [v.version for v in reg.versions("intent")] == [1, 2, 3, 4, 5, 6]
    assert reg.promoted("intent").version == 1
    assert not [p for p in (root / "intent").iterdir() if p.name.startswith(".tmp")]


def test_tampered_file_raises_integrity_error(reg: Registry, tmp_path: Path) -> None:
    v = reg.publish("intent", _stage(tmp_path / "s1"), _fields())
    reg.verify(v)
    reg.verify("intent@v1")
    weights = v.path / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"intent@v1.*adapter_model\.safetensors"):
        reg.verify("intent")
    with pytest.raises(IntegrityError):
        reg.promote("intent", 1)


def test_missing_and_unexpected_files(reg: Registry, tmp_path: Path) -> None:
    v = reg.publish("intent", _stage(tmp_path / "s1"), _fields())
    (v.path / "adapter_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(IntegrityError, match=r"adapter_model\.bin.*only `\.safetensors`"):
        verify_version(v)
    (v.path / "adapter_model.bin").unlink()
    (v.path / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"unexpected file `extra\.safetensors`"):
        verify_version(v)
    (v.path / "extra.safetensors").unlink()
    (v.path / "head.safetensors").unlink()
    with pytest.raises(IntegrityError, match=r"`head\.safetensors` listed in the manifest is missing"):
        verify_version(v)


def test_bin_weights_are_refused_at_publish(reg: Registry, tmp_path: Path) -> None:
    staged = _stage(tmp_path / "s1")
    (staged / "adapter_model.safetensors").unlink()
    (staged / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(IntegrityError, match=r"adapter_model\.bin"):
        reg.publish("intent", staged, _fields())
    assert reg.names() == []


def test_publish_validates_fields_and_folder(reg: Registry, tmp_path: Path) -> None:
    staged = _stage(tmp_path / "s1")
    with pytest.raises(ConfigError, match="labels"):
        reg.publish("intent", staged, _fields(labels=["a", "b"]))
    with pytest.raises(ConfigError, match="version"):
        reg.publish("intent", staged, _fields(version=3))
    with pytest.raises(ConfigError, match="name"):
        reg.publish("bad name", staged, _fields())
    no_head = _stage(tmp_path / "s2", head=False)
    with pytest.raises(ConfigError, match=r"head\.safetensors"):
        reg.publish("intent", no_head, _fields())
    (no_head / "sub").mkdir()
    with pytest.raises(ConfigError, match="subfolder"):
        reg.publish("summary", no_head, _fields(kind="generate", labels=[], head=None, method="sft"))
    assert reg.names() == []


def test_nan_metrics_and_parent(reg: Registry, tmp_path: Path) -> None:
    v = reg.publish("intent", _stage(tmp_path / "s1"), _fields(metrics={"f1": float("nan"), "accuracy": 1.0}))
    again = reg.get("intent", v.version).manifest.metrics
    assert again["accuracy"] == 1.0 and again["f1"] != again["f1"]  # NaN survives the round trip
    with pytest.raises(ConfigError, match="`parent` v5 is not a published version"):
        reg.publish("intent", _stage(tmp_path / "s2"), _fields(parent=5))
    assert [x.version for x in reg.versions("intent")] == [1]


def test_generate_manifest(reg: Registry, tmp_path: Path) -> None:
    v = reg.publish(
        "summary",
        _stage(tmp_path / "s1", head=False),
        _fields(kind="generate", labels=[], head=None, method="sft", prompt="Summarise: {{ text }}", system="Be brief."),
    )
    assert isinstance(v, AdapterVersion) and v.kind == "generate"
    assert v.manifest.prompt == "Summarise: {{ text }}" and v.manifest.head is None
    with pytest.raises(ValueError):
        Manifest.model_validate({**_fields(kind="generate", method="sft"), "name": "x", "version": 1})


def test_cli_adapters_group(reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from loragraph.cli import main

    root = ["--registry", str(reg.root)]
    reg.publish("intent", _stage(tmp_path / "s1", 1), _fields())
    reg.publish("intent", _stage(tmp_path / "s2", 2), _fields(parent=1, threshold=0.4321))
    assert main(["adapters", "show", "intent@v1", *root]) == 0
    assert "threshold" not in capsys.readouterr().out  # none stored
    assert main(["adapters", "show", "intent@v2", *root]) == 0
    assert "    threshold: 0.432 (guardrail" in capsys.readouterr().out
    assert main(["adapters", "list", "--json", *root]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["intent"]["promoted"] == 1
    assert [v["ref"] for v in listed["intent"]["versions"]] == ["intent@v1", "intent@v2"]
    assert main(["adapters", "list", *root]) == 0
    assert "* intent@v1" in capsys.readouterr().out
    assert main(["adapters", "promote", "intent@v2", *root]) == 0
    assert "promoted intent@v2" in capsys.readouterr().out
    assert reg.promoted("intent").version == 2
    assert main(["adapters", "show", "intent", "--json", *root]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ref"] == "intent@v2" and shown["manifest"]["parent"] == 1 and shown["promoted"] is True
    assert main(["adapters", "verify", "intent@v1", *root]) == 0
    assert "ok intent@v1: 3 files" in capsys.readouterr().out
    assert main(["adapters", "rollback", "intent", *root]) == 0
    assert reg.promoted("intent").version == 1
    capsys.readouterr()
    # user mistakes exit 2 with one clear line; a tampered version exits 1
    assert main(["adapters", "promote", "intent", *root]) == 2
    assert "`promote` needs a pinned version" in capsys.readouterr().err
    assert main(["adapters", "show", "intent@v9", *root]) == 2
    assert "published versions: v1, v2" in capsys.readouterr().err
    weights = reg.root / "intent" / "v2" / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert main(["adapters", "verify", "intent@v2", *root]) == 1
    assert "intent@v2" in capsys.readouterr().err


def test_promote_or_rollback_of_an_unknown_name_leaves_nothing_behind(tmp_path: Path) -> None:
    from loragraph.errors import NotFoundError

    registry = Registry(tmp_path / "adapters")
    for call in (lambda: registry.promote("nobody", 1), lambda: registry.rollback("nobody")):
        with pytest.raises(NotFoundError):
            call()
    assert not (tmp_path / "adapters" / "nobody").exists()
