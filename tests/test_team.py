"""Team mode: sweeps recorded by an MLflow tracking server on PostgreSQL, run by Ray and submitit launchers.

A session fixture starts PostgreSQL and ``mlflow server`` on 127.0.0.1 (random free ports) with
:mod:`nnexp.team_server`. Select these tests with ``pytest -m team``; they skip only where PostgreSQL's
``initdb`` is not installed (CI installs the Debian package ``postgresql``), and the Ray and submitit tests
where their extra is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from nnexp import tracking
from nnexp.team_server import TeamServer, find_pg_bin, free_port

pytestmark = pytest.mark.team

#: A tiny job: a few epochs of a 5-unit network on iris (150 samples).
TINY = ["dataset=iris", "epochs=4", "model.hidden_sizes=[5]", "batch_size=32", "tracking.progress=false"]
METRICS = ("train_loss", "val_loss", "val_accuracy")


@pytest.fixture(scope="session")
def server():
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL's initdb not found (install the Debian package 'postgresql')")
    root = Path(tempfile.mkdtemp(prefix="nnexp-team-"))
    root.chmod(0o755)  # PostgreSQL runs as the 'postgres' user when the tests run as root
    ts = TeamServer(root, port=free_port(), pg_port=free_port(), workers=1)
    try:
        ts.start()
        yield ts
    finally:
        ts.stop()
        shutil.rmtree(root, ignore_errors=True)


def sweep(cwd: Path, server: TeamServer, experiment: str, *overrides: str, env: dict | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m nnexp -m`` in ``cwd`` against the server."""
    return run_cli(["-m", f"tracking.uri={server.uri}", f"tracking.experiment={experiment}", *TINY, *overrides], cwd,
                   env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(env or {})}, timeout=timeout)


