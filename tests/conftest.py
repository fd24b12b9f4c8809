from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every test gets its own $LORAGRAPH_HOME, except slow tests on the real base,
    which share the prepared bundled base (set LORAGRAPH_TEST_HOME to reuse one)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LORAGRAPH_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def tiny_base_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loragraph.testing import tiny_base_dir

    return tiny_base_dir(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path: Path):  # type: ignore[no-untyped-def]
    from loragraph.adapters.base import BaseSpec, load_base

    return load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
