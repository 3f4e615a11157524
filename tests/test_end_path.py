"""nnexp.tracking.apply_ends: run ends recorded on a SQLite store in one SQLAlchemy Core transaction are stored
exactly as MLflow's client stores them through RunEnd.apply (the rows of runs, tags, inputs, input_tags, datasets,
logged_models and logged_model_tags, and the artifact files); a transaction that fails is rolled back, its models'
folders removed, and the runs ended once through MLflow's client; MLflow's own errors stay MLflow's, run by run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import failing_once, locked_once, migrated_store, two_fresh_stores

from nnexp import mlflow_model, tracking
from nnexp.data import load

#: Tag values that differ between two recordings (processes, ids, times).
VOLATILE_TAGS = ("nnexp.request_id", "nnexp.pid_start", "nnexp.pid", "nnexp.seconds.", "nnexp.output_dir",
                 "mlflow.parentRunId", "nnexp.host", "mlflow.user", "mlflow.source", "nnexp.git", "nnexp.command")

#: Columns holding times: compared as present or not.
TIMES = {"start_time", "end_time", "creation_timestamp_ms", "last_updated_timestamp_ms"}

#: MLmodel fields that differ between two recordings of one model.
VOLATILE_MLMODEL = {"utc_time_created", "run_id", "model_id", "model_uuid", "artifact_path"}


def stored(db: Path) -> dict:
    """Every row the run ends write, with ids replaced by their order of appearance (runs by name, models and
    datasets and inputs by what they link), times by whether they are set, the store's folder by ``<store>``."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        names = {r["run_uuid"]: r["name"] for r in con.execute("SELECT run_uuid, name FROM runs")}
        models = {r["model_id"]: f"<model of {names[r['source_run_id']]}>"
                  for r in con.execute("SELECT model_id, source_run_id FROM logged_models")}
        datasets = {r["dataset_uuid"]: f"<dataset {r['name']}>" for r in con.execute("SELECT * FROM datasets")}
        inputs = {r["input_uuid"]: f"<input {datasets.get(r['source_id'], names.get(r['source_id']))} -> "
                                   f"{names.get(r['destination_id'], models.get(r['destination_id']))}>"
                  for r in con.execute("SELECT * FROM inputs")}
        ids = {**names, **models, **datasets, **inputs}

        def norm(key, v):
            if key in TIMES:
                return v is not None
            if isinstance(v, str):
                v = ids.get(v, v).replace(str(db.parent), "<store>")
                for raw, name in ids.items():
                    v = v.replace(raw, name)
            return v

        out = {}
        for table in ("runs", "tags", "inputs", "input_tags", "datasets", "logged_models", "logged_model_tags"):
            rows = [{k: norm(k, r[k]) for k in r.keys()} for r in con.execute(f"SELECT * FROM {table}")]
            if table == "tags":
                rows = [r if not r["key"].startswith(VOLATILE_TAGS) else {**r, "value": "<volatile>"} for r in rows]
            out[table] = sorted((tuple(sorted(r.items())) for r in rows), key=str)
        ordered = con.execute("SELECT COUNT(*) FROM logged_models WHERE last_updated_timestamp_ms < "
                              "creation_timestamp_ms").fetchone()[0]
        assert ordered == 0
        return out
    finally:
        con.close()


def files(db: Path, sources: Path | None = None) -> dict:
    """The artifact files under the store's folder (ids replaced as in :func:`stored`): size, or for an MLmodel
    its content without what differs between two recordings (the folder ``sources`` of the runs' files, which
    the model's artifacts name, as ``<sources>``)."""
    con = sqlite3.connect(db)
    names = {r[0]: r[1] for r in con.execute("SELECT run_uuid, name FROM runs")}
    names.update({m: f"<model of {names[r]}>" for m, r in con.execute("SELECT model_id, source_run_id FROM logged_models")})
    con.close()
    root = db.parent / "mlartifacts"
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(f.relative_to(root))
        for raw, name in names.items():
            rel = rel.replace(raw, name)
        if f.name == "MLmodel":
            text = f.read_text().replace(str(sources or db.parent), "<sources>")
            meta = yaml.safe_load(text)
            out[rel] = {k: v for k, v in meta.items() if k not in VOLATILE_MLMODEL}
        else:
            out[rel] = f.stat().st_size
    return out


@pytest.fixture(scope="module")
def moons_inputs():
    return mlflow_model.dataset_inputs(load("moons"), "moons")


