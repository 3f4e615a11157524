"""The per-activation Optuna search (nnexp.search) and hyperparameter importance (nnexp.report.importance).

Searches run as real commands on moons with few epochs; the store and the Optuna study are then read back and
counted: runs per trial, trial states, nothing RUNNING, and after a SIGKILL a rerun that resumes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnexp.report import importance as imp

# ------------------------------------------------------------------------------------------------ importance


def _synthetic(n: int, driver: str, seed: int = 0) -> pd.DataFrame:
    """Runs whose val_loss depends on ``driver`` alone (plus small noise); the other keys are drawn at random."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({
        "activation": rng.choice(["sigmoid", "tanh", "relu"], n),
        "optimizer.lr": 10 ** rng.uniform(-4, 0, n),
        "model.hidden_sizes": [[(4,), (16,), (4, 4)][i] for i in rng.integers(0, 3, n)],
        "batch_size": rng.choice([16, 32, None], n),
    })
    noise = 0.01 * rng.normal(size=n)
    if driver == "optimizer.lr":
        d["val_loss"] = (np.log10(d["optimizer.lr"]) + 1.5) ** 2 + noise
    else:  # a categorical key drives it
        d["val_loss"] = d["activation"].map({"sigmoid": 1.0, "tanh": 0.6, "relu": 0.2}) + noise
    return d


KEYS = ["activation", "optimizer.lr", "model.hidden_sizes", "batch_size"]


@pytest.mark.parametrize("method", ["ped_anova", "fanova"])
@pytest.mark.parametrize("driver", ["optimizer.lr", "activation"])
def test_importance_ranks_the_key_that_drives_the_metric_first(driver, method):
    scores = imp.importance(_synthetic(120, driver), KEYS, "val_loss", higher=False, method=method)
    assert list(scores.index)[0] == driver
    assert set(scores.index) == set(KEYS)
    assert scores.sum() == pytest.approx(1.0)
    assert scores[driver] > 0.5


def test_importance_with_higher_is_better_ranks_the_same_key():
    d = _synthetic(120, "optimizer.lr")
    d["val_accuracy"] = -d["val_loss"]
    assert imp.importance(d, KEYS, "val_accuracy", higher=True).index[0] == "optimizer.lr"


def test_runs_become_trials_with_log_and_categorical_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    d = _synthetic(30, "optimizer.lr")
    d.loc[0, "val_loss"] = np.nan  # a diverged run: no trial
    study = imp.runs_to_study(d, KEYS, "val_loss")
    assert len(study.trials) == 29
    dist = study.trials[0].distributions
    assert dist["optimizer.lr"] == FloatDistribution(d["optimizer.lr"].iloc[1:].min(), d["optimizer.lr"].iloc[1:].max(),
                                                     log=True)
    assert isinstance(dist["activation"], CategoricalDistribution)
    assert set(dist["model.hidden_sizes"].choices) == {"(4,)", "(16,)", "(4, 4)"}
    assert set(dist["batch_size"].choices) == {"16", "32", "null"}


def test_importance_section_omits_importance_when_only_activation_varies():
    d = _synthetic(12, "activation")
    d["optimizer.lr"], d["batch_size"] = 0.1, 32
    d["model.hidden_sizes"] = [(4,)] * len(d)
    sec = imp.importance_section(d, KEYS, "val_loss", higher=False)
    assert sec["importance"] is None
    assert "only activation varies" in sec["reason"]
    assert sec["figure"] is not None and sec["n_runs"] == 12
    assert imp.importance_section(d.assign(val_loss=np.nan), KEYS, "val_loss", higher=False) is None


def test_importance_section_counts_a_key_tied_to_the_activation_with_it():
    d = _synthetic(15, "activation")
    d["optimizer.lr"] = d["activation"].map({"sigmoid": 1.0, "tanh": 0.3, "relu": 0.7})  # each at its tuned rate
    d["batch_size"], d["model.hidden_sizes"] = 32, [(4,)] * len(d)
    sec = imp.importance_section(d, KEYS, "val_loss", higher=False)
    assert sec["importance"] is None
    assert sec["reason"].startswith("Importance is omitted: only activation varies among these runs (optimizer.lr")
    assert "optimizer.lr changes only together with activation" in sec["caveat"]


def test_importance_section_names_the_method_and_ranks():
    sec = imp.importance_section(_synthetic(60, "optimizer.lr"), KEYS, "val_loss", higher=False)
    assert sec["reason"] is None and sec["importance"].index[0] == "optimizer.lr"
    assert "PED-ANOVA" in sec["method"] and "interactions" in sec["caveat"]


