r"""Weight initialisers, keyed by their config name in :data:`INITIALIZERS`.

Each initialiser is called as ``init(fan_in, fan_out, *, rng, gain, dtype, **params)``
and returns an ``ndarray of shape (fan_in, fan_out)``: weights are stored
``W[fan_in, fan_out]`` so that ``z = a_prev @ W + b``. ``gain`` is the
activation's recommended gain (PyTorch's ``calculate_gain`` table, see
:mod:`nnexp.activations`) unless the config sets ``init.gain``; initialisers
that use no gain (``uses_gain=False``) ignore it.

==================  ====================================================  ==========  =====
config name         distribution                                          fan         gain
==================  ====================================================  ==========  =====
``zeros``           0                                                     --          no
``normal``          :math:`\mathcal N(0, \mathrm{std}^2)`                 --          no
``uniform``         :math:`U(-\mathrm{limit}, \mathrm{limit})`            --          no
``xavier_uniform``  :math:`U(-l, l)`, :math:`l = g\sqrt{6/(n_i + n_o)}`   in + out    yes
``xavier_normal``   :math:`\mathcal N(0, g^2 \cdot 2/(n_i + n_o))`        in + out    yes
``he_uniform``      :math:`U(-l, l)`, :math:`l = g\sqrt{3/n_i}`           in          yes
``he_normal``       :math:`\mathcal N(0, g^2/n_i)`                        in          yes
``lecun_uniform``   :math:`U(-l, l)`, :math:`l = \sqrt{3/n_i}`            in          no
``standard``        :math:`U(-l, l)`, :math:`l = 1/\sqrt{n_i}`            in          no
``normalized``      :math:`U(-l, l)`, :math:`l = \sqrt{6/(n_i + n_o)}`    in + out    no
``lecun_normal``    :math:`\mathcal N(0, 1/n_i)`                          in          no
``orthogonal``      :math:`g\,Q`, :math:`Q` Haar-random orthogonal        --          yes
==================  ====================================================  ==========  =====

With :math:`g = \sqrt 2` (ReLU) the He variance is :math:`2/n_i`. The LeCun
initialisers take no gain because their one use that needs them exactly,
SELU's self-normalisation, requires variance :math:`1/n_i` (PyTorch's
documentation likewise advises ``nonlinearity="linear"`` for SELU).
``init=auto`` picks per activation family (:data:`AUTO`).

Randomness comes only from the ``rng`` argument (a ``numpy.random.Generator``);
samples are drawn in float64 and cast to ``dtype``, so float32 and float64
networks seeded alike start from the same weights up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Initializer", "INITIALIZERS", "AUTO", "get_initializer", "auto_initializer", "get_bias_initializer",
           "BIAS_INITIALIZERS"]


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
    """All zeros. Every hidden unit then computes the same function: a baseline, not a choice.

    Returns ``ndarray of shape (fan_in, fan_out)``; draws nothing from ``rng``; no gain.
    """
    return np.zeros((fan_in, fan_out), dtype=dtype)


def normal(fan_in, fan_out, *, rng, gain, dtype, std=1.0):
    r""":math:`W \sim \mathcal N(0, \mathrm{std}^2)`, not scaled by any fan; no gain.

    At ``std=1`` this is the seed tutorial's ``np.random.randn``: the variance of
    the pre-activations then grows with fan-in.
    """
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


def uniform(fan_in, fan_out, *, rng, gain, dtype, limit=1.0):
    r""":math:`W \sim U(-\mathrm{limit}, \mathrm{limit})`, variance :math:`\mathrm{limit}^2/3`; not scaled by any fan; no gain."""
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def xavier_uniform(fan_in, fan_out, *, rng, gain, dtype):
    r"""Glorot/Xavier uniform: :math:`U(-l, l)`, :math:`l = g\sqrt{6/(\text{fan\_in} + \text{fan\_out})}`.

    Variance :math:`g^2 \cdot 2/(\text{fan\_in} + \text{fan\_out})`, the harmonic
    compromise between keeping forward (fan-in) and backward (fan-out) variance.
    Uses the activation's gain :math:`g`.

    References
    ----------
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS; as ``torch.nn.init.xavier_uniform_``.
    """
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def xavier_normal(fan_in, fan_out, *, rng, gain, dtype):
    r"""Glorot/Xavier normal: :math:`\mathcal N(0, \sigma^2)`, :math:`\sigma = g\sqrt{2/(\text{fan\_in} + \text{fan\_out})}`.

    Uses fan-in + fan-out and the activation's gain :math:`g`. Glorot & Bengio
    (2010), as ``torch.nn.init.xavier_normal_``.
    """
    std = gain * np.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


def he_uniform(fan_in, fan_out, *, rng, gain, dtype):
    r"""He/Kaiming uniform, fan-in mode: :math:`U(-l, l)`, :math:`l = g\sqrt{3/\text{fan\_in}}`.

    Variance :math:`g^2/\text{fan\_in}` (:math:`2/\text{fan\_in}` with the ReLU
    gain :math:`\sqrt 2`). He et al. (2015), "Delving deep into rectifiers", ICCV;
    as ``torch.nn.init.kaiming_uniform_(mode="fan_in")`` given the same gain.
    """
    limit = gain * np.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def he_normal(fan_in, fan_out, *, rng, gain, dtype):
    r"""He/Kaiming normal, fan-in mode: :math:`\mathcal N(0, g^2/\text{fan\_in})`.

    He et al. (2015), "Delving deep into rectifiers", ICCV; as
    ``torch.nn.init.kaiming_normal_(mode="fan_in")``; with the ReLU gain
    :math:`g = \sqrt2` the variance is :math:`2/\text{fan\_in}`.
    """
    std = gain / np.sqrt(fan_in)
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


def lecun_uniform(fan_in, fan_out, *, rng, gain, dtype):
    r"""LeCun uniform: :math:`U(-l, l)`, :math:`l = \sqrt{3/\text{fan\_in}}`, variance :math:`1/\text{fan\_in}`; no gain.

    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp"; as Keras' ``lecun_uniform``.
    """
    limit = np.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def standard(fan_in, fan_out, *, rng, gain, dtype):
    r"""The "standard" initialisation of Glorot & Bengio (2010), eq. 1:
    :math:`U\left[-\tfrac{1}{\sqrt{n}}, \tfrac{1}{\sqrt{n}}\right]`, :math:`n` = fan-in; no gain.

    Variance :math:`1/(3\,\text{fan\_in})`: a third of LeCun's :math:`1/\text{fan\_in}`, so the variance of the
    pre-activations shrinks by about 3 per layer for a unit of slope 1 at 0 (tanh, softsign): the heuristic
    Glorot & Bengio compare their normalised initialisation (``xavier_uniform``) against.

    References
    ----------
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS, eq. (1); the default of the early Torch/Theano layers.
    """
    limit = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype, copy=False)


def normalized(fan_in, fan_out, *, rng, gain, dtype):
    r"""The "normalized" initialisation of Glorot & Bengio (2010), eq. 16, as the paper states it:
    :math:`U(-l, l)`, :math:`l = \sqrt{6/(\text{fan\_in} + \text{fan\_out})}`; no gain.

    ``xavier_uniform`` with gain 1 (``xavier_uniform`` multiplies :math:`l` by the activation's recommended gain,
    5/3 for tanh). Variance :math:`2/(\text{fan\_in} + \text{fan\_out})`.

    References
    ----------
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS, eq. (16).
    """
    return xavier_uniform(fan_in, fan_out, rng=rng, gain=1.0, dtype=dtype)


def lecun_normal(fan_in, fan_out, *, rng, gain, dtype):
    r"""LeCun normal: :math:`\mathcal N(0, 1/\text{fan\_in})`; no gain.

    The initialisation SELU's self-normalisation assumes (Klambauer et al., 2017,
    "Self-normalizing neural networks", NeurIPS); LeCun et al. (1998). A plain
    (untruncated) normal, as in Klambauer et al.; Keras truncates at 2 sd.
    """
    std = 1.0 / np.sqrt(fan_in)
    return rng.normal(0.0, std, size=(fan_in, fan_out)).astype(dtype, copy=False)


def orthogonal(fan_in, fan_out, *, rng, gain, dtype):
    r"""Random orthogonal matrix times the gain: :math:`W = g\,Q`.

    :math:`Q` comes from the QR decomposition of a standard Gaussian matrix of
    shape ``(max, min)`` of the two fans, with the signs of :math:`R`'s diagonal
    folded into :math:`Q` (which makes :math:`Q` Haar-distributed, Mezzadri 2007),
    transposed when ``fan_in < fan_out``: as ``torch.nn.init.orthogonal_``. Hence
    :math:`W^\top W = g^2 I` when ``fan_in >= fan_out`` (orthonormal columns) and
    :math:`W W^\top = g^2 I` otherwise (orthonormal rows). Uses the activation's
    gain; no fan.

    References
    ----------
    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks", ICLR.
    """
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    A = rng.standard_normal((rows, cols))
    q, r = np.linalg.qr(A)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    if fan_in < fan_out:
        q = q.T
    q *= gain
    return q.astype(dtype, copy=False)


INITIALIZERS: dict[str, Initializer] = {
    i.name: i
    for i in (
        Initializer("zeros", zeros, uses_gain=False),
        Initializer("normal", normal, {"std": 1.0}, uses_gain=False),
        Initializer("uniform", uniform, {"limit": 1.0}, uses_gain=False),
        Initializer("xavier_uniform", xavier_uniform),
        Initializer("xavier_normal", xavier_normal),
        Initializer("he_uniform", he_uniform),
        Initializer("he_normal", he_normal),
        Initializer("lecun_uniform", lecun_uniform, uses_gain=False),
        Initializer("lecun_normal", lecun_normal, uses_gain=False),
        Initializer("standard", standard, uses_gain=False),
        Initializer("normalized", normalized, uses_gain=False),
        Initializer("orthogonal", orthogonal),
    )
}

#: Recommended initialiser per activation family (``init=auto``); families as in :mod:`nnexp.activations`.
#: He (fan-in, with the activation's gain) for the ReLU family and the smooth ReLU-like units,
#: Xavier for the saturating ones and identity, LeCun normal for SELU.
AUTO = {
    "relu": "he_normal",
    "smooth": "he_normal",
    "sigmoid": "xavier_uniform",
    "linear": "xavier_uniform",
    "selu": "lecun_normal",
}


def auto_initializer(activation_family: str) -> str:
    """The initialiser ``init=auto`` picks for an activation family.

    Raises
    ------
    ValueError
        If the family is not a key of :data:`AUTO`.
    """
    try:
        return AUTO[activation_family]
    except KeyError:
        raise ValueError(f"no automatic initialiser for activation family {activation_family!r}; "
                         f"known: {', '.join(sorted(AUTO))}") from None


BIAS_INITIALIZERS = ("zeros", "constant")


def get_initializer(name: str, **params):
    """Look up an initialiser and bind its parameters (``None`` means the default).

    Parameters
    ----------
    name : str
        A key of :data:`INITIALIZERS` (``auto`` is resolved by :func:`auto_initializer` first).
    **params
        ``std`` (normal), ``limit`` (uniform).

    Returns
    -------
    callable ``(fan_in, fan_out, *, rng, gain, dtype) -> ndarray of shape (fan_in, fan_out)``
        With the :class:`Initializer` as its ``spec`` attribute.

    Raises
    ------
    ValueError
        If ``name`` is unknown, a parameter does not apply to it, or ``std`` /
        ``limit`` is negative.
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
    bound = {k: float(given.get(k, default)) for k, default in spec.params.items()}
    for k, v in bound.items():
        if v < 0:
            raise ValueError(f"init.{k}={v} must be >= 0")

    def init(fan_in, fan_out, *, rng, gain, dtype):
        return spec.sample(fan_in, fan_out, rng=rng, gain=gain, dtype=dtype, **bound)

    init.spec = spec
    return init


def get_bias_initializer(name: str, value: float = 0.0):
    """Bias initialiser: ``zeros`` or ``constant`` (every bias ``value``).

    Returns a callable ``(fan_out, *, rng, dtype) -> ndarray of shape (fan_out,)``
    that draws nothing from ``rng``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`BIAS_INITIALIZERS`.
    """
    if name not in BIAS_INITIALIZERS:
        raise ValueError(f"init.bias={name!r} is not known; choose one of: {', '.join(BIAS_INITIALIZERS)}")
    fill = 0.0 if name == "zeros" else float(value)
    return lambda fan_out, *, rng, dtype: np.full(fan_out, fill, dtype=dtype)
