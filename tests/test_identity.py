"""One run identity (issue 14): the same configuration is the same everywhere.

Unit tests of :mod:`nnexp.identity` (canonical configuration, ids, varying keys, labels), then each numbered
input of the issue end to end in a fresh folder, asserting exact counts of runs, configurations and seeds in the
store, in the printed summary, in the report's ``summary.csv`` and in its ``runs.csv``. The sweeps run in this
process (``nnexp.__main__.main``) on a copy of an empty, already migrated store.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import migrated_store
from nnexp.callbacks import HIDDEN_NOTE
from nnexp import identity

QUIET = ["tracking.progress=false"]


# --- unit: canonical configuration and ids --------------------------------------------------------------------------
def _canon(compose, *overrides, n_classes=2):
    return identity.canonical(compose(list(overrides)), n_classes=n_classes)


def test_auto_is_resolved_to_what_is_trained(compose):
    c = _canon(compose, "dataset=moons", "activation=relu", "init=auto")
    assert c["init"] == "he_normal" and c["init.gain"] == pytest.approx(2 ** 0.5)
    assert c["model.loss"] == "binary_cross_entropy" and c["model.output"] == "sigmoid"
    assert identity.config_id(c) == identity.config_id(_canon(compose, "dataset=moons", "activation=relu",
                                                              "init=he_normal"))
    # tanh: auto is Xavier, so he_normal is another network
    assert identity.config_id(_canon(compose, "activation=tanh", "init=auto")) != \
        identity.config_id(_canon(compose, "activation=tanh", "init=he_normal"))
    # a default written out is the default
    assert identity.config_id(_canon(compose, "activation=leaky_relu")) == \
        identity.config_id(_canon(compose, "activation=leaky_relu", "activation.alpha=0.01"))
    assert identity.config_id(_canon(compose, "activation=relu", "init=he_normal")) == \
        identity.config_id(_canon(compose, "activation=relu", "init=he_normal", "init.gain=1.4142135623730951"))


def test_loss_auto_follows_the_classes(compose):
    two, ten = _canon(compose, n_classes=2), _canon(compose, n_classes=10)
    assert (two["model.loss"], ten["model.loss"]) == ("binary_cross_entropy", "cross_entropy")
    assert ten["model.output"] == "softmax" and identity.config_id(two) != identity.config_id(ten)


@pytest.mark.parametrize("override", [
    "epochs=61", "optimizer.lr=0.05", "activation=relu", "model.hidden_sizes=[32]", "model.hidden_sizes=[64,64]",
    "batch_size=null", "batch_size=32", "dataset=iris", "dataset.split_seed=3", "divergence_threshold=100",
    "init=he_normal", "init.gain=1.0", "optimizer=adam", "optimizer.weight_decay=0.001", "model.dtype=float32",
    "model.loss=mse", "dataset.val_fraction=0.3", "init.bias=constant", "optimizer.schedule=cosine"])
def test_every_identity_key_changes_the_config_id(compose, override):
    base = _canon(compose)
    assert identity.config_id(_canon(compose, override)) != identity.config_id(base)


@pytest.mark.parametrize("override", ["tracking.experiment=other", "tracking.log_every=5", "tracking.resume=false",
                                      "tracking.report=false", "tracking.uri=sqlite:////tmp/x.db", "blas_threads=2",
                                      "tracking.progress=false", "tracking.diagnostics=false", "study=mine",
                                      "replicas=3", "seed=7"])
def test_where_how_and_seed_leave_the_config_id(compose, override):
    assert identity.config_id(_canon(compose, override)) == identity.config_id(_canon(compose))


def test_seed_changes_the_run_key_only(compose):
    c0, c1 = compose(["seed=0"]), compose(["seed=1"])
    t0 = identity.tags(identity.canonical(c0, n_classes=10), c0.seed)
    t1 = identity.tags(identity.canonical(c1, n_classes=10), c1.seed)
    assert t0[identity.TAG_CONFIG_ID] == t1[identity.TAG_CONFIG_ID]
    assert t0[identity.TAG_RUN_KEY] != t1[identity.TAG_RUN_KEY]
    assert t0[identity.TAG_CONFIG] == t1[identity.TAG_CONFIG] and t0[identity.TAG_VERSION] == "1"
    assert all(re.fullmatch(r"[0-9a-f]{16}", t0[k]) for k in (identity.TAG_CONFIG_ID, identity.TAG_RUN_KEY))


def test_stored_json_gives_back_the_same_ids(compose):
    c = _canon(compose, "model.hidden_sizes=[4,4]", "batch_size=null")
    back = identity.from_json(identity.to_json(c))
    assert back == c and back["model.hidden_sizes"] == [4, 4] and back["batch_size"] is None
    assert identity.config_id(back) == identity.config_id(c)
    assert "seed" not in c and "tracking.experiment" not in c and "dataset.path" not in c


def test_file_data_is_identified_by_content_not_path(compose, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x,label\n1,0\n2,1\n")
    b.write_text("x,label\n1,0\n2,1\n")
    assert identity.file_digest(a) == identity.file_digest(b)
    b.write_text("x,label\n1,1\n2,0\n")
    assert identity.file_digest(a) != identity.file_digest(b)
    cfg = compose(["dataset=csv", f"dataset.path={a}", "dataset.target=label"])
    ca = identity.canonical(cfg, n_classes=2, digest=identity.file_digest(a))
    cb = identity.canonical(cfg, n_classes=2, digest=identity.file_digest(b))
    assert identity.config_id(ca) != identity.config_id(cb)


def test_legacy_runs_never_share_an_id_with_new_ones(compose):
    new = _canon(compose, "activation=relu")
    params = {"activation.name": "relu", "init.name": "auto", "init.resolved": "he_normal", "seed": "0",
              "model.hidden_sizes": "[64]", "batch_size": "null", "optimizer.lr": "0.1"}
    old = identity.canonical_from_params(params, {"dataset": "digits"})
    assert old["legacy"] is True and old["init"] == "he_normal" and old["model.hidden_sizes"] == [64]
    assert old["batch_size"] is None and old["dataset"] == "digits" and "seed" not in old
    assert identity.config_id(old) != identity.config_id(new)


def test_varying_keys_count_nulls_and_lists():
    rows = [{"activation": "relu", "batch_size": None, "model.hidden_sizes": [2], "optimizer.lr": 0.1, "seed": 0},
            {"activation": "relu", "batch_size": 32, "model.hidden_sizes": [2], "optimizer.lr": 0.1, "seed": 1},
            {"activation": "tanh", "batch_size": None, "model.hidden_sizes": [4, 4], "optimizer.lr": 0.1, "seed": 0}]
    assert identity.varying_keys(rows) == ["activation", "model.hidden_sizes", "batch_size"]
    frame = pd.DataFrame(rows)
    frame["model.hidden_sizes"] = frame["model.hidden_sizes"].map(tuple)
    frame.attrs["identity_keys"] = ["activation", "batch_size", "model.hidden_sizes", "optimizer.lr"]
    assert identity.varying_keys(frame) == ["activation", "model.hidden_sizes", "batch_size"]
    # a key missing from some runs is null there; one value everywhere does not vary
    assert identity.varying_keys([{"a.b": 1}, {}]) == ["a.b"]
    assert identity.varying_keys([{"x": [1, 2]}, {"x": (1, 2)}, {"x": [1.0, 2.0]}]) == []


def test_labels_and_run_names_carry_every_swept_value():
    row = {"activation": "relu", "optimizer.lr": 0.1, "model.hidden_sizes": [4, 4], "batch_size": None,
           "init": "he_normal", "dataset.noise": 0.25}
    keys = ["activation", "optimizer.lr", "model.hidden_sizes", "batch_size"]
    assert identity.describe(row, keys) == "relu, optimizer.lr=0.1, model.hidden_sizes=[4, 4], batch_size=null"
    assert identity.run_name(row, ["optimizer.lr", "model.hidden_sizes"], 2) == "relu-lr0.1-h[4,4]-s2"
    assert identity.run_name(row, ["init", "dataset.noise", "batch_size"], 0) == "relu-he_normal-bs=null-noise=0.25-s0"
    assert identity.run_name(row, [], 3) == "relu-s3"
    # a huge whole number (optimizer.lr=1e300 compares as an integer) reads as written, not as 301 digits
    assert identity.describe({"activation": "tanh", "optimizer.lr": 1e300}, ["activation", "optimizer.lr"]) == \
        "tanh, optimizer.lr=1e+300"
    assert identity.run_name({"activation": "tanh", "optimizer.lr": 1e300}, ["optimizer.lr"], 0) == "tanh-lr1e+300-s0"
    assert identity.format_value(2**32 - 1) == "4294967295" and identity.format_value(10**400) == str(10**400)


def test_swept_keys_come_from_the_sweep_not_a_list():
    from nnexp.callbacks import sweep_keys

    keys = sweep_keys(["activation=relu,tanh", "dataset=xor", "model.hidden_sizes=[2],[4,4]", "init=auto,he_normal",
                       "batch_size=null,32", "epochs=range(1,3)", "+dataset.noise=0.1,0.2", "tracking.report=false"],
                      {"seed": "0,1,2"})
    assert keys == ["activation", "model.hidden_sizes", "init", "batch_size", "epochs", "dataset.noise"]
    assert identity.canonical_key("activation.name") == "activation"
    assert identity.canonical_key("hydra/launcher") is None and identity.canonical_key("tracking.uri") is None


# --- end to end ------------------------------------------------------------------------------------------------------
def run_main(monkeypatch, cwd: Path, argv: list[str]) -> int:
    from nnexp.__main__ import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    return main(argv)


def children(cwd: Path, experiment: str = "activations") -> list:
    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=5000) if exp else []
    return [r for r in runs if r.data.tags.get("nnexp.kind") != "sweep"]


def store_counts(runs) -> dict:
    """``{config_id: number of distinct seeds}`` of the FINISHED runs in the store."""
    seeds: dict[str, set] = {}
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get("nnexp.outcome") == "finished":
            seeds.setdefault(r.data.tags["nnexp.config_id"], set()).add(r.data.params["seed"])
    return {k: len(v) for k, v in seeds.items()}


def printed_table(out: str) -> tuple[str, list[str], list[dict]]:
    """The printed summary: its first line, the label columns and one dict per row (runs, seeds, diverged)."""
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("sweep finished:"))
    head = lines[i]
    table = []
    for line in lines[i + 1:]:
        if line.startswith(("report:", "runs:", "nnexp", HIDDEN_NOTE)):
            break
        table.append(line)
    if table and table[0].startswith("no run finished"):
        table = table[1:]
    names = re.split(r"\s{2,}", table[0].strip())
    labels = table[1].split()
    rows = []
    for line in table[2:]:
        tokens = line.split()[-len(names):]
        rows.append({"runs": int(tokens[0]), "seeds": int(tokens[1]), "diverged": int(tokens[2])})
    return head, labels, rows


def report_dir(cwd: Path) -> Path:
    (out,) = [p for p in (cwd / "reports" / "activations").iterdir() if p.is_dir()]
    return out


def sweep(monkeypatch, capsys, cwd, args, code=0):
    assert run_main(monkeypatch, cwd, ["-m", *args, *QUIET]) == code
    return capsys.readouterr()


@pytest.fixture
def fresh(tmp_path, tmp_path_factory, monkeypatch):
    """An empty migrated store in ``tmp_path``; jobs write their metrics themselves (no writer process to start)."""
    import nnexp.tracking

    migrated_store(tmp_path_factory, tmp_path)
    monkeypatch.setattr(nnexp.tracking, "start_metric_writer", lambda uri, **kw: None)
    return tmp_path


def test_input1_list_values_are_three_configurations(fresh, monkeypatch, capsys):
    """P09: ``model.hidden_sizes=[2],[16],[4,4]`` x 2 seeds: 3 configurations x 2 seeds everywhere, exit 0."""
    cap = sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=30", "activation=tanh",
                                              "model.hidden_sizes=[2],[16],[4,4]", "seed=0,1"])
    runs = children(fresh)
    assert len(runs) == 6 and sorted(store_counts(runs).values()) == [2, 2, 2]
    assert sorted(r.info.run_name for r in runs) == sorted(f"tanh-h{h}-s{s}" for h in ("[2]", "[16]", "[4,4]")
                                                           for s in (0, 1))
    head, labels, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 6 finished, 0 diverged, 0 failed")
    assert labels == ["activation", "model.hidden_sizes"] and [r["seeds"] for r in rows] == [2, 2, 2]
    out = report_dir(fresh)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["model.hidden_sizes"]) == ["[16]", "[2]", "[4, 4]"] and list(summary["seeds"]) == [2, 2, 2]
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 6 and table["config_id"].nunique() == 3
    assert (table.groupby("config_id")["seed"].nunique() == 2).all()
    assert "(tanh, model.hidden_sizes=[4, 4], seed 1)" in cap.out
    # the report rebuilt from the command line agrees
    from nnexp.report.__main__ import main as report_main

    monkeypatch.chdir(fresh)
    assert report_main(["--experiment", "activations", "--sweep", "latest", "--out", str(fresh / "again"),
                        "--no-boundaries"]) == 0
    assert list(pd.read_csv(fresh / "again" / "summary.csv")["seeds"]) == [2, 2, 2]


def test_input2_null_is_a_value(fresh, monkeypatch, capsys):
    """P10: ``batch_size=null,32`` x relu, tanh x 2 seeds: 4 configurations x 2 seeds, batch_size in runs.csv."""
    cap = sweep(monkeypatch, capsys, fresh, ["dataset=moons", "epochs=20", "activation=relu,tanh",
                                              "batch_size=null,32", "seed=0,1"])
    runs = children(fresh)
    assert len(runs) == 8 and sorted(store_counts(runs).values()) == [2, 2, 2, 2]
    _, labels, rows = printed_table(cap.out)
    assert labels[:2] == ["activation", "batch_size"] and [r["seeds"] for r in rows] == [2, 2, 2, 2]
    out = report_dir(fresh)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and list(summary["seeds"]) == [2, 2, 2, 2]
    assert summary["batch_size"].isna().sum() == 2
    # written as the command line spelled it: 32, not 32.0 (the column holds a null too)
    assert sorted(pd.read_csv(out / "summary.csv", dtype=str)["batch_size"].dropna()) == ["32", "32"]
    page = (out / "index.html").read_text()
    assert "&lt;NA&gt;" not in page and "<NA>" not in page  # the CSV's integer column never reaches the page
    table = pd.read_csv(out / "runs.csv")
    assert "batch_size" in table and table["batch_size"].isna().sum() == 4 and table["config_id"].nunique() == 4


def test_input3_auto_and_its_pick_are_one_configuration(fresh, monkeypatch, capsys):
    """P11: ``init=auto,he_normal`` for relu is one network: 1 configuration, 2 seeds, the repeat a duplicate."""
    cap = sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=30", "activation=relu", "init=auto,he_normal",
                                              "seed=0,1"])
    runs = children(fresh)
    assert len(runs) == 2 and store_counts(runs) == {runs[0].data.tags["nnexp.config_id"]: 2}
    head, _, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 2 finished, 0 diverged, 0 failed, 0 reused from earlier sweeps, "
                           "2 duplicate(s)")
    assert rows == [{"runs": 2, "seeds": 2, "diverged": 0}]
    out = report_dir(fresh)
    assert list(pd.read_csv(out / "summary.csv")["seeds"]) == [2]
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 2 and table["repeated_by"].str.contains("init=he_normal").all()
    assert "2 duplicate jobs" in (out / "index.html").read_text()


def test_duplicate_jobs_are_counted_alike_in_the_summary_and_report_whatever_the_store_holds(fresh, monkeypatch,
                                                                                              capsys):
    """``init=auto,xavier_uniform`` for tanh spells each seed twice: 6 jobs, 3 duplicates, whether the runs are
    trained now, partly reused (seed 0 from an earlier sweep) or all reused (the same command again). The summary
    said 2, then 0 (duplicates of reused runs went uncounted), and a rebuilt report said 2 or 6 (it counted every
    sweep's repeats); new-user test."""
    from nnexp.report.__main__ import main as report_main

    sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=5", "activation=tanh", "seed=0", "tracking.report=false"])
    args = ["dataset=xor", "epochs=5", "activation=tanh", "init=auto,xavier_uniform", "seed=0,1,2"]
    for reused in (1, 3):
        head, _, rows = printed_table(sweep(monkeypatch, capsys, fresh, args).out)
        assert head == (f"sweep finished: 3 finished, 0 diverged, 0 failed, {reused} reused from earlier sweeps, "
                        "3 duplicate(s) of another job's configuration and seed (counted once)")
        assert rows == [{"runs": 3, "seeds": 3, "diverged": 0}]
        latest = max((fresh / "reports" / "activations").glob("*/index.html"), key=lambda p: p.stat().st_mtime)
        assert "<b>3 duplicate jobs</b> of the sweep repeated" in latest.read_text()
    assert report_main(["--out", str(fresh / "whole")]) == 0  # the experiment: both sweeps' duplicates
    assert "<b>6 duplicate jobs</b> of the sweeps repeated" in (fresh / "whole" / "index.html").read_text()


def test_input3_without_resume_the_copies_are_dropped_as_duplicates(fresh, monkeypatch, capsys):
    cap = sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=10", "activation=relu", "init=auto,he_normal",
                                              "seed=0,1", "tracking.resume=false"])
    assert len(children(fresh)) == 4
    head, _, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 2 finished") and "2 duplicate(s)" in head and rows[0]["seeds"] == 2
    out = report_dir(fresh)
    assert list(pd.read_csv(out / "summary.csv")["seeds"]) == [2] and len(pd.read_csv(out / "duplicates.csv")) == 2