def test_parallel_coordinates_uses_a_log_axis_for_a_log_spread_key_and_one_line_per_run():
    d = _synthetic(25, "optimizer.lr")
    fig = imp.parallel_coordinates(d, ["activation", "optimizer.lr", "batch_size"], "val_loss")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert any(t.endswith("(log)") for t in texts)
    assert {"sigmoid", "tanh", "relu", "null"} <= set(texts)
    assert len(ax.collections[0].get_segments()) == 25
    assert [t.get_text() for t in ax.get_xticklabels()] == ["activation", "learning rate", "batch_size",
                                                             "validation loss"]


# ------------------------------------------------------------------------------------------------ the space


def test_plan_search_reads_intervals_log_range_and_choice():
    import json

    from nnexp.search import plan_search

    plan = plan_search({"seed": "0,1,2", "optimizer.lr": "tag(log, interval(1e-4, 1))"},
                       ["activation=sigmoid,relu", "epochs=range(10,31,10)", "model.hidden_sizes=[4],[8,8]",
                        "dataset=moons"], base_seed=3)
    assert plan.activations == ["sigmoid", "relu"] and plan.seed == 3 and plan.fixed == ["dataset=moons"]
    space = {k: json.loads(v) for k, v in plan.space.items()}
    assert space["optimizer.lr"] == {"name": "FloatDistribution",
                                     "attributes": {"low": 1e-4, "high": 1.0, "log": True, "step": None}}
    assert space["epochs"]["attributes"] == {"low": 10, "high": 30, "log": False, "step": 10}
    assert space["model.hidden_sizes"]["attributes"]["choices"] == ["[4]", "[8,8]"]


def test_fit_stops_when_its_callback_says_so():
    from nnexp.app import build
    from nnexp.train import fit

    from omegaconf import OmegaConf

    from hydra import compose, initialize_config_module

    from nnexp.config import register

    register()
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["dataset=xor", "epochs=50"])
    s = build(cfg)
    hist = fit(s.model, s.loss, s.optimizer, s.schedule, s.data, epochs=50, rngs=s.rngs, batch_size=None,
               diagnostics=False, on_epoch=lambda e, v: "pruned" if e == 7 else None)
    assert list(hist.epochs) == list(range(1, 8))
    assert hist.info["stopped"] == "pruned" and hist.info["stopped_epoch"] == 7
    assert OmegaConf.select(cfg, "epochs") == 50


# ------------------------------------------------------------------------------------------------ bad input

BASE = ["-m", "hydra/sweeper=nnexp_optuna", "dataset=xor", "epochs=2"]
LR = "optimizer.lr=tag(log, interval(1e-3, 1))"


@pytest.mark.parametrize("args,words", [
    (["optimizer.lr=interval(1, 0.5)"], ["optimizer.lr=interval(1, 0.5) is empty", "lower bound"]),
    (["optimizer.lr=tag(log, interval(0, 1))"], ["a log scale needs bounds > 0"]),
    (["optimizer.lr=interval(0, 1)"], ["optimizer.lr=0.0", "> 0"]),
    ([LR, "hydra.sweeper.n_trials=0"], ["hydra.sweeper.n_trials=0", "integer >= 1"]),
    ([LR, "hydra.sweeper.final_seeds=0"], ["hydra.sweeper.final_seeds=0", "integer >= 1"]),
    (["optimizr.lr=interval(0.1, 1)"], ["optimizr.lr is not a key; did you mean optimizer.lr?"]),
    ([LR, "seed=0,1"], ["seed=0,1", "hydra.sweeper.final_seeds"]),
    ([LR, "activation=relu,swish"], ["activation='swish'", "choose one of"]),
    ([LR, "hydra.sweeper.pruner.name=never"], ["hydra.sweeper.pruner.name='never'", "median"]),
    ([LR, "hydra.sweeper.pruner.warmup_fraction=1"], ["hydra.sweeper.pruner.warmup_fraction=1", "[0, 1)"]),
    ([LR, "replicas=2"], ["replicas=2", "one seed per trial"]),
    (["epochs=3"], ["the search has no space"]),
    ([LR, "tracking.uri=http://127.0.0.1:9"], ["hydra.sweeper.storage: tracking goes to http://127.0.0.1:9",
                                                "NNEXP_OPTUNA_STORAGE"]),
], ids=["empty interval", "log of 0", "lr bound 0", "no trials", "no final seeds", "unknown key", "seed sweep",
        "unknown activation", "unknown pruner", "warmup of all epochs", "replicas", "no space",
        "server without a study storage"])
