"""Sweeps that never lose a run: parallel (P01-P03, P06), resumable after kill -9, divergence-aware (P04, P05, P08),
reproducible whether a configuration runs alone, in a sequential sweep or in a parallel one.

The parallel sweep and the kill are real subprocesses; the rest calls ``nnexp.__main__.main`` in this process (its
imports are already paid for) on a copy of an empty, already migrated store, since MLflow's schema migration of a
fresh SQLite file takes seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import migrated_store, run_cli

ACTS = ("sigmoid", "tanh", "relu", "identity")
LRS = ("0.01", "0.1")
SEEDS = (0, 1, 2)
PAR_EPOCHS = 300
#: Small and fast: XOR needs no scikit-learn import and no split.
BASE = ["dataset=xor", "model.hidden_sizes=[2]", "batch_size=null", "tracking.report=false", "tracking.progress=false"]
#: Each job alone (no packing, nnexp.packing): for tests of what one job's failure leaves to the others.
ALONE = ["hydra.sweeper.pack=false"]
#: The parallel sweep logs losses and accuracies only (4 metrics x PAR_EPOCHS points per run).
PAR = [*BASE, "tracking.diagnostics=false"]


def all_runs(cwd: Path, experiment: str = "activations"):
    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=5000) if exp else []
    parents = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("nnexp.kind") != "sweep"]
    return c, parents, children


def key(r) -> tuple:
    p = r.data.params
    return p["activation.name"], p["optimizer.lr"], p["seed"]


def run_main(monkeypatch, cwd: Path, argv: list[str]) -> int:
    from nnexp.__main__ import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    return main(argv)


def weights(c, run, dest: Path) -> dict:
    path = c.download_artifacts(run.info.run_id, "weights.npz", str(dest / run.info.run_id))
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def history(c, run, metric: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, metric))


# --- P01, P02, P03, P06: one parallel sweep in a fresh directory ---------------------------------------------------
# (marked slow: the 24-job sweep takes about 30 s on 2 cores; python -m pytest -m slow runs them)
@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("parallel")
    t0 = time.monotonic()
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *PAR, f"epochs={PAR_EPOCHS}",
                    f"activation={','.join(ACTS)}", f"optimizer.lr={','.join(LRS)}", "hydra.sweep.dir=sweep"], cwd)
    c, parents, children = all_runs(cwd)
    return {"cwd": cwd, "proc": proc, "client": c, "parents": parents, "children": children,
            "seconds": time.monotonic() - t0}


@pytest.mark.slow
def test_parallel_sweep_on_a_fresh_store_records_every_run(parallel):
    """P01: 4 x 2 x 3 = 24 jobs under joblib with 4 workers, fresh directory: 24 FINISHED runs, exit 0."""
    assert parallel["proc"].returncode == 0, parallel["proc"].stderr[-3000:]
    children = parallel["children"]
    assert len(children) == len(ACTS) * len(LRS) * len(SEEDS) == 24
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(map(key, children)) == sorted((a, lr, str(s)) for a in ACTS for lr in LRS for s in SEEDS)
    (parent,) = parallel["parents"]
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert "24 finished, 0 diverged, 0 failed" in parallel["proc"].stdout


@pytest.mark.slow
def test_parallel_jobs_log_every_point_of_every_metric(parallel):
    """P02: concurrent logging loses nothing: each run has all PAR_EPOCHS points of each metric."""
    c = parallel["client"]
    for r in parallel["children"]:
        for metric in ("train_loss", "val_loss", "val_accuracy", "train_accuracy"):
            steps = [m.step for m in c.get_metric_history(r.info.run_id, metric)]
            assert sorted(steps) == list(range(1, PAR_EPOCHS + 1)), (r.info.run_name, metric)


@pytest.mark.slow
def test_each_job_writes_to_its_own_folder_and_run(parallel):
    """P03: weights and config under the job's own output folder, logged to the job's own run."""
    cwd, c = parallel["cwd"], parallel["client"]
    folders = set()
    for r in parallel["children"]:
        out = Path(r.data.tags["nnexp.output_dir"])
        # sweep/<job> alone, sweep/<job>/<member's job number> when the sweep packed it with others (nnexp.packing)
        assert out.relative_to(cwd / "sweep").parts[-1].isdigit() and len(out.relative_to(cwd / "sweep").parts) <= 2
        assert (out / "weights.npz").is_file() and (out / "config.yaml").is_file()
        folders.add(out)
        assert {a.path for a in c.list_artifacts(r.info.run_id)} >= {"weights.npz", "config.yaml"}
        logged = weights(c, r, cwd / "dl")
        with np.load(out / "weights.npz", allow_pickle=False) as local:
            assert all(np.array_equal(logged[k], local[k]) for k in local.files)
    assert len(folders) == 24
    assert not (cwd / "weights.npz").exists() and not (cwd / "config.yaml").exists()


@pytest.mark.slow
def test_one_store_for_all_jobs(parallel):
    """P06: a single mlflow.db, in the launch directory; no job made its own."""
    cwd = parallel["cwd"]
    assert [p.relative_to(cwd) for p in cwd.rglob("mlflow.db")] == [Path("mlflow.db")]
    assert not list(cwd.rglob("mlruns"))


@pytest.mark.slow
def test_workers_use_one_blas_thread(parallel):
    """Under a parallel launcher, blas_threads=null means 1 per job (recorded with the run's params)."""
    from nnexp.app import blas_threads
    from omegaconf import OmegaConf

    assert all(r.data.params["blas_threads"] == "null" for r in parallel["children"])
    assert blas_threads(OmegaConf.create({"blas_threads": None}), parallel=True) == 1
    assert blas_threads(OmegaConf.create({"blas_threads": None}), parallel=False) is None
    assert blas_threads(OmegaConf.create({"blas_threads": 3}), parallel=True) == 3


@pytest.mark.slow
def test_same_config_same_numbers_alone_sequential_or_parallel(parallel, tmp_path, tmp_path_factory, monkeypatch):
    """The same config and seed give bit-identical loss histories and weights in all three settings.

    Bit-identity holds on any CPU here: the three settings make the same calls on matrices of the same shapes, in
    the same order, and XOR's products are far below the size at which OpenBLAS would use more than one thread.

    (The per-layer diagnostics are left out: NumPy's einsum may round them differently by one ulp depending on
    how an array happens to be aligned in memory; they do not feed back into training.)
    """
    pc = parallel["client"]
    want = {("tanh", "0.1", "1"), ("relu", "0.1", "1")}
    par = {key(r): r for r in parallel["children"] if key(r) in want}
    alone_dir, seq_dir = tmp_path / "alone", tmp_path / "seq"
    migrated_store(tmp_path_factory, alone_dir)
    migrated_store(tmp_path_factory, seq_dir)
    for act, lr, seed in sorted(want):
        assert run_main(monkeypatch, alone_dir, [*PAR, f"epochs={PAR_EPOCHS}", f"activation={act}",
                                                 f"optimizer.lr={lr}", f"seed={seed}", "hydra.run.dir=run_" + act]) == 0
    assert run_main(monkeypatch, seq_dir, ["-m", *PAR, f"epochs={PAR_EPOCHS}", "activation=tanh,relu",
                                           "optimizer.lr=0.1", "seed=1", "hydra.sweep.dir=sweep"]) == 0
    for where in (alone_dir, seq_dir):
        c, _, children = all_runs(where)
        mine = {key(r): r for r in children if key(r) in want}
        assert set(mine) == want
        for k in want:
            assert mine[k].data.tags["nnexp.run_key"] == par[k].data.tags["nnexp.run_key"]
            for metric in ("train_loss", "val_loss", "val_accuracy"):
                assert history(c, mine[k], metric) == history(pc, par[k], metric), (where.name, k, metric)
            a, b = weights(c, mine[k], tmp_path / "dl"), weights(pc, par[k], tmp_path / "dlp")
            assert a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a), (where.name, k)


