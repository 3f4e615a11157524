"""Runs ended by the metric writer (nnexp.tracking.MetricWriter, RunEnd) are recorded as the sweep's own process
records them: same runs, statuses, params, tags, metrics, artifacts, dataset inputs and models; a writer killed
mid-sweep leaves no run RUNNING and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import migrated_store
from mlflow import MlflowClient

from nnexp import tracking

SWEEP = ["-m", "dataset=xor", "model.hidden_sizes=[3]", "batch_size=2", "epochs=20", "tracking.report=false",
         "tracking.progress=false", "activation=tanh,relu", "seed=0,1", "hydra.sweep.dir=s"]

#: Tags that differ between two recordings of one run: ids, processes, folders, times.
VOLATILE = ("nnexp.pid", "nnexp.pid_start", "nnexp.request_id", "nnexp.output_dir", "nnexp.seconds.", "mlflow.parentRunId",
            "nnexp.host", "mlflow.user", "mlflow.source", "nnexp.git", "nnexp.command")


def run_main(monkeypatch, cwd: Path, argv: list[str]) -> int:
    from nnexp.__main__ import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    return main(argv)


def recorded(cwd: Path) -> dict:
    """Each child run's record, keyed by (activation, seed), without what differs between two recordings."""
    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations")
    out = {}
    for r in c.search_runs([exp.experiment_id], max_results=100):
        if r.data.tags.get("nnexp.kind") == "sweep":
            out["parent"] = r.info.status
            continue
        rid = r.info.run_id
        models = c.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{rid}'")
        out[(r.data.params["activation.name"], r.data.params["seed"])] = {
            "status": r.info.status, "name": r.info.run_name, "params": r.data.params,
            "tags": {k: v for k, v in r.data.tags.items() if not k.startswith(VOLATILE)},
            "timing": sorted(k for k in r.data.tags if k.startswith("nnexp.seconds.")),
            "metrics": {k: [(m.step, m.value) for m in sorted(c.get_metric_history(rid, k), key=lambda m: m.step)]
                        for k in r.data.metrics},
            "artifacts": sorted(a.path for a in c.list_artifacts(rid)),
            "model": [(m.name, str(m.status), sorted(a.path for a in c.list_logged_model_artifacts(m.model_id)))
                      for m in models],
            "outputs": len(r.outputs.model_outputs) if r.outputs else 0,
            "inputs": sorted((d.dataset.name, d.dataset.digest, [t.value for t in d.tags])
                             for d in r.inputs.dataset_inputs),
        }
    return out


def test_a_sweep_whose_writer_ends_the_runs_records_what_the_synchronous_one_does(tmp_path, tmp_path_factory,
                                                                                  monkeypatch):
    """The same packed sweep (2 activations x 2 seeds) twice: runs ended through the writer, then with no writer
    (every run ended in the sweep's process, as under a parallel launcher): equal records."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        migrated_store(tmp_path_factory, d)
    handed = []
    real_end = tracking.MetricWriter.end
    monkeypatch.setattr(tracking.MetricWriter, "end", lambda self, e: handed.append(e.run_id) or real_end(self, e))
    assert run_main(monkeypatch, a, SWEEP) == 0
    assert len(handed) == 4  # every run was ended by the writer
    monkeypatch.setattr(tracking, "metric_writer", lambda uri: None)
    assert run_main(monkeypatch, b, SWEEP) == 0
    deferred, synchronous = recorded(a), recorded(b)
    assert deferred["parent"] == synchronous["parent"] == "FINISHED"
    assert sorted(k for k in deferred if k != "parent") == [("relu", "0"), ("relu", "1"), ("tanh", "0"), ("tanh", "1")]
    for k, run in synchronous.items():
        if k == "parent":
            continue
        d = deferred[k]
        assert d["status"] == run["status"] == "FINISHED"
        assert d["timing"] == run["timing"] == ["nnexp.seconds.log", "nnexp.seconds.model", "nnexp.seconds.setup",
                                                  "nnexp.seconds.train"]
        assert d["artifacts"] == run["artifacts"] == ["config.yaml", "weights.npz"]
        assert d["model"] == run["model"] and len(run["model"]) == 1 and run["model"][0][1].endswith("READY")
        assert d["outputs"] == run["outputs"] == 1
        assert len(run["inputs"]) == 3 and d["inputs"] == run["inputs"]
        for field in ("name", "params", "tags"):
            assert d[field] == run[field], field
        assert sorted(d["metrics"]) == sorted(run["metrics"])
        for m, points in run["metrics"].items():  # the trainer's values; BLAS threads may differ in the last bit
            if m == "train_seconds":  # a time
                continue
            assert [s for s, _ in d["metrics"][m]] == [s for s, _ in points], m
            np.testing.assert_allclose([v for _, v in d["metrics"][m]], [v for _, v in points], rtol=1e-9, atol=1e-12)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the writer process in /proc")
def test_a_writer_killed_mid_sweep_leaves_every_run_recorded(tmp_path, tmp_path_factory):
    """kill -9 of the writer after the first job: the sweep's process records what the writer had not, so all
    6 runs are FINISHED with every metric point, their artifacts and their model, and the sweep exits 0."""
    migrated_store(tmp_path_factory, tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    epochs = 300
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", *SWEEP[:4], f"epochs={epochs}", *SWEEP[5:-2],
                             "activation=tanh,relu,sigmoid", "seed=0,1", "hydra.sweeper.pack=false",
                             "hydra.sweep.dir=s"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = []
    try:
        for line in proc.stdout:  # each job prints its run's line after handing the run to the writer
            if line.startswith("run ") and not killed:
                for pid in _children(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert killed, "no writer process found"
    assert proc.returncode == 0, err[-3000:]
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("nnexp.kind") != "sweep"]
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 7
    assert len(children) == 6 and {r.data.tags["nnexp.outcome"] for r in children} == {"finished"}
    for r in children:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "train_loss")] == list(range(1, epochs + 1))
        assert sorted(a.path for a in c.list_artifacts(r.info.run_id)) == ["config.yaml", "weights.npz"]
        assert len(r.outputs.model_outputs) == 1