def test_bad_search_input_is_one_line_before_anything_runs(args, words, tmp_path, monkeypatch, capsys):
    from nnexp.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    rc = main([*BASE, *args])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnexp: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no study, no sweep folder


# ------------------------------------------------------------------------------------------------ searches

SEARCH = ["-m", "hydra/sweeper=nnexp_optuna", "dataset=moons", LR, "tracking.report=false",
          "tracking.save_weights=false", "tracking.diagnostics=false", "tracking.progress=false",
          "hydra.sweeper.sampler.n_startup_trials=2", "hydra.sweeper.pruner.n_startup_trials=1",
          "hydra.sweeper.pruner.warmup_fraction=0.1"]


def _studies(cwd: Path) -> dict:
    import optuna

    storage = f"sqlite:///{cwd / 'optuna.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def _runs(cwd: Path):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name("activations")
    return c, c.search_runs([exp.experiment_id], max_results=5000)


def test_search_per_activation_trials_pruning_and_final_seeds(tmp_path, cli):
    proc = cli([*SEARCH, "epochs=20", "activation=tanh,relu", "hydra.sweeper.n_trials=4",
                "hydra.sweeper.final_seeds=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    studies = _studies(tmp_path)
    assert sorted(n.rsplit("-", 1)[1] for n in studies) == ["relu", "tanh"]
    states = {n: [t.state.name for t in s.trials] for n, s in studies.items()}
    for st in states.values():
        assert len(st) == 4 and set(st) <= {"COMPLETE", "PRUNED"}
    n_pruned = sum(st.count("PRUNED") for st in states.values())
    assert n_pruned >= 1

    c, runs = _runs(tmp_path)
    assert all(r.info.status == "FINISHED" for r in runs)
    by_id = {r.info.run_id: r for r in runs}
    sweeps = [r for r in runs if r.data.tags.get("nnexp.kind") == "sweep"]
    searches = [r for r in runs if r.data.tags.get("nnexp.kind") == "search"]
    assert len(sweeps) == 1 and len(searches) == 2
    parent = sweeps[0].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in searches)
    trials = [r for r in runs if "nnexp.trial_number" in r.data.tags]
    assert len(trials) == 8
    for name, study in studies.items():
        mine = [r for r in trials if r.data.tags["nnexp.optuna_study"] == name]
        assert sorted(int(r.data.tags["nnexp.trial_number"]) for r in mine) == [0, 1, 2, 3]
        for r in mine:
            t = study.trials[int(r.data.tags["nnexp.trial_number"])]
            assert r.data.tags["nnexp.trial_state"] == t.state.name
            assert t.user_attrs["mlflow_run_id"] == r.info.run_id
            assert by_id[r.data.tags["mlflow.parentRunId"]].data.tags["nnexp.kind"] == "search"
            steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_loss")]
            if t.state.name == "PRUNED":  # stopped early, its curve kept up to there
                assert r.data.tags["nnexp.outcome"] == "pruned" and max(steps) < 20
            else:
                assert r.data.tags["nnexp.outcome"] == "finished" and max(steps) == 20
                assert r.data.metrics["val_loss"] == pytest.approx(t.value)

    # the final comparison: each activation's best trial over 2 seeds, the seed-0 run reused from the search
    from nnexp.report.load import load_runs

    final = load_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "activations", parent_id=parent)
    assert len(final) == 4 and final["reused"].sum() == 2
    assert sorted(zip(final["activation"], final["seed"])) == [("relu", 0), ("relu", 1), ("tanh", 0), ("tanh", 1)]
    for name, study in studies.items():
        act = name.rsplit("-", 1)[1]
        assert set(final.loc[final["activation"] == act, "optimizer.lr"]) == {study.best_params["optimizer.lr"]}
    assert "pruned" not in set(final["outcome"])
    assert "search tanh: " in proc.stdout and "search relu: " in proc.stdout
    # the reused seed-0 runs are this sweep's own trials, not runs of an earlier sweep (it said "2 reused from
    # earlier sweeps"; new-user test)
    assert ("sweep finished: 4 finished, 0 diverged, 0 failed, 0 reused from earlier sweeps, 2 of this sweep's "
            "search trials reused as final seeds\n") in proc.stdout

    # the search's trials, for the report's importance over activation and learning rate
    trials_df = imp.load_search_trials(f"sqlite:///{tmp_path / 'mlflow.db'}", "activations", parent)
    assert len(trials_df) == 8 and (trials_df["outcome"] == "pruned").sum() == n_pruned
    done = trials_df[trials_df["outcome"] == "finished"]
    sec = imp.importance_section(done, ["activation", "optimizer.lr"], "val_loss", higher=False)
    assert sec["n_runs"] == 8 - n_pruned
    if sec["importance"] is not None:
        assert sorted(sec["importance"].index) == ["activation", "optimizer.lr"]


