"""nnexp's Python API: load_runs, load_model and sweep, from fresh processes and twice in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "dataset=moons", "activation=relu,tanh", "epochs=20", "seed=0,1", "model.hidden_sizes=[8]",
         "tracking.report=false"]


def _python(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd`` (clean MLflow environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("api")
    proc = run_cli(SWEEP, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def test_load_runs_and_load_model_from_a_fresh_process(swept):
    code = """
import json, nnexp
from nnexp.data import load
runs = nnexp.load_runs(experiment="activations", sweep="latest")
raw = load("moons", standardize=False)
accs = {r.run_id: [float((nnexp.load_model(r.run_id).predict(raw.X_test) == raw.y_test).mean()), r.test_accuracy]
        for r in runs.itertuples()}
print(json.dumps({"n": len(runs), "columns": list(runs.columns), "pairs": sorted(zip(runs.activation, runs.seed)),
                  "outcomes": sorted(set(runs.outcome)), "accs": accs}))
"""
    proc = _python(code, swept)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 4
    assert out["pairs"] == [["relu", 0], ["relu", 1], ["tanh", 0], ["tanh", 1]]
    assert out["outcomes"] == ["finished"]
    assert {"run_id", "activation", "optimizer.lr", "seed", "val_loss", "val_accuracy", "test_accuracy"} <= set(out["columns"])
    for loaded, logged in out["accs"].values():
        assert loaded == logged


def test_load_runs_filters_and_refuses_unknown_names(swept, monkeypatch):
    import nnexp
    from nnexp.report.load import ReportError

    monkeypatch.chdir(swept)
    assert sorted(nnexp.load_runs(filter="tags.activation = 'relu'").seed) == [0, 1]
    with pytest.raises(ReportError, match="sweep 'nope' not found"):
        nnexp.load_runs(sweep="nope")
    with pytest.raises(ReportError, match="experiment 'nope' not found"):
        nnexp.load_runs(experiment="nope")
    with pytest.raises(ReportError, match="no MLflow store"):
        nnexp.load_runs(uri=f"sqlite:///{swept / 'missing.db'}")


def test_load_model_from_a_runs_artifacts_folder_equals_by_run_id(swept, monkeypatch):
    import nnexp

    monkeypatch.chdir(swept)
    run = nnexp.load_runs().iloc[0]
    folder = Path(run.artifact_uri.removeprefix("file://"))
    X = np.random.default_rng(0).normal(size=(50, 2))
    np.testing.assert_array_equal(nnexp.load_model(folder).predict_proba(X), nnexp.load_model(run.run_id).predict_proba(X))


def test_load_model_validates_its_inputs(swept, monkeypatch, tmp_path):
    import nnexp
    from nnexp.network import NetworkInputError

    monkeypatch.chdir(swept)
    net = nnexp.load_model(nnexp.load_runs().run_id.iloc[0])
    assert (net.n_features, net.n_classes) == (2, 2)
    with pytest.raises(NetworkInputError, match=r"X has 3 features \(shape \(4, 3\)\); this network takes 2"):
        net.predict(np.zeros((4, 3)))
    with pytest.raises(NetworkInputError, match=r"reshape\(1, -1\)"):
        net.predict(np.zeros(2))
    with pytest.raises(NetworkInputError, match="dtype <U1; expected numbers"):
        net.predict(np.array([["a", "b"]]))
    with pytest.raises(NetworkInputError, match="NaN or infinite"):
        net.predict(np.array([[np.nan, 0.0]]))
    assert net.predict(np.array([[1, 0]])).dtype.kind == "i"  # integers are features too
    with pytest.raises(ValueError, match="holds no weights"):
        nnexp.load_model(tmp_path)
    with pytest.raises(ValueError, match="run 'abc' not found"):
        nnexp.load_model("abc")


@pytest.mark.slow  # two sweeps in one process; .ci/run runs it
def test_sweep_twice_in_one_process(tmp_path):
    code = """
import gc, json, nnexp
a = nnexp.sweep(["dataset=xor", "activation=relu,tanh", "epochs=5", "seed=0", "tracking.report=false"])
frozen = gc.get_freeze_count()
b = nnexp.sweep(["dataset=xor", "activation=sigmoid", "epochs=5", "seed=0,1", "tracking.report=false"])
every = nnexp.load_runs()
print(json.dumps({"a": sorted(a.activation), "b": sorted(zip(b.activation, b.seed)), "all": len(every),
                  "parents": len(set(every.parent_id)), "frozen": [frozen, gc.get_freeze_count()]}))
"""
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # nothing stays frozen out of the garbage collector's view after a sweep (a notebook runs many)
    assert out == {"a": ["relu", "tanh"], "b": [["sigmoid", 0], ["sigmoid", 1]], "all": 4, "parents": 2,
                   "frozen": [0, 0]}
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("activations").experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    assert len(sweeps) == 2 and all(r.info.status == "FINISHED" for r in runs)


def test_sweep_refuses_a_bad_override_before_anything_runs(tmp_path, monkeypatch):
    import nnexp
    from nnexp.config import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="activation='rleu' is not an option"):
        nnexp.sweep(["activation=rleu"])
    with pytest.raises(TypeError, match="list of strings"):
        nnexp.sweep("activation=relu")
    # the example it gives is one that works: one override per item (it showed the string as one item)
    with pytest.raises(TypeError, match=r"e\.g\. \['dataset=xor', 'epochs=3', 'model.hidden_sizes=\[4, 4\]'\]"):
        nnexp.sweep("dataset=xor epochs=3 'model.hidden_sizes=[4, 4]'")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # a whole notebook in a subprocess; .ci/run runs it
def test_notebook_example_runs_its_cells(tmp_path):
    proc = _python(f"import runpy; runpy.run_path({str(ROOT / 'docs' / 'notebook.py')!r})", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 + 1 runs; the experiment holds 5" in proc.stdout


def test_import_nnexp_loads_no_heavy_library(tmp_path):
    proc = _python("import sys, nnexp; print(sorted(m for m in ('mlflow', 'hydra', 'pandas', 'nnexp.api') "
                   "if m in sys.modules)); print(callable(nnexp.load_runs))", tmp_path)
    assert proc.stdout.split() == ["[]", "True"], proc.stderr


def test_load_runs_has_the_loss_columns_when_every_run_diverged(tmp_path, monkeypatch):
    """The README's own line, ``load_runs(...).groupby('activation')['val_loss'].mean()``, after a sweep whose every
    run diverged: NaN, not ``KeyError: 'Column not found: val_loss'`` (new-user test)."""
    import nnexp

    monkeypatch.chdir(tmp_path)
    nnexp.sweep(["optimizer.lr=50", "activation=relu", "dataset=moons", "epochs=20", "seed=0", "tracking.report=false",
                 "tracking.progress=false"])
    runs = nnexp.load_runs(experiment="activations")
    assert list(runs["outcome"]) == ["diverged"]
    means = runs.groupby("activation")["val_loss"].mean()
    assert list(means.index) == ["relu"] and np.isnan(means["relu"]) and "train_loss" in runs