def runs_of(server: TeamServer, experiment: str) -> tuple[list, list]:
    """(parents, children) of an experiment on the server."""
    c = tracking.client(server.uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def assert_histories_exact(server: TeamServer, runs, epochs: int) -> None:
    """Every run has exactly one point per epoch for each metric: nothing dropped, nothing recorded twice."""
    c = tracking.client(server.uri)
    for r in runs:
        for key in METRICS:
            steps = [m.step for m in c.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (r.info.run_name, key, steps)


def test_server_answers_on_loopback_only(server):
    status = server.status()
    assert status["mlflow"] == "running" and status["postgresql"].startswith("running on 127.0.0.1:")
    assert server.uri == f"http://127.0.0.1:{server.port}"
    assert server.backend_uri.startswith("postgresql+psycopg2://nnexp@127.0.0.1:")
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    for port in (server.port, server.pg_port):
        bound = [line.split()[3] for line in out.splitlines() if line.split()[3].endswith(f":{port}")]
        assert all(b.startswith("127.0.0.1:") for b in bound), bound


def test_ray_sweep_of_12_jobs_then_resume(server, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e .[ray]")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed: pip install -e .[ray]")
    exp = "team_ray"
    grid = ["activation=sigmoid,tanh,relu", "optimizer.lr=0.05,0.2", "seed=0,1"]
    proc = sweep(tmp_path, server, exp, "hydra/launcher=nnexp_ray", "hydra.launcher.ray.init.num_cpus=2", *grid)
    assert proc.returncode == 0, proc.stderr[-4000:]
    parents, children = runs_of(server, exp)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert Counter(r.info.status for r in children) == {"FINISHED": 12}
    assert len({r.data.tags["nnexp.run_key"] for r in children}) == 12
    assert {r.data.tags["nnexp.pid"] for r in children} != {parents[0].data.tags["nnexp.pid"]}, "jobs ran in the driver"
    assert_histories_exact(server, children, epochs=4)
    # the report was built from the server and stored with the parent run
    (index,) = [Path(line.split("report: ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("report: ")]
    assert index.is_file() and index.parent.parent == tmp_path / "reports" / exp
    assert "index.html" in {a.path.split("/")[-1] for a in tracking.client(server.uri).list_artifacts(
        parents[0].info.run_id, "report")}
    from nnexp.report.load import load_histories

    hist = load_histories(server.uri, [r.info.run_id for r in children], list(METRICS))
    assert hist.groupby("run_id").size().to_dict() == {r.info.run_id: 3 * 4 for r in children}
    assert not hist.duplicated(["run_id", "metric", "step"]).any()

    # resume against the server: the same sweep again trains nothing and reuses the 12 runs
    again = sweep(tmp_path, server, exp, *grid)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "12 reused" in again.stdout
    parents, children = runs_of(server, exp)
    assert len(parents) == 2 and len(children) == 12
    latest = max(parents, key=lambda r: r.info.start_time)
    assert sum(f"nnexp.reused_by.{latest.info.run_id}" in r.data.tags for r in children) == 12


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _children_status(server: TeamServer, experiment: str) -> Counter:
    try:
        return Counter(r.info.status for r in runs_of(server, experiment)[1])
    except Exception:
        return Counter()


def _start_sweep(tmp_path: Path, server: TeamServer, experiment: str, env: dict) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    e.update(env)
    args = ["-m", f"tracking.uri={server.uri}", f"tracking.experiment={experiment}", *TINY,
            "activation=tanh", "epochs=30", "dataset=digits", "model.hidden_sizes=[32]",  # seeds 0, 1, 2
            "hydra.sweeper.pack=false"]  # one job per seed: the server goes down between jobs, not after a packed one
    return subprocess.Popen([sys.executable, "-m", "nnexp", *args], cwd=tmp_path, env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_server_stopped_mid_sweep_jobs_wait_and_finish_without_duplicates(server, tmp_path):
    """Stop the tracking server while a job trains, restart it 5 s later: the sweep finishes, nothing twice."""
    exp = "team_outage"
    proc = _start_sweep(tmp_path, server, exp, {"NNEXP_TRACKING_PATIENCE": "90"})
    try:
        _wait_for(lambda: _children_status(server, exp).get("FINISHED", 0) >= 1, 120, "a first finished job")
        server.stop_mlflow()
        time.sleep(5)
        server.start_mlflow()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    parents, children = runs_of(server, exp)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3, [r.info.run_name for r in children]
    assert Counter(r.info.status for r in children) == {"FINISHED": 3}
    assert_histories_exact(server, children, epochs=30)


def test_server_down_past_patience_fails_naming_it_and_a_rerun_completes(server, tmp_path):
    """The server stays down: the sweep ends with an error naming it; after a restart a rerun completes."""
    exp = "team_down"
    proc = _start_sweep(tmp_path, server, exp, {"NNEXP_TRACKING_PATIENCE": "2"})
    try:
        _wait_for(lambda: _children_status(server, exp).get("FINISHED", 0) >= 1, 120, "a first finished job")
        server.stop_mlflow()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.start_mlflow()
    assert proc.returncode != 0
    assert f"tracking server {server.uri} did not answer" in err
    rerun = _start_sweep(tmp_path, server, exp, {"NNEXP_TRACKING_PATIENCE": "90"})
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-4000:]
    parents, children = runs_of(server, exp)
    assert not [r for r in parents + children if r.info.status == "RUNNING"], "a run was left RUNNING"
    finished = [r for r in children if r.info.status == "FINISHED"]
    hashes = Counter(r.data.tags["nnexp.run_key"] for r in finished)
    assert len(hashes) == 3 and set(hashes.values()) == {1}, hashes
    assert_histories_exact(server, finished, epochs=30)


def test_submitit_local_sweep(server, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed: pip install -e .[slurm]")
    exp = "team_submitit"
    proc = sweep(tmp_path, server, exp, "hydra/launcher=submitit_local", "activation=tanh,relu", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    parents, children = runs_of(server, exp)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert Counter(r.info.status for r in children) == {"FINISHED": 4}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert_histories_exact(server, children, epochs=4)


def test_a_worker_finds_the_parent_through_the_store(server, tmp_path):
    """Without the sweep directory (another machine), a job finds its RUNNING parent by its tags."""
    c = tracking.client(server.uri)
    exp_id = tracking.get_or_create_experiment(c, "team_lookup")
    sweep_dir = tmp_path / "multirun" / "x"
    tags = {"nnexp.kind": "sweep", "nnexp.sweep_dir": str(sweep_dir)}
    old = tracking.start_run(c, exp_id, run_name="old", tags=tags)
    tracking.end_run(c, old)
    parent = tracking.start_run(c, exp_id, run_name="open", tags=tags)
    assert tracking.find_sweep_parent(c, exp_id, sweep_dir) == parent
    assert tracking.find_sweep_parent(c, exp_id, tmp_path / "elsewhere") is None


def test_a_dead_workers_run_is_ended_not_left_running(server):
    """A child whose process died on another machine is KILLED once its sweep has ended, or FAILED at sweep end."""
    c = tracking.client(server.uri)
    exp_id = tracking.get_or_create_experiment(c, "team_orphans")
    elsewhere = {"nnexp.host": "another-machine", "nnexp.pid": "1"}
    ended = tracking.start_run(c, exp_id, run_name="ended sweep", tags={"nnexp.kind": "sweep"})
    orphan = tracking.start_run(c, exp_id, run_name="orphan", parent_id=ended, tags=elsewhere)
    tracking.end_run(c, ended)
    live = tracking.start_run(c, exp_id, run_name="live sweep", tags={"nnexp.kind": "sweep"})
    running = tracking.start_run(c, exp_id, run_name="running", parent_id=live, tags=elsewhere)
    assert tracking.mark_orphans_killed(c, exp_id) == 1
    assert c.get_run(orphan).info.status == "KILLED"
    assert c.get_run(running).info.status == "RUNNING"
    assert tracking.end_orphan_children(c, exp_id, live) == 1
    assert c.get_run(running).info.status == "FAILED"
    assert c.get_run(running).data.tags["nnexp.outcome"] == "failed"


def test_create_run_is_idempotent_under_retry(server, monkeypatch):
    """A create whose answer was lost is not repeated: the retry finds the run by its request id."""
    c = tracking.client(server.uri)
    exp_id = tracking.get_or_create_experiment(c, "team_idempotent")
    real = c.create_run
    calls = []

    def lost_answer(*args, **kwargs):
        calls.append(1)
        real(*args, **kwargs)  # the server creates the run...
        if len(calls) == 1:
            raise ConnectionError("Read timed out")  # ...but the answer never arrives

    monkeypatch.setattr(c, "create_run", lost_answer)
    run_id = tracking.start_run(c, exp_id, run_name="once")
    assert len(calls) == 1
    runs = c.search_runs([exp_id], filter_string="attributes.run_name = 'once'")
    assert [r.info.run_id for r in runs] == [run_id]
