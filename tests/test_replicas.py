"""Seed replicas: replica k of a stacked network trains bit for bit as seed + k would alone."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from nnexp.activations import get_activation
from nnexp.app import build
from nnexp.config import register
from nnexp.data import load
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer, make_schedule
from nnexp.train import fit

register()
SEED = 7


def train(data, seeds, *, activation="tanh", optimizer="sgd", lr=0.1, hidden=(8,), loss="cross_entropy",
          epochs=30, batch_size=None, log_every=1, dtype=np.float64):
    """Train one stacked network with a replica per seed; return (model, history)."""
    rngs = [np.random.default_rng(s) for s in seeds]
    n_out = 1 if loss == "binary_cross_entropy" else data.n_classes
    act = get_activation(activation)
    model = MLP([data.n_features, *hidden, n_out], act, replicas=len(seeds), dtype=dtype)
    model.initialize(get_initializer("xavier_uniform"), get_bias_initializer("constant", 0.1), rngs, gain=act.gain)
    opt = make_optimizer(optimizer, model.params(), weight_decay=1e-3, decay_mask=[True, False] * model.n_layers)
    hist = fit(model, get_loss(loss), opt, make_schedule("cosine", lr, epochs, min_lr=0.0), data, epochs=epochs,
               rngs=rngs, batch_size=batch_size, log_every=log_every, diagnostics=True)
    return model, hist


def assert_replicas_match_alone(data, seeds, **kw):
    stacked, hist = train(data, seeds, **kw)
    for k, seed in enumerate(seeds):
        alone, h1 = train(data, [seed], **kw)
        for W, W1 in zip(stacked.params(), alone.params(), strict=True):
            assert W[k].dtype == W1[0].dtype
            # bit-identical, not merely close, on any CPU: each replica takes the same BLAS calls on matrices of
            # the same shapes, in the same order, as the network alone (nnexp/model.py, "Replicas and bit-identity")
            np.testing.assert_array_equal(W[k], W1[0])
        np.testing.assert_array_equal(hist.epochs, h1.epochs)
        assert set(hist.metrics) == set(h1.metrics)
        for name, values in hist.metrics.items():
            np.testing.assert_array_equal(values[:, k], h1.metrics[name][:, 0], err_msg=name)
    # the replicas really differ (one seed each), so the comparison above is not vacuous
    assert not np.array_equal(stacked.W[0][0], stacked.W[0][1])


@pytest.fixture(scope="module")
def iris():
    return load("iris", split_seed=0)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
def test_full_batch_replicas_are_bit_identical_to_each_seed_alone(iris, optimizer):
    assert_replicas_match_alone(iris, [SEED, SEED + 1, SEED + 2], optimizer=optimizer, lr=0.05)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mini_batch_replicas_shuffle_and_train_as_each_seed_alone(iris, activation):
    # 90 training samples in batches of 16: a short last batch, and each replica shuffles with its own seed
    assert_replicas_match_alone(iris, [SEED, SEED + 1, SEED + 2, SEED + 3], activation=activation,
                                batch_size=16, epochs=12, log_every=5, optimizer="momentum")


def test_float32_and_binary_xor_replicas_are_bit_identical(iris):
    xor = load("xor")
    assert_replicas_match_alone(xor, list(range(5)), hidden=(4,), loss="binary_cross_entropy", epochs=200,
                                lr=0.5, log_every=50, dtype=np.float32)


def test_deep_net_on_digits_replicas_match(iris):
    digits = load("digits", split_seed=0)
    assert_replicas_match_alone(digits, [0, 1], hidden=(32, 16), epochs=5, activation="relu")


def test_build_seeds_replica_k_with_seed_plus_k():
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        stacked = compose(config_name="config", overrides=["dataset=iris", "replicas=3", f"seed={SEED}", "epochs=3"])
        alone = [compose(config_name="config", overrides=["dataset=iris", f"seed={SEED + k}", "epochs=3"])
                 for k in range(3)]
    s = build(stacked)
    assert s.seeds == [SEED, SEED + 1, SEED + 2]
    for k, cfg in enumerate(alone):
        one = build(cfg)
        for W, W1 in zip(s.model.params(), one.model.params()):
            np.testing.assert_array_equal(W[k], W1[0])


# --- packed configurations: per-replica learning rate, weight decay, initialiser and gain ---------------------------

def train_members(data, members, *, activation="tanh", optimizer="sgd", schedule="constant", hidden=(8,),
                  loss="cross_entropy", epochs=20, batch_size=None, log_every=1, dtype=np.float64):
    """Train one stacked network with a replica per member ``{seed, lr, weight_decay, init, gain}``."""
    rngs = [np.random.default_rng(m["seed"]) for m in members]
    n_out = 1 if loss == "binary_cross_entropy" else data.n_classes
    act = get_activation(activation)
    model = MLP([data.n_features, *hidden, n_out], act, replicas=len(members), dtype=dtype)
    model.initialize([get_initializer(m.get("init", "xavier_uniform")) for m in members],
                     [get_bias_initializer("constant", 0.1)] * len(members), rngs,
                     gain=[m.get("gain", act.gain) for m in members])
    one = len(members) == 1  # alone: scalars, the code path of an unpacked run
    lr = members[0]["lr"] if one else np.array([m["lr"] for m in members])
    wd = members[0].get("weight_decay", 0.0) if one else np.array([m.get("weight_decay", 0.0) for m in members])
    opt = make_optimizer(optimizer, model.params(), weight_decay=wd, decay_mask=[True, False] * model.n_layers)
    params = {"step": dict(step_size=4, gamma=0.5), "cosine": dict(min_lr=1e-3), "constant": {}}[schedule]
    hist = fit(model, get_loss(loss), opt, make_schedule(schedule, lr, epochs, **params), data, epochs=epochs,
               rngs=rngs, batch_size=batch_size, log_every=log_every, diagnostics=True)
    return model, hist


def assert_members_match_alone(data, members, **kw):
    stacked, hist = train_members(data, members, **kw)
    for k, m in enumerate(members):
        alone, h1 = train_members(data, [m], **kw)
        for W, W1 in zip(stacked.params(), alone.params(), strict=True):
            np.testing.assert_array_equal(W[k], W1[0])
        np.testing.assert_array_equal(hist.diverged_epoch[k], h1.diverged_epoch[0])
        n = len(h1.epochs)  # alone, a run that diverged stops; packed, its later metrics are NaN
        for name, values in hist.metrics.items():
            np.testing.assert_array_equal(values[:n, k], h1.metrics[name][:, 0], err_msg=f"{name} of member {m}")
            assert np.isnan(values[n:, k]).all()
    # members with the same seed really differ (their lr, decay or initialiser), so the comparison is not vacuous
    assert len({stacked.W[0][k].tobytes() for k in range(len(members))}) == len(members)


MEMBERS = [dict(seed=SEED, lr=0.05), dict(seed=SEED, lr=0.2, weight_decay=1e-3),
           dict(seed=SEED + 1, lr=0.1, weight_decay=0.0, init="he_normal"),
           dict(seed=SEED, lr=0.3, weight_decay=1e-2, init="orthogonal", gain=0.7)]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_packed_lr_decay_and_init_are_bit_identical_to_each_alone(iris, optimizer, schedule):
    assert_members_match_alone(iris, MEMBERS, optimizer=optimizer, schedule=schedule, epochs=12)


def test_packed_members_in_mini_batches_and_float32_match_alone(iris):
    assert_members_match_alone(iris, MEMBERS, optimizer="adam", schedule="cosine", batch_size=16, epochs=8,
                               log_every=3, activation="relu", dtype=np.float32)


def test_packed_member_that_diverges_leaves_the_others_as_alone():
    xor = load("xor")
    members = [dict(seed=0, lr=0.5), dict(seed=0, lr=1e4, weight_decay=0.5), dict(seed=1, lr=1.0)]
    stacked, hist = train_members(xor, members, hidden=(4,), loss="binary_cross_entropy", epochs=60)
    assert hist.diverged_epoch[1] > 0 and hist.diverged_epoch[0] == 0  # the test covers a divergence
    assert_members_match_alone(xor, members, hidden=(4,), loss="binary_cross_entropy", epochs=60)
