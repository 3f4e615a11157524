"""Loss functions computed from the network's last pre-activation (its logits).

Every loss takes ``logits`` of shape ``(n_replicas, n_samples, n_outputs)`` and
targets ``Y`` of shape ``(n_samples, n_outputs)`` (or with the same leading
replica axis), and returns the mean loss per replica, ``ndarray of shape
(n_replicas,)``, while writing :math:`\\partial L / \\partial z_{out}` (the
gradient with respect to the logits, already divided by ``n_samples``) into
``grad``. The output activation is part of the loss, which keeps the gradient
exact and stable: the network's last layer is always linear.

========================  ===================  =================================
config name               output activation    task
========================  ===================  =================================
``mse``                   identity             regression, or one-hot targets
``sigmoid_mse``           sigmoid              targets in [0, 1] (the XOR tutorial)
``binary_cross_entropy``  sigmoid              two classes, ``n_outputs == 1``
``cross_entropy``         softmax              two or more classes, one-hot
========================  ===================  =================================

The formulas follow scikit-learn's ``sklearn.neural_network._base``
(``squared_loss`` is half the mean squared error; ``log_loss`` and
``binary_log_loss``) so that training matches ``MLPRegressor`` and
``MLPClassifier`` step for step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import fastmath

__all__ = ["Loss", "LOSSES", "get_loss", "resolve_loss_name"]


def _log_sigmoid_neg(z: np.ndarray) -> np.ndarray:
    r"""softplus(z) = log(1 + e^z), computed as max(z, 0) + log1p(e^{-|z|})."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def mse(logits, Y, grad=None, n=None):
    r"""Half mean squared error, :math:`L = \frac{1}{2n}\sum_i \lVert z_i - y_i \rVert^2`.

    Gradient :math:`\partial L/\partial z_i = (z_i - y_i)/n`. This is
    scikit-learn's ``squared_loss`` for one output, and the loss whose gradient
    scikit-learn's ``MLPRegressor`` follows for several.
    """
    n = logits.shape[-2] if n is None else n
    diff = np.subtract(logits, Y, out=grad)
    loss = 0.5 * np.square(diff).sum(axis=(-2, -1)) / n  # a sum per replica, the same whatever n_replicas
    diff /= n
    return loss


def sigmoid_mse(logits, Y, grad=None, n=None):
    r"""Half mean squared error of sigmoid outputs, :math:`L = \frac{1}{2n}\sum_i \lVert \sigma(z_i) - y_i \rVert^2`.

    The classic network of the activation-function tutorials (and of Rumelhart, Hinton & Williams, 1986): a
    sigmoid output unit trained on the squared error. Gradient
    :math:`\partial L/\partial z_i = (\sigma(z_i) - y_i)\,\sigma(z_i)(1 - \sigma(z_i))/n`, which vanishes when
    the output saturates on the wrong side: the reason cross-entropy replaced it. :math:`\sigma` is computed as
    :math:`(1 + \tanh(z/2))/2`, which never overflows.
    """
    n = logits.shape[-2] if n is None else n
    a = _predict_sigmoid(logits)
    diff = a - Y
    loss = 0.5 * np.square(diff).sum(axis=(-2, -1)) / n
    if grad is None:
        grad = np.empty_like(logits)
    np.subtract(1.0, a, out=grad)
    grad *= a
    grad *= diff
    grad /= n
    return np.atleast_1d(loss)


def binary_cross_entropy(logits, Y, grad=None, n=None):
    r"""Binary cross-entropy from logits, :math:`L = \frac1n\sum_i \mathrm{softplus}(z_i) - y_i z_i`.

    Equal to :math:`-\frac1n\sum_i y_i\log\sigma(z_i) + (1-y_i)\log(1-\sigma(z_i))`
    without ever forming :math:`\log 0`. Gradient :math:`(\sigma(z_i) - y_i)/n`.
    """
    n = logits.shape[-2] if n is None else n
    loss = (_log_sigmoid_neg(logits) - Y * logits).sum(axis=(-2, -1)) / n
    if grad is None:
        grad = np.empty_like(logits)
    np.multiply(logits, 0.5, out=grad)
    fastmath.tanh(grad, out=grad)
    grad += 1
    grad *= 0.5
    grad -= Y
    grad /= n
    return np.atleast_1d(loss)


