"""Backpropagation and activation derivatives against central differences, in float64.

Error measure (stated once, used by every check here): for each entry ``i`` of a
gradient, with ``g`` the analytic value and ``n`` the numerical one,

    err_i = |g_i - n_i| / max(|g_i|, |n_i|)        (relative error)

and the check is ``err_i < 1e-6`` for *every* weight and bias. Entries where
both values are below the finite-difference noise floor ``NOISE`` (the
rounding error of the stencil, ``~ eps * |L| / h``) cannot carry a relative
error and are compared absolutely, ``|g_i - n_i| <= NOISE``; this only ever
applies to gradients that are exactly zero (dead ReLU units) or of order 1e-12.

The numerical gradient is the fourth-order central difference

    n = (-L(t + 2h) + 8 L(t + h) - 8 L(t - h) + L(t - 2h)) / (12 h),   h = 1e-4,

whose truncation error (~ h^4 L''''' / 30, about 1e-17 here) is far below
its rounding error (~ 1.5 eps |L| / h, about 2e-12), so a relative error of
1e-6 is a strict test for gradients down to ~1e-6. Kinks (relu and leaky_relu
at 0, elu/selu's second derivative at 0, hard_sigmoid at +-3, hard_tanh at +-1)
are avoided: the data and weights are drawn so that no hidden pre-activation
lies within ``KINK_MARGIN`` of one, and every perturbed evaluation checks that
no pre-activation changed side of a kink.
"""

from __future__ import annotations


import numpy as np
import pytest

from nnexp.activations import ACTIVATIONS, get_activation
from nnexp.initializers import get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP

H = 1e-4
RTOL = 1e-6
KINK_MARGIN = 1e-3
EPS = np.finfo(np.float64).eps

#: Where each activation (or its derivative) is not smooth.
KINKS = {
    "relu": (0.0,),
    "leaky_relu": (0.0,),
    "elu": (0.0,),  # C1 at alpha=1, but f'' jumps; not C1 for other alpha
    "selu": (0.0,),
    "hard_sigmoid": (-3.0, 3.0),
    "hard_tanh": (-1.0, 1.0),
}

#: Non-default parameters checked in addition to every activation's defaults.
VARIANTS = [
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 0.5}),
    ("gelu", {"approximate": True}),
    ("silu", {"beta": 2.0}),
    ("softplus", {"beta": 3.0}),
]
CASES = [(name, {}) for name in ACTIVATIONS] + VARIANTS
LOSS_OUTPUTS = {"mse": 2, "sigmoid_mse": 2, "binary_cross_entropy": 1, "cross_entropy": 3}


def case_id(case):
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def fourth_order_difference(f, x: float) -> float:
    """``(-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h``."""
    return (-f(x + 2 * H) + 8 * f(x + H) - 8 * f(x - H) + f(x - 2 * H)) / (12 * H)


def assert_gradients_close(analytic: np.ndarray, numeric: np.ndarray, noise: float, what: str) -> float:
    """Check the module docstring's measure; return the largest relative error."""
    diff = np.abs(analytic - numeric)
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    tiny = scale <= noise
    rel = np.where(tiny, 0.0, diff / np.where(tiny, 1.0, scale))
    assert (diff[tiny] <= noise).all(), f"{what}: absolute error {diff[tiny].max():.3g} above noise {noise:.3g}"
    worst = float(rel.max(initial=0.0))
    assert worst < RTOL, f"{what}: relative error {worst:.3g} at entry {np.unravel_index(rel.argmax(), rel.shape)}"
    return worst


def kink_side(name: str, z: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(KINKS.get(name, ())), z)


def distance_to_kink(name: str, z: np.ndarray) -> float:
    kinks = KINKS.get(name, ())
    return min((float(np.abs(z - k).min()) for k in kinks), default=np.inf)


