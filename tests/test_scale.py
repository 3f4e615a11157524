"""Reading back a sweep of many runs: exact rows, and no MLflow call per run.

The store: one sweep of 3 activations x 2 learning rates x 5 seeds = 30 child runs with the identity tags, params
and metric histories a sweep writes; beside them the cases a selection must get right: a deleted child, a child
still RUNNING, an intermediate parent of a search (``nnexp.kind=search``), an earlier sweep's run reused by this
sweep, a legacy run (``nnexp.config_hash`` only), a NaN final metric.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import migrated_store
from nnexp import identity, tracking
from nnexp.report import load

ACTS, LRS, SEEDS, EPOCHS = ("relu", "tanh", "sigmoid"), (0.01, 0.1), range(5), 4
T0 = 1_700_000_000_000


def _val_loss(i: int, step: int) -> float:
    return round(1.0 / (i + 1) + 0.01 * (EPOCHS - step), 6)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.entities import Metric, Param, RunTag

    root = tmp_path_factory.mktemp("scale")
    uri = migrated_store(tmp_path_factory, root)
    c, exp_id = tracking.prepare_store(uri, "scale")
    clock = iter(range(T0, T0 + 10**9, 1000))
    parent = c.create_run(exp_id, run_name="sweep", start_time=next(clock), tags={"nnexp.kind": "sweep"}).info.run_id
    earlier = c.create_run(exp_id, run_name="sweep0", start_time=next(clock), tags={"nnexp.kind": "sweep"}).info.run_id

    def run(act, lr, seed, i, parent_id, status="FINISHED", extra=None, nan=False):
        canon = {"activation": act, "optimizer.lr": lr, "dataset": "moons", "model.hidden_sizes": [16]}
        tags = {**identity.tags(canon, seed), "activation": act, "dataset": "moons", "nnexp.outcome": "finished",
                "mlflow.parentRunId": parent_id, **(extra or {})}
        rid = c.create_run(exp_id, run_name=f"{act}-lr{lr}-s{seed}", start_time=next(clock)).info.run_id
        vals = [math.nan if nan and s == EPOCHS else _val_loss(i, s) for s in range(1, EPOCHS + 1)]
        c.log_batch(rid, metrics=[Metric("val_loss", v, T0 + s, s) for s, v in enumerate(vals, start=1)]
                    + [Metric("train_loss", 2 * _val_loss(i, s), T0 + s, s) for s in range(1, EPOCHS + 1)],
                    params=[Param(k, str(v)) for k, v in {"activation.name": act, "optimizer.lr": lr, "seed": seed,
                                                          "epochs": EPOCHS}.items()],
                    tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if status != "RUNNING":
            c.set_terminated(rid, status, end_time=next(clock))
        return rid, tags[identity.TAG_RUN_KEY]

    grid = [(a, lr, s) for a in ACTS for lr in LRS for s in SEEDS]
    children = {}
    for i, (a, lr, s) in enumerate(grid):
        children[run(a, lr, s, i, parent, nan=(i == 7))[0]] = i
    deleted, deleted_key = run("relu", 1.0, 0, 99, parent)
    c.delete_run(deleted)
    running, running_key = run("relu", 1.0, 1, 98, parent, status="RUNNING")
    search, _ = run("tanh", 1.0, 0, 97, parent, extra={"nnexp.kind": "search"})
    reused, reused_key = run("elu", 0.1, 0, 96, earlier, extra={f"nnexp.reused_by.{parent}": "1"})
    legacy = c.create_run(exp_id, run_name="legacy", start_time=next(clock),
                          tags={"nnexp.config_hash": "abc", "activation": "relu"}).info.run_id
    c.log_batch(legacy, params=[Param("activation.name", "relu"), Param("seed", "0")])
    c.set_terminated(legacy, "FINISHED", end_time=next(clock))
    keys = {rid: c.get_run(rid).data.tags[identity.TAG_RUN_KEY] for rid in children}
    return {"uri": uri, "exp_id": exp_id, "parent": parent, "children": children, "keys": keys,
            "deleted": (deleted, deleted_key), "running": (running, running_key), "search": search,
            "reused": (reused, reused_key), "legacy": legacy}


@pytest.fixture
def searches(monkeypatch):
    """Counts calls of ``MlflowClient.search_runs``."""
    from mlflow import MlflowClient

    calls = []
    real = MlflowClient.search_runs

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("filter_string", args[1] if len(args) > 1 else ""))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", spy)
    return calls


def _through_mlflow(monkeypatch):
    monkeypatch.setattr(load.tracking, "sqlite_path", lambda uri: None)


def test_sweep_rows_exact_and_no_search_per_run(store, searches):
    df = load.load_runs(store["uri"], "scale", parent_id=store["parent"])
    assert searches == []  # the SQLite file is read in five SQL queries, however many runs
    trained = df[~df["reused"]]
    assert sorted(trained["run_id"]) == sorted([*store["children"], store["running"][0]])
    assert list(df.loc[df["reused"], "run_id"]) == [store["reused"][0]]
    by_id = df.set_index("run_id")
    for rid, i in store["children"].items():
        want = math.nan if i == 7 else _val_loss(i, EPOCHS)
        assert by_id.at[rid, "val_loss"] == pytest.approx(want, nan_ok=True)
        assert by_id.at[rid, "train_loss"] == pytest.approx(2 * _val_loss(i, EPOCHS))
        assert by_id.at[rid, "run_key"] == store["keys"][rid]
    assert by_id.at[store["running"][0], "outcome"] == "finished" and by_id.at[store["running"][0], "status"] == "RUNNING"
    assert by_id.loc[list(store["children"]), "model.hidden_sizes"].tolist() == [(16,)] * 30
    assert sorted(by_id["seed"].unique()) == [0, 1, 2, 3, 4]
    assert df.attrs["metrics"] == ["train_loss", "val_loss"]


@pytest.mark.parametrize("sweep", [True, False], ids=["sweep", "experiment"])
def test_sqlite_read_equals_mlflow_search(store, monkeypatch, sweep):
    parent = store["parent"] if sweep else None
    fast = load.load_runs(store["uri"], "scale", parent_id=parent)
    _through_mlflow(monkeypatch)
    slow = load.load_runs(store["uri"], "scale", parent_id=parent)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.attrs == slow.attrs
    # the whole experiment: every run with identity tags or the legacy hash, the search's intermediate parent too
    assert len(fast) == (32 if sweep else 30 + 1 + 1 + 1 + 1)


def test_histories_in_chunks_are_the_whole_history(store, monkeypatch):
    ids = list(store["children"])
    whole = load.load_histories(store["uri"], ids, ["val_loss", "train_loss"])
    monkeypatch.setattr(load, "SQL_CHUNK", 7)
    chunked = load.load_histories(store["uri"], ids, ["val_loss", "train_loss"])
    pd.testing.assert_frame_equal(whole, chunked)
    assert len(whole) == 30 * 2 * EPOCHS
    got = whole[whole["metric"] == "val_loss"].set_index(["run_id", "step"])["value"]
    for rid, i in store["children"].items():
        if i != 7:
            assert [got[rid, s] for s in range(1, EPOCHS + 1)] == [_val_loss(i, s) for s in range(1, EPOCHS + 1)]


def test_find_finished_many_matches_the_per_key_search(store, searches):
    c = tracking.client(store["uri"])
    keys = [*store["keys"].values(), store["deleted"][1], store["running"][1], store["reused"][1], "0" * 16]
    found = tracking.find_finished_many(c, store["exp_id"], keys)
    assert len(searches) == 1  # one search for the 31 runs found (run_id IN ...), none per key
    key_of = {k: rid for rid, k in store["keys"].items()}
    assert {k: (r.info.run_id if r else None) for k, r in found.items()} == {
        **key_of, store["deleted"][1]: None, store["running"][1]: None, store["reused"][1]: store["reused"][0],
        "0" * 16: None}
    for k in keys:  # the same answer as MLflow's search, key by key
        ref = c.search_runs([store["exp_id"]], f"attributes.status = 'FINISHED' and tags.`nnexp.run_key` = '{k}'",
                            order_by=["attributes.start_time ASC"], max_results=1)
        assert (found[k].info.run_id if found[k] else None) == (ref[0].info.run_id if ref else None)
    searches.clear()
    assert tracking.find_finished(c, store["exp_id"], "1" * 16) is None
    assert searches == []  # nothing finished: no MLflow search at all


class _FakeResponse:
    def __init__(self, points):
        self.points = points

    def json(self):
        return {"metrics": self.points}


def test_bulk_histories_batch_runs_and_split_cut_answers(monkeypatch):
    """A server's histories come 100 runs per request; an answer cut at the point limit is asked again in halves."""
    import mlflow.utils.rest_utils as rest

    ids = [f"r{i:03d}" for i in range(250)]
    history = {rid: [(s, float(i) + s / 10) for s in range(3 + i % 3)] for i, rid in enumerate(ids)}
    requests = []

    def fake(creds, endpoint, method, params):
        runs = [v for k, v in params if k == "run_id"]
        key = dict(params)["metric_key"]
        requests.append((len(runs), key))
        pts = [{"run_id": r, "key": key, "step": s, "value": v, "timestamp": 0} for r in sorted(runs)
               for s, v in history[r]]
        return _FakeResponse(pts[:load.BULK_POINTS])

    monkeypatch.setattr(rest, "http_request", fake)
    store = type("S", (), {"get_host_creds": staticmethod(lambda: None)})()
    client = type("C", (), {"_tracking_client": type("T", (), {"store": store})()})()
    rows = load._bulk_histories(client, ids, ["val_loss"])
    assert sorted(n for n, _ in requests) == [50, 100, 100]
    assert sorted(rows) == sorted((r, "val_loss", s, v) for r in ids for s, v in history[r])
    requests.clear()
    monkeypatch.setattr(load, "BULK_POINTS", 300)  # 100 runs hold ~400 points: cut, asked again as 50 + 50
    rows = load._bulk_histories(client, ids, ["val_loss"])
    assert sorted(rows) == sorted((r, "val_loss", s, v) for r in ids for s, v in history[r])
    assert sorted(n for n, _ in requests) == [50, 50, 50, 50, 50, 100, 100]
    assert np.isfinite([v for *_, v in rows]).all()


def test_resume_lookups_use_the_run_key_index_and_answer_the_same_without_it(store):
    import sqlite3

    c = tracking.client(store["uri"])
    db = tracking.sqlite_path(store["uri"])
    keys = [*store["keys"].values(), store["deleted"][1], "0" * 16]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT sql FROM sqlite_master WHERE name = 'nnexp_run_key'").fetchone()[0] == \
            tracking.RUN_KEY_INDEX.replace("IF NOT EXISTS ", "")
        plan = " ".join(str(r) for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT run_uuid FROM tags INDEXED BY nnexp_run_key "
            "WHERE key = 'nnexp.run_key' AND value IN ('x')"))
        assert "nnexp_run_key (value=?)" in plan
    with_index = {k: r and r.info.run_id for k, r in tracking.find_finished_many(c, store["exp_id"], keys).items()}
    with sqlite3.connect(db) as con:
        con.execute("DROP INDEX nnexp_run_key")
    try:
        without = {k: r and r.info.run_id for k, r in tracking.find_finished_many(c, store["exp_id"], keys).items()}
    finally:
        tracking.prepare_store(store["uri"], "scale")  # puts the index back
    assert with_index == without
    assert sum(v is not None for v in with_index.values()) == 30
