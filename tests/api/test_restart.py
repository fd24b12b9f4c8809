"""Killing the server mid-run loses nothing: after a restart on the same store every accepted
run is there exactly once, finished ones keep their result, open ones are failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loragraph.api import Store
from tests.api.conftest import free_port

PIPELINE = """\
name: restartable
stages:
  - {name: intent, kind: classify}
  - {name: summary, kind: generate}
"""


def _start(db: Path, yaml_path: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "loragraph.cli", "serve", str(yaml_path), "--echo", "--db", str(db),
           "--port", str(port), "--workers", "1", "--log-level", "warning", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_kill_mid_run_then_restart_loses_nothing(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    db = tmp_path / "store.db"
    yaml_path = tmp_path / "pipeline.yaml"
    yaml_path.write_text(PIPELINE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _start(db, yaml_path, port, "--echo-delay", "1.0")
    procs.append(first)
    _wait_ready(url, first)

    with httpx.Client(base_url=url, timeout=30) as client:
        done = client.post("/v1/pipelines/restartable/runs", json={"text": "refund please"})
        assert done.status_code == 201, done.text
        done_id = done.json()["id"]
        job = client.post("/v1/pipelines/restartable/jobs", json={"documents": [{"text": f"doc {i}"} for i in range(3)]})
        assert job.status_code == 202
        job_id, job_runs = job.json()["id"], job.json()["run_ids"]

    errors: list[BaseException] = []

    def waiting_client() -> None:  # a client waiting on a run when the server dies
        try:
            httpx.post(f"{url}/v1/pipelines/restartable/runs", json={"text": "cancel my order"}, timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=waiting_client)
    waiter.start()
    store = Store(db)
    try:
        deadline = time.monotonic() + 20
        while True:
            counts = store.count_runs()
            if counts.get("running") and sum(counts.values()) == 5:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        waiter.join(timeout=30)
        assert errors, "the waiting client must see the connection die"
        before = {rid: store.get_run(rid).status for rid in store.run_ids()}
    finally:
        store.close()
    assert before[done_id] == "ok"
    open_ids = [rid for rid, status in before.items() if status in ("queued", "running")]
    assert len(before) == 5 and len(open_ids) == 4, before

    second = _start(db, yaml_path, port)
    procs.append(second)
    _wait_ready(url, second)
    with httpx.Client(base_url=url, timeout=30) as client:
        kept = client.get(f"/v1/runs/{done_id}").json()
        assert kept["status"] == "ok" and kept["result"]["outputs"]["intent"]["label"] == "refund_request"
        for rid in open_ids:
            run = client.get(f"/v1/runs/{rid}").json()
            assert run["status"] == "failed" and run["reason"] == "interrupted by restart", run
        progress = client.get(f"/v1/jobs/{job_id}").json()
        assert progress["status"] == "done" and progress["counts"] == {"failed": 3} and progress["run_ids"] == job_runs
        assert client.post("/v1/pipelines/restartable/runs", json={"text": "hi"}).status_code == 201
        metrics = client.get("/metrics").text
        assert 'loragraph_run_failures_total{pipeline="*",reason="interrupted"} 4.0' in metrics

    store = Store(db)
    try:
        ids = store.run_ids()
    finally:
        store.close()
    assert len(ids) == len(set(ids)) == 6  # 5 before + 1 after: nothing lost, nothing duplicated
