"""The studies of experiments/ at reduced sizes (exact run counts, claim rows, figures, artifacts), replicas as a
population, and the dead_network diagnostic against a network built dead."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from nnexp.activations import get_activation
from nnexp.config import studies
from nnexp.data import Dataset
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer
from nnexp.population import outcome, summarise
from nnexp.report.claims import VERDICTS, parse_claims
from nnexp.report.paper_figures import born_dead_probability
from nnexp.train import fit

STUDIES = ("he2015_deep_relu", "lu2019_dying_relu", "glorot2010_saturation", "saxe2013_deep_linear")


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_declares_valid_claims_and_a_figure(name):
    from nnexp.report.paper_figures import STUDY_FIGURES

    cfg = studies()[name]
    assert cfg.study == name and cfg.tracking.experiment == name
    assert len(parse_claims(list(cfg.claims))) >= 4
    assert name in STUDY_FIGURES


def test_population_means_skip_nan_and_diverge_only_together():
    assert summarise({"m": np.array([1.0, 0.0, np.nan, 1.0])}) == {"m": pytest.approx(2 / 3)}
    assert np.isnan(summarise({"m": np.array([np.nan])})["m"])
    assert outcome(np.array([0, 3])) == (0, 0.5) and outcome(np.array([4, 3])) == (4, 1.0)


def test_one_input_death_probability():
    assert born_dead_probability(2, 1) == 0.25
    assert born_dead_probability(3, 2) == pytest.approx(1 - (7 / 8) ** 2)


def test_dead_network_is_one_exactly_for_the_replica_built_dead():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    data = Dataset("toy", X, y, X[:5], y[:5], X[:5], y[:5], n_classes=2)
    act = get_activation("relu")
    model = MLP([2, 3, 3, 1], act, replicas=2)
    model.initialize(get_initializer("he_normal"), get_bias_initializer("zeros"),
                     [np.random.default_rng(s) for s in (0, 1)], gain=act.gain)
    model.W[1][1] = -np.abs(model.W[1][1])  # replica 1: layer 2 gets non-negative inputs and negative weights
    model.W[0][0] = np.abs(model.W[0][0]) * np.array([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]])  # replica 0 stays alive
    opt = make_optimizer("sgd", model.params())
    hist = fit(model, get_loss("binary_cross_entropy"), opt, lambda e: 0.0, data, epochs=1,
               rngs=[np.random.default_rng(0)] * 2)
    np.testing.assert_array_equal(hist.metrics["dead_network"][0], [0.0, 1.0])
    np.testing.assert_array_equal(hist.metrics["layer2.dead_fraction"][0, 1], 1.0)


def _claims_csv(tmp_path):
    (path,) = tmp_path.glob("reports/*/*/claims.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f)), path.parent


def _runs(tmp_path, experiment):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name(experiment)
    return [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.slow
def test_he2015_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=he2015_deep_relu", "model.depth=4", "model.width=8", "epochs=3", "replicas=2",
             "tracking.percentiles_every=1", "tracking.histogram_epochs=[0,3]"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "he2015_deep_relu")
    assert len(runs) == 4  # 2 initialisations x 2 replicas
    rows, report = _claims_csv(tmp_path)
    assert len(rows) == 5 and {row["verdict"] for row in rows} <= set(VERDICTS)
    # the two claims at layer 30 have nothing to measure in a 4-layer network
    assert [row["verdict"] for row in rows[:2]] == ["inconclusive", "inconclusive"]
    assert (report / "paper_he2015.png").exists() and (report / "paper_he2015_heatmap.png").exists()
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in c.get_metric_history(runs[0].info.run_id, "layer4.probe.act_p99")]
    assert steps == [0, 1, 2, 3]
    z = np.load(c.download_artifacts(runs[0].info.run_id, [a.path for a in c.list_artifacts(runs[0].info.run_id)
                                                             if a.path.startswith("histograms")][0], str(tmp_path)))
    assert list(z["epochs"]) == [0, 3] and z["act_counts"].shape == (2, 4, 50)


@pytest.mark.slow
def test_lu2019_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=lu2019_dying_relu", "replicas=50", "model.width=2,10", "model.depth=2,50"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "lu2019_dying_relu")
    assert len(runs) == 4  # one population run per (width, depth)
    assert {r.data.params["replicas"] for r in runs} == {"50"}
    rows, report = _claims_csv(tmp_path)
    assert [row["n"] for row in rows] == ["50 vs 50 networks", "50 networks", "50 vs 50 networks", "0 networks"]
    assert rows[3]["verdict"] == "inconclusive"  # width 4 was not run
    with open(report / "born_dead.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and all(row["n"] == "50" for row in table)
    # born dead fractions below the one-input probability (an upper bound), up to sampling error
    for row in table:
        assert float(row["lo"]) <= born_dead_probability(int(row["width"]), int(row["depth"])) + 1e-12


@pytest.mark.slow
def test_glorot2010_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=glorot2010_saturation", "model.depth=2", "model.width=8", "epochs=2", "replicas=2",
             "batch_size=50", "activation=tanh,sigmoid", "tracking.histogram_epochs=[0,2]"],
            tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_runs(tmp_path, "glorot2010_saturation")) == 8  # 2 activations x 2 initialisations x 2 replicas
    rows, report = _claims_csv(tmp_path)
    assert len(rows) == 7 and {row["verdict"] for row in rows} <= set(VERDICTS)
    assert (report / "paper_glorot2010_bands.png").exists() and (report / "paper_glorot2010_histograms.png").exists()


@pytest.mark.slow
def test_saxe2013_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=saxe2013_deep_linear", "model.depth=2,10", "replicas=3", "epochs=80"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "saxe2013_deep_linear")
    assert len(runs) == 12  # 2 initialisations x 2 depths x 3 replicas
    assert sorted({float(x.data.params["optimizer.lr"]) for x in runs}) == [0.03, 0.15]  # 0.3 / depth
    rows, report = _claims_csv(tmp_path)
    # the claims at depth 50 have no runs to measure; the scaled Gaussian is slower at depth 10 than at depth 2
    assert [row["n"] for row in rows] == ["0 vs 3", "0 vs 3", "0 vs 0", "3 vs 3"]
    assert [row["verdict"] for row in rows] == ["inconclusive", "inconclusive", "inconclusive", "reproduced"]
    with open(report / "time_to_threshold.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12 and all(1 <= float(row["epochs"]) <= 81 for row in table)
    assert (report / "paper_saxe2013.png").exists()