def test_input4_names_and_lines_carry_every_swept_value(fresh, monkeypatch, capsys):
    """Architectures x activations x learning rates: every run name and console line is distinct."""
    cap = sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=5", "model.hidden_sizes=[4,4],[8]",
                                              "activation=relu,tanh", "optimizer.lr=0.1,0.5", "seed=2",
                                              "tracking.report=false"])
    runs = children(fresh)
    names = sorted(r.info.run_name for r in runs)
    assert len(runs) == 8 and len(set(names)) == 8
    assert "relu-lr0.5-h[4,4]-s2" in names and "tanh-lr0.1-h[8]-s2" in names
    lines = [line for line in cap.out.splitlines() if line.startswith("run ")]
    labels = {re.search(r"\((.*)\):", line).group(1) for line in lines}
    assert len(lines) == 8 and len(labels) == 8
    assert "relu, optimizer.lr=0.5, model.hidden_sizes=[4, 4], seed 2" in labels
    _, keys, rows = printed_table(cap.out)
    assert keys[:3] == ["activation", "optimizer.lr", "model.hidden_sizes"] and len(rows) == 8


def _csv(path: Path, flip: bool = False) -> None:
    lines = ["x1,x2,label"]
    for i in range(40):
        label = (i % 2) ^ (flip and i < 10)
        lines.append(f"{i % 7 - 3 + label},{(i * 3) % 5 - 2},{label}")
    path.write_text("\n".join(lines) + "\n")


