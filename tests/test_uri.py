"""Where the runs go: relative local stores are anchored at the launch folder; unsafe paths are refused."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import run_cli
from nnexp.config import ConfigError
from nnexp.tracking import resolve_uri


@pytest.mark.parametrize("given, expected", [
    (None, "sqlite:////launch/mlflow.db"),
    ("sqlite:///runs.db", "sqlite:////launch/runs.db"),
    ("sqlite:///sub/runs.db", "sqlite:////launch/sub/runs.db"),
    ("sqlite:////abs/runs.db", "sqlite:////abs/runs.db"),
    ("file:mlruns", "file:///launch/mlruns"),
    ("file:///abs/mlruns", "file:///abs/mlruns"),
    ("mlruns", "/launch/mlruns"),
    ("./mlruns", "/launch/mlruns"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_relative_local_stores_are_anchored_at_the_launch_folder(given, expected, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(given, "/launch") == expected
    monkeypatch.setenv("MLFLOW_TRACKING_URI", given or "sqlite:///mlflow.db")
    assert resolve_uri(None, "/launch") == expected  # the environment variable is read the same way


@pytest.mark.parametrize("folder", ["q?x", "h#x", "p%20x"])
def test_a_sqlite_path_a_uri_would_misread_is_refused(folder, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="cannot carry"):
        resolve_uri(None, f"/tmp/{folder}")


@pytest.mark.slow
def test_jobs_in_their_own_folders_share_the_launch_folders_store(tmp_path):
    """Case P06 with ``hydra.job.chdir=true`` and a relative ``tracking.uri``: one store, every run in it."""
    p = run_cli(["-m", "hydra.job.chdir=true", "tracking.uri=sqlite:///rel.db", "dataset=xor", "epochs=3",
                 "activation=tanh,relu", "seed=0", "tracking.report=false", "tracking.progress=false"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not list((tmp_path / "multirun").rglob("rel.db"))
    con = sqlite3.connect(tmp_path / "rel.db")
    try:
        rows = con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
    finally:
        con.close()
    assert rows == [("FINISHED", 3)]  # the sweep's parent and its two children
