"""nnexp.fastmath: the vectorised float64 tanh / exp / sigmoid kernels and when they are used.

Accuracy is measured in ulp against NumPy (``np.tanh``, ``np.exp``) and SciPy (``scipy.special.expit``) over the
whole float64 range; the selection logic is checked on NumPy CPU-feature tables of a CPU with and without
AVX-512 (the kernels are taken on both), and once in a process started under ``benchmarks/cpu_emulation.py``'s
environment. The fused layer kernels must give the bits of their steps taken one by one, at any vector width.
"""

from __future__ import annotations

import json
import platform
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit as scipy_expit

from nnexp import activations, fastmath

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")

AVX512 = {"AVX2": True, "FMA3": True, "X86_V3": True, "AVX512F": True, "AVX512_SKX": True, "X86_V4": True}
# NumPy 2.4 under NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR": AVX512F still reads True, X86_V4 not
AVX2_ONLY = {"AVX2": True, "FMA3": True, "X86_V3": True, "AVX512F": True, "AVX512_SKX": False, "X86_V4": False}
OLD_NUMPY_AVX512 = {"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512_SKX": True}  # NumPy < 2.3: no X86_V4 key
NO_FMA = {"AVX2": False, "FMA3": False, "X86_V4": False}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of float64 values between a and b (0 when both are nan; +0 and -0 are 1 apart)."""
    ia, ib = a.view(np.int64), b.view(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**63)) - ia, ia)  # order-preserving map of the bit patterns
    ib = np.where(ib < 0, np.int64(-(2**63)) - ib, ib)
    return np.where(np.isnan(a) & np.isnan(b), 0, np.abs(ia - ib))


def edge_points() -> np.ndarray:
    tiny, big = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    edges = [0.0, 5e-324, tiny, 1e-300, 1e-20, 1e-8, 0.2554128118829953, 0.5493061443340549, 1.0, 19.06, 22.0, 30.0,
             708.3964185322641, 709.782712893384, 709.7827128933841, 745.1332191019411, 745.1332191019412, 1e300,
             big, np.inf]
    edges = np.array(edges)
    return np.concatenate([edges, -edges, [np.nan, -np.nan]])


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    rng = np.random.default_rng(11)
    n = 250_000
    return np.concatenate([
        rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64),  # every exponent, subnormals, inf, nan
        rng.uniform(-40, 40, n), rng.standard_normal(n), rng.uniform(-746, 710, n), edge_points()])


@pytest.fixture(scope="module")
def kernels():
    k = fastmath.kernels()
    if k is None and X86:
        pytest.fail(f"the kernels did not load on x86-64: {fastmath.LOAD.get('error')}")
    if k is None:
        pytest.skip(f"no kernels here: {fastmath.LOAD.get('error')}")
    return k


def run(k, name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    getattr(k, name)(x.ctypes.data, out.ctypes.data, x.size)
    return out


@pytest.mark.parametrize("name, reference, max_ulp", [("exp", np.exp, 1), ("tanh", np.tanh, 3), ("expit", None, 4)])
def test_kernels_are_within_a_few_ulp_of_numpy_over_the_whole_range(kernels, points, name, reference, max_ulp):
    with np.errstate(all="ignore"):
        if reference is None:  # SciPy's expit gives 0 below -709.78, where the true value is exp(x), subnormal
            ref = np.where(points < -709, np.exp(points), scipy_expit(points))
        else:
            ref = reference(points)
    got = run(kernels, name, points)
    assert int(ulp_distance(got, ref).max()) <= max_ulp
    np.testing.assert_array_equal(np.isnan(got), np.isnan(points))  # nan in, nan out; never a new nan
    signed = np.isinf(points) | (points == 0)
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(ref[signed]))  # tanh(-0) = -0


def test_an_element_gets_the_same_bits_alone_in_place_and_in_a_strided_stack(kernels):
    rng = np.random.default_rng(3)
    x = rng.normal(scale=4, size=(3, 700, 37))
    for name, public in (("tanh", fastmath.tanh), ("exp", fastmath.exp), ("expit", fastmath.expit)):
        whole = run(kernels, name, x)
        alone = np.array([run(kernels, name, np.array([v]))[0] for v in x.ravel()[:300]])
        np.testing.assert_array_equal(alone, whole.ravel()[:300])  # scalar remainder = vector body
        inplace = x.copy()
        getattr(kernels, name + "_inplace")(inplace.ctypes.data, inplace.size)
        np.testing.assert_array_equal(inplace, whole)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NNEXP_FASTMATH", "on")
            view = x[:, 100:600]  # one replica's rows are contiguous, the stack is not
            np.testing.assert_array_equal(public(view, out=np.empty_like(view)), whole[:, 100:600])
            y = x.copy()
            assert public(y, out=y) is y
            np.testing.assert_array_equal(y, whole)


@pytest.mark.parametrize("features, expect", [(AVX512, True), (OLD_NUMPY_AVX512, True), (AVX2_ONLY, True),
                                              (NO_FMA, False)])
def test_selection_takes_the_kernel_with_avx2_and_fma_whether_or_not_numpy_has_avx512(features, expect):
    big = np.zeros((1, 1797, 128))
    assert fastmath.use_kernel(big, big, features=features, machine="x86_64", fastmath="auto") is expect
    assert fastmath.numpy_has_simd_f64(features) is (features.get("X86_V4", features.get("AVX512_SKX")) is True)


def test_selection_rules_dtype_size_machine_and_switch():
    big, small = np.zeros((4, 1797, 128)), np.zeros((4, 64, 16))
    kw = dict(features=AVX2_ONLY, machine="x86_64", fastmath="auto")
    assert fastmath.use_kernel(big, **kw)
    assert not fastmath.use_kernel(big.astype(np.float32), **kw)  # NumPy's float32 loops are vectorised on AVX2
    assert not fastmath.use_kernel(small, **kw)  # 1,024 elements per replica: not worth loading the kernels
    assert fastmath.use_kernel(big[:1], **kw) == fastmath.use_kernel(big, **kw)  # replicas decide as one network
    assert not fastmath.use_kernel(big, np.zeros((4, 1797, 127)), **kw)
    assert not fastmath.use_kernel(big, features=AVX2_ONLY, machine="aarch64", fastmath="auto")
    assert not fastmath.use_kernel(big, features=AVX2_ONLY, machine="x86_64", fastmath="off")
    assert fastmath.use_kernel(small, features=AVX512, machine="x86_64", fastmath="on")
    assert not fastmath.use_kernel(3.0, features=AVX2_ONLY, machine="x86_64", fastmath="on")


def test_an_unknown_switch_value_is_refused_naming_the_accepted_ones(monkeypatch):
    monkeypatch.setenv("NNEXP_FASTMATH", "fast")
    with pytest.raises(ValueError, match="NNEXP_FASTMATH='fast' is not known; choose one of: auto, on, off"):
        fastmath.mode()


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_an_emulated_cpu_without_avx512_and_this_one_select_the_kernel():
    env = runpy.run_path(str(ROOT / "benchmarks" / "cpu_emulation.py"))["haswell_env"]()
    code = ("import json, numpy as np; from nnexp import fastmath; x = np.ones((1797, 128)); "
            "print(json.dumps([fastmath.use_kernel(x, x), fastmath.numpy_has_simd_f64()]))")
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "NNEXP_FASTMATH": "auto"},
                         capture_output=True, text=True, check=True)
    use, numpy_fast = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = fastmath._cpu_features()
    assert numpy_fast is False
    assert use is bool(cpu.get("AVX2") and cpu.get("FMA3"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNEXP_FASTMATH", "auto")
        assert fastmath.use_kernel(np.ones((1797, 128))) is bool(cpu.get("AVX2") and cpu.get("FMA3"))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "silu", "softplus", "elu", "mish"])
def test_activations_with_the_kernels_match_numpy_within_a_few_ulp(kernels, monkeypatch, name):
    z = np.random.default_rng(5).normal(scale=3, size=(2, 600, 20))
    act = activations.get_activation(name)
    monkeypatch.setenv("NNEXP_FASTMATH", "off")
    a_ref = act.forward(z)
    d_ref = act.derivative(z, a_ref)
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    a = act.forward(z)
    d = act.derivative(z, a)
    np.testing.assert_allclose(a, a_ref, rtol=4e-15, atol=1e-300)
    np.testing.assert_allclose(d, d_ref, rtol=1e-14, atol=1e-15)


def test_the_tanh_derivative_kernel_gives_numpys_bits(kernels, points, monkeypatch):
    a = np.tanh(points[np.isfinite(points)])
    np.testing.assert_array_equal(run(kernels, "tanh_derivative", a), np.subtract(1, a * a))
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    z = np.random.default_rng(2).normal(size=(3, 600, 40))
    a = np.tanh(z)
    np.testing.assert_array_equal(activations.get_activation("tanh").derivative(z, a), 1 - a * a)


# --- fused kernels: bias add + activation, derivative product + bias gradient ---------------------------------------
def stack_views(shape=(3, 700, 37), rows=slice(100, 650), seed=8):
    """Row slices of (replicas, batch, units) arrays, as the model's row blocks take them (each replica contiguous)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3, size=shape)
    return z, rng.normal(size=(shape[0], 1, shape[2])), rng.normal(size=shape), rows


