"""The MLflow UI as a user opens it: headless Chromium on a real ``mlflow ui`` over a real sweep's store.

The experiment opens in MLflow's model-training view (tag ``mlflow.experimentKind``), its runs table shows the
Dataset column (each run's training, validation and test inputs) and the Models column (each run's pyfunc model)
filled, sorted by val_loss (nnexp's shared view, :func:`nnexp.context.view_url`). A screenshot is kept beside the
store for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, *args: str, user_dir) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={user_dir}", "--window-size=1600,1000", "--virtual-time-budget=30000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


def test_runs_table_shows_datasets_and_models_in_the_model_training_view(tmp_path):
    from nnexp.context import view_url

    env = {**os.environ, "NNEXP_CACHE_DIR": os.environ.get("NNEXP_CACHE_DIR", str(tmp_path / "cache"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    sweep = subprocess.run([sys.executable, "-m", "nnexp", "-m", "dataset=moons", "epochs=3", "activation=relu,tanh",
                            "seed=0", "tracking.report=false"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        host = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{host}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not start: {server.stderr.read().decode()[-2000:] if server.poll() is not None else 'timeout'}")
            time.sleep(1)
        url = view_url("1", host)
        dom = _chromium(url, "--dump-dom", user_dir=tmp_path / "chromium-dom")
        _chromium(url, f"--screenshot={tmp_path / 'mlflow_ui.png'}", user_dir=tmp_path / "chromium-shot")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: the group this test started
        server.wait(timeout=30)
    assert "Model training" in dom  # the model-training view, not the GenAI one
    assert dom.count(">model<") == 2  # the Models column: one pyfunc model per child run, none for the parent
    assert dom.count(">moons-training (") == 2  # the Dataset column: each child run's training input
    assert "Sort: val_loss" in dom  # nnexp's shared view: runs ranked by the primary metric
    assert (tmp_path / "mlflow_ui.png").stat().st_size > 20_000  # a drawn page, not a blank one