def make_problem(name: str, params: dict, loss_name: str, depth: int, *, n: int = 5, n_features: int = 3,
                 width: int = 4):
    """A small network and batch whose hidden pre-activations all stay KINK_MARGIN away from a kink."""
    act = get_activation(name, **params)
    loss = get_loss(loss_name)
    n_out = LOSS_OUTPUTS[loss_name]
    init = get_initializer("xavier_normal")
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (n, n_features))
        if loss_name == "mse":
            Y = rng.normal(size=(n, n_out))
        else:
            labels = rng.integers(0, max(n_out, 2), n)
            Y = labels.reshape(-1, 1).astype(float) if n_out == 1 else np.eye(n_out)[labels]
        model = MLP([n_features, *[width] * depth, n_out], act)
        model.initialize(init, lambda fo, *, rng, dtype: rng.normal(0, 0.5, fo).astype(dtype), [rng], gain=1.5)
        model.forward(X)
        ws = model.workspace(X)
        if min(distance_to_kink(name, z) for z in ws.z) > KINK_MARGIN:
            return model, X, Y, loss
    raise AssertionError("no seed keeps every pre-activation away from the kinks")


def check_network(name: str, params: dict, loss_name: str, depth: int) -> float:
    model, X, Y, loss = make_problem(name, params, loss_name, depth)
    base_loss = float(model.gradients(X, Y, loss)[0])
    analytic = [g.copy() for g in model.grads()]
    sides = [kink_side(name, z).copy() for z in model.workspace(X).z]
    noise = 16 * EPS * max(1.0, abs(base_loss)) / H

    def loss_with(P, idx, value):
        P[idx] = value
        logits = model.forward(X)
        for side, z in zip(sides, model.workspace(X).z):
            assert (kink_side(name, z) == side).all(), "a perturbation crossed a kink"
        return float(loss.value_and_grad(logits, Y, np.empty_like(logits))[0])

    worst = 0.0
    names = [f"{kind}{l + 1}" for l in range(model.n_layers) for kind in ("W", "b")]
    for pname, P, G in zip(names, model.params(), analytic):
        numeric = np.empty_like(P)
        for idx in np.ndindex(P.shape):
            orig = P[idx]
            numeric[idx] = fourth_order_difference(lambda v: loss_with(P, idx, v), orig)
            P[idx] = orig
        worst = max(worst, assert_gradients_close(G, numeric, noise, f"{name} {loss_name} depth {depth} {pname}"))
    return worst


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("loss_name", list(LOSS_OUTPUTS))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backprop_matches_central_differences(case, loss_name, depth):
    name, params = case
    check_network(name, params, loss_name, depth)


def check_backprop(model: MLP, X: np.ndarray, Y: np.ndarray, loss, what: str) -> list[np.ndarray]:
    """Every weight and bias gradient of ``model.gradients`` against central differences; return the gradients."""
    base = float(model.gradients(X, Y, loss)[0])
    analytic = [g.copy() for g in model.grads()]
    noise = 16 * EPS * max(1.0, abs(base)) / H
    for P, G in zip(model.params(), analytic):
        numeric = np.empty_like(P)
        for idx in np.ndindex(P.shape):
            orig = P[idx]

            def L(v):
                P[idx] = v
                logits = model.forward(X)
                return float(loss.value_and_grad(logits, Y, np.empty_like(logits))[0])

            numeric[idx] = fourth_order_difference(L, orig)
            P[idx] = orig
        assert_gradients_close(G, numeric, noise, what)
    return analytic


