"""Weight initialisers: moments against their formulas, orthogonality, seeding, ``init=auto``.

Statistical tolerances come from the sample size: with ``N`` iid entries of
variance ``s2``, the sample mean has standard error ``sqrt(s2 / N)`` and the
sample variance ``sqrt((mu4 - s2**2) / N)`` (``mu4`` the fourth central
moment: ``3 s2**2`` for a normal, ``9/5 s2**2`` for a uniform). Each check
allows ``Z = 5`` standard errors: a correct initialiser fails with probability
below 1e-6 (and the seeds are fixed, so the outcome is deterministic), while a
wrong fan or gain moves the variance by far more (at N = 120 000 one standard
error of the variance is 0.4 % of it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nnexp.activations import ACTIVATIONS
from nnexp.initializers import AUTO, INITIALIZERS, auto_initializer, get_bias_initializer, get_initializer

Z = 5.0
FAN_IN, FAN_OUT = 400, 300
GAIN = 1.7

#: name -> (distribution, variance as a function of fan_in, fan_out, gain)
EXPECTED = {
    "normal": ("normal", lambda i, o, g: 1.0),
    "uniform": ("uniform", lambda i, o, g: 1.0 / 3.0),
    "xavier_uniform": ("uniform", lambda i, o, g: g**2 * 2.0 / (i + o)),
    "xavier_normal": ("normal", lambda i, o, g: g**2 * 2.0 / (i + o)),
    "he_uniform": ("uniform", lambda i, o, g: g**2 / i),
    "he_normal": ("normal", lambda i, o, g: g**2 / i),
    "lecun_uniform": ("uniform", lambda i, o, g: 1.0 / i),
    "lecun_normal": ("normal", lambda i, o, g: 1.0 / i),
    "standard": ("uniform", lambda i, o, g: 1.0 / (3.0 * i)),  # U[-1/sqrt(fan_in), 1/sqrt(fan_in)]
    "normalized": ("uniform", lambda i, o, g: 2.0 / (i + o)),  # Glorot & Bengio's eq. 16, no gain
}
KURTOSIS = {"normal": 3.0, "uniform": 9.0 / 5.0}


def sample(name, fan_in=FAN_IN, fan_out=FAN_OUT, *, seed=0, gain=GAIN, dtype=np.float64, **params):
    return get_initializer(name, **params)(fan_in, fan_out, rng=np.random.default_rng(seed), gain=gain, dtype=dtype)


def test_every_initializer_is_covered():
    assert set(INITIALIZERS) == {*EXPECTED, "zeros", "orthogonal"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("fans", [(FAN_IN, FAN_OUT), (150, 800)], ids=["wide-in", "wide-out"])
def test_mean_and_variance_match_the_formula(name, fans):
    fan_in, fan_out = fans
    dist, var_fn = EXPECTED[name]
    W = sample(name, fan_in, fan_out)
    assert W.shape == (fan_in, fan_out)
    n = W.size
    var = var_fn(fan_in, fan_out, GAIN)
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt((KURTOSIS[dist] - 1.0) * var**2 / n)
    assert abs(W.mean()) < Z * se_mean
    assert abs(W.var() - var) < Z * se_var, f"variance {W.var():.6g}, formula {var:.6g} +- {se_var:.2g}"
    if dist == "uniform":  # bounded by the half-width sqrt(3 var), and reaching close to it
        limit = math.sqrt(3 * var)
        assert np.abs(W).max() <= limit and np.abs(W).max() > limit * (1 - 1e-3)


def test_gain_only_where_the_literature_uses_one():
    for name, spec in INITIALIZERS.items():
        a, b = sample(name, 40, 30, gain=1.0), sample(name, 40, 30, gain=2.0)
        if spec.uses_gain:
            np.testing.assert_allclose(b, 2 * a, rtol=1e-14)
        else:
            np.testing.assert_array_equal(a, b)
    assert {n for n, s in INITIALIZERS.items() if s.uses_gain} == {
        "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal"}


def test_parameters_std_and_limit():
    W = sample("normal", std=0.1)
    assert abs(W.std() - 0.1) < Z * 0.1 * math.sqrt(2 / W.size)
    assert np.abs(sample("uniform", limit=0.25)).max() <= 0.25
    with pytest.raises(ValueError, match="init.std does not apply to init=he_normal"):
        get_initializer("he_normal", std=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        get_initializer("uniform", limit=-1.0)
    with pytest.raises(ValueError, match="choose one of: auto, he_normal"):
        get_initializer("kaiming")


def test_zeros():
    np.testing.assert_array_equal(sample("zeros"), np.zeros((FAN_IN, FAN_OUT)))


@pytest.mark.parametrize("fans", [(64, 16), (16, 64), (32, 32)])
def test_orthogonal(fans):
    fan_in, fan_out = fans
    W = sample("orthogonal", fan_in, fan_out, gain=1.0)
    if fan_in >= fan_out:
        np.testing.assert_allclose(W.T @ W, np.eye(fan_out), atol=1e-12)
    if fan_in <= fan_out:
        np.testing.assert_allclose(W @ W.T, np.eye(fan_in), atol=1e-12)
    Wg = sample("orthogonal", fan_in, fan_out, gain=GAIN)
    np.testing.assert_allclose(Wg, GAIN * W, rtol=1e-14)


def test_orthogonal_sign_correction_makes_it_haar():
    """Without R's diagonal signs, QR (Householder) returns Q whose first column has a biased sign.

    With the correction, the top-left entry is symmetric about 0: its mean over
    400 draws is within Z standard errors (each entry has variance 1 / rows).
    """
    rows = 8
    firsts = np.array([sample("orthogonal", rows, 4, seed=s, gain=1.0)[0, 0] for s in range(400)])
    assert abs(firsts.mean()) < Z * math.sqrt(1 / rows / firsts.size)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_same_seed_same_weights(name):
    draw = lambda seed, dtype=np.float64: sample(name, 40, 30, seed=seed, dtype=dtype)  # noqa: E731
    np.testing.assert_array_equal(draw(3), draw(3))
    np.testing.assert_allclose(draw(3, np.float32), draw(3), rtol=1e-6, atol=1e-7)
    assert draw(3, np.float32).dtype == np.float32
    if name != "zeros":
        assert not np.array_equal(draw(3), draw(4))


def test_auto_picks_per_family():
    expected = {"relu": "he_normal", "leaky_relu": "he_normal", "elu": "he_normal", "gelu": "he_normal",
                "silu": "he_normal", "mish": "he_normal", "softplus": "he_normal",
                "sigmoid": "xavier_uniform", "tanh": "xavier_uniform", "softsign": "xavier_uniform",
                "hard_sigmoid": "xavier_uniform", "hard_tanh": "xavier_uniform", "identity": "xavier_uniform",
                "selu": "lecun_normal"}
    assert {n: auto_initializer(a.family) for n, a in ACTIVATIONS.items()} == expected
    assert set(AUTO.values()) <= set(INITIALIZERS)
    with pytest.raises(ValueError, match="no automatic initialiser"):
        auto_initializer("quadratic")


def test_bias_initializers():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(get_bias_initializer("zeros")(3, rng=rng, dtype=np.float64), np.zeros(3))
    np.testing.assert_array_equal(get_bias_initializer("constant", 0.1)(3, rng=rng, dtype=np.float32),
                                  np.full(3, 0.1, np.float32))
    with pytest.raises(ValueError, match="init.bias='ones' is not known"):
        get_bias_initializer("ones")


# --- config files and the built model --------------------------------------------------------
CONF = Path(__file__).resolve().parents[1] / "conf" / "init"


def test_one_yaml_per_initializer():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted([*INITIALIZERS, "auto"])
    for p in CONF.glob("*.yaml"):
        for line in p.read_text().splitlines():
            if line and not line.startswith("#"):
                assert "#" in line or line.startswith("name:"), f"{p.name}: key without a comment: {line!r}"


@pytest.mark.parametrize("activation, init, resolved", [
    ("selu", "auto", "lecun_normal"), ("relu", "auto", "he_normal"), ("tanh", "auto", "xavier_uniform"),
    ("tanh", "orthogonal", "orthogonal"), ("relu", "uniform", "uniform"),
])
def test_build_resolves_and_seeds_the_initialiser(compose, activation, init, resolved):
    from nnexp.app import build

    cfg = compose([f"activation={activation}", f"init={init}", "dataset=xor", "model.hidden_sizes=[8]", "seed=5"])
    setup = build(cfg)
    assert setup.init_name == resolved
    W1 = setup.model.W[0][0]
    gain = ACTIVATIONS[activation].gain()
    np.testing.assert_array_equal(W1, sample(resolved, 2, 8, seed=5, gain=gain, **(
        {"limit": 1.0} if resolved == "uniform" else {})))
