"""Each run is a first-class MLflow object: a pyfunc model that reproduces its test accuracy and can be served,
its data as dataset inputs, MLflow's source tags, and an experiment that opens in the model-training view."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import run_cli
from nnexp.data import load
from nnexp.identity import file_digest

#: (dataset, overrides) of the runs checked: one sigmoid output, softmax in float32, an MSE output.
CASES = {
    "moons-bce": ("moons", ["dataset=moons", "activation=tanh"]),
    "iris-ce-float32": ("iris", ["dataset=iris", "activation=relu", "model.dtype=float32"]),
    "moons-mse": ("moons", ["dataset=moons", "activation=sigmoid", "model.loss=mse"]),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One single run per case (a single run logs its model like a sweep's child), in one store."""
    cwd = tmp_path_factory.mktemp("model")
    run_ids = {}
    for name, (_, overrides) in CASES.items():
        proc = run_cli([*overrides, "epochs=30", "model.hidden_sizes=[8]", "seed=0"], cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_ids[name] = next(l for l in proc.stdout.splitlines() if l.startswith("run ")).split()[1]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    return {"cwd": cwd, "uri": uri, "client": MlflowClient(tracking_uri=uri), "run_ids": run_ids}


@contextmanager
def global_tracking_uri(uri: str):
    """MLflow's global tracking URI (which ``runs:/`` URIs use) set to ``uri`` for a block, then unset.

    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``; unsetting it (None) keeps later tests,
    whose jobs read that variable, on their own store.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.fixture
def tracking_uri(store):
    with global_tracking_uri(store["uri"]) as uri:
        yield uri


@pytest.mark.parametrize("case", list(CASES))
def test_pyfunc_predict_reproduces_the_logged_test_accuracy(store, tracking_uri, case):
    dataset, _ = CASES[case]
    run_id = store["run_ids"][case]
    logged = store["client"].get_run(run_id).data.metrics["test_accuracy"]
    raw = load(dataset, standardize=False)  # the same split, in the data's own units
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    proba = model.predict(raw.X_test)
    assert proba.shape == (len(raw.y_test), raw.n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba >= 0).all()
    assert float((proba.argmax(axis=1) == raw.y_test).mean()) == logged


def test_model_has_signature_input_example_and_fills_the_models_column(store, tracking_uri):
    run_id = store["run_ids"]["iris-ce-float32"]
    c = store["client"]
    run = c.get_run(run_id)
    [output] = run.outputs.model_outputs
    logged = c.get_logged_model(output.model_id)
    assert (logged.name, logged.source_run_id, str(logged.status)) == ("model", run_id, "READY")
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    assert info.signature.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1, 4)}}]
    assert info.signature.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1, 3)}}]
    example = mlflow.models.Model.load(f"runs:/{run_id}/model").load_input_example(
        mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"))
    assert np.asarray(example).shape == (5, 4)
    # the portable form stays: plain arrays, read without pickle
    names = {a.path for a in c.list_artifacts(run_id)}
    assert {"weights.npz", "config.yaml"} <= names


def test_dataset_inputs_name_each_part_with_its_context(store):
    run = store["client"].get_run(store["run_ids"]["moons-bce"])
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"moons-training", "moons-validation", "moons-test"}
    contexts = {name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for name, i in inputs.items()}
    assert contexts == {"moons-training": "training", "moons-validation": "validation", "moons-test": "test"}
    assert len({i.dataset.digest for i in inputs.values()}) == 3  # three different parts
    assert json.loads(inputs["moons-test"].dataset.profile)["features_shape"] == [80, 2]


def test_csv_dataset_digest_is_the_files_content_digest(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    lines = ["a,b,label"] + [f"{x:.6f},{y:.6f},{'yes' if x + y > 0 else 'no'}" for x, y in X]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    proc = run_cli(["dataset=csv", "dataset.path=data.csv", "dataset.target=label", "epochs=5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = next(l for l in proc.stdout.splitlines() if l.startswith("run ")).split()[1]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert digests == {f"data-{c}": file_digest(tmp_path / "data.csv") for c in ("training", "validation", "test")}
    sources = {json.loads(i.dataset.source)["uri"] for i in run.inputs.dataset_inputs}
    assert sources == {(tmp_path / "data.csv").resolve().as_uri()}


def test_experiment_opens_in_the_model_training_view(store):
    exp = store["client"].get_experiment_by_name("activations")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState.nnexp"])
    assert "metrics.`val_loss`" in view["selectedColumns"] and "params.`activation.name`" in view["selectedColumns"]


def test_runs_carry_the_launch_folders_git_commit(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "study"], cwd=tmp_path, check=True)
    (tmp_path / "README").write_text("a study\n")
    subprocess.run(["git", "add", "README"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    proc = run_cli(["dataset=xor", "epochs=3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = next(l for l in proc.stdout.splitlines() if l.startswith("run ")).split()[1]
    tags = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "study"
    assert (tags["mlflow.source.type"], tags["mlflow.source.name"]) == ("LOCAL", "python -m nnexp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_served_model_answers_on_loopback(store, tracking_uri, tmp_path):
    run_id = store["run_ids"]["moons-bce"]
    raw = load("moons", standardize=False)
    expected = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(raw.X_test[:4])
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = store["uri"]
    # MLflow starts `uvicorn` from PATH: make it this interpreter's, which has nnexp (a virtualenv's bin/ does that)
    shim = tmp_path / "bin" / "uvicorn"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{shim.parent}{os.pathsep}{env.get('PATH', '')}"
    mlflow_cli = [sys.executable, "-m", "mlflow"]
    server = subprocess.Popen([*mlflow_cli, "models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=store["cwd"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start: {server.stderr.read().decode()[-2000:] if server.poll() is not None else 'timeout'}")
                time.sleep(0.5)
        body = json.dumps({"inputs": raw.X_test[:4].tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: a process group this test started
        server.wait(timeout=30)
    np.testing.assert_allclose(np.asarray(answer["predictions"]), expected, rtol=1e-12)


def test_a_sweeps_models_and_its_best_run_registered_with_the_alias_best(tmp_path):
    args = ["-m", "dataset=moons", "activation=relu,tanh,sigmoid", "epochs=10", "seed=0", "tracking.report=false",
            "tracking.register_model=moons-best"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = [r for r in c.search_runs([c.get_experiment_by_name("activations").experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    best = min(children, key=lambda r: r.data.metrics["val_loss"])
    version = c.get_model_version_by_alias("moons-best", "best")
    assert (int(version.version), version.run_id) == (1, best.info.run_id)
    assert f"models:/moons-best@best (version 1, run {best.info.run_id})" in proc.stdout
    # the runs after a process's first copy its model folder (nnexp.mlflow_model._model_dir): still their own network
    raw = load("moons", standardize=False)
    with global_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        for r in children:
            proba = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model").predict(raw.X_test)
            assert float((proba.argmax(axis=1) == raw.y_test).mean()) == r.data.metrics["test_accuracy"]
    again = run_cli(args, tmp_path)  # resumed: the same best run, no new version
    assert again.returncode == 0, again.stderr[-3000:]
    assert [int(v.version) for v in c.search_model_versions("name = 'moons-best'")] == [1]


def test_models_logged_in_one_process_each_carry_their_own_network_and_ids(tmp_path, monkeypatch):
    """:func:`nnexp.mlflow_model.log_model` saves the pyfunc folder once per process and data, then writes each
    run's files over it: every model must still hold its own weights, ids and MLmodel, the same size as MLflow
    measures a fresh one, and one folder serves them all."""
    import tempfile

    from nnexp import mlflow_model as mm
    from nnexp.tracking import prepare_store

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(mm, "_TEMPLATES", {})
    c, exp = prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "models")
    example = np.arange(10.0).reshape(5, 2)
    config = tmp_path / "config.yaml"
    config.write_text("activation:\n  name: tanh\n")
    logged = []
    for k in range(3):
        weights = tmp_path / f"w{k}" / "weights.npz"
        weights.parent.mkdir()
        np.savez(weights, W0=np.full((2, 2), float(k)))
        run = c.create_run(exp)
        model_id = mm.log_model(c, run.info.run_id, exp, weights, config, example, n_classes=2)
        logged.append((run.info.run_id, model_id, weights.read_bytes()))
    assert len(list((tmp_path / "tmp").glob("nnexp-model-*"))) == 1
    sizes = set()
    for run_id, model_id, weights_bytes in logged:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=c.get_logged_model(model_id).artifact_location,
                                                     dst_path=str(tmp_path / model_id))
        meta = mlflow.models.Model.load(os.path.join(folder, "MLmodel"))
        assert (meta.run_id, meta.model_id) == (run_id, model_id)
        path = meta.flavors["python_function"]["artifacts"]["weights"]["path"]
        assert open(os.path.join(folder, path), "rb").read() == weights_bytes
        sizes.add(meta.model_size_bytes)
    # as MLflow measures the folder save_model writes: that folder's MLmodel and this run's artifacts
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import nnexp.pyfunc

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 2))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 2))]))
    fresh = tmp_path / "fresh"
    with mm._quiet("mlflow.pyfunc", "mlflow.models"):
        mlflow.pyfunc.save_model(fresh, python_model=nnexp.pyfunc.__file__, mlflow_model=mlflow.models.Model(),
                                 artifacts={"weights": str(weights), "config": str(config)}, signature=signature,
                                 input_example=example, pip_requirements=mm._requirements())
    assert sizes == {sum(f.stat().st_size for f in fresh.rglob("*") if f.is_file())}


def test_a_registry_that_refuses_the_model_costs_neither_the_report_nor_an_honest_exit(tmp_path, monkeypatch, capsys):
    """The registry's refusal comes after every run is trained: one line naming the key, the report still written,
    the parent run FINISHED, exit status 1 (it was a warning from Hydra and exit 0, with no report)."""
    from mlflow.exceptions import MlflowException

    from nnexp import mlflow_model
    from nnexp.__main__ import main

    def refuse(c, runs, name, metric="val_loss"):
        raise MlflowException(f"Registered model {name!r} cannot be created: permission denied\nsecond line")

    monkeypatch.setattr(mlflow_model, "register_best", refuse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    rc = main(["-m", "dataset=xor", "activation=tanh,relu", "epochs=5", "seed=0", "tracking.progress=false",
               "tracking.register_model=xor-best"])
    err = capsys.readouterr().err
    assert rc == 1
    line = [x for x in err.splitlines() if x.startswith("nnexp: error")]
    assert line == ["nnexp: error: tracking.register_model='xor-best': the best run's model was not registered: "
                    "Registered model 'xor-best' cannot be created: permission denied"]
    assert "Traceback" not in err
    assert len(list((tmp_path / "reports" / "activations").glob("*/index.html"))) == 1
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("activations").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
