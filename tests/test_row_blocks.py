"""Large batches split into row blocks (optionally on threads): the same gradients, the same training.

``MLP.gradients`` splits a batch of at least ``2 * min_block_rows`` rows into blocks, each with its own forward
and backward pass, and adds the blocks' gradients in block order. Here ``min_block_rows`` is made small so that
small problems take that path: its gradients must pass the same central-difference check as the one-block
path, agree with the one-block path to rounding (blocks are matrix products of other shapes, which BLAS may round
differently), and not depend at all on whether the blocks ran on threads (the same shapes in the same order).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nnexp.activations import get_activation
from nnexp.data import Dataset
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP, row_blocks
from nnexp.optimizers import make_optimizer
from nnexp.train import fit

from test_gradients import check_backprop, make_problem


@pytest.mark.parametrize("n", [1, 7, 511, 1023, 1024, 1078, 1797, 2048, 5000, 100_003])
def test_row_blocks_cover_the_batch_in_equal_power_of_two_blocks(n):
    blocks = row_blocks(n, 512)
    c = len(blocks)
    assert c & (c - 1) == 0  # 1, 2, 4, 8, ...: shared evenly by 2, 4 or 8 threads
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [r1 - r0 for r0, r1 in blocks]
    assert max(sizes) - min(sizes) <= 1
    assert c == 1 or min(sizes) >= 512  # never a block below the minimum...
    assert n < 2 * c * 512  # ...and as many blocks as that allows


def blocked(model: MLP, min_rows: int) -> MLP:
    model.min_block_rows = min_rows
    model._workspaces.clear()
    return model


@pytest.mark.parametrize("loss_name", ["mse", "binary_cross_entropy", "cross_entropy"])
@pytest.mark.parametrize("name", ["tanh", "relu", "gelu"])
def test_blocked_backprop_matches_central_differences(name, loss_name):
    model, X, Y, loss = make_problem(name, {}, loss_name, depth=2, n=13)
    blocked(model, 3)
    assert len(model.workspace(X).blocks) == 4
    check_backprop(model, X, Y, loss, f"{name} {loss_name} blocked")


def problem(n=300, replicas=3, loss_name="cross_entropy", seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    labels = rng.integers(0, 4, n)
    n_out = {"cross_entropy": 4, "binary_cross_entropy": 1, "mse": 2}[loss_name]
    Y = np.eye(4)[labels] if n_out == 4 else (labels[:, None] % 2).astype(float) if n_out == 1 else rng.normal(
        size=(n, 2))
    act = get_activation("tanh")
    model = MLP([6, 9, 7, n_out], act, replicas=replicas)
    model.initialize(get_initializer("xavier_uniform"), get_bias_initializer("constant", 0.1),
                     [np.random.default_rng(seed + k) for k in range(replicas)], gain=act.gain)
    return model, X, Y, get_loss(loss_name)


@pytest.mark.parametrize("loss_name", ["mse", "binary_cross_entropy", "cross_entropy"])
def test_blocks_agree_with_one_block_and_threads_change_nothing(loss_name):
    from concurrent.futures import ThreadPoolExecutor

    model, X, Y, loss = problem(loss_name=loss_name)
    one = model.gradients(X, Y, loss)
    ref = [g.copy() for g in model.grads()]
    logits = model.workspace(X).logits.copy()

    blocked(model, 40)  # 300 rows -> 4 blocks of 75
    assert len(model.workspace(X).blocks) == 4
    seq = model.gradients(X, Y, loss)
    seq_grads = [g.copy() for g in model.grads()]
    np.testing.assert_allclose(seq, one, rtol=1e-13)
    for g, r in zip(seq_grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-15)
    # Not bit for bit: a block of 75 rows and the batch of 300 are matrix products of different shapes, which BLAS
    # may hand to different kernels (OpenBLAS's Haswell kernel rounds 14 of these 3600 logits one ulp apart).
    np.testing.assert_allclose(model.workspace(X).logits, logits, rtol=1e-13, atol=1e-14)

    with ThreadPoolExecutor(3) as pool:
        par = model.gradients(X, Y, loss, pool)
    # bit-identical on any CPU: the same blocks, so the same matrix shapes, calls and order of summation
    np.testing.assert_array_equal(par, seq)
    for g, s in zip(model.grads(), seq_grads):
        np.testing.assert_array_equal(g, s)


def dataset(n=700, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64) + 2 * (X[:, 2] > 0)
    return Dataset("blocks", X, y, X[:50], y[:50], X[:50], y[:50], n_classes=4)


def train(threads, *, lr=0.3, epochs=25, scale=1.0, activation="tanh"):
    data = dataset()
    act = get_activation(activation)
    rngs = [np.random.default_rng(k) for k in range(2)]
    model = MLP([5, 16, 4], act, replicas=2)
    model.min_block_rows = 100  # 700 rows -> 4 blocks
    model.initialize(get_initializer("xavier_uniform"), get_bias_initializer("zeros", 0.0), rngs, gain=act.gain)
    model.W[1][1] *= scale
    hist = fit(model, get_loss("cross_entropy"), make_optimizer("momentum", model.params()), lambda e: lr, data,
               epochs=epochs, rngs=rngs, threads=threads)
    return model, hist


def test_training_on_threads_is_bit_identical_to_training_in_turn():
    m1, h1 = train(threads=1)
    m2, h2 = train(threads=2)
    m4, h4 = train(threads=4)
    for m in (m2, m4):
        for p, q in zip(m.params(), m1.params()):
            np.testing.assert_array_equal(p, q)
    for h in (h2, h4):
        for name, v in h1.metrics.items():
            np.testing.assert_array_equal(h.metrics[name], v, err_msg=name)
    assert h1.metrics["train_loss"][-1, 0] < 0.8 * h1.metrics["train_loss"][0, 0]  # it does learn


def test_blocks_on_worker_threads_follow_the_callers_floating_point_error_state():
    """NumPy's error state is per thread: fit trains under ``np.errstate(over="ignore", ...)`` and treats a
    non-finite loss as divergence, so the blocks on worker threads must ignore overflow too, not warn."""
    from concurrent.futures import ThreadPoolExecutor

    model, X, Y, loss = problem(loss_name="mse")
    blocked(model, 40)
    model.W[-1] *= 1e200  # logits of order 1e200, whose squares overflow
    with warnings.catch_warnings(), ThreadPoolExecutor(3) as pool:
        warnings.simplefilter("error")
        with np.errstate(all="ignore"):
            value = model.gradients(X, Y, loss, pool)
        assert not np.isfinite(value).any()
        with pytest.raises(RuntimeWarning), np.errstate(all="warn"):
            model.gradients(X, Y, loss, pool)  # and the caller's "warn" holds on the workers as well
