from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The user's home, captured before any test changes it: slow tests reuse its prepared
# bundled base (read-only) and nothing else.
_REAL_HOME = Path(os.environ.get("LORAGRAPH_HOME") or Path.home() / ".loragraph").expanduser()


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory: pytest.TempPathFactory) -> object:
    """$LORAGRAPH_HOME for module- and session-scoped fixtures, which are set up before any
    test's own home: a fresh folder too (with the `base` link), never the user's."""
    home = tmp_path_factory.mktemp("session-home")
    (_REAL_HOME / "base").mkdir(parents=True, exist_ok=True)
    (home / "base").symlink_to(_REAL_HOME / "base", target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("LORAGRAPH_HOME", str(home))
    yield home
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every test gets its own $LORAGRAPH_HOME (registry, store): no test ever writes to
    the user's registry. Slow tests on the real base see the user's prepared bundled base
    through a `base` link, so it is converted once per machine, not once per test."""
    home = tmp_path_factory.mktemp("home")
    if request.node.get_closest_marker("slow") is not None:
        (_REAL_HOME / "base").mkdir(parents=True, exist_ok=True)
        (home / "base").symlink_to(_REAL_HOME / "base", target_is_directory=True)
    monkeypatch.setenv("LORAGRAPH_HOME", str(home))


@pytest.fixture(scope="session")
def tiny_base_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loragraph.testing import tiny_base_dir

    return tiny_base_dir(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path: Path):  # type: ignore[no-untyped-def]
    from loragraph.adapters.base import BaseSpec, load_base

    return load_base(BaseSpec(name=str(tiny_base_path), quantization="fp32"))
