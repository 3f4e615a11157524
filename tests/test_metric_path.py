"""nnexp.tracking.log_metrics: metric points written to a SQLite store with SQLAlchemy Core are stored exactly as
MLflow's ``log_batch`` stores them (the rows of ``metrics`` and ``latest_metrics``, each metric's history, the run's
latest metrics), and every failure of that path, rolled back, goes through ``log_batch`` instead."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from conftest import failing_once, migrated_store, two_fresh_stores
from mlflow.exceptions import MlflowException

from nnexp import tracking

BIG = 1.7976931348623157e308  # how MLflow stores +-inf


def batches() -> list[list[tuple]]:
    """Points ``(key, value, timestamp_ms, step)`` in several batches: steps out of order across and within batches,
    exact duplicates (within a batch, and of a batch already written), NaN, +-inf, -0.0, an int and a NumPy value."""
    rng = np.random.default_rng(0)
    grid = [(f"layer{k}.grad", float(rng.normal()), 1_000 + s, s) for s in range(1, 401) for k in range(3)]
    odd = [("loss", 0.5, 10, 7), ("loss", 0.25, 9, 7), ("loss", 0.75, 10, 7),  # step 7 latest: timestamp 10, value 0.75
           ("loss", 0.9, 20, 3), ("loss", float("nan"), 30, 5), ("loss", float("nan"), 30, 5),  # two NaN objects
           ("inf", float("inf"), 5, 1), ("inf", -float("inf"), 6, 1), ("inf", BIG, 5, 1),  # +inf and BIG: one row
           ("zero", -0.0, 1, 1), ("zero", 0.0, 1, 1), ("int", 3, 1, 2), ("np", np.float64(0.125), 1, 4),
           ("nan_last", 1.0, 1, 1), ("nan_last", float("nan"), 1, 2),
           ("tie", float("nan"), 1, 1), ("tie", 0.0, 1, 1)]  # equal (step, timestamp, stored value): the first is latest
    return [grid[600:], odd + odd[:3], grid[:600], [("loss", 0.1, 11, 6), ("loss", 2.0, 10, 8), ("nan_last", 0.0, 1, 2)],
            grid[900:1000] + [("loss", 0.3, 12, 8)]]  # the last: points already stored, and a new one


def table(db, name: str) -> list[tuple]:
    """The rows of ``name`` in insertion order (rowid), run_uuid left out (the two stores' runs differ)."""
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({name})") if r[1] != "run_uuid"]
        return con.execute(f"SELECT rowid, {', '.join(cols)} FROM {name} ORDER BY rowid").fetchall()
    finally:
        con.close()


def nan_safe(rows) -> list:
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows]


def record(c, db, run_id: str) -> dict:
    keys = sorted({r[1] for r in table(db, "metrics")})
    return {"history": {k: nan_safe((m.key, m.value, m.timestamp, m.step) for m in c.get_metric_history(run_id, k))
                        for k in keys},
            "latest": nan_safe(sorted(c.get_run(run_id).data.metrics.items())),
            "metrics": table(db, "metrics"), "latest_metrics": table(db, "latest_metrics")}


@pytest.fixture
def two_stores(tmp_path_factory, tmp_path):
    """(client, db, run_id) of two fresh stores, each with one run."""
    return [(c, db, tracking.start_run(c, exp, run_name="r"))
            for c, db, exp in two_fresh_stores(tmp_path_factory, tmp_path)]


def count_log_batch(monkeypatch, c) -> list:
    calls = []
    real = c.log_batch
    monkeypatch.setattr(c, "log_batch", lambda *a, **k: calls.append(len(k.get("metrics", ()))) or real(*a, **k))
    return calls


def write_reference(monkeypatch, c, run_id: str) -> None:
    with monkeypatch.context() as m:
        m.setenv(tracking.METRIC_PATH_ENV, "log_batch")
        for b in batches():
            tracking.log_metrics(c, run_id, b)


def test_the_sqlite_path_stores_what_log_batch_stores(two_stores, monkeypatch):
    (fast, fast_db, fast_run), (ref, ref_db, ref_run) = two_stores
    write_reference(monkeypatch, ref, ref_run)
    calls = count_log_batch(monkeypatch, fast)
    for b in batches():
        tracking.log_metrics(fast, fast_run, b)
    assert calls == [101]  # only the batch with points already stored went through log_batch (which skips them)
    got, want = record(fast, fast_db, fast_run), record(ref, ref_db, ref_run)
    assert got == want
    # the values themselves, worked out by hand from batches()
    latest = dict(got["latest"])
    assert latest["loss"] == 0.3 and latest["inf"] == -BIG and latest["zero"] == -0.0 and latest["int"] == 3.0
    assert latest["nan_last"] == latest["tie"] == "nan" and latest["np"] == 0.125
    assert got["history"]["inf"] == [("inf", BIG, 5, 1), ("inf", -BIG, 6, 1)]
    assert [m[1] for m in got["history"]["loss"]].count("nan") == 1
    assert len(got["metrics"]) == 1200 + 14 + 3 + 1
    assert len(got["latest_metrics"]) == 3 + 7


