r"""Activation functions and their derivatives, kept side by side in one registry.

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
At a kink (``relu`` at 0, ``hard_tanh`` at +-1, ...) the derivative is the one
PyTorch's autograd uses; each function's docstring says which.

All functions accept float32 and float64 arrays of any shape, return the
input's dtype, and are numerically stable for pre-activations in
``[-1e4, 1e4]``: no overflow, no invalid value, no division by zero, no NaN
(exponentials only ever see non-positive arguments, or are computed through
``scipy.special.expit`` / ``ndtr``, which saturate cleanly). Scalars are Python
floats so that float32 stays float32 under NumPy's promotion rules (NEP 50).

``tanh``, the logistic sigmoid (``expit``) and ``exp`` go through :mod:`nnexp.fastmath`: NumPy's and
SciPy's loops, except for large float64 arrays on x86-64 CPUs with AVX2 and FMA3, which take a vectorised
kernel within a few ulp of them (faster than NumPy's scalar loops below AVX-512, and than its AVX-512 ones).
In a network, tanh and sigmoid layers then also take fused kernels (:meth:`BoundActivation.bias_forward`,
:meth:`BoundActivation.backward`): the bias add with the activation, the derivative product with the bias
gradient.

Families and initialisation
---------------------------
``family`` decides what ``init=auto`` picks (:data:`nnexp.initializers.AUTO`)
and which diagnostics the trainer records:

==========  =====================================================  ==================  ===================
family      activations                                            ``init=auto``       diagnostic
==========  =====================================================  ==================  ===================
``linear``  identity                                               ``xavier_uniform``  --
``sigmoid`` sigmoid, tanh, softsign, hard_sigmoid, hard_tanh       ``xavier_uniform``  saturation (bounds)
``relu``    relu, leaky_relu                                       ``he_normal``       dead units
``smooth``  elu, gelu, silu, mish, softplus                        ``he_normal``       --
``selu``    selu                                                   ``lecun_normal``    --
==========  =====================================================  ==================  ===================

``relu`` is kept for the piecewise-linear units whose negative side has a zero
(or, for leaky_relu, a constant tiny) slope: a unit whose pre-activation is
``<= 0`` for every sample has stopped learning, which the dead-unit diagnostic
counts. The ``smooth`` units (ELU and the smooth ReLU variants) still pass a
gradient for negative inputs, so "dead" would be the wrong word for them; they
are scaled by fan-in like ReLU (He et al., 2015) with their own gain, which is 1
because neither ``torch.nn.init.calculate_gain`` nor their papers give another
(Clevert et al. used He's ``sqrt 2``: set ``init.gain=1.4142`` to reproduce).
SELU needs exactly LeCun normal, variance ``1/fan_in``, for its self-normalising
fixed point (Klambauer et al., 2017).

``gain`` is PyTorch's ``torch.nn.init.calculate_gain`` table where it has an
entry (linear/sigmoid 1, tanh 5/3, relu sqrt 2, leaky_relu sqrt(2/(1+alpha^2)),
selu 3/4) and 1 elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import fastmath

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "BoundActivation", "FAMILIES"]

#: The activation families (see the module docstring).
FAMILIES = ("linear", "sigmoid", "relu", "smooth", "selu")


def expit(x, out=None):
    """The logistic sigmoid, ``scipy.special.expit`` or its vectorised kernel (:func:`nnexp.fastmath.expit`)."""
    return fastmath.expit(x, out=out)


def ndtr(x, out=None):
    """``scipy.special.ndtr`` (the standard normal CDF), imported on first use."""
    from scipy.special import ndtr as _ndtr

    return _ndtr(x, out=out)


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
        One of :data:`FAMILIES`: ``"relu"`` (piecewise-linear with a zero or
        near-zero negative part: He init, dead-unit diagnostic), ``"smooth"``
        (unbounded above, smooth negative part: fan-in init), ``"sigmoid"``
        (bounded, saturating: Xavier init), ``"selu"`` (LeCun normal) or
        ``"linear"``.
    check : callable ``(**params) -> str or None``, optional
        Returns an error message when a parameter value is out of range.
    fused : str or None
        The :mod:`nnexp.fastmath` kernel name (``tanh``, ``expit``) of an activation whose bias add and
        activation, and derivative product and bias gradient, have fused kernels
        (:meth:`BoundActivation.bias_forward`, :meth:`BoundActivation.backward`).
    """

    name: str
    forward: Callable[..., np.ndarray]
    derivative: Callable[..., np.ndarray]
    gain: Callable[..., float]
    params: dict = field(default_factory=dict)
    bounds: tuple[float, float] | None = None
    family: str = "sigmoid"
    check: Callable[..., str | None] | None = None
    fused: str | None = None


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

    def bias_forward(self, z: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``z += b`` (``b`` broadcast over the rows), then ``out = f(z)``; returns ``out``.

        One pass over memory with a fused kernel where :func:`nnexp.fastmath.bias_activation` takes the arrays
        (tanh, sigmoid; large float64 arrays on x86-64), two otherwise: the same bits either way.
        """
        if self.spec.fused is not None and fastmath.bias_activation(self.spec.fused, z, b, out):
            return out
        z += b
        return self.forward(z, out)

    def backward(self, dA: np.ndarray, z: np.ndarray, a: np.ndarray, deriv: np.ndarray, db: np.ndarray) -> bool:
        """``dA *= f'(z)`` in place (``deriv``: a buffer like ``z`` for ``f'(z)``); True if it also wrote ``db``.

        With a fused kernel (:func:`nnexp.fastmath.activation_backward`: tanh, sigmoid; large float64 arrays on
        x86-64) one pass computes the product and writes ``db`` (shape (n_replicas, 1, n_units)), the sum of the
        product over the rows, and returns True; otherwise ``db`` is left alone and False returned. ``dA``
        gets the same bits either way.
        """
        if self.spec.fused is not None and fastmath.activation_backward(self.spec.fused, dA, a, db):
            return True
        dA *= self.derivative(z, a, out=deriv)
        return False


def _out(z: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.empty_like(z) if out is None else out


def _softplus(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r""":math:`\log(1 + e^z)` as :math:`\max(z, 0) + \log(1 + e^{-|z|})`: the exponent is never positive."""
    out = _out(z, out)
    np.abs(z, out=out)
    np.negative(out, out=out)
    fastmath.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(z, 0)
    return out


# --- identity -----------------------------------------------------------------
def identity(z, out=None):
    r"""Identity, :math:`f(z) = z`.

    Range :math:`(-\infty, \infty)`; derivative :math:`f'(z) = 1`. A network of
    identity units is linear: the baseline every nonlinearity must beat.
    Gain 1 (``calculate_gain("linear")``).
    """
    out = _out(z, out)
    np.copyto(out, z)
    return out


def identity_derivative(z, a, out=None):
    out = _out(z, out)
    out.fill(1)
    return out


# --- sigmoid ------------------------------------------------------------------
def sigmoid(z, out=None):
    r"""Logistic sigmoid, :math:`\sigma(z) = 1 / (1 + e^{-z})`.

    Range :math:`(0, 1)`; derivative :math:`\sigma'(z) = \sigma(z)(1 - \sigma(z)) \le 1/4`,
    computed from the cached ``a``. Computed by ``scipy.special.expit`` (as
    scikit-learn's ``logistic``), which never overflows and keeps full relative
    precision for negative ``z`` (on x86-64 with AVX2, large float64 arrays take
    :func:`nnexp.fastmath.expit`, which does the same within 4 ulp). Gain 1 (``calculate_gain("sigmoid")``).

    References
    ----------
    Rumelhart, Hinton & Williams (1986), "Learning representations by back-propagating errors", Nature 323.
    """
    return expit(z, out=_out(z, out))


def sigmoid_derivative(z, a, out=None):
    out = _out(z, out)
    np.subtract(1, a, out=out)
    out *= a
    return out


# --- tanh ---------------------------------------------------------------------
def tanh(z, out=None):
    r"""Hyperbolic tangent, :math:`\tanh(z) = (e^z - e^{-z})/(e^z + e^{-z})`.

    Range :math:`(-1, 1)`, zero-centred; derivative :math:`1 - \tanh^2(z)`, from
    the cached ``a``. Gain 5/3 (``calculate_gain("tanh")``). Computed by :func:`nnexp.fastmath.tanh`
    (``np.tanh``, or a vectorised kernel within 3 ulp of it for large float64 arrays on x86-64 with AVX2).

    References
    ----------
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp", Neural Networks: Tricks of the Trade.
    """
    return fastmath.tanh(z, out=_out(z, out))


def tanh_derivative(z, a, out=None):
    return fastmath.tanh_derivative(a, out=_out(z, out))


# --- relu ---------------------------------------------------------------------
def relu(z, out=None):
    r"""Rectified linear unit, :math:`f(z) = \max(0, z)`.

    Range :math:`[0, \infty)`; derivative 1 for :math:`z > 0` and 0 otherwise
    (0 at :math:`z = 0`, as scikit-learn and PyTorch). Gain :math:`\sqrt 2`
    (``calculate_gain("relu")``).

    References
    ----------
    Nair & Hinton (2010), "Rectified linear units improve restricted Boltzmann machines", ICML.
    """
    return np.maximum(z, 0, out=_out(z, out))


def relu_derivative(z, a, out=None):
    out = _out(z, out)
    np.greater(z, 0, out=out)
    return out


# --- leaky_relu ---------------------------------------------------------------
def leaky_relu(z, out=None, *, alpha=0.01):
    r"""Leaky ReLU, :math:`f(z) = z` for :math:`z > 0`, :math:`\alpha z` otherwise.

    Range :math:`(-\infty, \infty)` for :math:`\alpha > 0`; derivative 1 for
    :math:`z > 0`, :math:`\alpha` otherwise (:math:`\alpha` at 0, as PyTorch).
    Gain :math:`\sqrt{2 / (1 + \alpha^2)}` (``calculate_gain("leaky_relu", alpha)``).

    References
    ----------
    Maas, Hannun & Ng (2013), "Rectifier nonlinearities improve neural network acoustic models", ICML workshop.
    """
    out = _out(z, out)
    np.multiply(z, alpha, out=out)
    np.copyto(out, z, where=z > 0)
    return out


def leaky_relu_derivative(z, a, out=None, *, alpha=0.01):
    out = _out(z, out)
    out.fill(alpha)
    np.copyto(out, 1, where=z > 0)
    return out


# --- elu ----------------------------------------------------------------------
def elu(z, out=None, *, alpha=1.0):
    r"""Exponential linear unit, :math:`f(z) = z` for :math:`z > 0`, :math:`\alpha(e^z - 1)` otherwise.

    Range :math:`(-\alpha, \infty)`; derivative 1 for :math:`z > 0`,
    :math:`\alpha e^z` otherwise (:math:`\alpha` at 0, as PyTorch). The
    exponential only sees :math:`\min(z, 0)` and is taken as ``expm1``. Gain 1
    (no ``calculate_gain`` entry; see the module docstring).

    References
    ----------
    Clevert, Unterthiner & Hochreiter (2016), "Fast and accurate deep network learning by exponential
    linear units (ELUs)", ICLR.
    """
    out = _out(z, out)
    np.minimum(z, 0, out=out)
    np.expm1(out, out=out)
    out *= alpha
    np.copyto(out, z, where=z > 0)
    return out


def elu_derivative(z, a, out=None, *, alpha=1.0):
    out = _out(z, out)
    np.minimum(z, 0, out=out)
    fastmath.exp(out, out=out)
    out *= alpha
    np.copyto(out, 1, where=z > 0)
    return out


# --- selu ---------------------------------------------------------------------
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def selu(z, out=None):
    r"""Scaled ELU, :math:`f(z) = \lambda z` for :math:`z > 0`, :math:`\lambda\alpha(e^z - 1)` otherwise.

    :math:`\lambda = 1.0507009873554805`, :math:`\alpha = 1.6732632423543772`
    (the constants that make zero mean, unit variance a fixed point). Range
    :math:`(-\lambda\alpha, \infty)`; derivative :math:`\lambda` for
    :math:`z > 0`, :math:`\lambda\alpha e^z` otherwise. Gain 3/4
    (``calculate_gain("selu")``), but the self-normalising property needs LeCun
    normal init, which ``init=auto`` picks and which uses no gain.

    References
    ----------
    Klambauer, Unterthiner, Mayr & Hochreiter (2017), "Self-normalizing neural networks", NeurIPS.
    """
    out = elu(z, out, alpha=SELU_ALPHA)
    out *= SELU_LAMBDA
    return out


def selu_derivative(z, a, out=None):
    out = elu_derivative(z, a, out, alpha=SELU_ALPHA)
    out *= SELU_LAMBDA
    return out


# --- gelu ---------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _gelu_tanh_arg(z):
    r""":math:`2u` with :math:`u = \sqrt{2/\pi}(z + 0.044715 z^3)`, so that :math:`\tfrac12(1 + \tanh u) = \sigma(2u)`."""
    u = z * z
    u *= _GELU_C
    u += 1
    u *= z
    u *= 2 * _SQRT_2_OVER_PI
    return u


def gelu(z, out=None, *, approximate=False):
    r"""Gaussian error linear unit, :math:`f(z) = z\,\Phi(z)` with :math:`\Phi` the standard normal CDF.

    ``approximate=False`` (exact): :math:`\Phi(z) = \tfrac12(1 + \operatorname{erf}(z/\sqrt2))`,
    computed as ``scipy.special.ndtr`` (accurate in both tails);
    derivative :math:`\Phi(z) + z\,\varphi(z)`, :math:`\varphi(z) = e^{-z^2/2}/\sqrt{2\pi}`.

    ``approximate=True`` (tanh form, as PyTorch's ``approximate="tanh"``):
    :math:`f(z) = \tfrac12 z(1 + \tanh u)`, :math:`u = \sqrt{2/\pi}(z + 0.044715 z^3)`,
    computed as :math:`z\,\sigma(2u)`; derivative
    :math:`\sigma(2u) + 2 z\,\sigma(2u)\sigma(-2u)\,\sqrt{2/\pi}(1 + 3 \cdot 0.044715 z^2)`.

    Range :math:`[\approx -0.17, \infty)`. Gain 1 (no ``calculate_gain`` entry).

    References
    ----------
    Hendrycks & Gimpel (2016), "Gaussian error linear units (GELUs)", arXiv:1606.08415.
    """
    out = _out(z, out)
    if approximate:
        expit(_gelu_tanh_arg(z), out=out)
    else:
        ndtr(z, out=out)
    out *= z
    return out


def gelu_derivative(z, a, out=None, *, approximate=False):
    out = _out(z, out)
    if approximate:
        two_u = _gelu_tanh_arg(z)
        s = expit(two_u)
        t = expit(np.negative(two_u, out=two_u), out=two_u)  # sigma(-2u) = 1 - sigma(2u), accurate
        np.multiply(z, z, out=out)
        out *= 3 * _GELU_C
        out += 1
        out *= 2 * _SQRT_2_OVER_PI
        out *= z
        out *= s
        out *= t
        out += s
    else:
        pdf = np.multiply(z, z)
        pdf *= -0.5
        fastmath.exp(pdf, out=pdf)
        pdf *= _INV_SQRT_2PI
        pdf *= z
        ndtr(z, out=out)
        out += pdf
    return out


# --- silu ---------------------------------------------------------------------
def silu(z, out=None, *, beta=1.0):
    r"""SiLU / Swish, :math:`f(z) = z\,\sigma(\beta z)`.

    Range :math:`[\approx -0.278/\beta, \infty)` for :math:`\beta > 0`; derivative
    :math:`\sigma(\beta z)\,(1 + \beta z\,\sigma(-\beta z))`. ``beta=1`` is the
    SiLU; ``beta -> inf`` tends to ReLU, ``beta=0`` gives :math:`z/2`. Gain 1
    (no ``calculate_gain`` entry).

    References
    ----------
    Elfwing, Uchibe & Doya (2018), "Sigmoid-weighted linear units for neural network function
    approximation in reinforcement learning", Neural Networks 107;
    Ramachandran, Zoph & Le (2017), "Searching for activation functions", arXiv:1710.05941.
    """
    out = _out(z, out)
    np.multiply(z, beta, out=out)
    expit(out, out=out)
    out *= z
    return out


def silu_derivative(z, a, out=None, *, beta=1.0):
    out = _out(z, out)
    bz = np.multiply(z, beta)
    s = expit(bz)
    expit(np.negative(bz), out=out)  # sigma(-beta z)
    out *= bz
    out += 1
    out *= s
    return out


# --- mish ---------------------------------------------------------------------
def mish(z, out=None):
    r"""Mish, :math:`f(z) = z \tanh(\operatorname{softplus}(z))`, :math:`\operatorname{softplus}(z) = \log(1 + e^z)`.

    Range :math:`[\approx -0.309, \infty)`; derivative
    :math:`\tanh(s) + z\,(1 - \tanh^2(s))\,\sigma(z)` with :math:`s = \operatorname{softplus}(z)`.
    The softplus never exponentiates a positive number. Gain 1 (no
    ``calculate_gain`` entry).

    References
    ----------
    Misra (2020), "Mish: a self regularized non-monotonic activation function", BMVC; arXiv:1908.08681.
    """
    out = _softplus(z, _out(z, out))
    fastmath.tanh(out, out=out)
    out *= z
    return out


def mish_derivative(z, a, out=None):
    out = _out(z, out)
    t = fastmath.tanh(_softplus(z))
    np.multiply(t, t, out=out)
    np.subtract(1, out, out=out)
    out *= z
    out *= expit(z)
    out += t
    return out


# --- softplus -----------------------------------------------------------------
def softplus(z, out=None, *, beta=1.0):
    r"""Softplus, :math:`f(z) = \frac1\beta \log(1 + e^{\beta z})`, a smooth ReLU.

    Computed as :math:`\frac1\beta(\max(\beta z, 0) + \log(1 + e^{-|\beta z|}))`,
    so no exponent is positive. Range :math:`(0, \infty)`; derivative
    :math:`\sigma(\beta z)`. ``beta`` must be > 0. Gain 1 (no
    ``calculate_gain`` entry).

    References
    ----------
    Dugas, Bengio, Bélisle, Nadeau & Garcia (2001), "Incorporating second-order functional knowledge for
    better option pricing", NeurIPS; Glorot, Bordes & Bengio (2011), "Deep sparse rectifier neural networks".
    """
    out = _out(z, out)
    if beta == 1:
        return _softplus(z, out)
    bz = np.multiply(z, beta)
    _softplus(bz, out)
    out /= beta
    return out


def softplus_derivative(z, a, out=None, *, beta=1.0):
    out = _out(z, out)
    np.multiply(z, beta, out=out)
    expit(out, out=out)
    return out


# --- softsign -----------------------------------------------------------------
def softsign(z, out=None):
    r"""Softsign, :math:`f(z) = z / (1 + |z|)`.

    Range :math:`(-1, 1)`; saturates polynomially, not exponentially.
    Derivative :math:`1 / (1 + |z|)^2`, from ``z`` (from ``a`` it would lose
    precision near the bounds). Gain 1.

    References
    ----------
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS (after Turian, Bergstra & Bengio, 2009).
    """
    out = _out(z, out)
    np.abs(z, out=out)
    out += 1
    np.divide(z, out, out=out)
    return out


def softsign_derivative(z, a, out=None):
    out = _out(z, out)
    np.abs(z, out=out)
    out += 1
    np.multiply(out, out, out=out)
    np.reciprocal(out, out=out)
    return out


# --- hard_sigmoid -------------------------------------------------------------
def hard_sigmoid(z, out=None):
    r"""Hard sigmoid as PyTorch's ``Hardsigmoid``: :math:`f(z) = \operatorname{relu6}(z + 3)/6 = \min(\max(z + 3, 0), 6)/6`.

    Range :math:`[0, 1]`; derivative :math:`1/6` for :math:`-3 < z < 3`, 0
    otherwise (0 at the kinks, as PyTorch). Gain 1.

    References
    ----------
    Howard et al. (2019), "Searching for MobileNetV3", ICCV (h-sigmoid).
    """
    out = _out(z, out)
    np.add(z, 3, out=out)
    np.clip(out, 0, 6, out=out)
    out /= 6
    return out


def hard_sigmoid_derivative(z, a, out=None):
    out = _out(z, out)
    np.abs(z, out=out)
    np.less(out, 3, out=out)
    out /= 6
    return out


# --- hard_tanh ----------------------------------------------------------------
def hard_tanh(z, out=None):
    r"""Hard tanh, :math:`f(z) = \min(\max(z, -1), 1)`.

    Range :math:`[-1, 1]`; derivative 1 for :math:`-1 < z < 1`, 0 otherwise (0
    at the kinks, as PyTorch's ``Hardtanh``). Gain 1.

    References
    ----------
    Collobert (2004), "Large scale machine learning", PhD thesis, Université Paris VI;
    Collobert et al. (2011), "Natural language processing (almost) from scratch", JMLR 12.
    """
    return np.clip(z, -1, 1, out=_out(z, out))


def hard_tanh_derivative(z, a, out=None):
    out = _out(z, out)
    np.abs(z, out=out)
    np.less(out, 1, out=out)
    return out


def _leaky_relu_gain(alpha=0.01):
    return math.sqrt(2.0 / (1.0 + alpha**2))


def _positive_beta(beta=1.0):
    return None if beta > 0 else f"activation.beta={beta} must be > 0 for softplus"


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", identity, identity_derivative, lambda: 1.0, family="linear"),
        Activation("sigmoid", sigmoid, sigmoid_derivative, lambda: 1.0, bounds=(0.0, 1.0), family="sigmoid",
                   fused="expit"),
        Activation("tanh", tanh, tanh_derivative, lambda: 5.0 / 3.0, bounds=(-1.0, 1.0), family="sigmoid",
                   fused="tanh"),
        Activation("relu", relu, relu_derivative, lambda: math.sqrt(2.0), family="relu"),
        Activation("leaky_relu", leaky_relu, leaky_relu_derivative, _leaky_relu_gain, {"alpha": 0.01}, family="relu"),
        Activation("elu", elu, elu_derivative, lambda alpha=1.0: 1.0, {"alpha": 1.0}, family="smooth"),
        Activation("selu", selu, selu_derivative, lambda: 0.75, family="selu"),
        Activation("gelu", gelu, gelu_derivative, lambda approximate=False: 1.0, {"approximate": False},
                   family="smooth"),
        Activation("silu", silu, silu_derivative, lambda beta=1.0: 1.0, {"beta": 1.0}, family="smooth"),
        Activation("mish", mish, mish_derivative, lambda: 1.0, family="smooth"),
        Activation("softplus", softplus, softplus_derivative, lambda beta=1.0: 1.0, {"beta": 1.0}, family="smooth",
                   check=_positive_beta),
        Activation("softsign", softsign, softsign_derivative, lambda: 1.0, bounds=(-1.0, 1.0), family="sigmoid"),
        Activation("hard_sigmoid", hard_sigmoid, hard_sigmoid_derivative, lambda: 1.0, bounds=(0.0, 1.0),
                   family="sigmoid"),
        Activation("hard_tanh", hard_tanh, hard_tanh_derivative, lambda: 1.0, bounds=(-1.0, 1.0), family="sigmoid"),
    )
}


def get_activation(name: str, **params) -> BoundActivation:
    """Look up an activation by config name and bind its parameters.

    Parameters
    ----------
    name : str
        A key of :data:`ACTIVATIONS`.
    **params
        ``alpha``, ``beta``, ``approximate``; ``None`` takes the activation's
        default. Numbers are converted to float, ``approximate`` to bool.

    Returns
    -------
    BoundActivation

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`ACTIVATIONS`, a parameter is not one the
        activation takes, or its value is out of range (softplus ``beta <= 0``).
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
    bound = {k: type(default)(given.get(k, default)) for k, default in spec.params.items()}
    if spec.check is not None and (msg := spec.check(**bound)):
        raise ValueError(msg)
    return BoundActivation(spec, bound)