def cross_entropy(logits, Y, grad=None, n=None):
    r"""Softmax cross-entropy from logits, :math:`L = \frac1n\sum_i \mathrm{logsumexp}(z_i) - z_i\cdot y_i`.

    ``Y`` is one-hot. Gradient :math:`(\mathrm{softmax}(z_i) - y_i)/n`. The
    log-sum-exp subtracts the row maximum first, so no exponent overflows.

    Speed: on large batches the row maximum is taken column by column for up to
    :data:`_COLUMN_MAX` classes (``np.max`` over a short last axis costs about
    three times as much on 1797 rows, but less on 64), the row sums of ``exp`` are one matrix product with
    a column of ones, and the division by the row sum is a multiplication by
    its reciprocal; each step works on one replica's rows alone, so replicas
    stay bit-identical to networks trained alone.
    """
    n = logits.shape[-2] if n is None else n
    n_out = logits.shape[-1]
    if grad is None:
        grad = np.empty_like(logits)
    if n_out <= _COLUMN_MAX and logits.shape[-2] >= _COLUMN_MAX_ROWS:
        zmax = np.maximum(logits[..., :1], logits[..., n_out - 1:])
        for j in range(1, n_out - 1):
            np.maximum(zmax, logits[..., j:j + 1], out=zmax)
    else:
        zmax = logits.max(axis=-1, keepdims=True)
    np.subtract(logits, zmax, out=grad)
    fastmath.exp(grad, out=grad)
    s = np.matmul(grad, _ones_column(n_out, grad.dtype))  # row sums, shape (..., n_samples, 1)
    lse = np.log(s)
    lse += zmax
    # sums of one replica's values each: the same whatever the number of replicas (see nnexp.model)
    picked = np.multiply(logits, Y).sum(axis=(-2, -1))
    loss = (lse.sum(axis=(-2, -1)) - picked) / n
    np.reciprocal(s, out=s)
    grad *= s
    grad -= Y
    grad /= n
    return np.atleast_1d(loss)


_COLUMN_MAX = 32  # classes up to which the row maximum is taken column by column...
_COLUMN_MAX_ROWS = 256  # ...for batches of at least this many rows (below it, np.max is as fast)


@functools.lru_cache(maxsize=None)
def _ones_column(n: int, dtype) -> np.ndarray:
    ones = np.ones((n, 1), dtype)
    ones.flags.writeable = False
    return ones


def _predict_identity(logits):
    return logits


def _predict_sigmoid(logits):
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def _predict_softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Loss:
    """A loss and the output activation it implies.

    Attributes
    ----------
    name : str
    value_and_grad : callable ``(logits, Y, grad=None, n=None) -> ndarray of shape (n_replicas,)``
        ``n`` is the number of samples the loss averages over, by default
        ``logits.shape[-2]``; a row block of a larger batch passes the batch's
        size, so that the blocks' losses and gradients add up to the batch's.
    output : str
        ``"identity"``, ``"sigmoid"`` or ``"softmax"``.
    predict : callable ``(logits) -> ndarray``
        Maps logits to predictions (probabilities for the cross-entropies).
    classification : bool
        Whether the targets are class labels.
    """

    name: str
    value_and_grad: Callable
    output: str
    predict: Callable
    classification: bool


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse, "identity", _predict_identity, classification=False),
    "sigmoid_mse": Loss("sigmoid_mse", sigmoid_mse, "sigmoid", _predict_sigmoid, classification=True),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy, "sigmoid", _predict_sigmoid, True),
    "cross_entropy": Loss("cross_entropy", cross_entropy, "softmax", _predict_softmax, True),
}


def resolve_loss_name(name: str, task: str, n_classes: int | None) -> str:
    """Pick and validate the loss for a dataset's task.

    ``auto`` gives ``binary_cross_entropy`` for two classes, ``cross_entropy``
    for more, and ``mse`` for regression.

    Raises
    ------
    ValueError
        If the loss is unknown, or does not fit the task (a cross-entropy on a
        regression target, binary cross-entropy on more than two classes).
    """
    choices = ", ".join(sorted([*LOSSES, "auto"]))
    if name == "auto":
        if task == "regression":
            return "mse"
        return "binary_cross_entropy" if n_classes == 2 else "cross_entropy"
    if name not in LOSSES:
        raise ValueError(f"model.loss={name!r} is not known; choose one of: {choices}")
    if task == "regression" and LOSSES[name].classification:
        raise ValueError(f"model.loss={name} needs class labels, but the dataset is a regression task; use mse")
    if name == "binary_cross_entropy" and n_classes != 2:
        raise ValueError(f"model.loss=binary_cross_entropy needs two classes, the dataset has {n_classes}; use cross_entropy")
    return name


def get_loss(name: str) -> Loss:
    """The :class:`Loss` registered under ``name`` (``KeyError`` if unknown)."""
    return LOSSES[name]