def test_input6_edited_data_trains_again(fresh, monkeypatch, capsys):
    """P16: a CSV study, the file's labels edited, the same command: trained again; unedited: reused."""
    data = fresh / "data.csv"
    _csv(data)
    args = ["dataset=csv", "dataset.path=data.csv", "dataset.target=label", "activation=relu,tanh", "epochs=5",
            "seed=0", "tracking.report=false"]
    sweep(monkeypatch, capsys, fresh, args)
    _csv(data, flip=True)
    head, _, _ = printed_table(sweep(monkeypatch, capsys, fresh, args).out)
    assert head.startswith("sweep finished: 2 finished, 0 diverged, 0 failed, 0 reused")
    head, _, _ = printed_table(sweep(monkeypatch, capsys, fresh, args).out)
    assert head.startswith("sweep finished: 2 finished, 0 diverged, 0 failed, 2 reused")  # both reused
    runs = children(fresh)
    assert len(runs) == 4 and len(store_counts(runs)) == 4
    digests = {json.loads(r.data.tags["nnexp.config"])["dataset.digest"] for r in runs}
    assert digests == {identity.file_digest(data), *digests} and len(digests) == 2


def test_input7_deleted_experiment_is_never_revived(fresh, monkeypatch, capsys):
    """P13: a deleted experiment ends the same command with one line (exit 2), nothing created or restored."""
    args = ["dataset=xor", "epochs=5", "activation=relu,tanh", "seed=0", "tracking.report=false"]
    sweep(monkeypatch, capsys, fresh, [*args, "hydra.sweep.dir=s1"])
    c = MlflowClient(tracking_uri=f"sqlite:///{fresh / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations")
    c.delete_experiment(exp.experiment_id)
    cap = sweep(monkeypatch, capsys, fresh, [*args, "hydra.sweep.dir=s2"], code=2)
    assert cap.err.strip().splitlines() == [
        f"nnexp: error: experiment 'activations' was deleted in MLflow; restore it (mlflow experiments restore "
        f"--experiment-id {exp.experiment_id}) or choose another with tracking.experiment=NAME"]
    assert not (fresh / "s2").exists()
    assert run_main(monkeypatch, fresh, ["dataset=xor", "epochs=5", *QUIET]) == 2  # a single run too
    assert c.get_experiment(exp.experiment_id).lifecycle_stage == "deleted"
    assert len(c.search_experiments()) == 1  # no experiment created
    from nnexp.report.load import ReportError, load_runs

    with pytest.raises(ReportError, match="experiment 'activations' was deleted in MLflow; restore it .* or choose "
                                          "another with --experiment NAME$"):
        load_runs(f"sqlite:///{fresh / 'mlflow.db'}", "activations")  # the report and nnexp.load_runs too
    # another experiment trains from scratch; the deleted runs are not reused there either
    head, _, _ = printed_table(sweep(monkeypatch, capsys, fresh, [*args, "tracking.experiment=fresh"]).out)
    assert head.startswith("sweep finished: 2 finished, 0 diverged, 0 failed, 0 reused")
    # restored on purpose: its runs are reused; a deleted run is not, it trains again
    c.restore_experiment(exp.experiment_id)
    deleted = children(fresh)[0]
    c.delete_run(deleted.info.run_id)
    head, _, _ = printed_table(sweep(monkeypatch, capsys, fresh, [*args, "hydra.sweep.dir=s3"]).out)
    assert head.startswith("sweep finished: 2 finished, 0 diverged, 0 failed, 1 reused")
    assert c.get_run(deleted.info.run_id).info.lifecycle_stage == "deleted"
    assert len(children(fresh)) == 2


