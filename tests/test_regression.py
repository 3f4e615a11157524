"""Regression targets: dataset=linear_teacher (a linear teacher recovered exactly), the regression rules of the
config (mse only, one-line errors before any store), training without accuracies, and a sweep end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from nnexp.activations import get_activation
from nnexp.config import ConfigError, divide, validate
from nnexp.data import encode_targets, load, teacher_weights
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer
from nnexp.train import fit

TEACHER = dict(n_samples=200, n_features=5, n_outputs=3)


def test_least_squares_recovers_the_teacher_exactly():
    data = load("linear_teacher", split_seed=3, standardize=False, **TEACHER)
    W = teacher_weights(5, 3, rng=np.random.default_rng(3))
    assert data.task == "regression" and data.regression and data.n_classes == 3
    assert [len(p) for p in (data.X_train, data.X_val, data.X_test)] == [120, 40, 40]
    for X, Y in ((data.X_train, data.y_train), (data.X_val, data.y_val), (data.X_test, data.y_test)):
        assert Y.shape == (len(X), 3) and Y.dtype == np.float64
        np.testing.assert_allclose(np.linalg.lstsq(X, Y, rcond=None)[0], W, atol=1e-12)
    assert np.array_equal(load("linear_teacher", split_seed=3, standardize=False, **TEACHER).y_train, data.y_train)
    assert not np.array_equal(load("linear_teacher", split_seed=4, standardize=False, **TEACHER).y_train[:, 0],
                              data.y_train[:, 0])


def test_teacher_noise_and_standardisation():
    noisy = load("linear_teacher", split_seed=0, standardize=False, noise=0.5, n_samples=4000, n_features=4,
                 n_outputs=1)
    W = teacher_weights(4, 1, rng=np.random.default_rng(0))
    residual = noisy.y_train - noisy.X_train @ W
    assert residual.std() == pytest.approx(0.5, rel=0.05)
    std = load("linear_teacher", split_seed=0, standardize=True, n_samples=400, n_features=4, n_outputs=1)
    np.testing.assert_allclose(std.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(std.X_train.std(axis=0), 1)
    raw = load("linear_teacher", split_seed=0, standardize=False, n_samples=400, n_features=4, n_outputs=1)
    assert np.array_equal(std.y_train, raw.y_train)  # targets are never standardised


def test_real_targets_are_passed_through_class_labels_encoded():
    Y = np.array([[0.5, -1.0], [2.0, 3.0]])
    assert np.array_equal(encode_targets(Y, 2), Y)
    np.testing.assert_array_equal(encode_targets(np.array([1, 0]), 2), [[0, 1], [1, 0]])


def test_a_linear_network_learns_the_teacher_without_accuracies():
    data = load("linear_teacher", split_seed=1, standardize=False, n_samples=300, n_features=3, n_outputs=2)
    act = get_activation("identity")
    model = MLP([3, 4, 2], act, replicas=2)
    model.initialize(get_initializer("orthogonal"), get_bias_initializer("zeros"),
                     [np.random.default_rng(s) for s in (0, 1)], gain=1.0)
    opt = make_optimizer("sgd", model.params())
    hist = fit(model, get_loss("mse"), opt, lambda e: 0.1, data, epochs=400, rngs=[np.random.default_rng(0)] * 2)
    assert "val_accuracy" not in hist.metrics and "train_accuracy" not in hist.metrics
    assert hist.metrics["train_loss"].shape == (400, 2)
    assert (hist.metrics["val_loss"][-1] < 1e-8).all()
    W = teacher_weights(3, 2, rng=np.random.default_rng(1))
    for k in range(2):  # the end-to-end map is the teacher's (the biases go to 0 with centred inputs)
        np.testing.assert_allclose(model.W[0][k] @ model.W[1][k], W, atol=1e-4)


def _cfg(compose, *overrides):
    return compose(["dataset=linear_teacher", "activation=identity", *overrides])


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "sigmoid_mse"])
def test_classification_losses_are_refused_on_a_regression_dataset(compose, loss):
    with pytest.raises(ConfigError, match=rf"^model.loss={loss} needs class labels, but dataset=linear_teacher is a "
                                          r"regression task .*use model.loss=mse or auto$"):
        validate(_cfg(compose, f"model.loss={loss}"))
    validate(_cfg(compose, "model.loss=mse"))
    validate(_cfg(compose))


def test_teacher_keys_are_refused_on_a_classifier_dataset(compose):
    with pytest.raises(ConfigError, match=r"^dataset.n_outputs is read only by dataset=linear_teacher, not by "
                                          r"dataset=moons"):
        validate(compose(["dataset=moons", "dataset.n_outputs=2"]))
    with pytest.raises(ConfigError, match=r"^dataset.n_features=0 must be >= 1$"):
        validate(_cfg(compose, "dataset.n_features=0"))


def test_divide_resolver(compose):
    assert divide(0.3, 3) == pytest.approx(0.1)
    cfg = _cfg(compose, "model.depth=4", "model.width=8", "optimizer.lr='${nnexp.div:0.3,${model.depth}}'")
    assert OmegaConf.to_container(cfg, resolve=True)["optimizer"]["lr"] == pytest.approx(0.075)
    with pytest.raises(ValueError, match="needs two numbers"):
        divide(1, 0)


def test_cli_refuses_cross_entropy_on_regression_in_one_line(tmp_path, cli):
    r = cli(["dataset=linear_teacher", "activation=identity", "model.loss=cross_entropy", "epochs=1"], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ["nnexp: error: model.loss=cross_entropy needs class labels, but dataset=linear_teacher is a "
                     "regression task (real-valued targets); use model.loss=mse or auto"]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_continuous_csv_target_is_still_refused(tmp_path):
    f = tmp_path / "reg.csv"
    rng = np.random.default_rng(0)
    f.write_text("a,b,y\n" + "".join(f"{a},{b},{a + b}\n" for a, b in rng.normal(size=(40, 2))))
    with pytest.raises(ValueError, match="looks continuous"):
        load("csv", path=str(f), target="y")


@pytest.mark.slow
def test_regression_sweep_end_to_end(tmp_path, cli):
    """2 depths x 2 batch sizes x 2 seeds: 8 runs, no accuracy logged anywhere, the report and summary written."""
    from mlflow import MlflowClient

    r = cli(["-m", "dataset=linear_teacher", "activation=identity", "init=orthogonal", "model.depth=1,2",
             "model.width=8", "dataset.n_outputs=2", "dataset.n_samples=100", "batch_size=null,16", "epochs=3",
             "seed=0,1", "optimizer.lr=0.05", "tracking.log_model=false", "tracking.experiment=teacher"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sweep finished: 8 finished, 0 diverged, 0 failed, 0 reused from earlier sweeps" in r.stdout
    assert "val_accuracy" not in r.stdout and "val_loss mean" in r.stdout
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("teacher")
    runs = [x for x in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in x.data.tags]
    assert len(runs) == 8
    for run in runs:
        assert run.info.status == "FINISHED"
        assert json.loads(run.data.tags["nnexp.config"])["model.loss"] == "mse"  # auto resolved for regression
        assert not any(k.endswith("accuracy") for k in run.data.metrics)
        assert {"train_loss", "val_loss", "test_loss"} <= set(run.data.metrics)
    reports = list((tmp_path / "reports" / "teacher").glob("*/index.html"))
    assert len(reports) == 1 and "Traceback" not in reports[0].read_text()
