"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis):
no request, valid or not, makes the server answer 5xx (except 503/504 by design), and every
answer matches the documented status codes, content types and schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loragraph.api import ApiSettings
from loragraph.testing import EchoRouter
from tests.api.conftest import publish_generate, serve

pytestmark = pytest.mark.slow


def _st() -> str:
    pytest.importorskip("schemathesis", reason="pip install -e '.[dev]' (schemathesis)")
    exe = Path(sys.executable).with_name("st")
    return str(exe) if exe.exists() else (shutil.which("st") or pytest.skip("schemathesis CLI `st` not found"))


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    from loragraph.adapters.registry import Registry

    st = _st()
    reg = Registry(tmp_path / "adapters")
    for marker in ("one", "two"):
        publish_generate(reg, "summary", tmp_path, marker=marker)
    settings = ApiSettings(db_path=tmp_path / "st.db", api_keys=["user-key"], admin_keys=["admin-key"], run_timeout_s=10)
    router = EchoRouter("support", registry=None)
    with serve({"support": router}, settings, registry=reg) as srv:
        proc = subprocess.run(
            [st, "run", f"{srv.url}/schema/openapi.json",
             "-H", "Authorization: Bearer admin-key",
             "--checks", "all",
             # a schema-valid binary `file` can still be an unreadable PDF or non-UTF-8 text (400),
             # and feedback on a stage without output is 400: both are correct refusals
             "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "20", "--seed", "1", "--workers", "1", "--request-timeout", "20"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert "Server error" not in report and "ST100" not in report, report
