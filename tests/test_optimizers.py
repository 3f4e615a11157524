"""Optimisers and schedules: single steps worked out by hand, weight decay, state, errors.

(Agreement over whole training runs with scikit-learn is in test_sklearn_parity.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnexp.activations import get_activation
from nnexp.data import Dataset
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import SCHEDULES, make_optimizer, make_schedule
from nnexp.train import fit

G = np.array([[0.5, 0.25]])  # one replica, two parameters


def run(name, steps, lr=0.1, **hyper):
    p = np.array([[1.0, -2.0]])
    opt = make_optimizer(name, [p], **hyper)
    for _ in range(steps):
        opt.step([G.copy()], lr)
    return p


def test_sgd_step():
    np.testing.assert_allclose(run("sgd", 1), [[0.95, -2.025]], rtol=1e-15)


def test_momentum_two_steps():
    # v1 = -0.1 g = (-0.05, -0.025); v2 = 0.9 v1 - 0.1 g = (-0.095, -0.0475); theta = theta0 + v1 + v2
    np.testing.assert_allclose(run("momentum", 2, momentum=0.9), [[0.855, -2.0725]], rtol=1e-15)


def test_nesterov_two_steps():
    # step 1: theta += 0.9 v1 - 0.1 g = (-0.095, -0.0475); step 2: theta += 0.9 v2 - 0.1 g = (-0.1355, -0.06775)
    np.testing.assert_allclose(run("nesterov", 2, momentum=0.9), [[0.7695, -2.11525]], rtol=1e-14)


def test_nesterov_differs_from_momentum_and_zero_momentum_is_sgd():
    assert not np.allclose(run("nesterov", 2, momentum=0.9), run("momentum", 2, momentum=0.9))
    # exact in IEEE arithmetic on any CPU: 0 * v = 0, so theta + (0 - lr * g) rounds as theta - lr * g
    np.testing.assert_array_equal(run("momentum", 3, momentum=0.0), run("sgd", 3))


def test_adam_steps_match_algorithm_1():
    """Kingma & Ba's Algorithm 1 in the efficient form of their Section 2 (epsilon added to sqrt(v), not sqrt(v_hat)),
    which is scikit-learn's; written out step by step here."""
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    theta = np.array([[1.0, -2.0]])
    m = v = np.zeros_like(theta)
    for t in (1, 2, 3):
        m = b1 * m + (1 - b1) * G
        v = b2 * v + (1 - b2) * G**2
        theta = theta - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(run("adam", 3, beta1=b1, beta2=b2, eps=eps), theta, rtol=1e-14)
    # with a constant gradient every Adam step has size ~lr, whatever the gradient's scale
    np.testing.assert_allclose(run("adam", 1), [[0.9, -2.1]], rtol=1e-6)


def test_weight_decay_only_where_masked():
    W, b = np.array([[[1.0]]]), np.array([[[1.0]]])
    opt = make_optimizer("sgd", [W, b], weight_decay=0.5, decay_mask=[True, False])
    opt.step([np.zeros_like(W), np.zeros_like(b)], 0.1)
    assert W.item() == pytest.approx(0.95, rel=1e-15) and b.item() == 1.0


def test_larger_weight_decay_gives_smaller_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    data = Dataset("toy", X, y, X, y, X, y, 2)
    norms = []
    for wd in (0.0, 1e-3, 1e-2, 1e-1):
        model = MLP([3, 8, 1], get_activation("tanh"))
        init = np.random.default_rng(1)
        model.set_weights([init.normal(size=(3, 8)), init.normal(size=(8, 1))], [np.zeros(8), np.zeros(1)])
        opt = make_optimizer("sgd", model.params(), weight_decay=wd, decay_mask=[True, False] * 2)
        fit(model, get_loss("binary_cross_entropy"), opt, make_schedule("constant", 0.5, 200), data, epochs=200,
            rngs=[np.random.default_rng(0)], diagnostics=False)
        norms.append(sum(float(np.sum(W**2)) for W in model.W))
    assert all(a > b for a, b in zip(norms, norms[1:])), norms


def test_reset_forgets_one_replica_only():
    p = np.ones((2, 3))
    for name, state in (("momentum", "velocities"), ("adam", "m")):
        opt = make_optimizer(name, [p.copy()])
        opt.step([np.ones((2, 3))], 0.1)
        opt.reset(0)
        buf = getattr(opt, state)[0]
        assert (buf[0] == 0).all() and (buf[1] != 0).all()


def test_schedules():
    step = make_schedule("step", 1.0, 100, step_size=10, gamma=0.5, min_lr=0.0)
    assert [step(e) for e in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = make_schedule("cosine", 1.0, 10, step_size=1, gamma=1.0, min_lr=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.55) and cos(10) == pytest.approx(0.1)
    assert all(cos(e) > cos(e + 1) for e in range(10))
    const = make_schedule("constant", 0.3, 10)
    assert {const(e) for e in range(10)} == {0.3}
    assert set(SCHEDULES) == {"constant", "step", "cosine"}


def test_errors_name_the_key():
    with pytest.raises(ValueError, match="optimizer='rmsprop' is not known; choose one of: adam, momentum"):
        make_optimizer("rmsprop", [])
    with pytest.raises(ValueError, match="optimizer.momentum does not apply to optimizer=sgd"):
        make_optimizer("sgd", [], momentum=0.9)
    with pytest.raises(ValueError, match="optimizer.beta1 does not apply to optimizer=nesterov"):
        make_optimizer("nesterov", [], beta1=0.9)
    with pytest.raises(ValueError, match="optimizer.schedule='linear' is not known"):
        make_schedule("linear", 0.1, 10)