def test_p07_xor_sigmoid_2_2_1():
    """Case P07: 2-2-1 sigmoid network on XOR, batch of 4, every weight and bias to 1e-6 relative.

    The fault it guards against: the hidden-layer gradient missing the
    activation derivative, and the bias gradient not summed over the batch.
    """
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    model = MLP([2, 2, 1], get_activation("sigmoid"))
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=(2, 2)), rng.normal(size=(2, 1))], [rng.normal(size=2), rng.normal(size=1)])
    analytic = check_backprop(model, X, Y, get_loss("binary_cross_entropy"), "P07")
    for G in analytic:
        assert np.abs(G).min() > 1e-4  # every entry is a real (non-vanishing) gradient, so the check bites


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_derivative_matches_central_differences(case):
    name, params = case
    act = get_activation(name, **params)
    z = np.linspace(-8, 8, 1601) + 1e-3 / 3  # 0.01 apart, offset so no point is at a kink
    z = z[[distance_to_kink(name, np.array([v])) > 10 * H for v in z]]
    a = act.forward(z)
    analytic = act.derivative(z, a)
    numeric = fourth_order_difference(lambda v: act.forward(v), z)
    # Pointwise, |f'| can be far below the stencil's rounding error 1.5 eps |f(z)| / h (tanh'(8) ~ 4.5e-7 on
    # |f| ~ 1), so here the measure is relative *or* within that rounding error, point by point:
    noise = 16 * EPS * np.maximum(1.0, np.abs(a)) / H
    diff = np.abs(analytic - numeric)
    ok = diff <= np.maximum(RTOL * np.maximum(np.abs(analytic), np.abs(numeric)), noise)
    assert ok.all(), f"{name}: derivative off at z = {z[~ok][:5]}: {analytic[~ok][:5]} vs {numeric[~ok][:5]}"


def test_gelu_approximate_differs_from_exact():
    z = np.linspace(-4, 4, 81)
    exact = get_activation("gelu", approximate=False)
    tanh_form = get_activation("gelu", approximate=True)
    gap = np.abs(exact.forward(z) - tanh_form.forward(z))
    assert gap.max() > 1e-4  # the flag changes the function ...
    assert gap.max() < 1e-2  # ... but only by the approximation error (max ~4.7e-4 near |z| = 2.2)
    assert np.abs(exact.derivative(z, exact.forward(z)) - tanh_form.derivative(z, tanh_form.forward(z))).max() > 1e-4


def test_losses_from_extreme_logits_are_exact_and_finite():
    """The losses take logits, so confident predictions give exact, finite values and gradients (no log 0)."""
    z = np.array([[[1e4], [-1e4], [1e4], [-1e4]]])
    y = np.array([[1.0], [0.0], [0.0], [1.0]])
    grad = np.empty_like(z)
    bce = get_loss("binary_cross_entropy").value_and_grad(z, y, grad)
    assert bce[0] == pytest.approx((0 + 0 + 1e4 + 1e4) / 4, rel=1e-15)
    np.testing.assert_allclose(grad[0, :, 0], np.array([0, 0, 1, -1]) / 4)
    logits = np.array([[[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]]])
    Y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    grad = np.empty_like(logits)
    ce = get_loss("cross_entropy").value_and_grad(logits, Y, grad)
    assert ce[0] == pytest.approx((1e4 + np.log(3)) / 2, rel=1e-15)
    np.testing.assert_allclose(grad[0], (np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]) - Y) / 2, atol=1e-15)
    mse = get_loss("mse").value_and_grad(np.array([[[3.0], [1.0]]]), np.array([[1.0], [1.0]]), np.empty((1, 2, 1)))
    assert mse[0] == pytest.approx(0.5 * 4 / 2)  # half the mean squared error, as scikit-learn's squared_loss


def test_tutorial_network_sigmoid_output_with_mse():
    """The tutorial's XOR network (2-3-1, sigmoid hidden and output units, squared error): its gradient includes
    the output unit's derivative sigma'(z) = a(1 - a), which ``mse`` on a linear output does not have."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    model = MLP([2, 3, 1], get_activation("sigmoid"))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=(2, 3)), rng.normal(size=(3, 1))], [rng.normal(size=3), rng.normal(size=1)])
    check_backprop(model, X, Y, get_loss("sigmoid_mse"), "tutorial")
    z = model.forward(X)
    a = 1 / (1 + np.exp(-z[0]))
    grad = np.empty_like(z)
    loss = get_loss("sigmoid_mse").value_and_grad(z, Y, grad)
    assert loss[0] == pytest.approx(0.5 * np.mean((a - Y) ** 2) * 1, rel=1e-12)
    np.testing.assert_allclose(grad[0], (a - Y) * a * (1 - a) / 4, rtol=1e-12)
