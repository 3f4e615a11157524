"""The training loop: learning, dtypes, divergence, diagnostics and log_every, checked against direct computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nnexp.activations import get_activation
from nnexp.data import Dataset, encode_targets, load
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer, make_schedule
from nnexp.train import SATURATION_MARGIN, accuracy, fit


def make(data, sizes, *, activation="tanh", seeds=(0,), dtype=np.float64, init="xavier_uniform"):
    act = get_activation(activation)
    rngs = [np.random.default_rng(s) for s in seeds]
    model = MLP(sizes, act, replicas=len(seeds), dtype=dtype)
    model.initialize(get_initializer(init), get_bias_initializer("zeros", 0.0), rngs, gain=act.gain)
    return model, rngs


def toy_regression(n=40, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    return Dataset("toy", X, y, X[:10], y[:10], X[:10], y[:10], n_classes=2)


def test_xor_reaches_full_accuracy_for_every_seed():
    xor = load("xor")
    model, rngs = make(xor, [2, 8, 1], seeds=range(4))
    loss = get_loss("binary_cross_entropy")
    opt = make_optimizer("sgd", model.params())
    hist = fit(model, loss, opt, make_schedule("constant", 0.5, 2000), xor, epochs=2000, rngs=rngs, log_every=100)
    np.testing.assert_array_equal(hist.metrics["train_accuracy"][-1], 1.0)
    np.testing.assert_array_equal(accuracy(model.predict_logits(xor.X_test), xor.y_test), 1.0)
    assert (hist.metrics["train_loss"][-1] < 0.05).all()
    assert (hist.diverged_epoch == 0).all()


def test_float32_training_keeps_float32_weights_and_gradients():
    xor = load("xor").astype(np.float32)
    model, rngs = make(xor, [2, 8, 1], dtype=np.float32)
    opt = make_optimizer("adam", model.params())
    hist = fit(model, get_loss("binary_cross_entropy"), opt, lambda e: 0.05, xor, epochs=300, rngs=rngs)
    assert all(p.dtype == np.float32 for p in model.params())
    assert all(g.dtype == np.float32 for g in model.grads())
    assert model.workspace(xor.X_train).a[0].dtype == np.float32
    assert hist.metrics["train_loss"][-1, 0] < hist.metrics["train_loss"][0, 0]


def reference_losses(model, loss, X, Y, lr, epochs):
    """Plain full-batch gradient descent on a copy of ``model``: the loss before each epoch's update."""
    out = []
    with np.errstate(all="ignore"):
        for _ in range(epochs):
            out.append(model.gradients(X, Y, loss).copy())
            for p, g in zip(model.params(), model.grads()):
                p -= lr * g
    return np.array(out)