def test_input8_every_run_diverged(fresh, monkeypatch, capsys):
    """P14: the summary keeps the row (0 finished, 1 diverged), a report says so, exit status 3."""
    cap = sweep(monkeypatch, capsys, fresh, ["optimizer.lr=50", "activation=relu", "dataset=moons", "epochs=100",
                                              "seed=0"], code=3)
    head, _, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 0 finished, 1 diverged, 0 failed")
    assert "no run finished: the sweep has no usable result (exit status 3)" in cap.out
    assert rows == [{"runs": 1, "seeds": 0, "diverged": 1}]
    out = report_dir(fresh)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 1 and list(summary["seeds"]) == [0] and list(summary["diverged"]) == [1]
    page = (out / "index.html").read_text()
    assert "No finished run" in page
    assert "highlighted: none, no configuration has a finished run" in page and "the best configuration" not in page
    assert "callback" not in cap.err.lower()
    (run,) = children(fresh)
    assert run.info.status == "FINISHED" and run.data.tags["nnexp.outcome"] == "diverged"


def test_every_kind_of_key_agrees_everywhere(fresh, monkeypatch, capsys):
    """One sweep over a float that may be null (init.gain), a list, a choice with ``auto`` and an int dataset
    option, 2 seeds as replicas: the printed summary, summary.csv and runs.csv count the same configurations and
    seeds as the store."""
    cap = sweep(monkeypatch, capsys, fresh, [
        "dataset=moons", "epochs=5", "activation=tanh", "init=auto,xavier_uniform", "init.gain=null,1.0",
        "model.hidden_sizes=[2],[3,2]", "dataset.n_samples=40,60", "seed=0", "replicas=2"])
    runs = children(fresh)
    store = store_counts(runs)
    # init=auto is xavier_uniform for tanh: 8 configurations, each trained once with seeds 0 and 1
    assert len(runs) == 16 and len(store) == 8 and set(store.values()) == {2}
    head, labels, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 16 finished, 0 diverged, 0 failed, 0 reused from earlier sweeps, "
                           "16 duplicate(s)")
    assert labels == ["activation", "model.hidden_sizes", "dataset.n_samples", "init.gain"]
    assert len(rows) == 8 and {r["seeds"] for r in rows} == {2}
    out = report_dir(fresh)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 8 and set(summary["seeds"]) == {2}
    assert {"model.hidden_sizes", "dataset.n_samples", "init.gain"} <= set(summary.columns)
    # init.gain=null is the gain used, tanh's 5/3
    assert sorted(summary["init.gain"].round(4)) == [1.0] * 4 + [1.6667] * 4
    assert set(summary["model.hidden_sizes"]) == {"[2]", "[3, 2]"}
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 16 and table["config_id"].nunique() == 8
    assert Counter(table.groupby("config_id")["seed"].nunique()) == Counter({2: 8})