def run_ends(c, exp: str, tmp: Path, inputs: list, n: int = 3) -> list:
    """``n`` new runs of ``exp`` and their ends: two artifacts, the moons inputs (the first run's listed twice,
    as ``log_inputs`` deduplicates them), a model for every run but the last, and a tag already set at start."""
    parent = tracking.start_run(c, exp, run_name="parent")
    ids, _ = tracking.start_runs(c, exp, [tracking.NewRun(f"run-{i}", {"nnexp.outcome": "running"}, {"seed": i})
                                          for i in range(n)], parent_id=parent)
    ends = []
    for i, run_id in enumerate(ids):
        folder = tmp / f"out-{i}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(f"seed: {i}\n")
        np.savez(folder / "weights.npz", W0=np.full((2, 3), float(i)))
        model = None if i == n - 1 else dict(weights=folder / "weights.npz", config=folder / "config.yaml",
                                             example=np.arange(10.0).reshape(5, 2), n_classes=2, step=20 + i,
                                             tags={"activation": "relu", "dataset": "moons"})
        ends.append(tracking.RunEnd(run_id, exp, {"nnexp.outcome": "finished", "nnexp.seconds.train": "0.1"},
                                    [folder / "config.yaml", folder / "weights.npz"],
                                    inputs + inputs[:1] if i == 0 else inputs, model))
    return ends


@pytest.fixture
def two_stores(tmp_path_factory, tmp_path):
    """(client, db, experiment id) of two fresh stores."""
    return two_fresh_stores(tmp_path_factory, tmp_path)


def reference(monkeypatch, c, exp: str, tmp: Path, inputs: list) -> list:
    """The runs of :func:`run_ends` ended through MLflow's client (``$NNEXP_END_PATH=mlflow``)."""
    with monkeypatch.context() as m:
        m.setenv(tracking.END_PATH_ENV, "mlflow")
        ends = run_ends(c, exp, tmp, inputs)
        assert tracking.apply_ends(c, ends) == [None] * len(ends)
    return ends


def count_sqlite_path(monkeypatch) -> list:
    calls = []
    real = tracking._end_runs_sqlite
    monkeypatch.setattr(tracking, "_end_runs_sqlite", lambda c, store, ends: calls.append(len(ends)) or
                        real(c, store, ends))
    return calls


def test_the_sqlite_path_stores_what_mlflows_client_stores(two_stores, tmp_path, monkeypatch, moons_inputs):
    (fast, fast_db, fast_exp), (ref, ref_db, ref_exp) = two_stores
    reference(monkeypatch, ref, ref_exp, tmp_path / "ref", moons_inputs)
    calls = count_sqlite_path(monkeypatch)
    applied = []
    monkeypatch.setattr(tracking.RunEnd, "apply", lambda self, c: applied.append(self.run_id))
    ends = run_ends(fast, fast_exp, tmp_path / "fast", moons_inputs)
    assert tracking.apply_ends(fast, ends) == [None] * 3
    assert calls == [3] and applied == []
    assert stored(fast_db) == stored(ref_db)
    assert files(fast_db, tmp_path / "fast") == files(ref_db, tmp_path / "ref")
    # the values themselves
    got = {r.info.run_name: r for r in fast.search_runs([fast_exp])}
    assert {n: r.info.status for n, r in got.items()} == {"parent": "RUNNING", "run-0": "FINISHED",
                                                          "run-1": "FINISHED", "run-2": "FINISHED"}
    run0 = got["run-0"]
    assert run0.info.end_time >= run0.info.start_time and run0.data.tags["nnexp.outcome"] == "finished"
    assert float(run0.data.tags["nnexp.seconds.model"]) >= 0
    assert [(d.dataset.name, [t.value for t in d.tags]) for d in run0.inputs.dataset_inputs] == [
        ("moons-training", ["training"]), ("moons-validation", ["validation"]), ("moons-test", ["test"])]
    [output] = run0.outputs.model_outputs
    model = fast.get_logged_model(output.model_id)
    assert (model.name, str(model.status), model.source_run_id, model.model_type, output.step) == \
        ("model", "READY", run0.info.run_id, "nnexp.mlp", 20)
    assert model.tags == {"activation": "relu", "dataset": "moons"}
    assert sorted(a.path for a in fast.list_artifacts(run0.info.run_id)) == ["config.yaml", "weights.npz"]
    assert got["run-2"].outputs is None or not got["run-2"].outputs.model_outputs
    con = sqlite3.connect(fast_db)
    assert con.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 3  # shared by the three runs
    con.close()


def test_a_dataset_already_in_the_experiment_is_reused(two_stores, tmp_path, monkeypatch, moons_inputs):
    (fast, fast_db, fast_exp), (ref, ref_db, ref_exp) = two_stores
    for c, exp, db, name in ((ref, ref_exp, ref_db, "ref"), (fast, fast_exp, fast_db, "fast")):
        with monkeypatch.context() as m:
            m.setenv(tracking.END_PATH_ENV, "mlflow")
            first = run_ends(c, exp, tmp_path / name / "first", moons_inputs, n=1)
            assert tracking.apply_ends(c, first) == [None]
        if c is ref:
            reference(monkeypatch, c, exp, tmp_path / name / "second", moons_inputs)
        else:
            calls = count_sqlite_path(monkeypatch)
            assert tracking.apply_ends(c, run_ends(c, exp, tmp_path / name / "second", moons_inputs)) == [None] * 3
            assert calls == [3]
    assert stored(fast_db) == stored(ref_db)
    con = sqlite3.connect(fast_db)
    assert con.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 3
    con.close()


