"""Activations: values, numerical stability, gains, and their config files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from nnexp.activations import ACTIVATIONS, FAMILIES, SELU_ALPHA, SELU_LAMBDA, get_activation

LAM, ALPHA = 1.0507009873554805, 1.6732632423543772
NAMES = sorted(ACTIVATIONS)
BOUND = 1e4
#: (f(-1e4), f(1e4), f'(-1e4), f'(1e4)) for the default parameters: the limits each function must saturate to.
EXTREMES = {
    "identity": (-BOUND, BOUND, 1, 1),
    "sigmoid": (0, 1, 0, 0),
    "tanh": (-1, 1, 0, 0),
    "relu": (0, BOUND, 0, 1),
    "leaky_relu": (-0.01 * BOUND, BOUND, 0.01, 1),
    "elu": (-1, BOUND, 0, 1),
    "selu": (-LAM * ALPHA, LAM * BOUND, 0, LAM),
    "gelu": (0, BOUND, 0, 1),
    "silu": (0, BOUND, 0, 1),
    "mish": (0, BOUND, 0, 1),
    "softplus": (0, BOUND, 0, 1),
    "softsign": (-BOUND / (1 + BOUND), BOUND / (1 + BOUND), 1 / (1 + BOUND) ** 2, 1 / (1 + BOUND) ** 2),
    "hard_sigmoid": (0, 1, 0, 0),
    "hard_tanh": (-1, 1, 0, 0),
}
PARAM_SETTINGS = [(n, {}) for n in NAMES] + [("gelu", {"approximate": True}), ("leaky_relu", {"alpha": 0.3}),
                                              ("silu", {"beta": 5.0}), ("softplus", {"beta": 0.2})]


def grid(dtype):
    """Every 0.1 over [-1e4, 1e4], dense around 0, and the float32 exp-overflow edge (~88.7)."""
    return np.concatenate([np.linspace(-BOUND, BOUND, 200_001), np.linspace(-100, 100, 20_001),
                           [-BOUND, -89.0, -88.7, -0.0, 0.0, 88.7, 89.0, BOUND]]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("setting", PARAM_SETTINGS, ids=lambda s: s if isinstance(s, str) else str(s))
def test_stable_over_the_whole_range(setting, dtype):
    """No overflow / invalid / divide warning, finite output, dtype kept, for every z in [-1e4, 1e4].

    Underflow is left at NumPy's default (ignored): e^(-1e4) rounding to 0 is the right answer, not an error.
    """
    name, params = setting
    act = get_activation(name, **params)
    z = grid(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        warnings.simplefilter("error")
        a = act.forward(z)
        d = act.derivative(z, a)
    assert a.dtype == dtype and d.dtype == dtype
    assert np.isfinite(a).all() and np.isfinite(d).all()
    if act.spec.bounds is not None:
        lo, hi = act.spec.bounds
        assert a.min() >= lo and a.max() <= hi


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_saturates_to_the_right_limits(name, dtype):
    act = get_activation(name)
    z = np.array([-BOUND, BOUND], dtype=dtype)
    a = act.forward(z)
    d = act.derivative(z, a)
    lo, hi, dlo, dhi = EXTREMES[name]
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, [lo, hi], rtol=rtol, atol=0)
    np.testing.assert_allclose(d, [dlo, dhi], rtol=rtol, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_out_argument_is_filled_and_returned(name):
    act = get_activation(name)
    z = np.linspace(-5, 5, 101).astype(np.float32)
    out = np.empty_like(z)
    a = act.forward(z, out=out)
    assert a is out
    # bit-identical on any CPU: the same ufunc calls on the same input, only the output buffer differs
    np.testing.assert_array_equal(out, act.forward(z))
    dout = np.full_like(z, np.nan)
    d = act.derivative(z, a, out=dout)
    assert d is dout
    np.testing.assert_array_equal(dout, act.derivative(z, act.forward(z)))


Z = np.linspace(-6, 6, 241)


def sigma(x):
    return 1 / (1 + np.exp(-x))


#: Reference formulas, written the textbook way (fine on [-6, 6]).
REFERENCE = {
    "identity": lambda z: z,
    "sigmoid": sigma,
    "tanh": np.tanh,
    "relu": lambda z: np.where(z > 0, z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.exp(z) - 1),
    "selu": lambda z: LAM * np.where(z > 0, z, ALPHA * (np.exp(z) - 1)),
    "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
    "silu": lambda z: z * sigma(z),
    "mish": lambda z: z * np.tanh(np.log1p(np.exp(z))),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "softsign": lambda z: z / (1 + np.abs(z)),
    "hard_sigmoid": lambda z: np.minimum(np.maximum(z + 3, 0), 6) / 6,
    "hard_tanh": lambda z: np.clip(z, -1, 1),
}


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_formula(name):
    np.testing.assert_allclose(get_activation(name).forward(Z), REFERENCE[name](Z), rtol=1e-12, atol=1e-15)


def test_known_values():
    f = lambda name, z, **p: float(get_activation(name, **p).forward(np.array([z]))[0])  # noqa: E731
    assert SELU_LAMBDA == LAM and SELU_ALPHA == ALPHA
    assert f("sigmoid", 0.0) == 0.5
    assert f("hard_sigmoid", 0.0) == 0.5 and f("hard_sigmoid", -3.0) == 0 and f("hard_sigmoid", 3.0) == 1
    assert f("selu", 1.0) == LAM
    assert f("gelu", 1.0) == pytest.approx(0.8413447460685429, rel=1e-15)  # Phi(1)
    # PyTorch's tanh-approximate GELU at 1: 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715))
    assert f("gelu", 1.0, approximate=True) == pytest.approx(0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715)),
                                                             rel=1e-15)
    assert f("mish", 1.0) == pytest.approx(0.8650983882673103, rel=1e-15)
    assert f("silu", 1.0, beta=2.0) == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-15)
    assert f("softplus", 0.0, beta=2.0) == pytest.approx(math.log(2) / 2, rel=1e-15)
    assert f("leaky_relu", -2.0, alpha=0.1) == pytest.approx(-0.2, rel=1e-15)
    assert f("elu", -1.0, alpha=0.5) == pytest.approx(0.5 * (math.exp(-1) - 1), rel=1e-15)
    assert f("softplus", -800.0) == pytest.approx(math.exp(-800), rel=1e-12)  # no log(1 + 0) = 0 collapse
    assert f("sigmoid", -700.0) == pytest.approx(math.exp(-700), rel=1e-12)


def test_derivatives_at_kinks_follow_pytorch():
    d = lambda name, z, **p: get_activation(name, **p).derivative(np.array(z), get_activation(name, **p).forward(np.array(z)))  # noqa: E731
    np.testing.assert_array_equal(d("relu", [0.0]), [0.0])
    np.testing.assert_array_equal(d("leaky_relu", [0.0], alpha=0.1), [0.1])
    np.testing.assert_array_equal(d("elu", [0.0], alpha=0.5), [0.5])
    np.testing.assert_array_equal(d("hard_sigmoid", [-3.0, 0.0, 3.0]), [0.0, 1 / 6, 0.0])
    np.testing.assert_array_equal(d("hard_tanh", [-1.0, 0.0, 1.0]), [0.0, 1.0, 0.0])


def test_gelu_exact_uses_erf_and_approximate_flag_matters():
    exact = get_activation("gelu").forward(Z)
    np.testing.assert_allclose(exact, 0.5 * Z * (1 + erf(Z / math.sqrt(2))), rtol=1e-12, atol=1e-15)
    approx = get_activation("gelu", approximate=True).forward(Z)
    np.testing.assert_allclose(approx, 0.5 * Z * (1 + np.tanh(math.sqrt(2 / math.pi) * (Z + 0.044715 * Z**3))),
                               rtol=1e-12, atol=1e-15)
    assert np.abs(exact - approx).max() > 1e-4


def test_gain_table():
    """PyTorch's calculate_gain where it has an entry, 1 elsewhere."""
    expected = {"identity": 1.0, "sigmoid": 1.0, "tanh": 5 / 3, "relu": math.sqrt(2), "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
                "selu": 0.75, "elu": 1.0, "gelu": 1.0, "silu": 1.0, "mish": 1.0, "softplus": 1.0, "softsign": 1.0,
                "hard_sigmoid": 1.0, "hard_tanh": 1.0}
    assert set(expected) == set(ACTIVATIONS)
    for name, gain in expected.items():
        assert get_activation(name).gain == pytest.approx(gain, rel=1e-15), name
    # sqrt(2 / (1 + a^2)), not sqrt(2) / (1 + a^2) or sqrt(2 / 1 + a^2): differs visibly at a = 0.5
    assert get_activation("leaky_relu", alpha=0.5).gain == pytest.approx(math.sqrt(2 / 1.25), rel=1e-15)
    assert get_activation("leaky_relu", alpha=1.0).gain == pytest.approx(1.0, rel=1e-15)  # alpha 1 is linear


