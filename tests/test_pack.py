"""Packed sweeps (nnexp.packing): jobs differing only in seed, lr, weight decay or init train as one network, and
the store holds exactly what the same sweep with packing off holds, bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import migrated_store, run_cli
from nnexp.packing import MEMBERS_KEY, pack_jobs

QUIET = ["tracking.progress=false", "tracking.report=false", "tracking.log_model=false"]
#: 2 activations x 2 learning rates x 2 initialisers x 2 weight decays = 16 runs, packed into 2 jobs of 8 members
#: (the seeds of conf/config.yaml pack too: test_resume_trains_only_the_missing_members).
SWEEP = ["dataset=xor", "epochs=25", "model.hidden_sizes=[3]", "batch_size=2", "activation=tanh,relu",
         "optimizer.lr=0.1,0.5", "init=xavier_uniform,orthogonal", "optimizer.weight_decay=0,0.01", "optimizer=momentum",
         "seed=3"]
METRICS = ("train_loss", "val_loss", "train_accuracy", "layer1.grad_norm", "layer1.act_std", "test_loss")


def test_pack_jobs_groups_by_everything_but_per_replica_values():
    jobs = [[f"seed={s}", f"activation={a}", f"optimizer.lr={lr}", "epochs=5"]
            for s in (0, 1) for a in ("relu", "tanh") for lr in ("0.1", "0.5")]
    packed, varying = pack_jobs(jobs)
    assert varying == ["seed", "optimizer.lr"]
    assert [p[:4] for p in packed] == [jobs[0], jobs[2]]  # each group's first job leads it
    assert packed[0][4] == (f'{MEMBERS_KEY}=[[0,"seed=0","optimizer.lr=0.1"],[1,"seed=0","optimizer.lr=0.5"],'
                            '[4,"seed=1","optimizer.lr=0.1"],[5,"seed=1","optimizer.lr=0.5"]]')
    # a value that is no per-replica value splits the groups; a lone job is left as it is
    alone, _ = pack_jobs([["seed=0", "epochs=5"], ["seed=0", "epochs=6"]])
    assert alone == [["seed=0", "epochs=5"], ["seed=0", "epochs=6"]]


def runs_of(cwd: Path) -> dict:
    """Child runs of the store in ``cwd`` by run name (every name is distinct in these sweeps)."""
    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations")
    runs = [r for r in c.search_runs([exp.experiment_id], max_results=5000) if r.data.tags.get("nnexp.kind") != "sweep"]
    out = {r.info.run_name: r for r in runs}
    assert len(out) == len(runs)
    return c, out


def run_main(monkeypatch, cwd: Path, argv: list[str]) -> int:
    import nnexp.tracking
    from nnexp.__main__ import main

    monkeypatch.setattr(nnexp.tracking, "start_metric_writer", lambda uri, **kw: None)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    return main(argv)


def weights(c, run, dest: Path) -> dict:
    path = c.download_artifacts(run.info.run_id, "weights.npz", str(dest / run.info.run_id))
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_same_store(a: Path, b: Path, n: int) -> None:
    """The stores in ``a`` and ``b`` hold ``n`` FINISHED child runs each, the same by name, identity, params, tags,
    metric histories and weights."""
    ca, ra = runs_of(a)
    cb, rb = runs_of(b)
    assert len(ra) == n and sorted(ra) == sorted(rb)
    for name, x in ra.items():
        y = rb[name]
        assert x.info.status == y.info.status == "FINISHED"
        assert x.data.params == y.data.params
        for tag in ("nnexp.config_id", "nnexp.run_key", "nnexp.config", "nnexp.overrides", "nnexp.outcome", "init",
                    "choice.init", "activation", "optimizer"):
            assert x.data.tags.get(tag) == y.data.tags.get(tag), (name, tag)
        for m in METRICS:
            hx = [(p.step, p.value) for p in ca.get_metric_history(x.info.run_id, m)]
            hy = [(p.step, p.value) for p in cb.get_metric_history(y.info.run_id, m)]
            assert hx and np.array_equal(np.array(hx), np.array(hy)), (name, m)
        wx, wy = weights(ca, x, a / "w"), weights(cb, y, b / "w")
        assert wx.keys() == wy.keys() and all(np.array_equal(wx[k], wy[k]) for k in wx)


@pytest.mark.slow  # 16 jobs alone: about 2 min on 2 loaded cores
def test_pack_jobs_keeps_one_job_per_worker_where_the_groups_allow_it():
    jobs = [["activation=relu", f"optimizer.lr={lr}", f"seed={s}"] for lr in (0.1, 0.01) for s in (0, 1, 2)]

    def members(job):  # the unpacked job numbers a packed job trains
        text = next((o for o in job if o.startswith(MEMBERS_KEY)), None)
        return [jobs.index(job)] if text is None else [int(m.split(",")[0]) for m in text.split("[")[2:]]

    for workers, sizes in ((1, [6]), (2, [3, 3]), (3, [2, 1, 3]), (4, [2, 1, 2, 1]), (8, [1] * 6)):
        packed, _ = pack_jobs(jobs, min_jobs=workers)
        assert [len(members(j)) for j in packed] == sizes, workers
        assert sorted(n for j in packed for n in members(j)) == list(range(6))  # every job exactly once


def test_packed_sweep_stores_what_the_unpacked_one_stores(tmp_path, tmp_path_factory, monkeypatch, capsys):
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    for d in (packed, alone):
        migrated_store(tmp_path_factory, d)
    assert run_main(monkeypatch, packed, ["-m", *SWEEP, *QUIET]) == 0
    err = capsys.readouterr().err
    assert "16 jobs packed into 2 (optimizer.lr, init, optimizer.weight_decay vary within a job" in err
    from nnexp import packing  # the members with init=orthogonal: one composer for both jobs, each list composed once

    composed = sorted(packing._COMPOSER[0][2].composed)
    assert [[o for o in key if o.startswith(("activation=", "init="))] for key in composed] == [
        ["activation=relu", "init=orthogonal"], ["activation=tanh", "init=orthogonal"]]
    assert run_main(monkeypatch, alone, ["-m", *SWEEP, *QUIET, "hydra.sweeper.pack=false"]) == 0
    assert "jobs packed into" not in capsys.readouterr().err
    assert len(list((packed / "multirun").glob("*/*/[0-9]*/.hydra"))) == 2  # two Hydra jobs ...
    assert len(list((alone / "multirun").glob("*/*/[0-9]*/.hydra"))) == 16
    assert_same_store(packed, alone, 16)  # ... and the same 16 runs
    c, runs = runs_of(packed)
    assert len({r.data.tags["nnexp.output_dir"] for r in runs.values()}) == 16  # a folder per job it stands for
    assert len({r.data.tags["nnexp.config_id"] for r in runs.values()}) == 16
    r = runs["relu-lr0.5-orthogonal-weight_decay=0.01-s3"]
    assert r.data.params["optimizer.lr"] == "0.5" and r.data.params["init.name"] == "orthogonal"
    assert r.data.params["seed"] == "3" and r.data.tags["choice.init"] == "orthogonal"
    assert r.data.tags["nnexp.overrides"] == ("activation=relu,batch_size=2,dataset=xor,epochs=25,init=orthogonal,"
                                              "model.hidden_sizes=[3],optimizer.lr=0.5,optimizer.weight_decay=0.01,"
                                              "optimizer=momentum,seed=3,tracking.log_model=False,"
                                              "tracking.progress=False,tracking.report=False")


def test_resume_trains_only_the_missing_members(tmp_path, tmp_path_factory, monkeypatch, capsys):
    migrated_store(tmp_path_factory, tmp_path)
    base = ["dataset=xor", "epochs=10", "model.hidden_sizes=[3]", "batch_size=null", *QUIET]
    assert run_main(monkeypatch, tmp_path, ["-m", *base, "optimizer.lr=0.1", "seed=0,1"]) == 0
    capsys.readouterr()
    assert run_main(monkeypatch, tmp_path, ["-m", *base, "optimizer.lr=0.1,0.5", "seed=0,1,2"]) == 0
    out = capsys.readouterr()
    assert "6 jobs packed into 1" in out.err
    c, runs = runs_of(tmp_path)
    assert len(runs) == 6  # 2 from the first sweep, 4 trained by the second
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 2
    reused = [n for n, r in runs.items() if any(t.startswith("nnexp.reused_by.") for t in r.data.tags)]
    assert sorted(reused) == ["tanh-s0", "tanh-s1"]  # named by the first sweep, which swept no lr
    assert sum(line.startswith("run ") for line in out.out.splitlines()) == 4  # one line per run trained
    assert "sweep finished: 6 finished, 0 diverged, 0 failed, 2 reused from earlier sweeps" in out.out


def test_a_bad_member_value_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    assert run_main(monkeypatch, tmp_path, ["-m", "dataset=xor", "optimizer.lr=0.1,-1", *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnexp: error: optimizer.lr")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_joblib_packed_sweep_matches_the_sequential_one(tmp_path, tmp_path_factory, monkeypatch, capsys):
    args = ["dataset=xor", "epochs=15", "model.hidden_sizes=[3]", "batch_size=2", "activation=tanh,relu",
            "optimizer.lr=0.1,0.5", *QUIET]
    par, seq = tmp_path / "par", tmp_path / "seq"
    for d in (par, seq):
        migrated_store(tmp_path_factory, d)
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args], par)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "12 jobs packed into 2" in proc.stderr
    assert run_main(monkeypatch, seq, ["-m", *args, "hydra.sweeper.pack=false"]) == 0
    assert_same_store(par, seq, 12)


def test_jobs_spelled_twice_are_packed_with_a_message_that_says_so(tmp_path, tmp_path_factory, monkeypatch, capsys):
    """``seed=0,0``: nothing varies within the packed job; the line said "( vary within a job", an empty list."""
    migrated_store(tmp_path_factory, tmp_path)
    assert run_main(monkeypatch, tmp_path, ["-m", "dataset=xor", "epochs=2", "seed=0,0", "tracking.report=false",
                                            *QUIET]) == 0
    out = capsys.readouterr()
    assert ("2 jobs packed into 1 (jobs that spell the same configuration and seed; hydra.sweeper.pack=false runs "
            "each)") in out.err and "( vary" not in out.err
    assert "sweep finished: 1 finished, 0 diverged, 0 failed, 0 reused from earlier sweeps, 1 duplicate(s)" in out.out
