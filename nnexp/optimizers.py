"""Gradient-descent optimisers and learning-rate schedules.

Every optimiser updates a list of parameter arrays in place from a list of
gradients of the same shapes, ``step(grads, lr)``. The update rules follow
scikit-learn's ``sklearn.neural_network._stochastic_optimizers`` exactly, so
that nnexp and ``MLPClassifier`` agree step for step:

========== ==================================================================
sgd        :math:`\\theta \\leftarrow \\theta - \\eta g`
momentum   :math:`v \\leftarrow \\mu v - \\eta g,\\ \\theta \\leftarrow \\theta + v` (Polyak, 1964)
nesterov   :math:`v \\leftarrow \\mu v - \\eta g,\\ \\theta \\leftarrow \\theta + \\mu v - \\eta g`
           (Sutskever et al., 2013)
adam       :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g,\\ v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2,`
           :math:`\\theta \\leftarrow \\theta - \\eta\\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}\\frac{m}{\\sqrt v + \\epsilon}`
           (Kingma & Ba, 2015, Algorithm 1 in its efficient form, Section 2: :math:`\\epsilon` is added to
           :math:`\\sqrt v`, not to the bias-corrected :math:`\\sqrt{\\hat v}`)
========== ==================================================================

L2 weight decay :math:`\\lambda` adds :math:`\\lambda W` to the gradient of each
weight matrix (not the biases) before the update; it is the gradient of
:math:`\\tfrac{\\lambda}{2}\\lVert W\\rVert^2` added to the loss.

Per-replica values (configurations packed into one network, :mod:`nnexp.packing`): the learning rate and the
weight decay may be arrays of shape ``(n_replicas,)``, one value per replica, applied as ``(n_replicas, 1, 1)``
in the parameter's dtype. Replica ``k`` then takes exactly the floating-point operations it takes alone with the
scalar ``lr[k]`` (a Python float meets a float32 array as float32, NEP 50; the array is cast the same way), so it is
bit-identical to training alone. The schedules compute per-replica values elementwise with the scalar formula.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_schedule"]


class Optimizer:
    """Base class: holds the parameters it updates in place.

    Parameters
    ----------
    params : sequence of ndarray
        Parameter arrays, updated in place by :meth:`step`. Each has the
        replica axis first: ``(n_replicas, ...)``.
    weight_decay : float or ndarray of shape (n_replicas,), default 0
        L2 coefficient :math:`\\lambda \\ge 0`, one for all replicas or one per replica.
    decay_mask : sequence of bool, optional
        Which parameters get weight decay (by default all).
    """

    def __init__(self, params: Sequence[np.ndarray], *, weight_decay: float = 0.0, decay_mask=None):
        self.params = list(params)
        if np.ndim(weight_decay) == 0:
            self.weight_decay = float(weight_decay)
            self._decay_replicas = None
        else:  # one per replica: only replicas with a non-zero decay touch their gradient, as each would alone
            wd = np.asarray(weight_decay, dtype=np.float64)
            self.weight_decay = wd
            self._decay_replicas = [(k, float(wd[k])) for k in np.flatnonzero(wd)]
        self.decay_mask = list(decay_mask) if decay_mask is not None else [True] * len(self.params)

    def _decayed(self, grads):
        if self._decay_replicas is not None:
            for p, g, d in zip(self.params, grads, self.decay_mask):
                if d:
                    for k, wd in self._decay_replicas:
                        g[k] += wd * p[k]
        elif self.weight_decay:
            for p, g, d in zip(self.params, grads, self.decay_mask):
                if d:
                    g += self.weight_decay * p
        return grads

    def step(self, grads: Sequence[np.ndarray], lr) -> None:
        """Apply one update with learning rate ``lr`` (a float, or one per replica); ``grads`` may be overwritten."""
        raise NotImplementedError

    def reset(self, replica: int) -> None:
        """Forget the optimiser state of one replica (after it diverged)."""


def per_replica(value, p: np.ndarray):
    """``value`` as :meth:`Optimizer.step` applies it to parameter ``p`` of shape (n_replicas, ...): a scalar as
    it is, an array of shape (n_replicas,) as shape (n_replicas, 1, ...) in ``p``'s dtype."""
    if np.ndim(value) == 0:
        return value
    return np.asarray(value).astype(p.dtype).reshape((-1,) + (1,) * (p.ndim - 1))


