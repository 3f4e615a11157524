"""The report worker (:mod:`nnexp.report.worker`): the report it builds is the one built in this process, a build's
error arrives as that error, a dead worker leaves the build to this process, and no worker outlives its sweep."""

import os
import re
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from nnexp.report import ReportError, build_report, worker
from nnexp.report.load import load_runs

ACTS = ["relu", "tanh"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2 activations x 2 learning rates x 2 seeds on moons, 6 epochs, no report: the runs the reports read."""
    cwd = tmp_path_factory.mktemp("worker-sweep")
    proc = run_cli(["-m", f"activation={','.join(ACTS)}", "optimizer.lr=0.1,1.0", "dataset=moons", "epochs=6",
                    "replicas=2", "model.hidden_sizes=[8]", "hydra.sweeper.params.seed=0", "tracking.progress=false",
                    "tracking.report=false"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    runs = load_runs(uri, "activations")
    parent = runs["parent_id"].iloc[0]
    return {"cwd": cwd, "uri": uri, "parent": parent, "runs": load_runs(uri, "activations", parent_id=parent)}


def _kwargs(store, out_dir: Path, **kw) -> dict:
    return dict(uri=store["uri"], experiment="activations", parent_id=store["parent"], out_dir=out_dir,
                runs=store["runs"], **kw)


def _page(index: Path) -> str:
    """The page without its build time (the one line that differs between two builds of the same report)."""
    return re.sub(r"Built in [0-9.]+ s", "Built in", index.read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and f.name != "index.html"}


def test_worker_builds_the_report_this_process_builds(store, tmp_path, monkeypatch):
    """Same page (sections, tables, every embedded figure), same CSV and PNG files byte for byte; the worker's
    gallery, rendered while it waited (not taken from the cache this process filled), is the one the build draws."""
    here = build_report(**_kwargs(store, tmp_path / "here"))
    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "worker-cache"))
    w = worker.ReportWorker(store["uri"], activations=ACTS)
    try:
        there = worker.build(w, **_kwargs(store, tmp_path / "there"))
        assert w.alive()  # it answered, and waits for the next build
    finally:
        w.close()
    assert not w.alive()
    assert there == tmp_path / "there" / "index.html"
    page = _page(there)
    figures = re.findall(r'alt="([^"]+)"', page)
    assert {"curves_val_loss", "lr_sensitivity", "decision_boundaries", "activation_gallery"} <= set(figures)
    assert page == _page(here)
    files = _files(tmp_path / "there")
    assert files == _files(tmp_path / "here")
    assert len(pd.read_csv(tmp_path / "there" / "runs.csv")) == 8
    assert len(pd.read_csv(tmp_path / "there" / "summary.csv")) == 4


def test_error_of_a_build_arrives_as_that_error(store, tmp_path):
    w = worker.ReportWorker(store["uri"])
    try:
        with pytest.raises(ReportError, match="no_such_metric") as info:
            worker.build(w, **_kwargs(store, tmp_path / "r", metric="no_such_metric"))
        assert "check_metric" in str(info.value.__cause__)  # the worker's traceback comes with it
        assert w.alive()  # a failed build does not end the worker
    finally:
        w.close()


def test_a_dead_worker_leaves_the_build_to_this_process(store, tmp_path, caplog):
    w = worker.ReportWorker(store["uri"])
    w.proc.kill()
    w.proc.wait(10)
    with caplog.at_level("WARNING", logger="nnexp"):
        index = worker.build(w, **_kwargs(store, tmp_path / "r"))
    assert index.exists() and "decision_boundaries" in index.read_text()
    assert "building the report in this process" in caplog.text
    w.close()


class _DiesWhenUnpickled(str):
    """A title that ends the process that unpickles it: the worker dies after taking the build, before answering."""

    def __reduce__(self):
        return (os._exit, (9,))


def test_a_worker_that_dies_during_the_build_leaves_it_to_this_process(store, tmp_path, caplog):
    w = worker.ReportWorker(store["uri"])
    with caplog.at_level("WARNING", logger="nnexp"):
        index = worker.build(w, **_kwargs(store, tmp_path / "r", title=_DiesWhenUnpickled("worker test")))
    assert w.proc.wait(10) == 9
    assert "<title>worker test</title>" in index.read_text()
    assert "died while building" in caplog.text
    w.close()


def test_interrupted_wait_and_stop_end_the_worker(store, tmp_path):
    """Ctrl-C while the sweep's process waits for the report: :func:`worker.stop_worker` (the sweep's ``finally``)
    ends the worker and the renderers it forked."""
    w = worker.start_worker(store["uri"])
    assert worker.current_worker() is w

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            worker.build(w, **_kwargs(store, tmp_path / "r"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pid = w.proc.pid
    worker.stop_worker()
    assert worker.current_worker() is None and not w.alive()
    assert w.proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    time.sleep(0.2)
    assert not [p for p in _children_of(pid)]  # no renderer left behind


def _children_of(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d.name))
    return found


def test_sweep_report_is_built_and_no_worker_outlives_the_command(tmp_path):
    """A sweep with its report (built by the worker): exit 0, the page, and no process of the command left."""
    mark = f"nnexp-test-{os.getpid()}-{time.time_ns()}"
    proc = run_cli(["-m", "activation=relu,tanh", "dataset=xor", "epochs=5", "model.hidden_sizes=[4]",
                    "batch_size=null", "tracking.progress=false"], tmp_path, env={"NNEXP_TEST_MARK": mark})
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = next((tmp_path / "reports" / "activations").glob("*/index.html"))
    assert f"report: {index}" in proc.stdout
    assert "activation_gallery" in index.read_text()
    left = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and mark.encode() in (d / "environ").read_bytes():
                left.append(int(d.name))
        except OSError:
            continue
    assert left == []


@pytest.mark.parametrize("overrides, params, expected", [
    (["activation=relu,tanh", "optimizer.lr=0.1,1"], {}, ["relu", "tanh"]),
    (["optimizer.lr=0.1,1"], {"activation": "choice(elu, selu)"}, ["elu", "selu"]),
    (["optimizer.lr=0.1,1"], {}, ["sigmoid"]),  # not swept: the config's own
    (["activation=tanh"], {}, ["tanh"]),
    (["+activation.alpha=0.1,0.2"], {}, ["sigmoid"]),  # a key of the group, not the group
    (["activation=glob(*)"], {}, None),  # depends on the group's options: no gallery drawn ahead
])
def test_swept_values_are_the_activations_the_worker_draws_ahead(overrides, params, expected):
    from nnexp.callbacks import swept_values

    assert swept_values(overrides, params, "activation", "sigmoid") == expected


def test_run_tags_read_from_sqlite_equal_mlflows(store):
    """The worker reads the sweep parent's tags straight from the file: the tags MLflow's get_run returns."""
    from mlflow import MlflowClient

    from nnexp.report.load import run_tags

    child = store["runs"]["run_id"].iloc[0]
    tags = run_tags(store["uri"], [store["parent"], child, "0" * 32])
    c = MlflowClient(tracking_uri=store["uri"])
    assert tags[store["parent"]] == c.get_run(store["parent"]).data.tags
    assert tags[child] == c.get_run(child).data.tags
    assert tags["0" * 32] is None
    assert tags[store["parent"]]["nnexp.kind"] == "sweep"