def test_legacy_runs_are_read_flagged_and_kept_apart(fresh, compose):
    """Runs from before the identity tags: read from their params, flagged ``legacy``, never merged with new runs."""
    from mlflow.entities import Metric, Param

    from nnexp import tracking
    from nnexp.report import swept_keys
    from nnexp.report.load import drop_duplicates, load_runs

    uri = f"sqlite:///{fresh / 'mlflow.db'}"
    c, exp_id = tracking.prepare_store(uri, "mix")
    cfg = compose(["dataset=moons", "activation=relu", "model.hidden_sizes=[4,4]", "batch_size=null"])
    canon = identity.canonical(cfg, n_classes=2)
    params = {"activation.name": "relu", "init.name": "auto", "init.resolved": "he_normal", "dataset.name": "moons",
              "model.hidden_sizes": "[4, 4]", "batch_size": "null", "optimizer.lr": "0.1"}

    def run(seed, tags):
        rid = c.create_run(exp_id, run_name=f"r{seed}", tags={"nnexp.outcome": "finished", **tags}).info.run_id
        c.log_batch(rid, metrics=[Metric("val_loss", 0.1 * seed, 0, 1)],
                    params=[Param(k, v) for k, v in {**params, "seed": str(seed)}.items()])
        c.set_terminated(rid, "FINISHED")

    for seed in (0, 1):
        run(seed, identity.tags(canon, seed))
        run(seed, {"nnexp.config_hash": f"old{seed}"})  # the same training, recorded by an earlier version
    run(1, {"nnexp.config_hash": "old1"})  # a legacy copy of a legacy run
    runs, dropped = drop_duplicates(load_runs(uri, "mix"))
    assert len(runs) == 4 and len(dropped) == 1 and runs["legacy"].sum() == 2
    assert runs.groupby("config_id")["seed"].nunique().to_dict() == {
        identity.config_id(canon): 2, runs.loc[runs["legacy"], "config_id"].iloc[0]: 2}
    legacy = runs[runs["legacy"]].iloc[0]
    assert legacy["init"] == "he_normal" and legacy["model.hidden_sizes"] == (4, 4) and legacy["batch_size"] is None
    keys, linked = swept_keys(runs)
    assert "legacy" in keys + linked and runs.groupby(keys + linked, dropna=False).ngroups == 2