def test_families_and_bounds():
    fam = {n: a.family for n, a in ACTIVATIONS.items()}
    assert {fam["relu"], fam["leaky_relu"]} == {"relu"}
    assert fam["selu"] == "selu" and fam["identity"] == "linear"
    assert {fam[n] for n in ("sigmoid", "tanh", "softsign", "hard_sigmoid", "hard_tanh")} == {"sigmoid"}
    assert {fam[n] for n in ("elu", "gelu", "silu", "mish", "softplus")} == {"smooth"}
    assert set(fam.values()) <= set(FAMILIES)
    bounds = {n: a.bounds for n, a in ACTIVATIONS.items() if a.bounds is not None}
    assert bounds == {"sigmoid": (0, 1), "tanh": (-1, 1), "softsign": (-1, 1), "hard_sigmoid": (0, 1),
                      "hard_tanh": (-1, 1)}


def test_get_activation_refuses_what_does_not_apply():
    with pytest.raises(ValueError, match="activation.alpha does not apply to activation=relu"):
        get_activation("relu", alpha=0.1)
    with pytest.raises(ValueError, match="activation.beta does not apply to activation=gelu"):
        get_activation("gelu", beta=2.0)
    with pytest.raises(ValueError, match="choose one of: elu, gelu"):
        get_activation("swish")
    with pytest.raises(ValueError, match="must be > 0"):
        get_activation("softplus", beta=0.0)
    assert get_activation("leaky_relu", alpha=None).params == {"alpha": 0.01}
    assert get_activation("gelu", approximate=True).params == {"approximate": True}


