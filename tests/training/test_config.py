"""TrainConfig: every shipped YAML loads; errors name the YAML file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from loragraph.errors import ConfigError
from loragraph.training.config import TrainConfig, load_train_config
from loragraph.training.train import find_config

REPO = Path(__file__).resolve().parents[2]
TRAIN_DIR = REPO / "examples" / "customer_service" / "train"
SHIPPED = ["intent", "entities", "summary", "reply"]


def _shipped_train_configs() -> list[Path]:
    # `*_dpo.yaml` files in the same folder are DPO configs (another schema, loaded by its own test)
    return sorted(p for p in TRAIN_DIR.glob("*.yaml") if not p.stem.endswith("_dpo"))


def test_the_four_sample_configs_are_shipped() -> None:
    assert {p.stem for p in _shipped_train_configs()} >= set(SHIPPED)


@pytest.mark.parametrize("path", _shipped_train_configs(), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_train_config(path)
    assert cfg.adapter == path.stem
    assert cfg.data.train.is_absolute()  # resolved relative to the YAML file
    assert str(cfg.data.train).startswith(str(REPO))


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_configs(name: str) -> None:
    cfg = load_train_config(TRAIN_DIR / f"{name}.yaml")
    assert cfg.base.quantization == "nf4"  # the sample is QLoRA
    expected = {"intent": "classify", "entities": "tag", "summary": "generate", "reply": "generate"}
    assert cfg.kind == expected[name]
    data_dir = (REPO / "examples" / "customer_service" / "data" / cfg.adapter).resolve()
    assert cfg.data.train == data_dir / "train.jsonl"
    assert cfg.data.test == data_dir / "test.jsonl"
    if cfg.kind == "generate":
        from loragraph.pipelines.templates import template_variables

        assert "text" in template_variables(cfg.prompt or "")
    else:
        assert cfg.labels and len(cfg.labels) >= 2


def test_find_config_maps_an_adapter_name_to_its_shipped_yaml() -> None:
    assert find_config("intent").resolve() == (TRAIN_DIR / "intent.yaml").resolve()
    with pytest.raises(ConfigError, match="neither a YAML file nor a shipped adapter config"):
        find_config("no_such_adapter")


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(body)
    return path


def test_paths_are_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("adapter: a\nkind: classify\ndata: {train: ../d/train.jsonl}\noutput_dir: runs\n")
    cfg = load_train_config(path)
    assert cfg.data.train == (tmp_path / "d" / "train.jsonl").resolve()
    assert cfg.data.validation is None
    assert cfg.output_dir == (tmp_path / "sub" / "runs").resolve()
    assert cfg.run_dir == cfg.output_dir


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nepochz: 3\n", "`epochz` is not a known field"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nlora: {r: 0}\n", "`lora.r`"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nlora: {rank: 4}\n", "`lora.rank` is not a known field"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nlabels: [x]\n", "`labels` must list at least 2 labels, got 1"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nlabels: [x, x]\n", "must not repeat labels"),
        ("adapter: a\nkind: generate\ndata: {train: t.jsonl}\n", "`prompt` is required for `kind: generate`"),
        ("adapter: a\nkind: tag\ndata: {train: t.jsonl}\nprompt: hi\n", "`prompt` and `system` are only for `kind: generate`"),
        ("adapter: a\nkind: regress\ndata: {train: t.jsonl}\n", "`kind`"),
        ("adapter: A B\nkind: tag\ndata: {train: t.jsonl}\n", "`adapter`"),
        ("kind: tag\ndata: {train: t.jsonl}\n", "`adapter` is required"),
        ("adapter: a\nkind: generate\ndata: {train: t.jsonl}\nprompt: '{{ text '\n", "`prompt` is not a valid template"),
        ("adapter: a\nkind: tag\ndata: {train: t.jsonl}\nbase: {quantization: int3}\n", "`base.quantization`"),
        ("adapter: a\nkind: tag\ndata: {train: t.jsonl}\npooling: mean\n", "`pooling` is only for `kind: classify`"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\npooling: max\n", "`pooling`"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\nlookahead: 1\n", "`lookahead` is only for `kind: tag`"),
        ("adapter: a\nkind: generate\ndata: {train: t.jsonl}\nprompt: hi\ndepth: 4\n", "`depth` is only for `kind: classify` and `kind: tag`"),
        ("adapter: a\nkind: classify\ndata: {train: t.jsonl}\ndepth: 0\n", "`depth`"),
        ("adapter: a\nkind: tag\ndata: {train: t.jsonl}\ndepth: 4\nlora: {last_layers: 6}\n", "`lora.last_layers` (6) must be at most `depth` (4)"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, body: str, needle: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert needle in str(info.value)
    assert info.value.where == str(path)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "adapter: a\nkind: [classify\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_train_config(path)
    assert info.value.where is not None and info.value.where.startswith(f"{path}:")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_train_config(_write(tmp_path, "- a\n- b\n"))


def test_every_field_is_described() -> None:
    from loragraph.training.config import DataPaths, LoraSettings

    for model in (TrainConfig, DataPaths, LoraSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_run_hash_follows_config_and_data(tmp_path: Path) -> None:
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    cfg = TrainConfig(adapter="a", kind="classify", data={"train": data})
    h1 = cfg.run_hash()
    assert h1 == TrainConfig(adapter="a", kind="classify", data={"train": data}, output_dir=tmp_path).run_hash()
    assert h1 != TrainConfig(adapter="a", kind="classify", data={"train": data}, epochs=4).run_hash()
    data.write_text('{"text": "b", "label": "x"}\n')
    assert cfg.run_hash() != h1
    assert cfg.data_hash().startswith("sha256:")
