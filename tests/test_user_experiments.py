"""Your own studies outside the package (case P18): ./experiments/, --config-dir and hydra.searchpath."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import run_cli

QUESTION = "Does relu separate the moons better than tanh with 8 hidden units?"

STUDY = f"""# @package _global_
# {QUESTION}
#
# Run:  python -m nnexp -m experiment=mine
defaults:
  - override /dataset: moons

study: mine
epochs: 7
model:
  hidden_sizes: [8]
tracking:
  experiment: mine
"""

PARALLEL = """# @package _global_
# Two workers: do the jobs of this study run side by side?
defaults:
  - override /dataset: moons
  - override /hydra/launcher: joblib

study: par
epochs: 500
batch_size: 16
model:
  hidden_sizes: [16]
tracking:
  experiment: par
  report: false
  diagnostics: false
hydra:
  launcher:
    n_jobs: 2
  sweeper:
    params:
      activation: relu,tanh
      seed: 0,1
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("method", ["launch-folder", "config-dir", "config-dir-between", "searchpath"])
def test_a_study_outside_the_package_runs(tmp_path, method):
    launch = tmp_path / "launch folder"  # a space in the path, as users have
    launch.mkdir()
    if method == "launch-folder":  # the documented default: ./experiments/<name>.yaml
        _write(launch / "experiments" / "mine.yaml", STUDY)
        extra = []
    else:  # Hydra's layout: <dir>/experiment/<name>.yaml
        conf = _write(tmp_path / "my conf" / "experiment" / "mine.yaml", STUDY).parent.parent
        extra = ["--config-dir", str(conf)] if method.startswith("config-dir") else [f"hydra.searchpath=[file://{conf}]"]
        if method == "config-dir-between":  # overrides on both sides of the option (Hydra's parser refused them)
            extra.append("model.hidden_sizes=[8]")
    proc = run_cli(["experiment=mine", *extra], launch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = MlflowClient(f"sqlite:///{launch / 'mlflow.db'}")
    exp = c.get_experiment_by_name("mine")
    [run] = c.search_runs([exp.experiment_id])
    assert run.data.params["epochs"] == "7" and run.data.params["dataset.name"] == "moons"
    assert run.data.metrics["epochs_run"] == 7
    assert run.data.tags["nnexp.study"] == "mine"
    assert exp.tags["mlflow.note.content"] == QUESTION  # the study's question is the experiment's description


@pytest.mark.parametrize("argv, flags_first", [
    (["-m", "a=1", "--config-dir", "d", "b=2"], ["--config-dir", "d", "-m", "a=1", "b=2"]),
    (["a=1", "--config-dir=d", "-cn", "c", "b=2"], ["--config-dir=d", "-cn", "c", "a=1", "b=2"]),
    (["a=1", "--cfg", "job", "b=2"], ["a=1", "--cfg", "job", "b=2"]),  # only options that take a value move
    (["a=1", "--config-dir"], ["a=1", "--config-dir"]),  # a missing value is left for Hydra's parser to name
])
def test_hydra_value_options_go_before_the_overrides(argv, flags_first):
    from nnexp.__main__ import _flags_first

    assert _flags_first(argv) == flags_first


def test_a_missing_config_dir_is_one_line(tmp_path):
    proc = run_cli(["experiment=mine", "--config-dir", str(tmp_path / "nope")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"nnexp: error: --config-dir {tmp_path / 'nope'}: no such folder; give a folder " \
                                  "that holds experiment/<name>.yaml"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("body, line", [
    ("dataset: xor\n",  # a group choice written as a value, as on the command line
     "experiment/bad: 'dataset: xor' sets the config group dataset as a value; choose it in the file's defaults list "
     "('- override /dataset: xor') or set its keys one by one"),
    ("model: 3\n",
     "experiment/bad: 'model: 3' gives the section model a single value; set its keys one by one "
     "(model.<key>: value; python -m nnexp --cfg job lists them)"),
    ("epochs: [5\n",  # not YAML: the file, line and column, and the parser's words
     "{file}, line 3, column 1: not valid YAML (while parsing a flow sequence; expected ',' or ']', "
     "but got '<stream end>')"),
])
def test_a_mistake_in_a_study_file_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, body, line):
    from nnexp.__main__ import main

    study = _write(tmp_path / "conf" / "experiment" / "bad.yaml", "# @package _global_\n" + body)
    monkeypatch.chdir(tmp_path)
    assert main(["-m", "experiment=bad", "--config-dir", str(tmp_path / "conf")]) == 2
    assert capsys.readouterr().err.strip() == "nnexp: error: " + line.format(file=study)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no store, no outputs


@pytest.mark.slow  # two workers import MLflow and Hydra, then train
def test_a_launcher_chosen_in_the_study_file_runs_jobs_in_parallel(tmp_path):
    conf = _write(tmp_path / "conf" / "experiment" / "par.yaml", PARALLEL).parent.parent
    proc = run_cli(["-m", "experiment=par", "--config-dir", str(conf)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("par").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    workers = {r.data.tags["nnexp.pid"] for r in children}
    assert len(workers) == 2 and parent.data.tags["nnexp.pid"] not in workers  # two joblib workers, not the launcher
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # some jobs overlapped in time
