"""nnexp.tracking: retry with bounded back-off, store checks, orphans of a process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow import MlflowClient

from conftest import migrated_store
from nnexp import tracking
from nnexp.config import ConfigError


def test_retry_retries_a_locked_store_with_doubling_bounded_delays(monkeypatch):
    sleeps, calls = [], []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)

    def flaky():
        calls.append(1)
        if len(calls) < 6:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.retry(flaky, first_delay=0.1, max_delay=0.5) == "ok"
    assert len(calls) == 6 and sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_retry_gives_up_after_the_last_attempt_and_never_retries_other_errors(monkeypatch):
    sleeps = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)

    def locked():
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="locked"):
        tracking.retry(locked, attempts=4, first_delay=0.01)
    assert len(sleeps) == 3
    calls = []

    def wrong():
        calls.append(1)
        raise ValueError("no such column")

    with pytest.raises(ValueError):
        tracking.retry(wrong)
    assert calls == [1]


def test_sqlite_store_in_a_missing_folder_is_refused_and_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'a' / 'b' / 'mlflow.db'}"
    with pytest.raises(ConfigError, match="does not exist"):
        tracking.prepare_store(uri, "x")
    assert not (tmp_path / "a").exists()


def test_unreachable_server_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot be reached"):
        tracking.check_store("http://127.0.0.1:9")
    assert time.monotonic() - t0 < 10


def test_default_store_is_absolute_in_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path / "..")
    assert tracking.resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking.artifact_location(tracking.resolve_uri(None, tmp_path)) == (tmp_path / "mlartifacts").as_uri()


CHILD = textwrap.dedent("""
    import sys, time
    from nnexp import tracking
    c = tracking.client(sys.argv[1])
    rid = tracking.start_run(c, sys.argv[2], run_name="victim", tags={"nnexp.config_hash": "h"})  # a training run
    print(rid, flush=True)
    time.sleep(600)
""")


def test_runs_of_a_process_killed_with_sigkill_are_marked_killed(tmp_path, tmp_path_factory):
    """A real process opens a run and is killed with SIGKILL: its run becomes KILLED; live processes' runs stay."""
    uri = migrated_store(tmp_path_factory, tmp_path)
    c, exp = tracking.prepare_store(uri, "orphans")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, uri, exp], stdout=subprocess.PIPE, text=True)
    try:
        victim = proc.stdout.readline().strip()
        assert c.get_run(victim).info.status == "RUNNING"
        mine = tracking.start_run(c, exp, run_name="alive", tags={"nnexp.config_hash": "h"})  # this process: alive
        assert tracking.mark_orphans_killed(c, exp) == 0  # the child is still alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # a report built before any command marks it counts the run killed, not running, and says why
    from nnexp.report.load import load_runs

    runs = load_runs(uri, "orphans").set_index("run_id")
    assert runs.loc[victim, "status"] == "RUNNING" and runs.loc[victim, "outcome"] == "killed"
    assert runs.loc[victim, "error"].startswith(f"its process (pid {proc.pid} on ")
    assert "still says RUNNING" in runs.loc[victim, "error"]
    assert runs.loc[mine, "outcome"] == "running" and not isinstance(runs.loc[mine, "error"], str)
    assert tracking.mark_orphans_killed(c, exp) == 1
    run = c.get_run(victim)
    assert run.info.status == "KILLED" and run.data.tags["nnexp.outcome"] == "killed"
    assert run.data.tags["nnexp.error"].startswith(f"its process (pid {proc.pid} on ")  # it says which, and why
    assert c.get_run(mine).info.status == "RUNNING" and "nnexp.outcome" not in c.get_run(mine).data.tags
    assert tracking.mark_orphans_killed(c, exp) == 0


def test_a_reused_process_id_does_not_keep_an_orphan_alive(tmp_path, tmp_path_factory):
    """A run whose pid now belongs to another process (a different start time) is an orphan."""
    uri = migrated_store(tmp_path_factory, tmp_path)
    c, exp = tracking.prepare_store(uri, "reuse")
    rid = tracking.start_run(c, exp, run_name="old", tags={"nnexp.pid": str(os.getppid()), "nnexp.pid_start": "1"})
    other = tracking.start_run(c, exp, run_name="other host", tags={"nnexp.host": "elsewhere", "nnexp.pid": "1"})
    assert tracking.mark_orphans_killed(c, exp) == 1
    assert c.get_run(rid).info.status == "KILLED" and c.get_run(other).info.status == "RUNNING"


def test_experiment_created_once_under_concurrent_callers(tmp_path, tmp_path_factory):
    """get_or_create_experiment is race-safe: many threads, one experiment."""
    from concurrent.futures import ThreadPoolExecutor

    uri = migrated_store(tmp_path_factory, tmp_path)
    tracking.prepare_store(uri, "warmup")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: tracking.get_or_create_experiment(tracking.client(uri), "race"), range(16)))
    assert len(set(ids)) == 1
    assert [e.name for e in MlflowClient(uri).search_experiments()].count("race") == 1


