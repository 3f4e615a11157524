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

Fused passes: ``z_l += b_l; a_l = f(z_l)`` is one call,
:meth:`nnexp.activations.BoundActivation.bias_forward`, and so is
``delta_{l-1} *= f'(z_{l-1})``, :meth:`~nnexp.activations.BoundActivation.backward`.
For tanh and sigmoid layers where :mod:`nnexp.fastmath` takes its kernels
(large float64 arrays on x86-64) each is one pass over memory, and the backward
one also writes ``db_{l-1}``, each column summed in row order (instead of
``ones @ delta``); elsewhere they are NumPy's steps. ``z``, ``a`` and ``delta``
get the same bits either way.

Row blocks and threads
----------------------
A batch of at least ``2 * ROW_BLOCK`` rows (a full batch of digits, say) is
split into 2, 4, 8... equal row blocks (:func:`row_blocks`). Each block runs
its own forward and backward pass over its rows of the workspace, the
blocks' gradients are added in block order, and with a thread pool the blocks
run on threads at one BLAS thread each: NumPy releases the GIL inside its
matrix products and ufuncs, so the elementwise work (the activation, its
derivative, the softmax), which BLAS threads leave on one core, is shared too.
Blocks depend on the batch size only, so the result is the same with any
number of threads. Smaller batches take one block, the code path of old.

