"""Activation functions and their derivatives, kept side by side in one registry.

Convention
----------
Every activation is an :class:`Activation` entry of :data:`ACTIVATIONS`, keyed by
its config name. Arrays are named as in the rest of nnexp: ``z`` is the
pre-activation (``z = a_prev @ W + b``) and ``a = f(z)`` the activation.

``forward(z, out=None, **params)`` returns ``f(z)``.
``derivative(z, a, out=None, **params)`` returns ``f'(z)``, the derivative of the
activation with respect to the *pre-activation*, evaluated elementwise. It is
given both the cached ``z`` and the cached ``a = f(z)`` from the forward pass so
that each function can use whichever is cheaper (``sigmoid'(z) = a (1 - a)``,
``tanh'(z) = 1 - a**2``) without recomputing the forward. Where ``out`` is given
the result is written into it (it must not alias ``z`` or ``a``) and returned.

All functions accept float32 and float64 arrays of any shape and are
numerically stable for pre-activations in ``[-1e4, 1e4]``: no overflow, no
invalid value, no NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "BoundActivation"]


@dataclass(frozen=True)
class Activation:
    """One activation function: forward, derivative and metadata.

    Attributes
    ----------
    name : str
        The config name (``activation=<name>``).
    forward : callable ``(z, out=None, **params) -> ndarray``
    derivative : callable ``(z, a, out=None, **params) -> ndarray``
        ``f'(z)``, elementwise, same shape as ``z``.
    gain : callable ``(**params) -> float``
        Recommended initialisation gain, as in PyTorch's
        ``torch.nn.init.calculate_gain``.
    params : dict
        Parameter names and defaults, e.g. ``{"alpha": 0.01}``.
    bounds : tuple of (float, float) or None
        Output range when both ends are finite (used for the saturation
        diagnostic), else None.
    family : str
        ``"relu"`` (piecewise-linear with a zero or near-zero negative part:
        He init, dead-unit diagnostic), ``"sigmoid"`` (saturating: Xavier
        init), ``"selu"`` (LeCun normal) or ``"linear"``.
    """

    name: str
    forward: Callable[..., np.ndarray]
    derivative: Callable[..., np.ndarray]
    gain: Callable[..., float]
    params: dict = field(default_factory=dict)
    bounds: tuple[float, float] | None = None
    family: str = "sigmoid"


@dataclass(frozen=True)
class BoundActivation:
    """An :class:`Activation` with its parameters fixed.

    ``forward(z, out=None)`` and ``derivative(z, a, out=None)`` as in the module
    docstring; ``gain`` is a float.
    """

    spec: Activation
    params: dict

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def gain(self) -> float:
        return float(self.spec.gain(**self.params))

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.spec.forward(z, out, **self.params)

    def derivative(self, z: np.ndarray, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.spec.derivative(z, a, out, **self.params)


def _out(z: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.empty_like(z) if out is None else out


# --- identity -----------------------------------------------------------------
def identity(z, out=None):
    r"""Identity, :math:`f(z) = z`; range :math:`(-\infty, \infty)`; :math:`f'(z) = 1`."""
    out = _out(z, out)
    np.copyto(out, z)
    return out


def identity_derivative(z, a, out=None):
    out = _out(z, out)
    out.fill(1)
    return out


# --- sigmoid ------------------------------------------------------------------
def sigmoid(z, out=None):
    r"""Logistic sigmoid, :math:`\sigma(z) = 1 / (1 + e^{-z})`; range (0, 1).

    Computed as :math:`\tfrac12(1 + \tanh(z/2))`, which is exact, never overflows
    and saturates to 0 or 1 without warnings.
    Derivative :math:`\sigma'(z) = \sigma(z)(1 - \sigma(z))`.
    """
    out = _out(z, out)
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def sigmoid_derivative(z, a, out=None):
    out = _out(z, out)
    np.subtract(1, a, out=out)
    out *= a
    return out


# --- tanh ---------------------------------------------------------------------
def tanh(z, out=None):
    r"""Hyperbolic tangent; range (-1, 1); :math:`\tanh'(z) = 1 - \tanh^2(z)`."""
    return np.tanh(z, out=_out(z, out))


def tanh_derivative(z, a, out=None):
    out = _out(z, out)
    np.multiply(a, a, out=out)
    np.subtract(1, out, out=out)
    return out


# --- relu ---------------------------------------------------------------------
def relu(z, out=None):
    r"""Rectified linear unit, :math:`f(z) = \max(0, z)`; range :math:`[0, \infty)`.

    Derivative 1 for :math:`z > 0` and 0 otherwise (0 at :math:`z = 0`, as in
    scikit-learn and PyTorch). Nair & Hinton (2010).
    """
    return np.maximum(z, 0, out=_out(z, out))


def relu_derivative(z, a, out=None):
    out = _out(z, out)
    np.greater(z, 0, out=out)
    return out


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation("identity", identity, identity_derivative, lambda: 1.0, family="linear"),
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_derivative, lambda: 1.0, bounds=(0.0, 1.0)),
    "tanh": Activation("tanh", tanh, tanh_derivative, lambda: 5.0 / 3.0, bounds=(-1.0, 1.0)),
    "relu": Activation("relu", relu, relu_derivative, lambda: float(np.sqrt(2.0)), family="relu"),
}


def get_activation(name: str, **params) -> BoundActivation:
    """Look up an activation by config name and bind its parameters.

    Parameters set to ``None`` take the activation's default.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`ACTIVATIONS` or a parameter is not one the
        activation takes.
    """
    try:
        spec = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation={name!r} is not known; choose one of: {', '.join(sorted(ACTIVATIONS))}") from None
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        takes = ", ".join(sorted(spec.params)) or "no parameters"
        raise ValueError(f"activation.{unknown[0]} does not apply to activation={name} (it takes {takes})")
    return BoundActivation(spec, {**spec.params, **given})