@pytest.mark.parametrize("name", ["tanh", "expit"])
def test_fused_bias_activation_gives_the_bits_of_its_two_steps(kernels, monkeypatch, name):
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    z, b, _, rows = stack_views()
    ref_z = z[:, rows] + b
    ref_a = getattr(fastmath, name)(ref_z)  # the kernel alone, after NumPy's add
    work, out = z.copy(), np.full_like(z, 7.0)
    assert fastmath.bias_activation(name, work[:, rows], b, out[:, rows])
    np.testing.assert_array_equal(work[:, rows], ref_z)
    np.testing.assert_array_equal(out[:, rows], ref_a)
    np.testing.assert_array_equal(work[:, :100], z[:, :100])  # nothing outside the views is touched
    assert (out[:, 650:] == 7.0).all()


@pytest.mark.parametrize("name, derivative", [("tanh", lambda a: 1 - a * a), ("expit", lambda a: (1 - a) * a)])
def test_fused_backward_gives_numpys_product_and_the_batch_sum_in_row_order(kernels, monkeypatch, name, derivative):
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    z, _, dA, rows = stack_views()
    a = np.tanh(z) if name == "tanh" else scipy_expit(z)
    product = dA[:, rows] * derivative(a[:, rows])
    db = np.full((3, 1, 37), np.nan)
    work = dA.copy()
    assert fastmath.activation_backward(name, work[:, rows], a[:, rows], db)
    np.testing.assert_array_equal(work[:, rows], product)
    np.testing.assert_array_equal(db, np.cumsum(product, axis=1)[:, -1:])  # add.accumulate: row order
    np.testing.assert_allclose(db, product.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(work[:, 650:], dA[:, 650:])


def test_fused_kernels_step_aside_where_they_do_not_apply(kernels, monkeypatch):
    z, b, dA, rows = stack_views()
    out = np.empty_like(z)
    monkeypatch.setenv("NNEXP_FASTMATH", "off")
    assert not fastmath.bias_activation("tanh", z, b, out)
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    before = z.copy()
    assert not fastmath.bias_activation("tanh", z, b, z)  # out aliases z
    assert not fastmath.bias_activation("tanh", z[:, :, :30], b[:, :, :30], out[:, :, :30])  # rows not contiguous
    assert not fastmath.bias_activation("tanh", z.astype(np.float32), b, out.astype(np.float32))
    assert not fastmath.activation_backward("tanh", dA, z, np.empty((3, 1, 36)))  # db of another shape
    np.testing.assert_array_equal(z, before)
    with pytest.raises(ValueError, match="no fused kernel for 'relu'; choose one of: tanh, expit"):
        fastmath.bias_activation("relu", z, b, out)


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_every_kernel_gives_the_same_bits_at_avx2_and_this_cpus_vector_width(kernels, points, monkeypatch):
    """One element's result must not depend on the vector width (replicas, row blocks and CPUs agree)."""
    from nnexp import fastmath_kernels

    monkeypatch.setenv("NNEXP_FASTMATH_CPU", "x86-64-v3")
    avx2 = fastmath_kernels.load(None)
    assert avx2.info["cpu"] == "x86-64-v3"
    finite = np.ascontiguousarray(points[:200_003])
    for name in fastmath_kernels.NAMES:
        np.testing.assert_array_equal(run(avx2, name, finite), run(kernels, name, finite), err_msg=name)
    z, b, dA, _ = stack_views(shape=(1, 301, 37))  # rows of 37: a scalar remainder at any width
    results = []
    for k in (avx2, kernels):
        zz, aa, dd, db = z.copy(), np.empty_like(z), dA.copy(), np.empty_like(b)
        for name in fastmath_kernels.FUSED_FORWARD:
            getattr(k, f"bias_{name}")(zz.ctypes.data, b.ctypes.data, aa.ctypes.data, 301, 37)
            getattr(k, f"{name}_backward")(dd.ctypes.data, aa.ctypes.data, db.ctypes.data, 301, 37)
            results.append((zz.copy(), aa.copy(), dd.copy(), db.copy()))
    half = len(results) // 2
    for got, ref in zip(results[:half], results[half:]):
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_fused_training_matches_numpys_and_replicas_stay_bit_identical(kernels, monkeypatch, activation):
    """A network trained with the fused kernels: within rounding of NumPy's path, replicas exact as alone."""
    from nnexp.data import Dataset
    from nnexp.initializers import get_bias_initializer, get_initializer
    from nnexp.losses import get_loss
    from nnexp.model import MLP
    from nnexp.optimizers import make_optimizer
    from nnexp.train import fit

    rng = np.random.default_rng(4)
    X = rng.normal(size=(1100, 12))  # two row blocks of 550 rows
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(np.int64) + (X[:, 2] > 0.5)
    data = Dataset("t", X, y, X[:200], y[:200], X[:200], y[:200], 3)
    act = activations.get_activation(activation)

    def train(seeds):
        rngs = [np.random.default_rng(s) for s in seeds]
        model = MLP([12, 40, 40, 3], act, replicas=len(seeds))
        model.initialize(get_initializer("xavier_uniform"), get_bias_initializer("constant", 0.1), rngs, gain=act.gain)
        assert len(model.workspace(X).blocks) == 2
        fit(model, get_loss("cross_entropy"), make_optimizer("sgd", model.params()), lambda e: 0.5, data, epochs=15,
            rngs=rngs, diagnostics=True)
        return model

    monkeypatch.setenv("NNEXP_FASTMATH", "off")
    plain = train([1, 2])
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    fused = train([1, 2])
    for P, Q in zip(fused.params(), plain.params()):
        np.testing.assert_allclose(P, Q, rtol=1e-10, atol=1e-12)
    alone = train([2])
    for P, Q in zip(fused.params(), alone.params()):
        np.testing.assert_array_equal(P[1], Q[0])
