"""Training parity with scikit-learn's ``MLPClassifier`` / ``MLPRegressor``, epoch by epoch.

For each activation scikit-learn has (identity, logistic = nnexp's sigmoid,
tanh, relu), each task (binary and 3-class classification, regression) and
each optimiser (plain SGD, SGD with momentum, Nesterov, Adam), both
implementations start from the same weights and train full batch for 50
epochs; nnexp's ``History.metrics["train_loss"]`` (from :func:`nnexp.train.fit`)
must equal scikit-learn's ``loss_curve_`` to 1e-9 relative at every epoch:

    max_epoch |loss_nnexp - loss_sklearn| / |loss_sklearn| < 1e-9

The weights are injected through ``warm_start``: a first ``fit`` with
``max_iter=1`` creates ``coefs_`` and ``intercepts_``, which are overwritten,
``loss_curve_`` is emptied, and a second ``fit`` (which builds a fresh
optimiser) trains from them. ``alpha=0`` (no L2), ``shuffle=False``,
``batch_size=n_samples``, constant learning rate, and ``n_iter_no_change``
larger than ``max_iter`` so nothing stops early.

The regression target is standardised. The two implementations place the
``1/n`` of the mean at different points (nnexp in the loss gradient,
scikit-learn after the matrix product), a difference of an ulp per step; on an
unstandardised target (variance ~4) Nesterov at lr 0.05 with tanh becomes
unstable and the curves drift apart chaotically to ~2e-9 relative, which
would be a test of the dynamics' sensitivity rather than of the update rules.

``python tests/test_sklearn_parity.py`` prints the largest relative difference
over all cases.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from nnexp.activations import get_activation
from nnexp.data import Dataset
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer, make_schedule
from nnexp.train import fit

EPOCHS = 50
RTOL = 1e-9
N_SAMPLES, N_FEATURES, HIDDEN = 60, 4, (6, 5)

#: nnexp activation -> scikit-learn's name for it
SKLEARN_NAME = {"identity": "identity", "sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}
#: optimiser -> (nnexp name, nnexp hyper-parameters, scikit-learn keyword arguments)
OPTIMIZERS = {
    "sgd": ("sgd", {}, dict(solver="sgd", learning_rate_init=0.1, momentum=0.0, nesterovs_momentum=False)),
    "momentum": ("momentum", {"momentum": 0.9}, dict(solver="sgd", learning_rate_init=0.05, momentum=0.9,
                                                     nesterovs_momentum=False)),
    "nesterov": ("nesterov", {"momentum": 0.9}, dict(solver="sgd", learning_rate_init=0.05, momentum=0.9,
                                                     nesterovs_momentum=True)),
    "adam": ("adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
             dict(solver="adam", learning_rate_init=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8)),
}
TASKS = {"binary": ("binary_cross_entropy", 1), "multiclass": ("cross_entropy", 3), "regression": ("mse", 1)}
CASES = list(itertools.product(SKLEARN_NAME, TASKS, OPTIMIZERS))


def make_data(task: str, rng: np.random.Generator):
    X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    score = X @ rng.normal(size=N_FEATURES) + 0.5 * np.sin(2 * X[:, 0])
    if task == "regression":
        return X, score / score.std()
    if task == "binary":
        return X, (score > np.median(score)).astype(np.int64)
    return X, np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)


def initial_weights(sizes, rng):
    coefs = [rng.uniform(-1, 1, (i, o)) * np.sqrt(3.0 / i) for i, o in zip(sizes[:-1], sizes[1:])]
    intercepts = [rng.uniform(-0.1, 0.1, o) for o in sizes[1:]]
    return coefs, intercepts


def sklearn_curve(activation, task, opt, X, y, coefs, intercepts):
    kw = dict(hidden_layer_sizes=HIDDEN, activation=SKLEARN_NAME[activation], alpha=0.0, batch_size=len(X),
              learning_rate="constant", shuffle=False, tol=0.0, n_iter_no_change=EPOCHS + 10, max_iter=1,
              warm_start=True, early_stopping=False, random_state=0, **OPTIMIZERS[opt][2])
    est = MLPRegressor(**kw) if task == "regression" else MLPClassifier(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        est.coefs_ = [c.copy() for c in coefs]
        est.intercepts_ = [b.copy() for b in intercepts]
        est.loss_curve_ = []
        est.set_params(max_iter=EPOCHS)
        est.fit(X, y)
    assert est.n_iter_ == EPOCHS, "scikit-learn stopped early"
    assert est.out_activation_ == {"binary": "logistic", "multiclass": "softmax", "regression": "identity"}[task]
    return np.asarray(est.loss_curve_)


def nnexp_curve(activation, task, opt, X, y, coefs, intercepts):
    loss_name, n_out = TASKS[task]
    model = MLP([N_FEATURES, *HIDDEN, n_out], get_activation(activation))
    model.set_weights(coefs, intercepts)
    name, hyper, sk = OPTIMIZERS[opt]
    optimizer = make_optimizer(name, model.params(), **hyper)
    n_classes = {"binary": 2, "multiclass": 3, "regression": 1}[task]
    data = Dataset("parity", X, y, X, y, X, y, n_classes, task="regression" if task == "regression" else "classification")
    hist = fit(model, get_loss(loss_name), optimizer, make_schedule("constant", sk["learning_rate_init"], EPOCHS), data,
               epochs=EPOCHS, rngs=[np.random.default_rng(0)], batch_size=None, diagnostics=False)
    assert list(hist.epochs) == list(range(1, EPOCHS + 1))
    return hist.metrics["train_loss"][:, 0]


def relative_difference(activation, task, opt) -> float:
    rng = np.random.default_rng(12345)
    X, y = make_data(task, rng)
    n_out = TASKS[task][1]
    coefs, intercepts = initial_weights([N_FEATURES, *HIDDEN, n_out], rng)
    ref = sklearn_curve(activation, task, opt, X, y, coefs, intercepts)
    ours = nnexp_curve(activation, task, opt, X, y, coefs, intercepts)
    assert ref.shape == ours.shape == (EPOCHS,)
    assert ref[-1] < ref[0], "the comparison should cover real training, not a flat curve"
    return float(np.max(np.abs(ours - ref) / np.abs(ref)))


@pytest.mark.parametrize("activation, task, opt", CASES)
def test_loss_curve_matches_sklearn(activation, task, opt):
    assert relative_difference(activation, task, opt) < RTOL


def test_one_epoch_by_hand():
    """The first loss of the curve is the loss at the injected weights, computed independently here."""
    rng = np.random.default_rng(12345)
    X, y = make_data("binary", rng)
    coefs, intercepts = initial_weights([N_FEATURES, *HIDDEN, 1], rng)
    a = X
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        a = np.tanh(a @ W + b)
    p = 1 / (1 + np.exp(-(a @ coefs[-1] + intercepts[-1])))[:, 0]
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert nnexp_curve("tanh", "binary", "sgd", X, y, coefs, intercepts)[0] == pytest.approx(expected, rel=1e-12)


if __name__ == "__main__":
    diffs = {case: relative_difference(*case) for case in CASES}
    worst = max(diffs, key=diffs.get)
    for case, d in sorted(diffs.items(), key=lambda kv: -kv[1])[:5]:
        print(f"{'/'.join(case):30s} {d:.3e}")
    print(f"largest relative difference over {len(CASES)} cases x {EPOCHS} epochs: {diffs[worst]:.3e} ({'/'.join(worst)})")