@pytest.mark.slow
def test_input3_side_by_side_jobs_train_one_configuration_once(fresh, monkeypatch, capsys):
    """P11 under a parallel launcher: the jobs of ``init=auto`` and ``init=he_normal`` run at the same time, so
    neither finds the other's run finished; the first to claim the run key trains, the other is the duplicate."""
    cap = sweep(monkeypatch, capsys, fresh, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "dataset=xor",
                                              "epochs=30", "activation=relu", "init=auto,he_normal", "seed=0,1"])
    runs = children(fresh)
    assert len(runs) == 2 and store_counts(runs) == {runs[0].data.tags["nnexp.config_id"]: 2}
    assert sum(any(k.startswith("nnexp.repeat.") for k in r.data.tags) for r in runs) == 2
    head, _, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 2 finished") and "2 duplicate(s)" in head
    assert rows == [{"runs": 2, "seeds": 2, "diverged": 0}]


def test_a_filter_selects_among_the_runs_a_sweep_reused(fresh, monkeypatch, capsys):
    """A sweep that reused every run (resume) has no children of its own: a filter still selects among its runs."""
    from nnexp.report.load import load_runs

    args = ["dataset=xor", "epochs=3", "activation=relu,tanh", "seed=0,1", "tracking.report=false"]
    sweep(monkeypatch, capsys, fresh, args)
    sweep(monkeypatch, capsys, fresh, args)
    c = MlflowClient(tracking_uri=f"sqlite:///{fresh / 'mlflow.db'}")
    parents = [r for r in c.search_runs([c.get_experiment_by_name("activations").experiment_id],
                                        order_by=["attributes.start_time DESC"])
               if r.data.tags.get("nnexp.kind") == "sweep"]
    runs = load_runs(f"sqlite:///{fresh / 'mlflow.db'}", "activations", parent_id=parents[0].info.run_id,
                     filter_string="tags.activation = 'relu'")
    assert len(parents) == 2 and len(runs) == 2 and runs["reused"].all() and set(runs["activation"]) == {"relu"}