def _trial_states(db: Path) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [s for (s,) in con.execute("select state from trials")]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_mid_search_then_rerun_resumes_with_one_run_per_trial(tmp_path, cli):
    args = [*SEARCH, "epochs=300", "activation=tanh", "hydra.sweeper.n_trials=6", "hydra.sweeper.final_seeds=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "optuna.db"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            states = _trial_states(db)
            if sum(s in ("COMPLETE", "PRUNED") for s in states) >= 2 and "RUNNING" in states:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    before = _trial_states(db)
    assert 2 <= sum(s in ("COMPLETE", "PRUNED") for s in before) < 6

    rerun = cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (name, study), = _studies(tmp_path).items()
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 6
    assert "RUNNING" not in states and states.count("FAIL") <= 1
    assert len(states) == 6 + states.count("FAIL")
    # the killed trial is an interrupted one in the summary, not a failure (it said "1 failed"; new-user test)
    killed = sum(bool(t.user_attrs.get("nnexp_interrupted")) for t in study.trials)
    assert killed == states.count("FAIL")
    line = next(x for x in rerun.stdout.splitlines() if x.startswith("search tanh: "))
    assert ", 0 failed" in line and (f", {killed} interrupted (trained again);" in line if killed else "interrupted" not in line)
    # no trial repeated: the first trials kept their results
    for i, s in enumerate(before):
        if s in ("COMPLETE", "PRUNED"):
            assert states[i] == s

    c, runs = _runs(tmp_path)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trials = [r for r in runs if r.data.tags.get("nnexp.optuna_study") == name and "nnexp.trial_number" in r.data.tags]
    numbers = sorted(int(r.data.tags["nnexp.trial_number"]) for r in trials)
    assert len(numbers) == len(set(numbers))  # one run per trial
    ran = {i for i, t in enumerate(study.trials) if "mlflow_run_id" in t.user_attrs}
    assert set(numbers) == ran and set(range(len(states))) - ran <= {i for i, s in enumerate(states) if s == "FAIL"}
    for r in trials:
        t = study.trials[int(r.data.tags["nnexp.trial_number"])]
        assert r.data.tags["nnexp.trial_state"] == t.state.name
        assert (r.info.status == "FINISHED") == (t.state.name != "FAIL")


def test_a_search_beside_the_team_server_keeps_its_studies_in_that_postgresql(tmp_path, monkeypatch):
    """Team mode: a search launched from the folder of ``python -m nnexp.team_server start`` finds the server's
    Optuna database (same PostgreSQL as the runs) without a setting; another server, or none, needs one."""
    from nnexp.config import ConfigError
    from nnexp.search import STORAGE_ENV, storage_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    (tmp_path / ".team").mkdir()
    (tmp_path / ".team" / "state.json").write_text('{"port": 5123, "pg_port": 5999, "mlflow_pid": null}')
    assert storage_url("http://127.0.0.1:5123") == "postgresql+psycopg2://nnexp@127.0.0.1:5999/optuna"
    assert storage_url("http://localhost:5123") == "postgresql+psycopg2://nnexp@127.0.0.1:5999/optuna"
    assert storage_url("http://127.0.0.1:5123", "sqlite:///x.db") == "sqlite:///x.db"
    for other in ("http://127.0.0.1:5124", "http://10.0.0.1:5123"):
        with pytest.raises(ConfigError, match="hydra.sweeper.storage"):
            storage_url(other)


def test_importance_of_a_handful_of_runs():
    """Four runs (fewer than the top share PED-ANOVA would take): the top half is compared with all, and the key
    that decides the metric comes first (a reduced study's report once failed here)."""
    runs = pd.DataFrame({"activation": ["relu"] * 4, "model.width": [2, 2, 10, 10], "model.depth": [2, 50, 2, 50],
                         "val_loss": [0.1, 0.5, 0.2, 0.6]})
    scores = imp.importance(runs, ["activation", "model.width", "model.depth"], "val_loss", higher=False)
    assert list(scores.index) == ["model.depth", "model.width"] and scores.sum() == pytest.approx(1)