# --- resume after kill -9 ------------------------------------------------------------------------------------------
# one job per seed (hydra.sweeper.pack=false): packed, a job's seeds would finish together and none be mid-job
KILL_ARGS = ["-m", *BASE, "epochs=10000", "tracking.log_every=1000", "tracking.save_weights=false",
             "activation=sigmoid,tanh", "optimizer.lr=0.1", "seed=0,1,2", "hydra.sweeper.pack=false"]


def _statuses(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("select r.status, coalesce(t.value, '') from runs r left join tags t "
                           "on t.run_uuid = r.run_uuid and t.key = 'nnexp.kind'").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_then_rerun_gives_one_finished_run_per_config(tmp_path, tmp_path_factory):
    """SIGKILL a sequential sweep mid-job; the same command again ends with exactly one FINISHED run per
    configuration, the killed job's run and the killed sweep's parent KILLED, nothing RUNNING."""
    migrated_store(tmp_path_factory, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", *KILL_ARGS, "hydra.sweep.dir=sweep1"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            s = _statuses(tmp_path / "mlflow.db")
            kids = [st for st, kind in s if kind != "sweep"]
            if kids.count("FINISHED") >= 2 and kids.count("RUNNING") == 1:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no job was running after 2 finished")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the sweep's writer process (nnexp.tracking.MetricWriter) still records the runs it was handed (a job whose
    # training had ended), then exits: read the store once it has stopped changing
    before, deadline = _statuses(tmp_path / "mlflow.db"), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _statuses(tmp_path / "mlflow.db")
        if now == before:
            break
        before = now
    assert ("RUNNING", "sweep") in before
    finished_before = sum(1 for st, kind in before if st == "FINISHED" and kind != "sweep")
    running_before = sum(1 for st, kind in before if st == "RUNNING" and kind != "sweep")
    assert 2 <= finished_before < 6 and finished_before + running_before <= 6

    rerun = run_cli([*KILL_ARGS, "hydra.sweep.dir=sweep2"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "left RUNNING by a killed sweep as KILLED" in rerun.stdout + rerun.stderr
    c, parents, children = all_runs(tmp_path)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(key(r) for r in finished) == sorted((a, "0.1", str(s)) for a in ("sigmoid", "tanh") for s in SEEDS)
    # the killed job's run (if its training had begun) is KILLED; a run the writer finished stays FINISHED
    assert [r.info.status for r in children if r.info.status != "FINISHED"] == ["KILLED"] * running_before
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
    assert not [r for r in c.search_runs([parents[0].info.experiment_id]) if r.info.status == "RUNNING"]
    new_parent = next(p for p in parents if p.info.status == "FINISHED").info.run_id
    trained_again = [r for r in finished if r.data.tags.get("mlflow.parentRunId") == new_parent]
    assert len(trained_again) == 6 - finished_before  # the finished ones were skipped, the rest redone


@pytest.mark.slow
def test_resume_skips_finished_configs_and_resume_false_trains_again(tmp_path, tmp_path_factory, monkeypatch):
    migrated_store(tmp_path_factory, tmp_path)
    args = ["-m", *BASE, "epochs=5", "activation=tanh", "seed=0,1"]
    assert run_main(monkeypatch, tmp_path, [*args, "hydra.sweep.dir=s1"]) == 0
    assert run_main(monkeypatch, tmp_path, [*args, "hydra.sweep.dir=s2"]) == 0  # nothing to do
    _, parents, children = all_runs(tmp_path)
    assert len(parents) == 2 and len(children) == 2
    assert run_main(monkeypatch, tmp_path, [*args, "epochs=6", "hydra.sweep.dir=s3"]) == 0  # epochs is in the hash
    assert run_main(monkeypatch, tmp_path, [*args, "tracking.resume=false", "hydra.sweep.dir=s4"]) == 0  # forced
    _, parents, children = all_runs(tmp_path)
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.params["epochs"] for r in children) == ["5", "5", "5", "5", "6", "6"]


# --- failures, interruptions, divergence ---------------------------------------------------------------------------
def _raise_on_call(monkeypatch, n: int, exc: BaseException):
    import nnexp.app

    real, calls = nnexp.app.fit, []

    def fit(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(nnexp.app, "fit", fit)


def test_first_job_raises_second_finishes(tmp_path, tmp_path_factory, monkeypatch):
    """P04: basic launcher, the first of two jobs raises: its run FAILED with the error, the second FINISHED."""
    migrated_store(tmp_path_factory, tmp_path)
    _raise_on_call(monkeypatch, 1, RuntimeError("boom in job 0"))
    rc = run_main(monkeypatch, tmp_path, ["-m", *BASE, "epochs=3", "activation=tanh", "seed=0,1",
                                          "hydra.sweep.dir=s", *ALONE])
    assert rc == 1  # the sweep ran to the end, and says a job failed
    _, (parent,), children = all_runs(tmp_path)
    by_seed = {r.data.params["seed"]: r for r in children}
    assert by_seed["0"].info.status == "FAILED" and "boom in job 0" in by_seed["0"].data.tags["nnexp.error"]
    assert by_seed["1"].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"


def test_a_job_failing_before_its_run_exists_is_recorded_and_the_sweep_ends_normally(tmp_path, tmp_path_factory,
                                                                                       monkeypatch):
    """A job that fails while building its data or model (before any run exists) is recorded as a FAILED run;
    the next job trains, the parent FINISHES and the report is written."""
    import nnexp.app

    migrated_store(tmp_path_factory, tmp_path)
    real = nnexp.app.build

    def build(cfg, *a, **k):
        if cfg.seed == 0:
            raise MemoryError("cannot allocate 59.6 GiB")
        return real(cfg, *a, **k)

    monkeypatch.setattr(nnexp.app, "build", build)
    rc = run_main(monkeypatch, tmp_path, ["-m", *BASE[:-2], "epochs=3", "activation=tanh", "seed=0,1",
                                          "hydra.sweep.dir=s", "tracking.progress=false", *ALONE])
    assert rc == 1
    _, (parent,), children = all_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    by_status = sorted((r.info.status, r.data.tags.get("nnexp.outcome")) for r in children)
    assert by_status == [("FAILED", "failed"), ("FINISHED", "finished")]
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "59.6 GiB" in failed.data.tags["nnexp.error"]
    assert list(tmp_path.glob("reports/activations/*/index.html"))


def test_ctrl_c_marks_the_job_and_the_parent_killed(tmp_path, tmp_path_factory, monkeypatch):
    migrated_store(tmp_path_factory, tmp_path)
    _raise_on_call(monkeypatch, 2, KeyboardInterrupt())
    rc = run_main(monkeypatch, tmp_path, ["-m", *BASE, "epochs=3", "activation=tanh", "seed=0,1,2",
                                          "hydra.sweep.dir=s", *ALONE])
    assert rc == 130
    _, (parent,), children = all_runs(tmp_path)
    assert sorted((r.data.params["seed"], r.info.status) for r in children) == [("0", "FINISHED"), ("1", "KILLED")]
    assert parent.info.status == "KILLED"
    killed = next(r for r in children if r.info.status == "KILLED")
    assert killed.data.tags["nnexp.outcome"] == "killed"


def test_ctrl_c_before_any_run_exists_says_nothing_was_recorded(tmp_path, monkeypatch, capsys):
    """A single run interrupted while its data loads (before its run is created): the line says nothing was
    recorded, not that runs were marked KILLED; a later interrupt in training says they were."""
    import nnexp.app

    def build(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(nnexp.app, "build", build)
    assert run_main(monkeypatch, tmp_path, ["dataset=xor", "epochs=3", "tracking.progress=false"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "nnexp: interrupted before any run started; nothing was recorded"
    monkeypatch.undo()
    _raise_on_call(monkeypatch, 1, KeyboardInterrupt())
    assert run_main(monkeypatch, tmp_path, ["dataset=xor", "epochs=3", "tracking.progress=false"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "nnexp: interrupted; runs in progress are marked KILLED"
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.status for r in c.search_runs([c.get_experiment_by_name("activations").experiment_id])] == ["KILLED"]


@pytest.mark.slow
def test_sigterm_marks_the_runs_killed_and_exits_143(tmp_path, tmp_path_factory):
    """``timeout``, ``kill``, SLURM and ``docker stop`` send SIGTERM: handled as Ctrl-C is, nothing left RUNNING."""
    migrated_store(tmp_path_factory, tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", "-m", *BASE, "epochs=100000000", "activation=tanh",
                             "seed=0,1", "tracking.progress=false"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until a child run trains
            time.sleep(0.5)
            try:
                con = sqlite3.connect(tmp_path / "mlflow.db", timeout=5)
                running = con.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
                con.close()
            except sqlite3.Error:
                running = 0
            if running >= 2:  # the parent and a child
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    con = sqlite3.connect(tmp_path / "mlflow.db")
    statuses = sorted(r[0] for r in con.execute("SELECT status FROM runs"))
    con.close()
    assert "RUNNING" not in statuses and statuses.count("KILLED") >= 2, statuses
    con = sqlite3.connect(tmp_path / "mlflow.db")
    errors = {r[0] for r in con.execute("SELECT t.value FROM tags t JOIN runs r ON t.run_uuid = r.run_uuid "
                                        "WHERE t.key = 'nnexp.error' AND r.status = 'KILLED'")}
    con.close()
    assert errors == {"KeyboardInterrupt: SIGTERM"}, errors  # what stopped it, not an empty Ctrl-C


def test_diverging_child_is_marked_and_the_sweep_goes_on(tmp_path, tmp_path_factory, monkeypatch):
    """P05: one child diverges: it is kept, tagged diverged with its epoch; the other finishes; the parent FINISHED.
    No RuntimeWarning escapes training."""
    migrated_store(tmp_path_factory, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = run_main(monkeypatch, tmp_path, ["-m", *BASE, "model.hidden_sizes=[8]", "epochs=30", "activation=relu",
                                              "init=normal", "optimizer.lr=0.1,1000", "seed=0", "hydra.sweep.dir=s"])
    assert rc == 0
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    _, (parent,), children = all_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in children)
    by_lr = {r.data.params["optimizer.lr"]: r for r in children}
    bad, good = by_lr["1000.0"], by_lr["0.1"]
    assert bad.data.tags["nnexp.outcome"] == "diverged" and int(bad.data.tags["nnexp.diverged_epoch"]) >= 1
    assert "test_accuracy" not in bad.data.metrics
    assert good.data.tags["nnexp.outcome"] == "finished" and "nnexp.diverged_epoch" not in good.data.tags


def test_dead_relu_fraction_is_logged_per_layer(tmp_path, tmp_path_factory, monkeypatch):
    """P08: relu at a high learning rate: each hidden layer's dead-unit fraction is a metric of the run, every epoch."""
    migrated_store(tmp_path_factory, tmp_path)
    assert run_main(monkeypatch, tmp_path, [*BASE, "model.hidden_sizes=[16,16]", "epochs=40", "activation=relu",
                                            "tracking.diagnostics=true",
                                            "optimizer.lr=2.0", "hydra.run.dir=r"]) == 0
    c, _, (run,) = all_runs(tmp_path)
    for layer in (1, 2):
        h = history(c, run, f"layer{layer}.dead_fraction")
        assert [s for s, _ in h] == list(range(1, 41))
        assert all(0 <= v <= 1 and (v * 16) == int(v * 16) for _, v in h)  # a share of 16 units
    assert max(v for _, v in history(c, run, "layer1.dead_fraction") + history(c, run, "layer2.dead_fraction")) > 0


@pytest.mark.slow
def test_a_job_folder_that_cannot_be_made_stops_the_sweep_without_leaving_it_running(tmp_path):
    """Hydra makes each job's folder before the job runs; when that fails the sweep ends in one line, parent FAILED."""
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "0").write_text("a file where job 0's folder should go")
    p = run_cli(["-m", "dataset=xor", "epochs=3", "activation=tanh,relu", "seed=0", "hydra.sweep.dir=sw",
                 "tracking.report=false", "tracking.progress=false"], tmp_path)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("nnexp: error:")]
    assert len(errors) == 1 and "sw/0" in errors[0]
    con = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        assert con.execute("SELECT status FROM runs").fetchall() == [("FAILED",)]  # the parent; no job started
    finally:
        con.close()


# --- P12: a sweep function trains the values it says, or the command is refused before anything runs ---------
@pytest.mark.parametrize("sweep,epochs", [("sort(range(1,4),reverse=true)", ["3", "2", "1"]),
                                          ("shuffle(range(1,4))", ["1", "2", "3"]),
                                          ("tag(short,sort(3,1,2))", ["1", "2", "3"])])
def test_sweep_functions_train_the_values_written(sweep, epochs, tmp_path, tmp_path_factory, monkeypatch):
    migrated_store(tmp_path_factory, tmp_path)
    rc = run_main(monkeypatch, tmp_path, ["-m", *BASE, "activation=tanh", f"epochs={sweep}", "seed=0",
                                          "hydra.sweep.dir=s"])
    assert rc == 0
    c, _, children = all_runs(tmp_path)
    trained = [r.data.params["epochs"] for r in sorted(children, key=lambda r: r.info.start_time)]
    assert (sorted(trained) if sweep.startswith("shuffle") else trained) == epochs
    for r in children:  # every epoch of the run was trained and recorded
        assert [s for s, _ in history(c, r, "train_loss")][-1] == int(r.data.params["epochs"])


def test_a_sweep_hydra_expands_to_other_values_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    """Hydra 1.3 runs sort(range(100,301,100),reverse=true) as 201, 101, 1 (hydra issue #3228)."""
    rc = run_main(monkeypatch, tmp_path, ["-m", "dataset=xor", "activation=tanh",
                                          "epochs=sort(range(100,301,100),reverse=true)", "seed=0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "would run 201, 101, 1, not 300, 200, 100" in err and "write epochs=300,200,100" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()


def test_ctrl_c_inside_hydras_sweeper_is_an_interrupt(tmp_path, tmp_path_factory, monkeypatch):
    """Ctrl-C that lands in Hydra's or OmegaConf's bookkeeping can surface as another error (seen:
    AttributeError from OmegaConf in BasicSweeper.validate_batch_is_legal): still exit 130, the parent KILLED."""
    import signal

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    import nnexp.__main__ as entry
    from nnexp.packing import PackingSweeper

    migrated_store(tmp_path_factory, tmp_path)

    def interrupted_midway(self, batch):
        entry._INTERRUPTS.append(signal.SIGINT)
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    monkeypatch.setattr(BasicSweeper, "validate_batch_is_legal", interrupted_midway)
    monkeypatch.setattr(PackingSweeper, "validate_batch_is_legal", interrupted_midway)  # the default sweeper
    rc = run_main(monkeypatch, tmp_path, ["-m", *BASE, "epochs=3", "activation=tanh", "seed=0,1",
                                          "hydra.sweep.dir=s"])
    assert rc == 130
    _, (parent,), children = all_runs(tmp_path)
    assert parent.info.status == "KILLED" and children == []


def test_ctrl_c_while_the_report_is_written_says_only_the_report_is_missing(tmp_path, tmp_path_factory,
                                                                            monkeypatch, capsys):
    """Every run is recorded when the report starts: Ctrl-C then exits 130 saying so and how to write the report,
    not that runs were marked KILLED; the runs and the parent are FINISHED and the parent says the report is
    missing."""
    from nnexp.report import worker

    migrated_store(tmp_path_factory, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "build", interrupted)
    base = [b for b in BASE if b != "tracking.report=false"]
    rc = run_main(monkeypatch, tmp_path, ["-m", *base, "epochs=3", "activation=tanh", "seed=0,1",
                                          "hydra.sweep.dir=s", "tracking.report=true"])
    err = capsys.readouterr().err
    assert rc == 130
    line = [ln for ln in err.splitlines() if ln.startswith("nnexp:")]
    assert len(line) == 1 and "interrupted while writing the report" in line[0] and "KILLED" not in line[0]
    assert line[0].endswith("Write the report with: python -m nnexp.report --experiment activations --sweep s")
    _, (parent,), children = all_runs(tmp_path)
    assert parent.info.status == "FINISHED" and sorted(r.info.status for r in children) == ["FINISHED"] * 2
    assert parent.data.tags["nnexp.report"].startswith("interrupted; write it with: python -m nnexp.report")
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").rglob("index.html"))


def test_ctrl_c_after_the_summary_before_the_report_says_every_run_is_recorded(tmp_path, tmp_path_factory,
                                                                             monkeypatch, capsys):
    """Ctrl-C after the runs were counted and the summary printed, before the report began (seen: during
    register_model's check): exit 130 and the truth, every run recorded and how to write the report."""
    from nnexp import callbacks

    migrated_store(tmp_path_factory, tmp_path)
    real = callbacks._summary_text

    def then_interrupted(*args, **kwargs):
        print(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(callbacks, "_summary_text", then_interrupted)
    base = [b for b in BASE if b != "tracking.report=false"]
    rc = run_main(monkeypatch, tmp_path, ["-m", *base, "epochs=3", "activation=tanh", "seed=0,1",
                                          "hydra.sweep.dir=s", "tracking.report=true"])
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("nnexp:")]
    assert rc == 130 and line == ["nnexp: interrupted after every run of the sweep was recorded (the parent run is "
                                  "FINISHED); no report was written. Write it with: python -m nnexp.report "
                                  "--experiment activations --sweep s"]
    _, (parent,), children = all_runs(tmp_path)
    assert parent.info.status == "FINISHED" and sorted(r.info.status for r in children) == ["FINISHED"] * 2
