"""nnexp.tracking.start_runs: runs created on a SQLite store in one SQLAlchemy Core transaction, with their params,
are stored exactly as MLflow's ``create_run`` and ``log_batch`` store them (the rows of ``runs``, ``tags`` and
``params``, and the runs MLflow reads back); a transaction that fails is rolled back and the runs are created once
through ``create_run``; MLflow's own errors stay MLflow's."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from conftest import failing_once, locked_once, migrated_store, two_fresh_stores
from mlflow.exceptions import MlflowException

from nnexp import tracking

PARAMS = [{"activation.name": "relu", "optimizer.lr": 0.1, "model.hidden_sizes": [16, 8], "batch_size": None,
           "seed": 0, "long": "x" * 7000},  # MLflow cuts a param value at 6000 characters
          {"activation.name": "tanh", "optimizer.lr": 1.0, "model.hidden_sizes": [16], "batch_size": 64, "seed": 1},
          {}]


def new_runs() -> list:
    return [tracking.NewRun("relu-s0", {"activation": "relu", "nnexp.config": '{"a": 1}', "mlflow.user": "ana"},
                            PARAMS[0]),
            tracking.NewRun("tanh-s1", {"activation": "tanh", "nnexp.host": "elsewhere"}, PARAMS[1]),
            tracking.NewRun("no-params", {}, PARAMS[2])]


def rows(db, run_ids: list[str]) -> dict:
    """The rows of runs, tags and params, each run's id replaced by its index in ``run_ids`` and the store's folder
    by ``<store>`` (its request id, process start and start time left out: they differ between two recordings)."""
    con = sqlite3.connect(db)
    try:
        index = {rid: i for i, rid in enumerate(run_ids)}

        def norm(v):
            if isinstance(v, str):
                v = v.replace(str(db.parent), "<store>")
                for rid, i in index.items():
                    v = v.replace(rid, f"<run {i}>")
            return v

        out = {}
        for name in ("runs", "tags", "params"):
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({name})") if r[1] != "start_time"]
            got = [tuple(norm(v) for v in r) for r in con.execute(f"SELECT {', '.join(cols)} FROM {name}")
                   if r[cols.index("run_uuid")] in index]
            if name == "tags":
                got = [r for r in got if r[0] not in ("nnexp.request_id", "nnexp.pid_start")]
            out[name] = sorted(got, key=str)
        return out
    finally:
        con.close()


def read_back(c, run_ids: list[str]) -> list:
    out = []
    for rid in run_ids:
        r = c.get_run(rid)
        info = {k: v for k, v in vars(r.info).items() if k not in ("_run_id", "_run_uuid", "_start_time",
                                                                  "_artifact_uri")}
        tags = {k: v for k, v in r.data.tags.items()
                if k not in ("nnexp.request_id", "nnexp.pid_start", "mlflow.parentRunId")}  # the parent: in rows()
        out.append((info, tags, r.data.params, r.info.artifact_uri.replace(rid, "<run>").rsplit("/mlartifacts/")[1]))
    return out


@pytest.fixture
def two_stores(tmp_path_factory, tmp_path):
    """(client, db, experiment id, parent run id) of two fresh stores."""
    return [(c, db, exp, tracking.start_run(c, exp, run_name="parent"))
            for c, db, exp in two_fresh_stores(tmp_path_factory, tmp_path)]


def create_reference(monkeypatch, c, exp: str, parent: str) -> list[str]:
    with monkeypatch.context() as m:
        m.setenv(tracking.RUN_PATH_ENV, "create_run")
        ids, logged = tracking.start_runs(c, exp, new_runs(), parent_id=parent)
    assert not logged
    for rid, params in zip(ids, PARAMS):
        tracking.log_params(c, rid, params)
    return ids


def count_create_run(monkeypatch, c) -> list:
    calls = []
    real = c.create_run
    monkeypatch.setattr(c, "create_run", lambda *a, **k: calls.append(k.get("run_name")) or real(*a, **k))
    return calls


def test_the_sqlite_path_stores_what_create_run_and_log_batch_store(two_stores, monkeypatch):
    (fast, fast_db, fast_exp, fast_parent), (ref, ref_db, ref_exp, ref_parent) = two_stores
    ref_ids = create_reference(monkeypatch, ref, ref_exp, ref_parent)
    calls = count_create_run(monkeypatch, fast)
    ids, logged = tracking.start_runs(fast, fast_exp, new_runs(), parent_id=fast_parent)
    assert logged and calls == [] and len(set(ids)) == 3
    assert rows(fast_db, [fast_parent, *ids]) == rows(ref_db, [ref_parent, *ref_ids])
    assert read_back(fast, ids) == read_back(ref, ref_ids)
    # the values themselves
    got = {r.info.run_name: r for r in (fast.get_run(i) for i in ids)}
    assert list(got) == ["relu-s0", "tanh-s1", "no-params"] and {r.info.status for r in got.values()} == {"RUNNING"}
    relu = got["relu-s0"]
    assert relu.info.user_id == "ana" and got["tanh-s1"].info.user_id == "unknown"
    assert relu.data.params["batch_size"] == "null" and relu.data.params["model.hidden_sizes"] == "[16, 8]"
    assert len(relu.data.params["long"]) == 6000 and got["no-params"].data.params == {}
    assert relu.data.tags["mlflow.parentRunId"] == fast_parent and relu.data.tags["mlflow.runName"] == "relu-s0"
    assert got["tanh-s1"].data.tags["nnexp.host"] == "elsewhere"  # a caller's tag replaces start_run's own
    assert len({r.data.tags["nnexp.request_id"] for r in got.values()}) == 3
    starts = [got[n].info.start_time for n in ("relu-s0", "tanh-s1", "no-params")]
    assert starts == sorted(set(starts))  # MLflow's default order (start time) is the order of creation


def test_a_param_mlflow_refuses_leaves_the_params_to_log_batch(two_stores):
    (fast, fast_db, fast_exp, _), _ = two_stores
    runs = new_runs()
    runs[1].params = {"bad key!": 1}
    ids, logged = tracking.start_runs(fast, fast_exp, runs)
    assert not logged and [fast.get_run(i).info.run_name for i in ids] == ["relu-s0", "tanh-s1", "no-params"]
    assert all(fast.get_run(i).data.params == {} for i in ids)
    with pytest.raises(MlflowException, match="Invalid value \"bad key!\""):
        tracking.log_params(fast, ids[1], runs[1].params)


def test_a_transaction_failing_midway_is_rolled_back_and_the_runs_created_once_by_create_run(two_stores, monkeypatch):
    (fast, fast_db, fast_exp, fast_parent), (ref, ref_db, ref_exp, ref_parent) = two_stores
    with failing_once(fast._tracking_client.store.engine, "INSERT INTO params") as failed:
        calls = count_create_run(monkeypatch, fast)
        ids, logged = tracking.start_runs(fast, fast_exp, new_runs(), parent_id=fast_parent)
    assert len(failed) == 1 and calls == ["relu-s0", "tanh-s1", "no-params"] and not logged
    for rid, params in zip(ids, PARAMS):
        tracking.log_params(fast, rid, params)
    ref_ids = create_reference(monkeypatch, ref, ref_exp, ref_parent)
    assert rows(fast_db, [fast_parent, *ids]) == rows(ref_db, [ref_parent, *ref_ids])
    con = sqlite3.connect(fast_db)
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4  # the parent and each run once
    con.close()


def test_a_locked_store_is_retried(two_stores, monkeypatch):
    (fast, fast_db, fast_exp, _), _ = two_stores
    tries = locked_once(monkeypatch, tracking, "_insert_runs")
    calls = count_create_run(monkeypatch, fast)
    ids, logged = tracking.start_runs(fast, fast_exp, new_runs())
    assert logged and len(tries) == 2 and calls == [] and len(ids) == 3


def test_a_deleted_experiment_is_mlflows_error(two_stores):
    (fast, fast_db, fast_exp, _), _ = two_stores
    fast.delete_experiment(fast_exp)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        tracking.start_runs(fast, fast_exp, new_runs())


def test_a_sweep_records_the_same_runs_as_through_create_run(tmp_path, tmp_path_factory, monkeypatch):
    """The same packed sweep (2 activations x 2 seeds) with the SQLite path and with ``NNEXP_RUN_PATH=create_run``:
    the same runs, names, statuses, params, tags, metrics, artifacts, models and dataset inputs."""
    from test_deferred_recording import SWEEP, recorded, run_main

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        migrated_store(tmp_path_factory, d)
    real, calls = tracking._insert_runs, []
    monkeypatch.setattr(tracking, "_insert_runs", lambda *args: calls.append(1) or real(*args))
    assert run_main(monkeypatch, a, SWEEP) == 0
    assert calls == [1, 1]  # one transaction per job
    monkeypatch.setenv(tracking.RUN_PATH_ENV, "create_run")
    assert run_main(monkeypatch, b, SWEEP) == 0
    assert calls == [1, 1]
    fast, reference = recorded(a), recorded(b)
    assert sorted(fast, key=str) == sorted(reference, key=str) and len(fast) == 5
    for k, run in reference.items():
        if k == "parent":
            assert fast[k] == run
            continue
        got = dict(fast[k])
        metrics = got.pop("metrics")
        assert sorted(metrics) == sorted(run["metrics"]) and len(metrics) > 5
        for m, points in metrics.items():  # the trainer's values; BLAS threads may differ in the last bit
            assert [s for s, _ in points] == [s for s, _ in run["metrics"][m]], m
            if m != "train_seconds":
                np.testing.assert_allclose([v for _, v in points], [v for _, v in run["metrics"][m]],
                                           rtol=1e-9, atol=1e-12)
        assert got == {key: v for key, v in run.items() if key != "metrics"}
