"""The issue-11 moons study written the usual way: the conventional peer of ``python -m nnexp -m ...``.

One Hydra job per configuration under the basic launcher, scikit-learn's ``MLPClassifier`` trained with
``partial_fit`` one epoch at a time, and ``mlflow.log_metric`` once per metric and epoch into a SQLite store, as
such a script is commonly written. Same data as nnexp's ``dataset=moons`` (400 points, a stratified 60/20/20
split, standardised: ``nnexp.data.load``), same architecture (``[16]``), epochs (200), batch size (64), learning
rates and seeds (0, 1, 2), and the same four metrics per epoch (train_loss, train_accuracy, val_loss,
val_accuracy). A run whose weights become non-finite is ended and tagged ``diverged``, as nnexp does.

Usage (from an empty folder; it writes ./mlflow.db and ./multirun/)::

    python benchmarks/conventional/study.py -m            # the 27 runs
    python benchmarks/conventional/study.py -m epochs=20  # shorter

Timed against nnexp by ``python benchmarks/run.py --only study``.
"""

from __future__ import annotations

import warnings

import hydra
import mlflow
import numpy as np
from omegaconf import DictConfig
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier

from nnexp.data import load

ACTIVATIONS = {"sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}


@hydra.main(version_base="1.3", config_path=".", config_name="study")
def main(cfg: DictConfig) -> float:
    data = load("moons", split_seed=0)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    clf = MLPClassifier(hidden_layer_sizes=tuple(cfg.hidden_sizes), activation=ACTIVATIONS[cfg.activation],
                        solver="sgd", learning_rate_init=cfg.lr, momentum=0.0, alpha=0.0,
                        batch_size=cfg.batch_size, shuffle=True, random_state=cfg.seed)
    classes = np.unique(data.y_train)
    val_loss = float("nan")
    with mlflow.start_run(run_name=f"{cfg.activation}-lr{cfg.lr}-seed{cfg.seed}"):
        mlflow.log_params({"activation": cfg.activation, "lr": cfg.lr, "seed": cfg.seed, "epochs": cfg.epochs,
                           "batch_size": cfg.batch_size, "hidden_sizes": list(cfg.hidden_sizes)})
        for epoch in range(1, cfg.epochs + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                try:
                    clf.partial_fit(data.X_train, data.y_train, classes=classes)
                except ValueError:  # scikit-learn refuses non-finite weights
                    mlflow.set_tag("diverged", epoch)
                    break
            if not np.isfinite(clf.loss_):
                mlflow.set_tag("diverged", epoch)
                break
            proba = clf.predict_proba(data.X_val)
            val_loss = log_loss(data.y_val, proba, labels=classes)
            mlflow.log_metric("train_loss", clf.loss_, step=epoch)
            mlflow.log_metric("train_accuracy", clf.score(data.X_train, data.y_train), step=epoch)
            mlflow.log_metric("val_loss", val_loss, step=epoch)
            mlflow.log_metric("val_accuracy", float((proba.argmax(axis=1) == data.y_val).mean()), step=epoch)
    return val_loss


if __name__ == "__main__":
    main()
