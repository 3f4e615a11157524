"""A multilayer perceptron in NumPy, trained as a stack of independent replicas.

Layout
------
For layer sizes ``[n_features, h_1, ..., h_L, n_outputs]`` the network holds,
per layer ``l``, weights ``W[l]`` of shape ``(n_replicas, fan_in, fan_out)`` and
biases ``b[l]`` of shape ``(n_replicas, 1, fan_out)``. Replica ``k`` is an
ordinary MLP on its own; stacking ``n_replicas`` independently seeded copies
lets one batched ``np.matmul`` train them all (issue: seed replicas) and is a
no-op cost when ``n_replicas == 1``.

Forward pass, for ``a_0 = X``::

    z_l = a_{l-1} @ W_l + b_l          (pre-activation)
    a_l = f(z_l)                       (activation), hidden layers only
    logits = z_{L+1}                   (the loss applies the output activation)

Backward pass (backpropagation), with ``delta_{L+1} = dLoss/dlogits``::

    dW_l = a_{l-1}^T @ delta_l         summed over the batch
    db_l = sum_i delta_l[i]            summed over the batch
    delta_{l-1} = (delta_l @ W_l^T) * f'(z_{l-1})

The factor ``f'(z_{l-1})`` and the sum over the batch in ``db_l`` are the two
things the seed tutorial's XOR program got wrong; :mod:`tests.test_gradients`
checks every weight and bias against central differences.

All intermediate arrays live in a :class:`Workspace` allocated once per batch
shape and reused across epochs, so the training loop allocates nothing but a
few arrays of shape ``(n_replicas,)``. Every step writes into those buffers
with ``out=`` (``np.matmul``, in-place ufuncs); the activation's derivative is
computed from the cached ``z`` and ``a`` of the forward pass.

Replicas and bit-identity
-------------------------
Each replica is computed by the same sequence of operations on arrays of the
same shapes as a one-replica network: ``np.matmul`` on stacked arrays calls
the BLAS ``gemm`` once per replica with that replica's matrices, elementwise
ufuncs do not mix replicas, and every reduction runs over one replica's own
contiguous block (``db_l`` is ``ones @ delta_l``, one ``gemm`` per replica).
So replica ``k`` of a stacked network is bit-identical to a one-replica
network with the same initial weights and the same batches
(:mod:`tests.test_replicas` checks it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import BoundActivation
from .losses import Loss

__all__ = ["MLP", "Workspace"]


class Workspace:
    """Preallocated buffers for one batch shape.

    Attributes
    ----------
    z, a, deriv : list of ndarray of shape (n_replicas, batch, h_l)
        Pre-activations, activations and activation derivatives of the hidden layers.
    logits, delta_out : ndarray of shape (n_replicas, batch, n_outputs)
    dA : list of ndarray of shape (n_replicas, batch, h_l)
        Gradient of the loss with respect to each hidden activation; turned in
        place into the gradient with respect to its pre-activation.
    ones : ndarray of shape (1, batch)
        A row of ones: ``ones @ delta`` sums ``delta`` over the batch.
    """

    def __init__(self, replicas: int, batch: int, sizes: Sequence[int], dtype):
        hidden = sizes[1:-1]
        shape = lambda h: (replicas, batch, h)  # noqa: E731
        self.z = [np.empty(shape(h), dtype) for h in hidden]
        self.a = [np.empty(shape(h), dtype) for h in hidden]
        self.deriv = [np.empty(shape(h), dtype) for h in hidden]
        self.dA = [np.empty(shape(h), dtype) for h in hidden]
        self.logits = np.empty(shape(sizes[-1]), dtype)
        self.delta_out = np.empty(shape(sizes[-1]), dtype)
        self.ones = np.ones((1, batch), dtype)


class MLP:
    """Fully connected network, ``n_replicas`` independent copies stacked.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_features, *hidden_sizes, n_outputs]``; every entry >= 1.
    activation : BoundActivation
        Hidden-layer activation (from :func:`nnexp.activations.get_activation`).
    replicas : int, default 1
    dtype : numpy dtype, default float64

    Attributes
    ----------
    W : list of ndarray of shape (n_replicas, fan_in, fan_out)
    b : list of ndarray of shape (n_replicas, 1, fan_out)
    dW, db : lists like ``W`` and ``b``, the gradients of the last call to :meth:`gradients`.
    """

    def __init__(self, sizes: Sequence[int], activation: BoundActivation, *, replicas: int = 1, dtype=np.float64):
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer sizes must be >= 1, got {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.activation = activation
        self.replicas = int(replicas)
        self.dtype = np.dtype(dtype)
        shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.W = [np.zeros((self.replicas, i, o), self.dtype) for i, o in shapes]
        self.b = [np.zeros((self.replicas, 1, o), self.dtype) for _, o in shapes]
        self.dW = [np.empty_like(w) for w in self.W]
        self.db = [np.empty_like(b) for b in self.b]
        self._workspaces: dict[tuple, Workspace] = {}

    # -- parameters -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of weight layers (hidden layers + 1)."""
        return len(self.W)

    def params(self) -> list[np.ndarray]:
        """``[W_1, b_1, W_2, b_2, ...]``, the arrays an optimiser updates in place."""
        return [p for wb in zip(self.W, self.b) for p in wb]

    def grads(self) -> list[np.ndarray]:
        """``[dW_1, db_1, ...]`` in the order of :meth:`params`."""
        return [g for wb in zip(self.dW, self.db) for g in wb]

    def initialize(self, weight_init, bias_init, rngs: Sequence[np.random.Generator], *, gain: float) -> "MLP":
        """Draw every replica's weights from its own generator.

        Parameters
        ----------
        weight_init : callable ``(fan_in, fan_out, *, rng, gain, dtype) -> ndarray``
        bias_init : callable ``(fan_out, *, rng, dtype) -> ndarray of shape (fan_out,)``
        rngs : sequence of numpy.random.Generator, one per replica
            Replica ``k`` draws layer by layer (weights, then biases) from
            ``rngs[k]`` alone, so it is identical to a one-replica network seeded
            the same way.
        gain : float
            Passed to the initialiser (the activation's recommended gain).
        """
        if len(rngs) != self.replicas:
            raise ValueError(f"need one generator per replica ({self.replicas}), got {len(rngs)}")
        for k, rng in enumerate(rngs):
            for W, b in zip(self.W, self.b):
                W[k] = weight_init(W.shape[1], W.shape[2], rng=rng, gain=gain, dtype=self.dtype)
                b[k, 0] = bias_init(b.shape[2], rng=rng, dtype=self.dtype)
        return self

    def set_weights(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], replica: int = 0) -> "MLP":
        """Copy one replica's weights in, shapes ``(fan_in, fan_out)`` and ``(fan_out,)`` per layer."""
        for W, b, w_new, b_new in zip(self.W, self.b, weights, biases, strict=True):
            W[replica] = w_new
            b[replica, 0] = b_new
        return self

    # -- computation ------------------------------------------------------------------------
    def workspace(self, X: np.ndarray) -> Workspace:
        """The buffers for inputs shaped like ``X`` (allocated on first use)."""
        key = X.shape
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = Workspace(self.replicas, X.shape[-2], self.sizes, self.dtype)
        return ws

    def forward(self, X: np.ndarray, ws: Workspace | None = None) -> np.ndarray:
        """Compute the logits, caching ``z`` and ``a`` of every hidden layer in ``ws``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features) or (n_replicas, n_samples, n_features)
            The same inputs for every replica, or one batch per replica.

        Returns
        -------
        ndarray of shape (n_replicas, n_samples, n_outputs)
            A view of the workspace, overwritten by the next call with inputs of this shape.
        """
        ws = ws or self.workspace(X)
        a_prev = X
        for l in range(self.n_layers - 1):
            z = np.matmul(a_prev, self.W[l], out=ws.z[l])
            z += self.b[l]
            a_prev = self.activation.forward(z, out=ws.a[l])
        out = np.matmul(a_prev, self.W[-1], out=ws.logits)
        out += self.b[-1]
        return out

    def gradients(self, X: np.ndarray, Y: np.ndarray, loss: Loss) -> np.ndarray:
        """Forward and backward pass: fill :attr:`dW` and :attr:`db`, return the loss.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features) or (n_replicas, n_samples, n_features)
        Y : ndarray of shape (n_samples, n_outputs) or (n_replicas, n_samples, n_outputs)
            Encoded targets (see :mod:`nnexp.losses`).
        loss : Loss

        Returns
        -------
        ndarray of shape (n_replicas,)
            The mean loss over the batch for each replica, before the update.
        """
        ws = self.workspace(X)
        logits = self.forward(X, ws)
        value = loss.value_and_grad(logits, Y, ws.delta_out)
        delta = ws.delta_out
        for l in range(self.n_layers - 1, -1, -1):
            a_prev = X if l == 0 else ws.a[l - 1]
            a_prev_T = a_prev.T if a_prev.ndim == 2 else a_prev.transpose(0, 2, 1)
            np.matmul(a_prev_T, delta, out=self.dW[l])
            np.matmul(ws.ones, delta, out=self.db[l])  # the batch sum, as one small gemm per replica
            if l > 0:
                dA = np.matmul(delta, self.W[l].transpose(0, 2, 1), out=ws.dA[l - 1])
                dA *= self.activation.derivative(ws.z[l - 1], ws.a[l - 1], out=ws.deriv[l - 1])
                delta = dA
        return value

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        """Logits of shape (n_replicas, n_samples, n_outputs), a fresh array."""
        return self.forward(X).copy()