# --- config files ---------------------------------------------------------------------------
CONF = Path(__file__).resolve().parents[1] / "conf" / "activation"


def test_one_yaml_per_activation():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_activation_yaml_composes_and_binds(compose, name):
    cfg = compose([f"activation={name}"])
    a = cfg.activation
    assert a.name == name
    act = get_activation(a.name, alpha=a.alpha, beta=a.beta, approximate=a.approximate)
    assert act.params == ACTIVATIONS[name].params  # the YAML states the defaults
    for line in (CONF / f"{name}.yaml").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "#" in line, f"{name}.yaml: key without a comment: {line!r}"


def test_activation_parameters_from_overrides(compose):
    cfg = compose(["activation=leaky_relu", "activation.alpha=0.1"])
    assert get_activation(cfg.activation.name, alpha=cfg.activation.alpha).params == {"alpha": 0.1}
    cfg = compose(["activation=gelu", "activation.approximate=true"])
    assert cfg.activation.approximate is True


# --- gallery --------------------------------------------------------------------------------
@pytest.fixture
def close_figures():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_gallery_draws_each_function_and_derivative(close_figures):
    from nnexp.report.gallery import activation_frame, gallery

    data = activation_frame()
    assert len(data) == len(NAMES) * 2 * 601 and set(data.activation) == set(NAMES)
    fig = gallery(data)
    assert sorted(fig.axes_dict) == NAMES and len(fig.axes) == len(NAMES)
    for name, ax in fig.axes_dict.items():
        # data lines only: not the axes through 0, nor seaborn's empty legend proxies (first panel)
        f_line, d_line = [line for line in ax.lines if line.get_gid() != "axis" and len(line.get_xdata())]
        z = np.asarray(f_line.get_xdata(), dtype=float)
        act = get_activation(name)
        np.testing.assert_allclose(f_line.get_ydata(), act.forward(z), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(d_line.get_xdata(), z)
        np.testing.assert_allclose(d_line.get_ydata(), act.derivative(z, act.forward(z)), rtol=1e-12, atol=1e-15)


def test_gallery_command_writes_png_and_svg(tmp_path, close_figures):
    from nnexp.report.__main__ import main

    assert main(["gallery", "--out", str(tmp_path)]) == 0
    png, svg = tmp_path / "activation_gallery.png", tmp_path / "activation_gallery.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
