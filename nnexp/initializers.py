"""Weight initialisers, keyed by their config name in :data:`INITIALIZERS`.

Each initialiser is called as ``init(fan_in, fan_out, *, rng, gain, dtype, **params)``
and returns an ``ndarray of shape (fan_in, fan_out)``: weights are stored
``W[fan_in, fan_out]`` so that ``z = a_prev @ W + b``. ``gain`` is the
activation's recommended gain (PyTorch's ``calculate_gain`` table) unless the
config sets ``init.gain``; initialisers that use no gain ignore it.

Randomness comes only from the ``rng`` argument (a ``numpy.random.Generator``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Initializer", "INITIALIZERS", "get_initializer", "auto_initializer", "BIAS_INITIALIZERS"]


@dataclass(frozen=True)
class Initializer:
    """One initialiser.

    Attributes
    ----------
    name : str
    sample : callable ``(fan_in, fan_out, *, rng, gain, dtype, **params) -> ndarray``
    params : dict
        Parameter names and defaults.
    uses_gain : bool
        Whether the activation's gain scales the weights.
    """

    name: str
    sample: Callable[..., np.ndarray]
    params: dict = field(default_factory=dict)
    uses_gain: bool = True


def zeros(fan_in, fan_out, *, rng, gain, dtype):
    """All zeros. Every hidden unit then computes the same function: a baseline, not a choice."""
    return np.zeros((fan_in, fan_out), dtype=dtype)


def normal(fan_in, fan_out, *, rng, gain, dtype, std=1.0):
    r""":math:`W \sim \mathcal N(0, \mathrm{std}^2)`; the seed tutorial's standard normal at ``std=1``."""
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


def xavier_uniform(fan_in, fan_out, *, rng, gain, dtype):
    r"""Glorot/Xavier uniform: :math:`U(-l, l)`, :math:`l = g\sqrt{6/(\text{fan\_in} + \text{fan\_out})}`.

    Variance :math:`g^2 \cdot 2/(\text{fan\_in} + \text{fan\_out})`. Glorot & Bengio (2010),
    as ``torch.nn.init.xavier_uniform_``.
    """
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def he_normal(fan_in, fan_out, *, rng, gain, dtype):
    r"""He/Kaiming normal, fan-in mode: :math:`\mathcal N(0, g^2/\text{fan\_in})`.

    He et al. (2015), as ``torch.nn.init.kaiming_normal_(mode="fan_in")``; with
    the ReLU gain :math:`g = \sqrt2` the variance is :math:`2/\text{fan\_in}`.
    """
    std = gain / np.sqrt(fan_in)
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": Initializer("zeros", zeros, uses_gain=False),
    "normal": Initializer("normal", normal, {"std": 1.0}, uses_gain=False),
    "xavier_uniform": Initializer("xavier_uniform", xavier_uniform),
    "he_normal": Initializer("he_normal", he_normal),
}

#: Recommended initialiser per activation family (``init=auto``).
AUTO = {"relu": "he_normal", "sigmoid": "xavier_uniform", "linear": "xavier_uniform", "selu": "xavier_uniform"}


def auto_initializer(activation_family: str) -> str:
    """The initialiser ``init=auto`` picks for an activation family."""
    return AUTO[activation_family]


BIAS_INITIALIZERS = ("zeros", "constant")


def get_initializer(name: str, **params):
    """Look up an initialiser and bind its parameters (``None`` means the default).

    Returns a callable ``(fan_in, fan_out, *, rng, gain, dtype) -> ndarray``.

    Raises
    ------
    ValueError
        If ``name`` is unknown or a parameter does not apply to it.
    """
    try:
        spec = INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"init={name!r} is not known; choose one of: {', '.join(sorted([*INITIALIZERS, 'auto']))}") from None
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        takes = ", ".join(sorted(spec.params)) or "no parameters"
        raise ValueError(f"init.{unknown[0]} does not apply to init={name} (it takes {takes})")
    bound = {**spec.params, **given}

    def init(fan_in, fan_out, *, rng, gain, dtype):
        return spec.sample(fan_in, fan_out, rng=rng, gain=gain, dtype=dtype, **bound)

    init.spec = spec
    return init


def get_bias_initializer(name: str, value: float = 0.0):
    """Bias initialiser: ``zeros`` or ``constant`` (every bias ``value``).

    Returns a callable ``(fan_out, *, rng, dtype) -> ndarray of shape (fan_out,)``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`BIAS_INITIALIZERS`.
    """
    if name not in BIAS_INITIALIZERS:
        raise ValueError(f"init.bias={name!r} is not known; choose one of: {', '.join(BIAS_INITIALIZERS)}")
    fill = 0.0 if name == "zeros" else float(value)
    return lambda fan_out, *, rng, dtype: np.full(fan_out, fill, dtype=dtype)