def test_divergence_is_marked_at_the_epoch_the_loss_explodes_and_the_other_replica_trains_on():
    data = toy_regression()
    loss = get_loss("mse")
    lr, epochs, threshold = 0.05, 60, 1e4
    model, rngs = make(data, [3, 5, 1], activation="identity", seeds=(0, 1))
    model.W[1][1] *= 40.0  # replica 1: a steep loss surface on which this learning rate explodes
    twin = [MLP(model.sizes, model.activation, replicas=1) for _ in range(2)]
    for k, t in enumerate(twin):
        t.set_weights([W[k] for W in model.W], [b[k, 0] for b in model.b])
    Y = encode_targets(data.y_train, 1)
    ref = [reference_losses(t, loss, data.X_train, Y, lr, epochs)[:, 0] for t in twin]
    bad = ~(np.abs(ref[1]) <= threshold * ref[1][0])
    assert bad.any() and not (~(np.abs(ref[0]) <= threshold * ref[0][0])).any()
    expected = int(np.argmax(bad)) + 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid value) may escape
        hist = fit(model, loss, make_optimizer("sgd", model.params()), lambda e: lr, data, epochs=epochs,
                   rngs=rngs, log_every=1, divergence_threshold=threshold)
    assert list(hist.diverged_epoch) == [0, expected]
    tl = hist.metrics["train_loss"]
    assert tl[expected - 1, 1] == ref[1][expected - 1] or np.isinf(ref[1][expected - 1])  # the loss that diverged
    assert np.isnan(tl[expected:, 1]).all() and np.isnan(hist.metrics["val_loss"][expected - 1:, 1]).all()
    assert all((p[1] == 0).all() for p in model.params())
    # replica 0 never noticed
    np.testing.assert_allclose(tl[:, 0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(model.W[0][0], twin[0].W[0][0], rtol=1e-12)


def test_training_stops_when_every_replica_diverged():
    data = toy_regression()
    model, rngs = make(data, [3, 5, 1], activation="identity")
    model.W[1][0] *= 40.0
    hist = fit(model, get_loss("mse"), make_optimizer("sgd", model.params()), lambda e: 0.05, data, epochs=500,
               rngs=rngs, log_every=1)
    e = int(hist.diverged_epoch[0])
    assert 1 < e < 500
    assert hist.epochs[-1] == e and len(hist.epochs) == e


def test_a_loss_that_explodes_within_the_first_epoch_is_divergence():
    """The reference is the loss at initialisation (first batch), not the first epoch's mean: a learning rate that
    blows the loss up inside epoch 1 is caught at epoch 1."""
    data = load("iris", split_seed=0)
    model, rngs = make(data, [4, 8, 3], activation="sigmoid")
    loss = get_loss("cross_entropy")
    initial = float(model.gradients(data.X_train[:8], encode_targets(data.y_train[:8], 3), loss)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = fit(model, loss, make_optimizer("sgd", model.params()), lambda e: 1e6, data, epochs=5,
                   rngs=rngs, batch_size=8, log_every=1, divergence_threshold=1e4)
    assert hist.diverged_epoch[0] == 1
    assert hist.metrics["train_loss"][0, 0] > 1e4 * initial


def relu_net_with_dead_units():
    """A 4-16-3 ReLU network whose units 0, 5 and 9 have a negative pre-activation for every input."""
    data = load("iris", split_seed=0)
    model, rngs = make(data, [4, 16, 3], activation="relu", init="he_normal")
    for u in (0, 5, 9):
        model.W[0][0][:, u] = 0.0
        model.b[0][0, 0, u] = -1.0
    model.b[0][0, 0, 3] = 1e-3  # alive for some inputs at least
    return data, model, rngs


def test_dead_fraction_act_stats_and_grad_norm_match_direct_computation():
    data, model, rngs = relu_net_with_dead_units()
    X = data.X_train
    z = X @ model.W[0][0] + model.b[0][0]
    a = np.maximum(z, 0)
    loss = get_loss("cross_entropy")
    twin = MLP(model.sizes, model.activation)
    twin.set_weights([W[0] for W in model.W], [b[0, 0] for b in model.b])
    twin.gradients(X, encode_targets(data.y_train, 3), loss)
    hist = fit(model, loss, make_optimizer("sgd", model.params()), lambda e: 0.1, data, epochs=1, rngs=rngs)
    m = {k: v[0, 0] for k, v in hist.metrics.items()}
    assert m["layer1.dead_fraction"] == pytest.approx(((z <= 0).all(axis=0)).mean()) == pytest.approx(3 / 16)
    assert m["layer1.act_mean"] == pytest.approx(a.mean(), rel=1e-12)
    assert m["layer1.act_std"] == pytest.approx(a.std(), rel=1e-10)
    for l in range(2):
        assert m[f"layer{l + 1}.grad_norm"] == pytest.approx(np.linalg.norm(twin.dW[l][0]), rel=1e-12)
    assert "layer1.saturation" not in m  # ReLU is unbounded


def test_dead_fraction_counts_units_dead_over_all_mini_batches():
    data, model, rngs = relu_net_with_dead_units()
    hist = fit(model, get_loss("cross_entropy"), make_optimizer("sgd", model.params()), lambda e: 0.0, data,
               epochs=1, rngs=rngs, batch_size=7)
    z = data.X_train @ model.W[0][0] + model.b[0][0]  # lr 0: the weights never moved
    assert hist.metrics["layer1.dead_fraction"][0, 0] == pytest.approx(((z <= 0).all(axis=0)).mean())


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturation_is_the_share_of_activations_near_a_bound(activation):
    data = load("digits", split_seed=0)
    model, rngs = make(data, [64, 32, 10], activation=activation, init="normal")  # std 1: many units saturate
    z = data.X_train @ model.W[0][0]
    a = model.activation.forward(z)
    lo, hi = model.activation.spec.bounds
    u = (a - lo) / (hi - lo)
    expected = ((u < SATURATION_MARGIN) | (u > 1 - SATURATION_MARGIN)).mean()
    assert 0.05 < expected < 0.95
    hist = fit(model, get_loss("cross_entropy"), make_optimizer("sgd", model.params()), lambda e: 0.1, data,
               epochs=1, rngs=rngs)
    assert hist.metrics["layer1.saturation"][0, 0] == pytest.approx(expected, abs=1e-12)


def test_train_accuracy_is_that_of_the_pass_that_gives_the_train_loss():
    data = load("iris", split_seed=0)
    model, rngs = make(data, [4, 6, 3])
    before = accuracy(model.predict_logits(data.X_train), data.y_train)
    hist = fit(model, get_loss("cross_entropy"), make_optimizer("sgd", model.params()), lambda e: 0.5, data,
               epochs=1, rngs=rngs)
    assert hist.metrics["train_accuracy"][0, 0] == before[0]
    assert hist.metrics["val_accuracy"][0, 0] == accuracy(model.predict_logits(data.X_val), data.y_val)[0]


@pytest.mark.parametrize("batch_size", [None, 32])
def test_log_every_records_the_right_epochs_without_changing_training(batch_size):
    data = load("iris", split_seed=0)
    runs = {}
    for every in (1, 4):
        model, rngs = make(data, [4, 6, 3], seeds=(3, 4))
        sched = make_schedule("step", 0.3, 10, step_size=3, gamma=0.5)
        runs[every] = fit(model, get_loss("cross_entropy"), make_optimizer("momentum", model.params(), momentum=0.9),
                          sched, data, epochs=10, rngs=rngs, batch_size=batch_size, log_every=every), model
    (h1, m1), (h4, m4) = runs[1], runs[4]
    np.testing.assert_array_equal(h4.epochs, [4, 8, 10])
    np.testing.assert_array_equal(h1.epochs, np.arange(1, 11))
    for name, v in h4.metrics.items():  # recording less often changes nothing that is recorded
        np.testing.assert_array_equal(v, h1.metrics[name][[3, 7, 9]], err_msg=name)
    np.testing.assert_array_equal(h4.metrics["lr"][:, 0], [0.3 * 0.5, 0.3 * 0.25, 0.3 * 0.125])
    for p1, p4 in zip(m1.params(), m4.params()):
        np.testing.assert_array_equal(p1, p4)


def test_on_epoch_sees_each_recorded_epoch_once():
    data = load("iris", split_seed=0)
    model, rngs = make(data, [4, 6, 3])
    seen = []
    hist = fit(model, get_loss("cross_entropy"), make_optimizer("sgd", model.params()), lambda e: 0.1, data,
               epochs=7, rngs=rngs, log_every=3, on_epoch=lambda e, m: seen.append((e, float(m["train_loss"][0]))))
    assert [e for e, _ in seen] == [3, 6, 7]
    np.testing.assert_array_equal([v for _, v in seen], hist.metrics["train_loss"][:, 0])
    assert hist.seconds > 0 and hist.info["callback_seconds"] >= 0


def test_bad_arguments_are_refused():
    data = load("xor")
    model, rngs = make(data, [2, 2, 1])
    opt = make_optimizer("sgd", model.params())
    with pytest.raises(ValueError, match=">= 1"):
        fit(model, get_loss("binary_cross_entropy"), opt, lambda e: 0.1, data, epochs=0, rngs=rngs)
    with pytest.raises(ValueError, match="one generator per replica"):
        fit(model, get_loss("binary_cross_entropy"), opt, lambda e: 0.1, data, epochs=1, rngs=rngs * 2)


def test_epoch_shuffle_at_once_or_batch_by_batch_trains_identically(monkeypatch):
    """Small data is shuffled into one array per epoch, large data gathered per batch: the same batches either way."""
    import nnexp.train as train_module

    data = load("iris", split_seed=0)
    runs = []
    for limit in (train_module.SHUFFLE_COPY_BYTES, 0):
        monkeypatch.setattr(train_module, "SHUFFLE_COPY_BYTES", limit)
        model, rngs = make(data, [4, 6, 3], seeds=(0, 1))
        hist = fit(model, get_loss("cross_entropy"), make_optimizer("momentum", model.params()), lambda e: 0.05,
                   data, epochs=15, rngs=rngs, batch_size=16, log_every=1)
        runs.append((model, hist))
    (m1, h1), (m2, h2) = runs
    for p, q in zip(m1.params(), m2.params()):
        np.testing.assert_array_equal(p, q)
    for name, v in h1.metrics.items():
        np.testing.assert_array_equal(h2.metrics[name], v, err_msg=name)