class SGD(Optimizer):
    """Plain gradient descent, :math:`\\theta \\leftarrow \\theta - \\eta g`."""

    def step(self, grads, lr):
        for p, g in zip(self.params, self._decayed(grads)):
            g *= per_replica(lr, p)
            p -= g


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's with ``nesterov=True`` (scikit-learn's formulation).

    Parameters
    ----------
    momentum : float in [0, 1)
    nesterov : bool
    """

    def __init__(self, params, *, momentum: float = 0.9, nesterov: bool = False, **kw):
        super().__init__(params, **kw)
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.velocities = [np.zeros_like(p) for p in self.params]
        self._tmp = [np.empty_like(p) for p in self.params]

    def step(self, grads, lr):
        mu = self.momentum
        for p, g, v, t in zip(self.params, self._decayed(grads), self.velocities, self._tmp):
            g *= per_replica(lr, p)
            v *= mu
            v -= g
            if self.nesterov:
                np.multiply(v, mu, out=t)
                t -= g
                p += t
            else:
                p += v

    def reset(self, replica):
        for v in self.velocities:
            v[replica] = 0


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction folded into the step size.

    Parameters
    ----------
    beta1, beta2 : float in [0, 1)
        Decay rates of the first and second moment estimates.
    eps : float > 0
    """

    def __init__(self, params, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kw):
        super().__init__(params, **kw)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self._tmp = [np.empty_like(p) for p in self.params]

    def step(self, grads, lr):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # per replica: the scalar formula elementwise (float64, the same operations in the same order)
        lr_t = (np.asarray(lr, np.float64) if np.ndim(lr) else lr) * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v, t in zip(self.params, self._decayed(grads), self.m, self.v, self._tmp):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            np.multiply(g, g, out=t)
            t *= 1 - b2
            v += t
            np.sqrt(v, out=t)
            t += self.eps
            np.divide(m, t, out=t)
            t *= per_replica(lr_t, p)
            p -= t

    def reset(self, replica):
        """Zero one replica's moment estimates; the step count ``t`` is shared, so its bias correction is not restarted."""
        for a in (*self.m, *self.v):
            a[replica] = 0


#: Optimiser config name -> (class, parameter names it takes from the config).
OPTIMIZERS: dict[str, tuple[type[Optimizer], tuple[str, ...]]] = {
    "sgd": (SGD, ()),
    "momentum": (Momentum, ("momentum",)),
    "nesterov": (Momentum, ("momentum",)),
    "adam": (Adam, ("beta1", "beta2", "eps")),
}


def make_optimizer(name: str, params, *, weight_decay=0.0, decay_mask=None, **hyper) -> Optimizer:
    """Build the optimiser ``name`` over ``params``; ``None`` hyper-parameters take defaults.

    Raises
    ------
    ValueError
        If ``name`` is unknown or a hyper-parameter does not apply to it.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not known; choose one of: {', '.join(sorted(OPTIMIZERS))}")
    cls, takes = OPTIMIZERS[name]
    given = {k: v for k, v in hyper.items() if v is not None}
    extra = sorted(set(given) - set(takes))
    if extra:
        raise ValueError(f"optimizer.{extra[0]} does not apply to optimizer={name} (it takes {', '.join(takes) or 'no extra parameters'})")
    if name == "nesterov":
        given["nesterov"] = True
    return cls(params, weight_decay=weight_decay, decay_mask=decay_mask, **given)


def _constant(lr, epoch, epochs, **_):
    return lr


def _step(lr, epoch, epochs, *, step_size, gamma, **_):
    return lr * gamma ** (epoch // step_size)


def _cosine(lr, epoch, epochs, *, min_lr, **_):
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


#: Learning-rate schedules: ``(lr, epoch, epochs, **params) -> lr at that epoch`` (epoch counted from 0).
#: ``step``: :math:`\eta\gamma^{\lfloor e/s \rfloor}`; ``cosine``: :math:`\eta_{min} + \frac12(\eta-\eta_{min})(1+\cos(\pi e/E))`
#: (Loshchilov & Hutter, 2017, without restarts).
SCHEDULES: dict[str, Callable[..., float]] = {"constant": _constant, "step": _step, "cosine": _cosine}


def make_schedule(name: str, lr, epochs: int, **params) -> Callable[[int], float]:
    """Return ``epoch -> learning rate`` for schedule ``name``.

    ``lr`` is a float, or an ndarray of shape (n_replicas,) (packed configurations): the schedule then returns
    an ndarray of shape (n_replicas,), each value computed with the same float64 operations as the scalar.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`SCHEDULES`.
    """
    if name not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={name!r} is not known; choose one of: {', '.join(sorted(SCHEDULES))}")
    fn = SCHEDULES[name]
    if np.ndim(lr):
        lr = np.asarray(lr, dtype=np.float64)
    return lambda epoch: fn(lr, epoch, epochs, **params)