def test_diagnostic_steps_keep_about_the_asked_points_with_the_first_and_last():
    assert tracking.diagnostic_steps(40, 1, 50) is None  # fewer recorded epochs than points: all kept
    assert tracking.diagnostic_steps(200, 1, None) is None
    steps = tracking.diagnostic_steps(200, 1, 50)
    assert steps == set(range(1, 201, 4)) | {200} and len(steps) == 51
    # recorded epochs of log_every=3 (3, 6, ..., 198, and the last, 200): every other one of those 67
    assert tracking.diagnostic_steps(200, 3, 40) == {*list(range(3, 199, 3))[::2], 200}


def test_metric_buffer_thins_the_per_layer_diagnostics_only(tmp_path):
    c, exp = tracking.prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "thin")
    run = tracking.start_run(c, exp, run_name="r")
    buf = tracking.MetricBuffer(c, run, diagnostic_steps={1, 3})
    for step in (1, 2, 3):
        buf.add(step, {"val_loss": 1.0 / step, "layer1.grad_norm": step, "layer2.act_std": 2.0 * step,
                       "layer1.probe.act_p50": 0.5, "dead_network": 0.0})
    buf.flush()
    steps = {k: [m.step for m in c.get_metric_history(run, k)] for k in
             ("val_loss", "layer1.grad_norm", "layer2.act_std", "layer1.probe.act_p50", "dead_network")}
    assert steps == {"val_loss": [1, 2, 3], "layer1.grad_norm": [1, 3], "layer2.act_std": [1, 3],
                     "layer1.probe.act_p50": [1, 2, 3], "dead_network": [1, 2, 3]}


def test_a_store_in_wal_mode_commits_without_waiting_for_the_disk(tmp_path):
    c, _ = tracking.prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "fast")
    with c._tracking_client.store.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert con.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL (FULL is 2)


def test_only_the_head_of_a_store_error_decides_whether_it_is_retried(monkeypatch):
    """A duplicate point's IntegrityError carries its bound parameters (metric values such as 0.5031): it was
    read as a server's 503 and retried for 6 s, and the run the killed writer had already recorded was lost.
    Statements and parameters are not read; status codes count only as whole numbers."""
    import sqlite3

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    dup = sqlalchemy.exc.IntegrityError(
        "INSERT INTO metrics (key, value) VALUES (?, ?)", [("train_loss", 0.5031), ("val_loss", 502.0)],
        sqlite3.IntegrityError("UNIQUE constraint failed: metrics.key"))
    assert "503" in str(dup) and not tracking._transient(dup)
    assert not tracking._transient(MlflowException(str(dup)))
    locked = sqlalchemy.exc.OperationalError("INSERT INTO metrics VALUES (?)", [(0.25,)],
                                             sqlite3.OperationalError("database is locked"))
    assert tracking._transient(locked) and tracking._transient(MlflowException(str(locked)))
    assert tracking._transient(MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with "
                                               "error code 503 != 200. Response body: ''"))
    assert tracking._transient(RuntimeError("504 Server Error: Gateway Timeout for url: http://h/api"))
    assert not tracking._transient(ValueError("metric value 0.503 at step 1503 is invalid"))
    calls = []
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)

    def duplicate():
        calls.append(1)
        raise dup

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        tracking.retry(duplicate)
    assert calls == [1]


def test_points_already_in_the_store_are_written_once_without_waiting(tmp_path, tmp_path_factory, monkeypatch):
    """What a killed writer had committed is sent again by the sweep's process: the store keeps one copy of each
    point, the latest value stays right, and nothing is retried (values chosen to contain 502, 503 and 504)."""
    uri = migrated_store(tmp_path_factory, tmp_path)
    c, exp = tracking.prepare_store(uri, "again")
    rid = tracking.start_run(c, exp, run_name="r")
    points = [("loss", v, 1_700_000_000_000 + i, i + 1) for i, v in enumerate([0.5031, 0.2502, 0.1504, 0.0503])]
    sleeps = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    tracking.log_metrics(c, rid, points[:3])
    tracking.log_metrics(c, rid, points)  # the first three again, and one new point
    history = sorted((m.step, m.value) for m in c.get_metric_history(rid, "loss"))
    assert history == [(p[3], p[1]) for p in points] and sleeps == []
    assert c.get_run(rid).data.metrics["loss"] == 0.0503


@pytest.mark.parametrize("uri, driver, how", [
    ("postgresql://h/db", "psycopg", "pip install psycopg, or write postgresql+psycopg2://"),
    ("postgresql+psycopg2://h/db", "psycopg2", "pip install -e '.[team]'"),
])
def test_a_database_uri_without_its_driver_is_one_line_naming_the_driver(monkeypatch, uri, driver, how):
    """A PostgreSQL URI whose driver is missing: a ConfigError naming tracking.uri, the driver and what to install
    (it was a 90-line traceback ending in ModuleNotFoundError; found by the new-user test)."""
    monkeypatch.setitem(sys.modules, driver, None)  # import psycopg(2) raises ImportError, installed or not
    with pytest.raises(ConfigError) as e:
        tracking.check_store(uri)
    msg = str(e.value)
    assert msg.startswith(f"tracking.uri={uri!r} needs the database driver {driver!r}") and how in msg
    assert "\n" not in msg
