"""The metric writer process: every point reaches the store exactly once, whether the writer works, fails or dies."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import migrated_store

from nnexp import tracking


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    uri = migrated_store(tmp_path_factory, tmp_path)
    c, exp = tracking.prepare_store(uri, "w")
    yield uri, c, exp
    tracking.stop_metric_writer(uri)


def stored(c, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


def feed(buf, steps: range) -> None:
    for s in steps:
        buf.add(s, {"a": s / 7, "b": -s, "nan": float("nan")})


def test_points_written_by_the_writer_exactly_once(store):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    assert tracking.metric_writer(uri) is writer and tracking.start_metric_writer(uri) is writer
    runs = [tracking.start_run(c, exp, run_name=f"r{i}") for i in range(2)]
    bufs = [tracking.MetricBuffer(c, r, writer=writer) for r in runs]
    for b in bufs:
        feed(b, range(1, 1301))  # 2600 points each: two full batches go to the writer, 600 stay
    assert all(len(b.unconfirmed) == 2000 and len(b.points) == 600 for b in bufs)
    for b in bufs:
        b.flush()
        assert b.logged == 2600 and not b.unconfirmed and not b.points
    for r in runs:
        assert stored(c, r, "a") == [(s, s / 7) for s in range(1, 1301)]
        assert stored(c, r, "b") == [(s, -s) for s in range(1, 1301)]
        assert stored(c, r, "nan") == []


def test_writer_killed_midway_loses_and_doubles_nothing(store):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    run = tracking.start_run(c, exp, run_name="r")
    buf = tracking.MetricBuffer(c, run, writer=writer)
    feed(buf, range(1, 1001))  # 2000 points handed over
    writer.sync(run)  # (written by now)
    feed(buf, range(1001, 1601))  # 1200 more: one batch handed over, perhaps written, perhaps not
    writer.proc.kill()
    writer.proc.join()
    feed(buf, range(1601, 2101))  # handed to nobody: written here
    buf.flush()
    assert stored(c, run, "a") == [(s, s / 7) for s in range(1, 2101)]
    assert stored(c, run, "b") == [(s, -s) for s in range(1, 2101)]
    assert tracking.metric_writer(uri) is None


def test_writer_error_surfaces_at_flush(store):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    buf = tracking.MetricBuffer(c, "0" * 32, writer=writer)  # no such run
    feed(buf, range(1, 600))
    with pytest.raises(Exception, match="(?i)run"):
        buf.flush()
    assert writer.proc.is_alive()  # an error of one run does not stop the writer


def test_writer_ignores_ctrl_c(store):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    run = tracking.start_run(c, exp, run_name="r")
    buf = tracking.MetricBuffer(c, run, writer=writer)
    assert writer.sync(run)  # the writer is up (its SIGINT handler is set)
    os.kill(writer.proc.pid, signal.SIGINT)
    feed(buf, range(1, 501))
    time.sleep(0.2)
    buf.flush()
    assert writer.proc.is_alive() and len(stored(c, run, "a")) == 500


def test_stop_waits_for_the_queue(store):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    run = tracking.start_run(c, exp, run_name="r")
    writer.send(run, [("k", float(i), 1000 + i, i) for i in range(1000)])
    tracking.stop_metric_writer(uri)
    assert writer.proc.exitcode == 0 and len(stored(c, run, "k")) == 1000


def test_blas_threads_leave_the_writer_a_core():
    from omegaconf import OmegaConf

    from nnexp.app import blas_threads

    unset, three = OmegaConf.create({"blas_threads": None}), OmegaConf.create({"blas_threads": 3})
    assert blas_threads(unset, parallel=False, writer=True) == max(1, os.cpu_count() - 1)
    assert blas_threads(unset, parallel=True, writer=True) == 1
    assert blas_threads(three, parallel=False, writer=True) == 3
    assert blas_threads(unset, parallel=False) is None


def test_row_block_threads_use_every_core_unless_the_launcher_is_parallel():
    from omegaconf import OmegaConf

    from nnexp.app import block_threads

    unset, three = OmegaConf.create({"blas_threads": None}), OmegaConf.create({"blas_threads": 3})
    assert block_threads(unset, parallel=False) == os.cpu_count()  # the writer's bursts do not count here
    assert block_threads(unset, parallel=True) == 1
    assert block_threads(three, parallel=True) == 3


# --- run ends handed to the writer (tracking.RunEnd) ------------------------------------------------------------------

def ending(run_id: str, exp: str, artifact) -> tracking.RunEnd:
    return tracking.RunEnd(run_id, exp, {"nnexp.outcome": "finished", "t": "1"}, [artifact], [], None)


def test_ends_given_to_a_writer_killed_midway_are_recorded_by_the_parent(store, tmp_path):
    """Three runs handed over (params, 1200 points, end) and the writer killed: whatever it did or did not
    record, close() leaves each run FINISHED with its params, every point once, its tags and its artifact."""
    uri, c, exp = store
    (tmp_path / "a.txt").write_text("x")
    writer = tracking.start_metric_writer(uri)
    runs = [tracking.start_run(c, exp, run_name=f"r{i}") for i in range(3)]
    for r in runs:
        buf = tracking.MetricBuffer(c, r, writer=writer)
        assert writer.log_params(r, {"lr": 0.1, "none": None})
        feed(buf, range(1, 601))
        assert buf.end(ending(r, exp, tmp_path / "a.txt")) is True  # handed over, not ended here
    writer.proc.kill()
    writer.proc.join()
    tracking.stop_metric_writer(uri)
    for r in runs:
        run = c.get_run(r)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"lr": "0.1", "none": "null"}
        assert run.data.tags["nnexp.outcome"] == "finished" and "nnexp.seconds.model" in run.data.tags
        assert [a.path for a in c.list_artifacts(r)] == ["a.txt"]
        assert stored(c, r, "a") == [(s, s / 7) for s in range(1, 601)]


def test_an_end_the_writer_cannot_record_ends_the_run_failed_with_its_error(store, tmp_path):
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    run = tracking.start_run(c, exp, run_name="r")
    buf = tracking.MetricBuffer(c, run, writer=writer)
    feed(buf, range(1, 11))
    assert buf.end(ending(run, exp, tmp_path / "missing.npz"))
    tracking.stop_metric_writer(uri)
    r = c.get_run(run)
    assert r.info.status == "FAILED"
    assert r.data.tags["nnexp.outcome"] == "failed" and "missing.npz" in r.data.tags["nnexp.error"]
    assert stored(c, run, "a") == [(s, s / 7) for s in range(1, 11)]  # the metrics before the end are kept


def test_params_the_writer_cannot_log_are_logged_by_the_parent_or_fail_the_run(store, tmp_path):
    """The writer's error on a run's params (a param set to another value) stops it writing that run; at the
    run's end the parent writes all of it itself: a run whose params are refused ends FAILED, as it would
    if the parent had logged them; another run of the same writer is unaffected."""
    uri, c, exp = store
    (tmp_path / "a.txt").write_text("x")
    writer = tracking.start_metric_writer(uri)
    bad, good = (tracking.start_run(c, exp, run_name=n) for n in ("bad", "good"))
    tracking.log_params(c, bad, {"lr": 1})
    for r, lr in ((bad, 2), (good, 2)):
        assert writer.log_params(r, {"lr": lr})
        buf = tracking.MetricBuffer(c, r, writer=writer)
        feed(buf, range(1, 1001))
        assert buf.end(ending(r, exp, tmp_path / "a.txt"))
    tracking.stop_metric_writer(uri)
    b, g = c.get_run(bad), c.get_run(good)
    assert (b.info.status, b.data.tags["nnexp.outcome"]) == ("FAILED", "failed")
    assert "lr" in b.data.tags["nnexp.error"]
    assert (g.info.status, g.data.params, g.data.tags["nnexp.outcome"]) == ("FINISHED", {"lr": "2"}, "finished")
    assert stored(c, good, "a") == [(s, s / 7) for s in range(1, 1001)]


def test_without_a_writer_or_with_wait_the_run_ends_at_once(store, tmp_path):
    uri, c, exp = store
    (tmp_path / "a.txt").write_text("x")
    writer = tracking.start_metric_writer(uri)
    for w, wait in ((None, False), (writer, True)):
        run = tracking.start_run(c, exp, run_name="r")
        buf = tracking.MetricBuffer(c, run, writer=w)
        feed(buf, range(1, 1201))
        assert buf.end(ending(run, exp, tmp_path / "a.txt"), wait=wait) is False
        assert c.get_run(run).info.status == "FINISHED"  # before the writer stops
        assert stored(c, run, "b") == [(s, -s) for s in range(1, 1201)]


def test_a_run_neither_the_writer_nor_the_parent_can_record_fails_the_stop(store, tmp_path, monkeypatch):
    """The writer cannot end a run and the store is unavailable to the parent too: stopping the writer raises
    StoreUnavailable (the sweep exits 1), and the writer is forgotten (a second stop is a no-op)."""
    uri, c, exp = store
    writer = tracking.start_metric_writer(uri)
    run = tracking.start_run(c, exp, run_name="r")
    assert writer.sync(run)  # the writer runs (forked or spawned) with the real fail_run; only the parent's fails

    def unavailable(*a, **k):
        raise tracking.StoreUnavailable("tracking server http://x did not answer for 2 s")

    monkeypatch.setattr(tracking, "fail_run", unavailable)
    assert tracking.MetricBuffer(c, run, writer=writer).end(ending(run, exp, tmp_path / "missing.npz"))
    with pytest.raises(tracking.StoreUnavailable, match=r"1 run\(s\) could not be recorded: tracking server"):
        tracking.stop_metric_writer(uri)
    assert tracking.metric_writer(uri) is None
    tracking.stop_metric_writer(uri)
    assert c.get_run(run).info.status == "RUNNING"  # left for the next sweep's orphan check


def test_the_parent_waits_once_the_ended_runs_the_writer_holds_exceed_the_backlog(store, tmp_path, monkeypatch):
    uri, c, exp = store
    (tmp_path / "a.txt").write_text("x")
    monkeypatch.setattr(tracking.MetricWriter, "MAX_BACKLOG", 500)
    writer = tracking.start_metric_writer(uri)
    small, big = (tracking.start_run(c, exp, run_name=n) for n in ("small", "big"))
    for run, steps in ((small, 100), (big, 300)):  # 200 points: held; 600 points: over the backlog
        buf = tracking.MetricBuffer(c, run, writer=writer)
        feed(buf, range(1, steps + 1))
        assert buf.end(ending(run, exp, tmp_path / "a.txt"))
        if run == small:
            assert writer.unconfirmed(small)  # (unless the writer was quicker than this line; it holds 200 points)
    assert writer.pending() == []  # end() of the big run returned once the writer had ended both
    assert [c.get_run(r).info.status for r in (small, big)] == ["FINISHED", "FINISHED"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_a_forked_writer_holds_no_descriptor_of_the_parents_store_connections(store):
    """SQLite forbids carrying a connection across fork(): the parent closes its pooled ones first."""
    uri, c, exp = store
    c.search_experiments()  # the parent has the store open
    db = uri[len("sqlite:///"):]

    def open_files(pid):
        out = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        return [f for f in out if f.startswith(db)]

    assert open_files(os.getpid())
    writer = tracking.start_metric_writer(uri)
    if writer.method != "fork":  # another thread in this test process (xdist): spawned, nothing shared
        pytest.skip("the writer was spawned")
    assert open_files(writer.proc.pid) == []  # (it connects at its first request)