def test_one_seed_claims_no_group_and_no_interval(fresh, monkeypatch, capsys):
    """One seed per configuration: no test is possible, so the report names no 'indistinguishable' group and the
    summary has no zero-width interval."""
    sweep(monkeypatch, capsys, fresh, ["dataset=xor", "epochs=5", "activation=relu", "optimizer.lr=0.1,0.5,1.0",
                                        "seed=0"])
    out = report_dir(fresh)
    text = (out / "index.html").read_text()
    assert "No configuration can be told apart from another: a test needs at least 2 finished seeds" in text
    assert "cannot be told apart from the best</b>" not in text
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 3 and summary["val_loss ci_lo"].isna().all() and summary["val_loss ci_hi"].isna().all()


def test_printed_labels_are_the_fewest_keys_that_tell_configurations_apart():
    """The printed summary's label columns: activation and the swept keys, plus a varying key only when it splits
    rows they leave together; a key that changes only along with them (Adam's betas, the init's gain) is named on
    the last line instead. Grouping by the shown keys gives one group per configuration."""
    from nnexp.callbacks import label_keys

    rows = []
    for act, gain in (("relu", 2 ** 0.5), ("tanh", 5 / 3)):
        for opt, lr, beta1 in (("sgd", 0.1, None), ("adam", 0.001, 0.9)):
            for init in ("he_normal", "xavier_normal"):
                rows.append({"activation": act, "optimizer": opt, "optimizer.lr": lr, "optimizer.beta1": beta1,
                             "init": init, "init.gain": gain, "epochs": 30})
    keys = ["activation", "optimizer", "optimizer.lr", "optimizer.beta1", "init", "init.gain", "epochs"]

    def frame(rows):  # as load_runs returns it: the canonical columns named in attrs
        runs = pd.DataFrame(rows)
        runs.attrs["identity_keys"] = keys
        return runs

    runs = frame(rows)
    shown, hidden = label_keys(runs, ["optimizer", "init"])
    # in the run lines' order (optimizer.lr, init, optimizer), the swept keys and activation shown
    assert shown == ["activation", "init", "optimizer"]
    assert hidden == ["optimizer.lr", "optimizer.beta1", "init.gain"]  # linked to the activation last
    assert runs.groupby(shown).ngroups == len(runs) == 8
    # the learning rate splits two configurations that share optimizer, init and activation: it is shown
    more = frame([*rows, dict(rows[0], **{"optimizer.lr": 0.5})])
    shown, hidden = label_keys(more, ["optimizer", "init"])
    assert shown == ["activation", "optimizer.lr", "init", "optimizer"]
    assert more.groupby(shown).ngroups == len(more) == 9
    # the keys the command line swept are shown even when another key would tell the rows apart first
    assert label_keys(runs, ["init", "optimizer.lr"])[0] == ["activation", "optimizer.lr", "init"]
    assert label_keys(runs, [])[0] == ["activation", "optimizer.lr", "init"]