Replicas and bit-identity
-------------------------
Each replica is computed by the same sequence of operations on arrays of the
same shapes as a one-replica network: ``np.matmul`` on stacked arrays calls
the BLAS ``gemm`` once per replica with that replica's matrices, elementwise
ufuncs do not mix replicas, and every reduction runs over one replica's own
contiguous block (``db_l`` is ``ones @ delta_l``, one ``gemm`` per replica, or
the fused kernel's row-order sum, called once per replica).
So replica ``k`` of a stacked network is bit-identical to a one-replica
network with the same initial weights and the same batches
(:mod:`tests.test_replicas` checks it). The replicas need not share a
configuration: each may have its own initialiser and gain (:meth:`MLP.initialize`),
learning rate and weight decay (:mod:`nnexp.optimizers`), which is how a sweep
packs configurations into one network (:mod:`nnexp.packing`).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Sequence

import numpy as np

from .activations import BoundActivation
from .losses import Loss

__all__ = ["MLP", "Workspace", "row_blocks", "ROW_BLOCK"]


ROW_BLOCK = 512
"""Smallest number of rows per block of a batch split for the backward pass (see :func:`row_blocks`)."""


def row_blocks(n: int, min_rows: int = ROW_BLOCK) -> list[tuple[int, int]]:
    """Split ``n`` rows into equal blocks of at least ``min_rows`` rows.

    The number of blocks is the largest power of two ``c`` with
    ``n >= c * min_rows`` (at least 1), so that 2, 4 or 8 threads share them
    evenly. It depends on ``n`` alone, never on the number of threads: a network
    computes the same sums, in the same order, on any machine.

    Returns
    -------
    list of (start, stop)
        Half-open row ranges covering ``0..n``, in order.
    """
    c = 1
    while n >= 2 * c * min_rows:
        c *= 2
    edges = [n * i // c for i in range(c + 1)]
    return list(zip(edges[:-1], edges[1:]))


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
    blocks : list of (start, stop)
        The batch's row blocks (:func:`row_blocks`).
    block_dW, block_db : list (one per block after the first) of lists like ``MLP.dW``, ``MLP.db``
        Each block's share of the gradients; the first block writes into ``MLP.dW``/``MLP.db``.
    """

    def __init__(self, replicas: int, batch: int, sizes: Sequence[int], dtype, min_rows: int = ROW_BLOCK):
        hidden = sizes[1:-1]
        shape = lambda h: (replicas, batch, h)  # noqa: E731
        self.z = [np.empty(shape(h), dtype) for h in hidden]
        self.a = [np.empty(shape(h), dtype) for h in hidden]
        self.deriv = [np.empty(shape(h), dtype) for h in hidden]
        self.dA = [np.empty(shape(h), dtype) for h in hidden]
        self.logits = np.empty(shape(sizes[-1]), dtype)
        self.delta_out = np.empty(shape(sizes[-1]), dtype)
        self.ones = np.ones((1, batch), dtype)
        self.blocks = row_blocks(batch, min_rows)
        layers = list(zip(sizes[:-1], sizes[1:]))
        self.block_dW = [[np.empty((replicas, i, o), dtype) for i, o in layers] for _ in self.blocks[1:]]
        self.block_db = [[np.empty((replicas, 1, o), dtype) for _, o in layers] for _ in self.blocks[1:]]


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
    min_block_rows : int
        The least number of rows of a row block (:data:`ROW_BLOCK`); set before the first pass.
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
        self.min_block_rows = ROW_BLOCK
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

    def initialize(self, weight_init, bias_init, rngs: Sequence[np.random.Generator], *, gain) -> "MLP":
        """Draw every replica's weights from its own generator.

        Parameters
        ----------
        weight_init : callable ``(fan_in, fan_out, *, rng, gain, dtype) -> ndarray``, or a sequence of them
        bias_init : callable ``(fan_out, *, rng, dtype) -> ndarray of shape (fan_out,)``, or a sequence of them
            A sequence gives one initialiser per replica (packed configurations, :mod:`nnexp.packing`).
        rngs : sequence of numpy.random.Generator, one per replica
            Replica ``k`` draws layer by layer (weights, then biases) from
            ``rngs[k]`` alone, with its own initialisers and gain, so it is
            identical to a one-replica network seeded and initialised the same way.
        gain : float or sequence of float (one per replica)
            Passed to the initialiser (the activation's recommended gain, or the configured one).

        Raises
        ------
        ValueError
            If a sequence does not have one entry per replica.
        """
        def each(value, name):
            if callable(value) or np.ndim(value) == 0:
                return [value] * self.replicas
            if len(value) != self.replicas:
                raise ValueError(f"need one {name} per replica ({self.replicas}), got {len(value)}")
            return list(value)

        per = zip(each(rngs, "generator"), each(weight_init, "weight initialiser"),
                  each(bias_init, "bias initialiser"), each(gain, "gain"))
        for k, (rng, w_init, b_init, g) in enumerate(per):
            for W, b in zip(self.W, self.b):
                W[k] = w_init(W.shape[1], W.shape[2], rng=rng, gain=g, dtype=self.dtype)
                b[k, 0] = b_init(b.shape[2], rng=rng, dtype=self.dtype)
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
            ws = self._workspaces[key] = Workspace(self.replicas, X.shape[-2], self.sizes, self.dtype,
                                                   self.min_block_rows)
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
            a_prev = self.activation.bias_forward(z, self.b[l], out=ws.a[l])  # z += b; a = f(z)
        out = np.matmul(a_prev, self.W[-1], out=ws.logits)
        out += self.b[-1]
        return out

    def gradients(self, X: np.ndarray, Y: np.ndarray, loss: Loss, executor: Executor | None = None) -> np.ndarray:
        """Forward and backward pass: fill :attr:`dW` and :attr:`db`, return the loss.

        A batch of at least ``2 * ROW_BLOCK`` rows is processed in row blocks
        (:func:`row_blocks`): each block runs its own forward and backward pass
        into its rows of the workspace and its own gradient buffers, and the
        blocks' gradients and losses are then added in block order. Given an
        ``executor``, every block after the first runs on it while the calling
        thread runs the first: NumPy releases the GIL in matrix products and
        ufuncs, so two threads keep two cores busy with the elementwise work
        too (the activation, its derivative, the softmax), which BLAS threads
        alone leave on one core. Blocks are fixed by the batch size, so the result
        does not depend on the executor or its number of threads.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features) or (n_replicas, n_samples, n_features)
        Y : ndarray of shape (n_samples, n_outputs) or (n_replicas, n_samples, n_outputs)
            Encoded targets (see :mod:`nnexp.losses`).
        loss : Loss
        executor : concurrent.futures.Executor, optional
            Runs the blocks after the first; without one they run in turn. Its
            threads should use one BLAS thread each (``threadpoolctl``).

        Returns
        -------
        ndarray of shape (n_replicas,)
            The mean loss over the batch for each replica, before the update.
        """
        ws = self.workspace(X)
        n = X.shape[-2]
        blocks = ws.blocks
        if len(blocks) == 1:
            return self._backprop(X, Y, loss, ws, 0, n, n, self.dW, self.db)
        args = [(X, Y, loss, ws, r0, r1, n, dW, db)
                for (r0, r1), dW, db in zip(blocks, [self.dW, *ws.block_dW], [self.db, *ws.block_db])]
        if executor is None:
            values = [self._backprop(*a) for a in args]
        else:
            errstate = np.geterr()  # NumPy's error state is per thread; the blocks follow the caller's
            futures = [executor.submit(self._backprop, *a, errstate=errstate) for a in args[1:]]
            values = [self._backprop(*args[0])] + [f.result() for f in futures]
        value = values[0]
        for v, dWs, dbs in zip(values[1:], ws.block_dW, ws.block_db):
            value = value + v
            for l in range(self.n_layers):
                self.dW[l] += dWs[l]
                self.db[l] += dbs[l]
        return value

    def _backprop(self, X, Y, loss, ws: Workspace, r0: int, r1: int, n: int, dW, db, errstate=None) -> np.ndarray:
        """Forward and backward pass over rows ``r0:r1`` of a batch of ``n``, gradients into ``dW``/``db``."""
        if errstate is not None:
            with np.errstate(**errstate):
                return self._backprop(X, Y, loss, ws, r0, r1, n, dW, db)
        rows = slice(r0, r1)
        X, Y = X[..., rows, :], Y[..., rows, :]
        a_prev = X
        for l in range(self.n_layers - 1):
            z = np.matmul(a_prev, self.W[l], out=ws.z[l][:, rows])
            a_prev = self.activation.bias_forward(z, self.b[l], out=ws.a[l][:, rows])  # z += b; a = f(z)
        logits = np.matmul(a_prev, self.W[-1], out=ws.logits[:, rows])
        logits += self.b[-1]
        delta = ws.delta_out[:, rows]
        value = loss.value_and_grad(logits, Y, delta, n=n)
        ones = ws.ones[:, rows]
        summed = False  # whether the fused backward kernel wrote db[l] already
        for l in range(self.n_layers - 1, -1, -1):
            a_prev = X if l == 0 else ws.a[l - 1][:, rows]
            a_prev_T = a_prev.T if a_prev.ndim == 2 else a_prev.transpose(0, 2, 1)
            np.matmul(a_prev_T, delta, out=dW[l])
            if not summed:
                np.matmul(ones, delta, out=db[l])  # the batch sum, as one small gemm per replica
            if l > 0:
                dA = np.matmul(delta, self.W[l].transpose(0, 2, 1), out=ws.dA[l - 1][:, rows])
                # dA *= f'(z), and with a fused kernel db[l - 1] = the batch sum of dA in the same pass
                summed = self.activation.backward(dA, ws.z[l - 1][:, rows], a_prev, ws.deriv[l - 1][:, rows],
                                                  db[l - 1])
                delta = dA
        return value

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        """Logits of shape (n_replicas, n_samples, n_outputs), a fresh array."""
        return self.forward(X).copy()
