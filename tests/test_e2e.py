"""The main job end to end: a real multirun in a fresh directory, read back from the store."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import run_cli

EPOCHS = 7
ACTIVATIONS = ("sigmoid", "tanh", "relu")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    proc = run_cli(["-m", f"activation={','.join(ACTIVATIONS)}", "dataset=iris", f"epochs={EPOCHS}",
                    "model.hidden_sizes=[5]", "batch_size=32"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("activations")
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {"cwd": cwd, "proc": proc, "client": c, "exp": exp, "runs": runs, "parents": parents,
            "children": children}


def test_one_store_in_the_launch_directory(sweep):
    cwd = sweep["cwd"]
    assert (cwd / "mlflow.db").is_file()
    assert not list(cwd.glob("multirun/**/mlflow.db")), "a job wrote its own store"
    assert sweep["exp"].artifact_location.startswith((cwd / "mlartifacts").as_uri())


def test_one_parent_and_nine_finished_children(sweep):
    assert len(sweep["parents"]) == 1
    parent = sweep["parents"][0]
    assert parent.info.status == "FINISHED"
    children = sweep["children"]
    assert len(children) == len(ACTIVATIONS) * 3 == len(sweep["runs"]) - 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    combos = sorted((r.data.tags["activation"], r.data.params["seed"]) for r in children)
    assert combos == sorted((a, str(s)) for a in ACTIVATIONS for s in range(3))


def test_params_are_the_resolved_config_and_tags_the_choices(sweep):
    r = sweep["children"][0]
    p = r.data.params
    assert p["epochs"] == str(EPOCHS) and p["dataset.name"] == "iris" and p["model.hidden_sizes"] == "[5]"
    assert float(p["optimizer.lr"]) == 0.1
    assert r.data.tags["choice.activation"] == r.data.tags["activation"] == p["activation.name"]
    assert r.data.tags["dataset"] == "iris"
    assert "activation=" in r.data.tags["nnexp.overrides"]


def test_every_epoch_has_a_metric_point(sweep):
    c = sweep["client"]
    for r in sweep["children"]:
        for key in ("train_loss", "val_loss", "val_accuracy"):
            hist = c.get_metric_history(r.info.run_id, key)
            assert sorted(m.step for m in hist) == list(range(1, EPOCHS + 1)), key
        assert 0 <= r.data.metrics["test_accuracy"] <= 1


def test_weights_artifact_reproduces_the_logged_test_accuracy(sweep):
    """Reload weights.npz, rebuild the test split, recompute accuracy: it must equal the logged value."""
    from nnexp.data import load

    c = sweep["client"]
    data = load("iris", val_fraction=0.2, test_fraction=0.2, split_seed=0)
    for r in sweep["children"]:
        names = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert {"weights.npz", "config.yaml"} <= names
        path = c.download_artifacts(r.info.run_id, "weights.npz", str(sweep["cwd"] / "dl" / r.info.run_id))
        with np.load(path, allow_pickle=False) as w:
            assert w["W1"].shape == (4, 5) and w["W2"].shape == (5, 3)
            act = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}
            h = act[r.data.tags["activation"]](data.X_test @ w["W1"] + w["b1"])
            logits = h @ w["W2"] + w["b2"]
        acc = float((logits.argmax(axis=1) == data.y_test).mean())
        assert acc == pytest.approx(r.data.metrics["test_accuracy"], abs=1e-12)


def test_report_written_and_logged_to_the_parent(sweep):
    cwd = sweep["cwd"]
    index = list(cwd.glob("reports/activations/*/index.html"))
    assert len(index) == 1
    page = index[0].read_text()
    for a in ACTIVATIONS:
        assert a in page
    assert page.count("data:image/png;base64,") >= 2
    assert (index[0].parent / "curves_val_loss.png").stat().st_size > 10_000
    parent = sweep["parents"][0]
    logged = {a.path for a in sweep["client"].list_artifacts(parent.info.run_id, "report")}
    assert "report/index.html" in logged
    assert f"report: {index[0]}" in sweep["proc"].stdout


def test_no_run_left_running(sweep):
    con = sqlite3.connect(sweep["cwd"] / "mlflow.db")
    try:
        assert con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0
    finally:
        con.close()


def test_a_single_run_after_the_sweep_trains_again_and_says_where_it_is(sweep):
    """Resume belongs to sweeps: a single run of a configuration the sweep already has still trains, and prints
    one line naming its run, its result and the store."""
    cwd = sweep["cwd"]
    proc = run_cli(["activation=tanh", "dataset=iris", f"epochs={EPOCHS}", "model.hidden_sizes=[5]", "batch_size=32"],
                   cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("run "))
    run_id = line.split()[1]
    run = sweep["client"].get_run(run_id)
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert f"val_loss {run.data.metrics['val_loss']:.4g}" in line and str(cwd / "mlflow.db") in line
    twin = next(r for r in sweep["children"] if r.data.tags["activation"] == "tanh" and r.data.params["seed"] == "0")
    assert run.data.metrics["val_loss"] == twin.data.metrics["val_loss"]  # same config and seed, same numbers