def test_one_activation_all_diverged_the_other_finished_is_said_as_it_is(fresh, monkeypatch, capsys):
    """relu diverges in both seeds at lr=50, sigmoid finishes both: sigmoid is 'the only activation with a finished
    run', not 'the only activation in this selection'; no sentence calls the ranking one seed's; the Setup lists
    no bookkeeping column (legacy, repeats) and the loss once (found by the new-user test)."""
    cap = sweep(monkeypatch, capsys, fresh, ["optimizer.lr=50", "activation=relu,sigmoid", "dataset=moons",
                                              "epochs=50", "seed=0,1"], code=0)
    head, _, rows = printed_table(cap.out)
    assert head.startswith("sweep finished: 2 finished, 2 diverged, 0 failed")
    lines = [ln for ln in cap.out.splitlines() if ln.startswith("run ")]  # each run its share of its job's time
    assert len(lines) == 4 and all(re.search(r", (\d+\.\d\d) s of training \(2 runs trained together in "
                                             r"(\d+\.\d\d) s\)$", ln) for ln in lines), lines
    page = (report_dir(fresh) / "index.html").read_text()
    assert "the only activation with a finished run (relu: none finished)" in page
    assert "the only activation in this selection" not in page and "one seed's" not in page
    assert "has finished runs; the other configuration has none, so no configuration is compared" in page
    # no test between activations was made: the note qualifies none (it spoke of p-values and Mann–Whitney)
    assert "Only one activation has finished runs with a final val_loss, so no activations are compared" in page
    assert "Mann–Whitney test cannot go below" not in page and "p-values near 0.05" not in page
    setup = page.split("Held fixed in every run")[1].split("</table>")[0]
    assert ">legacy<" not in setup and ">repeats<" not in setup and ">loss<" not in setup and ">model.loss<" in setup
    data = page.split(">Data<")[1].split("</table>")[0]  # the dataset named once (the tag is the param)
    assert "<td>dataset.name</td>" in data and "<td>dataset</td>" not in data


def test_a_sweep_whose_every_run_was_killed_still_gets_its_report(fresh, monkeypatch, capsys):
    """Killed in its first job (kill -9, then marked by a later command) or all failed: no run has a final metric.
    The report the interrupted command points to is written, says nothing finished and lists every run with why
    (it raised KeyError: 'val_loss mean'; found by the new-user test)."""
    from nnexp.report import build_report

    sweep(monkeypatch, capsys, fresh, ["activation=tanh,relu", "dataset=xor", "epochs=3", "seed=0,1"], code=0)
    c = MlflowClient(tracking_uri=f"sqlite:///{fresh / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations").experiment_id
    runs = c.search_runs([exp])
    parent = next(r.info.run_id for r in runs if r.data.tags.get("nnexp.kind") == "sweep")
    import sqlite3

    con = sqlite3.connect(fresh / "mlflow.db")
    with con:  # as if each had been killed before its first metric (MLflow's client deletes no metric)
        con.execute("DELETE FROM metrics")
        con.execute("DELETE FROM latest_metrics")
        con.execute("UPDATE runs SET status = 'KILLED' WHERE run_uuid != ?", (parent,))
        con.execute("DELETE FROM tags WHERE key = 'nnexp.outcome' AND run_uuid != ?", (parent,))
    con.close()
    index = build_report(f"sqlite:///{fresh / 'mlflow.db'}", "activations", parent_id=parent, out_dir=fresh / "r")
    page = index.read_text()
    assert "4 runs (4 killed)" in page and "No finished run: nothing to compare" in page
    bad = page.split("<h2>Diverged and failed runs")[1].split("</section>")[0]
    assert bad.count("<td>killed</td>") == 4
    assert pd.read_csv(fresh / "r" / "summary.csv").empty


def test_comparing_a_sweep_with_its_resumed_rerun_counts_each_run_once(fresh, monkeypatch, capsys):
    """Sweep B reused every run of sweep A (resume): a report of both has A's 4 runs once each, and calls none a
    duplicate (it said '4 duplicate runs dropped', every one with run_id == kept_run_id; new-user test)."""
    from nnexp.report import build_report

    args = ["activation=tanh,relu", "dataset=xor", "epochs=3", "seed=0,1"]
    sweep(monkeypatch, capsys, fresh, args, code=0)
    assert "0 reused" not in sweep(monkeypatch, capsys, fresh, args, code=0).out  # B trains nothing: 4 reused
    c = MlflowClient(tracking_uri=f"sqlite:///{fresh / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations").experiment_id
    parents = [r.info.run_id for r in c.search_runs([exp], "tags.`nnexp.kind` = 'sweep'", order_by=["start_time"])]
    assert len(parents) == 2
    index = build_report(f"sqlite:///{fresh / 'mlflow.db'}", "activations", parent_id=parents, out_dir=fresh / "r")
    page = index.read_text()
    runs = pd.read_csv(fresh / "r" / "runs.csv")
    assert len(runs) == runs["run_id"].nunique() == 4 and "4 runs (4 finished)" in page
    assert "duplicate" not in page.split("<h2>")[1] and not (fresh / "r" / "duplicates.csv").exists()