@pytest.mark.parametrize("statement", ["UPDATE runs", "INSERT INTO logged_models", "INSERT INTO input_tags"])
def test_a_transaction_failing_midway_is_rolled_back_and_the_runs_ended_once_by_mlflows_client(
        two_stores, tmp_path, monkeypatch, moons_inputs, statement):
    (fast, fast_db, fast_exp), (ref, ref_db, ref_exp) = two_stores
    reference(monkeypatch, ref, ref_exp, tmp_path / "ref", moons_inputs)
    applied = []
    real = tracking.RunEnd.apply
    monkeypatch.setattr(tracking.RunEnd, "apply", lambda self, c: applied.append(self.run_id) or real(self, c))
    ends = run_ends(fast, fast_exp, tmp_path / "fast", moons_inputs)
    with failing_once(fast._tracking_client.store.engine, statement) as failed:
        assert tracking.apply_ends(fast, ends) == [None] * 3
    assert len(failed) == 1 and applied == [e.run_id for e in ends]
    assert stored(fast_db) == stored(ref_db)  # each row once: nothing of the failed transaction is left
    assert files(fast_db, tmp_path / "fast") == files(ref_db, tmp_path / "ref")  # nor the folders of its models


def test_a_locked_store_is_retried(two_stores, tmp_path, monkeypatch, moons_inputs):
    (fast, fast_db, fast_exp), _ = two_stores
    tries = locked_once(monkeypatch, tracking, "_end_runs_sqlite")
    ends = run_ends(fast, fast_exp, tmp_path, moons_inputs)
    assert tracking.apply_ends(fast, ends) == [None] * 3 and len(tries) == 2
    assert {fast.get_run(e.run_id).info.status for e in ends} == {"FINISHED"}


def test_a_deleted_run_is_mlflows_error_and_the_others_end(two_stores, tmp_path, moons_inputs):
    (fast, fast_db, fast_exp), _ = two_stores
    ends = run_ends(fast, fast_exp, tmp_path, moons_inputs)
    fast.delete_run(ends[1].run_id)
    errors = tracking.apply_ends(fast, ends)
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith("MlflowException") and "must be in the 'active' state" in errors[1]
    assert [fast.get_run(e.run_id).info.status for e in ends] == ["FINISHED", "RUNNING", "FINISHED"]


def test_a_sweep_records_the_same_runs_as_through_mlflows_client(tmp_path, tmp_path_factory, monkeypatch):
    """The same packed sweep (2 activations x 2 seeds) with the writer's batched ends and with
    ``NNEXP_END_PATH=mlflow``: the same rows and files; and the batched models load and predict."""
    import mlflow

    from test_deferred_recording import SWEEP, recorded, run_main

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        migrated_store(tmp_path_factory, d)
    marks = tmp_path / "batches"
    real = tracking._end_runs_sqlite

    def counted(c, store, ends):  # runs in the forked writer: counted in a file
        real(c, store, ends)
        with open(marks, "a") as f:
            f.write(f"{len(ends)}\n")

    monkeypatch.setattr(tracking, "_end_runs_sqlite", counted)
    methods = []
    real_init = tracking.MetricWriter.__init__
    monkeypatch.setattr(tracking.MetricWriter, "__init__",
                        lambda self, *a, **k: real_init(self, *a, **k) or methods.append(self.method))
    assert run_main(monkeypatch, a, SWEEP) == 0
    counts = marks.read_text().split() if marks.exists() else []
    if methods == ["fork"]:  # a spawned writer (other threads in this process) has no counter
        assert sum(map(int, counts)) == 4  # every run ended on the SQLite path
    monkeypatch.setenv(tracking.END_PATH_ENV, "mlflow")
    assert run_main(monkeypatch, b, SWEEP) == 0
    assert (marks.read_text().split() if marks.exists() else []) == counts
    fast, ref = recorded(a), recorded(b)
    assert len(fast) == 5 and {k: {f: v for f, v in r.items() if f != "metrics"} if k != "parent" else r
                               for k, r in fast.items()} == \
        {k: {f: v for f, v in r.items() if f != "metrics"} if k != "parent" else r for k, r in ref.items()}
    assert stored(a / "mlflow.db") == stored(b / "mlflow.db")
    fast_files, ref_files = files(a / "mlflow.db"), files(b / "mlflow.db")
    assert sorted(fast_files) == sorted(ref_files)
    assert {k: v for k, v in fast_files.items() if k.endswith("MLmodel")} == \
        {k: v for k, v in ref_files.items() if k.endswith("MLmodel")}
    c = mlflow.MlflowClient(tracking_uri=f"sqlite:///{a / 'mlflow.db'}")
    model_id = next(m.model_id for m in c.search_logged_models([c.get_experiment_by_name("activations").experiment_id]))
    net = mlflow.pyfunc.load_model(f"{c.get_logged_model(model_id).artifact_location}")
    proba = net.predict(np.array([[0.0, 1.0], [1.0, 1.0]]))
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1.0)
