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

STUDIES = ("he2015_deep_relu", "lu2019_dying_relu", "glorot2010_saturation", "saxe2013_deep_linear",
           "klambauer2017_selu", "hendrycks2016_gelu")


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


def test_a_population_run_prints_and_reports_what_it_records(tmp_path, cli):
    """tracking.replica_runs=false: the printed line gives the population's means that the run records (it gave
    replica 0's values), and the report says over how many networks, not "over 1 seed"."""
    import html
    import re

    r = cli(["-m", "dataset=gaussian", "activation=relu,tanh", "replicas=20", "tracking.replica_runs=false",
             "epochs=3", "seed=0", "tracking.progress=false"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "activations")
    assert len(runs) == 2
    for run in runs:
        [line] = [x for x in r.stdout.splitlines() if x.startswith(f"run {run.info.run_id} ")]
        m = run.data.metrics
        assert (f"population of 20 networks, means: val_loss {m['val_loss']:.4g}, "
                f"val_accuracy {m['val_accuracy']:.4g}, ") in line
    [index] = (tmp_path / "reports" / "activations").glob("*/index.html")
    text = html.unescape(re.sub(r"<[^>]+>", "", index.read_text()))
    assert "(mean ± std over 1 run, a population of 20 networks)" in text and "over 1 seed" not in text


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


def test_input_variance_scales_the_standardised_features_and_keeps_the_raw_mapping():
    from nnexp.data import load

    base, wide = load("digits"), load("digits", input_variance=2.0)
    for part in ("X_train", "X_val", "X_test"):
        np.testing.assert_allclose(getattr(wide, part), getattr(base, part) * np.sqrt(2.0), rtol=1e-12)
    live = base.X_train.std(axis=0) > 0  # digits' blank border pixels stay 0
    np.testing.assert_allclose(wide.X_train[:, live].var(axis=0), 2.0, rtol=1e-9)
    # X = (X_raw - mean) / scale still holds, so a served model standardises raw inputs as it was trained
    raw = base.X_test * base.scale + base.mean
    np.testing.assert_allclose((raw - wide.mean) / wide.scale, wide.X_test, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="dataset.input_variance=0 must be a number > 0"):
        load("digits", input_variance=0)
    with pytest.raises(ValueError, match="dataset.standardize=true"):
        load("digits", input_variance=2.0, standardize=False)


def test_input_variance_is_part_of_the_run_identity_and_null_keeps_old_ids(compose):
    from nnexp.identity import canonical, config_id

    ids = {v: config_id(canonical(compose(["dataset=digits"] + ([f"dataset.input_variance={v}"] if v else [])),
                                  n_classes=10)) for v in (None, 0.5, 2.0)}
    assert len(set(ids.values())) == 3
    canon = canonical(compose(["dataset=digits"]), n_classes=10)
    assert canon["dataset.input_variance"] is None
    assert config_id({k: v for k, v in canon.items() if k != "dataset.input_variance"}) == ids[None]


def test_input_variance_mistakes_are_one_line_and_leave_no_store(tmp_path, cli):
    for bad, words in (("dataset.input_variance=-1", "dataset.input_variance=-1.0 must be a number > 0"),
                       ("dataset.standardize=false dataset.input_variance=2", "with dataset.standardize=true")):
        r = cli(["dataset=moons", "epochs=1", *bad.split()], tmp_path)
        assert r.returncode == 2 and r.stderr.strip().startswith("nnexp: error: ") and words in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_klambauer2017_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=klambauer2017_selu", "model.depth=8,32", "model.width=16", "epochs=1", "replicas=2",
             "dataset.input_variance=0.5,2.0", "tracking.percentiles_every=1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "klambauer2017_selu")
    assert len(runs) == 16  # 2 activations x 2 depths x 2 input variances x 2 replicas
    rows, report = _claims_csv(tmp_path)
    assert len(rows) == 11 and {row["verdict"] for row in rows} <= set(VERDICTS)
    # input variance 1 and depth 16 were not run, nor epoch 6: nothing to measure
    for i in (0, 1, 5, 6, 7, 10):
        assert rows[i]["verdict"] == "inconclusive", rows[i]
    # ReLU is positively homogeneous and its biases start at 0: the input's factor 4 reaches layer 32 exactly
    assert float(rows[9]["estimate"]) == pytest.approx(np.log(4.0), abs=1e-9) and rows[9]["verdict"] == "reproduced"
    # SELU forgets most of it even at width 16 (a factor 4 would be log 4 = 1.39)
    assert abs(float(rows[8]["estimate"])) < 0.7
    with open(report / "moments_by_layer.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 * 32 * 2  # depth-32 runs x layers x probes (epochs 0 and 1)
    assert (report / "paper_klambauer2017.png").exists()


@pytest.mark.slow
def test_hendrycks2016_reduced(tmp_path, cli):
    r = cli(["-m", "experiment=hendrycks2016_gelu", "model.depth=2", "model.width=16", "epochs=2", "replicas=2",
             "activation=gelu,relu", "optimizer.lr=0.001,0.01"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _runs(tmp_path, "hendrycks2016_gelu")
    assert len(runs) == 8  # 2 activations x 2 learning rates x 2 replicas
    rows, report = _claims_csv(tmp_path)
    both = "4 runs at 2 optimizer.lr vs 4 runs at 2 optimizer.lr"
    assert len(rows) == 6 and [row["n"] for row in rows[::2]] == [both] * 3
    assert all(row["verdict"] == "inconclusive" and row["n"].endswith("vs 0 runs at 0 optimizer.lr")
               for row in rows[1::2])  # ELU was not run
    loss = {}
    for run in runs:
        key = (run.data.params["activation.name"], float(run.data.params["optimizer.lr"]))
        loss.setdefault(key, []).append(run.data.metrics["train_loss"])
    med = {k: np.median(v) for k, v in loss.items()}
    best = {a: min(med[(a, lr)] for lr in (0.001, 0.01)) for a in ("gelu", "relu")}
    assert float(rows[0]["estimate"]) == pytest.approx(best["gelu"] - best["relu"], rel=1e-6)
    logmed = {k: np.median(np.log10(v)) for k, v in loss.items()}  # the claim's metric is log10 of each run's loss
    spread = {a: abs(logmed[(a, 0.001)] - logmed[(a, 0.01)]) for a in ("gelu", "relu")}
    assert float(rows[2]["estimate"]) == pytest.approx(spread["gelu"] - spread["relu"], rel=1e-6)
    with open(report / "loss_by_lr.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert (report / "paper_hendrycks2016.png").exists()