def test_a_schema_mlflow_changed_goes_through_log_batch(two_stores, monkeypatch):
    (fast, fast_db, fast_run), (ref, ref_db, ref_run) = two_stores
    write_reference(monkeypatch, ref, ref_run)
    monkeypatch.setattr(tracking, "METRIC_COLUMNS", tracking.METRIC_COLUMNS | {"model_id"})
    calls = count_log_batch(monkeypatch, fast)
    for b in batches():
        tracking.log_metrics(fast, fast_run, b)
    assert calls == [600, 20, 600, 3, 101]  # every batch
    assert record(fast, fast_db, fast_run) == record(ref, ref_db, ref_run)


def test_a_transaction_failing_midway_is_rolled_back_and_written_once_by_log_batch(two_stores, monkeypatch):
    """The SQLite path fails after inserting the points (reading latest_metrics): nothing of it stays, and log_batch
    writes the batch: no point twice."""
    (fast, fast_db, fast_run), (ref, ref_db, ref_run) = two_stores
    write_reference(monkeypatch, ref, ref_run)
    with failing_once(fast._tracking_client.store.engine, 'SELECT latest_metrics."key", latest_metrics.step') as failed:
        calls = count_log_batch(monkeypatch, fast)
        for b in batches():
            tracking.log_metrics(fast, fast_run, b)
    assert len(failed) == 1 and calls == [600, 101]  # the first batch, then the one with stored points
    assert record(fast, fast_db, fast_run) == record(ref, ref_db, ref_run)


def test_errors_are_mlflows(two_stores, monkeypatch):
    """An invalid point or a deleted run: log_batch's own error, and nothing written."""
    (fast, fast_db, fast_run), _ = two_stores
    with pytest.raises(MlflowException, match="metrics\\[1\\].*name"):
        tracking.log_metrics(fast, fast_run, [("a", 1.0, 1, 1), ("../b", 1.0, 1, 1)])
    with pytest.raises(MlflowException, match="timestamp"):
        tracking.log_metrics(fast, fast_run, [("a", 1.0, -1, 1)])
    assert table(fast_db, "metrics") == []
    fast.delete_run(fast_run)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        tracking.log_metrics(fast, fast_run, [("a", 1.0, 1, 1)])
    assert table(fast_db, "metrics") == [] and table(fast_db, "latest_metrics") == []


def test_large_lists_are_split_into_transactions(two_stores, monkeypatch):
    (fast, fast_db, fast_run), (ref, ref_db, ref_run) = two_stores
    points = [(f"k{k}", s / 3, 100 + s, s) for s in range(2_500) for k in range(2)]
    with monkeypatch.context() as m:
        m.setenv(tracking.METRIC_PATH_ENV, "log_batch")
        tracking.log_metrics(ref, ref_run, points)
    monkeypatch.setattr(tracking, "POINTS_PER_TRANSACTION", 2_000)
    transactions = []
    real = tracking._insert_metrics
    monkeypatch.setattr(tracking, "_insert_metrics", lambda s, r, p: transactions.append(len(p)) or real(s, r, p))
    tracking.log_metrics(fast, fast_run, points)
    assert transactions == [2_000, 2_000, 1_000]
    assert record(fast, fast_db, fast_run) == record(ref, ref_db, ref_run)


def test_a_sweep_records_the_same_metrics_as_through_log_batch(tmp_path, tmp_path_factory, monkeypatch):
    """The same packed sweep (2 activations x 2 seeds, metrics written by the writer process) with the SQLite path
    and with ``NNEXP_METRIC_PATH=log_batch``: the same runs, points and latest metrics."""
    from mlflow import MlflowClient
    from test_deferred_recording import SWEEP, recorded, run_main

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        migrated_store(tmp_path_factory, d)
    assert run_main(monkeypatch, a, SWEEP) == 0
    monkeypatch.setenv(tracking.METRIC_PATH_ENV, "log_batch")
    assert run_main(monkeypatch, b, SWEEP) == 0
    fast, reference = recorded(a), recorded(b)
    assert sorted(fast, key=str) == sorted(reference, key=str) and len(fast) == 5
    for k, run in reference.items():
        if k == "parent":
            continue
        assert sorted(fast[k]["metrics"]) == sorted(run["metrics"]) and len(run["metrics"]) > 5
        for m, points in run["metrics"].items():  # the trainer's values; BLAS threads may differ in the last bit
            if m == "train_seconds":
                continue
            assert [s for s, _ in fast[k]["metrics"][m]] == [s for s, _ in points], m
            np.testing.assert_allclose([v for _, v in fast[k]["metrics"][m]], [v for _, v in points],
                                       rtol=1e-9, atol=1e-12)

    def latest(d):
        c = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
        runs = c.search_runs([c.get_experiment_by_name("activations").experiment_id], max_results=100)
        return {(r.data.params.get("activation.name"), r.data.params.get("seed")): r.data.metrics for r in runs}

    fast, reference = latest(a), latest(b)
    assert fast.keys() == reference.keys()
    for k, metrics in reference.items():
        assert sorted(fast[k]) == sorted(metrics)
        np.testing.assert_allclose([fast[k][m] for m in sorted(metrics) if "seconds" not in m],
                                   [metrics[m] for m in sorted(metrics) if "seconds" not in m], rtol=1e-9, atol=1e-12)
    counts = [sqlite3.connect(d / "mlflow.db").execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM metrics").fetchone()
              for d in (a, b)]
    assert counts[0] == counts[1] and counts[0][0] > 100
